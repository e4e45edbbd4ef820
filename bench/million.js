// A million tasks through one client: memory per task at the coordinator and at the client,
// and time per task. The client runs in a child process so each heap is measured alone.
//   node --expose-gc bench/million.js [n] [--gather]
// Without --gather: the tasks are submitted to a grid with no worker (queued), to measure
// what a queued task costs. With --gather: then two Node workers join, the client gathers
// every result, and the run is timed end to end (map, submit, run, gather).
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { startCoordinator } from 'tabgrid'

const args = process.argv.slice(2)
const n = Number(args.find(a => /^\d+$/.test(a)) ?? 1_000_000)
const gather = args.includes('--gather')
const BIN = fileURLToPath(new URL('../bin/tabgrid.js', import.meta.url))

const coord = await startCoordinator({ port: 0, clientGraceMs: 60_000, log: process.env.MILLION_LOG ? (l, lv) => console.error(lv ?? "info", l) : undefined })
globalThis.gc?.()
const before = process.memoryUsage().heapUsed
const script = `
  import { Client } from 'tabgrid'
  const say = o => process.stdout.write(JSON.stringify(o) + '\\n')
  const c = await Client.connect(${JSON.stringify(coord.url)}, { token: ${JSON.stringify(coord.clientToken)} })
  const items = Array.from({ length: ${n} }, (_, i) => i)
  globalThis.gc?.()
  const heap0 = process.memoryUsage().heapUsed
  const t0 = performance.now()
  const fs = c.with({ pure: false }).map(x => x + 1, items)
  const mapMs = performance.now() - t0
  // the futures must stay reachable: a future that is garbage-collected releases its task
  globalThis.keep = fs
  globalThis.gc?.()
  say({ mapMs, heapPerFuture: (process.memoryUsage().heapUsed - heap0) / fs.length })
  if (${gather}) {
    const out = await c.gather(fs)
    let wrong = 0
    for (let i = 0; i < out.length; i++) if (out[i] !== i + 1) wrong++
    say({ gatheredMs: performance.now() - t0, wrong, n: out.length })
  }
  setInterval(() => { void globalThis.keep.length }, 1000)
`
const child = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
const lines = []
let waiting
let buf = ''
child.stdout.on('data', d => {
  buf += String(d)
  let i
  while ((i = buf.indexOf('\n')) >= 0) { lines.push(JSON.parse(buf.slice(0, i))); buf = buf.slice(i + 1); waiting?.() }
})
const nextLine = async (what, ms) => {
  const t = performance.now()
  while (lines.length === 0) {
    if (child.exitCode !== null) throw new Error(`the client exited (${child.exitCode}) before ${what}`)
    if (performance.now() - t > ms) throw new Error(`no ${what} after ${ms / 1000} s`)
    await new Promise(r => { waiting = r; setTimeout(r, 100) })
  }
  return lines.shift()
}

const t0 = performance.now()
const sched = coord.coordinator.scheduler
while (sched.counts().queued < n) {
  await new Promise(r => setTimeout(r, 100))
  if (process.env.MILLION_LOG && Math.round(performance.now() - t0) % 10_000 < 100) console.error(`${Math.round((performance.now() - t0) / 1000)} s: ${JSON.stringify(sched.counts())}, ${coord.coordinator.metrics.framesIn} frames in`)
  if (performance.now() - t0 > 300_000) throw new Error(`only ${sched.counts().queued} queued after 5 minutes`)
}
const secs = (performance.now() - t0) / 1000
globalThis.gc?.()
const after = process.memoryUsage().heapUsed
const client = await nextLine('map figures', 60_000)
const f = x => x.toLocaleString('en')
console.log(`${f(n)} queued tasks: ${((after - before) / n).toFixed(0)} bytes each at the coordinator (heap), ${client.heapPerFuture.toFixed(0)} at the client (heap per future); map ${(client.mapMs * 1000 / n).toFixed(1)} µs/task, all queued in ${secs.toFixed(1)} s (${(secs * 1e6 / n).toFixed(1)} µs/task end to end)`)
if (gather) {
  const m = coord.coordinator.metrics
  const workers = [1, 2].map(i => spawn(process.execPath, [BIN, 'worker', coord.url, '--name', `m${i}`, '--nworkers', '1', '--nthreads', '4', '--trust-tasks', '--quiet'], { stdio: 'ignore' }))
  try {
    const done = await nextLine('gathered results', 600_000)
    if (done.wrong !== 0 || done.n !== n) throw new Error(`${done.wrong} wrong values of ${done.n}`)
    globalThis.gc?.()
    const held = process.memoryUsage().heapUsed
    console.log(`${f(n)} tasks run on 2 Node workers and gathered: ${(done.gatheredMs * 1000 / n).toFixed(1)} µs/task end to end (${(done.gatheredMs / 1000).toFixed(1)} s), ${((held - before) / n).toFixed(0)} bytes each at the coordinator with results held; ${f(m.framesOut)} frames out, largest ${f(m.largestFrameOut)} bytes, ${f(m.framesIn)} in, largest ${f(m.largestFrameIn)} bytes`)
  } finally {
    for (const w of workers) w.kill('SIGKILL')
  }
}
child.kill('SIGKILL')
await coord.close()
process.exit(0)
