/**
 * Results that rest on one volunteer's word are not simply believed (BOINC's adaptive
 * replication): some are spot-checked on another volunteer, and when a volunteer is
 * caught lying (quarantined) every value it alone vouched for that the grid still relies
 * on is re-verified. A re-run that differs replaces the value, its clients hear the
 * key-state again with `replaced`, and what was computed from it is re-verified in turn.
 *
 * Part of the scheduler (scheduler.ts): functions over its records, called only from its
 * own files, pure like it.
 */
import type { Scheduler } from './scheduler.js'
import { VERIFY } from './scheduler-types.js'
import { Redundancy, isActive, type TaskState, type WorkerState } from './scheduler-state.js'
import { dropResults, syncRedundant } from './scheduler-redundancy.js'
import { record } from './scheduler-story.js'

/** A worker's spot-check probability: high while new, falling as its results are confirmed. */
export function spotRate(sched: Scheduler, w: WorkerState): number {
  const o = sched.opts.spotCheck
  if (o === null) return 0
  return Math.max(o.floor, (o.rate * o.halfLife) / (o.halfLife + w.verified))
}

/** Whether assignments should ask for a digest: spot checks are on and another volunteer could check. */
export function digestsWanted(sched: Scheduler): boolean {
  return sched.opts.spotCheck !== null && sched.volunteers.size >= 2
}

/**
 * Called with a finished run of a task without redundancy: true if its result is held
 * back for a spot check (the task stays processing as a redundant one, k = 2, with this
 * report as its first vote), false if it is accepted now.
 */
export function spotCheck(sched: Scheduler, t: TaskState, w: WorkerState, digest: string | undefined, nbytes: number): boolean {
  if (sched.opts.spotCheck === null || !t.spotCheck || t.fn === null || t.suspect !== null || digest === undefined || digest === '') return false
  // dependents sent ahead to this worker wait for the value there: not worth delaying them
  if (t.dependents !== null) for (const d of t.dependents) if (d.status === 'processing') return false
  let other = false
  for (const x of sched.byId.values()) if (x.status === 'running' && x.volunteer !== w.volunteer) { other = true; break }
  if (!other) return false
  // drawn after the checks above, so the stream of draws depends only on checkable results
  if (sched.random() >= spotRate(sched, w)) return false
  const r = new Redundancy()
  r.results.push({ worker: w, digest, nbytes })
  r.tried.push(w.volunteer)
  r.reports = 1
  t.redundant = r
  t.redundancy = 2
  t.spot = true
  ;(w.reported ??= new Set()).add(t)
  record(sched, t, 'processing', 'processing', w.id, `spot check: ${w.id}'s result (${digest.slice(0, 12)}…) to be confirmed by another volunteer`)
  syncRedundant(sched, t)
  return true
}

/**
 * A spot check no other volunteer is left to run (after redundancyWaitMs): the result is
 * taken on its volunteer's word after all, as it would have been without the check. True
 * if so; false if the runs so far disagree (then the task fails as a redundant one would).
 */
export function spotUnchecked(sched: Scheduler, t: TaskState): boolean {
  const r = t.redundant as Redundancy
  const first = r.results[0]
  if (first === undefined || r.results.some(x => x.digest !== first.digest) || t.attempts !== null) return false
  dropResults(sched, t, true)
  endSpot(t)
  t.nbytes = first.nbytes
  t.producer = first.worker.volunteer
  t.digest = first.digest
  sched.addHolder(t, first.worker)
  sched.transition(t, 'memory', { worker: first.worker, note: 'spot check given up: no other volunteer was available; the result rests on its word' })
  return true
}

/** A spot-checked or re-verified task is back to its own redundancy. */
export function endSpot(t: TaskState): void {
  if (!t.spot) return
  t.spot = false
  t.redundant = null
  t.redundancy = 1
}

/**
 * A volunteer was quarantined: every value only its word vouches for is re-verified, if
 * the grid still relies on it (it is in memory, or released with results computed from
 * it still around). Values in memory are dropped and recomputed elsewhere (copies of them
 * came from the liar); the new digest is compared with the old one when the run ends.
 */
export function reverify(sched: Scheduler, volunteer: string, why: string): void {
  for (const t of sched.tasks.values()) {
    if (t.producer !== volunteer) continue
    t.producer = null
    const s = t.status
    if (t.fn === null || s === 'erred' || s === 'new' || s === 'forgotten') continue
    if (isActive(s)) {
      // already being recomputed (its copies were lost with the volunteer): compare when done
      if (t.suspect === null) t.suspect = t.digest ?? ''
      continue
    }
    if (s === 'released' && !reliedOn(t)) continue
    again(sched, t, `re-verifying: ${why}`)
  }
}

/** A released task matters only if something computed from it is still around. */
function reliedOn(t: TaskState): boolean {
  for (const d of t.dependents ?? []) if (d.status === 'memory' || d.status === 'released') return true
  return false
}

/** Runs t again and compares (memory: its data is dropped; released: it is wanted until back). */
function again(sched: Scheduler, t: TaskState, note: string): void {
  t.suspect = t.digest ?? ''
  if (t.status === 'released') sched.want(t, sched.client(VERIFY))
  sched.recompute(t, note)
}

/**
 * A re-verified task is back in memory: true if its value differs from the disputed one
 * (its clients are told it was replaced), in which case what was computed from the old
 * value is re-verified too. A same digest confirms the old value: nothing else changes.
 */
export function verified(sched: Scheduler, t: TaskState): boolean {
  const old = t.suspect as string
  t.suspect = null
  if (t.wanters !== null && sched.unwant(t, VERIFY)) sched.todo.push(t)
  const same = old !== '' && old === t.digest
  record(sched, t, 'memory', 'memory', undefined, same
    ? 're-verified: a run on another volunteer agrees with the disputed value'
    : `re-verified: the disputed value (${old === '' ? 'no digest' : `${old.slice(0, 12)}…`}) was wrong and is replaced; what was computed from it is re-verified`)
  if (same) return false
  for (const d of [...(t.dependents ?? [])]) {
    if ((d.status === 'memory' || (d.status === 'released' && reliedOn(d))) && d.fn !== null) {
      d.producer = null
      again(sched, d, `re-verifying: its input ${t.key} was replaced`)
    }
  }
  return true
}

/** A small seeded generator (mulberry32): the scheduler stays a pure function of its events and seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}
