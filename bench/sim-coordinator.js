// The coordinator of bench/sim.js in a process of its own, so that its CPU time and heap
// are measured alone (the client and the simulated workers run in other processes).
// Answers the bench over IPC: { id, op } → { id, value }. Not a coordinator to run.
//   node --expose-gc bench/sim-coordinator.js
import { readFileSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { startCoordinator } from 'tabgrid'

const coord = await startCoordinator({ port: 0 })
const sched = coord.coordinator.scheduler
let session = null
// SIM_ALLOC=1: the profile is of allocations (sampled every 4 KiB, garbage included), not of CPU
const ALLOC = process.env.SIM_ALLOC === '1'

const ops = {
  cpu: () => { const u = process.cpuUsage(); return u.user + u.system },
  'cpu-split': () => process.cpuUsage(),
  // µs on a CPU of the main thread alone (Linux: its schedstat), null elsewhere: the rest of
  // the process's CPU is other threads (the collector's concurrent marking, libuv's pool)
  'main-cpu': () => {
    try { return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1000 } catch { return null }
  },
  workers: () => sched.workers().length,
  counts: () => sched.counts(),
  metrics: () => ({ ...coord.coordinator.metrics }),
  heap: () => { globalThis.gc?.(); globalThis.gc?.(); return process.memoryUsage().heapUsed },
  rss: () => process.memoryUsage().rss,
  'profile-start': async () => {
    session = new Session()
    session.connect()
    if (ALLOC) {
      await session.post('HeapProfiler.enable')
      await session.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true })
      return true
    }
    await session.post('Profiler.enable')
    await session.post('Profiler.setSamplingInterval', { interval: 200 })
    await session.post('Profiler.start')
    return true
  },
  'profile-stop': async ({ path }) => {
    const { profile } = await session.post(ALLOC ? 'HeapProfiler.stopSampling' : 'Profiler.stop')
    writeFileSync(path, JSON.stringify(profile))
    session.disconnect()
    session = null
    return path
  },
  exit: async () => { await coord.close(); setImmediate(() => process.exit(0)); return true },
}

process.on('message', async m => {
  try {
    process.send({ id: m.id, value: await ops[m.op](m) })
  } catch (err) {
    process.send({ id: m.id, error: err.stack })
  }
})
process.send({ ready: true, url: coord.url, token: coord.clientToken })
