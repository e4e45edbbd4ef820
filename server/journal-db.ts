/**
 * The journal's SQLite file (server/journal.ts): opening it (exclusive lock, WAL,
 * `synchronous = NORMAL`, the schema and its version) and the prepared statements its
 * writes go through, one transaction per batch. Used by the coordinator's thread to read
 * it and by the writer thread (server/journal-writer.ts) to write it.
 */
import Database from 'better-sqlite3'

/**
 * The journal's schema version (`PRAGMA user_version`): a file of an older version is
 * migrated when it is opened, one of a newer version (or of none, not empty) is refused,
 * not misread. Version 2 addresses a task's row by its `seq` alone (the coordinator's
 * thread keeps which seq each key has): version 1's index on `key` cost every write a
 * second b-tree, at a random place.
 */
const SCHEMA_VERSION = 2

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
    if (!empty && version !== SCHEMA_VERSION && version !== 1) throw new Error(`it has schema version ${version}, this tabgrid reads versions 1 and ${SCHEMA_VERSION} (start with another --journal file, or --no-journal)`)
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
 * One batch of writes (server/journal.ts): task rows to delete by seq, then the ops in
 * order; an inserted task's arguments are its bytes, or their byte length read in turn
 * from `args`.
 */
export interface Writes {
  removed: number[]
  ops: Op[]
  args: Uint8Array | null
}

/** What the writer thread does with the file. */
export interface JournalWrites {
  /** writes a batch into the tables, in one transaction */
  apply(batch: Writes): void
  /**
   * Commits a batch of task changes to the log (their JSON as it came, and their
   * arguments) and applies the other changes to their tables, in one transaction;
   * returns the log's seq of it.
   */
  log(tasks: string | null, args: Uint8Array | null, others: Op[]): number
  /** writes what the logged batches up to `upTo` changed (merged) into the tables and drops them from the log, in one transaction */
  fold(merged: Writes, upTo: number): void
  /** folds whatever the log holds (a writer stopped before it folded), batch by batch */
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
  let args: Uint8Array | null = null
  let at = 0
  const argsOf = (n: unknown): Uint8Array | null => {
    if (n instanceof Uint8Array) return n
    if (typeof n !== 'number' || args === null) return null
    const b = Buffer.from(args.buffer, args.byteOffset + at, n)
    at += n
    return b
  }
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
      // [seq, spec (with its key and fn), owner, args, state, wanters, holders, nbytes, digest, error]
      case 'putTask': {
        const spec = a[2] as Record<string, unknown>
        const key = spec.key
        const fn = spec.fn
        putTask.run(a[1], key, a[3], fn, specText(spec), argsOf(a[4]), a[5], ids(a[6]), ids(a[7]), a[8], a[9], json(a[10]))
        return
      }
      // [seq, state, wanters, holders, nbytes, digest, error]
      case 'updateTask': updateTask.run(a[2], ids(a[3]), ids(a[4]), a[5], a[6], json(a[7]), a[1]); return
      case 'dropArgs': dropArgs.run(a[1]); return
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
    args = batch.args
    at = 0
    for (const op of batch.ops) try { one(op) } catch (err) { failed ??= err as Error }
    args = null
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
    for (const r of rows) {
      const [removed, ops] = JSON.parse(r.tasks) as [number[], Op[]]
      apply({ removed, ops, args: r.args })
    }
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
  private readonly rows = new Map<number, { put: Op | null; update: Op | null; drop: boolean; remove: boolean }>()
  /** the log's seq of the last batch merged */
  last = 0
  /** when the oldest batch not folded was merged (ms, performance.now) */
  since = 0

  get size(): number { return this.rows.size }

  /** Merges a logged batch (its JSON `[removed, ops]`, its arguments). */
  add(tasks: string, args: Uint8Array | null, seq: number, now: number): void {
    if (this.rows.size === 0) this.since = now
    this.last = seq
    const [removed, ops] = JSON.parse(tasks) as [number[], Op[]]
    for (const s of removed) {
      const e = this.rows.get(s)
      if (e?.put) this.rows.delete(s)
      else this.rows.set(s, { put: null, update: null, drop: false, remove: true })
    }
    let at = 0
    for (const op of ops) {
      const s = op[1] as number
      switch (op[0]) {
        case 'putTask': {
          const n = op[4]
          if (typeof n === 'number' && args !== null) { op[4] = args.subarray(at, at + n); at += n }
          this.rows.set(s, { put: op, update: null, drop: false, remove: false })
          break
        }
        case 'updateTask': {
          const e = this.rows.get(s)
          // [seq, state, wanters, holders, nbytes, digest, error] into a put's [seq, spec, owner, args, state, wanters, holders, nbytes, digest, error]
          if (e?.put) {
            const p = e.put
            p[5] = op[2]; p[6] = op[3]; p[7] = op[4]; p[8] = op[5]; p[10] = op[7]
            if (op[6] !== null) p[9] = op[6]
          } else if (e?.update) {
            if (op[6] === null) op[6] = e.update[6]
            e.update = op
          } else if (e) e.update = op
          else this.rows.set(s, { put: null, update: op, drop: false, remove: false })
          break
        }
        case 'dropArgs': {
          const e = this.rows.get(s)
          if (e?.put) e.put[4] = null
          else if (e) e.drop = true
          else this.rows.set(s, { put: null, update: null, drop: true, remove: false })
          break
        }
        default: throw new Error(`unknown journal task write ${String(op[0])}`)
      }
    }
  }

  /** What the batches merged so far write into the tables; forgets them. */
  take(): Writes {
    const removed: number[] = []
    const ops: Op[] = []
    for (const [s, e] of this.rows) {
      if (e.remove) removed.push(s)
      if (e.put) ops.push(e.put)
      if (e.update) ops.push(e.update)
      if (e.drop) ops.push(['dropArgs', s])
    }
    this.rows.clear()
    return { removed, ops, args: null }
  }
}
