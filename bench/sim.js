// The coordinator at scale, with simulated workers (bench/sim-worker.js: real socket.io
// connections that speak the worker protocol and answer at once, 1,250 to a process), so
// what is measured is the coordinator. The coordinator runs in a process of its own
// (bench/sim-coordinator.js): its CPU and heap are its own; the client runs here.
//
//   node bench/sim.js [--workers 10,100,1000,5000] [--tasks 50000]
//                     [--sizes 1000,10000,100000,1000000] [--size-workers 100]
//                     [--idle-seconds 30] [--runs 1] [--worker-nice 0] [--profile DIR] [--json]
//
// Rows: for each worker count, 50,000 no-op tasks (map + gather): tasks/s and its ratio to
// the first count's rate, coordinator CPU per task, frames and steals per task; with every
// worker idle (heartbeats and pings only), the coordinator's CPU share over --idle-seconds
// (at the largest count). For each size at --size-workers workers, the tasks are queued
// while the workers are paused (heap per queued task, gc'd), then run: µs per task and
// coordinator CPU per task. --runs N gives the median of N runs on the same grid.
// --profile DIR writes the coordinator's CPU profile of the largest count's run there (and of the
// largest size's run; SIM_PROFILE_ALL=1: of every count and size; SIM_ALLOC=1: allocation profiles,
// garbage included, instead of CPU).
import { fork } from 'node:child_process'
import { setPriority } from 'node:os'
import { mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Client } from 'tabgrid'

const PER_PROCESS = 1250
/** node flags of `npm start`'s coordinator (package.json) */
const COORD_ARGS = '--max-semi-space-size=64'
/** the simulated workers' nice value (--worker-nice N, e.g. 10: they stand for other machines and take only what the coordinator leaves; 0, the default: alike) */
let NICE = 0
const WORKER = fileURLToPath(new URL('./sim-worker.js', import.meta.url))
const COORDINATOR = fileURLToPath(new URL('./sim-coordinator.js', import.meta.url))
const sleep = ms => new Promise(r => setTimeout(r, ms))
const median = xs => { const s = [...xs].sort((a, b) => a - b); return s[(s.length - 1) >> 1] }

/** A coordinator process and simulated workers in processes of PER_PROCESS sockets each. */
export async function startSimGrid(nworkers, { env = {}, nice = NICE } = {}) {
  // the coordinator's node flags are npm start's (a young generation of 64 MB semi-spaces) unless SIM_COORD_ARGS says others
  const coord = fork(COORDINATOR, [], { execArgv: ['--expose-gc', ...(process.env.SIM_COORD_ARGS ?? COORD_ARGS).split(' ').filter(Boolean)], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const ready = await new Promise((resolve, reject) => {
    coord.once('message', resolve)
    coord.once('exit', code => reject(new Error(`the coordinator process exited (${code})`)))
  })
  let next = 1
  const waiting = new Map()
  coord.on('message', m => {
    const w = waiting.get(m.id)
    if (!w) return
    waiting.delete(m.id)
    if (m.error) w.reject(new Error(m.error))
    else w.resolve(m.value)
  })
  const rpc = (op, extra = {}) => new Promise((resolve, reject) => {
    const id = next++
    waiting.set(id, { resolve, reject })
    coord.send({ id, op, ...extra })
  })
  const procs = []
  for (let left = nworkers; left > 0; left -= PER_PROCESS) {
    const p = fork(WORKER, [ready.url, String(Math.min(PER_PROCESS, left)), '1'], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], env: { ...process.env, ...env } })
    // the simulated workers stand for other machines: on a machine of few cores they take what the coordinator leaves
    if (nice !== 0) setPriority(p.pid, nice)
    procs.push(p)
  }
  const t0 = Date.now()
  for (;;) {
    const n = await rpc('workers')
    if (n >= nworkers) break
    if (Date.now() - t0 > 180_000) throw new Error(`only ${n} of ${nworkers} simulated workers joined`)
    await sleep(200)
  }
  const stats = async () => {
    const all = await Promise.all(procs.map(p => new Promise(resolve => {
      const on = m => { if (m?.stats) { p.off('message', on); resolve(m.stats) } }
      p.on('message', on)
      p.send('stats')
    })))
    const sum = {}
    for (const s of all) for (const [k, v] of Object.entries(s)) sum[k] = (sum[k] ?? 0) + v
    return sum
  }
  const tell = m => { for (const p of procs) p.send(m) }
  const client = await Client.connect(ready.url, { token: ready.token })
  return {
    url: ready.url, client, rpc, stats, tell,
    close: async () => {
      await client.close()
      tell('exit')
      await rpc('exit').catch(() => {})
      await new Promise(r => { if (coord.exitCode !== null) r(); else coord.once('exit', r) })
    },
  }
}

/** n no-op tasks, map + gather, on a grid already warmed up: wall time, coordinator CPU, frames. */
/** µs of CPU the coordinator's main thread spent since `before` (a 'main-cpu' reading), per task; null where it cannot be read */
const mainCpuPerTask = async (grid, before, n) => before === null ? null : ((await grid.rpc('main-cpu')) - before) / n
/** the main thread's share, for a row's line */
const mainPart = row => row.mainCpuUsPerTask == null ? '' : ` (its main thread ${row.mainCpuUsPerTask.toFixed(1)})`

async function noopRun(grid, n) {
  const c = grid.client.with({ pure: false })
  const s0 = await grid.stats()
  const cpu0 = await grid.rpc('cpu')
  const main0 = await grid.rpc('main-cpu')
  const own0 = process.cpuUsage()
  const t0 = performance.now()
  const out = await grid.client.gather(c.map(x => x, Array.from({ length: n }, (_, i) => i)))
  const ms = performance.now() - t0
  const own = process.cpuUsage(own0)
  const cpu = (await grid.rpc('cpu')) - cpu0
  const mainCpuUsPerTask = await mainCpuPerTask(grid, main0, n)
  const s1 = await grid.stats()
  if (out.length !== n || out[n - 1] !== 1) throw new Error('lost or wrong results (a simulated worker answers 1)')
  const per = k => (s1[k] - s0[k]) / n
  if (process.env.SIM_DEBUG === '1') console.log(Object.fromEntries(Object.keys(s1).map(k => [k, +per(k).toFixed(3)])))
  return { rate: n / (ms / 1000), usPerTask: (ms * 1000) / n, cpuUsPerTask: cpu / n, mainCpuUsPerTask, frames: per('framesIn') + per('framesOut'), steals: per('steals'), fetches: per('fetches'), workersCpuUsPerTask: per('cpuUs'), clientCpuUsPerTask: (own.user + own.system) / n, assignFrames: per('assignFrames'), fetchFrames: per('fetchFrames') }
}

function medianRow(runs) {
  const row = {}
  for (const k of Object.keys(runs[0])) row[k] = median(runs.map(r => r[k]))
  return row
}

export async function workersRows({ counts, tasks, idleSeconds, runs, profile, log = console.log }) {
  const rows = []
  for (const n of counts) {
    const grid = await startSimGrid(n)
    try {
      await grid.client.gather(grid.client.with({ pure: false }).map(x => x, Array.from({ length: 2000 }, (_, i) => i)))
      const last = n === counts[counts.length - 1]
      let idle = null
      if (last && idleSeconds > 0) {
        await sleep(2000)
        if (profile) await grid.rpc('profile-start')
        const cpu0 = await grid.rpc('cpu'); const w0 = performance.now()
        await sleep(idleSeconds * 1000)
        idle = ((await grid.rpc('cpu')) - cpu0) / 1000 / (performance.now() - w0)
        if (profile) {
          mkdirSync(profile, { recursive: true })
          log(`  profile: ${await grid.rpc('profile-stop', { path: join(profile, `coordinator-${n}-workers-idle.cpuprofile`) })}`)
        }
      }
      const results = []
      for (let r = 0; r < runs; r++) {
        const prof = profile && (last || process.env.SIM_PROFILE_ALL) && r === runs - 1
        if (prof) await grid.rpc('profile-start')
        results.push(await noopRun(grid, tasks))
        if (prof) {
          mkdirSync(profile, { recursive: true })
          log(`  profile: ${await grid.rpc('profile-stop', { path: join(profile, `coordinator-${n}-workers.cpuprofile`) })}`)
        }
      }
      const row = { workers: n, ...medianRow(results), idle }
      rows.push(row)
      log(`${String(n).padStart(5)} workers: ${row.rate.toFixed(0).padStart(6)} tasks/s (${row.usPerTask.toFixed(1)} µs/task${rows.length > 1 ? `, ${(100 * row.rate / rows[0].rate).toFixed(0)}% of the ${rows[0].workers}-worker rate` : ''}), coordinator CPU ${row.cpuUsPerTask.toFixed(1)} µs/task${mainPart(row)} (simulated workers ${row.workersCpuUsPerTask.toFixed(1)}, client ${row.clientCpuUsPerTask.toFixed(1)}), ${row.frames.toFixed(2)} frames/task, ${row.steals.toFixed(3)} steals/task, ${row.fetches.toFixed(2)} fetches/task (frames with assigns ${row.assignFrames?.toFixed(2)}, with fetches ${row.fetchFrames?.toFixed(2)})${idle === null ? '' : `; idle: ${(100 * idle).toFixed(1)}% of a core over ${idleSeconds} s`}`)
    } finally {
      await grid.close()
    }
  }
  return rows
}

/** Submits n tasks in maps of 50,000 (the client yields between them), then gathers. */
async function queueAndRun(grid, n, profilePath = null, log = console.log) {
  const c = grid.client.with({ pure: false })
  grid.tell('pause')
  await sleep(300)
  const heap0 = await grid.rpc('heap')
  const futures = []
  for (let i = 0; i < n; i += 50_000) {
    futures.push(...c.map(x => x, Array.from({ length: Math.min(50_000, n - i) }, (_, j) => i + j)))
    await new Promise(r => setImmediate(r))
  }
  const t0 = performance.now()
  for (;;) {
    const q = (await grid.rpc('counts')).queued
    if (q >= n) break
    if (performance.now() - t0 > 300_000) throw new Error(`only ${q} of ${n} tasks queued after 5 minutes`)
    await sleep(100)
  }
  const heapPerTask = ((await grid.rpc('heap')) - heap0) / n
  const s0 = await grid.stats()
  const cpu0 = await grid.rpc('cpu')
  const main0 = await grid.rpc('main-cpu')
  const own0 = process.cpuUsage()
  if (profilePath) await grid.rpc('profile-start')
  const t1 = performance.now()
  grid.tell('resume')
  const parts = []
  for (let i = 0; i < futures.length; i += 50_000) parts.push(grid.client.gather(futures.slice(i, i + 50_000)))
  const out = (await Promise.all(parts)).flat()
  const ms = performance.now() - t1
  const own = process.cpuUsage(own0)
  const cpu = (await grid.rpc('cpu')) - cpu0
  const mainCpuUsPerTask = await mainCpuPerTask(grid, main0, n)
  if (profilePath) {
    mkdirSync(dirname(profilePath), { recursive: true })
    log(`  profile: ${await grid.rpc('profile-stop', { path: profilePath })}`)
  }
  const s1 = await grid.stats()
  if (out.length !== n || out[n - 1] !== 1) throw new Error('lost or wrong results (a simulated worker answers 1)')
  for (const f of futures) f.release()
  return { usPerTask: (ms * 1000) / n, cpuUsPerTask: cpu / n, mainCpuUsPerTask, heapPerTask, workersCpuUsPerTask: (s1.cpuUs - s0.cpuUs) / n, clientCpuUsPerTask: (own.user + own.system) / n }
}

export async function sizeRows({ sizes, workers, runs, profile, log = console.log }) {
  const rows = []
  if (sizes.length === 0) return rows
  const grid = await startSimGrid(workers)
  try {
    await grid.client.gather(grid.client.with({ pure: false }).map(x => x, Array.from({ length: 2000 }, (_, i) => i)))
    for (const n of sizes) {
      const results = []
      const last = n === sizes[sizes.length - 1]
      for (let r = 0; r < (n >= 1_000_000 ? 1 : runs); r++) results.push(await queueAndRun(grid, n, profile && (last || process.env.SIM_PROFILE_ALL) ? join(profile, `coordinator-${n}-tasks.cpuprofile`) : null, log))
      const row = { tasks: n, ...medianRow(results) }
      rows.push(row)
      log(`${n.toLocaleString('en').padStart(9)} tasks on ${workers} workers: ${row.usPerTask.toFixed(1)} µs/task, coordinator CPU ${row.cpuUsPerTask.toFixed(1)} µs/task${mainPart(row)} (simulated workers ${row.workersCpuUsPerTask.toFixed(1)}, client ${row.clientCpuUsPerTask.toFixed(1)}), ${row.heapPerTask.toFixed(0)} bytes of coordinator heap per queued task`)
    }
  } finally {
    await grid.close()
  }
  return rows
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2)
  const opt = (name, dflt) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : dflt }
  const list = s => (s === '' || s === 'none' ? [] : s.split(',').map(Number))
  const runs = Number(opt('runs', 1))
  NICE = Number(opt('worker-nice', 0))
  if (NICE !== 0) console.log(`(simulated workers at nice ${NICE}: they stand for other machines and take only what the coordinator leaves of the cores; the default, --worker-nice 0, runs them alike)`)
  const rows = {}
  rows.workers = await workersRows({ counts: list(opt('workers', '10,100,1000,5000')), tasks: Number(opt('tasks', 50_000)), idleSeconds: Number(opt('idle-seconds', 30)), runs, profile: opt('profile', null) })
  rows.sizes = await sizeRows({ sizes: list(opt('sizes', '1000,10000,100000,1000000')), workers: Number(opt('size-workers', 100)), runs, profile: opt('profile', null) })
  if (argv.includes('--json')) console.log(JSON.stringify(rows))
  process.exit(0)
}
