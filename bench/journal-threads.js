// `node bench/journal-threads.js [rounds] [tasks]` (after `npm run build`, Linux): the CPU the
// journal itself spends per task, on the coordinator's thread and on its writer thread, read
// from /proc for each thread (so other processes on the machine count for little). Each
// round records `tasks` tasks on a fresh journal as a map + gather does (inserted in one turn,
// finished in turns of 500, kept past the writer's fold, here after one second, then forgotten) and
// prints the medians and ranges. bench/journal.js measures the whole coordinator instead.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openJournal } from '../dist/server/journal.js'

const ROUNDS = Number(process.argv[2] ?? 5)
const N = Number(process.argv[3] ?? 30_000)
const TICK_MS = 10 // /proc/…/stat counts in clock ticks (USER_HZ 100)
const fn = '4f677955112077e0f6a560db255f729cb250a3a1b431703569198e7ff3f92556'
const owner = 'c-f5665d53a958'
const worker = 'w-a6d12952c4b2'

/** CPU ms of each thread of this process, by thread id */
function threads() {
  const m = new Map()
  for (const t of readdirSync('/proc/self/task')) {
    try {
      const st = readFileSync(`/proc/self/task/${t}/stat`, 'utf8')
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ')
      m.set(t, (Number(f[11]) + Number(f[12])) * TICK_MS)
    } catch { /* gone meanwhile */ }
  }
  return m
}

const turn = () => new Promise(r => setImmediate(r))
const main = []
const others = []
for (let r = 0; r < ROUNDS; r++) {
  const dir = mkdtempSync(join(tmpdir(), 'tabgrid-bench-jthreads-'))
  const j = openJournal(join(dir, 'journal.db'), { foldMs: 1_000 })
  j.putClient({ id: owner, name: 'bench', secretHash: 'h', ns: 'n' })
  j.putFunction(fn, 'x => x + 1')
  // the writer thread is started (and has loaded) before the count begins
  await turn()
  j.flush()
  const keys = Array.from({ length: N }, (_, i) => `inc-${r}-${i.toString(36)}`)
  const t0 = threads()
  for (const key of keys) {
    const spec = { key, fn, deps: [], group: 'inc', priority: 0, retries: 0, redundancy: 1, workers: [], nbytes: 4 }
    spec.spotCheck = false
    j.putTask({ spec, owner, args: new Uint8Array([0x91, 1, 2, 3]), state: 'pending', wanters: [owner], holders: [], nbytes: 0, digest: null, error: null })
  }
  await turn()
  for (let i = 0; i < N; i += 500) {
    for (let k = i; k < Math.min(N, i + 500); k++) j.updateTask(keys[k], { state: 'memory', wanters: [owner], holders: [worker], nbytes: 8, digest: fn, error: null })
    await turn()
  }
  // past the writer's fold: the tasks are written into the tasks table, as tasks that live longer than its window are
  await new Promise(res => setTimeout(res, 1_100))
  j.updateTask(keys[0], { state: 'memory', wanters: [owner], holders: [worker, 'w-2'], nbytes: 8, digest: null, error: null })
  await turn()
  for (const key of keys) j.removeTask(key)
  await turn()
  j.flush()
  const t1 = threads()
  let m = 0
  let o = 0
  for (const [t, ms] of t1) {
    const d = ms - (t0.get(t) ?? 0)
    if (t === String(process.pid)) m += d
    else o += d
  }
  main.push((m * 1000) / N)
  others.push((o * 1000) / N)
  j.close()
  rmSync(dir, { recursive: true, force: true })
}
const median = xs => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const f = xs => xs.map(x => x.toFixed(1)).join(' / ')
console.log(`journal CPU per task: ${N.toLocaleString('en')} tasks recorded, finished and forgotten, median of ${ROUNDS} rounds`)
console.log(`  coordinator's thread   ${median(main).toFixed(1).padStart(5)} µs (${f(main)})`)
console.log(`  other threads          ${median(others).toFixed(1).padStart(5)} µs (${f(others)})   (the writer, and V8's helpers)`)
process.exit(0)
