/**
 * Throughput (tasks/s) and overhead per task (µs) over the last 5 minutes, with uPlot:
 * a small, fast time-series chart that redraws 300 points in well under a millisecond
 * and updates in place (no re-created DOM, so nothing flickers).
 */
import uPlot from 'uplot'
import 'uplot/dist/uPlot.min.css'
import type { DashboardPoint } from '../../shared/protocol.js'
import { micros, num } from './format.js'


interface Theme { ink: string; muted: string; line: string; accent: string; bad: string; warn: string; good: string }

function theme(from: Element): Theme {
  const css = getComputedStyle(from)
  const v = (name: string, fallback: string): string => css.getPropertyValue(name).trim() || fallback
  return {
    ink: v('--ink', '#1c2230'), muted: v('--muted', '#5d6676'), line: v('--line', '#e3e6eb'),
    accent: v('--accent', '#2f6fde'), bad: v('--bad', '#d2453d'), warn: v('--warn', '#c98a00'), good: v('--good', '#1f9d57'),
  }
}

const HEIGHT = 150

const timeFmt = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' })

function axes(t: Theme, unit: (v: number) => string): uPlot.Axis[] {
  const common = { stroke: t.muted, grid: { stroke: t.line, width: 1 }, ticks: { stroke: t.line, width: 1, size: 4 }, font: '11px system-ui, sans-serif' }
  return [
    { ...common, space: 80, values: (_u, vals) => vals.map(v => (v == null ? '' : timeFmt.format(new Date(v * 1000)))) },
    { ...common, size: 52, values: (_u, vals) => vals.map(v => (v == null ? '' : unit(v))) },
  ]
}

function xRange(_u: uPlot, min: number, max: number): uPlot.Range.MinMax {
  // at least the last minute, so the first points don't stretch across the chart
  const hi = Math.max(max, Date.now() / 1000)
  return [Math.min(min, hi - 60), hi]
}

export class Charts {
  private readonly throughput: uPlot
  private readonly overhead: uPlot
  private readonly observer: ResizeObserver

  constructor(private readonly throughputEl: HTMLElement, private readonly overheadEl: HTMLElement) {
    const t = theme(throughputEl)
    const base = (el: HTMLElement): Pick<uPlot.Options, 'width' | 'height' | 'cursor' | 'legend' | 'padding'> => ({
      width: Math.max(200, el.clientWidth),
      height: HEIGHT,
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      legend: { live: false },
      padding: [8, 28, 0, 0],
    })
    this.throughput = new uPlot({
      ...base(throughputEl),
      scales: { x: { time: true, range: xRange }, y: { range: (_u, _min, max) => [0, niceMax(max)] } },
      axes: axes(t, v => num(v)),
      series: [
        { value: (_u, v) => (v == null ? '–' : new Date(v * 1000).toLocaleTimeString('en-GB')) },
        { label: 'finished per second', stroke: t.accent, width: 1.5, fill: withAlpha(t.accent, 0.12), value: (_u, v) => (v == null ? '–' : num(v)), points: { show: false } },
        { label: 'failed per second', stroke: t.bad, width: 1.25, value: (_u, v) => (v == null ? '–' : num(v)), points: { show: false } },
      ],
    }, [[], [], []], throughputEl)
    this.overhead = new uPlot({
      ...base(overheadEl),
      scales: { x: { time: true, range: xRange }, y: { range: (_u, _min, max) => [0, niceMax(max)] } },
      axes: axes(t, v => micros(v)),
      series: [
        { value: (_u, v) => (v == null ? '–' : new Date(v * 1000).toLocaleTimeString('en-GB')) },
        { label: 'coordinator', stroke: t.warn, width: 1.5, fill: withAlpha(t.warn, 0.10), value: (_u, v) => (v == null ? '–' : micros(v)), points: { show: false } },
        { label: 'scheduler alone', stroke: t.good, width: 1.25, value: (_u, v) => (v == null ? '–' : micros(v)), points: { show: false } },
      ],
    }, [[], [], []], overheadEl)
    this.observer = new ResizeObserver(() => {
      this.throughput.setSize({ width: Math.max(200, throughputEl.clientWidth), height: HEIGHT })
      this.overhead.setSize({ width: Math.max(200, overheadEl.clientWidth), height: HEIGHT })
    })
    this.observer.observe(throughputEl)
    this.observer.observe(overheadEl)
  }

  update(points: readonly DashboardPoint[]): void {
    const x = points.map(p => p[0] / 1000)
    this.throughput.setData([x, points.map(p => p[1]), points.map(p => (p[2] > 0 ? p[2] : null))])
    this.overhead.setData([x, points.map(p => p[4]), points.map(p => p[3])])
  }

  destroy(): void {
    this.observer.disconnect()
    this.throughput.destroy()
    this.overhead.destroy()
  }
}

/** A round upper bound (1, 2, 5 × 10^k) so the y axis doesn't twitch with every point. */
function niceMax(max: number | null): number {
  if (max == null || !(max > 0)) return 1
  const p = 10 ** Math.floor(Math.log10(max))
  for (const m of [1, 2, 5, 10]) if (max <= m * p) return m * p
  return 10 * p
}

/** `#rrggbb` with an alpha, for canvas fills (which don't take color-mix()). */
function withAlpha(colour: string, alpha: number): string {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(colour)
  if (!m) return colour
  return `rgba(${parseInt(m[1]!, 16)}, ${parseInt(m[2]!, 16)}, ${parseInt(m[3]!, 16)}, ${alpha})`
}
