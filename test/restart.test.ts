/**
 * A coordinator killed mid-run (SIGKILL) and started again on the same port with the same
 * journal: clients and workers resume with their secrets, finished results come back from
 * the workers that hold them without running again, unfinished tasks run, and a worker
 * that claims what the journal does not say it holds is refused. Without a journal, the
 * same crash fails every future with LostDataError.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Client, LostDataError, type Future } from 'tabgrid'
import { BIN, scratchDir, spawnWorker, until, type WorkerProcess } from './grid.js'
import { rawPeer, workerHello, type RawPeer } from './hostile.js'

const TOKEN = 'restart-test-token'

interface CoordinatorProcess { proc: ChildProcess; port: number; url: string; output: () => string }

const procs: ChildProcess[] = []
const workers: WorkerProcess[] = []
const clients: Client[] = []
const peers: RawPeer[] = []
afterEach(async () => {
  for (const p of peers.splice(0)) p.close()
  await Promise.all(clients.splice(0).map(c => c.close().catch(() => {})))
  for (const w of workers.splice(0)) if (w.proc.exitCode === null) w.kill('SIGKILL')
  for (const p of procs.splice(0)) if (p.exitCode === null && p.signalCode === null) { p.kill('SIGKILL'); await new Promise(r => p.once('exit', r)) }
})

/** `tabgrid coordinator` in a process of its own (so it can be SIGKILLed), in `cwd`. */
async function coordinator(cwd: string, port: number, journal: string[]): Promise<CoordinatorProcess> {
  const proc = spawn(process.execPath, [BIN, 'coordinator', '--port', String(port), '--client-token', TOKEN, '--log-format', 'json', ...journal], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  procs.push(proc)
  let out = ''
  proc.stdout!.on('data', d => { out += String(d) })
  proc.stderr!.on('data', d => { out += String(d) })
  const url = await until(() => /listening on (http:\/\/[\d.:]+)/.exec(out)?.[1] ?? (proc.exitCode !== null ? `exited: ${out}` : undefined), 'the coordinator to listen', 30_000)
  if (!url.startsWith('http')) throw new Error(url)
  return { proc, url, port: Number(new URL(url).port), output: () => out }
}

async function kill(c: CoordinatorProcess): Promise<void> {
  c.proc.kill('SIGKILL')
  await new Promise(r => c.proc.exitCode !== null || c.proc.signalCode !== null ? r(undefined) : c.proc.once('exit', r))
}

/** Lines of the runs log: one per execution of a task (its key), appended by the task itself. */
const runs = (log: string): string[] => readFileSync(log, 'utf8').split('\n').filter(Boolean)
const count = (log: string, key: string): number => runs(log).filter(l => l === key).length

// tasks append their name to the log when they run (workers started with --trust-tasks may write files)
const fast = (i: number, log: string): number => {
  ;(globalThis as unknown as { process: { getBuiltinModule(m: string): { appendFileSync(p: string, s: string): void } } }).process.getBuiltinModule('node:fs').appendFileSync(log, `fast-${i}\n`)
  return i * 2
}
const slow = async (i: number, log: string, ms: number): Promise<number> => {
  ;(globalThis as unknown as { process: { getBuiltinModule(m: string): { appendFileSync(p: string, s: string): void } } }).process.getBuiltinModule('node:fs').appendFileSync(log, `slow-${i}\n`)
  await new Promise(r => globalThis.setTimeout(r, ms))
  return i * 100
}
const plus = (x: number, log: string): number => {
  ;(globalThis as unknown as { process: { getBuiltinModule(m: string): { appendFileSync(p: string, s: string): void } } }).process.getBuiltinModule('node:fs').appendFileSync(log, `plus-${x}\n`)
  return x + 1
}

describe('a coordinator restart with a journal', () => {
  it('SIGKILLed mid-run and restarted: every future resolves, finished results are not recomputed, a lying worker is refused', { timeout: 120_000 }, async () => {
    const dir = scratchDir()
    const journal = join(dir, 'journal.db')
    const log = join(dir, 'runs.log')
    writeFileSync(log, '')
    let coord = await coordinator(dir, 0, ['--journal', journal])
    const port = coord.port
    for (const name of ['a', 'b']) workers.push(spawnWorker(coord.url, ['--nworkers', '1', '--nthreads', '1', '--trust-tasks'], `restart-${name}`))
    const client = await Client.connect(coord.url, { token: TOKEN, name: 'restart' })
    clients.push(client)
    await until(async () => (await client.workers()).length === 2, 'two workers')
    // a volunteer that joined before the crash (so the journal knows it) and holds nothing
    const liar = await rawPeer(coord.url, workerHello('liar'))
    peers.push(liar)
    const welcome = await liar.waitFor(m => m.type === 'welcome', 'the liar welcomed')
    liar.send({ type: 'status', accepting: false })

    const done: Future<number>[] = client.map(fast, Array.from({ length: 20 }, (_, i) => i), Array.from({ length: 20 }, () => log))
    expect(await client.gather(done)).toEqual(Array.from({ length: 20 }, (_, i) => i * 2))
    const running: Future<number>[] = client.map(slow, [1, 2], [log, log], [4_000, 4_000])
    // a task on a finished result, submitted after the crash
    await until(() => count(log, 'slow-1') + count(log, 'slow-2') === 2, 'the slow tasks to start')
    expect(runs(log).filter(l => l.startsWith('fast-')).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `fast-${i}`).sort())

    await kill(coord)
    coord = await coordinator(dir, port, ['--journal', journal])
    expect(coord.output()).toMatch(/restored from the journal: 1 clients, 3 workers, 22 tasks \(20 results held\)/)

    // the lying volunteer resumes its identity and claims a result it never had
    const back = await rawPeer(coord.url, workerHello('liar', { resume: welcome.resume, held: [{ key: done[0]!.key, nbytes: 9, digest: 'ab'.repeat(32) }] }))
    peers.push(back)
    expect(await back.waitFor(m => m.type === 'welcome', 'the liar welcomed back')).toMatchObject({ id: welcome.id, resumed: true })
    await back.waitFor(m => m.type === 'free' && (m.keys as string[]).includes(done[0]!.key), 'the liar told to free the key it claimed')

    // every future settles with the right value: the finished ones from the workers that hold them
    expect(await client.gather(done)).toEqual(Array.from({ length: 20 }, (_, i) => i * 2))
    expect(await client.gather(running)).toEqual([100, 200])
    const after = await client.submit(plus, done[3]!, log).result()
    expect(after).toBe(7)
    for (let i = 0; i < 20; i++) expect(count(log, `fast-${i}`), `fast-${i} ran once`).toBe(1)
    // unfinished ones ran again (at least once more)
    expect(count(log, 'slow-1')).toBeGreaterThanOrEqual(2)
    expect(count(log, 'slow-2')).toBeGreaterThanOrEqual(2)
    const story = await client.story(done[0]!)
    expect(story.map(e => e.note)).toContain('restored from the journal')
    expect(story.filter(e => e.to === 'processing')).toEqual([])
    expect((await client.workers()).map(w => w.name).sort()).toEqual(['liar', 'restart-a', 'restart-b'])
  })

  it('--no-journal: the same crash fails every future with LostDataError, saying why', { timeout: 60_000 }, async () => {
    const dir = scratchDir()
    let coord = await coordinator(dir, 0, ['--no-journal'])
    const port = coord.port
    workers.push(spawnWorker(coord.url, ['--nworkers', '1', '--nthreads', '1'], 'nj'))
    const client = await Client.connect(coord.url, { token: TOKEN })
    clients.push(client)
    await until(async () => (await client.workers()).length === 1, 'the worker')
    const f = client.submit((x: number) => x + 1, 1)
    expect(await f.result()).toBe(2)
    const pending = client.submit(async (ms: number) => { await new Promise(r => globalThis.setTimeout(r, ms)); return 1 }, 5_000)
    await kill(coord)
    coord = await coordinator(dir, port, ['--no-journal'])
    expect(coord.output()).not.toMatch(/restored from the journal/)
    const [a, b] = await Promise.allSettled([f.result(), pending.result()])
    for (const r of [a, b]) {
      expect(r.status).toBe('rejected')
      const err = (r as PromiseRejectedResult).reason as Error
      expect(err).toBeInstanceOf(LostDataError)
      expect(err.message).toMatch(/forgot/i)
    }
  })
})
