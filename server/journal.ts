/**
 * The coordinator's journal in SQLite (better-sqlite3): what it must not forget across a
 * crash (core/journal.ts). WAL mode with `synchronous = NORMAL`: a commit is an append
 * to the log, and a crash of the process (SIGKILL) loses nothing committed; a power cut
 * may lose the last commits, never the file. The file is held in exclusive locking mode:
 * a second coordinator on the same journal fails at start with a clear error.
 *
 * The coordinator's thread reads the journal when it starts (`load`), then hands the file
 * to a writer thread (server/journal-writer.ts): each turn of the event loop, the changes
 * recorded during it leave in one message and are written there in one transaction of
 * prepared statements, so the coordinator's thread spends no time in SQLite.
 */
import { Worker } from 'node:worker_threads'
import { Packr } from 'msgpackr'
import type Database from 'better-sqlite3'
import type { Journal, JournalClient, JournalSnapshot, JournalTask, JournalTaskUpdate, JournalWorker } from '../core/journal.js'
import type { TaskSpec, WorkerKind } from '../core/scheduler-types.js'
import type { WireError } from '../shared/errors.js'
import { openDatabase, prepareWrites, type Op } from './journal-db.js'

export interface SqliteJournalOptions {
  /** where a failed write is reported (the coordinator goes on without it) */
  log?: (line: string, level?: 'info' | 'warn' | 'error') => void
}

type Row = Record<string, unknown>

/** a turn's changes cross to the writer as one msgpack buffer: cloning thousands of small arrays costs several times more */
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, variableMapSize: true })

/** how long `flush` and `close` wait for the writer thread */
const WAIT_MS = 10_000

/**
 * Opens (or creates) the journal at `path`.
 *
 * @example
 * const journal = openJournal('./tabgrid-journal.db')
 * const coordinator = new Coordinator({ journal })   // replays what the file holds, then records
 */
export function openJournal(path: string, options: SqliteJournalOptions = {}): SqliteJournal {
  return new SqliteJournal(path, options)
}

export class SqliteJournal implements Journal {
  /** the connection of this thread, until the writer thread takes the file over */
  private db: Database.Database | undefined
  private writer: Worker | undefined
  private readonly log: (line: string, level?: 'info' | 'warn' | 'error') => void
  private ops: Op[] = []
  private closed = false
  private readonly sendSoon = (): void => this.send()

  constructor(readonly path: string, options: SqliteJournalOptions = {}) {
    this.log = options.log ?? (() => {})
    this.db = openDatabase(path)
  }

  load(): JournalSnapshot {
    if (!this.db) throw new Error('the journal is read once, when the coordinator starts, before anything is written')
    const db = this.db
    const all = (sql: string): Row[] => db.prepare(sql).all() as Row[]
    const clients: JournalClient[] = all('SELECT id, name, secret_hash, ns FROM clients').map(r => ({
      id: String(r.id), name: String(r.name), secretHash: String(r.secret_hash), ns: String(r.ns),
    }))
    const modules = all('SELECT client, name, source FROM modules').map(r => [String(r.client), String(r.name), String(r.source)] as [string, string, string])
    const workers: JournalWorker[] = all('SELECT id, name, kind, slots, volunteer, secret_hash FROM workers').map(r => ({
      id: String(r.id), name: String(r.name), kind: (r.kind === 'browser' ? 'browser' : 'node') as WorkerKind, slots: Number(r.slots),
      volunteer: String(r.volunteer), secretHash: String(r.secret_hash),
    }))
    const functions = new Map(all('SELECT id, source FROM functions').map(r => [String(r.id), String(r.source)]))
    const tasks: JournalTask[] = []
    for (const r of db.prepare('SELECT key, owner, fn, spec, args, state, wanters, holders, nbytes, digest, error FROM tasks ORDER BY seq').iterate() as IterableIterator<Row>) {
      const spec = JSON.parse(String(r.spec)) as Omit<TaskSpec, 'key' | 'fn'>
      tasks.push({
        spec: { ...spec, key: String(r.key), fn: r.fn === null ? null : String(r.fn) },
        owner: String(r.owner),
        args: r.args === null ? null : new Uint8Array(r.args as Buffer),
        state: r.state === 'memory' || r.state === 'erred' ? r.state : 'pending',
        wanters: JSON.parse(String(r.wanters)) as string[],
        holders: JSON.parse(String(r.holders)) as string[],
        nbytes: Number(r.nbytes),
        digest: r.digest === null ? null : String(r.digest),
        error: r.error === null ? null : JSON.parse(String(r.error)) as WireError,
      })
    }
    const datasets = all('SELECT name, key FROM datasets').map(r => [String(r.name), String(r.key)] as [string, string])
    return { clients, modules, workers, functions, tasks, datasets }
  }

  private write(op: Op): void {
    if (this.closed) return
    if (this.ops.length === 0) setImmediate(this.sendSoon)
    this.ops.push(op)
  }

  /** This turn's changes leave for the writer thread (started, with the file handed over, on the first). */
  private send(): void {
    if (this.ops.length === 0 || this.closed) return
    const ops = this.ops
    this.ops = []
    // a copy of msgpackr's shared buffer, handed over without another
    const packed = new Uint8Array(packr.pack(ops))
    this.startWriter().postMessage({ type: 'batch', packed }, [packed.buffer])
  }

  private startWriter(): Worker {
    if (this.writer) return this.writer
    // the writer opens the file itself: this thread lets go of it (and of its lock) first
    this.db?.close()
    this.db = undefined
    const fromSource = import.meta.url.endsWith('.ts')
    const workerData = { path: this.path }
    // from sources (tests), the thread registers tsx itself: `--import tsx` does not reach a thread's own entry
    const w = fromSource
      ? new Worker(`import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(new URL('./journal-writer.ts', import.meta.url).href)}) })`, { eval: true, workerData })
      : new Worker(new URL('./journal-writer.js', import.meta.url), { workerData })
    w.on('message', (m: { type: string; message?: string }) => { if (m.type === 'error') this.log(m.message ?? 'journal writer error', 'error') })
    w.on('error', (err: Error) => this.log(`journal writer thread failed: ${err.message}; a restart may lose what it had not written`, 'error'))
    w.unref()
    this.writer = w
    return w
  }

  /** Posts `type` to the writer after what is pending, and waits (blocking this thread) until it answers. */
  private waitFor(type: 'flush' | 'close'): void {
    const w = this.writer
    if (!w) return
    const flag = new Int32Array(new SharedArrayBuffer(4))
    w.postMessage({ type, flag })
    if (Atomics.wait(flag, 0, 0, WAIT_MS) === 'timed-out') this.log(`the journal writer did not answer ${type} within ${WAIT_MS} ms`, 'error')
  }

  putClient(c: JournalClient): void { this.write(['putClient', c.id, c.name, c.secretHash, c.ns]) }
  removeClient(id: string): void { this.write(['removeClient', id]) }
  putModule(client: string, name: string, source: string): void { this.write(['putModule', client, name, source]) }
  putWorker(w: JournalWorker): void { this.write(['putWorker', w.id, w.name, w.kind, w.slots, w.volunteer, w.secretHash]) }
  removeWorker(id: string): void { this.write(['removeWorker', id]) }
  putFunction(id: string, source: string): void { this.write(['putFunction', id, source]) }
  removeFunction(id: string): void { this.write(['removeFunction', id]) }

  putTask(t: JournalTask): void {
    const { key, fn, ...spec } = t.spec
    this.write(['putTask', key, t.owner, fn, spec, t.args, t.state, t.wanters, t.holders, t.nbytes, t.digest, t.error])
  }

  updateTask(key: string, u: JournalTaskUpdate): void {
    this.write(['updateTask', key, u.state, u.wanters, u.holders, u.nbytes, u.digest, u.error])
  }

  dropArgs(key: string): void { this.write(['dropArgs', key]) }
  removeTask(key: string): void { this.write(['removeTask', key]) }
  putDataset(name: string, key: string): void { this.write(['putDataset', name, key]) }
  removeDataset(name: string): void { this.write(['removeDataset', name]) }

  /** Writes what was recorded so far, and returns once it is committed. */
  flush(): void {
    if (this.closed) return
    if (this.ops.length === 0 && !this.writer) return
    this.send()
    this.waitFor('flush')
  }

  clear(): void {
    if (this.closed) return
    this.ops = []
    if (this.db) prepareWrites(this.db).clear()
    else this.startWriter().postMessage({ type: 'clear' })
  }

  close(): void {
    if (this.closed) return
    this.send()
    this.closed = true
    if (this.writer) this.waitFor('close')
    this.db?.close()
    this.db = undefined
  }
}
