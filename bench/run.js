// `npm run bench`: the Dask performance guide's workloads on a real grid — a coordinator
// and 2 `tabgrid worker` processes × 1 thread on this machine — printed beside the Dask
// anchor (../shared/anchors/dask_bench.py, run live when /usr/bin/python3 has distributed).
//
//   npm run bench                 # everything
//   npm run bench -- --no-dask    # skip running Dask (print the design's anchor figures)
//   npm run bench -- --no-million # skip the million-queued-tasks memory figure
//   npm run bench -- --no-browser # skip the rows measured on 2 Chromium tabs
//   npm run bench -- --no-fn      # skip the cost of the submit-time checks on a task function
//   npm run bench -- --no-scale   # skip the scale rows (bench/sim.js: 10 to 5,000 simulated workers, 1k to 1M tasks)
import { spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Client, startCoordinator, partitionAll } from 'tabgrid'
import { benchTabs } from './tabs.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const BIN = fileURLToPath(new URL('../bin/tabgrid.js', import.meta.url))
const args = new Set(process.argv.slice(2))
const NWORKERS = 2

/** Figures from ../shared/DESIGN.md, used when Dask can't be run here. */
const DESIGN_ANCHOR = {
  tiny_tasks: { us_per_task: 1580 },
  dependent_chain: { us_per_task: 6900 },
  shape_1000: { gather_s: null, remote_s: null },
  shape_4000: { gather_s: 0.68, remote_s: 0.009 },
  batching: { chunked_us_per_item: 16.6 },
}

function runDask() {
  const script = `${root}../shared/anchors/dask_bench.py`
  if (args.has('--no-dask') || !existsSync(script) || !existsSync('/usr/bin/python3')) return null
  const probe = spawnSync('/usr/bin/python3', ['-c', 'import distributed'], { encoding: 'utf8' })
  if (probe.status !== 0) return null
  console.log('running the Dask anchor (LocalCluster, 2 processes × 1 thread)…')
  const r = spawnSync('/usr/bin/python3', [script, String(NWORKERS)], { encoding: 'utf8', cwd: root, timeout: 600_000 })
  if (r.status !== 0) { console.log(`  Dask anchor failed: ${r.stderr.split('\n').slice(-3).join(' ')}`); return null }
  const out = {}
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('{')) continue
    const j = JSON.parse(line)
    const name = j.figure === 'tiny_tasks' ? `tiny_tasks_${j.n}` : j.figure === 'shape' ? `shape_${j.side}` : j.figure
    out[name] = j
  }
  return out
}

const us = (ms, n) => (ms * 1000) / n
const fmt = (x, d = 1) => (x === null || x === undefined ? '—' : Number(x).toFixed(d))

async function startGrid() {
  const coord = await startCoordinator({ port: 0 })
  const procs = []
  for (let i = 0; i < NWORKERS; i++) {
    procs.push(spawn(process.execPath, [BIN, 'worker', coord.url, '--nprocs', '1', '--nthreads', '1', '--name', `bench-${i}`], { stdio: 'ignore' }))
  }
  const t0 = Date.now()
  while (coord.coordinator.scheduler.workers().length < NWORKERS) {
    if (Date.now() - t0 > 20_000) throw new Error('workers did not join')
    await new Promise(r => setTimeout(r, 20))
  }
  return { coord, procs, close: async () => { for (const p of procs) p.kill('SIGKILL'); await coord.close() } }
}

async function timed(f) {
  const t0 = performance.now()
  const v = await f()
  return [performance.now() - t0, v]
}

async function main() {
  const dask = runDask()
  const grid = await startGrid()
  const client = await Client.connect(grid.coord.url, { token: grid.coord.clientToken })
  const c = client.with({ pure: false })
  const inc = x => x + 1
  const rows = []

  // warm-up: compile, JIT, pipelines
  await client.gather(c.map(inc, Array.from({ length: 2000 }, (_, i) => i)))

  // 1. tiny tasks
  for (const n of [1000, 10_000]) {
    const [ms, out] = await timed(() => client.gather(c.map(inc, Array.from({ length: n }, (_, i) => i))))
    if (out[n - 1] !== n) throw new Error('wrong answer')
    const d = dask?.[`tiny_tasks_${n}`]?.us_per_task ?? (n === 10_000 ? DESIGN_ANCHOR.tiny_tasks.us_per_task : null)
    rows.push([`${n.toLocaleString('en')} no-op tasks, map + gather`, 'µs/task', us(ms, n), d])
  }

  // 1b. dependent chain
  {
    const n = 500
    const [ms, v] = await timed(() => {
      let f = c.submit(inc, 0)
      for (let i = 0; i < n - 1; i++) f = c.submit(inc, f)
      return f.result()
    })
    if (v !== n) throw new Error('wrong chain answer')
    rows.push(['chain of 500 dependent tasks', 'µs/hop', us(ms, n), dask?.dependent_chain?.us_per_task ?? DESIGN_ANCHOR.dependent_chain.us_per_task])
  }

  // 2. the seed's shape example: pull the array vs send the function to it
  for (const side of [1000, 4000]) {
    const x = c.submit((n, m) => {
      const a = new Float64Array(n * m)
      for (let i = 0; i < a.length; i++) a[i] = Math.random()
      return { shape: [n, m], data: a }
    }, side, side)
    await c.submit(a => a.shape, x).result()
    const [slow, whole] = await timed(() => x.result())
    if (whole.data.length !== side * side) throw new Error('wrong pull')
    // pulled again: the worker kept the encoding it made the first time (median of 3)
    const again = []
    for (let i = 0; i < 3; i++) {
      const [ms, v] = await timed(() => x.result())
      if (v.data.length !== side * side) throw new Error('wrong pull')
      again.push(ms)
    }
    again.sort((p, q) => p - q)
    const [fast, shape] = await timed(() => c.submit(a => a.shape, x).result())
    if (shape[0] !== side) throw new Error('wrong shape')
    const mb = (side * side * 8) / 1e6
    const d = dask?.[`shape_${side}`] ?? DESIGN_ANCHOR[`shape_${side}`]
    rows.push([`shape ${side}×${side} (${mb.toFixed(0)} MB): pull to client`, 's', slow / 1000, d?.gather_s ?? null, 3])
    rows.push([`shape ${side}×${side} (${mb.toFixed(0)} MB): pull again`, 's', again[1] / 1000, null, 3])
    rows.push([`shape ${side}×${side} (${mb.toFixed(0)} MB): send the function`, 's', fast / 1000, d?.remote_s ?? null, 4])
    x.release()
  }

  // 3. batching: one task per item vs chunks of 20,000
  {
    const seq = Array.from({ length: 200_000 }, (_, i) => i)
    const [perMs] = await timed(() => client.gather(c.map(inc, seq.slice(0, 20_000))))
    const [chMs, out] = await timed(() => client.gather(c.map(chunk => chunk.map(x => x + 1), [...partitionAll(20_000, seq)])))
    if (out.at(-1).at(-1) !== 200_000) throw new Error('wrong chunked answer')
    const t0 = performance.now(); const loc = seq.map(x => x + 1); const locMs = performance.now() - t0
    void loc
    const db = dask?.batching
    rows.push(['20,000 items, one task each', 'µs/item', us(perMs, 20_000), db?.per_item_task_us ?? null, 1])
    rows.push(['200,000 items in chunks of 20,000', 'µs/item', us(chMs, 200_000), db?.chunked_us_per_item ?? DESIGN_ANCHOR.batching.chunked_us_per_item, 3])
    rows.push(['the same loop locally (no grid)', 'µs/item', us(locMs, 200_000), db?.local_loop_us_per_item ?? null, 3])
  }

  await client.close()
  await grid.close()

  // Client.local: the same API, no coordinator process
  {
    const local = await Client.local({ workers: NWORKERS })
    const lc = local.with({ pure: false })
    await local.gather(lc.map(inc, Array.from({ length: 2000 }, (_, i) => i)))
    const [ms] = await timed(() => local.gather(lc.map(inc, Array.from({ length: 10_000 }, (_, i) => i))))
    rows.push(['Client.local: 10,000 no-op tasks', 'µs/task', us(ms, 10_000), null])
    await local.close()
  }

  // the browser path: 2 Chromium tabs × 1 Web Worker
  if (!args.has('--no-browser')) {
    const tabRows = await benchTabs({ tabs: NWORKERS, dask, anchor: { tiny: DESIGN_ANCHOR.tiny_tasks.us_per_task, chain: DESIGN_ANCHOR.dependent_chain.us_per_task } })
    if (tabRows) rows.push(...tabRows)
  }

  const src = dask ? 'Dask (measured now)' : 'Dask (DESIGN.md anchor)'
  console.log(`\ntabgrid bench — ${NWORKERS} Node workers × 1 thread (rows marked "tabs": ${NWORKERS} Chromium tabs × 1 Web Worker), coordinator and client in this process\n`)
  const w = [46, 8, 12, 24, 10]
  console.log(['workload', 'unit', 'tabgrid', src, 'vs Dask'].map((h, i) => h.padEnd(w[i])).join(''))
  for (const [name, unit, ours, theirs, digits = 1] of rows) {
    const ratio = theirs ? (unit === 's' || unit.startsWith('µs') ? theirs / ours : ours / theirs) : null
    console.log([name, unit, fmt(ours, digits), fmt(theirs, digits), ratio ? `${ratio.toFixed(1)}× ${ratio >= 1 ? 'faster' : 'slower'}` : ''].map((c, i) => String(c).padEnd(w[i])).join(''))
  }
  // a million queued tasks at the coordinator (its own process, heap measured)
  if (!args.has('--no-million')) {
    const r = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(new URL('./million.js', import.meta.url)), '1000000'], { encoding: 'utf8', timeout: 600_000 })
    console.log(`\n${(r.stdout || r.stderr).trim()}`)
  }
  // what the coordinator's journal (--journal) costs on tiny tasks
  if (!args.has('--no-journal')) {
    const r = spawnSync(process.execPath, [fileURLToPath(new URL('./journal.js', import.meta.url)), '3'], { encoding: 'utf8', timeout: 600_000 })
    console.log(`\n${(r.stdout || r.stderr).trim()}`)
  }
  // the submit-time checks on a task function (once per distinct source)
  if (!args.has('--no-fn')) {
    const r = spawnSync(process.execPath, [fileURLToPath(new URL('./free-variables.js', import.meta.url))], { encoding: 'utf8', timeout: 300_000 })
    console.log(`\n${(r.stdout || r.stderr).trim()}`)
  }
  // the coordinator at scale: simulated workers speaking the real protocol (docs/scaling.md)
  if (!args.has('--no-scale')) {
    console.log('\nthe coordinator at scale (bench/sim.js: simulated workers that answer at once; coordinator in its own process)')
    const r = spawnSync(process.execPath, [fileURLToPath(new URL('./sim.js', import.meta.url))], { encoding: 'utf8', timeout: 1_800_000 })
    console.log((r.stdout || r.stderr).trim())
    console.log('Targets (issue 11): 5,000 workers at ≥ 80% of the 10-worker rate; idle ≤ 5% of a core; ≤ 1 kB per queued task at a million, per-task cost flat from 10k to 1M.')
  }
  console.log('\nTargets (DESIGN.md): ≤40 µs/task (≥40× Dask) on tiny tasks, Node agents and tabs alike; ≤250 µs per dependent hop on Node agents, ≤400 µs in tabs; pulls no slower than Dask, ≤0.5 s for 128 MB.')
  process.exit(0)
}

main().catch(err => { console.error(err); process.exit(1) })
