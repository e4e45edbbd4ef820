/** Numbers, sizes, times and group colours, the same everywhere on the dashboard. */
import { formatBytes } from '../../shared/size.js'

const integer = new Intl.NumberFormat('en')
const compactFmt = new Intl.NumberFormat('en', { notation: 'compact', maximumFractionDigits: 1 })

export function int(n: number): string {
  return integer.format(Math.round(n))
}

export function compact(n: number): string {
  return n < 10_000 ? int(n) : compactFmt.format(n)
}

/** Three significant digits at most: 0.123, 12.3, 1,234. */
export function num(n: number): string {
  if (n === 0) return '0'
  if (Math.abs(n) >= 100) return int(n)
  return Number(n.toPrecision(3)).toString()
}

/** Sizes in decimal SI units (1 kB = 1000 B), as everywhere in tabgrid (shared/size.ts). */
export const bytes = formatBytes

/** A task's run time: 120 µs, 4.2 ms, 1.3 s, 2 min. */
export function duration(ms: number): string {
  if (ms < 1) return `${num(ms * 1000)} µs`
  if (ms < 1000) return `${num(ms)} ms`
  if (ms < 120_000) return `${num(ms / 1000)} s`
  return `${num(ms / 60_000)} min`
}

export function micros(us: number): string {
  return us >= 1000 ? `${num(us / 1000)} ms` : `${num(us)} µs`
}

const clockFmt = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' })
export function clock(ms: number): string {
  return clockFmt.format(new Date(ms))
}

export function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.round(s / 60)} min ago`
  return `${num(s / 3600)} h ago`
}

/**
 * A calm palette (after Tableau 10, without its reds and pinks: red means failed), picked
 * by a hash of the group's name so a group keeps its colour across reloads and pages.
 */
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#d4a72c', '#9c755f', '#8cd17d', '#86bcb6', '#5b8ff9', '#a0cbe8', '#499894']

const colours = new Map<string, string>()

export function groupColour(name: string): string {
  let c = colours.get(name)
  if (c === undefined) {
    if (colours.size > 2000) colours.clear()
    colours.set(name, c = hashColour(name))
  }
  return c
}

function hashColour(name: string): string {
  let h = 2166136261
  for (let i = 0; i < name.length; i++) { h ^= name.charCodeAt(i); h = Math.imul(h, 16777619) }
  return PALETTE[(h >>> 0) % PALETTE.length]!
}

/** Creates an element with a class and optional text. */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag)
  if (className) e.className = className
  if (text !== undefined) e.textContent = text
  return e
}

/** Sets text only when it changed (no needless layout, no flicker). */
export function setText(e: Element, text: string): void {
  if (e.textContent !== text) e.textContent = text
}

export function must<T extends Element = HTMLElement>(selector: string, root: ParentNode = document): T {
  const e = root.querySelector<T>(selector)
  if (!e) throw new Error(`dashboard: ${selector} is missing from the page`)
  return e
}
