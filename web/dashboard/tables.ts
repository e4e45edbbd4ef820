/**
 * The workers table and the progress bars per task group: DOM built once per row and
 * updated in place (text only when it changed), so a busy grid never re-creates nodes.
 */
import type { DashboardModel, GroupRow, WorkerRow } from './model.js'
import { bytes, clock, ago, el, groupColour, int, setText } from './format.js'

interface WorkerCells {
  tr: HTMLTableRowElement
  name: HTMLElement
  kind: HTMLElement
  slots: HTMLElement
  meter: HTMLElement
  running: HTMLElement
  done: HTMLElement
  memory: HTMLElement
  spilled: HTMLElement
  since: HTMLElement
  state: HTMLElement
}

const STATE_TEXT: Record<WorkerRow['state'], string> = { ok: 'working', paused: 'paused', leaving: 'leaving', away: 'reconnecting…' }

export class WorkersTable {
  private readonly rows = new Map<string, WorkerCells>()

  constructor(private readonly body: HTMLElement, private readonly more: HTMLElement, private readonly emptyRow: HTMLElement, private readonly log: HTMLElement) {}

  render(model: DashboardModel, initial: boolean): void {
    for (const [id, cells] of this.rows) {
      if (!model.workers.has(id)) { cells.tr.remove(); this.rows.delete(id) }
    }
    for (const w of model.workers.values()) {
      let c = this.rows.get(w.id)
      if (!c) {
        c = this.row(w)
        this.rows.set(w.id, c)
        this.body.append(c.tr)
        if (!initial) c.tr.classList.add('fresh')
      }
      this.fill(c, w)
    }
    this.emptyRow.hidden = this.rows.size > 0
    this.more.hidden = model.workersHidden === 0
    setText(this.more, model.workersHidden ? `and ${int(model.workersHidden)} more workers, counted in the totals above but not listed` : '')
  }

  renderEvents(model: DashboardModel): void {
    const recent = model.events.slice(-4).reverse()
    this.log.replaceChildren(...recent.map(([at, what, name, kind]) => {
      const item = el('span', `event ${what}`)
      item.append(el('b', undefined, name), ` ${kind === 'browser' ? 'tab' : 'agent'} ${what} at ${clock(at)}`)
      return item
    }))
  }

  private row(w: WorkerRow): WorkerCells {
    const tr = el('tr')
    tr.dataset.id = w.id
    const nameTd = el('td', 'name')
    const name = el('span', 'worker-name')
    const kind = el('span', 'kind')
    nameTd.append(name, kind)
    const slots = el('td', 'num')
    const runTd = el('td', 'run')
    const meterBox = el('span', 'meter')
    const meter = el('span', 'meter-fill')
    meterBox.append(meter)
    const running = el('span', 'num')
    runTd.append(meterBox, running)
    const done = el('td', 'num')
    const memory = el('td', 'num')
    const spilled = el('td', 'num')
    const since = el('td', 'since')
    const stateTd = el('td')
    const state = el('span', 'state')
    stateTd.append(state)
    tr.append(nameTd, slots, runTd, done, memory, spilled, since, stateTd)
    return { tr, name, kind, slots, meter, running, done, memory, spilled, since, state }
  }

  private fill(c: WorkerCells, w: WorkerRow): void {
    setText(c.name, w.name)
    setText(c.kind, w.kind === 'browser' ? 'tab' : 'node')
    c.kind.dataset.kind = w.kind
    setText(c.slots, int(w.slots))
    c.slots.title = w.kind === 'browser' ? 'Web Workers × tasks each runs at once' : 'threads × tasks each runs at once'
    const share = w.slots ? Math.min(1, w.running / w.slots) : 0
    const width = `${Math.round(share * 100)}%`
    if (c.meter.style.width !== width) c.meter.style.width = width
    setText(c.running, int(w.running))
    setText(c.done, int(w.done))
    setText(c.memory, w.memory ? bytes(w.memory) : '–')
    setText(c.spilled, w.spilled ? bytes(w.spilled) : '–')
    setText(c.since, clock(w.since))
    c.since.title = `joined ${ago(Date.now() - w.since)}`
    setText(c.state, STATE_TEXT[w.state])
    if (c.state.dataset.state !== w.state) { c.state.dataset.state = w.state; c.tr.dataset.state = w.state }
  }
}

interface GroupCells { row: HTMLElement; name: HTMLElement; done: HTMLElement; running: HTMLElement; queued: HTMLElement; failed: HTMLElement; count: HTMLElement; detail: HTMLElement }

export class ProgressList {
  private readonly rows = new Map<string, GroupCells>()

  constructor(private readonly list: HTMLElement, private readonly empty: HTMLElement) {}

  render(model: DashboardModel): void {
    for (const [name, c] of this.rows) if (!model.groups.has(name)) { c.row.remove(); this.rows.delete(name) }
    let prev: HTMLElement | undefined
    for (const g of model.groups.values()) {
      let c = this.rows.get(g.name)
      if (!c) {
        c = this.row(g.name)
        this.rows.set(g.name, c)
      }
      // keep the model's order: new groups on top, the others where they were
      const want = prev ? prev.nextElementSibling : this.list.firstElementChild
      if (want !== c.row) {
        if (prev) prev.after(c.row)
        else this.list.prepend(c.row)
      }
      prev = c.row
      this.fill(c, g)
    }
    this.empty.hidden = this.rows.size > 0
  }

  private row(name: string): GroupCells {
    const row = el('div', 'group')
    row.dataset.group = name
    const head = el('div', 'group-head')
    const label = el('span', 'group-name', name)
    const count = el('span', 'group-count')
    head.append(label, count)
    const bar = el('div', 'bar')
    const colour = groupColour(name)
    const done = el('span', 'seg done')
    done.style.background = colour
    const running = el('span', 'seg running')
    running.style.background = colour
    const queued = el('span', 'seg queued')
    const failed = el('span', 'seg failed')
    bar.append(done, running, queued, failed)
    const detail = el('div', 'group-detail')
    row.append(head, bar, detail)
    return { row, name: label, done, running, queued, failed, count, detail }
  }

  private fill(c: GroupCells, g: GroupRow): void {
    const total = g.done + g.running + g.queued + g.failed
    const pct = (n: number): string => (total ? `${(n / total) * 100}%` : '0%')
    for (const [seg, n] of [[c.done, g.done], [c.running, g.running], [c.queued, g.queued], [c.failed, g.failed]] as const) {
      const w = pct(n)
      if (seg.style.width !== w) seg.style.width = w
    }
    const finished = g.running + g.queued === 0 && total > 0
    setText(c.count, `${int(g.done)} / ${int(total)}${finished && !g.failed ? ' ✓' : ''}`)
    const parts: string[] = []
    if (g.running) parts.push(`${int(g.running)} running`)
    if (g.queued) parts.push(`${int(g.queued)} queued`)
    if (g.failed) parts.push(`${int(g.failed)} failed`)
    if (!parts.length) parts.push(finished ? 'done' : '')
    setText(c.detail, parts.join(' · '))
    const state = g.failed ? 'failed' : finished ? 'done' : 'running'
    if (c.row.dataset.state !== state) c.row.dataset.state = state
  }
}
