/**
 * The journal's SQLite file (server/journal.ts): opening it (exclusive lock, WAL,
 * `synchronous = NORMAL`, the schema and its version) and the prepared statements its
 * writes go through, one transaction per batch. Used by the coordinator's thread to read
 * it and by the writer thread (server/journal-writer.ts) to write it.
 */
import Database from 'better-sqlite3'
import type { JournalTask, JournalTaskUpdate } from '../core/journal.js'
import type { TaskSpec } from '../core/scheduler-types.js'
import type { WireError } from '../shared/errors.js'

/**
 * The journal's schema version (`PRAGMA user_version`): a file of an older version is
 * migrated when it is opened, one of a newer version (or of none, not empty) is refused,
 * not misread. Version 2 addresses a task's row by its `seq` alone (the coordinator's
 * thread keeps which seq each key has): version 1's index on `key` cost every write a
 * second b-tree, at a random place. Version 3 has the same tables; its log rows hold task
 * changes in columns (`TaskBatch`), where version 2's held one array per change: a version
 * 2 file is read as it is (its log rows are read in their own format) and marked 3, so that
 * an older tabgrid refuses it rather than misread the rows logged since.
 */
const SCHEMA_VERSION = 3

const TASKS = (name: string): string => `CREATE TABLE IF NOT EXISTS ${name} (
  seq INTEGER PRIMARY KEY,
  key TEXT NOT NULL,
  owner TEXT NOT NULL,
  fn TEXT,
  spec TEXT NOT NULL,
  args BLOB,
  state TEXT NOT NULL,
  wanters TEXT NOT NULL,
  holders TEXT NOT NULL,
  nbytes INTEGER NOT NULL,
  digest TEXT,
  error TEXT
);`

const SCHEMA = `
CREATE TABLE IF NOT EXISTS clients (id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_hash TEXT NOT NULL, ns TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS modules (client TEXT NOT NULL, name TEXT NOT NULL, source TEXT NOT NULL, PRIMARY KEY (client, name));
CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, slots INTEGER NOT NULL, volunteer TEXT NOT NULL, secret_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS functions (id TEXT PRIMARY KEY, source TEXT NOT NULL);
${TASKS('tasks')}
CREATE TABLE IF NOT EXISTS datasets (name TEXT PRIMARY KEY, key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, tasks TEXT NOT NULL, args BLOB);
`

/** Version 1 → 2: the same rows, without the unique index on `key` (a key has one row: the coordinator's thread saw to it). */
const MIGRATE_1 = `
${TASKS('tasks_v2')}
INSERT INTO tasks_v2 (seq, key, owner, fn, spec, args, state, wanters, holders, nbytes, digest, error)
  SELECT seq, key, owner, fn, spec, args, state, wanters, holders, nbytes, digest, error FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_v2 RENAME TO tasks;
`

/** One change: the name of a write and its arguments (plain data: batches cross to the writer thread). */
export type Op = [string, ...unknown[]]

/** Opens (or creates) the journal at `path`, held by this connection alone; throws a clear error if it can't. */
export function openDatabase(path: string): Database.Database {
  let db: Database.Database
  try {
    // no waiting on a lock: the only other holder would be another coordinator
    db = new Database(path, { timeout: 0 })
  } catch (err) {
    throw new Error(`cannot open the journal ${path}: ${(err as Error).message}`, { cause: err })
  }
  try {
    // exclusive: one coordinator per journal (the lock is taken by the first write below)
    db.pragma('locking_mode = EXCLUSIVE')
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = NORMAL')
    // a turn's batch can touch thousands of rows (a big map): 16 MB of pages rather than the
    // default 2 MB keeps a batch from spilling its pages before it commits (~7% of the writer's time on 10,000-row batches)
    db.pragma('cache_size = -16000')
    const version = db.pragma('user_version', { simple: true }) as number
    const empty = (db.prepare(`SELECT count(*) AS n FROM sqlite_master`).get() as { n: number }).n === 0
    if (!empty && version !== SCHEMA_VERSION && version !== 1 && version !== 2) throw new Error(`it has schema version ${version}, this tabgrid reads versions 1 to ${SCHEMA_VERSION} (start with another --journal file, or --no-journal)`)
    db.transaction(() => {
      if (!empty && version === 1) db.exec(MIGRATE_1)
      db.exec(SCHEMA)
      db.pragma(`user_version = ${SCHEMA_VERSION}`)
    })()
    // batches logged and not folded into the tables before the last stop
    prepareWrites(db).replay()
  } catch (err) {
    db.close()
    const busy = (err as { code?: string }).code === 'SQLITE_BUSY'
    throw new Error(busy ? `the journal ${path} is in use by another coordinator (give this one another --journal file, or --no-journal)` : `cannot use the journal ${path}: ${(err as Error).message}`, { cause: err })
  }
  return db
}

const json = (v: unknown): string | null => v === null || v === undefined ? null : JSON.stringify(v)
/** an id JSON writes as it is, between quotes */
const PLAIN = /^[\w.:@-]*$/
/** wanters and holders: most lists are empty or name one peer (a client or worker id) */
const ids = (v: unknown): string => {
  const a = v as string[]
  if (a.length === 0) return '[]'
  if (a.length === 1 && PLAIN.test(a[0]!)) return `["${a[0]!}"]`
  return JSON.stringify(a)
}
/** a spec's columns (`key` and `fn` have their own; the spec was parsed for this batch: it is ours to change) */
const specText = (spec: Record<string, unknown>): string => {
  spec.key = undefined
  spec.fn = undefined
  return JSON.stringify(spec)
}

/**
 * Every field of a TaskSpec, and where a batch carries it (`TaskBatch`): a field added to
 * TaskSpec fails to compile here until the batch carries it too.
 */
const SPEC_FIELDS = {
  key: 'p.key', fn: 'shape', deps: 'p.deps', group: 'shape', priority: 'shape', retries: 'shape', redundancy: 'shape',
  workers: 'shape', nbytes: 'p.nbytes', timeout: 'shape', spotCheck: 'shape',
} as const satisfies Record<keyof TaskSpec, string>
void SPEC_FIELDS

/**
 * What inserts of one batch share, written once: [fn, owner, group, priority, retries,
 * redundancy, workers, timeout (null: none), spotCheck (null: not given)]. The tasks of one
 * map call are one shape.
 */
export type Shape = [string | null, string, string, number, number, number, string[], number | null, boolean | null]

/** What inserts and updates both carry, a column each: state (0 pending, 1 memory, 2 erred), wanters, holders, nbytes, digest. */
interface StateColumns {
  /** seqs of the rows */
  seq: number[]
  st: number[]
  /** lists: 0 (empty), k > 0 (the one id `TaskBatch.i[k - 1]`) or k < 0 (the list `TaskBatch.l[-k - 1]`) */
  w: number[]
  h: number[]
  n: number[]
  /** null: none (for an update: keep the row's) */
  g: (string | null)[]
  /** the errors there are: [index in these columns, error] */
  e: [number, WireError][]
}

/**
 * A batch's task changes as they cross to the writer thread and are logged (as JSON, one
 * row of the `log` table), in columns rather than an object or array per task: V8 writes a
 * column of numbers or strings several times faster than as many small arrays, and what
 * the tasks of a batch share (their function, owner, options) is written once, as a shape.
 */
export interface TaskBatch {
  /** seqs of the rows to delete */
  r: number[]
  s: Shape[]
  /** the ids the lists name, and the lists of more than one */
  i: string[]
  l: string[][]
  /** inserts: key, shape, the spec's nbytes, the byte length of its arguments in the batch's buffer (-1: none), deps of those that have some ([index, deps]) */
  p: StateColumns & { key: string[]; shape: number[]; nbytes: number[]; args: number[]; deps: [number, string[]][] }
  u: StateColumns
  /** seqs of rows whose arguments go (scattered bytes stored on their workers) */
  d: number[]
}

const STATES = ['pending', 'memory', 'erred'] as const
const stateCode = (s: JournalTask['state']): number => s === 'pending' ? 0 : s === 'memory' ? 1 : 2
const columns = (): StateColumns => ({ seq: [], st: [], w: [], h: [], n: [], g: [], e: [] })

/**
 * Puts one batch's task changes into columns (server/journal.ts, on the coordinator's
 * thread): `put`, `update`, `dropArgs` and `remove` in any order, then `take`.
 */
export class TaskBatchEncoder {
  private b: TaskBatch = TaskBatchEncoder.empty()
  private idx = new Map<string, number>()

  private static empty(): TaskBatch {
    return { r: [], s: [], i: [], l: [], p: { ...columns(), key: [], shape: [], nbytes: [], args: [], deps: [] }, u: columns(), d: [] }
  }

  /** An insert; its arguments (`argBytes` of them, -1: none) go in the batch's buffer in the order of the inserts. */
  put(seq: number, t: JournalTask, argBytes: number): void {
    const p = this.b.p
    const spec = t.spec
    if (spec.deps.length > 0) p.deps.push([p.seq.length, spec.deps])
    p.key.push(spec.key)
    p.shape.push(this.shape(spec, t.owner))
    p.nbytes.push(spec.nbytes)
    p.args.push(argBytes)
    this.state(p, seq, t)
  }

  update(seq: number, u: JournalTaskUpdate): void { this.state(this.b.u, seq, u) }
  dropArgs(seq: number): void { this.b.d.push(seq) }
  remove(seq: number): void { this.b.r.push(seq) }

  /** The batch's JSON (null: nothing in it); the encoder starts over. */
  take(): string | null {
    const b = this.b
    const any = b.p.seq.length + b.u.seq.length + b.r.length + b.d.length > 0
    this.b = TaskBatchEncoder.empty()
    this.idx = new Map()
    return any ? JSON.stringify(b) : null
  }

  private state(c: StateColumns, seq: number, u: JournalTaskUpdate): void {
    if (u.error !== null) c.e.push([c.seq.length, u.error])
    c.seq.push(seq)
    c.st.push(stateCode(u.state))
    c.w.push(this.list(u.wanters))
    c.h.push(this.list(u.holders))
    c.n.push(u.nbytes)
    c.g.push(u.digest)
  }

  private list(a: string[]): number {
    if (a.length === 0) return 0
    if (a.length > 1) return -this.b.l.push(a)
    const id = a[0]!
    let k = this.idx.get(id)
    if (k === undefined) {
      k = this.b.i.push(id)
      this.idx.set(id, k)
    }
    return k
  }

  /** The shape of the spec: the last one's if it is the same (the tasks of a map come together), else a new one. */
  private shape(spec: TaskSpec, owner: string): number {
    const shapes = this.b.s
    const n = shapes.length
    const timeout = spec.timeout ?? null
    const spotCheck = spec.spotCheck ?? null
    if (n > 0) {
      const s = shapes[n - 1]!
      if (s[0] === spec.fn && s[1] === owner && s[2] === spec.group && s[3] === spec.priority && s[4] === spec.retries &&
        s[5] === spec.redundancy && sameList(s[6], spec.workers) && s[7] === timeout && s[8] === spotCheck) return n - 1
    }
    shapes.push([spec.fn, owner, spec.group, spec.priority, spec.retries, spec.redundancy, spec.workers, timeout, spotCheck])
    return n
  }
}

const sameList = (a: string[], b: string[]): boolean => {
  if (a === b) return true
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * A task's row as the tasks table takes it, in the order of its insert's parameters:
 * [seq, key, owner, fn, spec (JSON without key and fn), args, state, wanters (JSON), holders (JSON), nbytes, digest, error (JSON)].
 */
export type PutRow = [number, string, string, string | null, string, Uint8Array | null, string, string, string, number, string | null, string | null]
/** An update of a row in the order of its statement's parameters: [state, wanters, holders, nbytes, digest (null: keep the row's), error, seq]. */
export type UpdateRow = [string, string, string, number, string | null, string | null, number]

/** Task changes to write into the tasks table: rows to delete by seq, inserts, updates, arguments to drop. */
export interface Writes {
  removed: number[]
  puts: PutRow[]
  updates: UpdateRow[]
  drops: number[]
}

/** The update `u` goes into the insert `p` (a null digest keeps the insert's). */
const intoPut = (p: PutRow, u: UpdateRow): void => {
  p[6] = u[0]; p[7] = u[1]; p[8] = u[2]; p[9] = u[3]; p[11] = u[5]
  if (u[4] !== null) p[10] = u[4]
}

/**
 * Reads one logged batch of task changes into rows: a `TaskBatch` (version 3), or version
 * 2's `[removed seqs, ops]` (a file of version 2 may have logged some before it stopped).
 */
export function decodeTasks(tasks: string, args: Uint8Array | null): Writes {
  const parsed = JSON.parse(tasks) as TaskBatch | [number[], Op[]]
  return Array.isArray(parsed) ? decodeV2(parsed[0], parsed[1], args) : decodeV3(parsed, args)
}

function decodeV3(b: TaskBatch, args: Uint8Array | null): Writes {
  const one = b.i.map(id => ids([id]))
  const list = (k: number): string => k === 0 ? '[]' : k > 0 ? one[k - 1]! : ids(b.l[-k - 1])
  // a shape's spec fields other than deps and nbytes, as the end of a JSON object
  const tails = b.s.map(s => {
    const rest: Record<string, unknown> = { group: s[2], priority: s[3], retries: s[4], redundancy: s[5], workers: s[6] }
    if (s[7] !== null) rest.timeout = s[7]
    if (s[8] !== null) rest.spotCheck = s[8]
    return ',' + JSON.stringify(rest).slice(1)
  })
  const texts = b.s.map(() => new Map<number, string>())
  const p = b.p
  const errors = new Map(p.e)
  const deps = new Map(p.deps)
  const puts: PutRow[] = []
  let at = 0
  for (let i = 0; i < p.seq.length; i++) {
    const s = b.s[p.shape[i]!]!
    const d = deps.size === 0 ? undefined : deps.get(i)
    const len = p.args[i]!
    let a: Uint8Array | null = null
    if (len >= 0) {
      a = args === null ? Buffer.alloc(0) : Buffer.from(args.buffer, args.byteOffset + at, len)
      at += len
    }
    const k = p.shape[i]!
    const nbytes = p.nbytes[i]!
    let spec: string | undefined
    if (d !== undefined) spec = `{"deps":${JSON.stringify(d)},"nbytes":${nbytes}${tails[k]!}`
    else {
      // the tasks of a map mostly have the same spec but for their key: one text for them all
      const known = texts[k]!
      spec = known.get(nbytes)
      if (spec === undefined) known.set(nbytes, spec = `{"deps":[],"nbytes":${nbytes}${tails[k]!}`)
    }
    puts.push([p.seq[i]!, p.key[i]!, s[1], s[0], spec, a, STATES[p.st[i]!]!, list(p.w[i]!), list(p.h[i]!), p.n[i]!, p.g[i]!, errors.size === 0 ? null : json(errors.get(i))])
  }
  const u = b.u
  const uerrors = new Map(u.e)
  const updates: UpdateRow[] = []
  for (let i = 0; i < u.seq.length; i++) {
    updates.push([STATES[u.st[i]!]!, list(u.w[i]!), list(u.h[i]!), u.n[i]!, u.g[i]!, uerrors.size === 0 ? null : json(uerrors.get(i)), u.seq[i]!])
  }
  return { removed: b.r, puts, updates, drops: b.d }
}

function decodeV2(removed: number[], ops: Op[], args: Uint8Array | null): Writes {
  const w: Writes = { removed, puts: [], updates: [], drops: [] }
  let at = 0
  for (const op of ops) {
    switch (op[0]) {
      // [seq, spec (with its key and fn), owner, args (bytes, or their length in `args`), state, wanters, holders, nbytes, digest, error]
      case 'putTask': {
        const spec = op[2] as Record<string, unknown>
        const key = String(spec.key)
        const fn = spec.fn === null || spec.fn === undefined ? null : String(spec.fn)
        let a: Uint8Array | null = null
        const n = op[4]
        if (n instanceof Uint8Array) a = n
        else if (typeof n === 'number') {
          a = args === null ? Buffer.alloc(0) : Buffer.from(args.buffer, args.byteOffset + at, n)
          at += n
        }
        w.puts.push([op[1] as number, key, op[3] as string, fn, specText(spec), a, op[5] as string, ids(op[6]), ids(op[7]), op[8] as number, op[9] as string | null, json(op[10])])
        break
      }
      // [seq, state, wanters, holders, nbytes, digest, error]
      case 'updateTask': w.updates.push([op[2] as string, ids(op[3]), ids(op[4]), op[5] as number, op[6] as string | null, json(op[7]), op[1] as number]); break
      case 'dropArgs': w.drops.push(op[1] as number); break
      default: throw new Error(`unknown journal task write ${String(op[0])}`)
    }
  }
  return w
}

/** What the writer thread does with the file. */
export interface JournalWrites {
  /** writes task changes into the tasks table, in one transaction */
  apply(batch: Writes): void
  /**
   * Commits a batch of task changes to the log (their JSON as it came, and their
   * arguments) and applies the other changes to their tables, in one transaction;
   * returns the log's seq of it.
   */
  log(tasks: string | null, args: Uint8Array | null, others: Op[]): number
  /** writes what the logged batches up to `upTo` changed (merged) into the tables and drops them from the log, in one transaction */
  fold(merged: Writes, upTo: number): void
  /** folds whatever the log holds (a writer stopped before it folded), merged */
  replay(): void
  clear(): void
}

/** The journal's writes as prepared statements. */
export function prepareWrites(db: Database.Database): JournalWrites {
  const p = (sql: string): Database.Statement => db.prepare(sql)
  const putClient = p('INSERT OR REPLACE INTO clients (id, name, secret_hash, ns) VALUES (?, ?, ?, ?)')
  const removeClient = p('DELETE FROM clients WHERE id = ?')
  const removeModules = p('DELETE FROM modules WHERE client = ?')
  const putModule = p('INSERT OR REPLACE INTO modules (client, name, source) VALUES (?, ?, ?)')
  const putWorker = p('INSERT OR REPLACE INTO workers (id, name, kind, slots, volunteer, secret_hash) VALUES (?, ?, ?, ?, ?, ?)')
  const removeWorker = p('DELETE FROM workers WHERE id = ?')
  const putFunction = p('INSERT OR IGNORE INTO functions (id, source) VALUES (?, ?)')
  const removeFunction = p('DELETE FROM functions WHERE id = ?')
  // a task's row is its seq (server/journal.ts keeps the seq of each key)
  const putTask = p('INSERT OR REPLACE INTO tasks (seq, key, owner, fn, spec, args, state, wanters, holders, nbytes, digest, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)')
  const updateTask = p('UPDATE tasks SET state = ?, wanters = ?, holders = ?, nbytes = ?, digest = coalesce(?, digest), error = ? WHERE seq = ?')
  const dropArgs = p('UPDATE tasks SET args = NULL WHERE seq = ?')
  const removeTask = p('DELETE FROM tasks WHERE seq = ?')
  // tasks forgotten together were mostly submitted together: their seqs are runs
  const removeTasks = p('DELETE FROM tasks WHERE seq BETWEEN ? AND ?')
  const putDataset = p('INSERT OR REPLACE INTO datasets (name, key) VALUES (?, ?)')
  const removeDataset = p('DELETE FROM datasets WHERE name = ?')
  const one = (op: Op): void => {
    const a = op
    switch (a[0]) {
      case 'putClient': putClient.run(a[1], a[2], a[3], a[4]); return
      case 'removeClient': removeClient.run(a[1]); removeModules.run(a[1]); return
      case 'putModule': putModule.run(a[1], a[2], a[3]); return
      case 'putWorker': putWorker.run(a[1], a[2], a[3], a[4], a[5], a[6]); return
      case 'removeWorker': removeWorker.run(a[1]); return
      case 'putFunction': putFunction.run(a[1], a[2]); return
      case 'removeFunction': removeFunction.run(a[1]); return
      case 'putDataset': putDataset.run(a[1], a[2]); return
      case 'removeDataset': removeDataset.run(a[1]); return
      default: throw new Error(`unknown journal write ${String(a[0])}`)
    }
  }
  // a write that fails (it should not) loses itself, not the rest of its batch
  let failed: Error | undefined
  const apply = db.transaction((batch: Writes) => {
    const r = batch.removed
    r.sort((x, y) => x - y)
    for (let i = 0; i < r.length;) {
      let j = i
      while (j + 1 < r.length && r[j + 1] === r[j]! + 1) j++
      try {
        if (j === i) removeTask.run(r[i])
        else removeTasks.run(r[i], r[j])
      } catch (err) { failed ??= err as Error }
      i = j + 1
    }
    for (const row of batch.puts) try { putTask.run(row) } catch (err) { failed ??= err as Error }
    for (const row of batch.updates) try { updateTask.run(row) } catch (err) { failed ??= err as Error }
    for (const seq of batch.drops) try { dropArgs.run(seq) } catch (err) { failed ??= err as Error }
  })
  const clear = db.transaction(() => {
    for (const t of ['clients', 'modules', 'workers', 'functions', 'tasks', 'datasets', 'log']) db.exec(`DELETE FROM ${t}`)
  })
  const logBatch = p('INSERT INTO log (tasks, args) VALUES (?, ?)')
  const dropLog = p('DELETE FROM log WHERE seq <= ?')
  const log = db.transaction((tasks: string | null, bytes: Uint8Array | null, others: Op[]): number => {
    for (const op of others) try { one(op) } catch (err) { failed ??= err as Error }
    if (tasks === null) return 0
    return Number(logBatch.run(tasks, bytes === null ? null : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).lastInsertRowid)
  })
  const fold = db.transaction((merged: Writes, upTo: number) => {
    apply(merged)
    dropLog.run(upTo)
  })
  const replay = db.transaction((rows: { seq: number; tasks: string; args: Buffer | null }[]) => {
    const merged = new LoggedTasks()
    for (const r of rows) merged.add(r.tasks, r.args, r.seq, 0)
    apply(merged.take())
    dropLog.run(rows[rows.length - 1]!.seq)
  })
  const checked = <T>(f: () => T): T => {
    failed = undefined
    const r = f()
    if (failed) throw failed
    return r
  }
  return {
    apply: batch => checked(() => apply(batch)),
    log: (tasks, bytes, others) => checked(() => log(tasks, bytes, others)),
    fold: (merged, upTo) => checked(() => fold(merged, upTo)),
    replay: () => {
      const rows = db.prepare('SELECT seq, tasks, args FROM log ORDER BY seq').all() as { seq: number; tasks: string; args: Buffer | null }[]
      if (rows.length > 0) checked(() => replay(rows))
    },
    clear: () => clear(),
  }
}

/**
 * Task changes logged and not yet written into the tasks table, merged per row as they
 * come (the writer thread's side of server/journal.ts's merging, over a longer window): a
 * task inserted and removed in that window is never written, its updates go into its
 * insert, several updates of a row are one.
 */
export class LoggedTasks {
  private readonly rows = new Map<number, { put: PutRow | null; update: UpdateRow | null; drop: boolean; remove: boolean }>()
  /** the log's seq of the last batch merged */
  last = 0
  /** when the oldest batch not folded was merged (ms, performance.now) */
  since = 0

  get size(): number { return this.rows.size }

  /** Merges a logged batch (its JSON, its arguments). */
  add(tasks: string, args: Uint8Array | null, seq: number, now: number): void {
    if (this.rows.size === 0) this.since = now
    this.last = seq
    const w = decodeTasks(tasks, args)
    for (const s of w.removed) {
      const e = this.rows.get(s)
      if (e?.put) this.rows.delete(s)
      else this.rows.set(s, { put: null, update: null, drop: false, remove: true })
    }
    for (const p of w.puts) this.rows.set(p[0], { put: p, update: null, drop: false, remove: false })
    for (const u of w.updates) {
      const s = u[6]
      const e = this.rows.get(s)
      if (e?.put) intoPut(e.put, u)
      else if (e?.update) {
        if (u[4] === null) u[4] = e.update[4]
        e.update = u
      } else if (e) e.update = u
      else this.rows.set(s, { put: null, update: u, drop: false, remove: false })
    }
    for (const s of w.drops) {
      const e = this.rows.get(s)
      if (e?.put) e.put[5] = null
      else if (e) e.drop = true
      else this.rows.set(s, { put: null, update: null, drop: true, remove: false })
    }
  }

  /** What the batches merged so far write into the tables; forgets them (`last` back to 0). */
  take(): Writes {
    const w: Writes = { removed: [], puts: [], updates: [], drops: [] }
    for (const [s, e] of this.rows) {
      if (e.remove) w.removed.push(s)
      if (e.put) w.puts.push(e.put)
      if (e.update) w.updates.push(e.update)
      if (e.drop) w.drops.push(s)
    }
    this.rows.clear()
    this.last = 0
    return w
  }
}
