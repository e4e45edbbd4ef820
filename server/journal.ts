/**
 * The coordinator's journal in SQLite (better-sqlite3): what it must not forget across a
 * crash (core/journal.ts). WAL mode with `synchronous = NORMAL`: a commit is an append
 * to the log, and a crash of the process (SIGKILL) loses nothing committed; a power cut
 * may lose the last commits, never the file. The file is held in exclusive locking mode:
 * a second coordinator on the same journal fails at start with a clear error.
 *
 * The coordinator's thread reads the journal when it starts (`load`), then hands the file
 * to a writer thread (server/journal-writer.ts): at the end of a turn of the event loop,
 * the changes recorded leave in one message and are written there in one transaction of
 * prepared statements, so the coordinator's thread spends no time in SQLite.
 *
 * One batch is in the writer's hands at a time (a group commit): what is recorded while
 * it commits waits, and is merged per task before it leaves — the last update of a key is
 * the one written, an update of a task not sent yet goes into its insert, and a task
 * inserted and removed before it left writes nothing. A quick task costs at most a row
 * written, often none; a crash loses what was not committed, as before (a batch posted to
 * the writer and not yet committed was lost with the process just the same).
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

/**
 * What is still to be written about one task, merged from its records since the last
 * batch left. A row already written is removed first (`remove`, its seq); then `put` (a
 * row to insert, as an op) or else `update` and `dropArgs` apply to the row of `seq`.
 */
interface PendingTask {
  seq: number
  remove: number | null
  put: Op | null
  update: JournalTaskUpdate | null
  dropArgs: boolean
}

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
  /** changes to clients, workers, functions, modules and datasets, in order (few) */
  private ops: Op[] = []
  /** changes to tasks, merged per key */
  private readonly pending = new Map<string, PendingTask>()
  /** the row (seq) of every task recorded, written or about to be */
  private seqs: Map<string, number> | undefined
  private nextSeq = 1
  /** batches posted to the writer and not committed yet */
  private inFlight = 0
  /** a send is due at the end of this turn */
  private due = false
  private closed = false
  private readonly sendSoon = (): void => {
    this.due = false
    if (this.inFlight === 0) this.send()
  }

  constructor(readonly path: string, options: SqliteJournalOptions = {}) {
    this.log = options.log ?? (() => {})
    this.db = openDatabase(path)
  }

  /** Which seq each recorded key has (read from the file the first time it is needed, if `load` did not). */
  private rows(): Map<string, number> {
    if (this.seqs) return this.seqs
    const seqs = new Map<string, number>()
    if (this.db) {
      for (const r of this.db.prepare('SELECT seq, key FROM tasks ORDER BY seq').iterate() as IterableIterator<Row>) seqs.set(String(r.key), Number(r.seq))
      this.nextSeq = Number((this.db.prepare('SELECT coalesce(max(seq), 0) AS n FROM tasks').get() as Row).n) + 1
    }
    this.seqs = seqs
    return seqs
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
    const seqs = new Map<string, number>()
    let last = 0
    for (const r of db.prepare('SELECT seq, key, owner, fn, spec, args, state, wanters, holders, nbytes, digest, error FROM tasks ORDER BY seq').iterate() as IterableIterator<Row>) {
      const spec = JSON.parse(String(r.spec)) as Omit<TaskSpec, 'key' | 'fn'>
      last = Number(r.seq)
      seqs.set(String(r.key), last)
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
    this.seqs = seqs
    this.nextSeq = last + 1
    return { clients, modules, workers, functions, tasks, datasets }
  }

  /** Something was recorded: it leaves at the end of this turn, or once the writer has committed the batch it has. */
  private soon(): void {
    if (this.due || this.inFlight > 0) return
    this.due = true
    setImmediate(this.sendSoon)
  }

  private write(op: Op): void {
    if (this.closed) return
    this.ops.push(op)
    this.soon()
  }

  /** What is pending about a recorded task (undefined for a key not recorded: nothing to change). */
  private task(key: string): PendingTask | undefined {
    let p = this.pending.get(key)
    if (p === undefined) {
      const seq = this.rows().get(key)
      if (seq === undefined) return undefined
      p = { seq, remove: null, put: null, update: null, dropArgs: false }
      this.pending.set(key, p)
    }
    this.soon()
    return p
  }

  /** The changes recorded so far leave for the writer thread (started, with the file handed over, on the first). */
  private send(): void {
    if (this.closed || (this.ops.length === 0 && this.pending.size === 0)) return
    const ops = this.ops
    this.ops = []
    for (const p of this.pending.values()) {
      if (p.remove !== null) ops.push(['removeTask', p.remove])
      if (p.put !== null) { ops.push(p.put); continue }
      const u = p.update
      if (u !== null) ops.push(['updateTask', p.seq, u.state, u.wanters, u.holders, u.nbytes, u.digest, u.error])
      if (p.dropArgs) ops.push(['dropArgs', p.seq])
    }
    this.pending.clear()
    if (ops.length === 0) return
    // a copy of msgpackr's shared buffer, handed over without another
    const packed = new Uint8Array(packr.pack(ops))
    this.inFlight++
    this.startWriter().postMessage({ type: 'batch', packed }, [packed.buffer])
  }

  /** The writer committed a batch: what was recorded meanwhile leaves now. */
  private committed(): void {
    if (this.inFlight > 0) this.inFlight--
    if (this.inFlight === 0 && !this.due && (this.ops.length > 0 || this.pending.size > 0)) this.send()
  }

  private startWriter(): Worker {
    if (this.writer) return this.writer
    // the writer opens the file itself: this thread lets go of it (and of its lock) first,
    // once it knows the rows the file has
    this.rows()
    this.db?.close()
    this.db = undefined
    const fromSource = import.meta.url.endsWith('.ts')
    const workerData = { path: this.path }
    // from sources (tests), the thread registers tsx itself: `--import tsx` does not reach a thread's own entry
    const w = fromSource
      ? new Worker(`import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(new URL('./journal-writer.ts', import.meta.url).href)}) })`, { eval: true, workerData })
      : new Worker(new URL('./journal-writer.js', import.meta.url), { workerData })
    w.on('message', (m: { type: string; message?: string }) => {
      if (m.type === 'committed') this.committed()
      else if (m.type === 'error') this.log(m.message ?? 'journal writer error', 'error')
    })
    w.on('error', (err: Error) => this.log(`journal writer thread failed: ${err.message}; a restart may lose what it had not written`, 'error'))
    // gone (failed, or closed): nothing is waited for any more
    w.on('exit', () => { this.inFlight = 0 })
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
    if (this.closed) return
    const key = t.spec.key
    const seqs = this.rows()
    const old = seqs.get(key)
    const seq = this.nextSeq++
    seqs.set(key, seq)
    // a key recorded again replaces its row (a row not written yet is simply not written)
    const was = this.pending.get(key)
    const remove = was !== undefined ? (was.put !== null ? was.remove : was.remove ?? was.seq) : old ?? null
    // [seq, spec (its key and fn included), owner, args, state, wanters, holders, nbytes, digest, error]
    const put: Op = ['putTask', seq, t.spec, t.owner, t.args, t.state, t.wanters, t.holders, t.nbytes, t.digest, t.error]
    this.pending.set(key, { seq, remove, put, update: null, dropArgs: false })
    this.soon()
  }

  updateTask(key: string, u: JournalTaskUpdate): void {
    if (this.closed) return
    const p = this.task(key)
    if (p === undefined) return
    if (p.put !== null) {
      // not written yet: its insert carries the update
      const put = p.put
      put[5] = u.state; put[6] = u.wanters; put[7] = u.holders; put[8] = u.nbytes; put[10] = u.error
      if (u.digest !== null) put[9] = u.digest
      return
    }
    // the last update wins; a null digest keeps the one an earlier update (or the row) has
    p.update = u.digest === null && p.update !== null && p.update.digest !== null ? { ...u, digest: p.update.digest } : u
  }

  dropArgs(key: string): void {
    if (this.closed) return
    const p = this.task(key)
    if (p === undefined) return
    if (p.put !== null) p.put[4] = null
    else p.dropArgs = true
  }

  removeTask(key: string): void {
    if (this.closed) return
    const seqs = this.rows()
    const seq = seqs.get(key)
    if (seq === undefined) return
    seqs.delete(key)
    const p = this.pending.get(key)
    // inserted and removed before it was written: nothing to write, unless an older row is to go
    const remove = p === undefined ? seq : p.put !== null ? p.remove : p.remove ?? p.seq
    if (remove === null) { this.pending.delete(key); return }
    // the row goes: what was pending about it with it (removeTask, below the key's other changes, would do the same)
    this.pending.set(key, { seq, remove, put: null, update: null, dropArgs: false })
    this.soon()
  }
  putDataset(name: string, key: string): void { this.write(['putDataset', name, key]) }
  removeDataset(name: string): void { this.write(['removeDataset', name]) }

  /** Writes what was recorded so far, and returns once it is committed. */
  flush(): void {
    if (this.closed) return
    if (this.ops.length === 0 && this.pending.size === 0 && !this.writer) return
    this.send()
    this.waitFor('flush')
  }

  clear(): void {
    if (this.closed) return
    this.ops = []
    this.pending.clear()
    this.seqs = new Map()
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
