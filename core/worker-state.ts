/**
 * The worker's state machine, in the image of Dask.distributed's `worker_state_machine.py`:
 * everything a worker knows about its tasks, its data and its threads, changed only by
 * `handle(event)`, which returns the instructions to carry out instead of carrying them
 * out. No I/O, no timers, no clock: time arrives on every event as `now` (ms), and the
 * machine asks to be woken (`wake-at`) when a deadline of its own comes up. The runtime
 * around it (core/runtime.ts) turns coordinator messages, thread events and timers into
 * events, and instructions into messages, comlink calls and MessagePort posts.
 *
 * A task assigned here (one attempt, `key@attempt`) goes
 *
 *   waiting ─→ ready ─→ (copying ─→) executing ─→ memory | erred | missing
 *      │         │          │            └─→ cancelled ─→ released
 *      └─────────┴──────────┴─→ released (cancelled, stolen) | missing (an input is gone)
 *
 * - `waiting`: an input is held by no thread here yet: it is being fetched through the
 *   coordinator, or it is computed by a task on this worker (a dependent sent ahead),
 *   in which case the task becomes ready the moment that input lands, and never fetches it.
 * - `ready`: every input is held by some thread here. Ready tasks wait in one queue ordered
 *   by priority (higher first), then submission order, and a thread is handed only what it
 *   can start now (plus a lookahead of a few ms of work for tasks known to be short), so
 *   a high-priority task assigned later overtakes low-priority ones still queued.
 * - `copying`: bound to a thread that lacks some inputs, which are copied to it from
 *   sibling threads first.
 * - `executing`: handed to its thread. The first `nthreads` tasks a thread was handed and
 *   has not finished are the ones it runs; their time limits run from when they got there.
 * - `cancelled`: cancelled while its thread runs it (only stopping the thread can stop
 *   JavaScript); its result is dropped when it ends.
 *
 * Threads are part of the state: `starting` (spawned, not yet answering), `alive`, `dead`.
 * A thread that dies fails only the tasks it was running; the others go back to the ready
 * queue, the data only it held is reported released, and a new thread takes its place —
 * unless threads keep dying, then the slot waits a while (no respawn loop).
 *
 * @example
 * const ws = new WorkerState({ nprocs: 1, nthreads: 1 })
 * ws.handle({ type: 'start', now: 0 })              // → [{ type: 'spawn-thread', thread: 1, slot: 0 }, …]
 * ws.handle({ type: 'thread-started', thread: 1, now: 5 })
 * ws.handle({ type: 'assign', key: 'inc-1', attempt: 1, fn: 'h', args, deps: [], push: true, now: 6 })
 * // → [{ type: 'run', thread: 1, batch: { tasks: [{ key: 'inc-1', attempt: 1, … }] } }]
 * ws.handle({ type: 'task-finished', thread: 1, key: 'inc-1', attempt: 1, nbytes: 8, ms: 1, now: 7 })
 * // → [{ type: 'send', msg: { type: 'finished', key: 'inc-1', attempt: 1, nbytes: 8, ms: 1 } }]
 */
import type { ToWorkerMessage, WorkerMessage } from '../shared/protocol.js'
import type { WireError } from '../shared/errors.js'
import type { ExecTask, TaskBatch } from '../shared/executor.js'
import { attemptId } from '../shared/attempt.js'
import { TaskQueue } from './scheduler-queue.js'

/** An assignment as the coordinator sends it. */
export type Assign = Extract<ToWorkerMessage, { type: 'assign' }>

/** Where one attempt of a task is on this worker; the last four are final (the task is then forgotten). */
export type TaskStatus = 'waiting' | 'ready' | 'copying' | 'executing' | 'cancelled' | 'memory' | 'erred' | 'missing' | 'released'

export type ThreadStatus = 'starting' | 'alive' | 'dead'

/**
 * Why a thread is stopped on purpose: a task ran past its time limit, a running task was
 * cancelled (hard cancel), the pool shrank, it did not start in time, or the worker closed.
 */
export type StopReason = 'timeout' | 'cancel' | 'resize' | 'start-timeout' | 'close'

/** What happens to the worker. Every event carries `now`, in ms of a monotonic clock. */
export type WorkerEvent = (
  // ── the host
  /** Spawns the pool. First event. */
  | { type: 'start' }
  /** Time passes: time limits, threads that do not start, paused respawns, heartbeats. */
  | { type: 'tick' }
  /** The volunteer paused (false) or resumed (true). */
  | { type: 'set-accepting'; accepting: boolean }
  /** Grow or shrink the pool to `nprocs` threads. */
  | { type: 'resize'; nprocs: number }
  /** Graceful leave: the coordinator hands data off, then says goodbye. */
  | { type: 'retire' }
  /** Stop every thread; later events change nothing. */
  | { type: 'close' }
  // ── the coordinator
  | Assign
  | { type: 'cancel-task'; key: string; attempt: number }
  | { type: 'steal'; key: string; attempt: number }
  | { type: 'free'; keys: string[] }
  | { type: 'function'; hash: string; source: string }
  /** Forget these sources (the coordinator caps each client's on this worker); one a task here still uses stays. */
  | { type: 'free-functions'; hashes: string[] }
  /** Forget the modules of the client with this namespace (it left). */
  | { type: 'free-modules'; ns: string }
  /** `name` is namespaced (`ns/name`) when the module belongs to a client that uploaded it */
  | { type: 'module'; name: string; source: string }
  /** Store this value here (scattered data, a hand-off); its parts are already joined. */
  | { type: 'put'; key: string; data: Uint8Array; /** the bytes' SHA-256, when the coordinator said */ digest?: string }
  /** The coordinator asks for a key's data (request `id`). */
  | { type: 'fetch'; id: number; key: string }
  /** `resumed`: the same identity as before the reconnect; else a fresh one. */
  | { type: 'welcome'; id: string; resumed: boolean }
  | { type: 'disconnected' }
  // ── answers to our own fetches through the coordinator (`fetch-remote`)
  | { type: 'fetched'; key: string; data: Uint8Array }
  | { type: 'fetch-failed'; key: string; error: WireError }
  // ── threads
  | { type: 'thread-started'; thread: number }
  /** The thread ended without being asked (crash, a task closed it, it could not load). */
  | { type: 'thread-died'; thread: number; reason: string }
  /** Keys the thread found in its spill store from before (a reloaded tab). */
  | { type: 'thread-adopted'; thread: number; held: { key: string; nbytes: number }[] }
  /** A `put-into-thread` or `copy-from-thread` landed in `thread`. */
  | { type: 'put-done'; thread: number; key: string; nbytes: number }
  /** A `put-into-thread` or `copy-from-thread` into `thread` failed (`from`: the copy's source). */
  | { type: 'put-failed'; thread: number; key: string; error: string; from?: number }
  /** Answer to `cancel-in-thread`: whether the thread dropped the task before starting it. */
  | { type: 'thread-cancel-answer'; thread: number; key: string; attempt: number; dropped: boolean }
  | { type: 'task-finished'; thread: number; key: string; attempt: number; nbytes: number; ms: number; data?: Uint8Array; digest?: string }
  /** `missing`: inputs the thread did not hold (the task did not run). */
  | { type: 'task-erred'; thread: number; key: string; attempt: number; error: WireError; missing?: string[] }
  /** Memory figures of a thread; `paused`: past its high-water mark (take no new tasks). */
  | { type: 'thread-memory'; thread: number; inMemory: number; spilled: number; paused?: boolean }
) & { now: number }

/** What the runtime must do. Thread numbers are ids, never reused; `slot` is the place in the pool. */
export type Instruction =
  | { type: 'send'; msg: WorkerMessage }
  | { type: 'spawn-thread'; thread: number; slot: number }
  | { type: 'stop-thread'; thread: number; why: StopReason }
  /** Post these tasks, with the definitions they need first, on the thread's task port. */
  | { type: 'run'; thread: number; batch: TaskBatch }
  /** Store bytes in a thread; answer with put-done / put-failed. */
  | { type: 'put-into-thread'; thread: number; key: string; data: Uint8Array }
  /** Read a key from one thread and store it in another; answer with put-done / put-failed (with `from`). */
  | { type: 'copy-from-thread'; key: string; from: number; to: number }
  | { type: 'free-in-thread'; thread: number; keys: string[] }
  /** Ask the coordinator for a key's data; answer with fetched / fetch-failed. */
  | { type: 'fetch-remote'; key: string }
  /** Answer the coordinator's fetch `id` with the key's data from this thread (data / data-error). */
  | { type: 'serve'; thread: number; id: number; key: string }
  /** Ask a thread to drop a task it has not started; answer with thread-cancel-answer. */
  | { type: 'cancel-in-thread'; thread: number; key: string; attempt: number }
  /** Ask a thread for its memory figures; answer with thread-memory. */
  | { type: 'query-memory'; thread: number }
  /** Feed a `tick` at this time (null: nothing to wake for). Only sent when it changes. */
  | { type: 'wake-at'; at: number | null }
  | { type: 'log'; line: string }

export interface WorkerStateOptions {
  /** threads in the pool (Dask's processes) */
  nprocs: number
  /** tasks each thread runs at once */
  nthreads: number
  /** cancelling a running task stops its thread (browsers). Default false. */
  hardCancel?: boolean
  /**
   * ms a worker holding tasks may go without sending anything before it sends a heartbeat
   * (any frame renews its leases at the coordinator, so a busy worker's results are its
   * heartbeats). Default 1000.
   */
  heartbeatMs?: number
  /** ms between heartbeats otherwise (its memory figures; the connection's liveness is socket.io's ping). Default 10,000 (the tab's page shows the memory figures it refreshes at each beat). */
  idleHeartbeatMs?: number
  /** ms of work known to be short a thread may be handed beyond what it runs now. Default 2. */
  lookaheadMs?: number
  /** most tasks a thread may be handed beyond what it runs now. Default 64. */
  maxLookahead?: number
  /** ms a spawned thread has to start before it is replaced. Default 60 s. */
  startTimeoutMs?: number
  /** finished and erred reports kept to resend after a reconnect. Default 20,000. */
  reportsKept?: number
  /** transitions kept for `story()`. Default 2,000. */
  logLength?: number
  /** check every invariant after each event and throw on a broken one (tests) */
  validate?: boolean
}

interface ResolvedOptions {
  nprocs: number
  nthreads: number
  hardCancel: boolean
  heartbeatMs: number
  idleHeartbeatMs: number
  lookaheadMs: number
  maxLookahead: number
  startTimeoutMs: number
  reportsKept: number
  logLength: number
  validate: boolean
}

/** Threads dying faster than this (3 per slot and 3 more in RESPAWN_WINDOW_MS) wait RESPAWN_PAUSE_MS before the next. */
const RESPAWN_WINDOW_MS = 10_000
const RESPAWN_PAUSE_MS = 5_000
/** Weight of the newest run time in a function's moving average. */
const EMA_WEIGHT = 0.3

function resolveOptions(o: WorkerStateOptions): ResolvedOptions {
  const num = (name: keyof WorkerStateOptions, v: unknown, dflt: number, min: number, integer: boolean): number => {
    if (v === undefined) return dflt
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) {
      throw new RangeError(`WorkerStateOptions.${name} must be ${integer ? 'a whole number' : 'a number'} ≥ ${min}, got ${String(v)}`)
    }
    return v
  }
  if (o.nprocs === undefined || o.nthreads === undefined) throw new RangeError('WorkerStateOptions needs nprocs and nthreads')
  return {
    nprocs: num('nprocs', o.nprocs, 1, 1, true),
    nthreads: num('nthreads', o.nthreads, 1, 1, true),
    hardCancel: o.hardCancel === true,
    heartbeatMs: num('heartbeatMs', o.heartbeatMs, 1_000, 1, false),
    idleHeartbeatMs: num('idleHeartbeatMs', o.idleHeartbeatMs, 10_000, 1, false),
    lookaheadMs: num('lookaheadMs', o.lookaheadMs, 2, 0, false),
    maxLookahead: num('maxLookahead', o.maxLookahead, 64, 0, true),
    startTimeoutMs: num('startTimeoutMs', o.startTimeoutMs, 60_000, 1, false),
    reportsKept: num('reportsKept', o.reportsKept, 20_000, 2, true),
    logLength: num('logLength', o.logLength, 2_000, 0, true),
    validate: o.validate === true,
  }
}

interface TaskState {
  readonly id: string
  readonly key: string
  readonly attempt: number
  readonly a: Assign
  readonly priority: number
  readonly seq: number
  status: TaskStatus
  /** waiting: inputs held by no thread here; copying: inputs its thread still lacks */
  need: Set<string> | null
  /** copying, executing, cancelled: the thread it is bound to */
  thread: ThreadState | null
  /** when its time limit runs out (0: not running yet, or no limit) */
  deadline: number
  /** a cancel-in-thread is in flight, for a steal or a cancel */
  asking: 'steal' | 'cancel' | null
  /** index in the ready queue, -1 when not in it */
  heapIndex: number
}

interface ThreadState {
  readonly id: number
  readonly slot: number
  status: ThreadStatus
  /** executing and cancelled tasks handed to it, in the order they were (the first nthreads run) */
  tasks: TaskState[]
  /** tasks bound to it, waiting for copies of their inputs */
  readonly copying: Set<TaskState>
  /** keys whose data it holds (in memory or spilled) */
  readonly held: Set<string>
  /** function hashes and module names it has been sent */
  readonly fns: Set<string>
  readonly modules: Set<string>
  /** functions and modules to forget, sent with its next batch */
  forget: { fns: string[]; modules: string[] } | null
  memPaused: boolean
  inMemory: number
  spilled: number
  /** starting: replaced if not started by then */
  readonly startBy: number
}

interface DataState {
  readonly key: string
  nbytes: number
  /** alive threads holding it; the first serves it */
  readonly holders: ThreadState[]
  /** a fetch through the coordinator: in flight, or to ask again after a reconnect */
  fetch: 'no' | 'flight' | 'again'
  /** bytes that arrived and are not in a thread yet (kept until one stores them) */
  bytes: Uint8Array | null
  /** the thread the bytes are being put into */
  landing: ThreadState | null
  /** copies in flight between threads: to → from (made when first needed) */
  copies: Map<ThreadState, ThreadState> | null
  /** a put from the coordinator: report `stored` when it lands */
  stored: boolean
}

export interface StoryEntry {
  id: string
  attempt: number
  from: TaskStatus | 'new'
  to: TaskStatus
  stimulus: string
  now: number
  note?: string
  /** the slot of the thread the task was bound to then, if any */
  thread?: number
}

export interface WorkerStats {
  running: number
  queued: number
  held: number
  done: number
  busyMs: number
  /** threads started or starting */
  threads: number
  memory: number
  spilled: number
  accepting: boolean
}

/** The pairs `transition` allows; anything else is a bug and throws with the story. */
const NEXT: Record<TaskStatus, readonly TaskStatus[]> = {
  waiting: ['ready', 'executing', 'released', 'missing'],
  ready: ['copying', 'executing', 'released', 'missing'],
  copying: ['executing', 'ready', 'released', 'missing'],
  executing: ['memory', 'erred', 'missing', 'cancelled', 'ready', 'released'],
  cancelled: ['released'],
  memory: [],
  erred: [],
  missing: [],
  released: [],
}

/** The ready queue's order: highest priority first, then lowest seq (submission order). */
function readyBefore(a: TaskState, b: TaskState): boolean {
  return a.priority > b.priority || (a.priority === b.priority && a.seq < b.seq)
}

type Death = { cause: 'crash'; reason: string } | { cause: StopReason; culprit?: TaskState }

export class WorkerState {
  private readonly opts: ResolvedOptions
  private readonly nthreads: number
  /** live tasks by key@attempt */
  private readonly tasks = new Map<string, TaskState>()
  /** ready tasks: the scheduler's heap (tasks know their index, O(log n) removal) */
  private readonly ready = new TaskQueue<TaskState>(readyBefore)
  /** live tasks computing each key here (not cancelled): a dependent waits for them instead of fetching */
  private readonly producers = new Map<string, TaskState | Set<TaskState>>()
  /** waiting tasks, by the input they wait for */
  private readonly waiters = new Map<string, Set<TaskState>>()
  private readonly data = new Map<string, DataState>()
  /** SHA-256 of held results as reported (or of puts, as the coordinator said), for re-announcing them */
  private readonly digests = new Map<string, string>()
  /** data with bytes and no thread alive to put them in */
  private readonly unplaced = new Set<DataState>()
  /** data with copies in flight */
  private readonly copying = new Set<DataState>()
  /** the thread in each slot (null: waiting to be respawned) */
  private pool: (ThreadState | null)[] = []
  /** per slot: when a paused respawn may happen (0: none) */
  private respawnAt: number[] = []
  /** threads starting or alive, by id */
  private readonly threads = new Map<number, ThreadState>()
  private threadSeq = 0
  /** times of recent crash deaths */
  private deaths: number[] = []
  private readonly functions = new Map<string, string>()
  private readonly modules = new Map<string, string>()
  /** finished and erred reports by key@attempt, kept to resend after a reconnect */
  private readonly reports = new Map<string, WorkerMessage>()
  /** moving average run time per function hash (ms), for the lookahead */
  private readonly fnMs = new Map<string, number>()
  /** keys whose local producers went away this event: their waiting dependents report missing */
  private orphanQ: string[] = []
  /** waiting tasks that may queue on the thread computing their inputs (one task at a time per thread) */
  private behindQ: TaskState[] = []
  /** the bounded transition log, as a ring of columns (no object per transition on the hot path) */
  private readonly logId: string[] = []
  private readonly logKey: string[] = []
  private readonly logFrom: (TaskStatus | 'new')[] = []
  private readonly logTo: TaskStatus[] = []
  private readonly logStimulus: string[] = []
  private readonly logNow: number[] = []
  private readonly logNote: (string | undefined)[] = []
  private readonly logAttempt: number[] = []
  /** the slot of the task's thread then, −1 if none */
  private readonly logThread: number[] = []
  private logHead = 0
  private out: Instruction[] = []
  private runs = new Map<ThreadState, TaskBatch>()
  private frees = new Map<ThreadState, string[]>()
  private now = 0
  private stimulus = 'init'
  private arrivals = 0
  private accepting = true
  private sentAccepting = true
  private connected = false
  private closed = false
  /** when it last sent a heartbeat, and anything at all (scheduler of its beats: see beatAt) */
  private lastBeat = 0
  private lastSent = 0
  /** when it last went from no task to some */
  private busySince = 0
  private lastWake: number | null = null
  /** the coordinator's id for this worker, once welcomed */
  workerId = ''
  /** tasks finished, and ms spent in them */
  done = 0
  busyMs = 0

  constructor(options: WorkerStateOptions) {
    this.opts = resolveOptions(options)
    this.nthreads = this.opts.nthreads
  }

  /** Feeds one event; returns what to do. */
  handle(event: WorkerEvent): Instruction[] {
    this.now = event.now
    this.stimulus = event.type
    if (!this.closed) this.onEvent(event)
    return this.finish()
  }

  /** Feeds events together (a frame of messages, a batch of thread events): their runs leave as one batch per thread. */
  handleMany(events: readonly WorkerEvent[]): Instruction[] {
    for (const e of events) {
      this.now = e.now
      this.stimulus = e.type
      if (!this.closed) this.onEvent(e)
    }
    return this.finish()
  }

  // ───────────────────────────── reading ─────────────────────────────

  /** Threads in the pool (started or starting) times tasks each runs. */
  get slots(): number { return this.pool.length * this.nthreads }
  get isAccepting(): boolean { return this.accepting }

  /** The status of one attempt here, undefined once it is forgotten. */
  taskStatus(key: string, attempt: number): TaskStatus | undefined { return this.tasks.get(attemptId(key, attempt))?.status }

  /** Ids of the threads of the pool by slot (null: a slot waiting for its respawn), with their status. */
  /**
   * What this worker holds (some thread has it), with digests where known: the `held` of
   * its next hello, so a coordinator that restarted can take back what its journal agrees on.
   */
  heldKeys(max: number): { key: string; nbytes: number; digest?: string }[] {
    const out: { key: string; nbytes: number; digest?: string }[] = []
    for (const d of this.data.values()) {
      if (d.holders.length === 0) continue
      if (out.length >= max) break
      const digest = this.digests.get(d.key)
      out.push(digest === undefined ? { key: d.key, nbytes: d.nbytes } : { key: d.key, nbytes: d.nbytes, digest })
    }
    return out
  }

  threadList(): { id: number; slot: number; status: ThreadStatus; tasks: string[]; held: string[] }[] {
    const out: { id: number; slot: number; status: ThreadStatus; tasks: string[]; held: string[] }[] = []
    for (const t of this.pool) if (t !== null) out.push({ id: t.id, slot: t.slot, status: t.status, tasks: t.tasks.map(x => x.id), held: [...t.held] })
    return out
  }

  /** Threads (by id) holding a key here. */
  holders(key: string): number[] { return this.data.get(key)?.holders.map(t => t.id) ?? [] }

  /** The transitions of a task's attempts that are still in the bounded log. */
  story(key: string): StoryEntry[] {
    const n = this.logId.length
    const out: StoryEntry[] = []
    for (let i = 0; i < n; i++) {
      const j = (this.logHead + i) % n
      if (this.logKey[j] !== key) continue
      const e: StoryEntry = { id: this.logId[j]!, attempt: this.logAttempt[j]!, from: this.logFrom[j]!, to: this.logTo[j]!, stimulus: this.logStimulus[j]!, now: this.logNow[j]! }
      const note = this.logNote[j]
      if (note !== undefined) e.note = note
      const thread = this.logThread[j]!
      if (thread >= 0) e.thread = thread
      out.push(e)
    }
    return out
  }

  stats(): WorkerStats {
    let running = 0, memory = 0, spilled = 0, threads = 0
    for (const t of this.threads.values()) {
      threads++
      running += Math.min(t.tasks.length, this.nthreads)
      memory += t.inMemory
      spilled += t.spilled
    }
    let held = 0
    for (const d of this.data.values()) if (d.holders.length !== 0) held++
    return {
      running, queued: Math.max(0, this.tasks.size - running), held, done: this.done, busyMs: this.busyMs,
      threads, memory, spilled, accepting: this.sentAccepting,
    }
  }

  // ───────────────────────────── events ─────────────────────────────

  private onEvent(e: WorkerEvent): void {
    switch (e.type) {
      case 'start':
        if (this.pool.length === 0) for (let i = 0; i < this.opts.nprocs; i++) this.spawn(i)
        break
      case 'tick': this.onTick(); break
      case 'set-accepting':
        this.accepting = e.accepting
        this.sendStatus(false)
        break
      case 'resize': this.onResize(e.nprocs); break
      case 'retire': this.send({ type: 'retire' }); break
      case 'close': this.onClose(); break
      case 'assign': this.onAssign(e); break
      case 'cancel-task': this.onCancel(e.key, e.attempt); break
      case 'steal': this.onSteal(e.key, e.attempt); break
      case 'free': this.onFree(e.keys); break
      case 'function': this.functions.set(e.hash, e.source); break
      case 'free-functions': this.onFreeFunctions(e.hashes); break
      case 'free-modules': this.onFreeModules(e.ns); break
      case 'module':
        this.modules.set(e.name, e.source)
        // a new version reaches every thread with its next batch
        for (const t of this.threads.values()) t.modules.delete(e.name)
        break
      case 'put':
        if (e.digest !== undefined) this.digests.set(e.key, e.digest)
        this.onPut(e.key, e.data)
        break
      case 'fetch': this.onServe(e.id, e.key); break
      case 'welcome': this.onWelcome(e.id, e.resumed); break
      case 'disconnected':
        this.connected = false
        // fetches through the lost connection are asked again once welcomed back
        for (const d of this.data.values()) if (d.fetch === 'flight') d.fetch = 'again'
        break
      case 'fetched': this.onFetched(e.key, e.data); break
      case 'fetch-failed': this.onFetchFailed(e.key, e.error); break
      case 'thread-started': this.onThreadStarted(e.thread); break
      case 'thread-died': {
        const t = this.threads.get(e.thread)
        if (t !== undefined) this.threadGone(t, { cause: 'crash', reason: e.reason })
        break
      }
      case 'thread-adopted': {
        const t = this.threads.get(e.thread)
        if (t !== undefined) for (const h of e.held) this.addHolder(h.key, t, h.nbytes)
        break
      }
      case 'put-done': this.onPutDone(e.thread, e.key, e.nbytes); break
      case 'put-failed': this.onPutFailed(e.thread, e.key, e.error, e.from); break
      case 'thread-cancel-answer': this.onCancelAnswer(e.thread, e.key, e.attempt, e.dropped); break
      case 'task-finished': this.onTaskFinished(e); break
      case 'task-erred': this.onTaskErred(e); break
      case 'thread-memory': {
        const t = this.threads.get(e.thread)
        if (t === undefined) break
        t.inMemory = e.inMemory
        t.spilled = e.spilled
        if (e.paused !== undefined) t.memPaused = e.paused
        this.sendStatus(false)
        break
      }
      default: {
        const never: never = e
        throw new Error(`unknown worker event ${(never as { type: string }).type}`)
      }
    }
  }

  private onAssign(m: Extract<WorkerEvent, { type: 'assign' }>): void {
    const id = attemptId(m.key, m.attempt)
    const report = this.reports.get(id)
    if (report !== undefined) { this.send(report); return }
    if (this.tasks.has(id)) return
    const a: Assign = m
    const t: TaskState = {
      id, key: m.key, attempt: m.attempt, a, priority: m.priority ?? 0, seq: m.seq ?? this.arrivals,
      status: 'waiting', need: null, thread: null, deadline: 0, asking: null, heapIndex: -1,
    }
    this.arrivals++
    if (this.tasks.size === 0) this.busySince = this.now
    this.tasks.set(id, t)
    this.record(t, 'new', 'waiting')
    // one producer per key is the rule; a set only when attempts overlap
    const ps = this.producers.get(t.key)
    if (ps === undefined) this.producers.set(t.key, t)
    else if (ps instanceof Set) ps.add(t)
    else this.producers.set(t.key, new Set([ps, t]))
    for (const d of m.deps) {
      const data = this.data.get(d.key)
      if (data !== undefined && data.holders.length !== 0) continue
      ;(t.need ??= new Set()).add(d.key)
      let ws = this.waiters.get(d.key)
      if (ws === undefined) this.waiters.set(d.key, ws = new Set())
      ws.add(t)
      // computed here (a dependent sent ahead): wait for it; never fetch what will land here
      if (this.producing(d.key)) continue
      if (data !== undefined && (data.landing !== null || data.bytes !== null || data.fetch !== 'no')) continue
      this.fetchRemote(d.key)
    }
    if (t.need === null) this.makeReady(t)
    else if (this.nthreads === 1) this.behindQ.push(t)
  }

  private onCancel(key: string, attempt: number): void {
    const t = this.tasks.get(attemptId(key, attempt))
    if (t === undefined) return
    switch (t.status) {
      case 'waiting': case 'ready': case 'copying':
        this.end(t, 'released', 'cancelled')
        return
      case 'executing': {
        const th = t.thread!
        this.transition(t, 'cancelled')
        this.unproduce(t)
        if (this.inWindow(t)) {
          // only stopping its thread stops a running task (browsers can; Node waits for its end)
          if (this.opts.hardCancel) this.stopThread(th, { cause: 'cancel', culprit: t })
        } else if (t.asking === null) {
          t.asking = 'cancel'
          this.out.push({ type: 'cancel-in-thread', thread: th.id, key, attempt })
        }
        return
      }
      case 'cancelled': return
      default: throw this.bug(t, `cancel of a task in status ${t.status}`)
    }
  }

  private onSteal(key: string, attempt: number): void {
    const t = this.tasks.get(attemptId(key, attempt))
    const refuse = (): void => this.send({ type: 'steal-response', key, attempt, ok: false })
    if (t === undefined) { refuse(); return }
    switch (t.status) {
      case 'waiting': case 'ready': case 'copying':
        this.end(t, 'released', 'stolen')
        this.send({ type: 'steal-response', key, attempt, ok: true })
        return
      case 'executing':
        if (this.inWindow(t)) { refuse(); return }
        if (t.asking !== null) return
        // handed to its thread but not started: the thread says whether it could drop it
        t.asking = 'steal'
        this.out.push({ type: 'cancel-in-thread', thread: t.thread!.id, key, attempt })
        return
      default:
        refuse()
    }
  }

  private onCancelAnswer(thread: number, key: string, attempt: number, dropped: boolean): void {
    const t = this.tasks.get(attemptId(key, attempt))
    if (t === undefined || t.thread?.id !== thread || t.asking === null) return
    const asking = t.asking
    t.asking = null
    if (asking === 'steal') this.send({ type: 'steal-response', key, attempt, ok: dropped })
    if (dropped) this.end(t, 'released', asking === 'steal' ? 'stolen' : 'cancelled')
  }

  private onFree(keys: readonly string[]): void {
    for (const key of keys) {
      const d = this.data.get(key)
      if (d === undefined) continue
      for (const t of d.holders) {
        t.held.delete(key)
        this.freeIn(t, key)
      }
      d.holders.length = 0
      this.unplaced.delete(d)
      d.bytes = null
      d.stored = false
      // a put or copy in flight lands for nothing: put-done frees it
      d.landing = null
      d.copies = null
      this.copying.delete(d)
      if (d.fetch === 'no') { this.data.delete(key); this.digests.delete(key) }
    }
  }

  private onPut(key: string, bytes: Uint8Array): void {
    let d = this.data.get(key)
    if (d !== undefined && d.holders.length !== 0) {
      this.send({ type: 'stored', key, nbytes: d.nbytes })
      return
    }
    d ??= this.newData(key)
    d.stored = true
    if (d.landing !== null || d.bytes !== null) return
    d.bytes = bytes
    this.place(d)
  }

  private onServe(id: number, key: string): void {
    const t = this.data.get(key)?.holders[0]
    if (t === undefined) {
      this.send({ type: 'data-error', id, key, error: { code: 'lost-data', message: `${key} is not held by this worker`, key } })
      return
    }
    this.out.push({ type: 'serve', thread: t.id, id, key })
  }

  private onWelcome(id: string, resumed: boolean): void {
    const before = this.workerId
    this.workerId = id
    this.connected = true
    this.lastBeat = this.lastSent = this.now
    if (resumed) {
      // reports sent while the connection was going down may be lost: send them again (a duplicate is dropped by attempt id)
      for (const r of this.reports.values()) this.send(r)
      for (const d of this.data.values()) if (d.fetch === 'again') { d.fetch = 'flight'; this.out.push({ type: 'fetch-remote', key: d.key }) }
      // a coordinator that restarted knows neither whether we take tasks nor how many: say so
      this.sendStatus(true)
      return
    }
    if (before !== '') this.dropStale()
    // a fresh identity starts out accepting: say so if we are not
    this.sentAccepting = true
    this.sendStatus(false)
  }

  /** A fresh identity after an old one: its tasks, reports and data belong to a worker the coordinator forgot. */
  private dropStale(): void {
    this.reports.clear()
    for (const t of [...this.tasks.values()]) {
      if (t.status === 'executing') {
        this.transition(t, 'cancelled', 'the coordinator forgot this worker')
        this.unproduce(t)
        if (!this.inWindow(t) && t.asking === null) {
          t.asking = 'cancel'
          this.out.push({ type: 'cancel-in-thread', thread: t.thread!.id, key: t.key, attempt: t.attempt })
        }
      } else if (t.status !== 'cancelled') this.end(t, 'released', 'the coordinator forgot this worker')
    }
    this.orphanQ = []
    this.onFree([...this.data.keys()])
    for (const d of this.data.values()) d.fetch = 'no'
    this.data.clear()
    this.digests.clear()
  }

  private onFetched(key: string, bytes: Uint8Array): void {
    const d = this.data.get(key)
    if (d === undefined || d.fetch !== 'flight') return
    d.fetch = 'no'
    if (d.holders.length !== 0 || d.landing !== null || d.bytes !== null) return
    d.bytes = bytes
    // a copy from another worker: once it lands, the scheduler counts this worker as a holder (and frees it with the rest)
    d.stored = true
    this.place(d)
  }

  private onFetchFailed(key: string, error: WireError): void {
    const d = this.data.get(key)
    if (d === undefined || d.fetch !== 'flight') return
    d.fetch = 'no'
    if (d.holders.length !== 0 || d.landing !== null || d.bytes !== null) return
    this.dropIfEmpty(d)
    const ws = this.waiters.get(key)
    if (ws === undefined) return
    for (const t of [...ws]) this.reportMissing(t, [{ key, holder: '' }], `could not fetch ${key}: ${error.message}`)
  }

  private onThreadStarted(id: number): void {
    const t = this.threads.get(id)
    if (t === undefined || t.status !== 'starting') return
    t.status = 'alive'
    for (const d of [...this.unplaced]) this.place(d)
  }

  private onPutDone(thread: number, key: string, nbytes: number): void {
    const t = this.threads.get(thread)
    if (t === undefined) return
    const d = this.data.get(key)
    if (d !== undefined && d.landing === t) {
      d.landing = null
      d.bytes = null
      this.addHolder(key, t, nbytes)
      if (d.stored) {
        d.stored = false
        this.send({ type: 'stored', key, nbytes })
      }
      return
    }
    if (d !== undefined && d.copies?.has(t)) {
      d.copies.delete(t)
      if (d.copies.size === 0) this.copying.delete(d)
      this.addHolder(key, t, nbytes)
      return
    }
    // freed meanwhile: it landed for nothing
    if (!t.held.has(key)) this.freeIn(t, key)
  }

  private onPutFailed(thread: number, key: string, error: string, from: number | undefined): void {
    const t = this.threads.get(thread)
    const d = this.data.get(key)
    if (t === undefined || d === undefined) return
    if (from === undefined) {
      if (d.landing !== t) return
      this.out.push({ type: 'log', line: `could not store ${key} in thread ${t.slot}: ${error}` })
      d.landing = null
      d.bytes = null
      d.stored = false
      this.dropIfEmpty(d)
      this.orphanQ.push(key)
      return
    }
    if (d.copies?.get(t)?.id !== from) return
    d.copies.delete(t)
    if (d.copies.size === 0) this.copying.delete(d)
    // the source could not give it: it does not hold it after all
    const src = this.threads.get(from)
    const lost: string[] = []
    if (src !== undefined && src.held.has(key)) {
      this.out.push({ type: 'log', line: `thread ${src.slot} could not give ${key}: ${error}` })
      this.removeHolder(d, src)
      if (d.holders.length === 0 && d.landing === null && d.bytes === null) lost.push(key)
    }
    if (lost.length !== 0) this.send({ type: 'released', keys: lost })
    this.copiesBroken([[t, key]])
    if (lost.length !== 0) this.inputsLost(new Set(lost))
  }

  /** The task a thread reports on: one of those it was handed, almost always among the first. */
  private reported(thread: number, key: string, attempt: number): TaskState | undefined {
    const th = this.threads.get(thread)
    if (th === undefined) return undefined
    const ts = th.tasks
    for (let i = 0; i < ts.length; i++) {
      const t = ts[i]!
      if (t.attempt === attempt && t.key === key) {
        this.removeFromThread(th, t, i)
        return t
      }
    }
    return undefined
  }

  private onTaskFinished(e: Extract<WorkerEvent, { type: 'task-finished' }>): void {
    const t = this.reported(e.thread, e.key, e.attempt)
    if (t === undefined) return
    const th = t.thread!
    const prev = this.fnMs.get(t.a.fn)
    this.fnMs.set(t.a.fn, prev === undefined ? e.ms : prev + EMA_WEIGHT * (e.ms - prev))
    if (t.status === 'cancelled') {
      // its result is not wanted: drop it, unless this thread held the key before
      if (!th.held.has(t.key)) this.freeIn(th, t.key)
      this.end(t, 'released', 'finished after it was cancelled')
      return
    }
    this.done++
    this.busyMs += e.ms
    const msg: WorkerMessage = { type: 'finished', key: e.key, attempt: e.attempt, nbytes: e.nbytes, ms: e.ms }
    if (e.digest !== undefined) msg.digest = e.digest
    // the report kept for a resend leaves out the value (the coordinator fetches it if it still wants it)
    this.remember(t.id, msg)
    if (e.data === undefined) this.send(msg)
    else {
      const sent: WorkerMessage = { type: 'finished', key: e.key, attempt: e.attempt, nbytes: e.nbytes, ms: e.ms, data: e.data }
      if (e.digest !== undefined) sent.digest = e.digest
      this.send(sent)
    }
    this.end(t, 'memory')
    if (e.digest !== undefined) this.digests.set(e.key, e.digest)
    // dependents waiting for it here become ready now
    this.addHolder(e.key, th, e.nbytes)
  }

  private onTaskErred(e: Extract<WorkerEvent, { type: 'task-erred' }>): void {
    const t = this.reported(e.thread, e.key, e.attempt)
    if (t === undefined) return
    const th = t.thread!
    if (e.missing !== undefined && e.missing.length !== 0) {
      // the thread did not hold inputs we thought it held
      for (const k of e.missing) {
        const d = this.data.get(k)
        if (d !== undefined && th.held.has(k)) { this.removeHolder(d, th); this.dropIfEmpty(d) }
      }
      if (t.status === 'cancelled') { this.end(t, 'released'); return }
      this.reportMissing(t, e.missing.map(key => ({ key, holder: this.workerId })), 'its thread lacked inputs')
      return
    }
    if (t.status === 'cancelled') { this.end(t, 'released', 'erred after it was cancelled'); return }
    const msg: WorkerMessage = { type: 'erred', key: e.key, attempt: e.attempt, error: e.error }
    this.remember(t.id, msg)
    this.send(msg)
    this.end(t, 'erred')
  }

  private onTick(): void {
    const now = this.now
    for (const t of [...this.threads.values()]) {
      if (t.status === 'starting') {
        if (now >= t.startBy) {
          this.out.push({ type: 'log', line: `thread ${t.slot} did not start in ${this.opts.startTimeoutMs} ms; replacing it` })
          this.stopThread(t, { cause: 'start-timeout' })
        }
        continue
      }
      const n = Math.min(this.nthreads, t.tasks.length)
      for (let i = 0; i < n; i++) {
        const task = t.tasks[i]!
        if (task.deadline !== 0 && now >= task.deadline) {
          this.stopThread(t, { cause: 'timeout', culprit: task })
          break
        }
      }
    }
    for (let slot = 0; slot < this.respawnAt.length; slot++) {
      const at = this.respawnAt[slot]!
      if (at !== 0 && now >= at) {
        this.respawnAt[slot] = 0
        if (this.pool[slot] === null) this.spawn(slot)
      }
    }
    if (this.connected && now >= this.beatAt()) {
      this.lastBeat = now
      let memory = 0, spilled = 0
      for (const t of this.threads.values()) { memory += t.inMemory; spilled += t.spilled }
      this.send({ type: 'heartbeat', memory, spilled })
      // fresh figures for the next beat
      for (const t of this.threads.values()) if (t.status === 'alive') this.out.push({ type: 'query-memory', thread: t.id })
    }
  }

  private onResize(nprocs: number): void {
    if (!Number.isInteger(nprocs) || nprocs < 1) throw new RangeError(`the pool size must be a whole number ≥ 1 (got ${nprocs})`)
    if (nprocs === this.pool.length) return
    while (this.pool.length < nprocs) this.spawn(this.pool.length)
    while (this.pool.length > nprocs) {
      const slot = this.pool.length - 1
      const t = this.pool[slot]
      if (t !== null && t !== undefined) this.stopThread(t, { cause: 'resize' })
      this.pool.pop()
      this.respawnAt.length = Math.min(this.respawnAt.length, this.pool.length)
    }
    this.sendStatus(true)
  }

  private onClose(): void {
    for (const t of [...this.threads.values()]) this.stopThread(t, { cause: 'close' })
    this.closed = true
    this.respawnAt = []
  }

  // ───────────────────────────── threads ─────────────────────────────

  private spawn(slot: number): void {
    const t: ThreadState = {
      id: ++this.threadSeq, slot, status: 'starting', tasks: [], copying: new Set(), held: new Set(), fns: new Set(), modules: new Set(), forget: null,
      memPaused: false, inMemory: 0, spilled: 0, startBy: this.now + this.opts.startTimeoutMs,
    }
    this.pool[slot] = t
    this.threads.set(t.id, t)
    this.out.push({ type: 'spawn-thread', thread: t.id, slot })
  }

  private stopThread(t: ThreadState, death: { cause: StopReason; culprit?: TaskState }): void {
    if (t.status === 'dead') return
    this.out.push({ type: 'stop-thread', thread: t.id, why: death.cause })
    this.threadGone(t, death)
  }

  /**
   * A thread is gone, asked or not. A crash fails the tasks it was running; a stopped
   * thread fails only its culprit (a time limit) or none; every other task goes back to
   * the ready queue. Data only it held is reported released, and tasks that needed it here
   * report it missing.
   */
  private threadGone(t: ThreadState, death: Death): void {
    t.status = 'dead'
    this.threads.delete(t.id)
    if (this.pool[t.slot] === t) this.pool[t.slot] = null
    this.runs.delete(t)
    this.frees.delete(t)

    // its data
    const lost: string[] = []
    const broken: [ThreadState, string][] = []
    for (const key of t.held) {
      const d = this.data.get(key)
      if (d === undefined) continue
      this.removeHolder(d, t, false)
      if (d.holders.length === 0 && d.landing === null && d.bytes === null) lost.push(key)
    }
    t.held.clear()
    for (const d of [...this.copying]) {
      const copies = d.copies!
      for (const [to, from] of copies) {
        if (to === t) copies.delete(to)
        else if (from === t) { copies.delete(to); broken.push([to, d.key]) }
      }
      if (copies.size === 0) this.copying.delete(d)
    }
    for (const d of this.data.values()) if (d.landing === t) {
      // put again elsewhere (the bytes were copied into the thread, not moved)
      d.landing = null
      if (d.bytes !== null) this.unplaced.add(d)
    }

    // its tasks
    const requeue: TaskState[] = []
    const tasks = t.tasks
    t.tasks = []
    tasks.forEach((task, i) => {
      task.thread = null
      if (task.status === 'cancelled') { this.end(task, 'released', 'its thread stopped'); return }
      if (task.asking === 'steal') {
        // it never started: give it up as asked
        task.asking = null
        this.send({ type: 'steal-response', key: task.key, attempt: task.attempt, ok: true })
        this.end(task, 'released', 'stolen')
        return
      }
      task.asking = null
      const running = i < this.nthreads
      if (death.cause === 'crash' && running) {
        const msg: WorkerMessage = { type: 'erred', key: task.key, attempt: task.attempt, crashed: true, error: { code: 'task-error', message: `the thread running ${task.key} died: ${death.reason}`, key: task.key } }
        this.remember(task.id, msg)
        this.send(msg)
        this.end(task, 'erred', `its thread died: ${death.reason}`)
      } else if (death.cause === 'timeout' && 'culprit' in death && death.culprit === task) {
        const msg: WorkerMessage = { type: 'erred', key: task.key, attempt: task.attempt, error: { code: 'task-error', name: 'TimeoutError', message: `${task.key} ran past its time limit of ${task.a.timeout} ms; its thread was stopped`, key: task.key } }
        this.remember(task.id, msg)
        this.send(msg)
        this.end(task, 'erred', 'time limit')
      } else requeue.push(task)
    })
    for (const task of t.copying) { task.thread = null; requeue.push(task) }
    t.copying.clear()
    if (lost.length !== 0) this.send({ type: 'released', keys: lost })
    const lostSet = new Set(lost)
    for (const task of requeue) {
      task.deadline = 0
      task.need = null
      const gone = task.a.deps.filter(d => !this.isHeld(d.key))
      if (gone.length !== 0) this.reportMissing(task, gone.map(d => ({ key: d.key, holder: this.workerId })), 'an input was lost with its thread')
      else {
        this.transition(task, 'ready', 'its thread stopped')
        this.ready.push(task)
      }
    }
    this.copiesBroken(broken)
    if (lostSet.size !== 0) this.inputsLost(lostSet)
    for (const d of [...this.data.values()]) this.dropIfEmpty(d)
    for (const d of [...this.unplaced]) this.place(d)

    if (this.closed || death.cause === 'close') return
    this.sendStatus(false)
    if (death.cause === 'resize') return
    if (death.cause === 'crash' || death.cause === 'start-timeout') {
      if (death.cause === 'crash') this.out.push({ type: 'log', line: `thread ${t.slot} died: ${death.reason}` })
      const now = this.now
      this.deaths = this.deaths.filter(d => now - d < RESPAWN_WINDOW_MS)
      this.deaths.push(now)
      if (this.deaths.length > 3 * this.pool.length + 3) {
        // no respawn loop: wait before the next one
        this.out.push({ type: 'log', line: `threads keep dying; thread ${t.slot} is replaced in ${RESPAWN_PAUSE_MS} ms` })
        this.respawnAt[t.slot] = now + RESPAWN_PAUSE_MS
        return
      }
    }
    if (t.slot < this.pool.length && this.pool[t.slot] === null) this.spawn(t.slot)
  }

  /** Copies into `to` whose source went away: copy from another holder, or the tasks waiting for them report the input missing. */
  private copiesBroken(broken: readonly [ThreadState, string][]): void {
    for (const [to, key] of broken) {
      if (to.status !== 'alive') continue
      const d = this.data.get(key)
      const src = d?.holders.find(h => h !== to)
      if (d !== undefined && src !== undefined) {
        ;(d.copies ??= new Map()).set(to, src)
        this.copying.add(d)
        this.out.push({ type: 'copy-from-thread', key, from: src.id, to: to.id })
        continue
      }
      if (d !== undefined && (d.landing === to || to.held.has(key))) continue
      for (const task of [...to.copying]) if (task.need?.has(key)) this.reportMissing(task, [{ key, holder: this.workerId }], `${key} was lost before it reached its thread`)
    }
  }

  /** Inputs held here no more: ready tasks that needed them report them missing. */
  private inputsLost(lost: ReadonlySet<string>): void {
    const hit: TaskState[] = []
    for (const t of this.ready.values()) if (t.a.deps.some(d => lost.has(d.key) && !this.isHeld(d.key))) hit.push(t)
    for (const t of hit) this.reportMissing(t, t.a.deps.filter(d => !this.isHeld(d.key)).map(d => ({ key: d.key, holder: this.workerId })), 'an input was lost')
  }

  // ───────────────────────────── running ─────────────────────────────

  /** Hands ready tasks to threads, highest priority first, while a thread has room for the next one. */
  private ensureComputing(): void {
    while (this.ready.size !== 0) {
      const t = this.ready.peek()!
      const th = this.pickThread(t)
      if (th === undefined) return
      this.ready.remove(t)
      this.bind(t, th)
    }
  }

  /** How many tasks of this one's function a thread may be handed beyond those it runs: a few ms of work, for functions known to be short. */
  private lookahead(t: TaskState): number {
    const ms = this.fnMs.get(t.a.fn)
    if (ms === undefined || this.opts.maxLookahead === 0) return 0
    return Math.min(this.opts.maxLookahead, Math.floor(this.opts.lookaheadMs / Math.max(ms, 1e-3)))
  }

  /** The alive thread with room holding most of the task's input bytes; ties: the least loaded. */
  private pickThread(t: TaskState): ThreadState | undefined {
    const cap = this.nthreads + this.lookahead(t)
    const deps = t.a.deps
    let best: ThreadState | undefined
    let bestBytes = -1
    let bestLoad = Infinity
    for (const th of this.pool) {
      if (th === null || th.status !== 'alive') continue
      const load = th.tasks.length + th.copying.size
      if (load >= cap) continue
      let bytes = 0
      for (let i = 0; i < deps.length; i++) {
        const k = deps[i]!.key
        if (th.held.has(k)) bytes += (this.data.get(k)?.nbytes ?? 0) + 1
      }
      if (bytes > bestBytes || (bytes === bestBytes && load < bestLoad)) { best = th; bestBytes = bytes; bestLoad = load }
    }
    return best
  }

  private bind(t: TaskState, th: ThreadState): void {
    t.thread = th
    let need: Set<string> | null = null
    for (const d of t.a.deps) if (!th.held.has(d.key)) (need ??= new Set()).add(d.key)
    if (need === null) { this.execute(t, th); return }
    t.need = need
    this.transition(t, 'copying', `to thread ${th.slot}`)
    th.copying.add(t)
    for (const key of need) {
      const d = this.data.get(key)!
      if (d.landing === th || d.copies?.has(th)) continue
      const src = d.holders.find(h => h !== th)!
      ;(d.copies ??= new Map()).set(th, src)
      this.copying.add(d)
      this.out.push({ type: 'copy-from-thread', key, from: src.id, to: th.id })
    }
  }

  /** Sources the coordinator no longer counts as sent here go, here and in the threads (with their next batch). */
  private onFreeFunctions(hashes: readonly string[]): void {
    const drop = new Set(hashes)
    for (const t of this.tasks.values()) drop.delete(t.a.fn)
    for (const h of drop) {
      if (!this.functions.delete(h)) continue
      for (const th of this.threads.values()) if (th.fns.delete(h)) (th.forget ??= { fns: [], modules: [] }).fns.push(h)
    }
  }

  private onFreeModules(ns: string): void {
    const prefix = `${ns}/`
    for (const name of [...this.modules.keys()]) {
      if (!name.startsWith(prefix)) continue
      this.modules.delete(name)
      for (const th of this.threads.values()) if (th.modules.delete(name)) (th.forget ??= { fns: [], modules: [] }).modules.push(name)
    }
  }

  private execute(t: TaskState, th: ThreadState): void {
    this.transition(t, 'executing', `on thread ${th.slot}`)
    t.need = null
    t.thread = th
    const i = th.tasks.push(t) - 1
    if (i < this.nthreads && t.a.timeout !== undefined) t.deadline = this.now + t.a.timeout
    let batch = this.runs.get(th)
    if (batch === undefined) this.runs.set(th, batch = { tasks: [] })
    if (th.forget !== null) {
      if (th.forget.fns.length) (batch.forgetFns ??= []).push(...th.forget.fns)
      if (th.forget.modules.length) (batch.forgetModules ??= []).push(...th.forget.modules)
      th.forget = null
    }
    const a = t.a
    if (!th.fns.has(a.fn)) {
      const source = this.functions.get(a.fn)
      if (source !== undefined) {
        th.fns.add(a.fn)
        ;(batch.fns ??= []).push([a.fn, source])
      }
    }
    if (this.modules.size !== 0) {
      for (const [name, source] of this.modules) if (!th.modules.has(name)) {
        th.modules.add(name)
        ;(batch.modules ??= []).push([name, source])
      }
    }
    const deps: string[] = new Array(a.deps.length)
    for (let j = 0; j < a.deps.length; j++) deps[j] = a.deps[j]!.key
    const task: ExecTask = { key: a.key, attempt: a.attempt, fn: a.fn, args: a.args, deps, push: a.push, digest: a.digest ?? false }
    if (a.timeout !== undefined) task.timeout = a.timeout
    if (a.ns !== undefined) task.ns = a.ns
    batch.tasks.push(task)
    if (this.nthreads === 1) {
      const ws = this.waiters.get(t.key)
      if (ws !== undefined) for (const w of ws) this.behindQ.push(w)
    }
  }

  /**
   * A thread that runs one task at a time runs them in the order it got them, so a task
   * waiting only for inputs that thread is computing may queue there right behind them:
   * it starts the moment they end, inside the thread, with no trip through the main side.
   * (Within the thread's lookahead, so a high-priority task is held back a few ms at most.)
   */
  private queueBehind(): void {
    while (this.behindQ.length !== 0) {
      const w = this.behindQ.pop()!
      if (w.status !== 'waiting' || w.need === null) continue
      let th: ThreadState | null = null
      let ok = true
      for (const k of w.need) {
        const p = this.runningProducer(k)
        if (p === null || (th !== null && p.thread !== th)) { ok = false; break }
        th = p.thread
      }
      if (!ok || th === null || th.status !== 'alive') continue
      if (th.tasks.length + th.copying.size >= this.nthreads + this.lookahead(w)) continue
      for (const d of w.a.deps) if (!w.need.has(d.key) && !th.held.has(d.key)) { ok = false; break }
      if (!ok) continue
      for (const k of w.need) {
        const ws = this.waiters.get(k)
        if (ws !== undefined && ws.delete(w) && ws.size === 0) this.waiters.delete(k)
      }
      this.execute(w, th)
    }
  }

  /** A task computing `key` that its thread has (not cancelled), if any. */
  private runningProducer(key: string): TaskState | null {
    const ps = this.producers.get(key)
    if (ps === undefined) return null
    if (!(ps instanceof Set)) return ps.status === 'executing' ? ps : null
    for (const p of ps) if (p.status === 'executing') return p
    return null
  }

  /** Takes a task off its thread; the next ones move into the running window (their time limits start). */
  private removeFromThread(th: ThreadState, t: TaskState, at = -1): void {
    const i = at >= 0 ? at : th.tasks.indexOf(t)
    if (i < 0) return
    th.tasks.splice(i, 1)
    if (i >= this.nthreads) return
    const n = Math.min(this.nthreads, th.tasks.length)
    for (let j = i; j < n; j++) {
      const x = th.tasks[j]!
      if (x.deadline === 0 && x.a.timeout !== undefined && x.status === 'executing') x.deadline = this.now + x.a.timeout
    }
  }

  private inWindow(t: TaskState): boolean {
    const th = t.thread
    if (th === null) return false
    const i = th.tasks.indexOf(t)
    return i >= 0 && i < this.nthreads
  }

  // ───────────────────────────── data ─────────────────────────────

  private newData(key: string): DataState {
    const d: DataState = { key, nbytes: 0, holders: [], fetch: 'no', bytes: null, landing: null, copies: null, stored: false }
    this.data.set(key, d)
    return d
  }

  private isHeld(key: string): boolean {
    const d = this.data.get(key)
    return d !== undefined && d.holders.length !== 0
  }

  private producing(key: string): boolean { return this.producers.has(key) }

  private fetchRemote(key: string): void {
    const d = this.data.get(key) ?? this.newData(key)
    if (this.connected) {
      d.fetch = 'flight'
      this.out.push({ type: 'fetch-remote', key })
    } else d.fetch = 'again'
  }

  /** Puts arrived bytes into the least loaded alive thread, or keeps them until one starts. */
  private place(d: DataState): void {
    let best: ThreadState | undefined
    let load = Infinity
    for (const t of this.pool) {
      if (t === null || t.status !== 'alive') continue
      const l = t.tasks.length + t.copying.size
      if (l < load) { best = t; load = l }
    }
    if (best === undefined) { this.unplaced.add(d); return }
    this.unplaced.delete(d)
    d.landing = best
    this.out.push({ type: 'put-into-thread', thread: best.id, key: d.key, data: d.bytes! })
  }

  /** Thread `t` holds `key` now: tasks waiting for it become ready, tasks copying it to `t` may run. */
  private addHolder(key: string, t: ThreadState, nbytes: number): void {
    const d = this.data.get(key) ?? this.newData(key)
    d.nbytes = nbytes
    if (!t.held.has(key)) {
      t.held.add(key)
      d.holders.push(t)
    }
    const ws = this.waiters.get(key)
    if (ws !== undefined) {
      this.waiters.delete(key)
      for (const w of ws) {
        w.need!.delete(key)
        if (w.need!.size === 0) {
          w.need = null
          this.makeReady(w)
        }
      }
    }
    if (t.copying.size !== 0) {
      for (const w of t.copying) if (w.need !== null && w.need.delete(key) && w.need.size === 0) {
        t.copying.delete(w)
        this.execute(w, t)
      }
    }
  }

  private removeHolder(d: DataState, t: ThreadState, fromThread = true): void {
    const i = d.holders.indexOf(t)
    if (i >= 0) d.holders.splice(i, 1)
    if (fromThread) t.held.delete(d.key)
  }

  private dropIfEmpty(d: DataState): void {
    if (d.holders.length === 0 && d.landing === null && d.bytes === null && d.fetch === 'no' && (d.copies === null || d.copies.size === 0) && !d.stored) { this.data.delete(d.key); this.digests.delete(d.key) }
  }

  private freeIn(t: ThreadState, key: string): void {
    if (t.status === 'dead') return
    let l = this.frees.get(t)
    if (l === undefined) this.frees.set(t, l = [])
    l.push(key)
  }

  // ───────────────────────────── task bookkeeping ─────────────────────────────

  private makeReady(t: TaskState): void {
    this.transition(t, 'ready')
    this.ready.push(t)
  }

  /** The task computes its key here no more (cancelled, or ended): dependents waiting for that key may be orphans. */
  private unproduce(t: TaskState): void {
    const ps = this.producers.get(t.key)
    if (ps === t) this.producers.delete(t.key)
    else if (ps instanceof Set && ps.delete(t)) this.producers.set(t.key, ps.values().next().value!)
    else return
    if (this.waiters.has(t.key)) this.orphanQ.push(t.key)
  }

  /** Dependents sent ahead whose input will not be computed here after all report it missing (the coordinator reschedules them). */
  private drainOrphans(): void {
    while (this.orphanQ.length !== 0) {
      const key = this.orphanQ.pop()!
      const ws = this.waiters.get(key)
      if (ws === undefined || this.producing(key) || this.isHeld(key)) continue
      const d = this.data.get(key)
      if (d !== undefined && (d.fetch !== 'no' || d.landing !== null || d.bytes !== null)) continue
      for (const w of [...ws]) this.reportMissing(w, [{ key, holder: this.workerId }], `${key} will not be computed here`)
    }
  }

  private reportMissing(t: TaskState, missing: { key: string; holder: string }[], note: string): void {
    this.send({ type: 'missing', key: t.key, attempt: t.attempt, missing })
    this.end(t, 'missing', note)
  }

  /** Forgets a task in a final status. */
  private end(t: TaskState, to: 'memory' | 'erred' | 'missing' | 'released', note?: string): void {
    const from = t.status
    this.transition(t, to, note)
    this.tasks.delete(t.id)
    if (t.heapIndex >= 0) this.ready.remove(t)
    if (from === 'waiting' && t.need !== null) {
      for (const k of t.need) {
        const ws = this.waiters.get(k)
        if (ws !== undefined && ws.delete(t) && ws.size === 0) this.waiters.delete(k)
      }
    }
    const th = t.thread
    if (th !== null) {
      if (from === 'copying') th.copying.delete(t)
      else this.removeFromThread(th, t)
    }
    t.need = null
    t.thread = null
    this.unproduce(t)
  }

  private transition(t: TaskState, to: TaskStatus, note?: string): void {
    const from = t.status
    if (!NEXT[from].includes(to)) throw this.bug(t, `impossible transition ${from} → ${to}`)
    t.status = to
    this.record(t, from, to, note)
  }

  private record(t: TaskState, from: TaskStatus | 'new', to: TaskStatus, note?: string): void {
    const max = this.opts.logLength
    if (max === 0) return
    let j = this.logId.length
    if (j >= max) {
      j = this.logHead
      this.logHead = (j + 1) % max
    }
    // ids and keys, not the task: the log must not keep arguments alive
    this.logId[j] = t.id
    this.logKey[j] = t.key
    this.logFrom[j] = from
    this.logTo[j] = to
    this.logStimulus[j] = this.stimulus
    this.logNow[j] = this.now
    this.logNote[j] = note
    this.logAttempt[j] = t.attempt
    this.logThread[j] = t.thread?.slot ?? -1
  }

  private bug(t: TaskState, what: string): Error {
    const story = this.story(t.key).map(e => `  ${e.id}: ${e.from} → ${e.to} (${e.stimulus}${e.note ? `: ${e.note}` : ''}) at ${e.now}`).join('\n')
    return new Error(`worker state: ${what} for ${t.id}\nstory of ${t.key}:\n${story}`)
  }

  private remember(id: string, msg: WorkerMessage): void {
    this.reports.set(id, msg)
    if (this.reports.size > this.opts.reportsKept) {
      let n = this.opts.reportsKept >> 1
      for (const k of this.reports.keys()) { this.reports.delete(k); if (--n === 0) break }
    }
  }

  private send(msg: WorkerMessage): void {
    this.lastSent = this.now
    this.out.push({ type: 'send', msg })
  }

  /**
   * When the next heartbeat is due: holding tasks, heartbeatMs after it last sent anything
   * (or was given its first task); in any case idleHeartbeatMs after the last heartbeat.
   */
  private beatAt(): number {
    const idle = this.lastBeat + this.opts.idleHeartbeatMs
    if (this.tasks.size === 0) return idle
    return Math.min(idle, Math.max(this.lastSent, this.busySince) + this.opts.heartbeatMs)
  }

  /** Tells the coordinator whether to send tasks (paused by the volunteer, or a thread past its memory high-water mark). */
  private sendStatus(slotsChanged: boolean): void {
    let accepting = this.accepting
    let memory = 0, spilled = 0
    for (const t of this.threads.values()) {
      if (t.memPaused && t.status === 'alive') accepting = false
      memory += t.inMemory
      spilled += t.spilled
    }
    if (accepting === this.sentAccepting && !slotsChanged) return
    this.sentAccepting = accepting
    const msg: WorkerMessage = { type: 'status', accepting, memory, spilled }
    if (slotsChanged) msg.slots = this.slots
    this.send(msg)
  }

  // ───────────────────────────── end of an event ─────────────────────────────

  private finish(): Instruction[] {
    // once per call, so that of a frame of assignments the highest priority runs first
    this.drainOrphans()
    if (!this.closed) {
      this.ensureComputing()
      this.queueBehind()
    } else this.behindQ = []
    for (const [t, batch] of this.runs) this.out.push({ type: 'run', thread: t.id, batch })
    if (this.runs.size !== 0) this.runs = new Map()
    for (const [t, keys] of this.frees) this.out.push({ type: 'free-in-thread', thread: t.id, keys })
    if (this.frees.size !== 0) this.frees = new Map()
    const wake = this.closed ? null : this.nextWake()
    if (wake !== this.lastWake) {
      this.lastWake = wake
      this.out.push({ type: 'wake-at', at: wake })
    }
    if (this.opts.validate) this.validate()
    const out = this.out
    this.out = []
    return out
  }

  /** The earliest time a tick has something to do. */
  private nextWake(): number | null {
    let at = this.connected ? this.beatAt() : Infinity
    for (const t of this.threads.values()) {
      if (t.status === 'starting') { if (t.startBy < at) at = t.startBy; continue }
      const n = Math.min(this.nthreads, t.tasks.length)
      for (let i = 0; i < n; i++) {
        const d = t.tasks[i]!.deadline
        if (d !== 0 && d < at) at = d
      }
    }
    for (const r of this.respawnAt) if (r !== 0 && r < at) at = r
    return at === Infinity ? null : at
  }

  /** Checks every invariant; throws with the story of the task that breaks one. */
  validate(): void {
    const fail = (what: string, t?: TaskState): never => {
      if (t !== undefined) throw this.bug(t, what)
      throw new Error(`worker state: ${what}`)
    }
    const heap = this.ready.values()
    for (let i = 0; i < heap.length; i++) {
      const t = heap[i]!
      if (t.heapIndex !== i) fail(`ready queue index ${t.heapIndex} ≠ ${i}`, t)
      if (t.status !== 'ready') fail(`in the ready queue with status ${t.status}`, t)
      if (i > 0) {
        const p = heap[(i - 1) >> 1]!
        if (p.priority < t.priority || (p.priority === t.priority && p.seq > t.seq)) fail('ready queue out of order', t)
      }
    }
    for (const t of this.tasks.values()) {
      if (t.id !== attemptId(t.key, t.attempt)) fail('id', t)
      const ps = this.producers.get(t.key)
      const producing = t.status !== 'cancelled'
      if ((ps === t || (ps instanceof Set && ps.has(t))) !== producing) fail(`producer set ${producing ? 'lacks' : 'has'} it`, t)
      switch (t.status) {
        case 'waiting':
          if (t.need === null || t.need.size === 0) fail('waiting for nothing', t)
          for (const k of t.need!) {
            if (!this.waiters.get(k)?.has(t)) fail(`not among the waiters of ${k}`, t)
            if (this.isHeld(k)) fail(`waits for ${k}, which is held`, t)
          }
          if (t.thread !== null || t.heapIndex >= 0) fail('waiting, yet bound or queued', t)
          break
        case 'ready':
          if (t.heapIndex < 0 || this.ready.values()[t.heapIndex] !== t) fail('ready, not in the ready queue', t)
          if (t.thread !== null || t.need !== null) fail('ready, yet bound or needing', t)
          for (const d of t.a.deps) if (!this.isHeld(d.key)) fail(`ready without ${d.key}`, t)
          break
        case 'copying': {
          const th = t.thread
          if (th === null || th.status !== 'alive' || !th.copying.has(t)) fail('copying, not bound to an alive thread', t)
          if (t.need === null || t.need.size === 0) fail('copying nothing', t)
          for (const k of t.need!) {
            const d = this.data.get(k)
            if (th!.held.has(k)) fail(`copying ${k}, which its thread holds`, t)
            if (d === undefined || (d.landing !== th && !d.copies?.has(th!))) fail(`copying ${k} with no copy in flight`, t)
          }
          break
        }
        case 'executing': case 'cancelled': {
          const th = t.thread
          if (th === null || th.status !== 'alive') fail(`${t.status} on no alive thread`, t)
          if (th!.tasks.filter(x => x === t).length !== 1) fail(`${t.status}, not once in its thread's list`, t)
          break
        }
        default:
          fail(`a forgotten status ${t.status} is still kept`, t)
      }
    }
    for (const [k, ps] of this.producers) {
      if (ps instanceof Set && ps.size < 2) fail(`a producer set of ${ps.size} for ${k}`)
      for (const t of ps instanceof Set ? ps : [ps]) if (this.tasks.get(t.id) !== t || t.key !== k) fail(`stale producer of ${k}`, t)
    }
    for (const [k, ws] of this.waiters) {
      if (ws.size === 0) fail(`empty waiter set for ${k}`)
      for (const t of ws) if (t.status !== 'waiting' || !t.need?.has(k)) fail(`stale waiter of ${k}`, t)
    }
    for (const t of this.threads.values()) {
      if (t.status === 'dead') fail(`dead thread ${t.id} kept`)
      if (this.pool[t.slot] !== t) fail(`thread ${t.id} not in its slot ${t.slot}`)
      for (const x of t.tasks) if (x.thread !== t || (x.status !== 'executing' && x.status !== 'cancelled')) fail(`thread ${t.id} lists it`, x)
      for (const x of t.copying) if (x.thread !== t || x.status !== 'copying') fail(`thread ${t.id} copies for it`, x)
      for (const k of t.held) if (!this.data.get(k)?.holders.includes(t)) fail(`thread ${t.id} holds ${k}, unrecorded`)
      if (t.status === 'starting' && (t.tasks.length !== 0 || t.copying.size !== 0 || t.held.size !== 0)) fail(`starting thread ${t.id} has work`)
    }
    for (const d of this.data.values()) {
      for (const h of d.holders) if (h.status !== 'alive' || !h.held.has(d.key)) fail(`${d.key} holder ${h.id} stale`)
      if (new Set(d.holders).size !== d.holders.length) fail(`${d.key} holders repeat`)
      if (d.landing !== null && (d.landing.status !== 'alive' || d.bytes === null)) fail(`${d.key} lands in a dead thread or without bytes`)
      if (this.unplaced.has(d) !== (d.bytes !== null && d.landing === null)) fail(`${d.key} unplaced set stale`)
      for (const [to, from] of d.copies ?? []) if (to.status !== 'alive' || from.status !== 'alive') fail(`${d.key} copy between dead threads`)
      if (this.copying.has(d) !== (d.copies !== null && d.copies.size !== 0)) fail(`${d.key} copying set stale`)
    }
  }
}
