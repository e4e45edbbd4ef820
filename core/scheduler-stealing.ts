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
import { voters } from './scheduler-redundancy.js'

/**
 * When nothing waits in the main queue, workers with a free slot ask busy workers for
 * tasks those have most likely not started (the ones beyond their slots, newest first).
 *
 * In proportion to the imbalance, once per turn: a victim gives at most half of what it
 * holds beyond its slots in one round (the thieves and it meet halfway; the next round,
 * after the answers, evens out the rest), and only tasks that would wait on it longer
 * than a steal takes (`stealLatencyMs`: its place beyond the slots × the average run time
 * ÷ slots) — tasks that finish before a steal could land are left alone. The round looks
 * at no more than STEAL_SCAN workers and attempts, however many are idle.
 */
export function stealWork(sched: Scheduler): void {
  if (sched.mainQ.size > 0 || sched.idle.size === 0 || sched.saturated.size === 0) return
  const latency = sched.opts.stealLatencyMs
  const avg = sched.avgMs
  let budget = STEAL_SCAN
  const thieves = sched.idle.values()
  let thief: WorkerState | null = null
  let want = 0
  /** The next thief with room (the last one re-filed), or null when none is left or the round's budget is spent. */
  const nextThief = (): WorkerState | null => {
    if (thief !== null) sched.touch(thief)
    for (;;) {
      if (budget-- <= 0) return null
      const n = thieves.next()
      if (n.done === true) return null
      want = n.value.slots - n.value.attempts.size - n.value.incoming
      if (want > 0) return n.value
    }
  }
  thief = nextThief()
  for (const victim of sched.saturated) {
    if (thief === null || budget-- <= 0) break
    let excess = victim.attempts.size - victim.ahead - victim.slots
    // the newest waits longest: if even it starts before a steal could land, none is worth it
    if ((excess * avg) / victim.slots < latency) continue
    let give = Math.ceil(excess / 2)
    const order = victim.order
    for (let i = order.length - 1; i >= 0 && excess > 0 && give > 0 && thief !== null && budget > 0; i--) {
      const a = order[i] as Attempt
      budget--
      if (!a.live) continue
      const wait = (excess * avg) / victim.slots
      excess--
      if (wait < latency) break
      if (a.thief !== null || a.denied || thief === victim || !canSteal(sched, a, victim, thief)) continue
      a.thief = thief
      a.stealAt = sched.now
      thief.incoming++
      victim.stealing++
      want--
      give--
      record(sched, a.task, 'processing', 'processing', victim.id, `steal-request for ${thief.id}`, a.id)
      sched.out.push({ type: 'steal-request', worker: victim.id, key: a.task.key, attempt: a.id })
      if (want <= 0) thief = nextThief()
    }
    sched.touch(victim)
  }
  if (thief !== null) sched.touch(thief)
}


export function canSteal(sched: Scheduler, a: Attempt, victim: WorkerState, thief: WorkerState): boolean {
  const t = a.task
  // a task sent ahead waits for inputs running on the victim; one with dependents sent
  // ahead there would take them with it
  if (a.ahead) return false
  if (t.activeDependents > 0) for (const d of t.dependents as Set<TaskState>) if (d.status === 'processing' && d.waitingOn > 0) return false
  if (t.restrict !== null && !t.restrict.includes(thief.id) && !t.restrict.includes(thief.name)) return false
  if (t.redundant !== null && voters(t).includes(thief.volunteer)) return false
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
