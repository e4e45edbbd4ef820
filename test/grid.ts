/**
 * Test harness: a real coordinator on port 0 and real `tabgrid worker` processes,
 * started from the build (so `npm test` builds first).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startCoordinator, type RunningCoordinator, type StartOptions } from 'tabgrid'

export const BIN = fileURLToPath(new URL('../bin/tabgrid.js', import.meta.url))

/** A fresh temporary folder: the working folder of a `tabgrid coordinator` a test starts (its journal goes there, not into the repository). */
export function scratchDir(): string {
  return mkdtempSync(join(tmpdir(), 'tabgrid-test-'))
}

export interface WorkerProcess {
  proc: ChildProcess
  name: string
  output: () => string
  exited: Promise<number | null>
  kill(signal?: NodeJS.Signals): void
}

export function spawnWorker(url: string, args: string[] = [], name = `w${Math.random().toString(36).slice(2, 7)}`): WorkerProcess {
  const proc = spawn(process.execPath, [BIN, 'worker', url, '--name', name, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout!.on('data', d => { out += String(d) })
  proc.stderr!.on('data', d => { out += String(d) })
  const exited = new Promise<number | null>(r => proc.once('exit', code => r(code)))
  return { proc, name, output: () => out, exited, kill: (sig = 'SIGKILL') => { proc.kill(sig) } }
}

export interface Grid {
  coord: RunningCoordinator
  url: string
  /** the client token (the coordinator makes one when the test gives none) */
  token: string | undefined
  workers: WorkerProcess[]
  addWorker(args?: string[], name?: string): Promise<WorkerProcess>
  waitForWorkers(n: number, timeoutMs?: number): Promise<void>
  close(): Promise<void>
}

/** Polls `check` until it returns truthy (never a fixed sleep). */
export async function until<T>(check: () => T | Promise<T>, what: string, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const t0 = Date.now()
  for (;;) {
    const v = await check()
    if (v) return v as NonNullable<T>
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 25))
  }
}

export async function startGrid(opts: { workers?: number; workerArgs?: string[]; coordinator?: StartOptions } = {}): Promise<Grid> {
  const coord = await startCoordinator({ port: 0, validate: true, workerGraceMs: 300, clientGraceMs: 500, ...opts.coordinator })
  const grid: Grid = {
    coord,
    url: coord.url,
    token: coord.clientToken,
    workers: [],
    async addWorker(args = opts.workerArgs ?? ['--nprocs', '1', '--nthreads', '1'], name) {
      const before = coord.coordinator.scheduler.workers().length
      const w = spawnWorker(coord.url, args, name)
      grid.workers.push(w)
      await until(() => coord.coordinator.scheduler.workers().length > before || w.proc.exitCode !== null, `worker ${w.name} to join`)
      if (w.proc.exitCode !== null) throw new Error(`worker exited: ${w.output()}`)
      return w
    },
    async waitForWorkers(n, timeoutMs = 15_000) {
      await until(() => coord.coordinator.scheduler.workers().length >= n, `${n} workers`, timeoutMs)
    },
    async close() {
      for (const w of grid.workers) if (w.proc.exitCode === null) w.kill('SIGKILL')
      await Promise.all(grid.workers.map(w => w.exited))
      await coord.close()
    },
  }
  for (let i = 0; i < (opts.workers ?? 2); i++) await grid.addWorker()
  return grid
}
