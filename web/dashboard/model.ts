/**
 * What the dashboard knows: the coordinator's `stream` updates (shared/protocol.ts
 * `dashboardUpdate`) applied in order. A full update replaces everything; a delta
 * replaces the rows and bars it names. Everything here is bounded because the updates
 * are: at most a few thousand bars, a few hundred rows, 300 points.
 */
import type { DashboardGroupRow, DashboardPoint, DashboardUpdate, DashboardWorkerRow } from '../../shared/protocol.js'

export interface StreamBar {
  id: number
  /** stream worker index */
  w: number
  lane: number
  group: string
  /** ms since the epoch (coordinator clock) */
  start: number
  end: number
  n: number
  busyUs: number
  key: string
}

export interface StreamWorker { idx: number; id: string; name: string; lanes: number }

export interface WorkerRow {
  id: string; name: string; kind: 'browser' | 'node'; slots: number; running: number; done: number
  memory: number; spilled: number; since: number; state: DashboardWorkerRow[9]
}

export interface GroupRow { name: string; done: number; running: number; queued: number; failed: number }

export type Changed = 'grid' | 'workers' | 'groups' | 'series' | 'tasks' | 'stream' | 'events'

export class DashboardModel {
  /** coordinator clock minus ours, ms (smoothed) */
  offset = 0
  private synced = false
  updates = 0
  grid: DashboardUpdate['grid'] | undefined
  tasks: DashboardUpdate['tasks'] | undefined
  readonly workers = new Map<string, WorkerRow>()
  workersHidden = 0
  events: DashboardUpdate['events'] = []
  /** newest group first; a group keeps its place once shown */
  readonly groups = new Map<string, GroupRow>()
  series: DashboardPoint[] = []
  readonly stream = {
    t0: 0,
    windowMs: 60_000,
    mergeMs: 0,
    workers: [] as StreamWorker[],
    bars: new Map<number, StreamBar>(),
    hiddenWorkers: 0,
    hiddenTasks: 0,
  }
  private groupNames = new Map<number, string>()
  /** what the last update changed */
  changed = new Set<Changed>()

  /** The coordinator's time now, by our clock. */
  serverNow(): number {
    return Date.now() + this.offset
  }

  apply(u: DashboardUpdate): void {
    this.updates++
    const offset = u.now - Date.now()
    // a late message only makes the offset look smaller: follow gently, jump when far off
    this.offset = !this.synced || Math.abs(offset - this.offset) > 2000 ? offset : this.offset * 0.8 + offset * 0.2
    this.synced = true
    const changed = this.changed
    changed.clear()
    if (u.full) {
      this.workers.clear()
      this.groups.clear()
      this.series = []
      this.stream.bars.clear()
      this.groupNames.clear()
      this.events = []
      changed.add('workers').add('groups').add('series').add('stream').add('events')
    }
    this.grid = u.grid
    this.tasks = u.tasks
    changed.add('grid').add('tasks')

    for (const id of u.workersGone) this.workers.delete(id)
    for (const r of u.workers) {
      this.workers.set(r[0], { id: r[0], name: r[1], kind: r[2], slots: r[3], running: r[4], done: r[5], memory: r[6], spilled: r[7], since: r[8], state: r[9] })
    }
    this.workersHidden = u.workersHidden
    if (u.workers.length || u.workersGone.length) changed.add('workers')
    if (u.events.length) {
      this.events = [...this.events, ...u.events].slice(-20)
      changed.add('events')
    }

    if (u.groupsGone.length || u.groups.length) changed.add('groups')
    for (const g of u.groupsGone) this.groups.delete(g)
    const fresh: GroupRow[] = []
    for (const g of u.groups) {
      const row = rowOfGroup(g)
      if (this.groups.has(row.name)) this.groups.set(row.name, row)
      else fresh.push(row)
    }
    if (fresh.length) {
      // new groups go on top, in the order the coordinator ranks them; the rest keep their places
      const rest = [...this.groups.values()]
      this.groups.clear()
      for (const r of fresh) this.groups.set(r.name, r)
      for (const r of rest) this.groups.set(r.name, r)
    }

    if (u.series.length) {
      this.series = u.full ? u.series.slice() : [...this.series, ...u.series].slice(-300)
      changed.add('series')
    }

    const s = u.stream
    this.stream.t0 = s.t0
    this.stream.windowMs = s.windowMs
    this.stream.mergeMs = s.mergeMs
    this.stream.hiddenWorkers = s.hiddenWorkers
    this.stream.hiddenTasks = s.hiddenTasks
    if (s.lanes) this.stream.workers = s.lanes.map(([idx, id, name, lanes]) => ({ idx, id, name, lanes }))
    for (const [i, name] of s.groups) this.groupNames.set(i, name)
    for (const b of s.bars) {
      const old = this.stream.bars.get(b[0])
      this.stream.bars.set(b[0], {
        id: b[0], w: b[1], lane: b[2], group: this.groupNames.get(b[3]) ?? 'other',
        start: s.t0 + b[4], end: s.t0 + b[5], n: b[6], busyUs: b[7], key: b[8] || old?.key || '',
      })
    }
    const cutoff = u.now - s.windowMs
    for (const [id, b] of this.stream.bars) if (b.end < cutoff) this.stream.bars.delete(id)
    if (s.bars.length || s.lanes) changed.add('stream')
  }

  /** The name of a worker by id, from the table or the stream. */
  workerName(id: string | undefined): string | undefined {
    if (id === undefined) return undefined
    return this.workers.get(id)?.name ?? this.stream.workers.find(w => w.id === id)?.name
  }
}

function rowOfGroup(g: DashboardGroupRow): GroupRow {
  return { name: g[0], done: g[1], running: g[2], queued: g[3], failed: g[4] }
}
