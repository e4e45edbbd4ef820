/**
 * Worker side of task functions: `FunctionCache.compile(hash, source)` evaluates a
 * task's source once per hash, in strict mode, with `new Function` (the worker page's
 * CSP allows 'unsafe-eval'), and wraps the function so that "X is not defined" becomes
 * a `FreeVariableError` that explains why.
 *
 * This file is what workers load of task-function handling: it has no parser (the
 * client-side checks are in serialize-function.ts and free-variables.ts).
 *
 * Plain ES2023: no Node or DOM types.
 */

/** A function that cannot travel as source text, or whose source does not compile; the message says why and how to fix it. */
export class FunctionError extends Error {
  override name = 'FunctionError'
  constructor(message: string, options?: ErrorOptions) {
    super(message, options)
  }
}

/** A task function referenced a name the worker does not define (a free variable). */
export class FreeVariableError extends Error {
  override name = 'FreeVariableError'
  /** the undefined name */
  readonly variable: string
  constructor(variable: string, options?: ErrorOptions) {
    super(
      `task function uses "${variable}", which is not defined on the worker: functions travel as source text, ` +
        `so pass ${variable} as an argument or define it inside the function`,
      options,
    )
    this.variable = variable
  }
}

/**
 * The text a worker compiles for `source` as a Function body: the function's own
 * source, evaluated in strict mode. The client's checks parse the same text, so they
 * judge exactly what the worker runs.
 */
export function functionBody(source: string): string {
  return '"use strict";\nreturn (' + source + '\n)'
}

/** `source` on one line, at most 60 characters: for error messages. */
export function snippet(source: string): string {
  const one = source.replace(/\s+/g, ' ').trim()
  return one.length > 60 ? one.slice(0, 57) + '…' : one
}

const IDENT = /^[A-Za-z_$][\w$]*$/

function undefinedName(e: unknown): string | undefined {
  if (e === null || typeof e !== 'object') return undefined
  const err = e as { name?: unknown; message?: unknown }
  if (!(e instanceof ReferenceError) && err.name !== 'ReferenceError') return undefined
  const msg = typeof err.message === 'string' ? err.message : ''
  const m = /^(\S+) is not defined$/.exec(msg) ?? /^Can't find variable: (\S+)$/.exec(msg)
  return m?.[1]
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/**
 * Worker side: compiles task sources once per hash (bounded LRU) and wraps them so a
 * free variable becomes a `FreeVariableError`.
 *
 * Sources are evaluated as `"use strict"; return (source)` with `new Function`, so task
 * functions run in strict mode (`this` is undefined in plain calls; assigning to an
 * undeclared name throws). `globals` are extra free names visible to every task (e.g.
 * `importModule`); their values are bound at compile time.
 *
 * @example
 *   const cache = new FunctionCache({ importModule })
 *   const inc = cache.compile(hash, '(x) => x + 1')
 *   inc(41) // 42
 */
export class FunctionCache {
  private readonly names: string[]
  private readonly values: unknown[]
  private readonly max: number
  private readonly fns = new Map<string, { source: string; fn: (...args: unknown[]) => unknown }>()

  constructor(globals: Record<string, unknown> = {}, max = 1000) {
    this.names = Object.keys(globals)
    for (const k of this.names) {
      if (!IDENT.test(k)) throw new TypeError(`FunctionCache: global name ${JSON.stringify(k)} is not an identifier`)
    }
    this.values = this.names.map((k) => globals[k])
    this.max = Math.max(1, Math.floor(max))
  }

  has(hash: string): boolean {
    return this.fns.has(hash)
  }

  get size(): number {
    return this.fns.size
  }

  clear(): void {
    this.fns.clear()
  }

  delete(hash: string): void {
    this.fns.delete(hash)
  }

  /**
   * The compiled, wrapped function for `source`. Cached by `hash`; a hit whose source
   * differs from the cached one (a wrong or colliding hash) is recompiled, never reused.
   * Throws `FunctionError` when the source does not compile or is not a function.
   */
  compile(hash: string, source: string): (...args: unknown[]) => unknown {
    const hit = this.fns.get(hash)
    if (hit && hit.source === source) {
      // refresh LRU position
      this.fns.delete(hash)
      this.fns.set(hash, hit)
      return hit.fn
    }
    let fn: unknown
    try {
      const factory = new Function(...this.names, functionBody(source)) as (...a: unknown[]) => unknown
      fn = factory(...this.values)
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e)
      throw new FunctionError(`task function ${hash} (${snippet(source)}) does not compile on the worker: ${msg}`, {
        cause: e,
      })
    }
    if (typeof fn !== 'function') {
      throw new FunctionError(`task function ${hash} (${snippet(source)}) does not evaluate to a function`)
    }
    const wrapped = wrap(fn as (...args: unknown[]) => unknown, source)
    this.fns.delete(hash)
    this.fns.set(hash, { source, fn: wrapped })
    while (this.fns.size > this.max) {
      const oldest = this.fns.keys().next().value as string
      this.fns.delete(oldest)
    }
    return wrapped
  }
}

function wrap(fn: (...args: unknown[]) => unknown, source: string): (...args: unknown[]) => unknown {
  const translate = (e: unknown): unknown => {
    if (e instanceof FreeVariableError) return e
    const name = undefinedName(e)
    if (name === undefined) return e
    // Only blame the task when the name appears in its own source (it may come from a module).
    if (!new RegExp(`(?<![\\w$.])${escapeRegExp(name)}(?![\\w$])`).test(source)) return e
    return new FreeVariableError(name, { cause: e })
  }
  return function (this: unknown, ...args: unknown[]): unknown {
    let r: unknown
    try {
      r = fn.apply(this, args)
    } catch (e) {
      throw translate(e)
    }
    if (r !== null && (typeof r === 'object' || typeof r === 'function') && typeof (r as PromiseLike<unknown>).then === 'function') {
      return (r as PromiseLike<unknown>).then(undefined, (e: unknown) => {
        throw translate(e)
      })
    }
    return r
  }
}
