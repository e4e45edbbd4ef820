/**
 * The scheduler's records: one per task, worker, client and attempt. Plain classes
 * with every field initialised in the constructor (one hidden class each, no
 * closures, no per-task maps): a queued task costs a few hundred bytes, so a million
 * of them fit the design's 1 kB-per-task budget with room for the coordinator.
 * Collections are allocated lazily and only where a task needs them.
 */
import type { WireError } from '../shared/errors.js'
import type { TaskStatus, WorkerKind, WorkerStatus } from './scheduler-types.js'
export type { WorkerStatus } from './scheduler-types.js'

/** A task's status, plus 'new' while a submit is being admitted. */
export type Status = TaskStatus | 'new'

/** The statuses in which a task still has to run and holds its dependencies' interest. */
export function isActive(s: Status): boolean {
  return s === 'waiting' || s === 'queued' || s === 'processing'
}

/** One story entry without its key (entries are shared between tasks of one event). */
export interface Entry {
  readonly from: Status
  readonly to: TaskStatus
  readonly stimulus: string
  readonly worker: string | undefined
  readonly now: number
  readonly note: string | undefined
  /** the attempt the entry is about, 0 if none */
  readonly attempt: number
}

export const NO_TASKS: readonly TaskState[] = Object.freeze([]) as readonly TaskState[]

export class ClientState {
  /** Fair-turn counter per priority level. */
  readonly turns = new Map<number, number>()
  /** How many tasks list this client as a wanter (lets client-removed skip a scan). */
  wanted = 0
  constructor(readonly id: string) {}
}

/** One assignment of a task to a worker (or, with `put`, one put-data of scattered data). */
export class Attempt {
  live = true
  /** The worker a steal-request was sent for; null when no steal is pending. */
  thief: WorkerState | null = null
  /** The victim refused a steal once: don't ask again. */
  denied = false
  /** Sent ahead: assigned while inputs are still running on the same worker (not started, not stealable). */
  ahead = false
  /** when it was assigned (scheduler clock) */
  at = 0
  /** when it became one of the first `slots` its worker holds, so most likely running (−1: not yet) */
  started = -1
  /** when the pending steal-request was sent */
  stealAt = 0
  /** whether its assignment asked for a digest of the result (decided once: a re-sent assignment asks the same) */
  digest: boolean | null = null
  constructor(readonly id: number, readonly task: TaskState, readonly worker: WorkerState, readonly put: boolean) {}
}

/** A finished run of a redundant task, waiting for enough runs to agree. */
export interface Report { readonly worker: WorkerState; readonly digest: string; readonly nbytes: number }

/** Per-task bookkeeping for redundancy > 1, allocated only for such tasks. */
export class Redundancy {
  results: Report[] = []
  /** volunteers that ran or run an attempt (k runs must be on distinct volunteers, not connections) */
  tried: string[] = []
  /** finished reports counted towards the 2k+1 limit */
  reports = 0
  /** since when no open worker of an untried volunteer exists while runs are still needed (−1: one does) */
  starvedSince = -1
}

export class TaskState {
  status: Status = 'new'
  deps: readonly TaskState[] = NO_TASKS
  dependents: Set<TaskState> | null = null
  /** client ids: one string for the common single-client case, an array beyond */
  wanters: string | string[] | null = null
  /** workers holding the data; non-null only in memory */
  holders: WorkerState[] | null = null
  /** live attempts */
  attempts: Attempt[] | null = null
  /** clients waiting for send-data once the task is in memory */
  gatherers: string[] | null = null
  /** one entry, or a ring of at most storyLength entries starting at storyHead */
  story: Entry | Entry[] | null = null
  storyHead = 0
  error: WireError | null = null
  redundant: Redundancy | null = null
  /** runs lost with a worker that died or crashed (the killed-worker rule) */
  failures = 0
  /** volunteers an attempt of it lapsed, crashed or died on: it goes elsewhere if it can */
  avoid: string[] | null = null
  /** ms a run may take (0: no limit of its own) */
  timeout = 0
  /** the volunteer whose word alone the value in memory rests on (null: verified by a quorum or a spot check, scattered, or not computed) */
  producer: string | null = null
  /** digest of the value in memory (or last in memory), when one was reported */
  digest: string | null = null
  /** being re-verified: the digest of the disputed value it must match ('' if none was reported), else null */
  suspect: string | null = null
  /** a spot check is under way: its run is redundant (k = 2) until a quorum agrees */
  spot = false
  /** may be spot-checked (TaskSpec.spotCheck) */
  spotCheck = true
  turn = -1
  seq = -1
  heapIndex = -1
  /** dependencies not in memory (kept for active tasks only) */
  waitingOn = 0
  /** dependents in waiting/queued/processing */
  activeDependents = 0

  constructor(
    readonly key: string,
    readonly fn: string | null,
    readonly group: string,
    readonly priority: number,
    public retries: number,
    /** runs that must agree; 2 while a spot check of a task submitted with 1 is under way */
    public redundancy: number,
    readonly restrict: readonly string[] | null,
    /** encoded argument size while not computed; result size once in memory */
    public nbytes: number,
    readonly owner: ClientState,
  ) {}
}

/** Every transition a worker's status may make (Scheduler.setWorkerStatus refuses the rest). */
export const WORKER_TRANSITIONS: { readonly [S in WorkerStatus]: readonly WorkerStatus[] } = {
  running: ['paused', 'lapsed', 'retiring', 'gone'],
  paused: ['running', 'lapsed', 'retiring', 'gone'],
  lapsed: ['running', 'paused', 'retiring', 'gone'],
  retiring: ['retired', 'gone'],
  retired: ['gone'],
  gone: [],
}

/** Leaving gracefully: retiring, or retired and waiting for its goodbye. */
export function isLeaving(w: WorkerState): boolean {
  return w.status === 'retiring' || w.status === 'retired'
}

export class WorkerState {
  /** change it only through Scheduler.setWorkerStatus (the one place transitions are made) */
  status: WorkerStatus = 'running'
  /** what the worker last said of itself: false = paused (it stays paused through a lapse) */
  accepting = true
  /** when it last spoke (scheduler clock) */
  lastSeen = 0
  /** when its task attempts last went from none to some: its lease runs from then at the earliest */
  busySince = 0
  /** the lease deadline it is filed under in the scheduler's lease queue (rechecked when reached) */
  leaseAt = 0
  /** index in the lease queue, −1 if not there */
  heapIndex = -1
  /** the capacity it is filed in the free list with (recomputed on every touch, so the average's drift costs no pass over all workers) */
  cap = 0
  /** live attempts sent ahead (waiting on inputs running here): they hold capacity but no slot */
  ahead = 0
  inIdle = false
  inSaturated = false
  /** index in the scheduler's list of workers with free capacity, −1 if not there */
  freeIndex = -1
  /** what it adds to the scheduler's freeRoom: cap − attempts while in the free list, else 0 */
  room = 0
  /** live task attempts */
  readonly attempts = new Set<Attempt>()
  /** attempts in assignment order; dead ones are skipped and compacted away */
  order: Attempt[] = []
  /** pending put-data of scattered values */
  puts: Set<Attempt> | null = null
  readonly holds = new Set<TaskState>()
  /** redundant tasks with a result of this worker still under vote */
  reported: Set<TaskState> | null = null
  /** keys being handed off while retiring */
  handoffs: Set<TaskState> | null = null
  nbytes = 0
  pendingBytes = 0
  done = 0
  /** steal-requests sent on this worker's behalf, not yet answered */
  incoming = 0
  /** own attempts with a steal-request pending */
  stealing = 0
  /** scratch space for placement (bytes of a task's deps held here), valid when scratchMark matches */
  scratch = 0
  scratchMark = 0
  /** slots it says it has; `slots` is what it has earned of them (see core/trust.ts) */
  claimed: number
  /** tasks it may hold at once: small for a new worker, grows as it returns results, shrinks when it lapses */
  window: number
  /** its results confirmed by another volunteer (spot checks passed, redundant votes agreed): its spot-check rate falls as this grows */
  verified = 0

  constructor(
    readonly id: string,
    readonly name: string,
    readonly kind: WorkerKind,
    /** slots the scheduler counts on: min(claimed, window) */
    public slots: number,
    readonly since: number,
    /** join order, the tie-breaker that makes placement deterministic */
    readonly seq: number,
    /** who runs it: two connections of one volunteer count once for redundancy */
    readonly volunteer: string,
    window: number,
  ) {
    this.claimed = slots
    this.window = window
    this.slots = Math.max(1, Math.min(slots, window))
  }
}

// Wanters are a string for one client and an array beyond: most tasks have one.

export function hasWanter(t: TaskState, client: string): boolean {
  const w = t.wanters
  return w === client || (Array.isArray(w) && w.includes(client))
}

/** Adds a wanter; false if it was already there. */
export function addWanter(t: TaskState, client: string): boolean {
  const w = t.wanters
  if (w === null) t.wanters = client
  else if (typeof w === 'string') {
    if (w === client) return false
    t.wanters = [w, client]
  } else {
    if (w.includes(client)) return false
    w.push(client)
  }
  return true
}

/** Removes a wanter; false if it was not there. */
export function removeWanter(t: TaskState, client: string): boolean {
  const w = t.wanters
  if (w === null) return false
  if (typeof w === 'string') {
    if (w !== client) return false
    t.wanters = null
    return true
  }
  const i = w.indexOf(client)
  if (i < 0) return false
  w.splice(i, 1)
  if (w.length === 1) t.wanters = w[0] as string
  else if (w.length === 0) t.wanters = null
  return true
}

export function wanterList(t: TaskState): string[] {
  const w = t.wanters
  return w === null ? [] : typeof w === 'string' ? [w] : w.slice()
}

// ───────────────────────────── shared by the scheduler's files ─────────────────────────────

/** Weight of the newest report in the moving average of task run time. */
export const EMA_WEIGHT = 0.2
/** The average capacities are computed with moves only when the average drifts by this factor; each worker picks it up at its next touch. */
export const CAPACITY_HYSTERESIS = 1.25
/** Lower bound for the average run time, so a 0 ms report cannot divide by zero. */
export const MIN_AVG_MS = 1e-3
/** Constrained tasks (restricted, redundant) set aside per dispatch before we stop looking at them. */
export const MAX_SET_ASIDE = 256
/** Workers examined for a least-occupied choice when there are many (rotating sample). */
export const SAMPLE = 32
/** Attempts examined per stealing round. */
export const STEAL_SCAN = 256

export interface ResolvedOptions {
  validate: boolean
  storyLength: number
  bandwidth: number
  pipelineMs: number
  stealLatencyMs: number
  maxAhead: number
  allowedFailures: number
  leaseMs: number
  sendAhead: boolean
  initialWindow: number
  /** null: no deadlines */
  deadlines: { factor: number; minMs: number; slackMs: number } | null
  /** null: no spot checks */
  spotCheck: { rate: number; halfLife: number; floor: number; seed: number } | null
  stealTimeoutMs: number
  redundancyWaitMs: number
}

export interface Info { worker?: WorkerState; note?: string; error?: WireError; /** shown as 'attempt N' in the story */ attempt?: number }
/** A copy of data between workers (hand-off of a retiring worker, or a replica of scattered data). */
export interface Move { from: WorkerState; to: WorkerState; handoff: boolean; /** when it was asked for (scheduler clock): unacknowledged past a deadline, it goes elsewhere */ at: number }

export const NO_INFO: Info = Object.freeze({})
export const NO_KEYS: readonly string[] = Object.freeze([])
export const STATUSES: readonly TaskStatus[] = ['waiting', 'queued', 'processing', 'memory', 'erred', 'released', 'forgotten']

/** A whole number ≥ min from an untrusted field, or dflt. */
export function int(v: unknown, dflt: number, min: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? Math.max(min, Math.floor(v)) : dflt
}
