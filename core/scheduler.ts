/**
 * The scheduler: a pure state machine in the image of Dask.distributed's.
 *
 * `handle(event)` is the only mutator; it returns the commands to send instead of
 * sending them. No sockets, no timers, no clock (time arrives as `event.now`), no
 * Node or DOM APIs: the same file runs in the coordinator and in a browser bundle.
 *
 * Task states follow Dask's: waiting → queued → processing → memory / erred, with
 * released (data freed, spec kept for lineage) and forgotten (gone). Every status
 * change goes through `transition()`, which looks the pair up in a table of named
 * functions, appends to the task's bounded story, and throws with that story on an
 * impossible pair. In validate mode every invariant is checked after each event.
 *
 * The class holds the records and the transitions; each other concept has a file of its
 * own, of functions over these records: placement (scheduler-placement.ts), dependents
 * sent ahead (-ahead), work stealing (-stealing), redundancy (-redundancy), copies of data
 * (-replicas), stories (-story) and validate mode (-validate). Only `handle`, `handleMany`
 * and the queries are for callers; the other members are public for those files alone.
 *
 * @example
 * const s = new Scheduler({ validate: true })
 * s.handle({ type: 'worker-added', worker: 'w1', name: 'tab-1', kind: 'browser', slots: 2 })
 * s.handle({ type: 'submit', client: 'c1', tasks: [{ key: 'inc-1', fn: 'h', deps: [], group: 'inc', priority: 0, retries: 0, redundancy: 1, workers: [], nbytes: 8 }] })
 * // → [{ type: 'assign', worker: 'w1', task: { key: 'inc-1', attempt: 1, ... } }]
 * s.handle({ type: 'task-finished', worker: 'w1', key: 'inc-1', attempt: 1, nbytes: 8, ms: 1 })
 * // → [{ type: 'key-state', clients: ['c1'], key: 'inc-1', state: 'memory', nbytes: 8 }]
 */
import { FIRE_AND_FORGET, type AssignedTask, type Command, type EventMeta, type GroupCounts, type SchedulerEvent, type SchedulerOptions, type RestoredTask, type StoryEntry, type TaskSpec, type TaskStatus, type WorkerInfo } from './scheduler-types.js'
import type { WireError } from '../shared/errors.js'
import { ClientState, NO_TASKS, Redundancy, TaskState, WorkerState, WORKER_TRANSITIONS, isLeaving, addWanter, hasWanter, isActive, removeWanter, wanterList, EMA_WEIGHT, CAPACITY_HYSTERESIS, MIN_AVG_MS, NO_INFO, NO_KEYS, int, type Attempt, type Entry, type Status, type ResolvedOptions, type Info, type Move, type WorkerStatus } from './scheduler-state.js'
import { TaskQueue, runsBefore } from './scheduler-queue.js'
import { clearAhead, recallAhead } from './scheduler-ahead.js'
import { assigned, dispatch } from './scheduler-placement.js'
import { dropResults, syncRedundant } from './scheduler-redundancy.js'
import { dropMoves, handoff, handoffIfSole, removeMove, replicate, replicateAll } from './scheduler-replicas.js'
import { broken, record, storyOf } from './scheduler-story.js'
import { validate } from './scheduler-validate.js'
import { Deadlines, narrow, widen } from './trust.js'
import { checkTrust } from './scheduler-trust.js'
import { endSpot, mulberry32, reverify, spotCheck, verified } from './scheduler-verify.js'

type TransitionFn = (this: Scheduler, t: TaskState, to: TaskStatus, info: Info) => void

function resolveOptions(o: SchedulerOptions): ResolvedOptions {
  const positive = (name: keyof SchedulerOptions, v: number | undefined, dflt: number, integer: boolean, min: number): number => {
    if (v === undefined) return dflt
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) {
      throw new RangeError(`SchedulerOptions.${name} must be ${integer ? 'an integer' : 'a number'} ≥ ${min}, got ${String(v)}`)
    }
    return v
  }
  return {
    validate: o.validate === true,
    storyLength: positive('storyLength', o.storyLength, 32, true, 0),
    bandwidth: positive('bandwidth', o.bandwidth, 100_000, false, Number.MIN_VALUE),
    pipelineMs: positive('pipelineMs', o.pipelineMs, 5, false, 0),
    stealLatencyMs: positive('stealLatencyMs', o.stealLatencyMs, positive('pipelineMs', o.pipelineMs, 5, false, 0), false, 0),
    maxAhead: positive('maxAhead', o.maxAhead, 1000, true, 0),
    allowedFailures: positive('allowedFailures', o.allowedFailures, 3, true, 1),
    leaseMs: positive('leaseMs', o.leaseMs, 15_000, false, 1),
    sendAhead: o.sendAhead !== false,
    initialWindow: o.initialWindow === undefined || o.initialWindow === Infinity ? Infinity : positive('initialWindow', o.initialWindow, Infinity, true, 1),
    deadlines: o.deadlines === undefined ? null : {
      factor: o.deadlines.factor ?? 10,
      minMs: o.deadlines.minMs ?? positive('leaseMs', o.leaseMs, 15_000, false, 1),
      slackMs: o.deadlines.slackMs ?? 5_000,
    },
    stealTimeoutMs: o.stealTimeoutMs === undefined || o.stealTimeoutMs === Infinity ? Infinity : positive('stealTimeoutMs', o.stealTimeoutMs, Infinity, false, 0),
    redundancyWaitMs: o.redundancyWaitMs === undefined || o.redundancyWaitMs === Infinity ? Infinity : positive('redundancyWaitMs', o.redundancyWaitMs, Infinity, false, 0),
    spotCheck: o.spotCheck === undefined ? null : (() => {
      const sc = o.spotCheck
      const frac = (name: string, v: number | undefined, dflt: number): number => {
        if (v === undefined) return dflt
        if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new RangeError(`SchedulerOptions.spotCheck.${name} must be a number from 0 to 1, got ${String(v)}`)
        return v
      }
      const halfLife = sc.halfLife ?? 10
      if (typeof halfLife !== 'number' || !(halfLife > 0) || !Number.isFinite(halfLife)) throw new RangeError(`SchedulerOptions.spotCheck.halfLife must be a positive number, got ${String(halfLife)}`)
      return { rate: frac('rate', sc.rate, 0.5), halfLife, floor: frac('floor', sc.floor, 0.02), seed: typeof sc.seed === 'number' && Number.isFinite(sc.seed) ? sc.seed : 1 }
    })(),
  }
}

/** A run time a worker reported that can be averaged (a number of ms, finite, not negative). */
const validMs = (ms: unknown): ms is number => typeof ms === 'number' && ms >= 0 && Number.isFinite(ms)
/** The moving average after one more run time (EMA_WEIGHT, never under MIN_AVG_MS). */
const movingAverage = (avg: number, ms: number): number => Math.max(MIN_AVG_MS, avg + EMA_WEIGHT * (ms - avg))

export class Scheduler {
  readonly opts: ResolvedOptions
  readonly tasks = new Map<string, TaskState>()
  readonly byId = new Map<string, WorkerState>()
  readonly byName = new Map<string, WorkerState[]>()
  readonly clients = new Map<string, ClientState>()
  /** ready tasks any worker may run */
  readonly mainQ = new TaskQueue<TaskState>(runsBefore)
  /** ready tasks with restrictions, and redundant tasks that still need runs */
  readonly constrainedQ = new TaskQueue<TaskState>(runsBefore)
  /** scattered values waiting for a worker to put them on */
  readonly scatterQ = new Set<TaskState>()
  /** Σ cap − attempts over the free list (each worker's share in its `room`, kept by touch) */
  freeRoom = 0
  /** open workers below capacity */
  readonly free: WorkerState[] = []
  /** workers with task attempts, by the deadline their lease was last checked against (the earliest first) */
  readonly leases = new TaskQueue<WorkerState>((a, b) => a.leaseAt < b.leaseAt || (a.leaseAt === b.leaseAt && a.seq < b.seq))
  /** open workers with a free slot (thieves) */
  readonly idle = new Set<WorkerState>()
  /** workers with more unstolen tasks than slots (victims) */
  readonly saturated = new Set<WorkerState>()
  readonly retiringWorkers = new Set<WorkerState>()
  readonly moves = new Map<TaskState, Move[]>()
  readonly underReplicated = new Set<TaskState>()
  /** workers with tasks that could be sent ahead to them once they have capacity (see sendAheadFrom) */
  readonly aheadLater = new Map<WorkerState, Set<TaskState>>()
  /** tasks whose wanters or dependents changed: reconsidered at the end of the event */
  readonly todo: TaskState[] = []
  readonly statusCounts: Record<TaskStatus, number> = { waiting: 0, queued: 0, processing: 0, memory: 0, erred: 0, released: 0, forgotten: 0 }
  readonly groupCounts = new Map<string, GroupCounts>()
  /** highest turn dispatched, per priority level (fair turns) */
  readonly lastTurn = new Map<number, number>()
  frees = new Map<WorkerState, string[]>()
  out: Command[] = []
  stimulus = 'init'
  now = 0
  eventCount = 0
  attemptSeq = 0
  taskSeq = 0
  workerSeq = 0
  mark = 0
  cursor = 0
  /** while a dispatch packs tiny tasks (scheduler-placement.ts `packed`): the worker its last task went to */
  packing: WorkerState | null = null
  /** this dispatch packs tiny tasks (it has at least PACK_EXCESS tasks per idle worker) */
  packNow = false
  /**
   * Run times per group (a task's prefix), for packing: a moving average, how many reports,
   * and whether two volunteers reported (on a grid of several, one volunteer's word alone
   * packs nothing: its tabs could all say its tasks take no time)
   */
  groupMs = new Map<string, { ms: number; n: number; /** the first reporter's volunteer */ by: string; two: boolean }>()
  openWorkers = 0
  lastEntry: Entry | null = null
  lastGroup: GroupCounts | null = null
  derivedFrom: WireError | null = null
  derived: WireError | null = null
  /** moving average of reported task run time (ms) */
  avgMs = 1
  /** the average capacities are computed with; follows avgMs with hysteresis */
  capMs = 1

  /** run times per group, for the deadlines enforced on tick (null: none) */
  readonly deadlines: Deadlines | null
  /** workers per volunteer */
  readonly volunteers = new Map<string, number>()
  /** draws for spot checks (seeded: the same events and seed give the same commands) */
  readonly random: () => number

  constructor(options: SchedulerOptions = {}) {
    this.opts = resolveOptions(options)
    this.deadlines = this.opts.deadlines === null ? null : new Deadlines(this.opts.deadlines)
    this.random = mulberry32(this.opts.spotCheck?.seed ?? 1)
  }

  // ───────────────────────────── the mutator ─────────────────────────────

  /** Feeds one event; returns the commands it causes, in order. */
  handle(event: SchedulerEvent & EventMeta): Command[] {
    const out: Command[] = []
    this.out = out
    this.apply(event, event.now)
    this.settle()
    return out
  }

  /**
   * Feeds a batch of events (one frame's worth) and places tasks once at the end: the
   * same outcome as feeding them one by one, for a fraction of the work when a frame
   * carries thousands of results.
   */
  handleMany(events: readonly SchedulerEvent[], now?: number): Command[] {
    const out: Command[] = []
    this.out = out
    for (const e of events) this.apply(e, now)
    this.settle()
    return out
  }

  settle(): void {
    dispatch(this)
    this.checkRetiring()
    this.flushFrees()
    if (this.opts.validate) validate(this)
  }

  apply(event: SchedulerEvent & EventMeta, now: number | undefined): void {
    if (typeof now === 'number') this.now = now
    this.stimulus = event.stimulus ?? `${event.type}-${++this.eventCount}`
    this.lastEntry = null
    switch (event.type) {
      case 'client-added': this.client(event.client); break
      case 'client-removed': this.onClientRemoved(event.client); break
      case 'submit': this.onSubmit(event.client, event.tasks); break
      case 'release': this.onRelease(event.client, event.keys); break
      case 'cancel': this.onCancel(event.client, event.keys); break
      case 'gather': this.onGather(event.client, event.keys); break
      case 'worker-added': this.onWorkerAdded(event); break
      case 'worker-removed': this.onWorkerRemoved(event.worker, event.reason); break
      case 'worker-status': this.onWorkerStatus(event.worker, event.accepting, event.slots); break
      case 'worker-retiring': this.onWorkerRetiring(event.worker); break
      case 'task-finished': this.onTaskFinished(event); break
      case 'task-erred': this.onTaskErred(event); break
      case 'missing-data': this.onMissingData(event); break
      case 'data-lost': this.onDataLost(event.worker, event.keys); break
      case 'data-released': this.onDataLost(event.worker, event.keys); break
      case 'steal-response': this.onStealResponse(event); break
      case 'data-added': this.onDataAdded(event.worker, event.key, event.nbytes); break
      case 'worker-seen': this.onWorkerSeen(event.worker); break
      case 'tick': this.onTick(); break
      case 'want': this.onWant(event.client, event.keys); break
      case 'fire-and-forget': this.onFireAndForget(event.client, event.keys); break
      case 'retry': this.onRetry(event.client, event.tasks); break
      case 'restore': this.onRestore(event.tasks); break
      default: {
        const never: never = event
        throw new Error(`unknown scheduler event ${JSON.stringify((never as { type?: unknown }).type)}`)
      }
    }
    this.drain()
  }

  // ───────────────────────────── queries ─────────────────────────────

  /** Ids of the workers holding the key's data (empty unless in memory). */
  whoHas(key: string): string[] {
    const hs = this.tasks.get(key)?.holders
    return hs ? hs.map(w => w.id) : []
  }

  /** Whether `worker` holds `key`, per the scheduler (no array made). */
  holds(key: string, worker: string): boolean {
    const hs = this.tasks.get(key)?.holders
    if (!hs) return false
    for (const w of hs) if (w.id === worker) return true
    return false
  }

  /** Keys whose data the worker holds, per the scheduler (O(keys held), for reconnect reconciliation). */
  /** The live assignments of a worker, in the order they were made (re-sent when it reconnects). */
  assignmentsOf(worker: string): AssignedTask[] {
    const w = this.byId.get(worker)
    if (w === undefined) return []
    const out: AssignedTask[] = []
    for (const a of w.order) if (a.live) out.push(assigned(this, a.task, a))
    return out
  }

  heldBy(worker: string): string[] {
    const w = this.byId.get(worker)
    return w ? [...w.holds].map(t => t.key) : []
  }

  taskStatus(key: string): TaskStatus | undefined {
    const t = this.tasks.get(key)
    return t === undefined || t.status === 'new' ? undefined : t.status
  }

  /** The task's last transitions, oldest first (empty once forgotten). */
  story(key: string): StoryEntry[] {
    const t = this.tasks.get(key)
    return t ? storyOf(this, t) : []
  }

  workers(): WorkerInfo[] {
    const out: WorkerInfo[] = []
    for (const w of this.byId.values()) {
      out.push({
        id: w.id, name: w.name, kind: w.kind, slots: w.claimed, status: w.status, accepting: w.accepting, retiring: isLeaving(w),
        processing: w.attempts.size, held: w.holds.size, nbytes: w.nbytes, done: w.done, since: w.since,
      })
    }
    return out
  }

  groups(): GroupCounts[] {
    return [...this.groupCounts.values()].map(g => ({ ...g }))
  }

  /** Tasks per status; 'forgotten' counts every task forgotten so far. */
  counts(): Record<TaskStatus, number> {
    return { ...this.statusCounts }
  }

  /** What a journal keeps of a known key (undefined once forgotten). */
  snapshot(key: string): { status: TaskStatus; wanters: string[]; holders: string[]; nbytes: number; error: WireError | null } | undefined {
    const t = this.tasks.get(key)
    if (t === undefined || t.status === 'new' || t.status === 'forgotten') return undefined
    return {
      status: t.status, wanters: wanterList(t), holders: t.holders === null ? [] : t.holders.map(w => w.id), nbytes: t.nbytes,
      error: t.status === 'erred' ? t.error : null,
    }
  }

  /** Clients holding futures to the key. */
  wantedBy(key: string): string[] {
    const t = this.tasks.get(key)
    return t ? wanterList(t) : []
  }

  // ───────────────────────────── clients ─────────────────────────────

  client(id: string): ClientState {
    let c = this.clients.get(id)
    if (c === undefined) {
      c = new ClientState(id)
      this.clients.set(id, c)
    }
    return c
  }

  want(t: TaskState, c: ClientState): boolean {
    if (!addWanter(t, c.id)) return false
    c.wanted++
    return true
  }

  unwant(t: TaskState, client: string): boolean {
    if (!removeWanter(t, client)) return false
    const c = this.clients.get(client)
    if (c) c.wanted--
    const g = t.gatherers
    if (g) {
      const i = g.indexOf(client)
      if (i >= 0) g.splice(i, 1)
      if (g.length === 0) t.gatherers = null
    }
    return true
  }

  unwantAll(t: TaskState): void {
    for (const c of wanterList(t)) this.unwant(t, c)
    t.gatherers = null
  }

  onClientRemoved(id: string): void {
    const c = this.clients.get(id)
    this.clients.delete(id)
    if (c === undefined || c.wanted === 0) return
    // O(tasks), but a client leaves rarely and this keeps per-task memory flat.
    for (const t of this.tasks.values()) {
      if (this.unwant(t, id)) this.todo.push(t)
    }
  }

  onSubmit(clientId: string, specs: readonly TaskSpec[]): void {
    const c = this.client(clientId)
    const fresh: TaskState[] = []
    const freshDeps: (readonly string[])[] = []
    for (const s of specs) {
      const old = this.tasks.get(s.key)
      if (old !== undefined) {
        const added = this.want(old, c)
        if (old.status === 'new') continue
        if (old.status === 'memory') this.out.push({ type: 'key-state', clients: [c.id], key: old.key, state: 'memory', nbytes: old.nbytes })
        else if (old.status === 'erred') this.out.push(this.errorState(old, [c.id]))
        else if (added) this.todo.push(old) // a released task is needed again
        continue
      }
      const t = this.newTask(s, c)
      this.want(t, c)
      // heapIndex is unused while 'new': it carries the task's index in this batch.
      t.heapIndex = fresh.length
      fresh.push(t)
      freshDeps.push(t.fn === null || !Array.isArray(s.deps) ? NO_KEYS : s.deps)
    }
    if (fresh.length > 0) this.admit(fresh, freshDeps)
  }

  private newTask(s: TaskSpec, c: ClientState): TaskState {
    const fn = s.fn === null || typeof s.fn === 'string' ? s.fn : null
    const restrict = Array.isArray(s.workers) && s.workers.length > 0 ? s.workers.slice() : null
    const t = new TaskState(
      s.key, fn, typeof s.group === 'string' ? s.group : 'task',
      typeof s.priority === 'number' && Number.isFinite(s.priority) ? s.priority : 0,
      int(s.retries, 0, 0), int(s.redundancy, 1, 1), restrict, int(s.nbytes, 0, 0), c,
    )
    if (fn !== null && t.redundancy > 1) t.redundant = new Redundancy()
    if (typeof s.timeout === 'number' && s.timeout > 0) t.timeout = s.timeout
    if (s.spotCheck === false) t.spotCheck = false
    this.tasks.set(s.key, t)
    return t
  }

  /** What `restore` is bringing back, while its tasks are admitted. */
  private restoring: Map<TaskState, RestoredTask> | null = null

  /**
   * A journal's record replayed (a coordinator that restarted): tasks in submission order,
   * each wanted by the clients listed (added before). A result is in memory again on those
   * of its holders that are workers here; one with none runs again; a failure stays failed.
   * Whatever nobody wants any more is released or forgotten, as after a release.
   */
  onRestore(tasks: readonly RestoredTask[]): void {
    const fresh: TaskState[] = []
    const freshDeps: (readonly string[])[] = []
    const restoring = new Map<TaskState, RestoredTask>()
    for (const r of tasks) {
      const s = r.spec
      if (this.tasks.has(s.key)) continue
      const t = this.newTask(s, this.client(r.owner))
      for (const w of r.wanters) this.want(t, this.client(w))
      restoring.set(t, r)
      t.heapIndex = fresh.length
      fresh.push(t)
      freshDeps.push(t.fn === null || !Array.isArray(s.deps) ? NO_KEYS : s.deps)
    }
    this.restoring = restoring
    try {
      if (fresh.length > 0) this.admit(fresh, freshDeps)
    } finally { this.restoring = null }
    for (const t of fresh) this.todo.push(t)
  }

  /** Resolves a batch's dependencies depth-first, so a task may name keys later in its own batch. */
  admit(fresh: TaskState[], freshDeps: (readonly string[])[]): void {
    const stack: TaskState[] = []
    const visiting = new Set<TaskState>()
    for (const root of fresh) {
      if (root.status !== 'new') continue
      stack.push(root)
      while (stack.length > 0) {
        const x = stack[stack.length - 1] as TaskState
        if (x.status !== 'new') { stack.pop(); continue }
        const keys = freshDeps[x.heapIndex] as readonly string[]
        if (!visiting.has(x)) {
          visiting.add(x)
          let pushed = false
          for (const k of keys) {
            const d = this.tasks.get(k)
            if (d !== undefined && d.status === 'new' && !visiting.has(d)) { stack.push(d); pushed = true }
          }
          if (pushed) continue
        }
        stack.pop()
        visiting.delete(x)
        this.resolve(x, keys)
      }
    }
  }

  resolve(x: TaskState, keys: readonly string[]): void {
    x.heapIndex = -1
    const restored = this.restoring?.get(x)
    if (restored !== undefined && this.restore(x, keys, restored)) return
    let error: WireError | null = null
    let deps: TaskState[] | null = null
    for (const k of keys) {
      const d = this.tasks.get(k)
      if (d === undefined || d.status === 'new' || d === x) {
        error = { code: 'lost-data', message: `dependency ${k} is unknown to the scheduler (never submitted, or already released)`, key: x.key }
        break
      }
      if (d.status === 'erred') { error = this.derive(d); break }
      deps ??= []
      if (keys.length <= 16 ? !deps.includes(d) : d.dependents === null || !d.dependents.has(x)) {
        deps.push(d)
        if (keys.length > 16) (d.dependents ??= new Set()).add(x)
      }
    }
    if (error !== null) {
      if (deps !== null && keys.length > 16) for (const d of deps) this.unlinkOne(d, x)
      this.err(x, error)
      return
    }
    let notReady = 0
    if (deps !== null) {
      x.deps = deps
      for (const d of deps) {
        ;(d.dependents ??= new Set()).add(x)
        if (d.status !== 'memory') notReady++
      }
    }
    this.transition(x, notReady > 0 ? 'waiting' : 'queued', NO_INFO)
  }

  /** A restored task that failed, or whose result a worker here holds: back as it was (true), else admitted as if submitted. */
  private restore(x: TaskState, keys: readonly string[], r: RestoredTask): boolean {
    if (r.error !== undefined) {
      this.err(x, { ...r.error, key: x.key })
      return true
    }
    const holders: WorkerState[] = []
    for (const id of r.holders) {
      const w = this.byId.get(id)
      if (w !== undefined && !holders.includes(w)) holders.push(w)
    }
    if (holders.length === 0) return false
    // its lineage, for a recomputation if its holders are lost
    const deps: TaskState[] = []
    for (const k of keys) {
      const d = this.tasks.get(k)
      if (d === undefined || d === x || d.status === 'new' || deps.includes(d)) continue
      deps.push(d)
      ;(d.dependents ??= new Set()).add(x)
    }
    if (deps.length > 0) x.deps = deps
    x.nbytes = int(r.nbytes, 0, 0)
    for (const w of holders) this.addHolder(x, w)
    this.transition(x, 'memory', { note: 'restored from the journal' })
    return true
  }

  onRelease(client: string, keys: readonly string[]): void {
    for (const k of keys) {
      const t = this.tasks.get(k)
      if (t !== undefined && this.unwant(t, client)) this.todo.push(t)
    }
  }

  /**
   * The client drops its interest in the keys, and in their unfinished dependents that
   * it wants too, and hears 'cancelled' for each. Only its own interest: another
   * client's future for the same key stays as it was (pure keys are shared by unrelated
   * users), as in Dask. What nobody wants any more is released, which cancels its runs.
   */
  onCancel(client: string, keys: readonly string[]): void {
    for (const k of keys) {
      const t = this.tasks.get(k)
      if (t === undefined || !hasWanter(t, client)) continue
      const set: TaskState[] = [t]
      const seen = new Set<TaskState>(set)
      for (let i = 0; i < set.length; i++) {
        const x = set[i] as TaskState
        if (x.dependents === null) continue
        for (const d of x.dependents) {
          if (!seen.has(d) && isActive(d.status) && hasWanter(d, client)) { seen.add(d); set.push(d) }
        }
      }
      for (const x of set) {
        this.out.push({ type: 'key-state', clients: [client], key: x.key, state: 'cancelled', error: { code: 'cancelled', message: `${x.key} was cancelled by this client`, key: x.key } })
        this.unwant(x, client)
        record(this, x, x.status, x.status as TaskStatus, undefined, `cancelled by ${client}`)
        this.todo.push(x)
      }
      this.drain()
    }
  }

  onGather(client: string, keys: readonly string[]): void {
    for (const k of keys) {
      const t = this.tasks.get(k)
      if (t === undefined) {
        this.out.push({ type: 'key-state', clients: [client], key: k, state: 'erred', error: { code: 'not-found', message: `key ${k} is unknown to the scheduler`, key: k } })
      } else if (t.status === 'memory') {
        this.out.push({ type: 'send-data', client, key: t.key, worker: this.bestHolder(t).id })
      } else if (t.status === 'erred') {
        if (!hasWanter(t, client)) this.out.push(this.errorState(t, [client]))
      } else {
        // Gathering implies holding a future; make sure the key stays wanted until then.
        if (this.want(t, this.client(client))) this.todo.push(t)
        const g = (t.gatherers ??= [])
        if (!g.includes(client)) g.push(client)
      }
    }
  }

  /** Tells a client a key's state if it is final (memory or erred); otherwise it hears when it gets there. */
  private tell(t: TaskState, client: string): void {
    if (t.status === 'memory') this.out.push({ type: 'key-state', clients: [client], key: t.key, state: 'memory', nbytes: t.nbytes })
    else if (t.status === 'erred') this.out.push(this.errorState(t, [client]))
  }

  private onWant(clientId: string, keys: readonly string[]): void {
    const c = this.client(clientId)
    for (const k of keys) {
      const t = this.tasks.get(k)
      if (t === undefined || t.status === 'new') {
        this.out.push({ type: 'key-state', clients: [clientId], key: k, state: 'lost', error: { code: 'lost-data', message: `${k} is no longer on the grid (released by everyone who held it)`, key: k } })
        continue
      }
      if (this.want(t, c) && t.status === 'released') this.todo.push(t)
      this.tell(t, clientId)
    }
  }

  private onFireAndForget(client: string, keys: readonly string[]): void {
    const faf = this.client(FIRE_AND_FORGET)
    for (const k of keys) {
      const t = this.tasks.get(k)
      // only what this client holds, and only work still to do
      if (t === undefined || !hasWanter(t, client) || !isActive(t.status)) continue
      if (this.want(t, faf)) record(this, t, t.status, t.status as TaskStatus, undefined, `fire-and-forget by ${client}`)
    }
  }

  /** A fire-and-forget task is done: nothing holds it for its own sake any more. */
  private fireAndForgetDone(t: TaskState): void {
    if (t.wanters === null || !hasWanter(t, FIRE_AND_FORGET)) return
    this.unwant(t, FIRE_AND_FORGET)
    this.todo.push(t)
  }

  private onRetry(client: string, tasks: readonly { key: string; deps: readonly string[] }[]): void {
    for (const { key, deps } of tasks) {
      const t = this.tasks.get(key)
      if (t === undefined || t.status === 'new') {
        this.out.push({ type: 'key-state', clients: [client], key, state: 'lost', error: { code: 'lost-data', message: `${key} is no longer on the grid: submit it again`, key } })
        continue
      }
      // scattered data has no lineage to run again; another client's key is not ours to retry
      if (t.status !== 'erred' || t.fn === null || !hasWanter(t, client)) { this.tell(t, client); continue }
      let error: WireError | null = null
      const ds: TaskState[] = []
      for (const k of deps) {
        const d = this.tasks.get(k)
        if (d === undefined || d.status === 'new' || d === t) {
          error = { code: 'lost-data', message: `cannot retry ${key}: its dependency ${k} is no longer on the grid (keep the futures of failed dependencies to retry them)`, key }
          break
        }
        if (d.status === 'erred') { error = this.derive(d); break }
        if (!ds.includes(d)) ds.push(d)
      }
      if (error !== null) {
        t.error = error
        record(this, t, 'erred', 'erred', undefined, `retry refused: ${error.message}`)
        this.out.push(this.errorState(t, wanterList(t)))
        continue
      }
      t.error = null
      t.failures = 0
      this.resetVotes(t)
      let notReady = 0
      if (ds.length > 0) {
        t.deps = ds
        for (const d of ds) {
          ;(d.dependents ??= new Set()).add(t)
          if (d.status !== 'memory') notReady++
        }
      }
      this.transition(t, notReady > 0 ? 'waiting' : 'queued', { note: `retried by ${client}` })
    }
  }

  // ───────────────────────────── workers ─────────────────────────────

  onWorkerAdded(e: Extract<SchedulerEvent, { type: 'worker-added' }>): void {
    if (this.byId.has(e.worker)) return
    const w = new WorkerState(e.worker, e.name, e.kind, int(e.slots, 1, 1), this.now, ++this.workerSeq, typeof e.volunteer === 'string' ? e.volunteer : e.worker, this.opts.initialWindow)
    // a new worker is running, so open
    this.openWorkers++
    w.lastSeen = this.now
    this.byId.set(w.id, w)
    this.volunteers.set(w.volunteer, (this.volunteers.get(w.volunteer) ?? 0) + 1)
    const named = this.byName.get(w.name)
    if (named) named.push(w)
    else this.byName.set(w.name, [w])
    this.touch(w)
    for (const h of e.held ?? []) {
      const t = this.tasks.get(h.key)
      if (t !== undefined && t.status === 'memory' && t.redundant === null && !(t.holders as WorkerState[]).includes(w)) {
        this.addHolder(t, w)
        record(this, t, 'memory', 'memory', w.id, 'held by a worker that joined')
      } else {
        this.freeKey(w, h.key)
      }
    }
    replicateAll(this)
  }

  onWorkerRemoved(id: string, reason: 'disconnected' | 'left' | 'kicked' | 'quarantined'): void {
    const w = this.byId.get(id)
    if (w === undefined) return
    this.setWorkerStatus(w, 'gone')
    this.byId.delete(id)
    const nv = (this.volunteers.get(w.volunteer) ?? 1) - 1
    if (nv > 0) this.volunteers.set(w.volunteer, nv)
    else this.volunteers.delete(w.volunteer)
    const named = this.byName.get(w.name)
    if (named) {
      const i = named.indexOf(w)
      if (i >= 0) named.splice(i, 1)
      if (named.length === 0) this.byName.delete(w.name)
    }
    this.retiringWorkers.delete(w)
    this.aheadLater.delete(w)
    this.frees.delete(w)
    if (this.leases.has(w)) this.leases.remove(w)
    this.touch(w)
    // a worker that never returned a result proves nothing about a task by vanishing with it
    const counts = reason !== 'left' && reason !== 'quarantined' && w.done > 0
    const why = `worker ${w.name} removed (${reason})`
    for (const a of [...w.order]) {
      if (!a.live) continue
      const ahead = a.ahead
      this.endAttempt(a)
      record(this, a.task, a.task.status, a.task.status as TaskStatus, w.id, `lost: ${why}`, a.id)
      this.attemptFailed(a.task, counts && !ahead, w)
    }
    if (w.puts !== null) {
      for (const a of [...w.puts]) {
        if (!a.live) continue
        this.endAttempt(a)
        this.afterPutLost(a.task)
      }
    }
    if (w.incoming > 0) {
      // Steals requested on its behalf: the victims keep those tasks unless they already said yes.
      for (const v of this.byId.values()) {
        if (v.stealing === 0) continue
        for (const a of v.attempts) {
          if (a.thief !== w) continue
          a.thief = null
          v.stealing--
        }
        this.touch(v)
      }
      w.incoming = 0
    }
    for (const [t, ms] of this.moves) {
      for (const m of ms.slice()) {
        if (m.to !== w && m.from !== w) continue
        removeMove(this, t, m)
        if (m.to === w && m.handoff && m.from.status !== 'gone') handoff(this, m.from, t)
      }
    }
    if (w.reported !== null) {
      for (const t of [...w.reported]) syncRedundant(this, t)
      w.reported = null
    }
    for (const t of [...w.holds]) this.loseHolder(t, w)
    // caught lying: what only its word vouched for is checked again on other volunteers
    if (reason === 'quarantined') reverify(this, w.volunteer, `computed by ${w.name}, quarantined`)
  }

  onWorkerStatus(id: string, accepting: boolean, slots?: number): void {
    const w = this.byId.get(id)
    if (w === undefined) return
    if (slots !== undefined && slots !== w.claimed) {
      w.claimed = int(slots, w.claimed, 1)
      this.setWindow(w, w.window)
    }
    if (w.accepting === accepting) return
    w.accepting = accepting
    // a lapsed or leaving worker stays so; it is paused or running again as it says once it speaks
    if (w.status === 'running' || w.status === 'paused') this.setWorkerStatus(w, accepting ? 'running' : 'paused')
    if (accepting) replicateAll(this)
  }

  /**
   * Graceful leave: no new tasks; tasks it has likely not started (beyond its slots,
   * in assignment order) go elsewhere; data only it holds and still needed is copied
   * to the best other worker. retire-done follows once it runs nothing and every
   * hand-off was acknowledged.
   */
  onWorkerRetiring(id: string): void {
    const w = this.byId.get(id)
    if (w === undefined || isLeaving(w)) return
    this.setWorkerStatus(w, 'retiring')
    this.retiringWorkers.add(w)
    let others = false
    for (const o of this.byId.values()) if (o !== w && !isLeaving(o)) { others = true; break }
    if (!others) {
      this.setWorkerStatus(w, 'retired')
      this.out.push({ type: 'retire-done', worker: w.id })
      return
    }
    let started = 0
    const later: Attempt[] = []
    for (const a of w.order) {
      if (!a.live) continue
      if (started < w.slots) started++
      else later.push(a)
    }
    for (const a of later) {
      this.out.push({ type: 'cancel-task', worker: w.id, key: a.task.key, attempt: a.id })
      this.endAttempt(a)
      record(this, a.task, 'processing', 'processing', w.id, 'taken back: worker retiring', a.id)
      this.afterAttemptLost(a.task)
    }
    if (w.puts !== null) {
      for (const a of [...w.puts]) {
        this.endAttempt(a)
        this.afterPutLost(a.task)
      }
    }
    for (const t of w.holds) handoffIfSole(this, w, t)
  }

  checkRetiring(): void {
    for (const w of this.retiringWorkers) {
      if (w.status !== 'retiring' || w.attempts.size > 0 || (w.puts !== null && w.puts.size > 0) || (w.handoffs !== null && w.handoffs.size > 0)) continue
      this.setWorkerStatus(w, 'retired')
      this.out.push({ type: 'retire-done', worker: w.id })
    }
  }

  // ───────────────────────────── results and faults ─────────────────────────────

  findAttempt(t: TaskState | undefined, w: WorkerState, id: number): Attempt | undefined {
    const as = t?.attempts
    if (!as) return undefined
    for (const a of as) if (a.id === id && a.worker === w && !a.put) return a
    return undefined
  }

  /** Whether the live attempt `attempt` of `key` on `worker` was asked for a digest of its result. */
  askedDigest(key: string, worker: string, attempt: number): boolean {
    const w = this.byId.get(worker)
    const a = w === undefined ? undefined : this.findAttempt(this.tasks.get(key), w, attempt)
    return a?.digest === true
  }

  onTaskFinished(e: Extract<SchedulerEvent, { type: 'task-finished' }>): void {
    const w = this.byId.get(e.worker)
    if (w === undefined) return
    const t = this.tasks.get(e.key)
    const a = this.findAttempt(t, w, e.attempt)
    if (t === undefined || a === undefined) {
      this.dropStale(t, w, e.key, e.attempt)
      return
    }
    this.endAttempt(a)
    w.done++
    if (w.window < w.claimed + this.opts.maxAhead) this.setWindow(w, widen(w.window, w.claimed + this.opts.maxAhead))
    // run times clamped to what the scheduler saw elapse: no stretching a group's deadline
    const ms = Math.min(e.ms, this.now - a.at)
    this.deadlines?.observe(t.group, ms)
    this.updateAvg(e.ms)
    this.observeGroup(t.group, w, ms)
    const nbytes = int(e.nbytes, 0, 0)
    if (t.redundant !== null) {
      const r = t.redundant
      r.reports++
      r.results.push({ worker: w, digest: typeof e.digest === 'string' ? e.digest : '', nbytes })
      ;(w.reported ??= new Set()).add(t)
      record(this, t, 'processing', 'processing', w.id, `reported digest ${e.digest ?? '(none)'}`, a.id)
      syncRedundant(this, t)
      return
    }
    const digest = typeof e.digest === 'string' ? e.digest : undefined
    // not simply believed: some results wait for another volunteer to agree
    if (spotCheck(this, t, w, digest, nbytes)) return
    t.nbytes = nbytes
    t.producer = w.volunteer
    t.digest = digest ?? null
    this.addHolder(t, w)
    this.transition(t, 'memory', { worker: w, attempt: a.id })
    if (isLeaving(w)) handoffIfSole(this, w, t)
  }

  /** A result for an attempt that is not current: drop it, and free the data if the worker holds it for nothing. */
  dropStale(t: TaskState | undefined, w: WorkerState, key: string, attempt: number): void {
    if (t !== undefined) {
      record(this, t, t.status, t.status as TaskStatus, w.id, 'stale result dropped', attempt)
      if (t.holders?.includes(w) || t.redundant?.results.some(r => r.worker === w) || t.attempts?.some(a => a.worker === w)) return
    }
    this.freeKey(w, key)
  }

  onTaskErred(e: Extract<SchedulerEvent, { type: 'task-erred' }>): void {
    const w = this.byId.get(e.worker)
    if (w === undefined) return
    const t = this.tasks.get(e.key)
    const a = this.findAttempt(t, w, e.attempt)
    if (t === undefined || a === undefined) return
    this.endAttempt(a)
    if (e.crashed === true) {
      record(this, t, 'processing', 'processing', w.id, 'crashed its worker', a.id)
      this.attemptFailed(t, true, w)
    } else if (t.retries > 0) {
      t.retries--
      record(this, t, 'processing', 'processing', w.id, `erred (${e.error?.message ?? ''}); retrying, ${t.retries} retries left`, a.id)
      this.afterAttemptLost(t)
    } else {
      const error: WireError = { ...e.error, code: e.error?.code ?? 'task-error', message: e.error?.message ?? 'task failed', key: t.key }
      this.err(t, error)
    }
  }

  onWorkerSeen(id: string): void {
    const w = this.byId.get(id)
    if (w === undefined) return
    w.lastSeen = this.now
    if (w.status !== 'lapsed') return
    this.setWorkerStatus(w, w.accepting ? 'running' : 'paused')
    replicateAll(this)
  }

  /**
   * Leases: a worker silent for leaseMs with tasks in hand (since it was given them, at the
   * earliest) loses them and gets none until it speaks. Only workers whose filed deadline
   * has come are looked at (a frame just moves lastSeen; the deadline is rechecked when
   * reached), so a tick costs O(deadlines due), not O(workers).
   */
  onTick(): void {
    const lease = this.opts.leaseMs
    let due: WorkerState[] | null = null
    for (let w = this.leases.peek(); w !== undefined && w.leaseAt <= this.now; w = this.leases.peek()) {
      this.leases.pop()
      if (w.status === 'gone' || w.status === 'lapsed' || w.attempts.size === 0) continue
      const at = Math.max(w.lastSeen, w.busySince) + lease
      if (at > this.now) {
        w.leaseAt = at
        this.leases.push(w)
      } else (due ??= []).push(w)
    }
    if (due !== null) for (const w of due.sort((a, b) => a.seq - b.seq)) this.lapse(w)
    checkTrust(this)
  }

  lapse(w: WorkerState): void {
    // a leaving worker loses its tasks the same way, and stays leaving (it gets nothing new anyway)
    if (w.status === 'running' || w.status === 'paused') this.setWorkerStatus(w, 'lapsed')
    const quiet = this.now - Math.max(w.lastSeen, w.busySince)
    this.out.push({ type: 'worker-lapsed', worker: w.id, tasks: w.attempts.size, quietMs: quiet })
    for (const a of [...w.order]) {
      if (!a.live) continue
      const t = a.task
      const ahead = a.ahead
      this.out.push({ type: 'cancel-task', worker: w.id, key: t.key, attempt: a.id })
      this.endAttempt(a)
      record(this, t, 'processing', 'processing', w.id, 'lease expired', a.id)
      // a task sent ahead never started, and a worker that never returned a result proves
      // nothing by stalling on it: neither counts against the task
      this.attemptFailed(t, !ahead && w.done > 0, w)
    }
    this.setWindow(w, narrow(w.window))
  }

  /** A worker's window changed (core/trust.ts): it counts on min(claimed, window) slots. */
  setWindow(w: WorkerState, window: number): void {
    w.window = window
    w.slots = Math.max(1, Math.min(w.claimed, window))
    this.touch(w)
  }

  /** Whether `key` is an input of a run assigned to `worker` now (the only keys a worker may fetch). */
  isInputOf(key: string, worker: string): boolean {
    const w = this.byId.get(worker)
    const d = this.tasks.get(key)
    if (w === undefined || d === undefined || d.dependents === null) return false
    for (const t of d.dependents) if (t.attempts?.some(a => a.worker === w && !a.put)) return true
    return false
  }

  onMissingData(e: Extract<SchedulerEvent, { type: 'missing-data' }>): void {
    const w = this.byId.get(e.worker)
    if (w === undefined) return
    const t = this.tasks.get(e.key)
    const a = this.findAttempt(t, w, e.attempt)
    if (a !== undefined) {
      this.endAttempt(a)
      record(this, a.task, 'processing', 'processing', w.id, `could not fetch ${(e.missing ?? []).map(m => m.key).join(', ')}`, a.id)
    }
    for (const m of e.missing ?? []) {
      const d = this.tasks.get(m.key)
      const h = this.byId.get(m.holder)
      if (d !== undefined && h !== undefined && d.holders?.includes(h)) this.loseHolder(d, h)
    }
    if (a !== undefined) this.afterAttemptLost(a.task)
  }

  onDataLost(id: string, keys: readonly string[]): void {
    const w = this.byId.get(id)
    if (w === undefined) return
    for (const k of keys) {
      const t = this.tasks.get(k)
      if (t !== undefined && t.holders?.includes(w)) this.loseHolder(t, w)
    }
  }

  onStealResponse(e: Extract<SchedulerEvent, { type: 'steal-response' }>): void {
    const w = this.byId.get(e.worker)
    if (w === undefined) return
    const t = this.tasks.get(e.key)
    const a = this.findAttempt(t, w, e.attempt)
    if (t === undefined || a === undefined) return
    if (!e.ok) {
      // A refusal for a request we no longer track changes nothing.
      const thief = a.thief
      if (thief === null) return
      a.thief = null
      a.denied = true
      thief.incoming--
      w.stealing--
      this.touch(thief)
      this.touch(w)
      record(this, t, 'processing', 'processing', w.id, 'steal refused', a.id)
      return
    }
    // The victim gave the task up (even if its thief has left since): it must run elsewhere.
    this.endAttempt(a)
    record(this, t, 'processing', 'processing', w.id, 'stolen', a.id)
    this.afterAttemptLost(t)
  }

  onDataAdded(id: string, key: string, nbytes: number): void {
    const w = this.byId.get(id)
    if (w === undefined) return
    const t = this.tasks.get(key)
    if (t === undefined) { this.freeKey(w, key); return }
    const put = t.attempts?.find(a => a.put && a.worker === w)
    if (put !== undefined) {
      this.endAttempt(put)
      if (t.status === 'processing') {
        t.nbytes = int(nbytes, t.nbytes, 0)
        this.addHolder(t, w)
        this.transition(t, 'memory', { worker: w, note: 'put-data acknowledged' })
      } else if (t.status === 'memory' && !(t.holders as WorkerState[]).includes(w)) {
        this.addHolder(t, w)
        record(this, t, 'memory', 'memory', w.id, 'replica stored')
      }
      return
    }
    const m = this.moves.get(t)?.find(x => x.to === w)
    if (m !== undefined && t.status === 'memory') {
      removeMove(this, t, m)
      if (!(t.holders as WorkerState[]).includes(w)) this.addHolder(t, w)
      record(this, t, 'memory', 'memory', w.id, `copy from ${m.from.id} stored`)
      if (isLeaving(w)) handoffIfSole(this, w, t)
      return
    }
    if (t.holders?.includes(w)) return
    if (t.status === 'memory') this.addFetchedCopy(t, w)
    else this.freeKey(w, key)
  }

  /** A worker kept a copy it fetched as a dependency: one more holder (a replica, for scattered data), as in Dask. */
  private addFetchedCopy(t: TaskState, w: WorkerState): void {
    this.addHolder(t, w)
    record(this, t, 'memory', 'memory', w.id, 'kept a copy fetched as a dependency')
    if (t.fn === null) replicate(this, t)
  }

  /**
   * A run was lost with its worker (counts) or given up (does not count). Either way the
   * task goes to another volunteer next, if one has room.
   */
  attemptFailed(t: TaskState, counts: boolean, w: WorkerState): void {
    if (t.status !== 'processing') return
    if (!(t.avoid ??= []).includes(w.volunteer)) t.avoid.push(w.volunteer)
    if (counts && ++t.failures >= this.opts.allowedFailures) {
      this.err(t, {
        code: 'killed-worker',
        message: `task ${t.key} was running on ${t.failures} workers that died; it is marked failed to protect the grid`,
        key: t.key,
      })
      return
    }
    this.afterAttemptLost(t)
  }

  /** After an attempt ended without a result: requeue the task if nothing else runs it. */
  afterAttemptLost(t: TaskState): void {
    if (t.status !== 'processing') return
    if (t.redundant !== null) { syncRedundant(this, t); return }
    // a task sent ahead whose inputs are not done waits for them again
    if (t.attempts === null) this.transition(t, t.waitingOn > 0 ? 'waiting' : 'queued', NO_INFO)
  }

  afterPutLost(t: TaskState): void {
    if (t.status === 'processing' && t.attempts === null) this.transition(t, 'queued', { note: 'put-data target left' })
    else if (t.status === 'memory') replicate(this, t)
  }

  // ───────────────────────────── redundancy ─────────────────────────────

  // ───────────────────────────── data on workers ─────────────────────────────

  addHolder(t: TaskState, w: WorkerState): void {
    // Literal arrays get exactly the capacity they need; push on [] would reserve 16 slots.
    if (t.holders === null) t.holders = [w]
    else t.holders.push(w)
    w.holds.add(t)
    w.nbytes += t.nbytes
  }

  /** The worker no longer has the key's data: recompute it, or fail it if it has no lineage. */
  loseHolder(t: TaskState, w: WorkerState): void {
    const hs = t.holders
    if (hs === null) return
    const i = hs.indexOf(w)
    if (i < 0) return
    hs.splice(i, 1)
    w.holds.delete(t)
    w.nbytes -= t.nbytes
    const ms = this.moves.get(t)
    if (ms) for (const m of ms.slice()) if (m.from === w) removeMove(this, t, m)
    if (hs.length > 0) {
      record(this, t, 'memory', 'memory', w.id, `replica on ${w.name} lost`)
      if (t.fn === null) replicate(this, t)
      // The copy left may sit on a retiring worker that had no reason to hand it off.
      const last = hs[0] as WorkerState
      if (hs.length === 1 && last.status === 'retiring') handoffIfSole(this, last, t)
      return
    }
    t.holders = null
    dropMoves(this, t)
    if (t.fn === null) {
      this.err(t, { code: 'lost-data', message: `the scattered value ${t.key} was held only by worker ${w.name} which left`, key: t.key }, w)
    } else if (this.needsData(t)) {
      this.recompute(t, `data lost with ${w.name}`)
    } else {
      this.transition(t, t.dependents !== null ? 'released' : 'forgotten', { worker: w })
    }
  }

  /** Frees the data everywhere (the task leaves memory). */
  dropData(t: TaskState): void {
    const hs = t.holders
    if (hs !== null) {
      for (const w of hs) {
        w.holds.delete(t)
        w.nbytes -= t.nbytes
        this.freeKey(w, t.key)
      }
      t.holders = null
    }
    if (t.attempts !== null) for (const a of t.attempts.slice()) this.endAttempt(a)
    dropMoves(this, t)
    this.underReplicated.delete(t)
  }

  freeKey(w: WorkerState, key: string): void {
    if (w.status === 'gone') return
    const ks = this.frees.get(w)
    if (ks) ks.push(key)
    else this.frees.set(w, [key])
  }

  flushFrees(): void {
    if (this.frees.size === 0) return
    for (const [w, keys] of this.frees) {
      if (w.status === 'gone') continue
      // A key freed and then given back to the same worker within this event stays.
      const ks = keys.filter(k => {
        const t = this.tasks.get(k)
        return t === undefined || !(t.holders?.includes(w) || t.attempts?.some(a => a.worker === w))
      })
      if (ks.length > 0) this.out.push({ type: 'free-keys', worker: w.id, keys: ks })
    }
    this.frees = new Map()
  }

  bestHolder(t: TaskState): WorkerState {
    const hs = t.holders as WorkerState[]
    let best = hs[0] as WorkerState
    let bestScore = Infinity
    for (const w of hs) {
      const score = (isLeaving(w) ? 1e9 : 0) + w.attempts.size / w.slots
      if (score < bestScore) { best = w; bestScore = score }
    }
    return best
  }

  // ───────────────────────────── release, recompute, errors ─────────────────────────────

  /** Wanted by a client, or by an unfinished dependent. */
  /** Tasks the free workers could take now, all told: what a wave of placements would hand out at most (kept by `touch`, O(1)). */
  room(): number {
    return this.freeRoom
  }

  isNeeded(t: TaskState): boolean {
    return t.wanters !== null || t.activeDependents > 0
  }

  /** Needed, or scattered data some dependent's lineage leans on (it has no lineage of its own). */
  needsData(t: TaskState): boolean {
    return this.isNeeded(t) || (t.fn === null && t.dependents !== null)
  }

  drain(): void {
    const todo = this.todo
    while (todo.length > 0) this.reconsider(todo.pop() as TaskState)
  }

  /** Releases or forgets what is no longer needed, and brings back released tasks that are. */
  reconsider(t: TaskState): void {
    switch (t.status) {
      case 'memory':
        if (!this.needsData(t)) this.transition(t, t.dependents !== null ? 'released' : 'forgotten', NO_INFO)
        return
      case 'released':
        if (this.isNeeded(t)) this.recompute(t, 'needed again')
        else if (t.dependents === null) this.transition(t, 'forgotten', NO_INFO)
        return
      case 'waiting':
      case 'queued':
      case 'processing':
        if (!this.needsData(t)) this.transition(t, t.dependents !== null && t.fn !== null ? 'released' : 'forgotten', NO_INFO)
        return
      case 'erred':
        if (t.wanters === null && t.dependents === null) this.transition(t, 'forgotten', NO_INFO)
        return
      case 'new':
      case 'forgotten':
        return
    }
  }

  /** Runs a released (or lost) task again from its lineage. */
  recompute(t: TaskState, note: string): void {
    if (t.fn === null) throw broken(this, t, 'scattered data cannot be recomputed')
    let notReady = 0
    for (const d of t.deps) {
      if (d.status === 'erred') { this.err(t, this.derive(d)); return }
      if (d.status !== 'memory') notReady++
    }
    this.resetVotes(t)
    this.transition(t, notReady > 0 ? 'waiting' : 'queued', { note })
  }

  /** A redundant task's vote starts over; a spot check is dropped (the next result is checked or not anew). */
  resetVotes(t: TaskState): void {
    if (t.spot) { dropResults(this, t); endSpot(t) } else if (t.redundant !== null) t.redundant = new Redundancy()
  }

  /** Errs a task and, transitively, its unfinished dependents ("dependency <key> failed: …"). */
  err(t: TaskState, error: WireError, worker?: WorkerState): void {
    const work: TaskState[] = [t]
    const errors: WireError[] = [error]
    while (work.length > 0) {
      const x = work.pop() as TaskState
      const e = errors.pop() as WireError
      if (x.status === 'erred' || x.status === 'forgotten') continue
      this.transition(x, 'erred', x === t && worker ? { error: e, worker } : { error: e })
      if (x.dependents === null) continue
      let derived: WireError | null = null
      for (const d of x.dependents) {
        if (!isActive(d.status)) continue
        derived ??= this.derive(x)
        work.push(d)
        errors.push(derived)
      }
    }
  }

  /** The error a dependent of an erred task gets; shared by every dependent of one root. */
  derive(d: TaskState): WireError {
    const e = d.error as WireError
    if (e.key !== undefined && e.key !== d.key) return e
    if (this.derivedFrom === e && this.derived !== null) return this.derived
    const out: WireError = { code: e.code, message: `dependency ${d.key} failed: ${e.message}`, key: d.key }
    if (e.name !== undefined) out.name = e.name
    if (e.stack !== undefined) out.stack = e.stack
    this.derivedFrom = e
    this.derived = out
    return out
  }

  errorState(t: TaskState, clients: string[]): Command {
    const e = t.error as WireError
    const lost = t.fn === null && e.code === 'lost-data' && e.key === t.key
    return { type: 'key-state', clients, key: t.key, state: lost ? 'lost' : 'erred', error: e }
  }

  // ───────────────────────────── transitions ─────────────────────────────

  private static readonly table: { readonly [F in Status]?: { readonly [T in TaskStatus]?: TransitionFn } } = {
    new: {
      waiting: Scheduler.prototype.toActive,
      queued: Scheduler.prototype.toActive,
      erred: Scheduler.prototype.newToErred,
      memory: Scheduler.prototype.newToMemory,
    },
    waiting: {
      queued: Scheduler.prototype.waitingToQueued,
      processing: Scheduler.prototype.waitingToProcessing,
      erred: Scheduler.prototype.activeToErred,
      released: Scheduler.prototype.activeToReleased,
      forgotten: Scheduler.prototype.activeToForgotten,
    },
    queued: {
      waiting: Scheduler.prototype.queuedToWaiting,
      processing: Scheduler.prototype.queuedToProcessing,
      erred: Scheduler.prototype.activeToErred,
      released: Scheduler.prototype.activeToReleased,
      forgotten: Scheduler.prototype.activeToForgotten,
    },
    processing: {
      queued: Scheduler.prototype.processingToQueued,
      waiting: Scheduler.prototype.processingToWaiting,
      memory: Scheduler.prototype.processingToMemory,
      erred: Scheduler.prototype.activeToErred,
      released: Scheduler.prototype.activeToReleased,
      forgotten: Scheduler.prototype.activeToForgotten,
    },
    memory: {
      released: Scheduler.prototype.memoryToReleased,
      forgotten: Scheduler.prototype.memoryToForgotten,
      waiting: Scheduler.prototype.memoryToActive,
      queued: Scheduler.prototype.memoryToActive,
      erred: Scheduler.prototype.memoryToErred,
    },
    released: {
      waiting: Scheduler.prototype.toActive,
      queued: Scheduler.prototype.toActive,
      erred: Scheduler.prototype.releasedToErred,
      forgotten: Scheduler.prototype.releasedToForgotten,
    },
    erred: {
      forgotten: Scheduler.prototype.erredToForgotten,
      waiting: Scheduler.prototype.toActive,
      queued: Scheduler.prototype.toActive,
    },
  }

  transition(t: TaskState, to: TaskStatus, info: Info): void {
    const from = t.status
    const fn = Scheduler.table[from]?.[to]
    if (fn === undefined) throw broken(this, t, `impossible transition ${from} → ${to} (stimulus ${this.stimulus})`)
    const e = info.error
    record(this, t, from, to, info.worker?.id, info.note ?? (e ? `${e.code}: ${e.message.length > 200 ? e.message.slice(0, 200) + '…' : e.message}` : undefined), info.attempt ?? 0)
    fn.call(this, t, to, info)
  }

  /** new/released → waiting/queued */
  toActive(t: TaskState, to: TaskStatus): void {
    this.setStatus(t, to)
    this.enterActive(t)
    if (to === 'queued') this.enqueue(t)
  }

  /** Restored from a journal with its holders already added. */
  newToMemory(t: TaskState): void {
    this.setStatus(t, 'memory')
    this.enteredMemory(t)
  }

  newToErred(t: TaskState, _to: TaskStatus, info: Info): void {
    this.setStatus(t, 'erred')
    t.error = info.error as WireError
    this.announceError(t)
  }

  waitingToQueued(t: TaskState): void {
    this.setStatus(t, 'queued')
    this.enqueue(t)
  }

  /** Sent ahead: its inputs are still running, on the worker it goes to. */
  waitingToProcessing(t: TaskState): void {
    this.setStatus(t, 'processing')
  }

  queuedToWaiting(t: TaskState): void {
    this.dequeue(t)
    this.setStatus(t, 'waiting')
  }

  queuedToProcessing(t: TaskState): void {
    this.dequeue(t)
    this.setStatus(t, 'processing')
  }

  processingToQueued(t: TaskState): void {
    this.cancelAttempts(t)
    recallAhead(this, t)
    if (this.constrainedQ.has(t)) this.constrainedQ.remove(t)
    if (t.spot) { dropResults(this, t); endSpot(t) }
    this.setStatus(t, 'queued')
    this.enqueue(t)
  }

  processingToWaiting(t: TaskState): void {
    this.cancelAttempts(t)
    recallAhead(this, t)
    if (t.redundant !== null) {
      // Its inputs are being recomputed: the vote starts over with the new inputs.
      dropResults(this, t)
      this.resetVotes(t)
    }
    if (this.constrainedQ.has(t)) this.constrainedQ.remove(t)
    this.setStatus(t, 'waiting')
  }

  processingToMemory(t: TaskState): void {
    // Scattered values keep their other pending puts: they become extra replicas.
    if (t.fn !== null) this.cancelAttempts(t)
    if (this.constrainedQ.has(t)) this.constrainedQ.remove(t)
    this.setStatus(t, 'memory')
    this.leaveActive(t)
    this.enteredMemory(t)
  }

  activeToErred(t: TaskState, _to: TaskStatus, info: Info): void {
    this.deactivate(t)
    this.unlinkDeps(t)
    this.setStatus(t, 'erred')
    t.error = info.error as WireError
    this.announceError(t)
  }

  activeToReleased(t: TaskState): void {
    this.deactivate(t)
    this.setStatus(t, 'released')
  }

  activeToForgotten(t: TaskState): void {
    this.deactivate(t)
    this.forget(t)
  }

  memoryToReleased(t: TaskState): void {
    this.dropData(t)
    this.setStatus(t, 'released')
    this.leftMemory(t)
  }

  memoryToForgotten(t: TaskState): void {
    this.dropData(t)
    this.leftMemory(t)
    this.forget(t)
  }

  /** memory → waiting/queued: recompute lost data from lineage. */
  memoryToActive(t: TaskState, to: TaskStatus): void {
    this.dropData(t)
    this.setStatus(t, to)
    this.leftMemory(t)
    this.enterActive(t)
    if (to === 'queued') this.enqueue(t)
  }

  memoryToErred(t: TaskState, _to: TaskStatus, info: Info): void {
    this.dropData(t)
    this.setStatus(t, 'erred')
    this.leftMemory(t)
    this.unlinkDeps(t)
    t.error = info.error as WireError
    this.announceError(t)
  }

  releasedToErred(t: TaskState, _to: TaskStatus, info: Info): void {
    this.setStatus(t, 'erred')
    this.unlinkDeps(t)
    t.error = info.error as WireError
    this.announceError(t)
  }

  releasedToForgotten(t: TaskState): void {
    this.forget(t)
  }

  erredToForgotten(t: TaskState): void {
    this.forget(t)
  }

  // ───────────────────────────── transition helpers ─────────────────────────────

  setStatus(t: TaskState, to: TaskStatus): void {
    const from = t.status
    const counts = this.statusCounts
    let g = this.lastGroup
    if (g === null || g.group !== t.group) {
      g = this.groupCounts.get(t.group) ?? null
      if (g === null) {
        g = { group: t.group, waiting: 0, queued: 0, processing: 0, memory: 0, erred: 0, released: 0 }
        this.groupCounts.set(t.group, g)
      }
      this.lastGroup = g
    }
    if (from !== 'new') {
      counts[from]--
      if (from !== 'forgotten') g[from]--
    }
    counts[to]++
    if (to !== 'forgotten') g[to]++
    t.status = to
  }

  /** The task starts needing its dependencies: count it on them, bring released ones back. */
  enterActive(t: TaskState): void {
    let n = 0
    for (const d of t.deps) {
      d.activeDependents++
      if (d.status !== 'memory') {
        n++
        if (d.status === 'released') this.todo.push(d)
      }
    }
    t.waitingOn = n
  }

  leaveActive(t: TaskState): void {
    for (const d of t.deps) {
      d.activeDependents--
      this.todo.push(d)
    }
  }

  /** Leaves waiting/queued/processing for good: out of the queue, attempts cancelled, deps no longer needed by it. */
  deactivate(t: TaskState): void {
    this.dequeue(t)
    if (this.constrainedQ.has(t)) this.constrainedQ.remove(t)
    this.cancelAttempts(t)
    dropResults(this, t)
    this.leaveActive(t)
  }

  unlinkOne(d: TaskState, t: TaskState): void {
    const ds = d.dependents
    if (ds === null) return
    ds.delete(t)
    if (ds.size === 0) d.dependents = null
    this.todo.push(d)
  }

  unlinkDeps(t: TaskState): void {
    for (const d of t.deps) this.unlinkOne(d, t)
    t.deps = NO_TASKS
  }

  enteredMemory(t: TaskState): void {
    this.fireAndForgetDone(t)
    if (t.dependents !== null) {
      for (const d of t.dependents) {
        if (!isActive(d.status)) continue
        d.waitingOn--
        if (d.waitingOn !== 0) continue
        if (d.status === 'waiting') this.transition(d, 'queued', NO_INFO)
        else if (d.status === 'processing') for (const a of d.attempts ?? []) clearAhead(this, a)
      }
    }
    // a value re-verified: after the dependents above counted it, so those it sends back to work count it too
    const replaced = t.suspect !== null && verified(this, t)
    const clients = wanterList(t)
    if (clients.length > 0) {
      this.out.push(replaced
        ? { type: 'key-state', clients, key: t.key, state: 'memory', nbytes: t.nbytes, replaced: true }
        : { type: 'key-state', clients, key: t.key, state: 'memory', nbytes: t.nbytes })
    }
    const g = t.gatherers
    if (g !== null) {
      t.gatherers = null
      const w = this.bestHolder(t)
      for (const client of g) this.out.push({ type: 'send-data', client, key: t.key, worker: w.id })
    }
  }

  /** Unfinished dependents of a task that left memory wait for it again. */
  leftMemory(t: TaskState): void {
    if (t.dependents === null) return
    for (const d of t.dependents) {
      if (!isActive(d.status)) continue
      d.waitingOn++
      if (d.status !== 'waiting') this.transition(d, 'waiting', { note: `dependency ${t.key} left memory` })
    }
  }

  announceError(t: TaskState): void {
    this.fireAndForgetDone(t)
    const clients = wanterList(t)
    if (clients.length > 0) this.out.push(this.errorState(t, clients))
    t.gatherers = null
  }

  forget(t: TaskState): void {
    if (t.dependents !== null) throw broken(this, t, `forgetting ${t.key} while ${t.dependents.size} dependents keep it`)
    this.unlinkDeps(t)
    this.tasks.delete(t.key)
    this.underReplicated.delete(t)
    dropMoves(this, t)
    this.unwantAll(t)
    this.setStatus(t, 'forgotten')
    this.out.push({ type: 'forget', key: t.key })
  }

  enqueue(t: TaskState): void {
    if (t.turn < 0) {
      // Fair turns: each client counts its own tasks per priority; a client that starts
      // late begins at the turn being dispatched now, so it neither starves nor is starved.
      const c = t.owner
      const last = this.lastTurn.get(t.priority) ?? 0
      const mine = c.turns.get(t.priority) ?? 0
      const turn = mine > last ? mine : last
      c.turns.set(t.priority, turn + 1)
      t.turn = turn
      t.seq = ++this.taskSeq
    }
    if (t.fn === null) this.scatterQ.add(t)
    else if (t.restrict !== null || t.redundant !== null) this.constrainedQ.push(t)
    else this.mainQ.push(t)
  }

  dequeue(t: TaskState): void {
    if (t.fn === null) this.scatterQ.delete(t)
    else if (this.mainQ.has(t)) this.mainQ.remove(t)
    else if (this.constrainedQ.has(t)) this.constrainedQ.remove(t)
  }

  // ───────────────────────────── attempts and capacity ─────────────────────────────

  cancelAttempts(t: TaskState): void {
    const as = t.attempts
    if (as === null) return
    for (const a of as.slice()) {
      if (!a.put && a.worker.status !== 'gone') this.out.push({ type: 'cancel-task', worker: a.worker.id, key: t.key, attempt: a.id })
      this.endAttempt(a)
    }
  }

  endAttempt(a: Attempt): void {
    if (!a.live) return
    a.live = false
    const t = a.task
    const as = t.attempts as Attempt[]
    if (as.length === 1) {
      if (as[0] === a) t.attempts = null
    } else {
      const i = as.indexOf(a)
      if (i >= 0) as.splice(i, 1)
    }
    const w = a.worker
    if (a.put) {
      w.puts?.delete(a)
      w.pendingBytes -= t.nbytes
    } else {
      w.attempts.delete(a)
      if (a.ahead) { a.ahead = false; w.ahead-- }
      if (a.thief !== null) {
        const thief = a.thief
        a.thief = null
        thief.incoming--
        w.stealing--
        this.touch(thief)
      }
      if (w.order.length > 2 * w.attempts.size + 32) w.order = w.order.filter(x => x.live)
    }
    this.touch(w)
  }

  capacity(w: WorkerState): number {
    const ahead = Math.min(Math.max(Math.ceil((w.slots * this.opts.pipelineMs) / this.capMs), w.slots), this.opts.maxAhead)
    return Math.min(w.slots + ahead, w.window)
  }

  /**
   * The one place a worker's status changes (see WORKER_TRANSITIONS): an impossible
   * transition throws, naming the worker; the count of open workers follows.
   */
  setWorkerStatus(w: WorkerState, to: WorkerStatus): void {
    const from = w.status
    if (from === to) return
    if (!WORKER_TRANSITIONS[from].includes(to)) throw new Error(`scheduler: worker ${w.id} (${w.name}) cannot go from ${from} to ${to}`)
    w.status = to
    if ((from === 'running') !== (to === 'running')) this.openWorkers += to === 'running' ? 1 : -1
    this.touch(w)
  }

  /** Re-files a worker in the free list, the thieves and the victims after any change. */
  touch(w: WorkerState): void {
    const open = w.status === 'running'
    const n = w.attempts.size
    const free = this.free
    w.cap = this.capacity(w)
    if (open && n < w.cap) {
      if (w.freeIndex < 0) {
        w.freeIndex = free.length
        free.push(w)
      }
    } else if (w.freeIndex >= 0) {
      const last = free.pop() as WorkerState
      if (last !== w) {
        free[w.freeIndex] = last
        last.freeIndex = w.freeIndex
      }
      w.freeIndex = -1
    }
    const room = w.freeIndex >= 0 ? w.cap - n : 0
    this.freeRoom += room - w.room
    w.room = room
    const idle = open && n - w.ahead + w.incoming < w.slots
    if (idle !== w.inIdle) {
      w.inIdle = idle
      if (idle) this.idle.add(w)
      else this.idle.delete(w)
    }
    const saturated = w.status !== 'gone' && n - w.ahead - w.stealing > w.slots
    if (saturated !== w.inSaturated) {
      w.inSaturated = saturated
      if (saturated) this.saturated.add(w)
      else this.saturated.delete(w)
    }
  }

  /** A group's run time (clamped to what the scheduler saw elapse), for packing its tasks. */
  observeGroup(group: string, w: WorkerState, ms: number): void {
    if (!validMs(ms)) return
    const g = this.groupMs.get(group)
    if (g === undefined) {
      if (this.groupMs.size >= 10_000) this.groupMs.clear()
      this.groupMs.set(group, { ms: Math.max(MIN_AVG_MS, ms), n: 1, by: w.volunteer, two: false })
      return
    }
    g.ms = movingAverage(g.ms, ms)
    g.n++
    if (g.by !== w.volunteer) g.two = true
  }

  updateAvg(ms: number): void {
    if (!validMs(ms)) return
    this.avgMs = movingAverage(this.avgMs, ms)
    // no pass over the workers: each is re-filed with the new capacity at its next touch
    // (every assignment and result touches its worker), so this is O(1) per report
    if (this.avgMs * CAPACITY_HYSTERESIS < this.capMs || this.avgMs > this.capMs * CAPACITY_HYSTERESIS) this.capMs = this.avgMs
  }

  // ───────────────────────────── placement ─────────────────────────────

  // ───────────────────────────── dependents sent ahead ─────────────────────────────

  // ───────────────────────────── stories and validation ─────────────────────────────
  /** Checks every invariant; throws with the offending task's story. O(tasks + workers). */
  validate(): void { validate(this) }
}
