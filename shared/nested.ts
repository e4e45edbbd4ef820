/**
 * The one walk over what may hold futures nested in a value: arrays, plain objects
 * (prototype `Object.prototype` or null), Map keys and values, Set members and an
 * Error's own `cause`. The client uses it to turn the Futures in a task's arguments
 * into FutureRefs (`replaceFutures`), `gather` to find the Futures in what it is given
 * and to put their values in their places, and the codec's `collectRefs` to list the
 * FutureRefs in a value.
 *
 * Everything else is a leaf, handed to the visitor and never walked into: typed
 * arrays, ArrayBuffers, Dates, class instances (a Future, a FutureRef). Containers are
 * copied only on write: one holding nothing the visitor replaced is returned as it is.
 * Each container is walked once, so shared and cyclic structures cost their size, and
 * a shared container is replaced by one copy wherever it appears; a cycle comes back
 * pointing at the original container (the codec then refuses it, naming the path).
 */

/** A visitor's answer: `x` is not what it looks for (walk into it if it is a container, else keep it). */
export const KEEP: unique symbol = Symbol('keep')
/** A visitor's answer: leave this place out of its container (an array item, a property, a Map entry, a Set member). */
export const DROP: unique symbol = Symbol('drop')

/** What a visitor returns for an object: KEEP, DROP, or what takes its place (itself, to keep it without walking into it). */
export type Visit = (x: object) => unknown

/** Deeper than this, a value is left as it is (the codec refuses it, naming the path). */
const MAX_DEPTH = 512

/**
 * `value` with each object the visitor answers for replaced by its answer; containers
 * holding no replacement are returned as they are. The top level may itself be replaced
 * (or be DROP).
 *
 * @example
 * ```ts
 * // every Future becomes its key, the rest untouched
 * const keys = mapNested({ a: [fx, 1], b: new Float64Array(4) }, x => x instanceof Future ? x.key : KEEP)
 * ```
 */
export function mapNested(value: unknown, visit: Visit): unknown {
  if (typeof value !== 'object' || value === null) return value
  return new Walk(visit).object(value, 0)
}

/**
 * Calls `each` for every object the predicate matches (not walking into those), in the
 * containers of `value`.
 *
 * @example
 * ```ts
 * forEachNested(args, x => x instanceof FutureRef, ref => keys.add((ref as FutureRef).key))
 * ```
 */
export function forEachNested(value: unknown, match: (x: object) => boolean, each: (x: object) => void): void {
  if (typeof value !== 'object' || value === null) return
  new Walk(x => { if (!match(x)) return KEEP; each(x); return x }).object(value, 0)
}

const objectProto = Object.prototype
const hasOwn = Object.prototype.hasOwnProperty

class Walk {
  /** containers entered, with what replaced them (themselves while being walked); made on the first one */
  private done: Map<object, unknown> | undefined
  constructor(private readonly visit: Visit) {}

  object(x: object, depth: number): unknown {
    const seen = this.visit(x)
    if (seen !== KEEP) return seen
    if (depth > MAX_DEPTH) return x
    let kind: 0 | 1 | 2 | 3 | 4
    const proto: unknown = Object.getPrototypeOf(x)
    if (Array.isArray(x)) kind = 0
    else if (proto === objectProto || proto === null) kind = 1
    else if (x instanceof Map) kind = 2
    else if (x instanceof Set) kind = 3
    else if (x instanceof Error && hasOwn.call(x, 'cause')) kind = 4
    else return x
    const done = (this.done ??= new Map())
    if (done.has(x)) return done.get(x)
    done.set(x, x)
    const r: unknown = kind === 0 ? this.array(x as unknown[], depth)
      : kind === 1 ? this.plain(x as Record<string, unknown>, proto as object | null, depth)
        : kind === 2 ? this.map(x as Map<unknown, unknown>, depth)
          : kind === 3 ? this.set(x as Set<unknown>, depth)
            : this.error(x as Error, depth)
    if (r !== x) done.set(x, r)
    return r
  }

  private item(v: unknown, depth: number): unknown {
    return typeof v === 'object' && v !== null ? this.object(v, depth + 1) : v
  }

  private array(a: unknown[], depth: number): unknown[] {
    let out: unknown[] | undefined
    for (let i = 0; i < a.length; i++) {
      const v: unknown = a[i]
      const r = this.item(v, depth)
      if (out === undefined) {
        if (r === v) continue
        // holes before the first change are kept by slice
        out = a.slice(0, i)
      }
      if (r !== DROP) out.push(r)
    }
    return out ?? a
  }

  private plain(o: Record<string, unknown>, proto: object | null, depth: number): Record<string, unknown> {
    let out: Record<string, unknown> | undefined
    const keys = Object.keys(o)
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!
      const v = o[k]
      const r = this.item(v, depth)
      if (out === undefined) {
        if (r === v) continue
        out = Object.create(proto) as Record<string, unknown>
        for (let j = 0; j < i; j++) out[keys[j]!] = o[keys[j]!]
      }
      if (r !== DROP) out[k] = r
    }
    return out ?? o
  }

  private map(m: Map<unknown, unknown>, depth: number): Map<unknown, unknown> {
    let changed = false
    const entries: [unknown, unknown][] = []
    for (const [k, v] of m) {
      const rk = this.item(k, depth)
      const rv = this.item(v, depth)
      if (rk !== k || rv !== v) changed = true
      if (rk !== DROP && rv !== DROP) entries.push([rk, rv])
    }
    return changed ? new Map(entries) : m
  }

  private set(s: Set<unknown>, depth: number): Set<unknown> {
    let changed = false
    const items: unknown[] = []
    for (const v of s) {
      const r = this.item(v, depth)
      if (r !== v) changed = true
      if (r !== DROP) items.push(r)
    }
    return changed ? new Set(items) : s
  }

  private error(e: Error, depth: number): Error {
    const cause = (e as { cause?: unknown }).cause
    const r = this.item(cause, depth)
    if (r === cause) return e
    // the same class, message, stack and own properties; only the cause differs
    const out = Object.create(Object.getPrototypeOf(e) as object) as Error
    Object.defineProperties(out, Object.getOwnPropertyDescriptors(e))
    if (r === DROP) delete (out as { cause?: unknown }).cause
    else Object.defineProperty(out, 'cause', { value: r, writable: true, configurable: true, enumerable: false })
    return out
  }
}
