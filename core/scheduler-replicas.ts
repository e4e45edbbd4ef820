/**
 * Copies of data between workers: scattered values put on their first workers and kept at
 * `replicas` copies, and the hand-off of a retiring worker's data that is still needed.
 *
 * Part of the scheduler (scheduler.ts): functions over its records, called only from its
 * own files, pure like it.
 */
import type { Scheduler } from './scheduler.js'
import { Attempt, isLeaving, type TaskState, type WorkerState, type Move } from './scheduler-state.js'
import { record } from './scheduler-story.js'

/** Up to k workers to store a copy of t on: accepting, non-retiring, least data first (paused ones next if `allowPaused`). */
export function dataTargets(sched: Scheduler, t: TaskState, k: number, allowPaused: boolean): WorkerState[] {
  const chosen: WorkerState[] = []
  const pending = new Set<WorkerState>()
  for (const a of t.attempts ?? []) pending.add(a.worker)
  for (const m of sched.moves.get(t) ?? []) pending.add(m.to)
  for (let pass = 0; pass < (allowPaused ? 2 : 1) && chosen.length < k; pass++) {
    while (chosen.length < k) {
      let best: WorkerState | null = null
      let bestLoad = Infinity
      for (const w of sched.byId.values()) {
        if (isLeaving(w) || (pass === 0 && !w.accepting) || chosen.includes(w) || pending.has(w) || t.holders?.includes(w) || t.avoid?.includes(w.volunteer)) continue
        const load = w.nbytes + w.pendingBytes
        if (load < bestLoad || (load === bestLoad && best !== null && w.seq < best.seq)) { best = w; bestLoad = load }
      }
      if (best === null) break
      chosen.push(best)
    }
  }
  return chosen
}


export function startPut(sched: Scheduler, t: TaskState, w: WorkerState): void {
  const a = new Attempt(++sched.attemptSeq, t, w, true)
  if (t.attempts === null) t.attempts = [a]
  else t.attempts.push(a)
  ;(w.puts ??= new Set()).add(a)
  a.at = sched.now
  w.pendingBytes += t.nbytes
  sched.out.push({ type: 'put-data', worker: w.id, key: t.key })
}


export function placeScattered(sched: Scheduler): void {
  for (const t of sched.scatterQ) {
    const targets = dataTargets(sched, t, t.redundancy, false)
    if (targets.length === 0) break
    sched.transition(t, 'processing', { worker: targets[0] as WorkerState, note: `put-data to ${targets.map(w => w.id).join(', ')}` })
    for (const w of targets) startPut(sched, t, w)
  }
}


/** Keeps `redundancy` copies of a scattered value: copies from a holder to new workers. */
export function replicate(sched: Scheduler, t: TaskState): void {
  if (t.fn !== null || t.status !== 'memory') { sched.underReplicated.delete(t); return }
  const have = (t.holders as WorkerState[]).length + (t.attempts?.length ?? 0) + (sched.moves.get(t)?.length ?? 0)
  const missing = t.redundancy - have
  if (missing <= 0) { sched.underReplicated.delete(t); return }
  const targets = dataTargets(sched, t, missing, false)
  for (const to of targets) startMove(sched, t, sched.bestHolder(t), to, false)
  if (targets.length < missing) sched.underReplicated.add(t)
  else sched.underReplicated.delete(t)
}


export function replicateAll(sched: Scheduler): void {
  if (sched.underReplicated.size === 0) return
  for (const t of [...sched.underReplicated]) replicate(sched, t)
}


export function handoffIfSole(sched: Scheduler, w: WorkerState, t: TaskState): void {
  const hs = t.holders
  if (t.status !== 'memory' || hs === null || hs.length !== 1 || hs[0] !== w || !sched.needsData(t)) return
  if (w.handoffs?.has(t)) return
  handoff(sched, w, t)
}


export function handoff(sched: Scheduler, from: WorkerState, t: TaskState): void {
  if (t.status !== 'memory' || !(t.holders as WorkerState[]).includes(from)) return
  const to = dataTargets(sched, t, 1, true)[0]
  if (to === undefined) return
  startMove(sched, t, from, to, true)
}


export function startMove(sched: Scheduler, t: TaskState, from: WorkerState, to: WorkerState, handoff: boolean): void {
  const ms = sched.moves.get(t)
  const m: Move = { from, to, handoff, at: sched.now }
  if (ms) ms.push(m)
  else sched.moves.set(t, [m])
  if (handoff) (from.handoffs ??= new Set()).add(t)
  record(sched, t, 'memory', 'memory', to.id, `${handoff ? 'hand-off' : 'replica'} copy from ${from.id}`)
  sched.out.push({ type: 'move-data', key: t.key, from: from.id, to: to.id })
}


export function removeMove(sched: Scheduler, t: TaskState, m: Move): void {
  const ms = sched.moves.get(t)
  if (!ms) return
  const i = ms.indexOf(m)
  if (i >= 0) ms.splice(i, 1)
  if (ms.length === 0) sched.moves.delete(t)
  if (m.handoff && !ms.some(x => x.handoff && x.from === m.from)) m.from.handoffs?.delete(t)
}


export function dropMoves(sched: Scheduler, t: TaskState): void {
  const ms = sched.moves.get(t)
  if (!ms) return
  for (const m of ms) if (m.handoff) m.from.handoffs?.delete(t)
  sched.moves.delete(t)
}
