// The guide's third rule: choose between processes and threads. A Node agent runs
// --nprocs worker_threads, each running --nthreads tasks at once. CPU-bound work wants
// processes (one per core); waiting work (I/O, timers) wants threads.
//   node examples/nprocs.mjs
import { connect } from './_grid.mjs'

const cpu = n => { let s = 0; for (let i = 0; i < n; i++) s += Math.sqrt(i); return s }
const io = async ms => { await new Promise(r => setTimeout(r, ms)); return ms }

for (const [nprocs, nthreads] of [[2, 1], [1, 8]]) {
  const { client, close } = await connect({ workers: 1, nprocs, nthreads })
  const c = client.with({ pure: false })
  let t0 = performance.now()
  await client.gather(c.map(cpu, Array(8).fill(20_000_000)))
  const cpuMs = performance.now() - t0
  t0 = performance.now()
  await client.gather(c.map(io, Array(16).fill(100)))
  const ioMs = performance.now() - t0
  console.log(`--nprocs ${nprocs} --nthreads ${nthreads}: 8 CPU-bound tasks in ${cpuMs.toFixed(0)} ms, 16 waiting tasks (100 ms each) in ${ioMs.toFixed(0)} ms`)
  await close()
}
