// Memory per queued task at the coordinator: a million tasks submitted with no worker to
// run them. The client runs in a child process so only the coordinator's heap is measured.
//   node bench/million.js [n]
import { spawn } from 'node:child_process'
import { startCoordinator } from 'tabgrid'

const n = Number(process.argv[2] ?? 1_000_000)
const coord = await startCoordinator({ port: 0 })
globalThis.gc?.()
const before = process.memoryUsage().heapUsed
const script = `
  import { Client } from 'tabgrid'
  const c = await Client.connect(${JSON.stringify(coord.url)}, { token: ${JSON.stringify(coord.clientToken)} })
  const fs = c.with({ pure: false }).map(x => x + 1, Array.from({ length: ${n} }, (_, i) => i))
  console.log('submitted', fs.length)
  // the futures must stay reachable: a future that is garbage-collected releases its task
  globalThis.keep = fs
  setInterval(() => { void globalThis.keep.length }, 1000)
`
const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
const t0 = performance.now()
const sched = coord.coordinator.scheduler
while (sched.counts().queued < n) {
  await new Promise(r => setTimeout(r, 100))
  if (performance.now() - t0 > 300_000) throw new Error(`only ${sched.counts().queued} queued after 5 minutes`)
}
const secs = (performance.now() - t0) / 1000
globalThis.gc?.()
const after = process.memoryUsage().heapUsed
console.log(`${n.toLocaleString('en')} queued tasks: ${((after - before) / n).toFixed(0)} bytes each at the coordinator (heap), submitted in ${secs.toFixed(1)} s (${(secs * 1e6 / n).toFixed(1)} µs/task end to end)`)
child.kill('SIGKILL')
await coord.close()
process.exit(0)
