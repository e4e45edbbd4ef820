// `node bench/journal.js [rounds]` (after `npm run build`): what the coordinator's journal
// (SQLite, --journal) costs on tiny tasks. Each round runs 10,000 no-op tasks (map +
// gather, after a warm-up) on a fresh coordinator with 2 Node workers × 1 thread, once
// without a journal and once with one in a temporary folder, and prints the medians and
// their ratio (issue 11's target: within 15%).
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Client, startCoordinator } from 'tabgrid'

const BIN = fileURLToPath(new URL('../bin/tabgrid.js', import.meta.url))
const ROUNDS = Number(process.argv[2] ?? 3)
const N = 10_000
const NWORKERS = 2

async function run(journal) {
  const coord = await startCoordinator({ port: 0, journal })
  const procs = []
  for (let i = 0; i < NWORKERS; i++) procs.push(spawn(process.execPath, [BIN, 'worker', coord.url, '--nprocs', '1', '--nthreads', '1', '--name', `jb-${i}`], { stdio: 'ignore' }))
  const t0 = Date.now()
  while (coord.coordinator.scheduler.workers().length < NWORKERS) {
    if (Date.now() - t0 > 20_000) throw new Error('workers did not join')
    await new Promise(r => setTimeout(r, 20))
  }
  const client = await Client.connect(coord.url, { token: coord.clientToken })
  const c = client.with({ pure: false })
  const inc = x => x + 1
  await client.gather(c.map(inc, Array.from({ length: 2000 }, (_, i) => i)))
  const s = performance.now()
  const cpu0 = process.cpuUsage()
  const out = await client.gather(c.map(inc, Array.from({ length: N }, (_, i) => i)))
  const ms = performance.now() - s
  const cpu = process.cpuUsage(cpu0)
  if (out[N - 1] !== N) throw new Error('wrong answer')
  await client.close()
  for (const p of procs) p.kill('SIGKILL')
  await coord.close()
  return { wall: (ms * 1000) / N, cpu: (cpu.user + cpu.system) / N }
}

const median = xs => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const without = []
const withJournal = []
for (let r = 0; r < ROUNDS; r++) {
  without.push(await run(false))
  const dir = mkdtempSync(join(tmpdir(), 'tabgrid-bench-journal-'))
  try { withJournal.push(await run(join(dir, 'journal.db'))) } finally { rmSync(dir, { recursive: true, force: true }) }
}
const f = xs => xs.map(x => x.toFixed(1)).join(' / ')
const line = (name, rs) => `  ${name.padEnd(20)}${median(rs.map(r => r.wall)).toFixed(1).padStart(7)} µs/task (${f(rs.map(r => r.wall))})   ${median(rs.map(r => r.cpu)).toFixed(1).padStart(6)} µs CPU/task (${f(rs.map(r => r.cpu))})`
const ratio = key => median(withJournal.map(r => r[key])) / median(without.map(r => r[key]))
console.log(`journal cost: ${N.toLocaleString('en')} no-op tasks, map + gather, ${NWORKERS} Node workers × 1 thread, median of ${ROUNDS} rounds`)
console.log(`  (CPU: of this process, which runs the coordinator, its journal's writer thread and the client)`)
console.log(line('without a journal', without))
console.log(line('with --journal', withJournal))
console.log(`  ratio               ${ratio('wall').toFixed(2)}× time, ${ratio('cpu').toFixed(2)}× CPU (target: time ≤ 1.15×)`)
process.exit(0)
