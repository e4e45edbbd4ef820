/**
 * The scheduler's vocabulary: the events it is fed and the commands it returns.
 * The scheduler is pure: `handle(event) → Command[]`, no sockets, no timers, no clock
 * (time arrives in events as `now`, in milliseconds). The coordinator turns socket
 * messages into events and commands into emits.
 */
import type { WireError } from '../shared/errors.js'

/** Dask's task states. */
export type TaskStatus = 'waiting' | 'queued' | 'processing' | 'memory' | 'erred' | 'released' | 'forgotten'

export type WorkerKind = 'browser' | 'node'

/** What a client submits for one task (the coordinator keeps the argument bytes; the scheduler only sizes). */
export interface TaskSpec {
  /** Unique key, e.g. `inc-3f2a9c…`. Resubmitting an existing key adds the client as a wanter (pure dedupe). */
  key: string
  /** Hash of the function's source; `null` for scattered data (no lineage). */
  fn: string | null
  /** Keys this task's arguments reference (Futures). Unknown keys make the task err with code 'lost-data'. */
  deps: string[]
  /** Task group for progress/dashboards: the function name (`inc`). */
  group: string
  /** Higher runs first. Default 0. */
  priority: number
  /** How many times an erred run is retried. */
  retries: number
  /** Run on k distinct workers and accept a result only when k of them agree (by digest). 1 = normal. For scattered data: number of replicas to store. */
  redundancy: number
  /** If non-empty, only these worker ids (or names) may run it. */
  workers: string[]
  /** Size of the encoded arguments/data in bytes. */
  nbytes: number
  /** ms a run may take (the worker stops it then); the scheduler takes it back past this plus `deadlines.slackMs` */
  timeout?: number
  /** false: never spot-check its result (random or side-effecting functions, whose honest runs differ). Default true */
  spotCheck?: boolean
}

export type SchedulerEvent =
  | { type: 'client-added'; client: string }
  /** After the coordinator's grace period: every key the client wanted is released; unwanted work is cancelled. */
  | { type: 'client-removed'; client: string }
  | { type: 'submit'; client: string; tasks: TaskSpec[] }
  /** The client no longer holds futures to these keys. */
  | { type: 'release'; client: string; keys: string[] }
  /** The client drops its interest in these keys (and in their not-yet-done dependents it wants), and hears 'cancelled' for them; other clients' futures for the same keys stay as they were (as in Dask). Work nobody wants any more stops. */
  | { type: 'cancel'; client: string; keys: string[] }
  /** The client wants the data of these keys sent to it once they are in memory. */
  | { type: 'gather'; client: string; keys: string[] }
  | { type: 'worker-added'; worker: string; name: string; kind: WorkerKind; slots: number; /** keys it already holds (a tab that reloaded, with spilled data) */ held?: { key: string; nbytes: number }[]; /** who runs it (core/trust.ts volunteerOf); default: its own id */ volunteer?: string }
  /**
   * The worker is gone for good (after the grace period, or it left): reschedule, recompute or fail.
   * Its running tasks count a death towards 'killed-worker' only if it had returned a result
   * before (a new connection that vanishes proves nothing about the task), and never when it
   * left or was quarantined.
   */
  | { type: 'worker-removed'; worker: string; reason: 'disconnected' | 'left' | 'kicked' | 'quarantined' }
  /** Paused by the volunteer, or past its memory high-water mark: gets no new tasks. */
  | { type: 'worker-status'; worker: string; accepting: boolean; /** the pool was resized */ slots?: number }
  /** Graceful leave: stop assigning, hand off data still wanted to other workers, then emit 'retire-done'. */
  | { type: 'worker-retiring'; worker: string }
  | { type: 'task-finished'; worker: string; key: string; attempt: number; nbytes: number; ms: number; /** hash of the encoded result, for redundancy */ digest?: string }
  | { type: 'task-erred'; worker: string; key: string; attempt: number; error: WireError; /** the run killed its thread/Web Worker */ crashed?: boolean }
  /** The worker could not get these dependencies from the workers said to hold them. */
  | { type: 'missing-data'; worker: string; key: string; attempt: number; missing: { key: string; holder: string }[] }
  /** A holder failed to produce data it was said to hold (for a gather or a relay). */
  | { type: 'data-lost'; worker: string; keys: string[] }
  | { type: 'steal-response'; worker: string; key: string; attempt: number; ok: boolean }
  /** Data was stored on a worker: scattered data acked, or a replica/hand-off arrived. */
  | { type: 'data-added'; worker: string; key: string; nbytes: number }
  /** The worker dropped data (evicted / asked). */
  | { type: 'data-released'; worker: string; keys: string[] }
  /** The worker spoke (any frame, heartbeats included): its leases are renewed, and a lapsed worker takes tasks again. */
  | { type: 'worker-seen'; worker: string }
  /**
   * Time passes (`now` on the event). Workers silent for `leaseMs` with tasks in hand lose
   * them: their attempts go elsewhere (late reports are dropped by attempt id) and they
   * get no new tasks until they speak again. With the trust options set, deadlines are
   * enforced whatever the heartbeats say (`deadlines`, `stealTimeoutMs`), and redundant
   * tasks no volunteer is left for fail (`redundancyWaitMs`).
   */
  | { type: 'tick' }
  /** The client now holds futures to these existing keys (a dataset it got, say): it wants them and hears their state; unknown keys are 'lost' to it. */
  | { type: 'want'; client: string; keys: string[] }
  /** Keys the client holds must run to the end even if every client lets go (Dask's fire_and_forget): released once in memory or erred. */
  | { type: 'fire-and-forget'; client: string; keys: string[] }
  /**
   * Run erred tasks again (`future.retry()`), in order: a task's erred dependencies come
   * before it. `deps` are the task's dependency keys (an erred task no longer links them).
   * Keys not erred just get their state told again.
   */
  | { type: 'retry'; client: string; tasks: { key: string; deps: string[] }[] }
  /**
   * A journal replayed into a fresh scheduler (a coordinator that restarted), before anyone
   * connects: tasks in submission order (dependencies first), their clients and workers
   * added before. A result is in memory again on those of its holders that are workers
   * here; a task none of whose holders is runs again; a failed one stays failed.
   */
  | { type: 'restore'; tasks: RestoredTask[] }

/** A task as a journal remembers it (core/journal.ts), for `restore`. */
export interface RestoredTask {
  spec: TaskSpec
  /** the client that submitted it */
  owner: string
  /** the clients (and datasets) that want it */
  wanters: string[]
  /** workers said to hold its result: it is in memory again on those that are workers here */
  holders: string[]
  /** size of its result */
  nbytes: number
  /** it failed so (and stays failed) */
  error?: WireError
}

/** The wanter that holds fire-and-forget tasks until they are done (not a real client). */
export const FIRE_AND_FORGET = 'fire-and-forget'
/** The wanter that holds a released task being re-verified until it is back in memory (not a real client). */
export const VERIFY = 're-verify'

/** Every event may carry these. */
export interface EventMeta { /** ms since epoch (or any monotonic ms) */ now?: number; /** stimulus id for stories, e.g. 'submit-42' */ stimulus?: string }

export interface AssignedTask {
  key: string
  attempt: number
  fn: string | null
  /**
   * Every dependency, with its size (0 while it is still being computed). The worker uses
   * its own copy, waits for one it is computing itself (a task sent ahead), and fetches
   * the rest through the coordinator.
   */
  deps: { key: string; nbytes: number }[]
  /** a client already waits for the value: send it back with the finished report */
  push: boolean
  /** higher runs first, on the worker too */
  priority: number
  /** submission order: among equal priorities, lower runs first */
  seq: number
  /** report the digest of the result (spot checks and re-verification compare them) */
  digest?: true
}

export type Command =
  | { type: 'assign'; worker: string; task: AssignedTask }
  | { type: 'cancel-task'; worker: string; key: string; attempt: number }
  | { type: 'steal-request'; worker: string; key: string; attempt: number }
  /** Worker may drop these keys' data. */
  | { type: 'free-keys'; worker: string; keys: string[] }
  /** Store scattered data (bytes held by the coordinator) on this worker. */
  | { type: 'put-data'; worker: string; key: string }
  /** Copy data from one worker to another (hand-off before leaving, replicas). */
  | { type: 'move-data'; key: string; from: string; to: string }
  /** Tell clients about a key. */
  | {
    type: 'key-state'; clients: string[]; key: string; state: 'memory' | 'erred' | 'cancelled' | 'lost'; error?: WireError; nbytes?: number
    /** the value these clients were told of before was disproven (its volunteer was quarantined and a re-run differs): this one replaces it */
    replaced?: true
  }
  /** Send a key's data from a holder to a client that gathers it. */
  | { type: 'send-data'; client: string; key: string; worker: string }
  /** The scheduler forgot the key: drop its stored arguments/bytes. */
  | { type: 'forget'; key: string }
  /** A retiring worker handed off everything; the coordinator may disconnect it. */
  | { type: 'retire-done'; worker: string }
  /** The worker went quiet for `leaseMs` with `tasks` in hand: they were taken back (for the log). */
  | { type: 'worker-lapsed'; worker: string; tasks: number; quietMs: number }
  /**
   * The worker held a run (or a put or a copy, attempt 0) past its deadline, or left a
   * steal-request unanswered: taken back. For a put or a copy the coordinator stops
   * counting the bytes as sent there, so a late 'stored' is not believed.
   */
  | { type: 'deadline-missed'; worker: string; key: string; attempt: number; heldMs: number; why: 'deadline' | 'put' | 'move' | 'steal' }
  /** A quorum of redundant runs agreed on another digest than this worker's: it is not to be trusted. */
  | { type: 'outvoted'; worker: string; key: string; digest: string; agreed: string }

export interface SchedulerOptions {
  /** Check every invariant after each event and throw on a broken one (tests). */
  validate?: boolean
  /** Entries kept per task story. Default 32. */
  storyLength?: number
  /** Assumed bandwidth for fetch cost, bytes/ms. Default 100_000 (100 MB/s). */
  bandwidth?: number
  /** Work (in ms of expected run time) kept queued on a worker beyond its slots. Default 5. */
  pipelineMs?: number
  /**
   * ms a steal costs (the request to the victim, its answer, the assign to the thief): a
   * task is stolen only if it would wait longer than this on its victim (its place beyond
   * the victim's slots × the average run time ÷ slots). Default: `pipelineMs`.
   */
  stealLatencyMs?: number
  /** Upper bound of tasks ahead per worker beyond its slots. Default 1000. */
  maxAhead?: number
  /** Times a task may be running on a worker that dies/crashes before it is failed ('killed-worker'). Default 3. */
  allowedFailures?: number
  /**
   * ms a worker with tasks may stay silent (no frame, no heartbeat) before its leases run
   * out, checked on `tick` events. Default 15 s.
   */
  leaseMs?: number
  /**
   * Send a task to a worker before its inputs are done when every input not yet in memory
   * is running (or will run) on that same worker: it starts the moment they land there,
   * with no round trip through the coordinator. Default true.
   */
  sendAhead?: boolean
  /** Tasks a new worker may hold at once; one more per result it returns, halved when it lapses (core/trust.ts). Default Infinity (no window). */
  initialWindow?: number
  /** Deadlines enforced on `tick` whatever the heartbeats say (core/trust.ts Deadlines). Default: none. */
  deadlines?: { factor?: number; minMs?: number; slackMs?: number }
  /** ms a steal-request may go unanswered before the task is taken back anyway. Default Infinity. */
  stealTimeoutMs?: number
  /** ms a redundant task may lack a volunteer that has not run it yet before it fails, checked on `tick`. Default Infinity. */
  redundancyWaitMs?: number
  /**
   * Spot checks (BOINC's adaptive replication): a result of a task without redundancy is
   * re-run on another volunteer, and accepted once both agree, with probability
   * max(floor, rate × halfLife / (halfLife + n)) for a worker n of whose results were
   * confirmed so far. A mismatch asks for more runs, as redundancy 2 does. Needs digests:
   * while two volunteers or more are on the grid, every assignment asks for one.
   * Defaults rate 0.5, halfLife 10, floor 0.02; seed seeds the random draws. Default: none.
   */
  spotCheck?: { rate?: number; halfLife?: number; floor?: number; seed?: number }
}

export type StoryEntry = { key: string; from: TaskStatus | 'new'; to: TaskStatus; stimulus: string; worker?: string; now: number; note?: string }

/**
 * A worker's lifecycle at the scheduler. Only a `running` worker is open (gets new
 * tasks, replicas and hand-offs).
 * - `running`: accepting tasks
 * - `paused`: said it takes no new tasks (the volunteer paused, or past its memory mark)
 * - `lapsed`: silent past its lease with tasks in hand: they were taken back, and it
 *   gets nothing until it speaks again (then `running` or `paused`, as it last said)
 * - `retiring`: leaving gracefully: runs what it started, hands off data only it holds
 * - `retired`: retire-done was sent (it runs nothing, every hand-off acknowledged)
 * - `gone`: removed (disconnected past its grace, left, kicked or quarantined)
 */
export type WorkerStatus = 'running' | 'paused' | 'lapsed' | 'retiring' | 'retired' | 'gone'

export interface WorkerInfo { id: string; name: string; kind: WorkerKind; slots: number; status: WorkerStatus; accepting: boolean; retiring: boolean; processing: number; held: number; nbytes: number; done: number; since: number }

export interface GroupCounts { group: string; waiting: number; queued: number; processing: number; memory: number; erred: number; released: number }
