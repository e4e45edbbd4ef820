/**
 * Stories: every transition of a task goes into its bounded ring of entries (shared
 * between tasks of one event), the answer to "what happened to this task"; an impossible
 * transition throws with the story attached.
 *
 * Part of the scheduler (scheduler.ts): functions over its records, called only from its
 * own files, pure like it.
 */
import type { Scheduler } from './scheduler.js'
import type { StoryEntry, TaskStatus } from './scheduler-types.js'
import { type TaskState, type Entry, type Status } from './scheduler-state.js'

export function record(sched: Scheduler, t: TaskState, from: Status, to: TaskStatus, worker: string | undefined, note: string | undefined, attempt = 0): void {
  const L = sched.opts.storyLength
  if (L === 0) return
  let e = sched.lastEntry
  // Entries are immutable and shared: a 10,000-task submit stores one entry object.
  // The attempt is kept as a number (formatted on read) to spare a string per transition.
  if (e === null || e.from !== from || e.to !== to || e.worker !== worker || e.note !== note || e.attempt !== attempt || e.stimulus !== sched.stimulus || e.now !== sched.now) {
    e = { from, to, stimulus: sched.stimulus, worker, now: sched.now, note, attempt }
    sched.lastEntry = e
  }
  const s = t.story
  if (s === null) t.story = e
  else if (!Array.isArray(s)) t.story = L === 1 ? e : [s, e]
  else if (s.length < L) {
    // Grow by copying into an exact-size array: push would reserve ~16 spare slots per task.
    const n = s.length
    const grown = new Array<Entry>(n + 1)
    for (let i = 0; i < n; i++) grown[i] = s[i] as Entry
    grown[n] = e
    t.story = grown
  } else {
    s[t.storyHead] = e
    t.storyHead = (t.storyHead + 1) % L
  }
}


export function storyOf(sched: Scheduler, t: TaskState): StoryEntry[] {
  const s = t.story
  const entries = s === null ? [] : !Array.isArray(s) ? [s] : [...s.slice(t.storyHead), ...s.slice(0, t.storyHead)]
  return entries.map(e => {
    const out: StoryEntry = { key: t.key, from: e.from as StoryEntry['from'], to: e.to, stimulus: e.stimulus, now: e.now }
    if (e.worker !== undefined) out.worker = e.worker
    const note = e.attempt > 0 ? (e.note !== undefined ? `attempt ${e.attempt}: ${e.note}` : `attempt ${e.attempt}`) : e.note
    if (note !== undefined) out.note = note
    return out
  })
}


export function broken(sched: Scheduler, t: TaskState, message: string): Error {
  const lines = storyOf(sched, t).map(e => `  ${e.now} ${e.stimulus}: ${e.from} → ${e.to}${e.worker ? ` on ${e.worker}` : ''}${e.note ? ` (${e.note})` : ''}`)
  return new Error(`scheduler: ${message}\nstory of ${t.key} (status ${t.status}):\n${lines.join('\n') || '  (empty)'}`)
}
