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
import type Database from 'better-sqlite3'
import type { Journal, JournalClient, JournalSnapshot, JournalTask, JournalTaskUpdate, JournalWorker } from '../core/journal.js'
import type { TaskSpec, WorkerKind } from '../core/scheduler-types.js'
import type { WireError } from '../shared/errors.js'
import { TaskBatchEncoder, openDatabase, prepareWrites, type Op } from './journal-db.js'

export interface SqliteJournalOptions {
  /** where a failed write is reported (the coordinator goes on without it) */
  log?: (line: string, level?: 'info' | 'warn' | 'error') => void
  /**
   * How long (ms) the writer keeps task changes merged in its log before it folds them into
   * the tasks table. Default 5,000: a task submitted, run and forgotten within it never costs
   * a row of its own; a crash replays at most this much of the log (and `foldRows` rows)
   */
  foldMs?: number
  /** How many task rows the log may hold merged before it is folded whatever its age. Default 20,000 */
  foldRows?: number
}

type Row = Record<string, unknown>

/**
 * A recorded task's row (`seq`), and what is still to be written about it, merged from
 * what was recorded since the last batch left: its insert (`put`, not sent yet: later
 * changes go into it), else its last update and whether its arguments go.
 */
interface TaskRow {
  seq: number
  /** the task as recorded (the journal's own object from then on: later changes are made in it) */
  put: JournalTask | null
  update: JournalTaskUpdate | null
  dropArgs: boolean
  /** listed in `touched` for the next batch */
  queued: boolean
}

/**
 * A batch as it crosses to the writer: the task changes as JSON (V8's own encoder and
 * parser, several times faster than encoding thousands of small arrays in JavaScript or
 * cloning them), in columns (journal-db.ts `TaskBatch`), the arguments of the inserted
 * tasks end to end in one buffer (handed over, not copied), and the other changes.
 */
export interface Batch {
  type: 'batch'
  /** JSON of the task changes, a `TaskBatch` (null: none) */
  tasks: string | null
  args: Uint8Array | null
  /** the other changes (clients, workers, functions, modules, datasets), in order */
  others: Op[]
}

/** the longest timer Node keeps (setTimeout fires at once past it): the longest fold window */
const MAX_TIMER_MS = 2 ** 31 - 1

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

/** A row the file has (or the writer has been sent). */
const written = (seq: number): TaskRow => ({ seq, put: null, update: null, dropArgs: false, queued: false })

export class SqliteJournal implements Journal {
  /** the connection of this thread, until the writer thread takes the file over */
  private db: Database.Database | undefined
  private writer: Worker | undefined
  private readonly log: (line: string, level?: 'info' | 'warn' | 'error') => void
  private readonly fold: { foldMs: number; foldRows: number }
  /** changes to clients, workers, functions, modules and datasets, in order (few) */
  private ops: Op[] = []
  /** the row of every task recorded, written or about to be */
  private seqs: Map<string, TaskRow> | undefined
  /** rows with changes for the next batch */
  private touched: TaskRow[] = []
  /** rows written (or in flight) to delete in the next batch */
  private removed: number[] = []
  private nextSeq = 1
  /** puts the next batch's task changes into columns */
  private readonly encoder = new TaskBatchEncoder()
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
    const foldMs = options.foldMs ?? 5_000
    const foldRows = options.foldRows ?? 20_000
    if (!(typeof foldMs === 'number' && foldMs >= 0 && foldMs <= MAX_TIMER_MS)) throw new Error(`journal foldMs must be a number of ms from 0 to ${MAX_TIMER_MS}, not ${String(options.foldMs)}`)
    if (!(Number.isInteger(foldRows) && foldRows > 0)) throw new Error(`journal foldRows must be a whole number > 0, not ${String(options.foldRows)}`)
    this.fold = { foldMs, foldRows }
    this.db = openDatabase(path)
  }

  /** Which seq each recorded key has (read from the file the first time it is needed, if `load` did not). */
  private rows(): Map<string, TaskRow> {
    if (this.seqs) return this.seqs
    const seqs = new Map<string, TaskRow>()
    if (this.db) {
      for (const r of this.db.prepare('SELECT seq, key FROM tasks ORDER BY seq').iterate() as IterableIterator<Row>) seqs.set(String(r.key), written(Number(r.seq)))
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
    const seqs = new Map<string, TaskRow>()
    let last = 0
    for (const r of db.prepare('SELECT seq, key, owner, fn, spec, args, state, wanters, holders, nbytes, digest, error FROM tasks ORDER BY seq').iterate() as IterableIterator<Row>) {
      const spec = JSON.parse(String(r.spec)) as Omit<TaskSpec, 'key' | 'fn'>
      last = Number(r.seq)
      seqs.set(String(r.key), written(last))
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

  /** The row is to go in the next batch. */
  private queue(row: TaskRow): void {
    if (!row.queued) {
      row.queued = true
      this.touched.push(row)
    }
    this.soon()
  }

  private pendingAny(): boolean {
    return this.ops.length > 0 || this.touched.length > 0 || this.removed.length > 0
  }

  /** The changes recorded so far leave for the writer thread (started, with the file handed over, on the first). */
  private send(): void {
    if (this.closed || !this.pendingAny()) return
    const others = this.ops
    const enc = this.encoder
    this.ops = []
    for (const seq of this.removed) enc.remove(seq)
    this.removed = []
    const args: Uint8Array[] = []
    let bytes = 0
    for (const row of this.touched) {
      row.queued = false
      const put = row.put
      if (put !== null) {
        row.put = null
        // its arguments travel in the batch's buffer
        const a = put.args
        if (a !== null) { args.push(a); bytes += a.byteLength }
        enc.put(row.seq, put, a === null ? -1 : a.byteLength)
        continue
      }
      const u = row.update
      if (u !== null) {
        row.update = null
        enc.update(row.seq, u)
      }
      if (row.dropArgs) {
        row.dropArgs = false
        enc.dropArgs(row.seq)
      }
    }
    this.touched = []
    const tasks = enc.take()
    if (tasks === null && others.length === 0) return
    let buffer: Uint8Array | null = null
    if (bytes > 0) {
      buffer = new Uint8Array(bytes)
      let at = 0
      for (const a of args) { buffer.set(a, at); at += a.byteLength }
    }
    const batch: Batch = { type: 'batch', tasks, args: buffer, others }
    this.inFlight++
    this.startWriter().postMessage(batch, buffer ? [buffer.buffer as ArrayBuffer] : [])
  }

  /** The writer committed a batch: what was recorded meanwhile leaves now. */
  private committed(): void {
    if (this.inFlight > 0) this.inFlight--
    if (this.inFlight === 0 && !this.due && this.pendingAny()) this.send()
  }

  private startWriter(): Worker {
    if (this.writer) return this.writer
    // the writer opens the file itself: this thread lets go of it (and of its lock) first,
    // once it knows the rows the file has
    this.rows()
    this.db?.close()
    this.db = undefined
    const fromSource = import.meta.url.endsWith('.ts')
    const workerData = { path: this.path, ...this.fold }
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
    // a key recorded again replaces its row (a row not sent yet is simply not sent)
    const old = seqs.get(key)
    if (old !== undefined) this.drop(old)
    // kept as it is (its later changes are made in it) until it leaves
    const row: TaskRow = { seq: this.nextSeq++, put: t, update: null, dropArgs: false, queued: false }
    seqs.set(key, row)
    this.queue(row)
  }

  updateTask(key: string, u: JournalTaskUpdate): void {
    if (this.closed) return
    const row = this.rows().get(key)
    if (row === undefined) return
    const put = row.put
    if (put !== null) {
      // not sent yet: its insert carries the update
      put.state = u.state; put.wanters = u.wanters; put.holders = u.holders; put.nbytes = u.nbytes; put.error = u.error
      if (u.digest !== null) put.digest = u.digest
      return
    }
    // the last update wins; a null digest keeps the one an earlier update (or the row) has
    row.update = u.digest === null && row.update !== null && row.update.digest !== null ? { ...u, digest: row.update.digest } : u
    this.queue(row)
  }

  dropArgs(key: string): void {
    if (this.closed) return
    const row = this.rows().get(key)
    if (row === undefined) return
    if (row.put !== null) row.put.args = null
    else {
      row.dropArgs = true
      this.queue(row)
    }
  }

  removeTask(key: string): void {
    if (this.closed) return
    const seqs = this.rows()
    const row = seqs.get(key)
    if (row === undefined) return
    seqs.delete(key)
    this.drop(row)
  }

  /** The row goes: deleted if it was sent, else never sent (nothing pending about it is). */
  private drop(row: TaskRow): void {
    if (row.put === null) {
      this.removed.push(row.seq)
      this.soon()
    }
    row.put = null
    row.update = null
    row.dropArgs = false
  }

  putDataset(name: string, key: string): void { this.write(['putDataset', name, key]) }
  removeDataset(name: string): void { this.write(['removeDataset', name]) }

  /** Writes what was recorded so far, and returns once it is committed. */
  flush(): void {
    if (this.closed) return
    if (!this.pendingAny() && !this.writer) return
    this.send()
    this.waitFor('flush')
  }

  clear(): void {
    if (this.closed) return
    this.ops = []
    this.touched = []
    this.removed = []
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
