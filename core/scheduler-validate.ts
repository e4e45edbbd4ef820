/**
 * Validate mode: every invariant of the scheduler's records, checked after each event in
 * tests. O(tasks + workers) per call.
 *
 * Part of the scheduler (scheduler.ts): functions over its records, called only from its
 * own files, pure like it.
 */
import type { Scheduler } from './scheduler.js'
import type { GroupCounts, TaskStatus } from './scheduler-types.js'
import { hasWanter, isActive, isLeaving, STATUSES, type Attempt, type TaskState } from './scheduler-state.js'
import { attemptsNeeded } from './scheduler-redundancy.js'
import { broken } from './scheduler-story.js'

/** Checks every invariant; throws with the offending task's story. O(tasks + workers). */
export function validate(sched: Scheduler): void {
  const counts: Record<TaskStatus, number> = { waiting: 0, queued: 0, processing: 0, memory: 0, erred: 0, released: 0, forgotten: sched.statusCounts.forgotten }
  const groups = new Map<string, GroupCounts>()
  const check = (t: TaskState, ok: boolean, what: string): void => { if (!ok) throw broken(sched, t, `invariant broken: ${what}`) }
  for (const [key, t] of sched.tasks) {
    const s = t.status
    check(t, t.key === key, 'indexed under another key')
    check(t, s !== 'new' && s !== 'forgotten', `status ${s} in the task table`)
    if (s === 'new' || s === 'forgotten') continue
    counts[s]++
    let g = groups.get(t.group)
    if (!g) { g = { group: t.group, waiting: 0, queued: 0, processing: 0, memory: 0, erred: 0, released: 0 }; groups.set(t.group, g) }
    g[s]++
    const active = isActive(s)
    let notMemory = 0
    for (const d of t.deps) {
      check(t, sched.tasks.get(d.key) === d, `dependency ${d.key} is forgotten`)
      check(t, d.dependents?.has(t) === true, `dependency ${d.key} does not list it as a dependent`)
      if (d.status !== 'memory') notMemory++
      if (active) check(t, d.status !== 'erred', `active with erred dependency ${d.key}`)
    }
    let activeDeps = 0
    for (const d of t.dependents ?? []) {
      check(t, sched.tasks.get(d.key) === d, `dependent ${d.key} is forgotten`)
      check(t, d.deps.includes(t), `dependent ${d.key} does not list it`)
      check(t, d.status !== 'erred', `erred dependent ${d.key} still linked`)
      if (isActive(d.status)) activeDeps++
    }
    check(t, t.dependents === null || t.dependents.size > 0, 'empty dependents set kept')
    check(t, activeDeps === t.activeDependents, `activeDependents ${t.activeDependents} ≠ ${activeDeps}`)
    if (active) {
      check(t, t.waitingOn === notMemory, `waitingOn ${t.waitingOn} ≠ ${notMemory}`)
      if (s !== 'processing') check(t, (s === 'waiting') === (notMemory > 0), `${s} with ${notMemory} deps not in memory`)
      else {
        const as = t.attempts ?? []
        for (const a of as) check(t, a.ahead === (notMemory > 0), `attempt ${a.id} ahead=${a.ahead} with ${notMemory} deps not in memory`)
        if (notMemory > 0) {
          check(t, t.redundant === null && as.length === 1, 'sent ahead but redundant or not one attempt')
          const w = (as[0] as Attempt).worker
          for (const d of t.deps) {
            if (d.status === 'memory') continue
            check(t, d.status === 'processing' && d.attempts?.length === 1 && (d.attempts[0] as Attempt).worker === w, `sent ahead to ${w.id} but input ${d.key} does not run there`)
          }
        }
      }
      check(t, sched.needsData(t), `${s} but nobody needs it`)
    }
    if (s === 'erred') {
      check(t, t.error !== null, 'erred without an error')
      check(t, t.deps.length === 0, 'erred but still linked to its deps')
      check(t, t.wanters !== null || t.dependents !== null, 'erred, unwanted and not forgotten')
    }
    if (s === 'released') {
      check(t, !sched.isNeeded(t), 'released but needed')
      check(t, t.dependents !== null, 'released without dependents (should be forgotten)')
      check(t, t.fn !== null, 'scattered data released')
    }
    if (s === 'memory') {
      check(t, t.holders !== null && t.holders.length > 0, 'memory without holders')
      check(t, sched.needsData(t), 'memory but not needed')
      check(t, t.gatherers === null, 'gatherers left in memory')
      for (const w of t.holders ?? []) check(t, w.status !== 'gone' && w.holds.has(t) && sched.byId.get(w.id) === w, `holder ${w.id} is gone or does not list it`)
    } else {
      check(t, t.holders === null, `holders while ${s}`)
    }
    const inMain = sched.mainQ.has(t)
    const inConstrained = sched.constrainedQ.has(t)
    const inScatter = sched.scatterQ.has(t)
    if (s === 'queued') {
      check(t, t.attempts === null, 'queued with attempts')
      check(t, t.fn === null ? inScatter : (t.restrict !== null || t.redundant !== null) ? inConstrained : inMain, 'queued but not in its queue')
      check(t, t.redundant === null || t.redundant.results.length === 0, 'queued with results')
    } else if (s === 'processing') {
      check(t, !inMain && !inScatter, 'processing and queued')
      const live = t.attempts?.length ?? 0
      if (t.redundant !== null) {
        check(t, live + t.redundant.results.length > 0, 'processing without runs or results')
        check(t, inConstrained === (attemptsNeeded(sched, t) > 0), `redundant task needs ${attemptsNeeded(sched, t)} runs but queued=${inConstrained}`)
      } else {
        check(t, !inConstrained, 'processing and queued')
        check(t, live > 0, 'processing without attempts')
        if (t.fn !== null) check(t, live === 1, `${live} attempts of a non-redundant task`)
      }
      for (const a of t.attempts ?? []) {
        check(t, a.live && a.task === t && a.worker.status !== 'gone', `attempt ${a.id} dead or misfiled`)
        check(t, a.put === (t.fn === null), `attempt ${a.id} of the wrong kind`)
        check(t, a.put ? a.worker.puts?.has(a) === true : a.worker.attempts.has(a), `attempt ${a.id} not on its worker`)
      }
    } else {
      check(t, !inMain && !inConstrained && !inScatter, `queued while ${s}`)
      if (s === 'memory' && t.fn === null) for (const a of t.attempts ?? []) check(t, a.put && a.live && a.worker.puts?.has(a) === true, 'bad pending put')
      else check(t, t.attempts === null, `attempts while ${s}`)
    }
    if (t.gatherers !== null) {
      check(t, t.gatherers.length > 0 && (active || s === 'released'), `gatherers while ${s}`)
      for (const c of t.gatherers) check(t, hasWanter(t, c), `gatherer ${c} is not a wanter`)
    }
    if (t.wanters !== null) check(t, s !== 'released', 'released but wanted')
    const st = t.story
    check(t, !Array.isArray(st) || st.length <= sched.opts.storyLength, 'story too long')
  }
  for (const st of STATUSES) {
    if (counts[st] !== sched.statusCounts[st]) throw new Error(`scheduler: invariant broken: ${st} count ${sched.statusCounts[st]} ≠ ${counts[st]}`)
  }
  for (const [name, g] of sched.groupCounts) {
    const real = groups.get(name)
    for (const st of ['waiting', 'queued', 'processing', 'memory', 'erred', 'released'] as const) {
      if (g[st] !== (real?.[st] ?? 0)) throw new Error(`scheduler: invariant broken: group ${name} ${st} ${g[st]} ≠ ${real?.[st] ?? 0}`)
    }
  }
  sched.mainQ.check()
  sched.constrainedQ.check()
  for (const t of sched.mainQ.values()) check(t, t.status === 'queued' && sched.tasks.get(t.key) === t, 'stale task in the main queue')
  for (const t of sched.constrainedQ.values()) check(t, (t.status === 'queued' || t.status === 'processing') && sched.tasks.get(t.key) === t, 'stale task in the constrained queue')
  for (const t of sched.scatterQ) check(t, t.status === 'queued' && sched.tasks.get(t.key) === t, 'stale task in the scatter queue')
  let incomingTotal = 0
  for (const w of sched.byId.values()) incomingTotal += w.incoming
  let thieves = 0
  let open = 0
  for (const [id, w] of sched.byId) {
    const fail = (what: string): never => { throw new Error(`scheduler: invariant broken on worker ${id}: ${what}`) }
    if (w.id !== id || w.status === 'gone') fail('misfiled or gone')
    if (w.status === 'running') open++
    let stealing = 0
    let ahead = 0
    for (const a of w.attempts) {
      if (!a.live || a.worker !== w || a.put || a.task.status !== 'processing' || !a.task.attempts?.includes(a)) check(a.task, false, `attempt ${a.id} misfiled on ${id}`)
      if (a.thief !== null) { stealing++; thieves++ }
      if (a.ahead) { ahead++; if (a.thief !== null) check(a.task, false, `attempt ${a.id} sent ahead and being stolen`) }
    }
    if (stealing !== w.stealing) fail(`stealing ${w.stealing} ≠ ${stealing}`)
    if (ahead !== w.ahead) fail(`ahead ${w.ahead} ≠ ${ahead}`)
    let live = 0
    for (const a of w.order) if (a.live) { live++; if (!w.attempts.has(a)) fail(`attempt ${a.id} in order only`) }
    if (live !== w.attempts.size) fail('assignment order lost an attempt')
    let bytes = 0
    for (const t of w.holds) {
      if (t.status !== 'memory' || !t.holders?.includes(w)) check(t, false, `held by ${id} while ${t.status}`)
      bytes += t.nbytes
    }
    if (bytes !== w.nbytes) fail(`nbytes ${w.nbytes} ≠ ${bytes}`)
    for (const t of w.handoffs ?? []) if (!sched.moves.get(t)?.some(m => m.from === w && m.handoff)) check(t, false, `hand-off from ${id} without a move`)
    for (const t of w.reported ?? []) if (!t.redundant?.results.some(r => r.worker === w)) check(t, false, `${id} reported without a result`)
    const isOpen = w.status === 'running'
    if ((w.status === 'running' && !w.accepting) || (w.status === 'paused' && w.accepting)) fail(`${w.status} but accepting is ${w.accepting}`)
    if (w.status === 'lapsed' && w.attempts.size > 0) fail('lapsed with attempts')
    if (isLeaving(w) !== sched.retiringWorkers.has(w)) fail('retiring set stale')
    // filed with the capacity of its last touch (a drifting average reaches each worker at its next one)
    if ((w.freeIndex >= 0) !== (isOpen && w.attempts.size < w.cap) || (w.freeIndex >= 0 && sched.free[w.freeIndex] !== w)) fail('free list stale')
    if (w.attempts.size > 0 && w.status !== 'lapsed' && (!sched.leases.has(w) || w.leaseAt > Math.max(w.lastSeen, w.busySince) + sched.opts.leaseMs)) fail('lease not filed, or filed past its deadline')
    if (sched.idle.has(w) !== (isOpen && w.attempts.size - w.ahead + w.incoming < w.slots)) fail('idle set stale')
    if (sched.saturated.has(w) !== (w.attempts.size - w.ahead - w.stealing > w.slots)) fail('saturated set stale')
  }
  if (thieves !== incomingTotal) throw new Error(`scheduler: invariant broken: ${thieves} pending steals but ${incomingTotal} expected by thieves`)
  if (open !== sched.openWorkers) throw new Error(`scheduler: invariant broken: ${sched.openWorkers} open workers counted, ${open} real`)
  for (const w of sched.free) if (w.status === 'gone') throw new Error(`scheduler: invariant broken: dead worker ${w.id} in the free list`)
  let room = 0
  for (const w of sched.free) room += w.cap - w.attempts.size
  if (room !== sched.freeRoom) throw new Error(`scheduler: invariant broken: freeRoom ${sched.freeRoom}, the free list has room for ${room}`)
  sched.leases.check()
  for (const w of sched.leases.values()) if (w.status === 'gone') throw new Error(`scheduler: invariant broken: dead worker ${w.id} in the lease queue`)
  for (const [t, ms] of sched.moves) {
    for (const m of ms) check(t, t.status === 'memory' && m.from.status !== 'gone' && m.to.status !== 'gone' && (t.holders?.includes(m.from) ?? false), `move ${m.from.id} → ${m.to.id} stale`)
  }
  for (const t of sched.underReplicated) check(t, t.fn === null && t.status === 'memory', 'under-replicated but not scattered data in memory')
}
