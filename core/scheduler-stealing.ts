/**
 * Work stealing: idle workers ask busy ones for tasks those have most likely not started.
 * The victim must agree (a task it already started is refused), so a steal never runs a
 * task twice at once.
 *
 * Part of the scheduler (scheduler.ts): functions over its records, called only from its
 * own files, pure like it.
 */
import type { Scheduler } from './scheduler.js'
import { STEAL_SCAN, type Attempt, type TaskState, type WorkerState } from './scheduler-state.js'
import { record } from './scheduler-story.js'

/**
 * When nothing waits in the main queue, workers with a free slot ask busy workers for
 * tasks those have most likely not started (the ones beyond their slots, newest first).
 */
export function stealWork(sched: Scheduler): void {
  if (sched.mainQ.size > 0 || sched.idle.size === 0 || sched.saturated.size === 0) return
  let budget = STEAL_SCAN
  for (const thief of sched.idle) {
    let want = thief.slots - thief.attempts.size - thief.incoming
    for (const victim of sched.saturated) {
      if (want <= 0 || budget <= 0) break
      if (victim === thief) continue
      let excess = victim.attempts.size - victim.ahead - victim.slots
      const order = victim.order
      for (let i = order.length - 1; i >= 0 && excess > 0 && want > 0 && budget > 0; i--) {
        const a = order[i] as Attempt
        budget--
        if (!a.live) continue
        excess--
        if (a.thief !== null || a.denied || !canSteal(sched, a, victim, thief)) continue
        a.thief = thief
        a.stealAt = sched.now
        thief.incoming++
        victim.stealing++
        want--
        record(sched, a.task, 'processing', 'processing', victim.id, `steal-request for ${thief.id}`, a.id)
        sched.out.push({ type: 'steal-request', worker: victim.id, key: a.task.key, attempt: a.id })
      }
      sched.touch(victim)
    }
    sched.touch(thief)
    if (budget <= 0) break
  }
}


export function canSteal(sched: Scheduler, a: Attempt, victim: WorkerState, thief: WorkerState): boolean {
  const t = a.task
  // a task sent ahead waits for inputs running on the victim; one with dependents sent
  // ahead there would take them with it
  if (a.ahead) return false
  if (t.activeDependents > 0) for (const d of t.dependents as Set<TaskState>) if (d.status === 'processing' && d.waitingOn > 0) return false
  if (t.restrict !== null && !t.restrict.includes(thief.id) && !t.restrict.includes(thief.name)) return false
  if (t.redundant !== null && t.redundant.tried.includes(thief.volunteer)) return false
  if (t.avoid !== null && t.avoid.includes(thief.volunteer)) return false
  if (t.deps.length > 0) {
    let bytes = 0
    for (const d of t.deps) {
      const hs = d.holders
      if (hs !== null && hs.includes(victim) && !hs.includes(thief)) bytes += d.nbytes
    }
    if (bytes / sched.opts.bandwidth > sched.avgMs * 2) return false
  }
  return true
}
