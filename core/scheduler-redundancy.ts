/**
 * Redundancy: a task with redundancy k runs on k distinct volunteers and is accepted only when
 * k reports agree on the digest of the result; disagreement asks for more runs, up to
 * 2k+1, then fails with redundancy-mismatch.
 *
 * Part of the scheduler (scheduler.ts): functions over its records, called only from its
 * own files, pure like it.
 */
import type { Scheduler } from './scheduler.js'
import { NO_INFO, isLeaving, type Redundancy, type TaskState } from './scheduler-state.js'
import { handoffIfSole } from './scheduler-replicas.js'
import { endSpot } from './scheduler-verify.js'

export function tally(sched: Scheduler, r: Redundancy): { best: number; digest: string } {
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


/**
 * The volunteers a redundant task's next run may not go to: those with a result under
 * vote or a run out. (One whose run was stolen or taken back without a result may run it
 * again: counting it would starve a task on a small grid.)
 */
export function voters(t: TaskState): string[] {
  const out: string[] = []
  for (const x of t.redundant?.results ?? []) if (!out.includes(x.worker.volunteer)) out.push(x.worker.volunteer)
  for (const a of t.attempts ?? []) if (!out.includes(a.worker.volunteer)) out.push(a.worker.volunteer)
  return out
}

export function attemptsNeeded(sched: Scheduler, t: TaskState): number {
  const r = t.redundant
  if (r === null) return t.attempts === null ? 1 : 0
  const k = t.redundancy
  const live = t.attempts?.length ?? 0
  const remaining = 2 * k + 1 - r.reports - live
  return Math.max(0, Math.min(k - tally(sched, r).best - live, remaining))
}


/** Re-evaluates a redundant task after a report or a lost run: accept, ask for more runs, or give up. */
export function syncRedundant(sched: Scheduler, t: TaskState): void {
  const r = t.redundant
  if (r === null || t.status !== 'processing') return
  if (r.results.some(x => x.worker.status === 'gone')) r.results = r.results.filter(x => x.worker.status !== 'gone')
  const k = t.redundancy
  const { best, digest } = tally(sched, r)
  if (best >= k) { accept(sched, t, digest); return }
  const live = t.attempts?.length ?? 0
  const remaining = 2 * k + 1 - r.reports - live
  if (live === 0 && best + Math.max(0, remaining) < k) {
    const n = r.reports
    dropResults(sched, t)
    sched.err(t, { code: 'redundancy-mismatch', message: `task ${t.key}: ${n} runs on distinct workers did not agree (${k} had to)`, key: t.key })
    return
  }
  if (live === 0 && r.results.length === 0) {
    sched.transition(t, 'queued', NO_INFO)
    return
  }
  const need = Math.max(0, Math.min(k - best - live, remaining))
  const queued = sched.constrainedQ.has(t)
  if (need > 0 && !queued) sched.constrainedQ.push(t)
  else if (need === 0 && queued) sched.constrainedQ.remove(t)
}


export function accept(sched: Scheduler, t: TaskState, digest: string): void {
  const r = t.redundant as Redundancy
  const agree = r.results.filter(x => x.digest === digest)
  for (const x of r.results) {
    if (x.digest === digest) continue
    sched.freeKey(x.worker, t.key)
    // outvoted by a quorum: the coordinator stops trusting it
    sched.out.push({ type: 'outvoted', worker: x.worker.id, key: t.key, digest: x.digest, agreed: digest })
  }
  dropResults(sched, t, true)
  t.nbytes = (agree[0] as { nbytes: number }).nbytes
  for (const x of agree) { sched.addHolder(t, x.worker); x.worker.verified++ }
  // vouched for by a quorum, not by one volunteer's word
  t.producer = null
  t.digest = digest
  const spot = t.spot
  endSpot(t)
  sched.transition(t, 'memory', { note: spot ? `spot check passed: ${agree.length} runs agree on ${digest}` : `${agree.length} runs agree on ${digest}` })
  for (const x of agree) if (isLeaving(x.worker)) handoffIfSole(sched, x.worker, t)
}


/** Forgets a redundant task's votes; rejected data is freed unless `keep`. */
export function dropResults(sched: Scheduler, t: TaskState, keep = false): void {
  const r = t.redundant
  if (r === null) return
  for (const x of r.results) {
    x.worker.reported?.delete(t)
    if (!keep) sched.freeKey(x.worker, t.key)
  }
  r.results = []
  if (sched.constrainedQ.has(t)) sched.constrainedQ.remove(t)
}
