/**
 * A task's story: its transitions (Dask's states), where it ran and why it moved, from
 * `client.story(key)`. The dashboard role is read-only and has no requests, so the story
 * comes over the page's client connection (the same one the code panel uses).
 */
import type { Client, StoryEntry } from '../../shared/client.js'
import type { DashboardModel } from './model.js'
import { clock, el, groupColour, must, setText } from './format.js'

/** What a stimulus id means to a reader ('task-finished-12' → 'the worker finished it'). */
const STIMULI: [RegExp, string][] = [
  [/^submit/, 'a client submitted it'],
  [/^task-finished/, 'its worker finished it'],
  [/^task-erred/, 'it threw on its worker'],
  [/^worker-added/, 'a worker joined'],
  [/^worker-removed/, 'its worker left'],
  [/^worker-status/, 'a worker paused or resumed'],
  [/^worker-retiring/, 'its worker is leaving'],
  [/^steal/, 'an idle worker stole it'],
  [/^release/, 'no client wants it any more'],
  [/^cancel/, 'a client cancelled it'],
  [/^client-removed/, 'its client went away'],
  [/^missing-data/, 'its worker could not fetch a dependency'],
  [/^data-lost/, 'its data was lost'],
  [/^data-released/, 'its worker dropped the data'],
  [/^data-added/, 'data arrived on a worker'],
  [/^lease-expired/, 'its worker went quiet (lease ran out)'],
  [/^gather/, 'a client asked for its data'],
]

export class StoryPanel {
  private readonly form: HTMLFormElement
  private readonly input: HTMLInputElement
  private readonly body: HTMLElement
  private readonly title: HTMLElement
  private readonly summary: HTMLElement
  private seq = 0
  /** the key shown, and how many steps (tests) */
  shown: { key: string; steps: number } | undefined

  constructor(root: HTMLElement, private readonly getClient: () => Promise<Client>, private readonly model: DashboardModel) {
    this.form = must<HTMLFormElement>('#story-form', root)
    this.input = must<HTMLInputElement>('#story-key', root)
    this.body = must('#story-body', root)
    this.title = must('#story-title', root)
    this.summary = must('#story-summary', root)
    this.form.addEventListener('submit', e => {
      e.preventDefault()
      const key = this.input.value.trim()
      if (key) void this.show(key)
    })
  }

  async show(key: string): Promise<void> {
    const mine = ++this.seq
    this.input.value = key
    setText(this.title, key)
    this.title.style.setProperty('--group', groupColour(key.includes('-') ? key.slice(0, key.lastIndexOf('-')) : key))
    setText(this.summary, 'asking the coordinator…')
    let story: StoryEntry[]
    try {
      story = await (await this.getClient()).story(key)
    } catch (err) {
      if (mine !== this.seq) return
      setText(this.summary, `could not get the story: ${(err as Error).message}`)
      this.body.replaceChildren()
      return
    }
    if (mine !== this.seq) return
    this.shown = { key, steps: story.length }
    if (!story.length) {
      setText(this.summary, 'The coordinator no longer knows this task: it is forgotten once no client holds its future.')
      this.body.replaceChildren()
      return
    }
    // the task's state is the scheduler's; the worker's own steps (source 'worker') are interleaved by time
    const last = story.findLast(s => s.source !== 'worker') ?? story[story.length - 1]!
    const ran = [...new Set(story.filter(s => s.to === 'processing' && s.worker).map(s => this.name(s.worker)))]
    const attempts = story.filter(s => s.to === 'processing').length
    const parts = [`now ${last.to}`]
    if (ran.length) parts.push(`ran on ${ran.join(', ')}`)
    if (attempts > 1) parts.push(`${attempts} attempts`)
    setText(this.summary, parts.join(' · '))
    const t0 = story[0]!.now
    const rows = story.map(s => {
      const tr = el('tr')
      const when = el('td', 'when', s === story[0] ? clock(s.now) : `+${fmtMs(s.now - t0)}`)
      when.title = new Date(s.now).toISOString()
      const move = el('td', 'move')
      move.append(el('span', `st st-${s.from}`, s.from), ' → ', el('span', `st st-${s.to}`, s.to))
      const where = el('td', 'where', s.worker ? this.name(s.worker) : '')
      const why = el('td', 'why')
      why.append(el('span', undefined, reason(s)))
      // attempt ids are the scheduler's own numbering: the summary counts attempts instead
      let note = typeof s.note === 'string' ? s.note.replace(/^attempt \d+(: )?/, '') : ''
      // a worker's step already names its thread
      if (s.source === 'worker' && s.thread !== undefined && note === `on thread ${s.thread}`) note = ''
      if (note) why.append(el('span', 'note', ` (${note})`))
      why.title = s.stimulus
      tr.append(when, move, where, why)
      return tr
    })
    this.body.replaceChildren(...rows)
  }

  private name(id: string | undefined): string {
    return this.model.workerName(id) ?? id ?? ''
  }
}

/** Why it moved, in words: the transition first, then the event that caused it. */
function reason(s: StoryEntry): string {
  const st = s.stimulus
  if (s.source === 'worker') return `on the worker${s.thread !== undefined ? `, thread ${s.thread}` : ''}: ${WORKER_STEPS[s.to] ?? s.to}`
  if (s.to === 'processing') {
    if (/^task-(finished|erred)/.test(st)) return 'a slot freed up on a worker'
    if (/^steal/.test(st)) return 'moved to an idle worker'
    if (/^submit/.test(st)) return 'placed on a worker at once'
    if (/^(worker-removed|lease-expired)/.test(st)) return 'rescheduled: its worker was lost'
    // placed in a pass run after some other event (a gather, a worker joining): a worker had room
    if (s.from === 'queued') return 'a worker had room for it'
  }
  if (s.from === 'processing' && s.to === 'memory') return 'its worker finished it'
  if (s.from === 'processing' && s.to === 'erred') return 'it threw on its worker'
  if (s.from === 'processing' && s.to === 'queued') return /^task-erred/.test(st) ? 'it threw; retrying' : 'taken back from its worker'
  for (const [re, text] of STIMULI) if (re.test(st)) return text
  return st
}

/** The worker state machine's states, in words (core/worker-state.ts). */
const WORKER_STEPS: Record<string, string> = {
  waiting: 'received, waiting for its inputs',
  ready: 'ready: its inputs are here',
  copying: 'copying its inputs to a thread',
  executing: 'running',
  memory: 'done, result held',
  erred: 'failed',
  cancelled: 'cancelled',
  missing: 'an input is missing',
  released: 'let go',
}

function fmtMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`
}
