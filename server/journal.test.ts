import { afterEach, describe, expect, it } from 'vitest'
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fork } from 'node:child_process'
import Database from 'better-sqlite3'
import { openJournal, type SqliteJournal } from './journal.js'
import { LoggedTasks, TaskBatchEncoder, decodeTasks } from './journal-db.js'
import type { JournalTask } from '../core/journal.js'
import { Coordinator } from '../core/coordinator.js'
import { startCoordinator } from './http.js'
import type { Connection } from '../core/coordinator.js'
import { sha256Hex } from '../shared/digest.js'
import { hashString } from '../shared/hash.js'
import { PROTOCOL_VERSION } from '../shared/protocol.js'

const dirs: string[] = []
const open: SqliteJournal[] = []
afterEach(() => {
  for (const j of open.splice(0)) j.close()
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})
const file = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'tabgrid-journal-'))
  dirs.push(d)
  return join(d, 'journal.db')
}
const journal = (path: string): SqliteJournal => {
  const j = openJournal(path)
  open.push(j)
  return j
}
const reopen = (j: SqliteJournal): SqliteJournal => {
  j.close()
  open.splice(open.indexOf(j), 1)
  return journal(j.path)
}

const task = (key: string, o: Partial<JournalTask> = {}): JournalTask => ({
  spec: { key, fn: 'fn1', deps: [], group: 'inc', priority: 0, retries: 0, redundancy: 1, workers: [], nbytes: 3 },
  owner: 'c-1', args: new Uint8Array([1, 2, 3]), state: 'pending', wanters: ['c-1'], holders: [], nbytes: 0, digest: null, error: null, ...o,
})

/** the tables schema versions 1 and 2 had alike (the tasks table and the log differ) */
const OLD_TABLES = `CREATE TABLE clients (id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_hash TEXT NOT NULL, ns TEXT NOT NULL);
CREATE TABLE modules (client TEXT NOT NULL, name TEXT NOT NULL, source TEXT NOT NULL, PRIMARY KEY (client, name));
CREATE TABLE workers (id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, slots INTEGER NOT NULL, volunteer TEXT NOT NULL, secret_hash TEXT NOT NULL);
CREATE TABLE functions (id TEXT PRIMARY KEY, source TEXT NOT NULL);
`

describe('SqliteJournal', () => {
  it('records, and a reopened file replays exactly what was committed', () => {
    const j = journal(file())
    j.putClient({ id: 'c-1', name: 'tour', secretHash: 'h1', ns: 'm-1' })
    j.putModule('c-1', 'stats', 'export const x = 1')
    j.putWorker({ id: 'w-1', name: 'a', kind: 'node', slots: 2, volunteer: '127.0.0.1', secretHash: 'h2' })
    j.putFunction('fn1', 'x => x + 1')
    j.putTask(task('inc-1'))
    j.putTask(task('inc-2', { spec: { ...task('inc-2').spec, deps: ['inc-1'], timeout: 500 } }))
    j.putTask(task('s-1', { spec: { ...task('s-1').spec, fn: null, group: 'scatter' }, args: new Uint8Array([9]), digest: 'd-s' }))
    j.updateTask('inc-1', { state: 'memory', wanters: ['c-1', 'dataset:x'], holders: ['w-1'], nbytes: 8, digest: 'd1', error: null })
    // a null digest keeps the one recorded
    j.updateTask('inc-1', { state: 'memory', wanters: ['c-1', 'dataset:x'], holders: ['w-1', 'w-2'], nbytes: 8, digest: null, error: null })
    j.updateTask('inc-2', { state: 'erred', wanters: ['c-1'], holders: [], nbytes: 0, digest: null, error: { code: 'task-error', message: 'boom' } })
    j.dropArgs('s-1')
    j.putDataset('x', 'inc-1')
    const back = reopen(j).load()
    expect(back.clients).toEqual([{ id: 'c-1', name: 'tour', secretHash: 'h1', ns: 'm-1' }])
    expect(back.modules).toEqual([['c-1', 'stats', 'export const x = 1']])
    expect(back.workers).toEqual([{ id: 'w-1', name: 'a', kind: 'node', slots: 2, volunteer: '127.0.0.1', secretHash: 'h2' }])
    expect(back.functions).toEqual(new Map([['fn1', 'x => x + 1']]))
    expect(back.datasets).toEqual([['x', 'inc-1']])
    expect(back.tasks).toEqual([
      task('inc-1', { state: 'memory', wanters: ['c-1', 'dataset:x'], holders: ['w-1', 'w-2'], nbytes: 8, digest: 'd1' }),
      task('inc-2', { spec: { ...task('inc-2').spec, deps: ['inc-1'], timeout: 500 }, state: 'erred', error: { code: 'task-error', message: 'boom' } }),
      task('s-1', { spec: { ...task('s-1').spec, fn: null, group: 'scatter' }, args: null, digest: 'd-s' }),
    ])
  })

  it('removes what the coordinator forgot, and clear() forgets everything', () => {
    const j = journal(file())
    j.putClient({ id: 'c-1', name: 'a', secretHash: 'h', ns: 'm' })
    j.putModule('c-1', 'm', 'export {}')
    j.putWorker({ id: 'w-1', name: 'a', kind: 'browser', slots: 1, volunteer: 'v', secretHash: 'h' })
    j.putFunction('fn1', 'x => x')
    j.putTask(task('a'))
    j.putTask(task('b'))
    j.putDataset('d', 'a')
    j.removeClient('c-1')
    j.removeWorker('w-1')
    j.removeFunction('fn1')
    j.removeTask('a')
    j.removeDataset('d')
    let back = reopen(j).load()
    expect(back.clients).toEqual([])
    expect(back.modules).toEqual([])
    expect(back.workers).toEqual([])
    expect(back.functions.size).toBe(0)
    expect(back.datasets).toEqual([])
    expect(back.tasks.map(t => t.spec.key)).toEqual(['b'])
    const k = journal(file())
    k.putTask(task('x'))
    k.clear()
    back = reopen(k).load()
    expect(back.tasks).toEqual([])
  })

  it('commits once per turn of the event loop: a process killed after the turn loses nothing', async () => {
    const path = file()
    // a child writes and is SIGKILLed once the turn's commit ran
    const child = fork(new URL('../test/fixtures/journal-writer.ts', import.meta.url).pathname, [path], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    await new Promise<void>(r => child.once('message', () => r()))
    child.kill('SIGKILL')
    await new Promise(r => child.once('exit', r))
    const back = journal(path).load()
    expect(back.tasks.map(t => t.spec.key)).toEqual(Array.from({ length: 1000 }, (_, i) => `k-${i}`))
    expect(back.tasks[999]).toMatchObject({ state: 'memory', holders: ['w-1'], digest: 'd' })
  })

  it('merges what a task records before it is written: an insert and a delete leave nothing, updates the last state', () => {
    const j = journal(file())
    j.putTask(task('gone'))
    j.updateTask('gone', { state: 'memory', wanters: ['c-1'], holders: ['w-1'], nbytes: 4, digest: 'dg', error: null })
    j.removeTask('gone')
    // an update of a task not written yet goes into its insert; a null digest keeps the one before
    j.putTask(task('kept'))
    j.updateTask('kept', { state: 'memory', wanters: ['c-1'], holders: ['w-1'], nbytes: 4, digest: 'dk', error: null })
    j.updateTask('kept', { state: 'memory', wanters: ['c-1'], holders: ['w-1', 'w-2'], nbytes: 4, digest: null, error: null })
    j.dropArgs('kept')
    // a key unknown to the journal changes nothing
    j.updateTask('stranger', { state: 'memory', wanters: [], holders: [], nbytes: 1, digest: null, error: null })
    j.removeTask('stranger')
    j.flush()
    // then, in later batches, changes to a written row: the last update wins, a re-submitted key replaces its row
    j.putTask(task('again'))
    j.flush()
    j.updateTask('kept', { state: 'erred', wanters: ['c-1'], holders: [], nbytes: 0, digest: null, error: { code: 'task-error', message: 'x' } })
    j.updateTask('kept', { state: 'memory', wanters: ['c-1', 'c-2'], holders: ['w-3'], nbytes: 5, digest: null, error: null })
    j.putTask(task('again', { owner: 'c-2', args: new Uint8Array([7]) }))
    j.putTask(task('brief'))
    j.removeTask('brief')
    const back = reopen(j).load()
    expect(back.tasks).toEqual([
      task('kept', { state: 'memory', wanters: ['c-1', 'c-2'], holders: ['w-3'], nbytes: 5, digest: 'dk', args: null }),
      task('again', { owner: 'c-2', args: new Uint8Array([7]) }),
    ])
  })

  it('each task keeps its own arguments; tasks forgotten together are deleted together, and only they', () => {
    const j = journal(file())
    const keys = Array.from({ length: 8 }, (_, i) => `t-${i}`)
    for (const [i, k] of keys.entries()) j.putTask(task(k, { args: i === 3 ? null : new Uint8Array(Array.from({ length: i }, () => i)) }))
    j.flush()
    for (const k of ['t-1', 't-2', 't-3', 't-5', 't-7']) j.removeTask(k)
    const back = reopen(j).load()
    expect(back.tasks.map(t => [t.spec.key, [...(t.args ?? [99])]])).toEqual([['t-0', []], ['t-4', [4, 4, 4, 4]], ['t-6', [6, 6, 6, 6, 6, 6]]])
  })

  it('a reopened journal goes on from the rows it holds (read or not): nothing overwritten, nothing lost', () => {
    const path = file()
    const j = journal(path)
    j.putTask(task('a'))
    j.putTask(task('b'))
    let k = reopen(j)
    expect(k.load().tasks.map(t => t.spec.key)).toEqual(['a', 'b'])
    k.putTask(task('c'))
    k.updateTask('a', { state: 'memory', wanters: ['c-1'], holders: ['w-1'], nbytes: 2, digest: 'da', error: null })
    k.removeTask('b')
    // not read this time: it still knows the rows the file has
    k = reopen(k)
    k.putTask(task('d'))
    k.removeTask('c')
    k.updateTask('a', { state: 'memory', wanters: ['c-1'], holders: ['w-1', 'w-2'], nbytes: 2, digest: null, error: null })
    const back = reopen(k).load()
    expect(back.tasks).toEqual([
      task('a', { state: 'memory', holders: ['w-1', 'w-2'], nbytes: 2, digest: 'da' }),
      task('d'),
    ])
  })

  it('a batch merged from several turns is committed whole: a process killed after it loses nothing', async () => {
    const path = file()
    const child = fork(new URL('../test/fixtures/journal-writer.ts', import.meta.url).pathname, [path, 'merge'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    await new Promise<void>(r => child.once('message', () => r()))
    child.kill('SIGKILL')
    await new Promise(r => child.once('exit', r))
    // killed within the second the writer keeps task changes in its log before folding them into the tasks table
    const raw = new Database(path)
    expect((raw.prepare('SELECT count(*) AS n FROM log').get() as { n: number }).n).toBeGreaterThan(0)
    raw.close()
    const back = journal(path).load()
    // the fixture's later turns: k-0..k-9 written, then k-1 removed, k-0 done, k-x in and out, k-2 without its arguments, k-10 added
    expect(back.tasks.map(t => t.spec.key)).toEqual(['k-0', ...Array.from({ length: 8 }, (_, i) => `k-${i + 2}`), 'k-10'])
    expect(back.tasks[0]).toMatchObject({ state: 'memory', holders: ['w-2'], digest: 'd0' })
    expect(back.tasks[1]).toMatchObject({ args: null })
  })

  it('keeps task changes in its log for foldMs (default 5 s) before it folds them into the tasks table; a crash loses neither', async () => {
    const counts = async (args: string[]): Promise<{ log: number; tasks: number; path: string }> => {
      const path = file()
      const child = fork(new URL('../test/fixtures/journal-writer.ts', import.meta.url).pathname, [path, ...args], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
      await new Promise<void>(r => child.once('message', () => r()))
      child.kill('SIGKILL')
      await new Promise(r => child.once('exit', r))
      const raw = new Database(path)
      const n = (t: string): number => (raw.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n
      const out = { log: n('log'), tasks: n('tasks'), path }
      raw.close()
      return out
    }
    // 300 ms after the tasks were committed: within the default window they are still in the log only
    const kept = await counts(['fold'])
    expect(kept).toMatchObject({ log: 1, tasks: 0 })
    // a window of 50 ms: folded by its timer (and the log emptied) well before the kill, 2 s later
    const folded = await counts(['fold', '50', '2000'])
    expect(folded).toMatchObject({ log: 0, tasks: 10 })
    // either way a restart has every task
    for (const c of [kept, folded]) expect(journal(c.path).load().tasks.map(t => t.spec.key)).toEqual(Array.from({ length: 10 }, (_, i) => `k-${i}`))
    expect(() => openJournal(file(), { foldMs: -1 })).toThrow(/foldMs/)
    // a timer that long would fire at once (Node's setTimeout): refused rather than turned around
    expect(() => openJournal(file(), { foldMs: 2 ** 31 })).toThrow(/foldMs/)
    expect(() => openJournal(file(), { foldMs: Number.NaN })).toThrow(/foldMs/)
    expect(() => openJournal(file(), { foldRows: 0 })).toThrow(/foldRows/)
    // startCoordinator's journalFoldMs is this option
    await expect(startCoordinator({ port: 0, journal: file(), journalFoldMs: -5 })).rejects.toThrow(/journal foldMs must be/)
  })

  it('a journal of schema version 1 is migrated when opened: its rows are kept', () => {
    const path = file()
    const db = new Database(path)
    db.exec(`${OLD_TABLES}CREATE TABLE tasks (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, owner TEXT NOT NULL, fn TEXT, spec TEXT NOT NULL, args BLOB, state TEXT NOT NULL, wanters TEXT NOT NULL, holders TEXT NOT NULL, nbytes INTEGER NOT NULL, digest TEXT, error TEXT);
CREATE TABLE datasets (name TEXT PRIMARY KEY, key TEXT NOT NULL);
INSERT INTO clients VALUES ('c-1', 'old', 'h1', 'm-1');
INSERT INTO tasks (key, owner, fn, spec, args, state, wanters, holders, nbytes, digest, error) VALUES
  ('inc-1', 'c-1', 'fn1', '{"deps":[],"group":"inc","priority":0,"retries":0,"redundancy":1,"workers":[],"nbytes":3}', x'010203', 'memory', '["c-1"]', '["w-1"]', 8, 'd1', NULL);`)
    db.pragma('user_version = 1')
    db.close()
    const j = journal(path)
    const back = j.load()
    expect(back.clients).toEqual([{ id: 'c-1', name: 'old', secretHash: 'h1', ns: 'm-1' }])
    expect(back.tasks).toEqual([task('inc-1', { state: 'memory', holders: ['w-1'], nbytes: 8, digest: 'd1' })])
    j.updateTask('inc-1', { state: 'memory', wanters: ['c-1'], holders: ['w-2'], nbytes: 8, digest: null, error: null })
    const again = reopen(j)
    expect(again.load().tasks).toEqual([task('inc-1', { state: 'memory', holders: ['w-2'], nbytes: 8, digest: 'd1' })])
    again.close()
    open.splice(open.indexOf(again), 1)
    const check = new Database(path)
    expect(check.pragma('user_version', { simple: true })).toBe(3)
    check.close()
  })

  it('a journal of schema version 2 is read as it is, task changes its log held in their old format included, and marked 3', () => {
    const path = file()
    // what a version 2 tabgrid left: its tables, and a batch logged in its format, not folded yet
    const db = new Database(path)
    db.exec(`${OLD_TABLES}CREATE TABLE tasks (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, owner TEXT NOT NULL, fn TEXT, spec TEXT NOT NULL, args BLOB, state TEXT NOT NULL, wanters TEXT NOT NULL, holders TEXT NOT NULL, nbytes INTEGER NOT NULL, digest TEXT, error TEXT);
CREATE TABLE datasets (name TEXT PRIMARY KEY, key TEXT NOT NULL);
CREATE TABLE log (seq INTEGER PRIMARY KEY, tasks TEXT NOT NULL, args BLOB);
INSERT INTO clients VALUES ('c-1', 'old', 'h1', 'm-1');
INSERT INTO tasks (seq, key, owner, fn, spec, args, state, wanters, holders, nbytes, digest, error) VALUES
  (1, 'inc-1', 'c-1', 'fn1', '{"deps":[],"group":"inc","priority":0,"retries":0,"redundancy":1,"workers":[],"nbytes":3}', x'010203', 'pending', '["c-1"]', '[]', 0, NULL, NULL);`)
    const spec2 = { key: 'inc-2', fn: 'fn1', deps: ['inc-1'], group: 'inc', priority: 0, retries: 0, redundancy: 1, workers: [], nbytes: 3, timeout: 500 }
    db.prepare('INSERT INTO log (tasks, args) VALUES (?, ?)').run(JSON.stringify([[], [
      ['putTask', 2, spec2, 'c-1', 3, 'pending', ['c-1'], [], 0, null, null],
      ['updateTask', 1, 'memory', ['c-1'], ['w-1'], 8, 'd1', null],
    ]]), Buffer.from([1, 2, 3]))
    db.pragma('user_version = 2')
    db.close()
    const j = journal(path)
    const back = j.load()
    expect(back.clients).toEqual([{ id: 'c-1', name: 'old', secretHash: 'h1', ns: 'm-1' }])
    expect(back.tasks).toEqual([
      task('inc-1', { state: 'memory', holders: ['w-1'], nbytes: 8, digest: 'd1' }),
      task('inc-2', { spec: spec2 }),
    ])
    j.close()
    open.splice(open.indexOf(j), 1)
    const check = new Database(path)
    expect(check.pragma('user_version', { simple: true })).toBe(3)
    expect((check.prepare('SELECT count(*) AS n FROM log').get() as { n: number }).n).toBe(0)
    check.close()
  })

  it('restore gives back each task exactly as recorded, whatever its spec, owner, lists and error', () => {
    const j = journal(file())
    const s = (key: string, o: Partial<JournalTask['spec']> = {}): JournalTask['spec'] => ({ ...task(key).spec, ...o })
    const tasks: JournalTask[] = [
      task('a-0'),
      task('a-1', { args: new Uint8Array([4, 5]) }),
      task('b-0', { spec: s('b-0', { deps: ['a-0', 'a-1'], priority: 2, retries: 1, redundancy: 3, workers: ['w-1', 'gpu'], timeout: 250, spotCheck: false }), owner: 'c-2', wanters: ['c-2', 'c-1', 'dataset:x'] }),
      task('a-2', { args: null }),
      task('odd "key" é\n', { spec: s('odd "key" é\n', { group: 'grüße "q"', fn: 'fn2' }), owner: 'c-3', wanters: ['c-3'] }),
      task('s-0', { spec: s('s-0', { fn: null, group: 'scatter', nbytes: 1 }), args: new Uint8Array([9]), digest: 'd-s', nbytes: 1 }),
      task('e-0', { state: 'erred', error: { code: 'task-error', message: 'boom', key: 'e-0' }, wanters: [] }),
      task('m-0', { state: 'memory', holders: ['w-1', 'w-2'], nbytes: 2 ** 33, digest: 'dm' }),
      task('a-3', { args: new Uint8Array(0) }),
    ]
    // each put gets its own object (the journal keeps it until it leaves)
    for (const t of tasks) j.putTask({ ...t, spec: { ...t.spec } })
    const back = reopen(j).load()
    expect(back.tasks).toEqual(tasks)
    expect(back.tasks[2]!.spec).toStrictEqual(tasks[2]!.spec)
    expect('timeout' in back.tasks[0]!.spec).toBe(false)
  })

  it.runIf(process.platform === 'linux')('the writer thread runs at a lower priority (nice 10); the coordinator\'s thread keeps its own', () => {
    // nice is the 19th field of a thread's stat line, the 17th after its command
    const niceOf = (stat: string): number => Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])
    const threads = (): Map<string, number> => {
      const m = new Map<string, number>()
      for (const t of readdirSync('/proc/self/task')) {
        try { m.set(t, niceOf(readFileSync(`/proc/self/task/${t}/stat`, 'utf8'))) } catch { /* gone meanwhile */ }
      }
      return m
    }
    const mainNice = (): number => niceOf(readFileSync('/proc/self/stat', 'utf8'))
    const before = threads()
    const own = mainNice()
    const j = journal(file())
    j.putTask(task('a'))
    j.flush()
    // the thread that started for the journal
    const started = [...threads()].filter(([t]) => !before.has(t))
    expect(started.filter(([, n]) => n === 10).length).toBe(1)
    expect(mainNice()).toBe(own)
  })

  it('one coordinator per file: a second is refused with a clear error; a file that is not a journal too', () => {
    const path = file()
    journal(path)
    expect(() => openJournal(path)).toThrow(/is in use by another coordinator/)
    const other = file()
    const j = journal(other)
    j.close()
    open.splice(open.indexOf(j), 1)
    const db = new Database(other)
    db.pragma('user_version = 99')
    db.close()
    expect(() => openJournal(other)).toThrow(/schema version 99/)
  })
})

describe('LoggedTasks (the writer thread merging logged batches before it folds them)', () => {
  const spec = (key: string): Record<string, unknown> => ({ key, fn: 'f', deps: [], group: 'g', priority: 0, retries: 0, redundancy: 1, workers: [], nbytes: 1 })
  const SPEC = '{"deps":[],"group":"g","priority":0,"retries":0,"redundancy":1,"workers":[],"nbytes":1}'
  const put = (seq: number, key: string, args: number | null): unknown[] => ['putTask', seq, spec(key), 'c', args, 'pending', ['c'], [], 0, null, null]
  const jt = (key: string, args: Uint8Array | null): JournalTask => ({ spec: spec(key) as unknown as JournalTask['spec'], owner: 'c', args, state: 'pending', wanters: ['c'], holders: [], nbytes: 0, digest: null, error: null })
  const up = (holders: string[], digest: string | null) => ({ state: 'memory' as const, wanters: ['c'], holders, nbytes: 5, digest, error: null })
  // the same changes as version 2 logged them, and as this version does (columns, journal-db.ts TaskBatch)
  const v2 = (): [string, Uint8Array | null][] => [
    [JSON.stringify([[], [put(1, 'a', 2), put(2, 'b', null), put(3, 'c', 1)]]), new Uint8Array([7, 8, 9])],
    [JSON.stringify([[2, 40], [['updateTask', 1, 'memory', ['c'], ['w'], 5, 'd1', null], ['dropArgs', 3, 0], ['updateTask', 41, 'memory', ['c'], ['w'], 5, 'd41', null]]]), null],
    [JSON.stringify([[], [['updateTask', 1, 'memory', ['c'], ['w', 'v'], 5, null, null], ['updateTask', 41, 'memory', ['c'], ['w', 'v'], 5, null, null], ['dropArgs', 42]]]), null],
  ]
  const v3 = (): [string, Uint8Array | null][] => {
    const e = new TaskBatchEncoder()
    e.put(1, jt('a', null), 2); e.put(2, jt('b', null), -1); e.put(3, jt('c', null), 1)
    const first = e.take()!
    e.remove(2); e.remove(40); e.update(1, up(['w'], 'd1')); e.dropArgs(3); e.update(41, up(['w'], 'd41'))
    const second = e.take()!
    e.update(1, up(['w', 'v'], null)); e.update(41, up(['w', 'v'], null)); e.dropArgs(42)
    return [[first, new Uint8Array([7, 8, 9])], [second, null], [e.take()!, null]]
  }
  for (const [name, batches] of [['version 2', v2], ['version 3', v3]] as const) {
    it(`writes a row inserted and removed in the window nowhere, folds updates into inserts, keeps the last update and the digest one had (${name} rows)`, () => {
      const l = new LoggedTasks()
      for (const [i, [tasks, args]] of batches().entries()) l.add(tasks, args, i + 1, i)
      expect(l.last).toBe(3)
      const w = l.take()
      expect(w.removed).toEqual([40])
      // the spec's JSON: the same fields, in whatever order
      for (const p of w.puts) { expect(JSON.parse(p[4])).toEqual(JSON.parse(SPEC)); p[4] = SPEC }
      expect(w.puts).toEqual([
        [1, 'a', 'c', 'f', SPEC, Buffer.from([7, 8]), 'memory', '["c"]', '["w","v"]', 5, 'd1', null],
        [3, 'c', 'c', 'f', SPEC, null, 'pending', '["c"]', '[]', 0, null, null],
      ])
      expect(w.updates).toEqual([['memory', '["c"]', '["w","v"]', 5, 'd41', null, 41]])
      expect(w.drops).toEqual([42])
      expect(l.size).toBe(0)
    })
  }

  it('a batch whose tasks share a function, owner and options writes them once', () => {
    const e = new TaskBatchEncoder()
    const fn = 'f'.repeat(64)
    const t = (key: string, owner = 'c-1'): JournalTask => ({ ...jt(key, null), spec: { ...spec(key), fn, group: 'inc' } as unknown as JournalTask['spec'], owner, wanters: [owner] })
    for (let i = 0; i < 100; i++) e.put(i + 1, t(`inc-${i}`), -1)
    e.put(101, t('inc-x', 'c-2'), -1)
    e.put(102, t('inc-y'), -1)
    const json = e.take()!
    expect(json.split(fn).length - 1).toBe(3)
    expect(json.split('"inc"').length - 1).toBe(3)
    expect(json.split('"c-1"').length - 1).toBe(3)
    const w = decodeTasks(json, null)
    expect(w.puts.map(p => [p[0], p[1], p[2], p[3]])).toEqual([
      ...Array.from({ length: 100 }, (_, i) => [i + 1, `inc-${i}`, 'c-1', fn]), [101, 'inc-x', 'c-2', fn], [102, 'inc-y', 'c-1', fn],
    ])
    for (const p of w.puts) expect(JSON.parse(p[4])).toEqual({ ...spec(''), key: undefined, fn: undefined, group: 'inc' })
  })
})

/** One connected peer of the in-memory core: what it was sent. */
function peer(id: string): Connection & { got: Record<string, unknown>[] } {
  const got: Record<string, unknown>[] = []
  return { id, got, send: (m: object) => { got.push(m as Record<string, unknown>) }, close: () => {}, address: '10.0.0.1' }
}

describe('Coordinator with a journal (in memory, no sockets)', () => {
  it('journals hashed secrets only, and a restarted core resumes the client and worker with their secrets', () => {
    const path = file()
    const j1 = openJournal(path)
    const c1 = new Coordinator({ journal: j1, clientToken: '', validate: true })
    const wc = peer('wc')
    const wid = c1.accept(wc, { role: 'worker', kind: 'node', slots: 1 })
    const wSecret = (wc.got[0] as { resume: string }).resume
    const cc = peer('cc')
    const cid = c1.accept(cc, { role: 'client', name: 'tour' })
    const cSecret = (cc.got[0] as { resume: string }).resume
    const source = '(x) => x + 1'
    c1.receive(cid, [{ type: 'function', hash: hashString(source), source }, { type: 'submit', tasks: [{ key: 'inc-1', fn: hashString(source), args: new Uint8Array([0x91, 1]), deps: [], group: 'inc' }] }])
    const assign = wc.got.find(m => m.type === 'assign') as { attempt: number; digest?: boolean }
    // every result's digest is asked for: the journal keeps it
    expect(assign.digest).toBe(true)
    c1.receive(wid, [{ type: 'finished', key: 'inc-1', attempt: assign.attempt, nbytes: 2, ms: 1, digest: 'ab'.repeat(32) }])
    return Promise.resolve().then(() => {
      // the coordinator dies without a word (no close: nothing is cleared); what it wrote is read back
      j1.close()
      const reader = openJournal(path)
      const snap = reader.load()
      reader.close()
      expect(snap.clients).toEqual([{ id: cid, name: 'tour', secretHash: sha256Hex(new TextEncoder().encode(cSecret)), ns: expect.any(String) }])
      expect(snap.workers[0]!.secretHash).toBe(sha256Hex(new TextEncoder().encode(wSecret)))
      expect(JSON.stringify(snap)).not.toContain(cSecret)
      expect(JSON.stringify(snap)).not.toContain(wSecret)
      expect(snap.tasks).toMatchObject([{ spec: { key: 'inc-1' }, state: 'memory', holders: [wid], digest: 'ab'.repeat(32), nbytes: 2 }])
      const c2 = new Coordinator({ journal: openJournal(path), clientToken: '', validate: true })
      try {
        expect(c2.scheduler.taskStatus('inc-1')).toBe('memory')
        // a worker that lies about the digest keeps nothing
        const liar = peer('liar')
        const back = peer('back')
        const client = peer('client')
        expect(c2.accept(client, { role: 'client', resume: cSecret })).toBe(cid)
        expect(client.got[0]).toMatchObject({ type: 'welcome', id: cid, resumed: true, version: PROTOCOL_VERSION })
        expect(c2.accept(back, { role: 'worker', kind: 'node', slots: 1, resume: wSecret, held: [{ key: 'inc-1', nbytes: 2, digest: 'ab'.repeat(32) }] })).toBe(wid)
        expect(back.got[0]).toMatchObject({ type: 'welcome', id: wid, resumed: true })
        expect(c2.scheduler.whoHas('inc-1')).toEqual([wid])
        // an old secret resumes nothing now, and a stranger's claim is freed
        expect(c2.accept(liar, { role: 'worker', kind: 'node', slots: 1, resume: wSecret, held: [{ key: 'inc-1', nbytes: 2, digest: 'ab'.repeat(32) }] })).not.toBe(wid)
        expect(liar.got).toContainEqual({ type: 'free', keys: ['inc-1'] })
        expect(c2.scheduler.whoHas('inc-1')).toEqual([wid])
      } finally { c2.close() }
    })
  })

  it('a restored worker that re-announces a result with another digest is refused: it is recomputed', async () => {
    const path = file()
    const j1 = openJournal(path)
    const c1 = new Coordinator({ journal: j1, clientToken: '' })
    const wc = peer('wc')
    const wid = c1.accept(wc, { role: 'worker', kind: 'node', slots: 1 })
    const wSecret = (wc.got[0] as { resume: string }).resume
    const cc = peer('cc')
    const cid = c1.accept(cc, { role: 'client' })
    const source = '(x) => x + 1'
    c1.receive(cid, [{ type: 'function', hash: hashString(source), source }, { type: 'submit', tasks: [{ key: 'inc-1', fn: hashString(source), args: new Uint8Array([0x91, 1]), deps: [], group: 'inc' }] }])
    const assign = wc.got.find(m => m.type === 'assign') as { attempt: number }
    c1.receive(wid, [{ type: 'finished', key: 'inc-1', attempt: assign.attempt, nbytes: 2, ms: 1, digest: 'ab'.repeat(32) }])
    await Promise.resolve()
    j1.close()
    const c2 = new Coordinator({ journal: openJournal(path), clientToken: '' })
    try {
      const back = peer('back')
      c2.accept(back, { role: 'worker', kind: 'node', slots: 1, resume: wSecret, held: [{ key: 'inc-1', nbytes: 2, digest: 'cd'.repeat(32) }] })
      expect(back.got).toContainEqual({ type: 'free', keys: ['inc-1'] })
      expect(c2.metrics.refused).toBe(1)
      // nothing runs on it before it says it takes tasks (a resumed worker says so at once)
      expect(back.got.filter(m => m.type === 'assign')).toEqual([])
      c2.receive(wid, [{ type: 'status', accepting: true }])
      // it runs again, on the worker that is back
      expect(back.got.filter(m => m.type === 'assign').map(m => m.key)).toEqual(['inc-1'])
    } finally { c2.close() }
  })

  it('a scattered value on two workers comes back on both: each re-announces it with the digest its put carried', async () => {
    const path = file()
    const j1 = openJournal(path)
    const c1 = new Coordinator({ journal: j1, clientToken: '', trustWorkers: true })
    const peersBefore = [peer('a'), peer('b')]
    const ids = peersBefore.map((p, i) => c1.accept(p, { role: 'worker', kind: 'node', slots: 1, name: `w${i}` }))
    const secrets = peersBefore.map(p => (p.got[0] as { resume: string }).resume)
    const cid = c1.accept(peer('cc'), { role: 'client' })
    const bytes = new Uint8Array([0xc4, 3, 1, 2, 3])
    c1.receive(cid, [{ type: 'scatter', key: 's-1', data: bytes, replicas: 2 }])
    const digest = sha256Hex(bytes)
    for (const [i, p] of peersBefore.entries()) {
      const put = p.got.find(m => m.type === 'put') as { key: string; digest?: string }
      // the put says what the bytes hash to: the worker names it when it re-announces them
      expect(put).toMatchObject({ key: 's-1', digest })
      c1.receive(ids[i]!, [{ type: 'stored', key: 's-1', nbytes: 5 }])
    }
    expect(c1.scheduler.whoHas('s-1').sort()).toEqual([...ids].sort())
    await Promise.resolve()
    j1.close()
    const c2 = new Coordinator({ journal: openJournal(path), clientToken: '', trustWorkers: true })
    try {
      expect(c2.scheduler.taskStatus('s-1')).toBe('memory')
      for (const [i, secret] of secrets.entries()) {
        const back = peer(`back-${i}`)
        expect(c2.accept(back, { role: 'worker', kind: 'node', slots: 1, resume: secret, held: [{ key: 's-1', nbytes: 5, digest }] })).toBe(ids[i])
        expect(back.got.filter(m => m.type === 'free')).toEqual([])
      }
      expect(c2.scheduler.whoHas('s-1').sort()).toEqual([...ids].sort())
    } finally { c2.close() }
  })
})
