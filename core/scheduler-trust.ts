/**
 * Trust, enforced on `tick`: a volunteer's heartbeats say it is alive, not that it is
 * working. Runs held past their deadline, puts never acknowledged and steal-requests
 * never answered are taken back whatever the heartbeats say; redundant tasks that no
 * untried volunteer is left to run fail with a clear error instead of waiting forever.
 * The policy itself (windows, deadlines, volunteers) is core/trust.ts.
 *
 * Part of the scheduler (scheduler.ts): functions over its records, called only from its
 * own files, pure like it.
 */
import type { Scheduler } from './scheduler.js'
import { isLeaving, type Attempt, type Move, type TaskState, type WorkerState } from './scheduler-state.js'
import { handoffIfSole, removeMove, replicate } from './scheduler-replicas.js'
import type { TaskStatus } from './scheduler-types.js'
import { narrow, type Deadlines } from './trust.js'
import { tally, voters } from './scheduler-redundancy.js'
import { record } from './scheduler-story.js'
import { spotUnchecked } from './scheduler-verify.js'

export function checkTrust(sched: Scheduler): void {
  const deadlines = sched.deadlines
  const stealMs = sched.opts.stealTimeoutMs
  if (deadlines !== null || stealMs !== Infinity) {
    for (const w of [...sched.byId.values()]) {
      if (w.status === 'gone') continue
      if (deadlines !== null) {
        checkRuns(sched, w, deadlines)
        if (w.puts !== null && w.puts.size > 0) checkPuts(sched, w, deadlines)
      }
      if (stealMs !== Infinity && w.stealing > 0) checkSteals(sched, w, stealMs)
    }
    if (deadlines !== null && sched.moves.size > 0) checkMoves(sched, deadlines)
  }
  if (sched.opts.redundancyWaitMs !== Infinity && sched.constrainedQ.size > 0) checkRedundancy(sched)
}

/**
 * The first `slots` runs a worker holds (in assignment order) are most likely running:
 * each may take its task's `timeout`, or a multiple of its group's typical run time.
 * Past that it runs elsewhere, and so does what waits behind it on that worker.
 */
function checkRuns(sched: Scheduler, w: WorkerState, deadlines: Deadlines): void {
  if (w.attempts.size === 0) return
  const now = sched.now
  let running = 0
  let overdue: Attempt[] | null = null
  let behind: Attempt[] | null = null
  for (const a of w.order) {
    if (!a.live || a.ahead) continue
    if (running >= w.slots) {
      if (overdue === null) break
      ;(behind ??= []).push(a)
      continue
    }
    running++
    if (a.started < 0) { a.started = now; continue }
    const t = a.task
    const limit = deadlines.limit(t.group, t.timeout > 0 ? t.timeout : undefined)
    // slow is not dead: each volunteer a task already lapsed on doubles its allowance, so a
    // run far slower than its group's still finishes somewhere
    if (limit !== undefined && now - a.started > limit * 2 ** (t.avoid?.length ?? 0)) (overdue ??= []).push(a)
  }
  if (overdue === null) return
  // a deadline proves the worker slow or stalling, not the task a killer: it counts no failure
  for (const a of overdue) takeBack(sched, w, a, 'deadline', `held past its deadline (${Math.round(now - a.started)} ms running)`, false)
  // what waits behind never started: its loss does not count against it
  for (const a of behind ?? []) takeBack(sched, w, a, 'deadline', 'queued behind a run past its deadline', false)
  sched.setWindow(w, narrow(w.window))
}

/** Scattered values put on a worker must be acknowledged in time (at 10 MB/s), or go elsewhere. */
function checkPuts(sched: Scheduler, w: WorkerState, deadlines: Deadlines): void {
  const now = sched.now
  let lapsed = false
  for (const a of [...(w.puts as Set<Attempt>)]) {
    const t = a.task
    if (!a.live || now - a.at <= deadlines.transfer(t.nbytes)) continue
    lapsed = true
    sched.out.push({ type: 'deadline-missed', worker: w.id, key: t.key, attempt: 0, heldMs: now - a.at, why: 'put' })
    sched.endAttempt(a)
    if (!(t.avoid ??= []).includes(w.volunteer)) t.avoid.push(w.volunteer)
    record(sched, t, t.status, t.status as TaskStatus, w.id, `put-data not acknowledged in ${Math.round(now - a.at)} ms`)
    sched.freeKey(w, t.key)
    sched.afterPutLost(t)
  }
  if (lapsed) sched.setWindow(w, narrow(w.window))
}

/**
 * Copies (replicas of scattered values, hand-offs of a retiring worker) must be
 * acknowledged in time too (at 10 MB/s): past that the copy is not believed held there,
 * its target is told to drop what it got, and the copy is made on another volunteer.
 */
function checkMoves(sched: Scheduler, deadlines: Deadlines): void {
  const now = sched.now
  let late: [TaskState, Move][] | null = null
  for (const [t, ms] of sched.moves) for (const m of ms) if (now - m.at > deadlines.transfer(t.nbytes)) (late ??= []).push([t, m])
  if (late === null) return
  const lapsed = new Set<WorkerState>()
  for (const [t, m] of late) {
    const w = m.to
    sched.out.push({ type: 'deadline-missed', worker: w.id, key: t.key, attempt: 0, heldMs: now - m.at, why: 'move' })
    removeMove(sched, t, m)
    if (!(t.avoid ??= []).includes(w.volunteer)) t.avoid.push(w.volunteer)
    record(sched, t, t.status, t.status as TaskStatus, w.id, `${m.handoff ? 'hand-off' : 'replica'} copy not acknowledged in ${Math.round(now - m.at)} ms`)
    sched.freeKey(w, t.key)
    lapsed.add(w)
    if (m.handoff) { if (isLeaving(m.from)) handoffIfSole(sched, m.from, t) } else replicate(sched, t)
  }
  for (const w of lapsed) sched.setWindow(w, narrow(w.window))
}

/** Stealing needs no agreement from a victim that doesn't answer. */
function checkSteals(sched: Scheduler, w: WorkerState, ms: number): void {
  const now = sched.now
  for (const a of [...w.attempts]) {
    if (a.thief === null || now - a.stealAt <= ms) continue
    takeBack(sched, w, a, 'steal', `steal-request unanswered for ${Math.round(now - a.stealAt)} ms`, false)
  }
}

function takeBack(sched: Scheduler, w: WorkerState, a: Attempt, why: 'deadline' | 'steal', note: string, counts: boolean): void {
  if (!a.live) return
  const t = a.task
  sched.out.push({ type: 'deadline-missed', worker: w.id, key: t.key, attempt: a.id, heldMs: sched.now - a.at, why })
  sched.out.push({ type: 'cancel-task', worker: w.id, key: t.key, attempt: a.id })
  sched.endAttempt(a)
  record(sched, t, 'processing', 'processing', w.id, note, a.id)
  sched.attemptFailed(t, counts, w)
}

/**
 * Redundant tasks that still need runs while none is out and no open worker belongs to a
 * volunteer that has not run them: after `redundancyWaitMs` they fail (timeout) instead
 * of waiting forever.
 */
function checkRedundancy(sched: Scheduler): void {
  const now = sched.now
  const wait = sched.opts.redundancyWaitMs
  let open: Set<string> | null = null
  for (const t of sched.constrainedQ.values().slice()) {
    const r = t.redundant
    if (r === null) continue
    if (open === null) {
      open = new Set()
      for (const w of sched.byId.values()) if (w.status === 'running') open.add(w.volunteer)
    }
    // runs still out will report (or meet their deadline): it is starved once none are
    let available = t.attempts !== null
    if (!available) { const vs = voters(t); for (const v of open) if (!vs.includes(v)) { available = true; break } }
    if (available) { r.starvedSince = -1; continue }
    if (r.starvedSince < 0) { r.starvedSince = now; continue }
    if (now - r.starvedSince < wait) continue
    if (t.spot && spotUnchecked(sched, t)) continue
    const n = new Set(r.tried).size
    sched.err(t, {
      code: 'timeout',
      message: `task ${t.key} needs ${t.redundancy} agreeing runs on distinct volunteers; ${n} volunteer${n === 1 ? '' : 's'} ran it (${tally(sched, r).best} agreeing) and no other was available for ${wait} ms`,
      key: t.key,
    })
  }
}
