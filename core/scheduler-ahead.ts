/**
 * Dependents sent ahead: a waiting task whose every unfinished input runs on one worker
 * goes to that worker at once, and starts the moment its inputs land there, with no round
 * trip through the coordinator. If an input stops running there, its dependents sent
 * ahead are taken back and wait at the coordinator again.
 *
 * Part of the scheduler (scheduler.ts): functions over its records, called only from its
 * own files, pure like it.
 */
import type { Scheduler } from './scheduler.js'
import { type Attempt, type TaskState, type WorkerState } from './scheduler-state.js'
import { run } from './scheduler-placement.js'

/**
 * `t` was just given to `w`: its waiting dependents whose every unfinished input runs on
 * `w` go there too, now (or once `w` has capacity), so each starts the moment its inputs
 * land, with no round trip through the coordinator. A chain streams onto one worker.
 */
export function sendAheadFrom(sched: Scheduler, t: TaskState, w: WorkerState): void {
  for (const d of t.dependents as Set<TaskState>) {
    if (d.status !== 'waiting' || !canRunAhead(sched, d, w)) continue
    if (w.freeIndex >= 0) run(sched, d, w)
    else {
      let later = sched.aheadLater.get(w)
      if (later === undefined) sched.aheadLater.set(w, later = new Set())
      later.add(d)
    }
  }
}


/** Whether waiting `d` may go to `w` ahead of its inputs: each unfinished one has its single run on `w`. */
export function canRunAhead(sched: Scheduler, d: TaskState, w: WorkerState): boolean {
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
export function dispatchAhead(sched: Scheduler): void {
  for (const [w, later] of sched.aheadLater) {
    if (w.status === 'gone') { sched.aheadLater.delete(w); continue }
    if (w.freeIndex < 0) continue
    for (const d of later) {
      if (w.freeIndex < 0) break
      later.delete(d)
      if (d.status === 'waiting' && canRunAhead(sched, d, w)) run(sched, d, w)
    }
    if (later.size === 0) sched.aheadLater.delete(w)
  }
}


/** `t` is no longer running where its dependents sent ahead expect it: they wait at the coordinator again. */
export function recallAhead(sched: Scheduler, t: TaskState): void {
  if (t.dependents === null) return
  for (const d of t.dependents) {
    if (d.status === 'processing' && d.waitingOn > 0) sched.transition(d, 'waiting', { note: `input ${t.key} no longer runs there` })
  }
}


/** The attempt's inputs are all in memory now: it is an ordinary run (it may start, and be stolen). */
export function clearAhead(sched: Scheduler, a: Attempt): void {
  if (!a.ahead) return
  a.ahead = false
  a.worker.ahead--
  sched.touch(a.worker)
}
