/**
 * `/metrics` in Prometheus' text format, from prom-client: counters end in `_total`,
 * times are in seconds and sizes in bytes, every metric has its HELP and TYPE. Task run
 * times feed a histogram as results arrive (a coordinator observer); the rest is read
 * from the coordinator when Prometheus scrapes. The process and Node metrics (CPU,
 * memory, event loop lag, GC) are prom-client's defaults, collected once per process.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Coordinator, Observed } from '../core/coordinator.js'

/** Workers listed one by one (with their id as a label); more are still counted in the totals. */
const MAX_WORKER_SERIES = 1000

let processRegistry: Registry | undefined
/** The default metrics, shared by every coordinator in the process (their collectors are per process anyway). */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
    // gauges named like counters (promtool's lint refuses them); nodejs_active_handles & co. say the same, by type
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) processRegistry.removeSingleMetric(name)
  }
  return processRegistry
}

export interface CoordinatorMetrics {
  readonly contentType: string
  /** the exposition text, for GET /metrics */
  text(): Promise<string>
  /** stops listening to the coordinator */
  stop(): void
}

/**
 * Prometheus metrics of one coordinator.
 *
 * @example
 * ```ts
 * const metrics = coordinatorMetrics(coordinator)
 * res.writeHead(200, { 'content-type': metrics.contentType }).end(await metrics.text())
 * ```
 */
export function coordinatorMetrics(coordinator: Coordinator): CoordinatorMetrics {
  const registry = new Registry()
  const m = coordinator.metrics

  const counter = (name: string, help: string, read: () => number): void => {
    new Counter({
      name, help, registers: [registry],
      collect() { this.reset(); this.inc(Math.max(0, read())) },
    })
  }
  counter('tabgrid_tasks_submitted_total', 'Tasks submitted by clients.', () => m.tasksSubmitted)
  counter('tabgrid_tasks_finished_total', 'Task results that workers returned.', () => m.tasksFinished)
  counter('tabgrid_tasks_erred_total', 'Task runs that failed on a worker.', () => m.tasksErred)
  counter('tabgrid_bad_messages_total', 'Malformed, oversized or out-of-role messages refused (and refused connections).', () => m.badMessages)
  counter('tabgrid_relayed_bytes_total', 'Bytes of task data relayed through the coordinator (between workers, and to clients).', () => m.bytesRelayed)
  counter('tabgrid_scheduler_seconds_total', 'Time the scheduler spent handling events.', () => m.schedulerMs / 1000)
  counter('tabgrid_scheduler_events_total', 'Events the scheduler handled.', () => m.events)
  // what untrusted peers tried (README, Security)
  counter('tabgrid_refused_total', 'Claims and requests refused as outside what a connection was given.', () => m.refused)
  counter('tabgrid_quarantined_total', 'Workers quarantined: outvoted by a quorum, or caught serving other bytes than they reported.', () => m.quarantined)
  counter('tabgrid_deadlines_missed_total', 'Runs, puts and steal-requests taken back past a deadline the coordinator enforces.', () => m.deadlinesMissed)
  counter('tabgrid_connections_cut_total', 'Connections cut for reading nothing while past their output cap.', () => m.connectionsCut)
  // frames are bounded on every hop (shared/frames.ts): the largest ones show it
  counter('tabgrid_frames_sent_total', 'Frames written to connections.', () => m.framesOut)
  counter('tabgrid_frames_received_total', 'Frames read from connections.', () => m.framesIn)
  counter('tabgrid_too_large_messages_total', 'Messages that could not fit in a frame (a reply answered with a too-large error instead, anything else dropped).', () => m.tooLargeMessages)
  new Gauge({
    name: 'tabgrid_largest_frame_bytes', help: 'The largest frame sent and received, in encoded bytes (attachments aside).', labelNames: ['direction'], registers: [registry],
    collect() {
      this.set({ direction: 'sent' }, m.largestFrameOut)
      this.set({ direction: 'received' }, m.largestFrameIn)
    },
  })

  const status = (): Record<string, unknown> => coordinator.status()
  new Gauge({
    name: 'tabgrid_connections', help: 'Open connections, by role.', labelNames: ['role'], registers: [registry],
    collect() {
      const s = status()
      for (const role of ['client', 'worker', 'dashboard'] as const) this.set({ role }, Number(s[`${role}s`]) || 0)
    },
  })
  new Gauge({
    name: 'tabgrid_tasks', help: 'Tasks the scheduler knows, by state.', labelNames: ['state'], registers: [registry],
    collect() {
      this.reset()
      for (const [state, n] of Object.entries(coordinator.scheduler.counts())) this.set({ state }, n)
    },
  })
  new Gauge({ name: 'tabgrid_functions', help: 'Task functions the coordinator keeps.', registers: [registry], collect() { this.set(Number(status().functions) || 0) } })
  new Gauge({ name: 'tabgrid_modules', help: 'Modules uploaded by clients.', registers: [registry], collect() { this.set(Number(status().modules) || 0) } })

  const duration = new Histogram({
    name: 'tabgrid_task_duration_seconds', help: 'How long tasks ran on their worker.', registers: [registry],
    buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300],
  })

  // per worker, read at scrape time
  const labels = ['worker', 'name', 'kind'] as const
  type Row = Record<string, unknown>
  let rows: Row[] = []
  let rowsAt = -1
  const workerRows = (): Row[] => {
    // one read per scrape, shared by the gauges below
    const now = Date.now()
    if (now - rowsAt > 100) { rows = coordinator.workerSummaries().slice(0, MAX_WORKER_SERIES); rowsAt = now }
    return rows
  }
  const perWorker = (name: string, help: string, field: (w: Row) => number, kind: 'gauge' | 'counter' = 'gauge'): void => {
    const Metric = kind === 'gauge' ? Gauge : Counter
    new Metric({
      name, help, labelNames: labels, registers: [registry],
      collect(this: Gauge | Counter) {
        this.reset()
        for (const w of workerRows()) {
          const l = { worker: String(w.id), name: String(w.name), kind: String(w.kind) }
          if (this instanceof Gauge) this.set(l, field(w))
          else this.inc(l, Math.max(0, field(w)))
        }
      },
    })
  }
  perWorker('tabgrid_worker_slots', 'Tasks a worker runs at once (Web Workers or threads × tasks each).', w => Number(w.slots) || 0)
  perWorker('tabgrid_worker_processing', 'Tasks running on a worker or queued on it.', w => Number(w.processing) || 0)
  perWorker('tabgrid_worker_held_keys', 'Results a worker holds.', w => Number(w.held) || 0)
  perWorker('tabgrid_worker_memory_bytes', 'Bytes of results a worker keeps in memory.', w => Number(w.memory) || 0)
  perWorker('tabgrid_worker_spilled_bytes', 'Bytes of results a worker spilled (to disk or IndexedDB).', w => Number(w.spilled) || 0)
  perWorker('tabgrid_worker_connected', '1 while a worker is connected, 0 in its grace period after a lost connection.', w => (w.connected === false ? 0 : 1))
  perWorker('tabgrid_worker_tasks_done_total', 'Tasks a worker finished since it joined.', w => Number(w.done) || 0, 'counter')

  const observer = (o: Observed): void => { if (o.type === 'finished') duration.observe(o.ms / 1000) }
  coordinator.observers.push(observer)

  return {
    contentType: registry.contentType,
    text: async () => `${await processMetrics().metrics()}\n\n${await registry.metrics()}`,
    stop: () => {
      const i = coordinator.observers.indexOf(observer)
      if (i >= 0) coordinator.observers.splice(i, 1)
    },
  }
}
