/**
 * What the coordinator must not forget across a crash, as it records and replays it.
 * The coordinator core only speaks this interface (it knows no database); the Node edge
 * implements it over SQLite (server/journal.ts). Secrets never reach a journal: clients
 * and workers are recorded with the SHA-256 of their resume secret.
 *
 * A journal records as the coordinator goes and commits on its own, once per turn of the
 * event loop; `load` returns what the last commit left.
 */
import type { WireError } from '../shared/errors.js'
import type { TaskSpec, WorkerKind } from './scheduler-types.js'

export interface JournalClient {
  id: string
  name: string
  /** SHA-256 (hex) of the resume secret its connection was last given */
  secretHash: string
  /** the namespace its tasks import modules from */
  ns: string
}

export interface JournalWorker {
  id: string
  name: string
  kind: WorkerKind
  slots: number
  /** who runs it (core/trust.ts volunteerOf) */
  volunteer: string
  /** SHA-256 (hex) of the resume secret its connection was last given */
  secretHash: string
}

/** A task some client still wants (or that a wanted task depends on), as the scheduler last had it. */
export interface JournalTask {
  /** the spec it was submitted with (`fn` is the function's content id; null for scattered data) */
  spec: TaskSpec
  /** the client that submitted it (its arguments and bytes count against that client) */
  owner: string
  /** encoded arguments; for scattered data, its bytes while the coordinator still holds them (null once stored on its workers) */
  args: Uint8Array | null
  /** what the scheduler last said about it: still to run (or running), done, or failed */
  state: 'pending' | 'memory' | 'erred'
  /** clients (and datasets) holding futures to it */
  wanters: string[]
  /** workers holding its result (state 'memory') */
  holders: string[]
  /** size of its result */
  nbytes: number
  /** SHA-256 (hex) of its encoded result as its worker reported it, or of the scattered bytes */
  digest: string | null
  /** why it failed (state 'erred') */
  error: WireError | null
}

/** The fields of a task that change after it is submitted. */
export type JournalTaskUpdate = Pick<JournalTask, 'state' | 'wanters' | 'holders' | 'nbytes' | 'digest' | 'error'>

/** Everything a journal holds, for a coordinator starting over. */
export interface JournalSnapshot {
  clients: JournalClient[]
  /** modules per client: [client id, name, source] */
  modules: [string, string, string][]
  workers: JournalWorker[]
  /** function sources by content id (SHA-256 of the source) */
  functions: Map<string, string>
  /** in the order they were submitted (a task's dependencies come before it) */
  tasks: JournalTask[]
  /** published datasets: [name, key] */
  datasets: [string, string][]
}

export interface Journal {
  /** What the journal holds (on a coordinator that starts over). */
  load(): JournalSnapshot
  putClient(c: JournalClient): void
  removeClient(id: string): void
  putModule(client: string, name: string, source: string): void
  putWorker(w: JournalWorker): void
  removeWorker(id: string): void
  putFunction(id: string, source: string): void
  removeFunction(id: string): void
  /**
   * a newly submitted task (or scattered value); a key recorded again replaces its record.
   * `t` is the journal's from then on (it may change its fields, never its spec, until it is
   * written): pass an object made for the call
   */
  putTask(t: JournalTask): void
  /** what changed about a recorded task (`digest` null keeps the one recorded) */
  updateTask(key: string, u: JournalTaskUpdate): void
  /** a scattered value's bytes left the coordinator (its workers stored them) */
  dropArgs(key: string): void
  removeTask(key: string): void
  putDataset(name: string, key: string): void
  removeDataset(name: string): void
  /** commits what was recorded so far now (it also commits by itself once per turn) */
  flush(): void
  /** forgets everything recorded (a coordinator that stopped gracefully ended every session) */
  clear(): void
  /** commits and closes; records after this are dropped */
  close(): void
}
