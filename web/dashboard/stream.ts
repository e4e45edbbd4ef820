/**
 * The task stream: one row per worker slot, a bar per task (or per run of same-group
 * tasks merged by the coordinator) over the last minute, coloured by group. Drawn on a
 * canvas in requestAnimationFrame, only when the data changed or time moved a pixel.
 *
 * How to read it: gaps are idle slots; a faded bar is a merged run whose slot idled
 * between tasks (the fade is the idle share); a striped bar holds tasks too short to draw
 * one by one, which is what "too small tasks" look like.
 */
import type { DashboardModel, StreamBar } from './model.js'
import { clock, duration, el, groupColour, int, setText } from './format.js'

const AXIS_H = 18
const GUTTER_W = 128
const MAX_CANVAS_H = 340

interface Layout {
  rows: number
  rowH: number
  gutter: number
  plotW: number
  plotH: number
  /** stream worker index → first row */
  base: Map<number, number>
  /** row → [worker index, lane] */
  rowInfo: { w: number; lane: number; first: boolean; name: string; band: number }[]
}

export class TaskStreamView {
  private layout: Layout | undefined
  private width = 0
  private dirty = true
  private lastPx = -1
  private hover: StreamBar | undefined
  private pointer: { x: number; y: number } | undefined
  private stripes: CanvasPattern | null = null
  private readonly ctx: CanvasRenderingContext2D
  private raf = 0
  private frozenAt: number | undefined
  /** bars drawn in the last frame (tests) */
  drawn = 0

  constructor(
    private readonly canvas: HTMLCanvasElement,
    private readonly tooltip: HTMLElement,
    private readonly empty: HTMLElement,
    private readonly legend: HTMLElement,
    private readonly note: HTMLElement,
    private readonly model: DashboardModel,
    private readonly onPick: (bar: StreamBar) => void,
  ) {
    this.ctx = canvas.getContext('2d', { alpha: true })!
    new ResizeObserver(() => { this.resize(); this.invalidate() }).observe(canvas.parentElement!)
    canvas.addEventListener('pointermove', e => {
      const r = canvas.getBoundingClientRect()
      this.pointer = { x: e.clientX - r.left, y: e.clientY - r.top }
      this.pick(true)
    })
    canvas.addEventListener('pointerleave', () => {
      this.pointer = undefined
      this.setHover(undefined)
    })
    canvas.addEventListener('click', e => {
      const r = canvas.getBoundingClientRect()
      this.pointer = { x: e.clientX - r.left, y: e.clientY - r.top }
      // what the tooltip shows, if the bar scrolled a little since the pointer came
      const bar = this.pick(false) ?? this.hover
      if (bar?.key) this.onPick(bar)
    })
    this.resize()
    this.loop()
  }

  /** The data changed: lay out and draw on the next frame. */
  invalidate(): void {
    this.layout = undefined
    this.dirty = true
  }

  /** Stop scrolling (connection lost) or go on. */
  freeze(frozen: boolean): void {
    this.frozenAt = frozen ? this.model.serverNow() : undefined
    this.dirty = true
  }

  private now(): number {
    return this.frozenAt ?? this.model.serverNow()
  }

  private resize(): void {
    const w = Math.max(200, Math.floor(this.canvas.parentElement!.clientWidth))
    if (w !== this.width) { this.width = w; this.layout = undefined; this.dirty = true }
  }

  private computeLayout(): Layout {
    const workers = [...this.model.stream.workers].sort((a, b) => a.idx - b.idx)
    const base = new Map<number, number>()
    const rowInfo: Layout['rowInfo'] = []
    workers.forEach((w, band) => {
      base.set(w.idx, rowInfo.length)
      for (let lane = 0; lane < w.lanes; lane++) rowInfo.push({ w: w.idx, lane, first: lane === 0, name: w.name, band })
    })
    const rows = rowInfo.length
    const rowH = rows === 0 ? 18 : Math.max(1, Math.min(18, Math.floor((MAX_CANVAS_H - AXIS_H) / rows)))
    const gutter = rowH * Math.min(...workers.map(w => w.lanes), 99) >= 11 && this.width > 560 ? GUTTER_W : 0
    const plotH = Math.max(rows * rowH, 54)
    const cssH = plotH + AXIS_H
    if (this.canvas.style.height !== `${cssH}px`) this.canvas.style.height = `${cssH}px`
    const dpr = window.devicePixelRatio || 1
    const pw = Math.round(this.width * dpr), ph = Math.round(cssH * dpr)
    if (this.canvas.width !== pw || this.canvas.height !== ph) { this.canvas.width = pw; this.canvas.height = ph; this.stripes = null }
    this.canvas.style.width = `${this.width}px`
    return { rows, rowH, gutter, plotW: this.width - gutter - 8, plotH, base, rowInfo }
  }

  private loop = (): void => {
    this.raf = requestAnimationFrame(this.loop)
    const L = this.layout ?? (this.layout = this.computeLayout())
    const msPerPx = this.model.stream.windowMs / Math.max(1, L.plotW)
    const px = Math.floor(this.now() / msPerPx)
    if (!this.dirty && (px === this.lastPx || this.model.stream.bars.size === 0)) return
    this.lastPx = px
    // bars scroll under a pointer that stays put: what it points at changes
    if (this.pointer) this.pick(true)
    this.dirty = false
    this.draw(L)
  }

  private x(L: Layout, t: number, now: number): number {
    return L.gutter + L.plotW - ((now - t) / this.model.stream.windowMs) * L.plotW
  }

  private draw(L: Layout): void {
    const ctx = this.ctx
    const dpr = this.canvas.width / this.width
    const css = getComputedStyle(this.canvas)
    const ink = css.getPropertyValue('--muted').trim() || '#5d6676'
    const faint = css.getPropertyValue('--line').trim() || '#e3e6eb'
    const band = css.getPropertyValue('--tile').trim() || '#f8f9fb'
    const sheet = css.getPropertyValue('--sheet').trim() || '#ffffff'
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0)
    ctx.clearRect(0, 0, this.width, L.plotH + AXIS_H)
    const now = this.now()
    const windowMs = this.model.stream.windowMs
    const left = L.gutter

    // worker bands, then the time grid
    for (let r = 0; r < L.rows; r++) {
      const info = L.rowInfo[r]!
      if (info.band % 2 === 1) { ctx.fillStyle = band; ctx.fillRect(left, r * L.rowH, L.plotW, L.rowH) }
    }
    ctx.fillStyle = faint
    ctx.font = '11px system-ui, sans-serif'
    ctx.textBaseline = 'middle'
    for (let s = 0; s <= windowMs / 1000; s += 10) {
      const x = Math.round(this.x(L, now - s * 1000, now)) + 0.5
      ctx.fillStyle = faint
      ctx.fillRect(x - 0.5, 0, 1, L.plotH)
      ctx.fillStyle = ink
      ctx.textAlign = s === 0 ? 'right' : 'center'
      ctx.fillText(s === 0 ? 'now' : `−${s} s`, s === 0 ? x + 0.5 : x, L.plotH + AXIS_H / 2 + 1)
    }
    // worker names
    if (L.gutter) {
      ctx.textAlign = 'left'
      ctx.fillStyle = ink
      for (let r = 0; r < L.rows; r++) {
        const info = L.rowInfo[r]!
        if (!info.first) continue
        ctx.fillText(clip(ctx, info.name, L.gutter - 12), 0, r * L.rowH + L.rowH / 2 + 0.5)
      }
    }

    // bars
    const msPerPx = windowMs / L.plotW
    const gap = L.rowH >= 6 ? 1 : 0
    const h = L.rowH - gap
    const stripes = this.stripePattern(sheet)
    if (stripes) stripes.setTransform(new DOMMatrix().translate(-((now / msPerPx) % 4), 0))
    let drawn = 0
    ctx.save()
    ctx.beginPath()
    ctx.rect(left, 0, L.plotW, L.plotH)
    ctx.clip()
    for (const b of this.model.stream.bars.values()) {
      const row = L.base.get(b.w)
      if (row === undefined) continue
      const x0 = this.x(L, b.start, now)
      const x1 = Math.max(this.x(L, b.end, now), x0 + 1)
      if (x1 < left || x0 > left + L.plotW) continue
      const y = (row + b.lane) * L.rowH
      const span = b.end - b.start
      const busy = span > 0 ? Math.min(1, b.busyUs / 1000 / span) : 1
      ctx.globalAlpha = b.n > 1 ? 0.4 + 0.6 * busy : 1
      ctx.fillStyle = groupColour(b.group)
      ctx.fillRect(x0, y, x1 - x0, h)
      if (stripes && b.n > 1 && span / b.n < 2 * msPerPx && x1 - x0 >= 4) {
        ctx.globalAlpha = 0.45
        ctx.fillStyle = stripes
        ctx.fillRect(x0, y, x1 - x0, h)
      }
      drawn++
    }
    ctx.globalAlpha = 1
    const hv = this.hover
    if (hv) {
      const row = L.base.get(hv.w)
      if (row !== undefined) {
        const x0 = this.x(L, hv.start, now)
        const x1 = Math.max(this.x(L, hv.end, now), x0 + 1)
        ctx.strokeStyle = css.getPropertyValue('--ink').trim() || '#1c2230'
        ctx.lineWidth = 1.5
        ctx.strokeRect(x0 - 0.75, (row + hv.lane) * L.rowH - 0.75, x1 - x0 + 1.5, h + 1.5)
      }
    }
    ctx.restore()
    this.drawn = drawn
    this.empty.hidden = drawn > 0 || L.rows > 0
  }

  /** Light vertical stripes that say "many tasks in here". */
  private stripePattern(colour: string): CanvasPattern | null {
    if (this.stripes) return this.stripes
    const c = document.createElement('canvas')
    c.width = 4
    c.height = 4
    const g = c.getContext('2d')!
    g.fillStyle = colour
    g.fillRect(0, 0, 1, 4)
    this.stripes = this.ctx.createPattern(c, 'repeat')
    return this.stripes
  }

  private pick(hovering: boolean): StreamBar | undefined {
    const L = this.layout
    const p = this.pointer
    if (!L || !p || p.x < L.gutter || p.y >= L.plotH) { if (hovering) this.setHover(undefined); return undefined }
    const info = L.rowInfo[Math.floor(p.y / L.rowH)]
    if (!info) { if (hovering) this.setHover(undefined); return undefined }
    const now = this.now()
    const t = now - ((L.gutter + L.plotW - p.x) / L.plotW) * this.model.stream.windowMs
    const tol = (this.model.stream.windowMs / L.plotW) * 3
    let best: StreamBar | undefined
    let bestD = Infinity
    for (const b of this.model.stream.bars.values()) {
      if (b.w !== info.w || b.lane !== info.lane) continue
      const d = t < b.start ? b.start - t : t > b.end ? t - b.end : 0
      if (d <= tol && d < bestD) { best = b; bestD = d }
    }
    if (hovering) this.setHover(best)
    return best
  }

  private setHover(bar: StreamBar | undefined): void {
    if (bar === this.hover) { if (bar) this.placeTooltip(); return }
    this.hover = bar
    this.dirty = true
    this.canvas.style.cursor = bar ? 'pointer' : ''
    if (!bar) { this.tooltip.hidden = true; return }
    const worker = this.model.stream.workers.find(w => w.idx === bar.w)
    const t = this.tooltip
    t.replaceChildren()
    const head = el('div', 'tip-head')
    const swatch = el('span', 'swatch')
    swatch.style.background = groupColour(bar.group)
    head.append(swatch, el('b', undefined, bar.group))
    t.append(head)
    const span = bar.end - bar.start
    if (bar.n === 1) t.append(el('div', undefined, `ran ${duration(bar.busyUs / 1000)}`))
    else {
      t.append(el('div', undefined, `${int(bar.n)} tasks back to back, ${duration(bar.busyUs / 1000 / bar.n)} each on average`))
      // run times are the worker's, ends are when results reached the coordinator: a full slot can read over 100%
      const busy = bar.busyUs / 1000 / Math.max(span, 1e-3)
      if (busy < 0.95) t.append(el('div', 'muted', `the slot was busy ${Math.round(busy * 100)}% of these ${duration(span)}`))
    }
    t.append(el('div', 'muted', `${worker?.name ?? 'worker'}, slot ${bar.lane + 1} · ${clock(bar.start)}`))
    if (bar.key) t.append(el('div', 'tip-key', `click for the story of ${bar.key}${bar.n > 1 ? ' (one of them)' : ''}`))
    t.hidden = false
    this.placeTooltip()
  }

  private placeTooltip(): void {
    const p = this.pointer
    if (!p) return
    const t = this.tooltip
    const w = t.offsetWidth
    const x = p.x + 14 + w > this.width ? p.x - 14 - w : p.x + 14
    t.style.transform = `translate(${Math.round(x)}px, ${Math.round(p.y + 12)}px)`
  }

  /** The legend: groups in the window, most tasks first; and what is left out. */
  updateLegend(): void {
    const counts = new Map<string, number>()
    for (const b of this.model.stream.bars.values()) counts.set(b.group, (counts.get(b.group) ?? 0) + b.n)
    const top = [...counts].sort((a, b) => b[1] - a[1]).slice(0, 10)
    const sig = top.map(([g]) => g).join('\u0000')
    if (this.legend.dataset.sig !== sig) {
      this.legend.dataset.sig = sig
      this.legend.replaceChildren(...top.map(([g]) => {
        const chip = el('span', 'chip')
        const sw = el('span', 'swatch')
        sw.style.background = groupColour(g)
        chip.append(sw, el('span', undefined, g))
        return chip
      }))
    }
    const s = this.model.stream
    const slots = s.workers.reduce((n, w) => n + w.lanes, 0)
    const parts = [`${int(s.workers.length)} ${s.workers.length === 1 ? 'worker' : 'workers'}, ${int(slots)} ${slots === 1 ? 'slot' : 'slots'} busy in the last minute`]
    if (s.hiddenWorkers) parts.push(`${int(s.hiddenWorkers)} more workers not drawn (${int(s.hiddenTasks)} tasks)`)
    if (s.mergeMs > 100) parts.push(`tasks less than ${duration(s.mergeMs)} apart share a bar`)
    setText(this.note, parts.join(' · '))
  }

  destroy(): void {
    cancelAnimationFrame(this.raf)
  }
}

function clip(ctx: CanvasRenderingContext2D, text: string, width: number): string {
  if (ctx.measureText(text).width <= width) return text
  let s = text
  while (s.length > 1 && ctx.measureText(`${s}…`).width > width) s = s.slice(0, -1)
  return `${s}…`
}
