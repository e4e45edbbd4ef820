// The coordinator at scale, with simulated workers (bench/sim-worker.js: real sockets that
// speak the worker protocol and answer at once), so what is measured is the coordinator.
//   node bench/sim.js [--workers 10,100,1000,5000] [--tasks 50000] [--idle-seconds 10]
// Prints, per worker count: tasks/s for a map + gather of no-op tasks, coordinator CPU per
// task, and the coordinator's CPU share with every worker idle (heartbeats and pings only).
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Client, startCoordinator } from 'tabgrid'

const argv = process.argv.slice(2)
const opt = (name, dflt) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : dflt }
const COUNTS = opt('workers', '10,100,1000,5000').split(',').map(Number)
const TASKS = Number(opt('tasks', 50_000))
const IDLE_S = Number(opt('idle-seconds', 10))
const PER_PROCESS = 1250
const WORKER = fileURLToPath(new URL('./sim-worker.js', import.meta.url))

const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000 }

async function run(nworkers) {
  const coord = await startCoordinator({ port: 0 })
  const procs = []
  for (let left = nworkers; left > 0; left -= PER_PROCESS) {
    const n = Math.min(PER_PROCESS, left)
    const p = fork(WORKER, [coord.url, String(n), '1'], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
    procs.push(p)
  }
  const t0 = Date.now()
  while (coord.coordinator.scheduler.workers().length < nworkers) {
    if (Date.now() - t0 > 120_000) throw new Error(`only ${coord.coordinator.scheduler.workers().length} of ${nworkers} simulated workers joined`)
    await new Promise(r => setTimeout(r, 50))
  }
  // idle: heartbeats and pings only
  await new Promise(r => setTimeout(r, 1000))
  const idle0 = cpuMs(); const w0 = performance.now()
  await new Promise(r => setTimeout(r, IDLE_S * 1000))
  const idleShare = (cpuMs() - idle0) / (performance.now() - w0)
  // the client in this process too: its CPU is counted (reported as coordinator + client)
  const client = await Client.connect(coord.url, { token: coord.clientToken })
  const c = client.with({ pure: false })
  await client.gather(c.map(x => x, Array.from({ length: 2000 }, (_, i) => i)))
  const cpu0 = cpuMs(); const t1 = performance.now()
  const out = await client.gather(c.map(x => x, Array.from({ length: TASKS }, (_, i) => i)))
  const ms = performance.now() - t1
  const cpu = cpuMs() - cpu0
  if (out.length !== TASKS) throw new Error('lost results')
  await client.close()
  for (const p of procs) p.send('exit')
  await coord.close()
  return { nworkers, rate: TASKS / (ms / 1000), usPerTask: (ms * 1000) / TASKS, cpuUsPerTask: (cpu * 1000) / TASKS, idleShare }
}

const rows = []
for (const n of COUNTS) {
  const r = await run(n)
  rows.push(r)
  console.log(`${String(n).padStart(5)} workers: ${r.rate.toFixed(0).padStart(6)} tasks/s (${r.usPerTask.toFixed(1)} µs/task), coordinator+client CPU ${r.cpuUsPerTask.toFixed(1)} µs/task, idle ${(100 * r.idleShare).toFixed(1)}% of a core`)
}
const base = rows[0]
for (const r of rows.slice(1)) console.log(`  ${r.nworkers} workers run at ${(100 * r.rate / base.rate).toFixed(0)}% of the ${base.nworkers}-worker rate`)
process.exit(0)
