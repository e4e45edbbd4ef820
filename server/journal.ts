/**
 * The coordinator's journal in SQLite (better-sqlite3): what it must not forget across a
 * crash (core/journal.ts). WAL mode with `synchronous = NORMAL`: a commit is an append
 * to the log, and a crash of the process (SIGKILL) loses nothing committed; a power cut
 * may lose the last commits, never the file. Writes go through prepared statements inside
 * one transaction per turn of the event loop, committed by `setImmediate`, so a frame of
 * a thousand results costs one commit.
 *
 * The file is held in exclusive locking mode: a second coordinator on the same journal
 * fails at start with a clear error instead of interleaving its writes.
 */
import Database from 'better-sqlite3'
import type { Journal, JournalClient, JournalSnapshot, JournalTask, JournalTaskUpdate, JournalWorker } from '../core/journal.js'
import type { TaskSpec, WorkerKind } from '../core/scheduler-types.js'
import type { WireError } from '../shared/errors.js'

/** The journal's schema version (`PRAGMA user_version`): a file of another version is refused, not misread. */
const SCHEMA_VERSION = 1

const SCHEMA = `
CREATE TABLE IF NOT EXISTS clients (id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_hash TEXT NOT NULL, ns TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS modules (client TEXT NOT NULL, name TEXT NOT NULL, source TEXT NOT NULL, PRIMARY KEY (client, name));
CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, slots INTEGER NOT NULL, volunteer TEXT NOT NULL, secret_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS functions (id TEXT PRIMARY KEY, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
  seq INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
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
);
CREATE TABLE IF NOT EXISTS datasets (name TEXT PRIMARY KEY, key TEXT NOT NULL);
`

export interface SqliteJournalOptions {
  /** where a failed write is reported (the coordinator goes on without it) */
  log?: (line: string, level?: 'info' | 'warn' | 'error') => void
}

type Row = Record<string, unknown>

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
  private readonly db: Database.Database
  private readonly log: (line: string, level?: 'info' | 'warn' | 'error') => void
  private inTx = false
  private closed = false
  private failures = 0
  private readonly st: Record<string, Database.Statement>
  private readonly commitSoon = (): void => this.commit()

  constructor(readonly path: string, options: SqliteJournalOptions = {}) {
    this.log = options.log ?? (() => {})
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
      const version = db.pragma('user_version', { simple: true }) as number
      const empty = (db.prepare(`SELECT count(*) AS n FROM sqlite_master`).get() as { n: number }).n === 0
      if (!empty && version !== SCHEMA_VERSION) throw new Error(`it has schema version ${version}, this tabgrid writes version ${SCHEMA_VERSION} (start with another --journal file, or --no-journal)`)
      db.exec(SCHEMA)
      db.pragma(`user_version = ${SCHEMA_VERSION}`)
    } catch (err) {
      db.close()
      const busy = (err as { code?: string }).code === 'SQLITE_BUSY'
      throw new Error(busy ? `the journal ${path} is in use by another coordinator (give this one another --journal file, or --no-journal)` : `cannot use the journal ${path}: ${(err as Error).message}`, { cause: err })
    }
    this.db = db
    const p = (sql: string): Database.Statement => db.prepare(sql)
    this.st = {
      begin: p('BEGIN'),
      commit: p('COMMIT'),
      putClient: p('INSERT OR REPLACE INTO clients (id, name, secret_hash, ns) VALUES (?, ?, ?, ?)'),
      removeClient: p('DELETE FROM clients WHERE id = ?'),
      removeModules: p('DELETE FROM modules WHERE client = ?'),
      putModule: p('INSERT OR REPLACE INTO modules (client, name, source) VALUES (?, ?, ?)'),
      putWorker: p('INSERT OR REPLACE INTO workers (id, name, kind, slots, volunteer, secret_hash) VALUES (?, ?, ?, ?, ?, ?)'),
      removeWorker: p('DELETE FROM workers WHERE id = ?'),
      putFunction: p('INSERT OR IGNORE INTO functions (id, source) VALUES (?, ?)'),
      removeFunction: p('DELETE FROM functions WHERE id = ?'),
      putTask: p('INSERT OR IGNORE INTO tasks (key, owner, fn, spec, args, state, wanters, holders, nbytes, digest, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'),
      updateTask: p('UPDATE tasks SET state = ?, wanters = ?, holders = ?, nbytes = ?, digest = coalesce(?, digest), error = ? WHERE key = ?'),
      dropArgs: p('UPDATE tasks SET args = NULL WHERE key = ?'),
      removeTask: p('DELETE FROM tasks WHERE key = ?'),
      putDataset: p('INSERT OR REPLACE INTO datasets (name, key) VALUES (?, ?)'),
      removeDataset: p('DELETE FROM datasets WHERE name = ?'),
    }
  }

  load(): JournalSnapshot {
    this.flush()
    const all = (sql: string): Row[] => this.db.prepare(sql).all() as Row[]
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
    for (const r of this.db.prepare('SELECT key, owner, fn, spec, args, state, wanters, holders, nbytes, digest, error FROM tasks ORDER BY seq').iterate() as IterableIterator<Row>) {
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

  /** Runs one write inside this turn's transaction; a failure is logged, never thrown at the coordinator. */
  private write(name: string, ...args: unknown[]): void {
    if (this.closed) return
    try {
      if (!this.inTx) {
        this.st.begin!.run()
        this.inTx = true
        setImmediate(this.commitSoon)
      }
      this.st[name]!.run(...args)
    } catch (err) {
      // a full disk or a broken file: the grid goes on, but a restart would not have this
      if (this.failures++ < 5) this.log(`journal write (${name}) failed: ${(err as Error).message}; a restart may lose this change`, 'error')
    }
  }

  private commit(): void {
    if (!this.inTx) return
    this.inTx = false
    try { this.st.commit!.run() } catch (err) {
      if (this.failures++ < 5) this.log(`journal commit failed: ${(err as Error).message}; a restart may lose this turn's changes`, 'error')
      try { if (this.db.inTransaction) this.db.exec('ROLLBACK') } catch { /* nothing more to do */ }
    }
  }

  putClient(c: JournalClient): void { this.write('putClient', c.id, c.name, c.secretHash, c.ns) }
  removeClient(id: string): void {
    this.write('removeClient', id)
    this.write('removeModules', id)
  }
  putModule(client: string, name: string, source: string): void { this.write('putModule', client, name, source) }
  putWorker(w: JournalWorker): void { this.write('putWorker', w.id, w.name, w.kind, w.slots, w.volunteer, w.secretHash) }
  removeWorker(id: string): void { this.write('removeWorker', id) }
  putFunction(id: string, source: string): void { this.write('putFunction', id, source) }
  removeFunction(id: string): void { this.write('removeFunction', id) }

  putTask(t: JournalTask): void {
    const { key, fn, ...spec } = t.spec
    this.write('putTask', key, t.owner, fn, JSON.stringify(spec), t.args, t.state, JSON.stringify(t.wanters), JSON.stringify(t.holders), t.nbytes, t.digest, t.error === null ? null : JSON.stringify(t.error))
  }

  updateTask(key: string, u: JournalTaskUpdate): void {
    this.write('updateTask', u.state, JSON.stringify(u.wanters), JSON.stringify(u.holders), u.nbytes, u.digest, u.error === null ? null : JSON.stringify(u.error), key)
  }

  dropArgs(key: string): void { this.write('dropArgs', key) }
  removeTask(key: string): void { this.write('removeTask', key) }
  putDataset(name: string, key: string): void { this.write('putDataset', name, key) }
  removeDataset(name: string): void { this.write('removeDataset', name) }

  flush(): void { this.commit() }

  clear(): void {
    if (this.closed) return
    this.commit()
    try {
      this.db.exec('BEGIN; DELETE FROM clients; DELETE FROM modules; DELETE FROM workers; DELETE FROM functions; DELETE FROM tasks; DELETE FROM datasets; COMMIT')
    } catch (err) {
      this.log(`journal could not be cleared: ${(err as Error).message}`, 'error')
      try { if (this.db.inTransaction) this.db.exec('ROLLBACK') } catch { /* nothing more to do */ }
    }
  }

  close(): void {
    if (this.closed) return
    this.commit()
    this.closed = true
    this.db.close()
  }
}
