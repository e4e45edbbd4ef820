/**
 * The dashboard stream: what the dashboard page shows, kept up to date from the
 * coordinator's observers and sent as one bounded `stream` message per interval to every
 * connected dashboard (shared/protocol.ts `dashboardUpdate`).
 *
 * Costs are bounded whatever the grid does: each observed event is O(1) work (a few
 * counters, a histogram bucket, and the task stream's bar for that slot), memory is
 * bounded (bars, rows, groups, points and table rows all have caps), and the interval's
 * work is O(workers + bars) only while a dashboard is connected. A million tasks on
 * thousands of workers neither floods the page nor slows the coordinator: bars of the
 * same group that run back to back on a slot merge into one (the gap allowed grows when
 * the window holds too many bars), and past `maxRows` slots the stream samples workers.
 *
 * @example
 * ```ts
 * const coordinator = new Coordinator()
 * const dashboard = attachDashboard(coordinator, { intervalMs: 500 })
 * // … dashboards connect with role 'dashboard' and receive `stream` messages …
 * dashboard.stop()
 * ```
 */
import { performance } from 'node:perf_hooks'
import type { Coordinator, Observed } from '../core/coordinator.js'
import type {
  DashboardBar, DashboardGroupRow, DashboardPoint, DashboardUpdate, DashboardWorkerRow,
} from '../shared/protocol.js'

export interface DashboardOptions {
  /** ms between updates. Default 500. */
  intervalMs?: number
  /** ms of history in the task stream. Default 60 s. */
  windowMs?: number
  /** bars the stream aims to stay under (merging harder past it). Default 3000. */
  maxBars?: number
  /** worker slots (rows) in the stream; workers past it are left out (sampled). Default 256. */
  maxRows?: number
  /** rows of the workers table sent in detail (the rest are counted). Default 200. */
  maxWorkers?: number
  /** task groups shown (active first, then most recent). Default 40. */
  maxGroups?: number
  /** points of the time series kept (one about every second). Default 300 (5 minutes). */
  seriesPoints?: number
  /** ms between full updates (besides the one when a dashboard joins). Default 30 s. */
  keyframeMs?: number
  /** the clock observed events are stamped with. Default Date.now. */
  now?: () => number
  /**
   * Cumulative ms of CPU the coordinator has used. Default: this process's CPU time
   * (`process.cpuUsage()`), not the event loop's busy wall time, which a machine short of
   * cores (a coordinator beside busy browser tabs) inflates.
   */
  busyMs?: () => number
}

export interface DashboardStream {
  /** Stops the timer and the observer. */
  stop(): void
  /**
   * Does one interval's work now: rolls the series, prunes the stream, and (when a
   * dashboard is connected) broadcasts an update, which it returns. The timer calls it;
   * tests call it with their own clock.
   */
  tick(): DashboardUpdate | undefined
  /** What the stream holds now (tests, and the curious). */
  size(): { bars: number; rows: number; streamWorkers: number; groups: number; points: number; mergeMs: number }
}

/** How many finished tasks an interval needs before its cost per task means anything. */
const MIN_TASKS_FOR_COST = 20
/** Tasks the median and the overhead are taken over: the last minute's points. */
const MEDIAN_POINTS = 60
/** A group idle this long starts counting from zero when it gets work again. */
const GROUP_RESET_MS = 30_000
/** A group idle this long leaves the progress list. */
const GROUP_TTL_MS = 10 * 60_000
/** Groups tracked at most (the rest are not counted until some leave). */
const MAX_GROUPS_TRACKED = 5_000
/** Joins and leaves kept for a dashboard that connects. */
const MAX_EVENTS = 20
/** Group names a stream epoch may index (the rest draw as 'other'). */
const MAX_GROUP_NAMES = 1_000
/** workers left out of the stream that are counted one by one (ids): past it the count starts again (a 100,000-tab grid) */
const MAX_HIDDEN = 50_000
/** A slot counts as free for the next task if it finished up to this long after the task started (the result's trip to the coordinator). */
const LANE_SLACK_MS = 5

// ---------------------------------------------------------------- run-time histogram

/** Log-scale buckets: 4 per doubling from 1 µs, so ~19% wide; the last holds everything past ~18 minutes. */
const HIST = 124
function bucketOf(ms: number): number {
  const us = ms * 1000
  if (!(us >= 1)) return 0
  return Math.min(HIST - 1, 1 + Math.floor(Math.log2(us) * 4))
}
/** The middle of a bucket, in ms. */
function bucketMs(i: number): number {
  return i === 0 ? 0.0005 : 2 ** ((i - 1 + 0.5) / 4) / 1000
}

// ---------------------------------------------------------------- time series

/**
 * One interval. `netMs`: the coordinator's CPU time less its idle baseline (what the tasks
 * cost it). `schedUs`/`coordUs`: cost per task over the last `COST_POINTS` points.
 *
 * Per task means ÷ max(tasks finished, tasks submitted) in the same points: a burst
 * (10,000 tasks submitted at once, finishing over the next minute) costs its submission
 * up front, which divided by the first few tasks to finish would read as a huge cost per
 * task. In a steady run both counts agree; once the burst is out of the window, the
 * finishing tasks carry only their own cost.
 */
interface Point {
  t: number; dt: number; finished: number; submitted: number; erred: number; schedMs: number; netMs: number; hist: Uint32Array<ArrayBuffer>
  schedUs: number | null; coordUs: number | null
}

function perTask(ms: number, finished: number, submitted: number): number {
  return Math.round(ms * 1000 / Math.max(finished, submitted) * 10) / 10
}

/** Points the cost per task is averaged over (about 10 s). */
const COST_POINTS = 10

class Series {
  readonly points: Point[] = []
  finished = 0
  erred = 0
  schedMs = 0
  hist: Uint32Array<ArrayBuffer> = new Uint32Array(HIST)
  private lastT: number
  private lastBusy: number
  /**
   * CPU ms per second the coordinator spends when no task runs (heartbeats, timers,
   * pings of idle workers): subtracted so that a quiet grid of many tabs doesn't make
   * its few tasks look expensive. Learnt from idle points; 0 until one is seen.
   */
  private idleBusyPerSec: number | undefined
  /** points not yet sent */
  fresh = 0

  private lastSubmitted: number

  constructor(private readonly max: number, now: number, private readonly busy: () => number, private readonly submitted: () => number) {
    this.lastT = now
    this.lastBusy = busy()
    this.lastSubmitted = submitted()
  }

  /** Closes a point when a second or more has gone by. */
  roll(now: number): void {
    const dt = now - this.lastT
    if (dt < 1000) return
    const busy = this.busy()
    const busyMs = Math.max(0, busy - this.lastBusy)
    const submittedNow = this.submitted()
    const submitted = Math.max(0, submittedNow - this.lastSubmitted)
    this.lastSubmitted = submittedNow
    const idle = this.finished === 0 && this.erred === 0 && this.schedMs === 0 && submitted === 0
    if (idle) {
      const perSec = busyMs * 1000 / dt
      this.idleBusyPerSec = this.idleBusyPerSec === undefined ? perSec : this.idleBusyPerSec * 0.8 + perSec * 0.2
    }
    const netMs = Math.max(this.schedMs, busyMs - (this.idleBusyPerSec ?? 0) * dt / 1000)
    const p: Point = { t: now, dt, finished: this.finished, submitted, erred: this.erred, schedMs: this.schedMs, netMs, hist: this.hist, schedUs: null, coordUs: null }
    let n = p.finished, subs = p.submitted, sched = p.schedMs, net = p.netMs
    for (let i = this.points.length - 1; i >= Math.max(0, this.points.length - COST_POINTS + 1); i--) {
      const q = this.points[i]!
      n += q.finished
      subs += q.submitted
      sched += q.schedMs
      net += q.netMs
    }
    if (p.finished > 0 && n >= MIN_TASKS_FOR_COST) {
      p.schedUs = perTask(sched, n, subs)
      p.coordUs = perTask(net, n, subs)
    }
    this.lastT = now
    this.lastBusy = busy
    this.finished = 0
    this.erred = 0
    this.schedMs = 0
    // reuse the histogram of the point that falls off
    const old = this.points.length >= this.max ? this.points.shift()! : undefined
    this.hist = old ? (old.hist.fill(0), old.hist) : new Uint32Array(HIST)
    this.points.push(p)
    this.fresh = Math.min(this.max, this.fresh + 1)
  }

  static wire(p: Point): DashboardPoint {
    const perSec = (n: number): number => Math.round((n * 1000 / p.dt) * 10) / 10
    return [p.t, perSec(p.finished), perSec(p.erred), p.schedUs, p.coordUs]
  }

  /** Median run time and overhead per task over the last minute. */
  summary(): DashboardUpdate['tasks'] {
    const from = Math.max(0, this.points.length - MEDIAN_POINTS)
    const sum = new Float64Array(HIST)
    let n = 0, subs = 0, busy = 0, sched = 0
    for (let i = from; i < this.points.length; i++) {
      const p = this.points[i]!
      for (let b = 0; b < HIST; b++) sum[b]! += p.hist[b]!
      n += p.finished
      subs += p.submitted
      busy += p.netMs
      sched += p.schedMs
    }
    let medianMs: number | null = null
    let total = 0
    for (let b = 0; b < HIST; b++) total += sum[b]!
    if (total > 0) {
      let acc = 0
      for (let b = 0; b < HIST; b++) {
        acc += sum[b]!
        if (acc * 2 >= total) { medianMs = Math.round(bucketMs(b) * 1e4) / 1e4; break }
      }
    }
    const enough = n >= MIN_TASKS_FOR_COST * 2
    const overheadUs = enough ? perTask(busy, n, subs) : null
    const schedulerUs = enough ? perTask(sched, n, subs) : null
    const worthMs = overheadUs === null ? null : Math.round(overheadUs * 100) / 1000
    return { count: total, medianMs, overheadUs, schedulerUs, worthMs, tooShort: medianMs !== null && worthMs !== null && medianMs < worthMs }
  }
}

// ---------------------------------------------------------------- task stream

interface Bar {
  id: number
  w: StreamWorker
  lane: number
  group: string
  start: number
  end: number
  n: number
  busyUs: number
  key: string
  /** the key went out in an update already */
  keySent: boolean
  /** in the dirty list of this epoch */
  dirtyAt: number
  /** pruned: never merge into it */
  gone: boolean
}

interface StreamWorker {
  idx: number
  id: string
  name: string
  /** when each lane's last task ended */
  laneEnd: number[]
  laneBar: (Bar | undefined)[]
  /** most lanes it may have: its slots, when known */
  maxLanes: number
  lastAt: number
}

class TaskStream {
  bars: Bar[] = []
  private dirty: Bar[] = []
  private epoch = 1
  private barSeq = 1
  private workerSeq = 0
  readonly workers = new Map<string, StreamWorker>()
  rows = 0
  lanesChanged = true
  mergeMs: number
  private readonly baseMergeMs: number
  /** workers left out (past maxRows) and their tasks per second, over the window */
  private readonly hidden = new Set<string>()
  private readonly hiddenTasks: Uint32Array
  private readonly hiddenSecond: Float64Array
  /** workers whose slots we don't know yet */
  unknownSlots = false
  /** group name → index for this epoch of the wire (reset on a full update) */
  private groupIndex = new Map<string, number>()
  private groupNew: [number, string][] = []

  constructor(readonly t0: number, readonly windowMs: number, private readonly maxBars: number, private readonly maxRows: number) {
    this.baseMergeMs = Math.max(1, Math.round(windowMs / 1500))
    this.mergeMs = this.baseMergeMs
    const secs = Math.ceil(windowMs / 1000)
    this.hiddenTasks = new Uint32Array(secs)
    this.hiddenSecond = new Float64Array(secs).fill(-1)
  }

  /** One finished task: O(lanes of its worker), which its slots bound. */
  add(worker: string, key: string, group: string, ms: number, at: number, slots: (id: string) => number | undefined): void {
    let w = this.workers.get(worker)
    if (w === undefined) {
      if (this.hidden.has(worker) || this.rows >= this.maxRows) {
        this.hidden.add(worker)
        const sec = Math.floor(at / 1000)
        const i = sec % this.hiddenTasks.length
        if (this.hiddenSecond[i] !== sec) { this.hiddenSecond[i] = sec; this.hiddenTasks[i] = 0 }
        this.hiddenTasks[i]!++
        return
      }
      const known = slots(worker)
      if (known === undefined) this.unknownSlots = true
      w = { idx: this.workerSeq++, id: worker, name: worker, laneEnd: [], laneBar: [], maxLanes: known ?? 64, lastAt: at }
      this.workers.set(worker, w)
      this.lanesChanged = true
    }
    w.lastAt = at
    const end = at - this.t0
    let start = end - ms
    // the slot that freed last before this task started (best fit); else a new lane; else the one that frees first
    // a tiny task can't be told from relay latency: allow at most half its own length
    const slack = Math.min(LANE_SLACK_MS, ms / 2)
    let lane = -1
    let best = -Infinity
    let first = 0
    for (let i = 0; i < w.laneEnd.length; i++) {
      const e = w.laneEnd[i]!
      if (e <= start + slack && e > best) { best = e; lane = i }
      if (e < w.laneEnd[first]!) first = i
    }
    if (lane < 0) {
      if (w.laneEnd.length < w.maxLanes && this.rows < this.maxRows) {
        lane = w.laneEnd.length
        w.laneEnd.push(-Infinity)
        w.laneBar.push(undefined)
        this.rows++
        this.lanesChanged = true
      } else lane = first
    }
    const laneEnd = w.laneEnd[lane]!
    if (start < laneEnd) start = Math.min(laneEnd, end)
    w.laneEnd[lane] = Math.max(laneEnd, end)
    const last = w.laneBar[lane]
    const busyUs = ms * 1000
    const atCap = this.bars.length >= this.maxBars + this.maxRows
    if (last !== undefined && !last.gone && ((last.group === group && start - last.end <= this.mergeMs) || atCap)) {
      if (end > last.end) last.end = end
      last.n++
      last.busyUs += busyUs
      this.touch(last)
      return
    }
    const bar: Bar = { id: this.barSeq++, w, lane, group, start, end, n: 1, busyUs, key, keySent: false, dirtyAt: 0, gone: false }
    this.bars.push(bar)
    w.laneBar[lane] = bar
    this.touch(bar)
  }

  private touch(b: Bar): void {
    if (b.dirtyAt === this.epoch) return
    b.dirtyAt = this.epoch
    this.dirty.push(b)
  }

  /** Drops bars out of the window and workers with none left; adapts how hard bars merge. */
  prune(now: number, connected: (id: string) => boolean, slots: (id: string) => number | undefined): void {
    const cutoff = now - this.t0 - this.windowMs
    let kept = 0
    for (const b of this.bars) {
      if (b.end >= cutoff) this.bars[kept++] = b
      else b.gone = true
    }
    this.bars.length = kept
    for (const w of [...this.workers.values()]) {
      if (w.lastAt - this.t0 >= cutoff) {
        if (this.unknownSlots) {
          const s = slots(w.id)
          if (s !== undefined) w.maxLanes = s
        }
        continue
      }
      this.workers.delete(w.id)
      this.rows -= w.laneEnd.length
      this.lanesChanged = true
    }
    this.unknownSlots = false
    // hidden workers that left, or that now fit, are forgotten (they come back on their next task)
    if (this.hidden.size && (this.rows < this.maxRows || this.hidden.size > MAX_HIDDEN)) this.hidden.clear()
    else for (const id of this.hidden) if (!connected(id)) this.hidden.delete(id)
    // merge harder when the window is crowded, less when it has room
    if (kept > this.maxBars * 0.8) this.mergeMs = Math.min(this.mergeMs * 2, Math.round(this.windowMs / 8))
    else if (kept < this.maxBars * 0.3) this.mergeMs = Math.max(this.baseMergeMs, Math.round(this.mergeMs / 2))
  }

  hiddenCount(now: number): { workers: number; tasks: number } {
    const sec = Math.floor(now / 1000)
    let tasks = 0
    for (let i = 0; i < this.hiddenTasks.length; i++) if (sec - this.hiddenSecond[i]! < this.hiddenTasks.length) tasks += this.hiddenTasks[i]!
    return { workers: this.hidden.size, tasks }
  }

  names(lookup: (id: string) => string | undefined): void {
    for (const w of this.workers.values()) {
      const n = lookup(w.id)
      if (n !== undefined && n !== w.name) { w.name = n; this.lanesChanged = true }
    }
  }

  /** Nobody listens: what changed need not be remembered (the next listener gets everything). */
  forgetChanges(): void {
    this.dirty = []
    this.epoch++
  }

  wire(full: boolean): DashboardUpdate['stream'] & { hiddenWorkers: number } {
    if (full) { this.groupIndex = new Map(); this.groupNew = [] }
    const list = full ? this.bars : this.dirty.filter(b => !b.gone)
    const bars: DashboardBar[] = new Array(list.length)
    for (let i = 0; i < list.length; i++) {
      const b = list[i]!
      const sendKey = full || !b.keySent
      b.keySent = true
      bars[i] = [b.id, b.w.idx, b.lane, this.groupId(b.group), Math.max(0, Math.floor(b.start)), Math.max(0, Math.ceil(b.end)), b.n, Math.round(b.busyUs), sendKey ? b.key : '']
    }
    const out: DashboardUpdate['stream'] & { hiddenWorkers: number } = {
      t0: this.t0, windowMs: this.windowMs, mergeMs: this.mergeMs,
      groups: this.groupNew, bars, hiddenWorkers: 0, hiddenTasks: 0,
    }
    if (full || this.lanesChanged) {
      out.lanes = [...this.workers.values()].map(w => [w.idx, w.id, w.name, w.laneEnd.length])
      this.lanesChanged = false
    }
    this.groupNew = []
    this.forgetChanges()
    return out
  }

  private groupId(name: string): number {
    let i = this.groupIndex.get(name)
    if (i === undefined) {
      if (this.groupIndex.size >= MAX_GROUP_NAMES) name = 'other'
      i = this.groupIndex.get(name)
      if (i === undefined) {
        i = this.groupIndex.size
        this.groupIndex.set(name, i)
        this.groupNew.push([i, name])
      }
    }
    return i
  }
}

// ---------------------------------------------------------------- groups

interface GroupState { name: string; done: number; failed: number; running: number; queued: number; lastActive: number }

/** The group a key is named after: `inc-3f2a…` → `inc` (shared/client.ts names keys `${fn.name}-${hash}`). */
export function groupOfKey(key: string): string {
  const i = key.lastIndexOf('-')
  return i > 0 ? key.slice(0, i) : key
}

// ---------------------------------------------------------------- the stream

/**
 * Subscribes to `coordinator.observers` and broadcasts a `stream` update to the
 * dashboards every `intervalMs` (only while at least one is connected).
 */
export function attachDashboard(coordinator: Coordinator, options: DashboardOptions = {}): DashboardStream {
  const intervalMs = options.intervalMs ?? 500
  const now = options.now ?? Date.now
  const busyMs = options.busyMs ?? (() => { const u = process.cpuUsage(); return (u.user + u.system) / 1000 })
  const maxWorkers = options.maxWorkers ?? 200
  const maxGroups = options.maxGroups ?? 40
  const keyframeMs = options.keyframeMs ?? 30_000
  const t0 = now()
  const series = new Series(options.seriesPoints ?? 300, t0, busyMs, () => coordinator.metrics.tasksSubmitted)
  const stream = new TaskStream(t0, options.windowMs ?? 60_000, options.maxBars ?? 3000, options.maxRows ?? 256)
  const groups = new Map<string, GroupState>()

  // what the last update said, to send only changes
  const sentWorkers = new Map<string, string>()
  const sentGroups = new Map<string, string>()
  const known = new Map<string, { name: string; kind: 'browser' | 'node' }>()
  let events: DashboardUpdate['events'] = []
  let lastDashboards = 0
  let lastFull = -Infinity
  /** slots and names from the scheduler, refreshed when a stream worker is new */
  const slotsOf = new Map<string, number>()
  const nameOf = new Map<string, string>()
  let refreshedAt = -Infinity
  /** A worker's slots; a worker not seen yet refreshes the table (at most every 100 ms, so gone workers cost nothing). */
  const slotLookup = (id: string): number | undefined => {
    let s = slotsOf.get(id)
    if (s === undefined && performance.now() - refreshedAt > 100) {
      refreshWorkers()
      s = slotsOf.get(id)
    }
    return s
  }

  const group = (name: string, at: number): GroupState | undefined => {
    let g = groups.get(name)
    if (g === undefined) {
      if (groups.size >= MAX_GROUPS_TRACKED) return undefined
      g = { name, done: 0, failed: 0, running: 0, queued: 0, lastActive: at }
      groups.set(name, g)
    } else if (at - g.lastActive > GROUP_RESET_MS && g.running + g.queued === 0) {
      g.done = 0
      g.failed = 0
    }
    g.lastActive = at
    return g
  }

  const observer = (o: Observed): void => {
    switch (o.type) {
      case 'scheduled':
        series.schedMs += o.ms
        return
      case 'finished': {
        series.finished++
        series.hist[bucketOf(o.ms)]!++
        const name = o.group ?? groupOfKey(o.key)
        const g = group(name, o.at)
        if (g) g.done++
        stream.add(o.worker, o.key, name, o.ms, o.at, slotLookup)
        return
      }
      case 'erred':
        // a failed attempt (it may be retried): the progress bars count failed tasks from the scheduler
        series.erred++
        return
      default: {
        const never: never = o
        throw new Error(`unknown observation ${(never as { type: string }).type}`)
      }
    }
  }
  coordinator.observers.push(observer)

  const refreshWorkers = (): void => {
    refreshedAt = performance.now()
    slotsOf.clear()
    nameOf.clear()
    for (const w of coordinator.scheduler.workers()) { slotsOf.set(w.id, w.slots); nameOf.set(w.id, w.name) }
  }

  const updateGroups = (t: number): DashboardGroupRow[] => {
    const live = coordinator.scheduler.groups()
    const seen = new Set<string>()
    for (const c of live) {
      if (c.group === 'scatter') continue
      const running = c.processing
      const queued = c.waiting + c.queued
      let g = groups.get(c.group)
      if (g === undefined && running + queued + c.erred === 0) continue
      if (g === undefined) {
        if (groups.size >= MAX_GROUPS_TRACKED) continue
        g = { name: c.group, done: 0, failed: 0, running: 0, queued: 0, lastActive: t }
        groups.set(c.group, g)
      }
      if (running + queued > 0) {
        if (t - g.lastActive > GROUP_RESET_MS && g.running + g.queued === 0) { g.done = 0; g.failed = 0 }
        g.lastActive = t
      }
      g.running = running
      g.queued = queued
      g.failed = Math.max(g.failed, c.erred)
      seen.add(c.group)
    }
    const list: GroupState[] = []
    for (const g of groups.values()) {
      if (!seen.has(g.name)) { g.running = 0; g.queued = 0 }
      // idle for long, or nothing to show (every task was cancelled before it ran: a stopped run)
      if (g.running + g.queued === 0 && (t - g.lastActive > GROUP_TTL_MS || g.done + g.failed === 0)) { groups.delete(g.name); continue }
      list.push(g)
    }
    list.sort((a, b) => Number(b.running + b.queued > 0) - Number(a.running + a.queued > 0) || b.lastActive - a.lastActive)
    return list.slice(0, maxGroups).map(g => [g.name, g.done, g.running, g.queued, g.failed])
  }

  /** Only the rows that differ from what was sent; `sent` becomes the new state. */
  function changes<R extends [string, ...unknown[]]>(rows: R[], sent: Map<string, string>, full: boolean): { rows: R[]; gone: string[] } {
    const out: R[] = []
    const now = new Set<string>()
    for (const r of rows) {
      const sig = r.join('\u0000')
      now.add(r[0])
      if (full || sent.get(r[0]) !== sig) { out.push(r); sent.set(r[0], sig) }
    }
    const gone: string[] = []
    for (const id of sent.keys()) if (!now.has(id)) { gone.push(id); sent.delete(id) }
    if (full) gone.length = 0
    return { rows: out, gone }
  }

  type Status = { dashboards: number; clients: number; tasks: Record<string, number>; tasksSubmitted: number; tasksFinished: number; tasksErred: number }

  function build(t: number, status: Status, full: boolean): DashboardUpdate {
    const dashboards = status.dashboards
    const summaries = coordinator.workerSummaries() as unknown as Array<{
      id: string; name: string; kind: 'browser' | 'node'; slots: number; processing: number; done: number
      memory: number; spilled: number; nbytes: number; since: number; connected: boolean; accepting: boolean; retiring: boolean
    }>
    let slots = 0, running = 0, memory = 0, spilled = 0
    const rows: DashboardWorkerRow[] = []
    const ids = new Set<string>()
    const joined: DashboardUpdate['events'] = []
    for (const w of summaries) {
      slots += w.slots
      running += w.processing
      const held = w.memory || w.nbytes || 0
      memory += held
      spilled += w.spilled || 0
      ids.add(w.id)
      slotsOf.set(w.id, w.slots)
      nameOf.set(w.id, w.name)
      if (!known.has(w.id)) {
        known.set(w.id, { name: w.name, kind: w.kind })
        if (lastDashboards > 0) joined.push([t, 'joined', w.name, w.kind])
      }
      if (rows.length < maxWorkers) {
        const state = !w.connected ? 'away' : w.retiring ? 'leaving' : !w.accepting ? 'paused' : 'ok'
        rows.push([w.id, w.name, w.kind, w.slots, w.processing, w.done, Math.round(held), Math.round(w.spilled || 0), Math.round(w.since), state])
      }
    }
    for (const [id, k] of known) {
      if (ids.has(id)) continue
      known.delete(id)
      slotsOf.delete(id)
      if (lastDashboards > 0) joined.push([t, 'left', k.name, k.kind])
    }
    if (joined.length) events = [...events, ...joined].slice(-MAX_EVENTS)
    const w = changes(rows, sentWorkers, full)
    const g = changes(updateGroups(t), sentGroups, full)
    stream.names(id => nameOf.get(id))
    const points = full ? series.points : series.points.slice(series.points.length - series.fresh)
    series.fresh = 0
    const s = stream.wire(full)
    const hidden = stream.hiddenCount(t)
    s.hiddenWorkers = hidden.workers
    s.hiddenTasks = hidden.tasks
    return {
      type: 'stream', full, now: Math.round(t),
      grid: {
        workers: summaries.length, slots, running, clients: status.clients, dashboards, tasks: status.tasks,
        submitted: status.tasksSubmitted, finished: status.tasksFinished, erred: status.tasksErred,
        memory: Math.round(memory), spilled: Math.round(spilled),
      },
      workers: w.rows, workersGone: w.gone, workersHidden: Math.max(0, summaries.length - rows.length),
      events: full ? events : joined,
      groups: g.rows, groupsGone: g.gone,
      series: points.map(Series.wire),
      tasks: series.summary(),
      stream: s,
    }
  }

  function tick(): DashboardUpdate | undefined {
    const t = now()
    series.roll(t)
    if (stream.unknownSlots) refreshWorkers()
    stream.prune(t, id => slotsOf.has(id), slotLookup)
    const status = coordinator.status() as Status
    const dashboards = status.dashboards
    if (dashboards === 0) {
      // nobody watches: keep the bounded state, send nothing, remember no changes
      stream.forgetChanges()
      series.fresh = 0
      if (lastDashboards > 0) { sentWorkers.clear(); sentGroups.clear(); known.clear(); events = [] }
      lastDashboards = 0
      return undefined
    }
    const full = dashboards > lastDashboards || t - lastFull >= keyframeMs
    if (full) lastFull = t
    const msg = build(t, status, full)
    lastDashboards = dashboards
    coordinator.broadcastDashboards(msg)
    return msg
  }

  const timer = setInterval(() => {
    try { tick() } catch (err) { console.error(`tabgrid dashboard: ${(err as Error).stack}`) }
  }, intervalMs)
  ;(timer as { unref?: () => void }).unref?.()

  return {
    stop() {
      clearInterval(timer)
      const i = coordinator.observers.indexOf(observer)
      if (i >= 0) coordinator.observers.splice(i, 1)
    },
    tick,
    size: () => ({ bars: stream.bars.length, rows: stream.rows, streamWorkers: stream.workers.size, groups: groups.size, points: series.points.length, mergeMs: stream.mergeMs }),
  }
}
