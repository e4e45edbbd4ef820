/**
 * Trust in volunteers, as policy. A worker's word is a claim: what the grid believes of
 * it is what it has earned (BOINC's model). Pure functions and small records, shared by
 * the scheduler (slot windows) and the coordinator (deadlines, volunteers, quarantine).
 */

/**
 * A worker's window: how many tasks it may hold at once. A new worker gets a few; each
 * result it returns widens the window by one (so it doubles per round trip, as TCP's slow
 * start does) up to `cap`; a lapse (a deadline or lease it let pass) halves it.
 *
 * @example
 * widen(8, 100) // 9
 * narrow(9)     // 4
 */
export function widen(window: number, cap: number): number {
  return window >= cap ? window : window + 1
}

/** The window after a lapse: halved, never below 1. */
export function narrow(window: number): number {
  return Number.isFinite(window) ? Math.max(1, Math.floor(window / 2)) : window
}

/**
 * Who a connection comes from. Two joins from one network address are one volunteer: an
 * IPv4 address, or an IPv6 /64 (what one household or host is usually given). Without
 * an address (in-memory links) each connection is its own volunteer.
 *
 * @example
 * volunteerOf('::ffff:10.0.0.7', 'w-1')      // '10.0.0.7'
 * volunteerOf('2001:db8:1:2:3:4:5:6', 'w-1') // '2001:db8:1:2::/64'
 */
export function volunteerOf(address: string | undefined, fallback: string): string {
  if (!address) return fallback
  const v4 = /^(?:::ffff:)?(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address)
  if (v4) return v4[1] as string
  if (!address.includes(':')) return address
  // expand '::' and keep the first four groups
  const [head = '', tail = ''] = address.split('::')
  const h = head ? head.split(':') : []
  const t = address.includes('::') ? (tail ? tail.split(':') : []) : []
  const groups = [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t]
  return `${groups.slice(0, 4).map(g => (g.replace(/^0+(?=.)/, '') || '0').toLowerCase()).join(':')}::/64`
}

export interface DeadlineOptions {
  /** an attempt may run this many times its group's typical run time. Default 10 */
  factor: number
  /** never less than this, ms. Default 15 s */
  minMs: number
  /** added to a task's own `timeout` (the worker stops it then; the coordinator waits this much longer). Default 5 s */
  slackMs: number
}

/** Run times kept per group (a ring): the deadline follows their 90th percentile. */
const SAMPLES = 32

/**
 * Deadlines the coordinator enforces itself, whatever the heartbeats say: a task's own
 * `timeout` (plus slack), or `factor` × the 90th percentile of its group's recent run
 * times. A group with no result yet has no deadline of its own (leases still apply).
 * Run times are clamped by the caller to what the coordinator saw elapse, so a worker
 * can't stretch a group's deadline by claiming its tasks ran longer than it held them.
 */
export class Deadlines {
  private readonly groups = new Map<string, { ring: number[]; next: number; limit: number | undefined }>()
  constructor(private readonly opts: DeadlineOptions) {}

  observe(group: string, ms: number): void {
    if (!(ms >= 0) || !Number.isFinite(ms)) return
    let g = this.groups.get(group)
    if (!g) {
      if (this.groups.size >= 10_000) this.groups.clear()
      this.groups.set(group, g = { ring: [], next: 0, limit: undefined })
    }
    if (g.ring.length < SAMPLES) g.ring.push(ms)
    else g.ring[g.next] = ms
    g.next = (g.next + 1) % SAMPLES
    g.limit = undefined
  }

  /** ms a worker may take to acknowledge `bytes` the coordinator sent it (at 10 MB/s, and never less than minMs). */
  transfer(bytes: number): number {
    return this.opts.minMs + bytes / 10_000
  }

  /** ms an attempt of this task may run before the coordinator takes it back, or undefined for none. */
  limit(group: string, timeout: number | undefined): number | undefined {
    if (timeout !== undefined) return timeout + this.opts.slackMs
    const g = this.groups.get(group)
    if (!g) return undefined
    if (g.limit === undefined) {
      const sorted = [...g.ring].sort((a, b) => a - b)
      const p90 = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.9))] as number
      g.limit = Math.max(this.opts.minMs, this.opts.factor * p90)
    }
    return g.limit
  }
}
