/**
 * Placement: which worker runs a ready task. Hands queued tasks to workers with capacity,
 * best first: a task with dependencies goes where fetching them costs least (bytes it
 * lacks ÷ bandwidth + its queued work ÷ slots), one without to the least occupied worker.
 *
 * Part of the scheduler (scheduler.ts): functions over its records, called only from its
 * own files, pure like it.
 */
import type { Scheduler } from './scheduler.js'
import type { AssignedTask } from './scheduler-types.js'
import { Attempt, MAX_SET_ASIDE, SAMPLE, type TaskState, type WorkerState } from './scheduler-state.js'
import { runsBefore } from './scheduler-queue.js'
import { dispatchAhead, sendAheadFrom } from './scheduler-ahead.js'
import { attemptsNeeded, voters } from './scheduler-redundancy.js'
import { placeScattered } from './scheduler-replicas.js'
import { stealWork } from './scheduler-stealing.js'
import { record } from './scheduler-story.js'
import { digestsWanted } from './scheduler-verify.js'

/** tiny tasks are packed out of a batch of at least this many tasks per idle worker */
const PACK_EXCESS = 2

/**
 * Hands ready tasks to workers with capacity, best first. Unrestricted tasks fit any
 * free worker, so each costs O(log n); constrained ones that fit nowhere now are set
 * aside (at most MAX_SET_ASIDE per call) and put back with their place kept.
 */
export function dispatch(sched: Scheduler): void {
  if (sched.scatterQ.size > 0 && sched.openWorkers > 0) placeScattered(sched)
  let aside: TaskState[] | null = null
  let constrainedOpen = true
  // tiny tasks are packed only out of a batch much bigger than the idle workers, onto a worker of this dispatch (see packed)
  sched.packNow = sched.idle.size > 0 && sched.mainQ.size >= PACK_EXCESS * sched.idle.size
  sched.packing = null
  while (sched.free.length > 0) {
    const a = sched.mainQ.peek()
    const b = constrainedOpen ? sched.constrainedQ.peek() : undefined
    if (a === undefined && b === undefined) break
    if (a !== undefined && (b === undefined || runsBefore(a, b))) {
      sched.mainQ.pop()
      if (!place(sched, a)) { sched.mainQ.push(a); break }
    } else if (b !== undefined) {
      sched.constrainedQ.pop()
      if (!place(sched, b)) {
        ;(aside ??= []).push(b)
        if (aside.length >= MAX_SET_ASIDE) constrainedOpen = false
      }
    }
  }
  sched.packNow = false
  sched.packing = null
  if (aside !== null) for (const t of aside) if (!sched.constrainedQ.has(t)) sched.constrainedQ.push(t)
  if (sched.aheadLater.size > 0 && sched.free.length > 0) dispatchAhead(sched)
  stealWork(sched)
}


/** Starts as many runs as the task needs on the best workers; true if it needs no more. */
export function place(sched: Scheduler, t: TaskState): boolean {
  const r = t.redundant
  if (r === null) {
    // a task that lapsed or died on a volunteer goes elsewhere, unless only that one has room
    const w = (t.avoid !== null ? chooseWorker(sched, t, t.avoid) : null) ?? chooseWorker(sched, t, null)
    if (w === null) return false
    run(sched, t, w)
    sched.packing = w
    return true
  }
  let need = attemptsNeeded(sched, t)
  while (need > 0) {
    const w = chooseWorker(sched, t, voters(t))
    if (w === null) break
    run(sched, t, w)
    need--
  }
  return need === 0
}


export function run(sched: Scheduler, t: TaskState, w: WorkerState): void {
  const id = ++sched.attemptSeq
  if (t.status === 'queued') {
    const last = sched.lastTurn.get(t.priority)
    if (last === undefined || t.turn > last) sched.lastTurn.set(t.priority, t.turn)
    sched.transition(t, 'processing', { worker: w, attempt: id })
  } else if (t.status === 'waiting') {
    if (t.seq < 0) t.seq = ++sched.taskSeq
    sched.transition(t, 'processing', { worker: w, attempt: id, note: 'sent ahead: its inputs run there' })
  } else {
    record(sched, t, 'processing', 'processing', w.id, undefined, id)
  }
  const a = new Attempt(id, t, w, false)
  a.at = sched.now
  if (t.attempts === null) t.attempts = [a]
  else t.attempts.push(a)
  t.redundant?.tried.push(w.volunteer)
  w.attempts.add(a)
  if (w.attempts.size === 1) {
    // its lease runs from now at the earliest (an idle worker may have been quiet a while)
    w.busySince = sched.now
    if (w.heapIndex < 0) { w.leaseAt = sched.now + sched.opts.leaseMs; sched.leases.push(w) }
  }
  w.order.push(a)
  if (t.waitingOn > 0) { a.ahead = true; w.ahead++ }
  sched.touch(w)
  sched.out.push({ type: 'assign', worker: w.id, task: assigned(sched, t, a) })
  if (t.redundant === null && t.dependents !== null && sched.opts.sendAhead) sendAheadFrom(sched, t, w)
}


export function assigned(sched: Scheduler, t: TaskState, a: Attempt): AssignedTask {
  const deps: AssignedTask['deps'] = t.deps.length === 0 ? [] : t.deps.map(d => ({ key: d.key, nbytes: d.status === 'memory' ? d.nbytes : 0 }))
  const out: AssignedTask = { key: t.key, attempt: a.id, fn: t.fn, deps, push: t.gatherers !== null, priority: t.priority, seq: t.seq }
  // every assignment alike while spot checks are possible, so no run can tell it is checked
  a.digest ??= t.suspect !== null || t.spot || digestsWanted(sched)
  if (a.digest) out.digest = true
  return out
}


export function chooseWorker(sched: Scheduler, t: TaskState, exclude: readonly string[] | null): WorkerState | null {
  if (t.restrict !== null) {
    const pool: WorkerState[] = []
    for (const r of t.restrict) {
      const byId = sched.byId.get(r)
      if (byId !== undefined && byId.freeIndex >= 0 && !pool.includes(byId) && !(exclude?.includes(byId.volunteer))) pool.push(byId)
      for (const w of sched.byName.get(r) ?? []) if (w.freeIndex >= 0 && !pool.includes(w) && !(exclude?.includes(w.volunteer))) pool.push(w)
    }
    if (pool.length === 0) return null
    if (t.deps.length === 0) return leastOccupiedOf(sched, pool)
    return cheapest(sched, t, pool, null)
  }
  const fallback = packed(sched, t, exclude) ?? leastOccupied(sched, exclude)
  if (t.deps.length === 0 || fallback === null) return fallback
  return cheapest(sched, t, null, fallback, exclude)
}


export function leastOccupiedOf(sched: Scheduler, pool: readonly WorkerState[]): WorkerState | null {
  let best: WorkerState | null = null
  let bestOcc = Infinity
  for (const w of pool) {
    const occ = w.attempts.size / w.slots
    if (occ < bestOcc || (occ === bestOcc && best !== null && w.seq < best.seq)) { best = w; bestOcc = occ }
  }
  return best
}


/**
 * Tiny tasks are packed: the worker the last task of this dispatch went to takes this one
 * too while it would still hold less than a steal's latency of work per slot with it
 * (`stealLatencyMs`, the rule by which stealing leaves such tasks alone), judged by the
 * run time of the task's own group, measured by two volunteers at least (or by the only
 * one, on a grid that has one: a single machine's agents, Client.local) — when the batch
 * being placed has at least PACK_EXCESS tasks per idle worker (a few tasks still go one
 * to a worker: one that takes longer than its group's average holds up no other while a
 * worker is idle). Spread over every free worker, a map of tasks that each take
 * microseconds costs a frame each way per worker for no gain in time: an idle worker
 * could not start them sooner than the one holding them. Null: place it as usual.
 */
function packed(sched: Scheduler, t: TaskState, exclude: readonly string[] | null): WorkerState | null {
  const p = sched.packing
  if (!sched.packNow || p === null || p.freeIndex < 0) return null
  const g = sched.groupMs.get(t.group)
  if (g === undefined || (!g.two && sched.volunteers.size > 1) || ((p.attempts.size + 1) * g.ms) / p.slots >= sched.opts.stealLatencyMs) return null
  return exclude !== null && exclude.includes(p.volunteer) ? null : p
}


/** The least occupied free worker: all of them when few, a rotating sample of SAMPLE when many. */
export function leastOccupied(sched: Scheduler, exclude: readonly string[] | null): WorkerState | null {
  const free = sched.free
  const n = free.length
  if (n === 0) return null
  const all = n <= SAMPLE
  const count = all ? n : SAMPLE
  const start = all ? 0 : sched.cursor % n
  let best: WorkerState | null = null
  let bestOcc = Infinity
  for (let i = 0; i < count; i++) {
    const w = free[(start + i) % n] as WorkerState
    if (exclude !== null && exclude.includes(w.volunteer)) continue
    const occ = w.attempts.size / w.slots
    if (occ < bestOcc || (occ === bestOcc && best !== null && w.seq < best.seq)) { best = w; bestOcc = occ }
  }
  if (!all) {
    sched.cursor = start + count
    if (best === null) return leastOccupiedOf(sched, free.filter(w => !(exclude?.includes(w.volunteer))))
  }
  return best
}


/**
 * The worker minimising (bytes of deps it lacks ÷ bandwidth) + (its tasks × avg ms ÷ slots):
 * among `pool`, or else among the free holders of the deps plus `fallback`.
 */
export function cheapest(sched: Scheduler, t: TaskState, pool: readonly WorkerState[] | null, fallback: WorkerState | null, exclude: readonly string[] | null = null): WorkerState | null {
  const mark = ++sched.mark
  let total = 0
  for (const d of t.deps) {
    total += d.nbytes
    for (const h of d.holders ?? []) {
      if (h.scratchMark !== mark) { h.scratchMark = mark; h.scratch = 0 }
      h.scratch += d.nbytes
    }
  }
  const bw = sched.opts.bandwidth
  const avg = sched.avgMs
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
      if (h.freeIndex >= 0 && !(exclude?.includes(h.volunteer))) consider(h)
    }
  }
  return best
}
