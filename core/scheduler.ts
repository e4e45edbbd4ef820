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
 * @example
 * const s = new Scheduler({ validate: true })
 * s.handle({ type: 'worker-added', worker: 'w1', name: 'tab-1', kind: 'browser', slots: 2 })
 * s.handle({ type: 'submit', client: 'c1', tasks: [{ key: 'inc-1', fn: 'h', deps: [], group: 'inc', priority: 0, retries: 0, redundancy: 1, workers: [], nbytes: 8 }] })
 * // → [{ type: 'assign', worker: 'w1', task: { key: 'inc-1', attempt: 1, ... } }]
 * s.handle({ type: 'task-finished', worker: 'w1', key: 'inc-1', attempt: 1, nbytes: 8, ms: 1 })
 * // → [{ type: 'key-state', clients: ['c1'], key: 'inc-1', state: 'memory', nbytes: 8 }]
 */
import type { WireError } from '../shared/errors.js'
import type {
  AssignedTask, Command, EventMeta, GroupCounts, SchedulerEvent, SchedulerOptions, StoryEntry, TaskSpec, TaskStatus, WorkerInfo,
} from './scheduler-types.js'
import { TaskQueue, runsBefore } from './scheduler-queue.js'
import {
  Attempt, ClientState, NO_TASKS, Redundancy, TaskState, WorkerState,
  addWanter, hasWanter, isActive, removeWanter, wanterList,
  type Entry, type Status,
} from './scheduler-state.js'

/** Weight of the newest report in the moving average of task run time. */
const EMA_WEIGHT = 0.2
/** Capacities are recomputed (an O(workers) pass) only when the average drifts by this factor. */
const CAPACITY_HYSTERESIS = 1.25
/** Lower bound for the average run time, so a 0 ms report cannot divide by zero. */
const MIN_AVG_MS = 1e-3
/** Constrained tasks (restricted, redundant) set aside per dispatch before we stop looking at them. */
const MAX_SET_ASIDE = 256
/** Workers examined for a least-occupied choice when there are many (rotating sample). */
const SAMPLE = 32
/** Attempts examined per stealing round. */
const STEAL_SCAN = 256

interface ResolvedOptions {
  validate: boolean
  storyLength: number
  bandwidth: number
  pipelineMs: number
  maxAhead: number
  allowedFailures: number
  leaseMs: number
  sendAhead: boolean
}

interface Info { worker?: WorkerState; note?: string; error?: WireError; /** shown as 'attempt N' in the story */ attempt?: number }
type TransitionFn = (this: Scheduler, t: TaskState, to: TaskStatus, info: Info) => void
/** A copy of data between workers (hand-off of a retiring worker, or a replica of scattered data). */
interface Move { from: WorkerState; to: WorkerState; handoff: boolean }

const NO_INFO: Info = Object.freeze({})
const NO_KEYS: readonly string[] = Object.freeze([])
const STATUSES: readonly TaskStatus[] = ['waiting', 'queued', 'processing', 'memory', 'erred', 'released', 'forgotten']

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
    maxAhead: positive('maxAhead', o.maxAhead, 1000, true, 0),
    allowedFailures: positive('allowedFailures', o.allowedFailures, 3, true, 1),
    leaseMs: positive('leaseMs', o.leaseMs, 15_000, false, 1),
    sendAhead: o.sendAhead !== false,
  }
}

function int(v: unknown, dflt: number, min: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? Math.max(min, Math.floor(v)) : dflt
}

export class Scheduler {
  private readonly opts: ResolvedOptions
  private readonly tasks = new Map<string, TaskState>()
  private readonly byId = new Map<string, WorkerState>()
  private readonly byName = new Map<string, WorkerState[]>()
  private readonly clients = new Map<string, ClientState>()
  /** ready tasks any worker may run */
  private readonly mainQ = new TaskQueue<TaskState>()
  /** ready tasks with restrictions, and redundant tasks that still need runs */
  private readonly constrainedQ = new TaskQueue<TaskState>()
  /** scattered values waiting for a worker to put them on */
  private readonly scatterQ = new Set<TaskState>()
  /** open workers below capacity */
  private readonly free: WorkerState[] = []
  /** open workers with a free slot (thieves) */
  private readonly idle = new Set<WorkerState>()
  /** workers with more unstolen tasks than slots (victims) */
  private readonly saturated = new Set<WorkerState>()
  private readonly retiringWorkers = new Set<WorkerState>()
  private readonly moves = new Map<TaskState, Move[]>()
  private readonly underReplicated = new Set<TaskState>()
  /** workers with tasks that could be sent ahead to them once they have capacity (see sendAheadFrom) */
  private readonly aheadLater = new Map<WorkerState, Set<TaskState>>()
  /** tasks whose wanters or dependents changed: reconsidered at the end of the event */
  private readonly todo: TaskState[] = []
  private readonly statusCounts: Record<TaskStatus, number> = { waiting: 0, queued: 0, processing: 0, memory: 0, erred: 0, released: 0, forgotten: 0 }
  private readonly groupCounts = new Map<string, GroupCounts>()
  /** highest turn dispatched, per priority level (fair turns) */
  private readonly lastTurn = new Map<number, number>()
  private frees = new Map<WorkerState, string[]>()
  private out: Command[] = []
  private stimulus = 'init'
  private now = 0
  private eventCount = 0
  private attemptSeq = 0
  private taskSeq = 0
  private workerSeq = 0
  private mark = 0
  private cursor = 0
  private openWorkers = 0
  private lastEntry: Entry | null = null
  private lastGroup: GroupCounts | null = null
  private derivedFrom: WireError | null = null
  private derived: WireError | null = null
  /** moving average of reported task run time (ms) */
  private avgMs = 1
  /** the average capacities are computed with; follows avgMs with hysteresis */
  private capMs = 1

  constructor(options: SchedulerOptions = {}) {
    this.opts = resolveOptions(options)
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

  private settle(): void {
    this.dispatch()
    this.checkRetiring()
    this.flushFrees()
    if (this.opts.validate) this.validate()
  }

  private apply(event: SchedulerEvent & EventMeta, now: number | undefined): void {
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

  /** Keys whose data the worker holds, per the scheduler (O(keys held), for reconnect reconciliation). */
  /** The live assignments of a worker, in the order they were made (re-sent when it reconnects). */
  assignmentsOf(worker: string): AssignedTask[] {
    const w = this.byId.get(worker)
    if (w === undefined) return []
    const out: AssignedTask[] = []
    for (const a of w.order) if (a.live) out.push(this.assigned(a.task, a))
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
    return t ? this.storyOf(t) : []
  }

  workers(): WorkerInfo[] {
    const out: WorkerInfo[] = []
    for (const w of this.byId.values()) {
      out.push({
        id: w.id, name: w.name, kind: w.kind, slots: w.slots, accepting: w.accepting, retiring: w.retiring,
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

  /** Clients holding futures to the key. */
  wantedBy(key: string): string[] {
    const t = this.tasks.get(key)
    return t ? wanterList(t) : []
  }

  // ───────────────────────────── clients ─────────────────────────────

  private client(id: string): ClientState {
    let c = this.clients.get(id)
    if (c === undefined) {
      c = new ClientState(id)
      this.clients.set(id, c)
    }
    return c
  }

  private want(t: TaskState, c: ClientState): boolean {
    if (!addWanter(t, c.id)) return false
    c.wanted++
    return true
  }

  private unwant(t: TaskState, client: string): boolean {
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

  private unwantAll(t: TaskState): void {
    for (const c of wanterList(t)) this.unwant(t, c)
    t.gatherers = null
  }

  private onClientRemoved(id: string): void {
    const c = this.clients.get(id)
    this.clients.delete(id)
    if (c === undefined || c.wanted === 0) return
    // O(tasks), but a client leaves rarely and this keeps per-task memory flat.
    for (const t of this.tasks.values()) {
      if (this.unwant(t, id)) this.todo.push(t)
    }
  }

  private onSubmit(clientId: string, specs: readonly TaskSpec[]): void {
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
      const fn = s.fn === null || typeof s.fn === 'string' ? s.fn : null
      const restrict = Array.isArray(s.workers) && s.workers.length > 0 ? s.workers.slice() : null
      const t = new TaskState(
        s.key, fn, typeof s.group === 'string' ? s.group : 'task',
        typeof s.priority === 'number' && Number.isFinite(s.priority) ? s.priority : 0,
        int(s.retries, 0, 0), int(s.redundancy, 1, 1), restrict, int(s.nbytes, 0, 0), c,
      )
      if (fn !== null && t.redundancy > 1) t.redundant = new Redundancy()
      this.tasks.set(s.key, t)
      this.want(t, c)
      // heapIndex is unused while 'new': it carries the task's index in this batch.
      t.heapIndex = fresh.length
      fresh.push(t)
      freshDeps.push(fn === null || !Array.isArray(s.deps) ? NO_KEYS : s.deps)
    }
    if (fresh.length > 0) this.admit(fresh, freshDeps)
  }

  /** Resolves a batch's dependencies depth-first, so a task may name keys later in its own batch. */
  private admit(fresh: TaskState[], freshDeps: (readonly string[])[]): void {
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

  private resolve(x: TaskState, keys: readonly string[]): void {
    x.heapIndex = -1
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

  private onRelease(client: string, keys: readonly string[]): void {
    for (const k of keys) {
      const t = this.tasks.get(k)
      if (t !== undefined && this.unwant(t, client)) this.todo.push(t)
    }
  }

  /**
   * Every wanter of the keys, and of their unfinished dependents that this client
   * wants, gets 'cancelled'; then the tasks are released, which cancels running
   * attempts and forgets what nothing else needs. Work another client's tasks still
   * depend on goes on for them.
   */
  private onCancel(client: string, keys: readonly string[]): void {
    for (const k of keys) {
      const t = this.tasks.get(k)
      if (t === undefined) continue
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
        const clients = wanterList(x)
        if (clients.length > 0) {
          this.out.push({ type: 'key-state', clients, key: x.key, state: 'cancelled', error: { code: 'cancelled', message: `${x.key} was cancelled by client ${client}`, key: x.key } })
        }
        this.unwantAll(x)
        this.record(x, x.status, x.status as TaskStatus, undefined, `cancelled by ${client}`)
        this.todo.push(x)
      }
      this.drain()
    }
  }

  private onGather(client: string, keys: readonly string[]): void {
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

  // ───────────────────────────── workers ─────────────────────────────

  private onWorkerAdded(e: Extract<SchedulerEvent, { type: 'worker-added' }>): void {
    if (this.byId.has(e.worker)) return
    const w = new WorkerState(e.worker, e.name, e.kind, int(e.slots, 1, 1), this.now, ++this.workerSeq)
    w.lastSeen = this.now
    this.byId.set(w.id, w)
    const named = this.byName.get(w.name)
    if (named) named.push(w)
    else this.byName.set(w.name, [w])
    this.touch(w)
    for (const h of e.held ?? []) {
      const t = this.tasks.get(h.key)
      if (t !== undefined && t.status === 'memory' && t.redundant === null && !(t.holders as WorkerState[]).includes(w)) {
        this.addHolder(t, w)
        this.record(t, 'memory', 'memory', w.id, 'held by a worker that joined')
      } else {
        this.freeKey(w, h.key)
      }
    }
    this.replicateAll()
  }

  private onWorkerRemoved(id: string, reason: 'disconnected' | 'left' | 'kicked'): void {
    const w = this.byId.get(id)
    if (w === undefined) return
    w.alive = false
    this.byId.delete(id)
    const named = this.byName.get(w.name)
    if (named) {
      const i = named.indexOf(w)
      if (i >= 0) named.splice(i, 1)
      if (named.length === 0) this.byName.delete(w.name)
    }
    this.retiringWorkers.delete(w)
    this.aheadLater.delete(w)
    this.frees.delete(w)
    this.touch(w)
    const counts = reason !== 'left'
    const why = `worker ${w.name} removed (${reason})`
    for (const a of [...w.order]) {
      if (!a.live) continue
      const ahead = a.ahead
      this.endAttempt(a)
      this.record(a.task, a.task.status, a.task.status as TaskStatus, w.id, `lost: ${why}`, a.id)
      this.attemptFailed(a.task, counts && !ahead)
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
        this.removeMove(t, m)
        if (m.to === w && m.handoff && m.from.alive) this.handoff(m.from, t)
      }
    }
    if (w.reported !== null) {
      for (const t of [...w.reported]) this.syncRedundant(t)
      w.reported = null
    }
    for (const t of [...w.holds]) this.loseHolder(t, w)
  }

  private onWorkerStatus(id: string, accepting: boolean, slots?: number): void {
    const w = this.byId.get(id)
    if (w === undefined) return
    if (slots !== undefined && slots !== w.slots) {
      w.slots = int(slots, w.slots, 1)
      this.touch(w)
    }
    if (w.accepting === accepting) return
    w.accepting = accepting
    this.touch(w)
    if (accepting) this.replicateAll()
  }

  /**
   * Graceful leave: no new tasks; tasks it has likely not started (beyond its slots,
   * in assignment order) go elsewhere; data only it holds and still needed is copied
   * to the best other worker. retire-done follows once it runs nothing and every
   * hand-off was acknowledged.
   */
  private onWorkerRetiring(id: string): void {
    const w = this.byId.get(id)
    if (w === undefined || w.retiring) return
    w.retiring = true
    this.touch(w)
    this.retiringWorkers.add(w)
    let others = false
    for (const o of this.byId.values()) if (o !== w && !o.retiring) { others = true; break }
    if (!others) {
      w.retireDone = true
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
      this.record(a.task, 'processing', 'processing', w.id, 'taken back: worker retiring', a.id)
      this.afterAttemptLost(a.task)
    }
    if (w.puts !== null) {
      for (const a of [...w.puts]) {
        this.endAttempt(a)
        this.afterPutLost(a.task)
      }
    }
    for (const t of w.holds) this.handoffIfSole(w, t)
  }

  private checkRetiring(): void {
    for (const w of this.retiringWorkers) {
      if (w.retireDone || w.attempts.size > 0 || (w.puts !== null && w.puts.size > 0) || (w.handoffs !== null && w.handoffs.size > 0)) continue
      w.retireDone = true
      this.out.push({ type: 'retire-done', worker: w.id })
    }
  }

  // ───────────────────────────── results and faults ─────────────────────────────

  private findAttempt(t: TaskState | undefined, w: WorkerState, id: number): Attempt | undefined {
    const as = t?.attempts
    if (!as) return undefined
    for (const a of as) if (a.id === id && a.worker === w && !a.put) return a
    return undefined
  }

  private onTaskFinished(e: Extract<SchedulerEvent, { type: 'task-finished' }>): void {
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
    this.updateAvg(e.ms)
    const nbytes = int(e.nbytes, 0, 0)
    if (t.redundant !== null) {
      const r = t.redundant
      r.reports++
      r.results.push({ worker: w, digest: typeof e.digest === 'string' ? e.digest : '', nbytes })
      ;(w.reported ??= new Set()).add(t)
      this.record(t, 'processing', 'processing', w.id, `reported digest ${e.digest ?? '(none)'}`, a.id)
      this.syncRedundant(t)
      return
    }
    t.nbytes = nbytes
    this.addHolder(t, w)
    this.transition(t, 'memory', { worker: w, attempt: a.id })
    if (w.retiring) this.handoffIfSole(w, t)
  }

  /** A result for an attempt that is not current: drop it, and free the data if the worker holds it for nothing. */
  private dropStale(t: TaskState | undefined, w: WorkerState, key: string, attempt: number): void {
    if (t !== undefined) {
      this.record(t, t.status, t.status as TaskStatus, w.id, 'stale result dropped', attempt)
      if (t.holders?.includes(w) || t.redundant?.results.some(r => r.worker === w) || t.attempts?.some(a => a.worker === w)) return
    }
    this.freeKey(w, key)
  }

  private onTaskErred(e: Extract<SchedulerEvent, { type: 'task-erred' }>): void {
    const w = this.byId.get(e.worker)
    if (w === undefined) return
    const t = this.tasks.get(e.key)
    const a = this.findAttempt(t, w, e.attempt)
    if (t === undefined || a === undefined) return
    this.endAttempt(a)
    if (e.crashed === true) {
      this.record(t, 'processing', 'processing', w.id, 'crashed its worker', a.id)
      this.attemptFailed(t, true)
    } else if (t.retries > 0) {
      t.retries--
      this.record(t, 'processing', 'processing', w.id, `erred (${e.error?.message ?? ''}); retrying, ${t.retries} retries left`, a.id)
      this.afterAttemptLost(t)
    } else {
      const error: WireError = { ...e.error, code: e.error?.code ?? 'task-error', message: e.error?.message ?? 'task failed', key: t.key }
      this.err(t, error)
    }
  }

  private onWorkerSeen(id: string): void {
    const w = this.byId.get(id)
    if (w === undefined) return
    w.lastSeen = this.now
    if (!w.lapsed) return
    w.lapsed = false
    this.touch(w)
    this.replicateAll()
  }

  /** Leases: a worker silent for leaseMs with tasks in hand loses them and gets none until it speaks. */
  private onTick(): void {
    const lease = this.opts.leaseMs
    for (const w of this.byId.values()) {
      if (w.lapsed || w.attempts.size === 0 || this.now - w.lastSeen < lease) continue
      w.lapsed = true
      this.touch(w)
      this.out.push({ type: 'worker-lapsed', worker: w.id, tasks: w.attempts.size, quietMs: this.now - w.lastSeen })
      for (const a of [...w.order]) {
        if (!a.live) continue
        const t = a.task
        const ahead = a.ahead
        this.out.push({ type: 'cancel-task', worker: w.id, key: t.key, attempt: a.id })
        this.endAttempt(a)
        this.record(t, 'processing', 'processing', w.id, 'lease expired', a.id)
        // a task sent ahead never started: its loss does not count against it
        this.attemptFailed(t, !ahead)
      }
    }
  }

  private onMissingData(e: Extract<SchedulerEvent, { type: 'missing-data' }>): void {
    const w = this.byId.get(e.worker)
    if (w === undefined) return
    const t = this.tasks.get(e.key)
    const a = this.findAttempt(t, w, e.attempt)
    if (a !== undefined) {
      this.endAttempt(a)
      this.record(a.task, 'processing', 'processing', w.id, `could not fetch ${(e.missing ?? []).map(m => m.key).join(', ')}`, a.id)
    }
    for (const m of e.missing ?? []) {
      const d = this.tasks.get(m.key)
      const h = this.byId.get(m.holder)
      if (d !== undefined && h !== undefined && d.holders?.includes(h)) this.loseHolder(d, h)
    }
    if (a !== undefined) this.afterAttemptLost(a.task)
  }

  private onDataLost(id: string, keys: readonly string[]): void {
    const w = this.byId.get(id)
    if (w === undefined) return
    for (const k of keys) {
      const t = this.tasks.get(k)
      if (t !== undefined && t.holders?.includes(w)) this.loseHolder(t, w)
    }
  }

  private onStealResponse(e: Extract<SchedulerEvent, { type: 'steal-response' }>): void {
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
      this.record(t, 'processing', 'processing', w.id, 'steal refused', a.id)
      return
    }
    // The victim gave the task up (even if its thief has left since): it must run elsewhere.
    this.endAttempt(a)
    this.record(t, 'processing', 'processing', w.id, 'stolen', a.id)
    this.afterAttemptLost(t)
  }

  private onDataAdded(id: string, key: string, nbytes: number): void {
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
        this.record(t, 'memory', 'memory', w.id, 'replica stored')
      }
      return
    }
    const m = this.moves.get(t)?.find(x => x.to === w)
    if (m !== undefined && t.status === 'memory') {
      this.removeMove(t, m)
      if (!(t.holders as WorkerState[]).includes(w)) this.addHolder(t, w)
      this.record(t, 'memory', 'memory', w.id, `copy from ${m.from.id} stored`)
      if (w.retiring) this.handoffIfSole(w, t)
      return
    }
    if (!t.holders?.includes(w)) this.freeKey(w, key)
  }

  /** A run was lost with its worker (counts) or given up (does not count). */
  private attemptFailed(t: TaskState, counts: boolean): void {
    if (t.status !== 'processing') return
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
  private afterAttemptLost(t: TaskState): void {
    if (t.status !== 'processing') return
    if (t.redundant !== null) { this.syncRedundant(t); return }
    // a task sent ahead whose inputs are not done waits for them again
    if (t.attempts === null) this.transition(t, t.waitingOn > 0 ? 'waiting' : 'queued', NO_INFO)
  }

  private afterPutLost(t: TaskState): void {
    if (t.status === 'processing' && t.attempts === null) this.transition(t, 'queued', { note: 'put-data target left' })
    else if (t.status === 'memory') this.replicate(t)
  }

  // ───────────────────────────── redundancy ─────────────────────────────

  private tally(r: Redundancy): { best: number; digest: string } {
    let best = 0
    let digest = ''
    const rs = r.results
    for (let i = 0; i < rs.length; i++) {
      const d = (rs[i] as { digest: string }).digest
      let n = 0
      for (const x of rs) if (x.digest === d) n++
      if (n > best) { best = n; digest = d }
    }
    return { best, digest }
  }

  private attemptsNeeded(t: TaskState): number {
    const r = t.redundant
    if (r === null) return t.attempts === null ? 1 : 0
    const k = t.redundancy
    const live = t.attempts?.length ?? 0
    const remaining = 2 * k + 1 - r.reports - live
    return Math.max(0, Math.min(k - this.tally(r).best - live, remaining))
  }

  /** Re-evaluates a redundant task after a report or a lost run: accept, ask for more runs, or give up. */
  private syncRedundant(t: TaskState): void {
    const r = t.redundant
    if (r === null || t.status !== 'processing') return
    if (r.results.some(x => !x.worker.alive)) r.results = r.results.filter(x => x.worker.alive)
    const k = t.redundancy
    const { best, digest } = this.tally(r)
    if (best >= k) { this.accept(t, digest); return }
    const live = t.attempts?.length ?? 0
    const remaining = 2 * k + 1 - r.reports - live
    if (live === 0 && best + Math.max(0, remaining) < k) {
      const n = r.reports
      this.dropResults(t)
      this.err(t, { code: 'redundancy-mismatch', message: `task ${t.key}: ${n} runs on distinct workers did not agree (${k} had to)`, key: t.key })
      return
    }
    if (live === 0 && r.results.length === 0) {
      this.transition(t, 'queued', NO_INFO)
      return
    }
    const need = Math.max(0, Math.min(k - best - live, remaining))
    const queued = this.constrainedQ.has(t)
    if (need > 0 && !queued) this.constrainedQ.push(t)
    else if (need === 0 && queued) this.constrainedQ.remove(t)
  }

  private accept(t: TaskState, digest: string): void {
    const r = t.redundant as Redundancy
    const agree = r.results.filter(x => x.digest === digest)
    for (const x of r.results) if (x.digest !== digest) this.freeKey(x.worker, t.key)
    this.dropResults(t, true)
    t.nbytes = (agree[0] as { nbytes: number }).nbytes
    for (const x of agree) this.addHolder(t, x.worker)
    this.transition(t, 'memory', { note: `${agree.length} runs agree on ${digest}` })
    for (const x of agree) if (x.worker.retiring) this.handoffIfSole(x.worker, t)
  }

  /** Forgets a redundant task's votes; rejected data is freed unless `keep`. */
  private dropResults(t: TaskState, keep = false): void {
    const r = t.redundant
    if (r === null) return
    for (const x of r.results) {
      x.worker.reported?.delete(t)
      if (!keep) this.freeKey(x.worker, t.key)
    }
    r.results = []
    if (this.constrainedQ.has(t)) this.constrainedQ.remove(t)
  }

  // ───────────────────────────── data on workers ─────────────────────────────

  private addHolder(t: TaskState, w: WorkerState): void {
    // Literal arrays get exactly the capacity they need; push on [] would reserve 16 slots.
    if (t.holders === null) t.holders = [w]
    else t.holders.push(w)
    w.holds.add(t)
    w.nbytes += t.nbytes
  }

  /** The worker no longer has the key's data: recompute it, or fail it if it has no lineage. */
  private loseHolder(t: TaskState, w: WorkerState): void {
    const hs = t.holders
    if (hs === null) return
    const i = hs.indexOf(w)
    if (i < 0) return
    hs.splice(i, 1)
    w.holds.delete(t)
    w.nbytes -= t.nbytes
    const ms = this.moves.get(t)
    if (ms) for (const m of ms.slice()) if (m.from === w) this.removeMove(t, m)
    if (hs.length > 0) {
      this.record(t, 'memory', 'memory', w.id, `replica on ${w.name} lost`)
      if (t.fn === null) this.replicate(t)
      // The copy left may sit on a retiring worker that had no reason to hand it off.
      const last = hs[0] as WorkerState
      if (hs.length === 1 && last.retiring && !last.retireDone) this.handoffIfSole(last, t)
      return
    }
    t.holders = null
    this.dropMoves(t)
    if (t.fn === null) {
      this.err(t, { code: 'lost-data', message: `the scattered value ${t.key} was held only by worker ${w.name} which left`, key: t.key }, w)
    } else if (this.needsData(t)) {
      this.recompute(t, `data lost with ${w.name}`)
    } else {
      this.transition(t, t.dependents !== null ? 'released' : 'forgotten', { worker: w })
    }
  }

  /** Frees the data everywhere (the task leaves memory). */
  private dropData(t: TaskState): void {
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
    this.dropMoves(t)
    this.underReplicated.delete(t)
  }

  private freeKey(w: WorkerState, key: string): void {
    if (!w.alive) return
    const ks = this.frees.get(w)
    if (ks) ks.push(key)
    else this.frees.set(w, [key])
  }

  private flushFrees(): void {
    if (this.frees.size === 0) return
    for (const [w, keys] of this.frees) {
      if (!w.alive) continue
      // A key freed and then given back to the same worker within this event stays.
      const ks = keys.filter(k => {
        const t = this.tasks.get(k)
        return t === undefined || !(t.holders?.includes(w) || t.attempts?.some(a => a.worker === w))
      })
      if (ks.length > 0) this.out.push({ type: 'free-keys', worker: w.id, keys: ks })
    }
    this.frees = new Map()
  }

  private bestHolder(t: TaskState): WorkerState {
    const hs = t.holders as WorkerState[]
    let best = hs[0] as WorkerState
    let bestScore = Infinity
    for (const w of hs) {
      const score = (w.retiring ? 1e9 : 0) + w.attempts.size / w.slots
      if (score < bestScore) { best = w; bestScore = score }
    }
    return best
  }

  /** Up to k workers to store a copy of t on: accepting, non-retiring, least data first (paused ones next if `allowPaused`). */
  private dataTargets(t: TaskState, k: number, allowPaused: boolean): WorkerState[] {
    const chosen: WorkerState[] = []
    const pending = new Set<WorkerState>()
    for (const a of t.attempts ?? []) pending.add(a.worker)
    for (const m of this.moves.get(t) ?? []) pending.add(m.to)
    for (let pass = 0; pass < (allowPaused ? 2 : 1) && chosen.length < k; pass++) {
      while (chosen.length < k) {
        let best: WorkerState | null = null
        let bestLoad = Infinity
        for (const w of this.byId.values()) {
          if (w.retiring || (pass === 0 && !w.accepting) || chosen.includes(w) || pending.has(w) || t.holders?.includes(w)) continue
          const load = w.nbytes + w.pendingBytes
          if (load < bestLoad || (load === bestLoad && best !== null && w.seq < best.seq)) { best = w; bestLoad = load }
        }
        if (best === null) break
        chosen.push(best)
      }
    }
    return chosen
  }

  private startPut(t: TaskState, w: WorkerState): void {
    const a = new Attempt(++this.attemptSeq, t, w, true)
    if (t.attempts === null) t.attempts = [a]
    else t.attempts.push(a)
    ;(w.puts ??= new Set()).add(a)
    w.pendingBytes += t.nbytes
    this.out.push({ type: 'put-data', worker: w.id, key: t.key })
  }

  private placeScattered(): void {
    for (const t of this.scatterQ) {
      const targets = this.dataTargets(t, t.redundancy, false)
      if (targets.length === 0) break
      this.transition(t, 'processing', { worker: targets[0] as WorkerState, note: `put-data to ${targets.map(w => w.id).join(', ')}` })
      for (const w of targets) this.startPut(t, w)
    }
  }

  /** Keeps `redundancy` copies of a scattered value: copies from a holder to new workers. */
  private replicate(t: TaskState): void {
    if (t.fn !== null || t.status !== 'memory') { this.underReplicated.delete(t); return }
    const have = (t.holders as WorkerState[]).length + (t.attempts?.length ?? 0) + (this.moves.get(t)?.length ?? 0)
    const missing = t.redundancy - have
    if (missing <= 0) { this.underReplicated.delete(t); return }
    const targets = this.dataTargets(t, missing, false)
    for (const to of targets) this.startMove(t, this.bestHolder(t), to, false)
    if (targets.length < missing) this.underReplicated.add(t)
    else this.underReplicated.delete(t)
  }

  private replicateAll(): void {
    if (this.underReplicated.size === 0) return
    for (const t of [...this.underReplicated]) this.replicate(t)
  }

  private handoffIfSole(w: WorkerState, t: TaskState): void {
    const hs = t.holders
    if (t.status !== 'memory' || hs === null || hs.length !== 1 || hs[0] !== w || !this.needsData(t)) return
    if (w.handoffs?.has(t)) return
    this.handoff(w, t)
  }

  private handoff(from: WorkerState, t: TaskState): void {
    if (t.status !== 'memory' || !(t.holders as WorkerState[]).includes(from)) return
    const to = this.dataTargets(t, 1, true)[0]
    if (to === undefined) return
    this.startMove(t, from, to, true)
  }

  private startMove(t: TaskState, from: WorkerState, to: WorkerState, handoff: boolean): void {
    const ms = this.moves.get(t)
    const m: Move = { from, to, handoff }
    if (ms) ms.push(m)
    else this.moves.set(t, [m])
    if (handoff) (from.handoffs ??= new Set()).add(t)
    this.record(t, 'memory', 'memory', to.id, `${handoff ? 'hand-off' : 'replica'} copy from ${from.id}`)
    this.out.push({ type: 'move-data', key: t.key, from: from.id, to: to.id })
  }

  private removeMove(t: TaskState, m: Move): void {
    const ms = this.moves.get(t)
    if (!ms) return
    const i = ms.indexOf(m)
    if (i >= 0) ms.splice(i, 1)
    if (ms.length === 0) this.moves.delete(t)
    if (m.handoff && !ms.some(x => x.handoff && x.from === m.from)) m.from.handoffs?.delete(t)
  }

  private dropMoves(t: TaskState): void {
    const ms = this.moves.get(t)
    if (!ms) return
    for (const m of ms) if (m.handoff) m.from.handoffs?.delete(t)
    this.moves.delete(t)
  }

  // ───────────────────────────── release, recompute, errors ─────────────────────────────

  /** Wanted by a client, or by an unfinished dependent. */
  private isNeeded(t: TaskState): boolean {
    return t.wanters !== null || t.activeDependents > 0
  }

  /** Needed, or scattered data some dependent's lineage leans on (it has no lineage of its own). */
  private needsData(t: TaskState): boolean {
    return this.isNeeded(t) || (t.fn === null && t.dependents !== null)
  }

  private drain(): void {
    const todo = this.todo
    while (todo.length > 0) this.reconsider(todo.pop() as TaskState)
  }

  /** Releases or forgets what is no longer needed, and brings back released tasks that are. */
  private reconsider(t: TaskState): void {
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
  private recompute(t: TaskState, note: string): void {
    if (t.fn === null) throw this.broken(t, 'scattered data cannot be recomputed')
    let notReady = 0
    for (const d of t.deps) {
      if (d.status === 'erred') { this.err(t, this.derive(d)); return }
      if (d.status !== 'memory') notReady++
    }
    if (t.redundant !== null) t.redundant = new Redundancy()
    this.transition(t, notReady > 0 ? 'waiting' : 'queued', { note })
  }

  /** Errs a task and, transitively, its unfinished dependents ("dependency <key> failed: …"). */
  private err(t: TaskState, error: WireError, worker?: WorkerState): void {
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
  private derive(d: TaskState): WireError {
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

  private errorState(t: TaskState, clients: string[]): Command {
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
    },
  }

  private transition(t: TaskState, to: TaskStatus, info: Info): void {
    const from = t.status
    const fn = Scheduler.table[from]?.[to]
    if (fn === undefined) throw this.broken(t, `impossible transition ${from} → ${to} (stimulus ${this.stimulus})`)
    const e = info.error
    this.record(t, from, to, info.worker?.id, info.note ?? (e ? `${e.code}: ${e.message.length > 200 ? e.message.slice(0, 200) + '…' : e.message}` : undefined), info.attempt ?? 0)
    fn.call(this, t, to, info)
  }

  /** new/released → waiting/queued */
  private toActive(t: TaskState, to: TaskStatus): void {
    this.setStatus(t, to)
    this.enterActive(t)
    if (to === 'queued') this.enqueue(t)
  }

  private newToErred(t: TaskState, _to: TaskStatus, info: Info): void {
    this.setStatus(t, 'erred')
    t.error = info.error as WireError
    this.announceError(t)
  }

  private waitingToQueued(t: TaskState): void {
    this.setStatus(t, 'queued')
    this.enqueue(t)
  }

  /** Sent ahead: its inputs are still running, on the worker it goes to. */
  private waitingToProcessing(t: TaskState): void {
    this.setStatus(t, 'processing')
  }

  private queuedToWaiting(t: TaskState): void {
    this.dequeue(t)
    this.setStatus(t, 'waiting')
  }

  private queuedToProcessing(t: TaskState): void {
    this.dequeue(t)
    this.setStatus(t, 'processing')
  }

  private processingToQueued(t: TaskState): void {
    this.cancelAttempts(t)
    this.recallAhead(t)
    if (this.constrainedQ.has(t)) this.constrainedQ.remove(t)
    this.setStatus(t, 'queued')
    this.enqueue(t)
  }

  private processingToWaiting(t: TaskState): void {
    this.cancelAttempts(t)
    this.recallAhead(t)
    if (t.redundant !== null) {
      // Its inputs are being recomputed: the vote starts over with the new inputs.
      this.dropResults(t)
      t.redundant = new Redundancy()
    }
    if (this.constrainedQ.has(t)) this.constrainedQ.remove(t)
    this.setStatus(t, 'waiting')
  }

  private processingToMemory(t: TaskState): void {
    // Scattered values keep their other pending puts: they become extra replicas.
    if (t.fn !== null) this.cancelAttempts(t)
    if (this.constrainedQ.has(t)) this.constrainedQ.remove(t)
    this.setStatus(t, 'memory')
    this.leaveActive(t)
    this.enteredMemory(t)
  }

  private activeToErred(t: TaskState, _to: TaskStatus, info: Info): void {
    this.deactivate(t)
    this.unlinkDeps(t)
    this.setStatus(t, 'erred')
    t.error = info.error as WireError
    this.announceError(t)
  }

  private activeToReleased(t: TaskState): void {
    this.deactivate(t)
    this.setStatus(t, 'released')
  }

  private activeToForgotten(t: TaskState): void {
    this.deactivate(t)
    this.forget(t)
  }

  private memoryToReleased(t: TaskState): void {
    this.dropData(t)
    this.setStatus(t, 'released')
    this.leftMemory(t)
  }

  private memoryToForgotten(t: TaskState): void {
    this.dropData(t)
    this.leftMemory(t)
    this.forget(t)
  }

  /** memory → waiting/queued: recompute lost data from lineage. */
  private memoryToActive(t: TaskState, to: TaskStatus): void {
    this.dropData(t)
    this.setStatus(t, to)
    this.leftMemory(t)
    this.enterActive(t)
    if (to === 'queued') this.enqueue(t)
  }

  private memoryToErred(t: TaskState, _to: TaskStatus, info: Info): void {
    this.dropData(t)
    this.setStatus(t, 'erred')
    this.leftMemory(t)
    this.unlinkDeps(t)
    t.error = info.error as WireError
    this.announceError(t)
  }

  private releasedToErred(t: TaskState, _to: TaskStatus, info: Info): void {
    this.setStatus(t, 'erred')
    this.unlinkDeps(t)
    t.error = info.error as WireError
    this.announceError(t)
  }

  private releasedToForgotten(t: TaskState): void {
    this.forget(t)
  }

  private erredToForgotten(t: TaskState): void {
    this.forget(t)
  }

  // ───────────────────────────── transition helpers ─────────────────────────────

  private setStatus(t: TaskState, to: TaskStatus): void {
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
  private enterActive(t: TaskState): void {
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

  private leaveActive(t: TaskState): void {
    for (const d of t.deps) {
      d.activeDependents--
      this.todo.push(d)
    }
  }

  /** Leaves waiting/queued/processing for good: out of the queue, attempts cancelled, deps no longer needed by it. */
  private deactivate(t: TaskState): void {
    this.dequeue(t)
    if (this.constrainedQ.has(t)) this.constrainedQ.remove(t)
    this.cancelAttempts(t)
    this.dropResults(t)
    this.leaveActive(t)
  }

  private unlinkOne(d: TaskState, t: TaskState): void {
    const ds = d.dependents
    if (ds === null) return
    ds.delete(t)
    if (ds.size === 0) d.dependents = null
    this.todo.push(d)
  }

  private unlinkDeps(t: TaskState): void {
    for (const d of t.deps) this.unlinkOne(d, t)
    t.deps = NO_TASKS
  }

  private enteredMemory(t: TaskState): void {
    if (t.dependents !== null) {
      for (const d of t.dependents) {
        if (!isActive(d.status)) continue
        d.waitingOn--
        if (d.waitingOn !== 0) continue
        if (d.status === 'waiting') this.transition(d, 'queued', NO_INFO)
        else if (d.status === 'processing') for (const a of d.attempts ?? []) this.clearAhead(a)
      }
    }
    const clients = wanterList(t)
    if (clients.length > 0) this.out.push({ type: 'key-state', clients, key: t.key, state: 'memory', nbytes: t.nbytes })
    const g = t.gatherers
    if (g !== null) {
      t.gatherers = null
      const w = this.bestHolder(t)
      for (const client of g) this.out.push({ type: 'send-data', client, key: t.key, worker: w.id })
    }
  }

  /** Unfinished dependents of a task that left memory wait for it again. */
  private leftMemory(t: TaskState): void {
    if (t.dependents === null) return
    for (const d of t.dependents) {
      if (!isActive(d.status)) continue
      d.waitingOn++
      if (d.status !== 'waiting') this.transition(d, 'waiting', { note: `dependency ${t.key} left memory` })
    }
  }

  private announceError(t: TaskState): void {
    const clients = wanterList(t)
    if (clients.length > 0) this.out.push(this.errorState(t, clients))
    t.gatherers = null
  }

  private forget(t: TaskState): void {
    if (t.dependents !== null) throw this.broken(t, `forgetting ${t.key} while ${t.dependents.size} dependents keep it`)
    this.unlinkDeps(t)
    this.tasks.delete(t.key)
    this.underReplicated.delete(t)
    this.dropMoves(t)
    this.unwantAll(t)
    this.setStatus(t, 'forgotten')
    this.out.push({ type: 'forget', key: t.key })
  }

  private enqueue(t: TaskState): void {
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

  private dequeue(t: TaskState): void {
    if (t.fn === null) this.scatterQ.delete(t)
    else if (this.mainQ.has(t)) this.mainQ.remove(t)
    else if (this.constrainedQ.has(t)) this.constrainedQ.remove(t)
  }

  // ───────────────────────────── attempts and capacity ─────────────────────────────

  private cancelAttempts(t: TaskState): void {
    const as = t.attempts
    if (as === null) return
    for (const a of as.slice()) {
      if (!a.put && a.worker.alive) this.out.push({ type: 'cancel-task', worker: a.worker.id, key: t.key, attempt: a.id })
      this.endAttempt(a)
    }
  }

  private endAttempt(a: Attempt): void {
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

  private capacity(w: WorkerState): number {
    const ahead = Math.min(Math.max(Math.ceil((w.slots * this.opts.pipelineMs) / this.capMs), w.slots), this.opts.maxAhead)
    return w.slots + ahead
  }

  /** Re-files a worker in the free list, the thieves and the victims after any change. */
  private touch(w: WorkerState): void {
    const open = w.alive && w.accepting && !w.retiring && !w.lapsed
    if (open !== w.open) {
      w.open = open
      this.openWorkers += open ? 1 : -1
    }
    const n = w.attempts.size
    const free = this.free
    if (open && n < this.capacity(w)) {
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
    const idle = open && n - w.ahead + w.incoming < w.slots
    if (idle !== w.inIdle) {
      w.inIdle = idle
      if (idle) this.idle.add(w)
      else this.idle.delete(w)
    }
    const saturated = w.alive && n - w.ahead - w.stealing > w.slots
    if (saturated !== w.inSaturated) {
      w.inSaturated = saturated
      if (saturated) this.saturated.add(w)
      else this.saturated.delete(w)
    }
  }

  private updateAvg(ms: number): void {
    if (typeof ms !== 'number' || !(ms >= 0) || !Number.isFinite(ms)) return
    this.avgMs = Math.max(MIN_AVG_MS, this.avgMs + EMA_WEIGHT * (ms - this.avgMs))
    if (this.avgMs * CAPACITY_HYSTERESIS < this.capMs || this.avgMs > this.capMs * CAPACITY_HYSTERESIS) {
      this.capMs = this.avgMs
      for (const w of this.byId.values()) this.touch(w)
    }
  }

  // ───────────────────────────── placement ─────────────────────────────

  /**
   * Hands ready tasks to workers with capacity, best first. Unrestricted tasks fit any
   * free worker, so each costs O(log n); constrained ones that fit nowhere now are set
   * aside (at most MAX_SET_ASIDE per call) and put back with their place kept.
   */
  private dispatch(): void {
    if (this.scatterQ.size > 0 && this.openWorkers > 0) this.placeScattered()
    let aside: TaskState[] | null = null
    let constrainedOpen = true
    while (this.free.length > 0) {
      const a = this.mainQ.peek()
      const b = constrainedOpen ? this.constrainedQ.peek() : undefined
      if (a === undefined && b === undefined) break
      if (a !== undefined && (b === undefined || runsBefore(a, b))) {
        this.mainQ.pop()
        if (!this.place(a)) { this.mainQ.push(a); break }
      } else if (b !== undefined) {
        this.constrainedQ.pop()
        if (!this.place(b)) {
          ;(aside ??= []).push(b)
          if (aside.length >= MAX_SET_ASIDE) constrainedOpen = false
        }
      }
    }
    if (aside !== null) for (const t of aside) if (!this.constrainedQ.has(t)) this.constrainedQ.push(t)
    if (this.aheadLater.size > 0 && this.free.length > 0) this.dispatchAhead()
    this.stealWork()
  }

  /** Starts as many runs as the task needs on the best workers; true if it needs no more. */
  private place(t: TaskState): boolean {
    const r = t.redundant
    if (r === null) {
      const w = this.chooseWorker(t, null)
      if (w === null) return false
      this.run(t, w)
      return true
    }
    let need = this.attemptsNeeded(t)
    while (need > 0) {
      const w = this.chooseWorker(t, r.tried)
      if (w === null) break
      this.run(t, w)
      need--
    }
    return need === 0
  }

  private run(t: TaskState, w: WorkerState): void {
    const id = ++this.attemptSeq
    if (t.status === 'queued') {
      const last = this.lastTurn.get(t.priority)
      if (last === undefined || t.turn > last) this.lastTurn.set(t.priority, t.turn)
      this.transition(t, 'processing', { worker: w, attempt: id })
    } else if (t.status === 'waiting') {
      if (t.seq < 0) t.seq = ++this.taskSeq
      this.transition(t, 'processing', { worker: w, attempt: id, note: 'sent ahead: its inputs run there' })
    } else {
      this.record(t, 'processing', 'processing', w.id, undefined, id)
    }
    const a = new Attempt(id, t, w, false)
    if (t.attempts === null) t.attempts = [a]
    else t.attempts.push(a)
    t.redundant?.tried.push(w.id)
    w.attempts.add(a)
    w.order.push(a)
    if (t.waitingOn > 0) { a.ahead = true; w.ahead++ }
    this.touch(w)
    this.out.push({ type: 'assign', worker: w.id, task: this.assigned(t, a) })
    if (t.redundant === null && t.dependents !== null && this.opts.sendAhead) this.sendAheadFrom(t, w)
  }

  private assigned(t: TaskState, a: Attempt): AssignedTask {
    const deps: AssignedTask['deps'] = t.deps.length === 0 ? [] : t.deps.map(d => ({ key: d.key, nbytes: d.status === 'memory' ? d.nbytes : 0 }))
    return { key: t.key, attempt: a.id, fn: t.fn, deps, push: t.gatherers !== null, priority: t.priority, seq: t.seq }
  }

  // ───────────────────────────── dependents sent ahead ─────────────────────────────

  /**
   * `t` was just given to `w`: its waiting dependents whose every unfinished input runs on
   * `w` go there too, now (or once `w` has capacity), so each starts the moment its inputs
   * land, with no round trip through the coordinator. A chain streams onto one worker.
   */
  private sendAheadFrom(t: TaskState, w: WorkerState): void {
    for (const d of t.dependents as Set<TaskState>) {
      if (d.status !== 'waiting' || !this.canRunAhead(d, w)) continue
      if (w.freeIndex >= 0) this.run(d, w)
      else {
        let later = this.aheadLater.get(w)
        if (later === undefined) this.aheadLater.set(w, later = new Set())
        later.add(d)
      }
    }
  }

  /** Whether waiting `d` may go to `w` ahead of its inputs: each unfinished one has its single run on `w`. */
  private canRunAhead(d: TaskState, w: WorkerState): boolean {
    if (d.redundant !== null || d.fn === null) return false
    if (d.restrict !== null && !d.restrict.includes(w.id) && !d.restrict.includes(w.name)) return false
    for (const x of d.deps) {
      if (x.status === 'memory') continue
      if (x.status !== 'processing' || x.redundant !== null || x.fn === null) return false
      const as = x.attempts
      if (as === null || as.length !== 1 || (as[0] as Attempt).worker !== w) return false
    }
    return true
  }

  /** Tasks set aside for workers that had no capacity then: sent now where there is. */
  private dispatchAhead(): void {
    for (const [w, later] of this.aheadLater) {
      if (!w.alive) { this.aheadLater.delete(w); continue }
      if (w.freeIndex < 0) continue
      for (const d of later) {
        if (w.freeIndex < 0) break
        later.delete(d)
        if (d.status === 'waiting' && this.canRunAhead(d, w)) this.run(d, w)
      }
      if (later.size === 0) this.aheadLater.delete(w)
    }
  }

  /** `t` is no longer running where its dependents sent ahead expect it: they wait at the coordinator again. */
  private recallAhead(t: TaskState): void {
    if (t.dependents === null) return
    for (const d of t.dependents) {
      if (d.status === 'processing' && d.waitingOn > 0) this.transition(d, 'waiting', { note: `input ${t.key} no longer runs there` })
    }
  }

  /** The attempt's inputs are all in memory now: it is an ordinary run (it may start, and be stolen). */
  private clearAhead(a: Attempt): void {
    if (!a.ahead) return
    a.ahead = false
    a.worker.ahead--
    this.touch(a.worker)
  }

  private chooseWorker(t: TaskState, exclude: readonly string[] | null): WorkerState | null {
    if (t.restrict !== null) {
      const pool: WorkerState[] = []
      for (const r of t.restrict) {
        const byId = this.byId.get(r)
        if (byId !== undefined && byId.freeIndex >= 0 && !pool.includes(byId) && !(exclude?.includes(byId.id))) pool.push(byId)
        for (const w of this.byName.get(r) ?? []) if (w.freeIndex >= 0 && !pool.includes(w) && !(exclude?.includes(w.id))) pool.push(w)
      }
      if (pool.length === 0) return null
      if (t.deps.length === 0) return this.leastOccupiedOf(pool)
      return this.cheapest(t, pool, null)
    }
    const fallback = this.leastOccupied(exclude)
    if (t.deps.length === 0 || fallback === null) return fallback
    return this.cheapest(t, null, fallback, exclude)
  }

  private leastOccupiedOf(pool: readonly WorkerState[]): WorkerState | null {
    let best: WorkerState | null = null
    let bestOcc = Infinity
    for (const w of pool) {
      const occ = w.attempts.size / w.slots
      if (occ < bestOcc || (occ === bestOcc && best !== null && w.seq < best.seq)) { best = w; bestOcc = occ }
    }
    return best
  }

  /** The least occupied free worker: all of them when few, a rotating sample of SAMPLE when many. */
  private leastOccupied(exclude: readonly string[] | null): WorkerState | null {
    const free = this.free
    const n = free.length
    if (n === 0) return null
    const all = n <= SAMPLE
    const count = all ? n : SAMPLE
    const start = all ? 0 : this.cursor % n
    let best: WorkerState | null = null
    let bestOcc = Infinity
    for (let i = 0; i < count; i++) {
      const w = free[(start + i) % n] as WorkerState
      if (exclude !== null && exclude.includes(w.id)) continue
      const occ = w.attempts.size / w.slots
      if (occ < bestOcc || (occ === bestOcc && best !== null && w.seq < best.seq)) { best = w; bestOcc = occ }
    }
    if (!all) {
      this.cursor = start + count
      if (best === null) return this.leastOccupiedOf(free.filter(w => !(exclude?.includes(w.id))))
    }
    return best
  }

  /**
   * The worker minimising (bytes of deps it lacks ÷ bandwidth) + (its tasks × avg ms ÷ slots):
   * among `pool`, or else among the free holders of the deps plus `fallback`.
   */
  private cheapest(t: TaskState, pool: readonly WorkerState[] | null, fallback: WorkerState | null, exclude: readonly string[] | null = null): WorkerState | null {
    const mark = ++this.mark
    let total = 0
    for (const d of t.deps) {
      total += d.nbytes
      for (const h of d.holders ?? []) {
        if (h.scratchMark !== mark) { h.scratchMark = mark; h.scratch = 0 }
        h.scratch += d.nbytes
      }
    }
    const bw = this.opts.bandwidth
    const avg = this.avgMs
    const cost = (w: WorkerState): number => (total - (w.scratchMark === mark ? w.scratch : 0)) / bw + (w.attempts.size * avg) / w.slots
    let best: WorkerState | null = null
    let bestCost = Infinity
    const consider = (w: WorkerState): void => {
      const c = cost(w)
      if (c < bestCost || (c === bestCost && best !== null && w.seq < best.seq)) { best = w; bestCost = c }
    }
    if (pool !== null) {
      for (const w of pool) consider(w)
      return best
    }
    if (fallback !== null) consider(fallback)
    for (const d of t.deps) {
      for (const h of d.holders ?? []) {
        if (h.freeIndex >= 0 && !(exclude?.includes(h.id))) consider(h)
      }
    }
    return best
  }

  /**
   * When nothing waits in the main queue, workers with a free slot ask busy workers for
   * tasks those have most likely not started (the ones beyond their slots, newest first).
   */
  private stealWork(): void {
    if (this.mainQ.size > 0 || this.idle.size === 0 || this.saturated.size === 0) return
    let budget = STEAL_SCAN
    for (const thief of this.idle) {
      let want = thief.slots - thief.attempts.size - thief.incoming
      for (const victim of this.saturated) {
        if (want <= 0 || budget <= 0) break
        if (victim === thief) continue
        let excess = victim.attempts.size - victim.ahead - victim.slots
        const order = victim.order
        for (let i = order.length - 1; i >= 0 && excess > 0 && want > 0 && budget > 0; i--) {
          const a = order[i] as Attempt
          budget--
          if (!a.live) continue
          excess--
          if (a.thief !== null || a.denied || !this.canSteal(a, victim, thief)) continue
          a.thief = thief
          thief.incoming++
          victim.stealing++
          want--
          this.record(a.task, 'processing', 'processing', victim.id, `steal-request for ${thief.id}`, a.id)
          this.out.push({ type: 'steal-request', worker: victim.id, key: a.task.key, attempt: a.id })
        }
        this.touch(victim)
      }
      this.touch(thief)
      if (budget <= 0) break
    }
  }

  private canSteal(a: Attempt, victim: WorkerState, thief: WorkerState): boolean {
    const t = a.task
    // a task sent ahead waits for inputs running on the victim; one with dependents sent
    // ahead there would take them with it
    if (a.ahead) return false
    if (t.activeDependents > 0) for (const d of t.dependents as Set<TaskState>) if (d.status === 'processing' && d.waitingOn > 0) return false
    if (t.restrict !== null && !t.restrict.includes(thief.id) && !t.restrict.includes(thief.name)) return false
    if (t.redundant !== null && t.redundant.tried.includes(thief.id)) return false
    if (t.deps.length > 0) {
      let bytes = 0
      for (const d of t.deps) {
        const hs = d.holders
        if (hs !== null && hs.includes(victim) && !hs.includes(thief)) bytes += d.nbytes
      }
      if (bytes / this.opts.bandwidth > this.avgMs * 2) return false
    }
    return true
  }

  // ───────────────────────────── stories and validation ─────────────────────────────

  private record(t: TaskState, from: Status, to: TaskStatus, worker: string | undefined, note: string | undefined, attempt = 0): void {
    const L = this.opts.storyLength
    if (L === 0) return
    let e = this.lastEntry
    // Entries are immutable and shared: a 10,000-task submit stores one entry object.
    // The attempt is kept as a number (formatted on read) to spare a string per transition.
    if (e === null || e.from !== from || e.to !== to || e.worker !== worker || e.note !== note || e.attempt !== attempt || e.stimulus !== this.stimulus || e.now !== this.now) {
      e = { from, to, stimulus: this.stimulus, worker, now: this.now, note, attempt }
      this.lastEntry = e
    }
    const s = t.story
    if (s === null) t.story = e
    else if (!Array.isArray(s)) t.story = L === 1 ? e : [s, e]
    else if (s.length < L) {
      // Grow by copying into an exact-size array: push would reserve ~16 spare slots per task.
      const n = s.length
      const grown = new Array<Entry>(n + 1)
      for (let i = 0; i < n; i++) grown[i] = s[i] as Entry
      grown[n] = e
      t.story = grown
    } else {
      s[t.storyHead] = e
      t.storyHead = (t.storyHead + 1) % L
    }
  }

  private storyOf(t: TaskState): StoryEntry[] {
    const s = t.story
    const entries = s === null ? [] : !Array.isArray(s) ? [s] : [...s.slice(t.storyHead), ...s.slice(0, t.storyHead)]
    return entries.map(e => {
      const out: StoryEntry = { key: t.key, from: e.from as StoryEntry['from'], to: e.to, stimulus: e.stimulus, now: e.now }
      if (e.worker !== undefined) out.worker = e.worker
      const note = e.attempt > 0 ? (e.note !== undefined ? `attempt ${e.attempt}: ${e.note}` : `attempt ${e.attempt}`) : e.note
      if (note !== undefined) out.note = note
      return out
    })
  }

  private broken(t: TaskState, message: string): Error {
    const lines = this.storyOf(t).map(e => `  ${e.now} ${e.stimulus}: ${e.from} → ${e.to}${e.worker ? ` on ${e.worker}` : ''}${e.note ? ` (${e.note})` : ''}`)
    return new Error(`scheduler: ${message}\nstory of ${t.key} (status ${t.status}):\n${lines.join('\n') || '  (empty)'}`)
  }

  /** Checks every invariant; throws with the offending task's story. O(tasks + workers). */
  validate(): void {
    const counts: Record<TaskStatus, number> = { waiting: 0, queued: 0, processing: 0, memory: 0, erred: 0, released: 0, forgotten: this.statusCounts.forgotten }
    const groups = new Map<string, GroupCounts>()
    const check = (t: TaskState, ok: boolean, what: string): void => { if (!ok) throw this.broken(t, `invariant broken: ${what}`) }
    for (const [key, t] of this.tasks) {
      const s = t.status
      check(t, t.key === key, 'indexed under another key')
      check(t, s !== 'new' && s !== 'forgotten', `status ${s} in the task table`)
      if (s === 'new' || s === 'forgotten') continue
      counts[s]++
      let g = groups.get(t.group)
      if (!g) { g = { group: t.group, waiting: 0, queued: 0, processing: 0, memory: 0, erred: 0, released: 0 }; groups.set(t.group, g) }
      g[s]++
      const active = isActive(s)
      let notMemory = 0
      for (const d of t.deps) {
        check(t, this.tasks.get(d.key) === d, `dependency ${d.key} is forgotten`)
        check(t, d.dependents?.has(t) === true, `dependency ${d.key} does not list it as a dependent`)
        if (d.status !== 'memory') notMemory++
        if (active) check(t, d.status !== 'erred', `active with erred dependency ${d.key}`)
      }
      let activeDeps = 0
      for (const d of t.dependents ?? []) {
        check(t, this.tasks.get(d.key) === d, `dependent ${d.key} is forgotten`)
        check(t, d.deps.includes(t), `dependent ${d.key} does not list it`)
        check(t, d.status !== 'erred', `erred dependent ${d.key} still linked`)
        if (isActive(d.status)) activeDeps++
      }
      check(t, t.dependents === null || t.dependents.size > 0, 'empty dependents set kept')
      check(t, activeDeps === t.activeDependents, `activeDependents ${t.activeDependents} ≠ ${activeDeps}`)
      if (active) {
        check(t, t.waitingOn === notMemory, `waitingOn ${t.waitingOn} ≠ ${notMemory}`)
        if (s !== 'processing') check(t, (s === 'waiting') === (notMemory > 0), `${s} with ${notMemory} deps not in memory`)
        else {
          const as = t.attempts ?? []
          for (const a of as) check(t, a.ahead === (notMemory > 0), `attempt ${a.id} ahead=${a.ahead} with ${notMemory} deps not in memory`)
          if (notMemory > 0) {
            check(t, t.redundant === null && as.length === 1, 'sent ahead but redundant or not one attempt')
            const w = (as[0] as Attempt).worker
            for (const d of t.deps) {
              if (d.status === 'memory') continue
              check(t, d.status === 'processing' && d.attempts?.length === 1 && (d.attempts[0] as Attempt).worker === w, `sent ahead to ${w.id} but input ${d.key} does not run there`)
            }
          }
        }
        check(t, this.needsData(t), `${s} but nobody needs it`)
      }
      if (s === 'erred') {
        check(t, t.error !== null, 'erred without an error')
        check(t, t.deps.length === 0, 'erred but still linked to its deps')
        check(t, t.wanters !== null || t.dependents !== null, 'erred, unwanted and not forgotten')
      }
      if (s === 'released') {
        check(t, !this.isNeeded(t), 'released but needed')
        check(t, t.dependents !== null, 'released without dependents (should be forgotten)')
        check(t, t.fn !== null, 'scattered data released')
      }
      if (s === 'memory') {
        check(t, t.holders !== null && t.holders.length > 0, 'memory without holders')
        check(t, this.needsData(t), 'memory but not needed')
        check(t, t.gatherers === null, 'gatherers left in memory')
        for (const w of t.holders ?? []) check(t, w.alive && w.holds.has(t) && this.byId.get(w.id) === w, `holder ${w.id} is gone or does not list it`)
      } else {
        check(t, t.holders === null, `holders while ${s}`)
      }
      const inMain = this.mainQ.has(t)
      const inConstrained = this.constrainedQ.has(t)
      const inScatter = this.scatterQ.has(t)
      if (s === 'queued') {
        check(t, t.attempts === null, 'queued with attempts')
        check(t, t.fn === null ? inScatter : (t.restrict !== null || t.redundant !== null) ? inConstrained : inMain, 'queued but not in its queue')
        check(t, t.redundant === null || t.redundant.results.length === 0, 'queued with results')
      } else if (s === 'processing') {
        check(t, !inMain && !inScatter, 'processing and queued')
        const live = t.attempts?.length ?? 0
        if (t.redundant !== null) {
          check(t, live + t.redundant.results.length > 0, 'processing without runs or results')
          check(t, inConstrained === (this.attemptsNeeded(t) > 0), `redundant task needs ${this.attemptsNeeded(t)} runs but queued=${inConstrained}`)
        } else {
          check(t, !inConstrained, 'processing and queued')
          check(t, live > 0, 'processing without attempts')
          if (t.fn !== null) check(t, live === 1, `${live} attempts of a non-redundant task`)
        }
        for (const a of t.attempts ?? []) {
          check(t, a.live && a.task === t && a.worker.alive, `attempt ${a.id} dead or misfiled`)
          check(t, a.put === (t.fn === null), `attempt ${a.id} of the wrong kind`)
          check(t, a.put ? a.worker.puts?.has(a) === true : a.worker.attempts.has(a), `attempt ${a.id} not on its worker`)
        }
      } else {
        check(t, !inMain && !inConstrained && !inScatter, `queued while ${s}`)
        if (s === 'memory' && t.fn === null) for (const a of t.attempts ?? []) check(t, a.put && a.live && a.worker.puts?.has(a) === true, 'bad pending put')
        else check(t, t.attempts === null, `attempts while ${s}`)
      }
      if (t.gatherers !== null) {
        check(t, t.gatherers.length > 0 && (active || s === 'released'), `gatherers while ${s}`)
        for (const c of t.gatherers) check(t, hasWanter(t, c), `gatherer ${c} is not a wanter`)
      }
      if (t.wanters !== null) check(t, s !== 'released', 'released but wanted')
      const st = t.story
      check(t, !Array.isArray(st) || st.length <= this.opts.storyLength, 'story too long')
    }
    for (const st of STATUSES) {
      if (counts[st] !== this.statusCounts[st]) throw new Error(`scheduler: invariant broken: ${st} count ${this.statusCounts[st]} ≠ ${counts[st]}`)
    }
    for (const [name, g] of this.groupCounts) {
      const real = groups.get(name)
      for (const st of ['waiting', 'queued', 'processing', 'memory', 'erred', 'released'] as const) {
        if (g[st] !== (real?.[st] ?? 0)) throw new Error(`scheduler: invariant broken: group ${name} ${st} ${g[st]} ≠ ${real?.[st] ?? 0}`)
      }
    }
    this.mainQ.check()
    this.constrainedQ.check()
    for (const t of this.mainQ.values()) check(t, t.status === 'queued' && this.tasks.get(t.key) === t, 'stale task in the main queue')
    for (const t of this.constrainedQ.values()) check(t, (t.status === 'queued' || t.status === 'processing') && this.tasks.get(t.key) === t, 'stale task in the constrained queue')
    for (const t of this.scatterQ) check(t, t.status === 'queued' && this.tasks.get(t.key) === t, 'stale task in the scatter queue')
    let incomingTotal = 0
    for (const w of this.byId.values()) incomingTotal += w.incoming
    let thieves = 0
    let open = 0
    for (const [id, w] of this.byId) {
      const fail = (what: string): never => { throw new Error(`scheduler: invariant broken on worker ${id}: ${what}`) }
      if (w.id !== id || !w.alive) fail('misfiled or dead')
      if (w.open) open++
      let stealing = 0
      let ahead = 0
      for (const a of w.attempts) {
        if (!a.live || a.worker !== w || a.put || a.task.status !== 'processing' || !a.task.attempts?.includes(a)) check(a.task, false, `attempt ${a.id} misfiled on ${id}`)
        if (a.thief !== null) { stealing++; thieves++ }
        if (a.ahead) { ahead++; if (a.thief !== null) check(a.task, false, `attempt ${a.id} sent ahead and being stolen`) }
      }
      if (stealing !== w.stealing) fail(`stealing ${w.stealing} ≠ ${stealing}`)
      if (ahead !== w.ahead) fail(`ahead ${w.ahead} ≠ ${ahead}`)
      let live = 0
      for (const a of w.order) if (a.live) { live++; if (!w.attempts.has(a)) fail(`attempt ${a.id} in order only`) }
      if (live !== w.attempts.size) fail('assignment order lost an attempt')
      let bytes = 0
      for (const t of w.holds) {
        if (t.status !== 'memory' || !t.holders?.includes(w)) check(t, false, `held by ${id} while ${t.status}`)
        bytes += t.nbytes
      }
      if (bytes !== w.nbytes) fail(`nbytes ${w.nbytes} ≠ ${bytes}`)
      for (const t of w.handoffs ?? []) if (!this.moves.get(t)?.some(m => m.from === w && m.handoff)) check(t, false, `hand-off from ${id} without a move`)
      for (const t of w.reported ?? []) if (!t.redundant?.results.some(r => r.worker === w)) check(t, false, `${id} reported without a result`)
      const isOpen = w.accepting && !w.retiring && !w.lapsed
      if (isOpen !== w.open) fail('open flag stale')
      if (w.lapsed && w.attempts.size > 0) fail('lapsed with attempts')
      if ((w.freeIndex >= 0) !== (isOpen && w.attempts.size < this.capacity(w)) || (w.freeIndex >= 0 && this.free[w.freeIndex] !== w)) fail('free list stale')
      if (this.idle.has(w) !== (isOpen && w.attempts.size - w.ahead + w.incoming < w.slots)) fail('idle set stale')
      if (this.saturated.has(w) !== (w.attempts.size - w.ahead - w.stealing > w.slots)) fail('saturated set stale')
    }
    if (thieves !== incomingTotal) throw new Error(`scheduler: invariant broken: ${thieves} pending steals but ${incomingTotal} expected by thieves`)
    if (open !== this.openWorkers) throw new Error(`scheduler: invariant broken: ${this.openWorkers} open workers counted, ${open} real`)
    for (const w of this.free) if (!w.alive) throw new Error(`scheduler: invariant broken: dead worker ${w.id} in the free list`)
    for (const [t, ms] of this.moves) {
      for (const m of ms) check(t, t.status === 'memory' && m.from.alive && m.to.alive && (t.holders?.includes(m.from) ?? false), `move ${m.from.id} → ${m.to.id} stale`)
    }
    for (const t of this.underReplicated) check(t, t.fn === null && t.status === 'memory', 'under-replicated but not scattered data in memory')
  }
}
