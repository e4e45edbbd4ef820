// The guide's third rule: choose between processes and threads. A Node agent runs
// --nworkers worker_threads, each running --nthreads tasks at once. CPU-bound work wants
// processes (one per core); waiting work (I/O, timers) wants threads.
//   node examples/nprocs.mjs
// With TABGRID_URL set it runs once, on your grid as it is (this example cannot change
// how your workers were started), and says so.
import { connect } from './_grid.mjs'

const cpu = n => { let s = 0; for (let i = 0; i < n; i++) s += Math.sqrt(i); return s }
const io = async ms => { await new Promise(r => setTimeout(r, ms)); return ms }

async function measure(client) {
  const c = client.with({ pure: false })
  let t0 = performance.now()
  await client.gather(c.map(cpu, Array(8).fill(20_000_000)))
  const cpuMs = performance.now() - t0
  t0 = performance.now()
  await client.gather(c.map(io, Array(16).fill(100)))
  const ioMs = performance.now() - t0
  return `8 CPU-bound tasks in ${cpuMs.toFixed(0)} ms, 16 waiting tasks (100 ms each) in ${ioMs.toFixed(0)} ms`
}

if (process.env.TABGRID_URL) {
  const { client, close } = await connect()
  const workers = await client.workers()
  const slots = workers.reduce((n, w) => n + w.slots, 0)
  console.log(`your grid at ${process.env.TABGRID_URL} (${workers.length} workers, ${slots} slots): ${await measure(client)}`)
  console.log('(unset TABGRID_URL to compare --nworkers 2 --nthreads 1 with --nworkers 1 --nthreads 8 on grids this example starts)')
  await close()
} else {
  for (const [nprocs, nthreads] of [[2, 1], [1, 8]]) {
    const { client, close } = await connect({ workers: 1, nprocs, nthreads })
    console.log(`--nworkers ${nprocs} --nthreads ${nthreads}: ${await measure(client)}`)
    await close()
  }
}
