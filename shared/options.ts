/**
 * Per-call options: loose in, resolved inside. Every entry point validates what the
 * caller passed here, with messages that name the option, so a typo fails at the call
 * and not on the grid.
 */
import { LIMITS } from './protocol.js'

/**
 * Options for tasks, given to `client.with(...)`.
 *
 * @example
 * ```ts
 * client.with({ priority: 10, retries: 2 }).map(f, seq)
 * client.with({ key: 'load-2024' }).submit(load, '2024')
 * client.with({ workers: ['gpu-tab'], pure: false }).submit(sample)
 * ```
 */
export interface TaskOptions {
  /**
   * An explicit key. For `submit`, the task's key; for `map`, a prefix (used instead of
   * the function's name) or an array with one key per item.
   */
  key?: string | readonly string[]
  /**
   * Same function and arguments give the same key, so the grid runs it once (default
   * true, like Dask). Use `false` for functions with side effects or randomness.
   */
  pure?: boolean
  /** Higher runs first (default 0). */
  priority?: number
  /** Re-run a task that throws up to this many times (0–100, default 0). */
  retries?: number
  /** Only these workers (ids or names) may run the task. */
  workers?: string | readonly string[]
  /** Run on k distinct workers and accept the result only when they agree (1–16, default 1). */
  redundancy?: number
  /** ms a run may take; past it the worker stops the thread (Web Worker) running it and the task errs (retries apply). */
  timeout?: number
  /**
   * Whether the grid may spot-check the result by running it again on another volunteer
   * (see README, Security). Default: true for pure tasks, false for `pure: false` ones
   * (random or side-effecting functions, whose honest runs differ).
   */
  spotCheck?: boolean
}

/** TaskOptions after validation. */
export interface ResolvedTaskOptions {
  key: string | readonly string[] | undefined
  pure: boolean
  priority: number | undefined
  retries: number | undefined
  workers: string[] | undefined
  redundancy: number | undefined
  timeout: number | undefined
  spotCheck: boolean | undefined
}

/** The options a client uses when none are given. */
export const DEFAULT_TASK_OPTIONS: ResolvedTaskOptions = Object.freeze({
  key: undefined, pure: true, priority: undefined, retries: undefined, workers: undefined, redundancy: undefined, timeout: undefined, spotCheck: undefined,
})

const TASK_OPTION_NAMES = ['key', 'pure', 'priority', 'retries', 'workers', 'redundancy', 'timeout', 'spotCheck'] as const

/**
 * Validates task options and lays them over `base` (a view's options, when chained).
 * Throws a TypeError or RangeError naming the option.
 *
 * @example
 * ```ts
 * resolveTaskOptions({ retries: 2 })           // { pure: true, retries: 2, ... }
 * resolveTaskOptions({ retries: -1 })          // RangeError: retries must be a whole number from 0 to 100, got -1
 * ```
 */
export function resolveTaskOptions(options: unknown, base: ResolvedTaskOptions = DEFAULT_TASK_OPTIONS): ResolvedTaskOptions {
  if (options === undefined) return base
  const o = record(options, 'task options', TASK_OPTION_NAMES)
  const out: ResolvedTaskOptions = { ...base }
  if (o.key !== undefined) {
    if (typeof o.key === 'string') out.key = checkKey(o.key, 'key')
    else if (Array.isArray(o.key)) {
      if (o.key.length > LIMITS.keys) throw new RangeError(`key must hold at most ${LIMITS.keys} keys, got ${o.key.length}`)
      o.key.forEach((k, i) => { if (typeof k !== 'string') throw new TypeError(`key[${i}] must be a string, got ${describe(k)}`); checkKey(k, `key[${i}]`) })
      out.key = [...o.key] as string[]
    } else throw new TypeError(`key must be a string (or, for map, an array of strings), got ${describe(o.key)}`)
  }
  if (o.pure !== undefined) {
    if (typeof o.pure !== 'boolean') throw new TypeError(`pure must be true or false, got ${describe(o.pure)}`)
    out.pure = o.pure
  }
  if (o.priority !== undefined) {
    if (typeof o.priority !== 'number' || !Number.isFinite(o.priority)) throw new TypeError(`priority must be a finite number, got ${describe(o.priority)}`)
    out.priority = o.priority
  }
  if (o.retries !== undefined) out.retries = wholeNumber(o.retries, 'retries', 0, 100)
  if (o.redundancy !== undefined) out.redundancy = wholeNumber(o.redundancy, 'redundancy', 1, 16)
  if (o.timeout !== undefined) out.timeout = wholeNumber(o.timeout, 'timeout', 1, 2 ** 31 - 1)
  if (o.spotCheck !== undefined) {
    if (typeof o.spotCheck !== 'boolean') throw new TypeError(`spotCheck must be true or false, got ${describe(o.spotCheck)}`)
    out.spotCheck = o.spotCheck
  }
  if (o.workers !== undefined) {
    const list = typeof o.workers === 'string' ? [o.workers] : o.workers
    if (!Array.isArray(list) || list.length > 1024 || list.some(w => typeof w !== 'string' || w.length === 0 || w.length > LIMITS.name)) {
      throw new TypeError(`workers must be a worker id or name, or an array of at most 1024 of them (each 1 to ${LIMITS.name} characters), got ${describe(o.workers)}`)
    }
    out.workers = list.length ? [...list] as string[] : undefined
  }
  return out
}

/**
 * Options for `client.scatter`.
 *
 * @example
 * ```ts
 * const f = await client.scatter(bigArray, { replicas: 2 })   // survives one worker leaving
 * ```
 */
export interface ScatterOptions {
  /** How many workers keep a copy (1–64, default 1). Scattered data has no lineage: a replica is its only backup. */
  replicas?: number
  /**
   * ms to wait for a worker to store the value (scatter resolves once one has it).
   * Past it, scatter rejects with a TimeoutError and the value is dropped. Default: no limit.
   */
  timeout?: number
}

/** Validates scatter options. */
export function resolveScatterOptions(options: unknown): { replicas: number | undefined; timeout: number | undefined } {
  if (options === undefined) return { replicas: undefined, timeout: undefined }
  const o = record(options, 'scatter options', ['replicas', 'timeout'])
  return {
    replicas: o.replicas === undefined ? undefined : wholeNumber(o.replicas, 'replicas', 1, 64),
    timeout: o.timeout === undefined ? undefined : milliseconds(o.timeout, 'timeout'),
  }
}

/**
 * Options for `client.gather`.
 *
 * @example
 * ```ts
 * const ok = await client.gather(fs, { errors: 'skip' })   // the values of those that did not fail
 * ```
 */
export interface GatherOptions {
  /** `'raise'` (default): reject with the first error. `'skip'`: leave failed futures (error or lost) out of the result; a cancelled one still rejects, as in Dask. */
  errors?: 'raise' | 'skip'
}

/** Validates gather options. */
export function resolveGatherOptions(options: unknown): { errors: 'raise' | 'skip' } {
  if (options === undefined) return { errors: 'raise' }
  const o = record(options, 'gather options', ['errors'])
  const e = o.errors ?? 'raise'
  if (e !== 'raise' && e !== 'skip') throw new TypeError(`errors must be 'raise' or 'skip', got ${describe(e)}`)
  return { errors: e }
}

/**
 * Options for `client.publishDataset`.
 *
 * @example
 * ```ts
 * await client.publishDataset('latest', f, { override: true })
 * ```
 */
export interface PublishOptions {
  /** Replace a dataset of the same name (default false: publishing a taken name rejects). */
  override?: boolean
}

/** Validates publish options. */
export function resolvePublishOptions(options: unknown): { override: boolean } {
  if (options === undefined) return { override: false }
  const o = record(options, 'publish options', ['override'])
  if (o.override !== undefined && typeof o.override !== 'boolean') throw new TypeError(`override must be true or false, got ${describe(o.override)}`)
  return { override: o.override === true }
}

/**
 * Options for `asCompleted`.
 *
 * @example
 * ```ts
 * for await (const [f, value] of asCompleted(fs, { withResults: true })) console.log(f.key, value)
 * ```
 */
export interface AsCompletedOptions {
  /** Yield `[future, value]` pairs, fetching each value as its future finishes. Default false. */
  withResults?: boolean
  /** With `withResults`: a failed future makes the iteration throw its error (default true); false yields `[future, error]` instead. */
  raiseErrors?: boolean
}

/** Validates asCompleted options. */
export function resolveAsCompletedOptions(options: unknown): { withResults: boolean; raiseErrors: boolean } {
  if (options === undefined) return { withResults: false, raiseErrors: true }
  const o = record(options, 'asCompleted options', ['withResults', 'raiseErrors'])
  for (const k of ['withResults', 'raiseErrors'] as const) {
    if (o[k] !== undefined && typeof o[k] !== 'boolean') throw new TypeError(`${k} must be true or false, got ${describe(o[k])}`)
  }
  return { withResults: o.withResults === true, raiseErrors: o.raiseErrors !== false }
}

/**
 * Options for `Client.connect`.
 *
 * @example
 * ```ts
 * const client = await Client.connect('http://localhost:8786', { token: 's3cret', name: 'notebook', timeout: 5000 })
 * ```
 */
export interface ClientConnectOptions {
  /** The coordinator's client token, when it has one. */
  token?: string
  /** A name shown on the dashboard. */
  name?: string
  /** ms to wait for the coordinator (connection and welcome). Default 10 s. */
  timeout?: number
}

/** Validates connect options. */
export function resolveConnectOptions(options: unknown): { token: string | undefined; name: string | undefined; timeout: number } {
  if (options === undefined) return { token: undefined, name: undefined, timeout: 10_000 }
  const o = record(options, 'connect options', ['token', 'name', 'timeout'])
  if (o.token !== undefined && (typeof o.token !== 'string' || o.token.length > 1024)) throw new TypeError(`token must be a string of at most 1024 characters, got ${describe(o.token)}`)
  if (o.name !== undefined && (typeof o.name !== 'string' || o.name.length === 0 || o.name.length > LIMITS.name)) throw new TypeError(`name must be a string of 1 to ${LIMITS.name} characters, got ${describe(o.name)}`)
  return { token: o.token as string | undefined, name: o.name as string | undefined, timeout: o.timeout === undefined ? 10_000 : milliseconds(o.timeout, 'timeout') }
}

/**
 * Options for `Client.local`.
 *
 * @example
 * ```ts
 * const client = await Client.local({ workers: 4 })
 * ```
 */
export interface LocalOptions {
  /** How many workers (threads or Web Workers). Default: the machine's core count. */
  workers?: number
}

/** Validates local-cluster options. */
export function resolveLocalOptions(options: unknown): LocalOptions {
  if (options === undefined) return {}
  const o = record(options, 'local options', ['workers'])
  return o.workers === undefined ? {} : { workers: wholeNumber(o.workers, 'workers', 1, 4096) }
}

/** Options for requests (`workers()`, `story()`, `uploadModule()`). */
export interface RequestOptions {
  /** ms to wait for the coordinator's answer. Default 30 s. */
  timeout?: number
}

/** Validates request options. */
export function resolveRequestOptions(options: unknown, fallback = 30_000): { timeout: number } {
  if (options === undefined) return { timeout: fallback }
  const o = record(options, 'request options', ['timeout'])
  const timeout = o.timeout === undefined ? fallback : milliseconds(o.timeout, 'timeout')
  if (timeout === 0) throw new RangeError('timeout must be more than 0 ms (Infinity for no limit), got 0')
  return { timeout }
}

/**
 * Options for `wait`.
 *
 * @example
 * ```ts
 * const { done, notDone } = await wait(fs, { returnWhen: 'FIRST_COMPLETED', timeout: 5000 })
 * ```
 */
export interface WaitOptions {
  /** When to return: every future done (default), the first done, or the first that failed (or all done). */
  returnWhen?: 'ALL_COMPLETED' | 'FIRST_COMPLETED' | 'FIRST_EXCEPTION'
  /** ms after which `wait` returns with whatever is done by then. Default: no limit. */
  timeout?: number
}

/** Validates wait options. */
export function resolveWaitOptions(options: unknown): { returnWhen: NonNullable<WaitOptions['returnWhen']>; timeout: number | undefined } {
  if (options === undefined) return { returnWhen: 'ALL_COMPLETED', timeout: undefined }
  const o = record(options, 'wait options', ['returnWhen', 'timeout'])
  const rw = o.returnWhen ?? 'ALL_COMPLETED'
  if (rw !== 'ALL_COMPLETED' && rw !== 'FIRST_COMPLETED' && rw !== 'FIRST_EXCEPTION') {
    throw new TypeError(`returnWhen must be 'ALL_COMPLETED', 'FIRST_COMPLETED' or 'FIRST_EXCEPTION', got ${describe(rw)}`)
  }
  return { returnWhen: rw, timeout: o.timeout === undefined ? undefined : milliseconds(o.timeout, 'timeout') }
}

// ---------------------------------------------------------------- helpers

function record(options: unknown, what: string, known: readonly string[]): Record<string, unknown> {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw new TypeError(`${what} must be an object, got ${describe(options)}`)
  for (const k of Object.keys(options)) {
    if (!known.includes(k)) throw new TypeError(`unknown option \`${k}\` in ${what} (known: ${known.join(', ')})`)
  }
  return options as Record<string, unknown>
}

function wholeNumber(v: unknown, name: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} must be a whole number from ${min} to ${max}, got ${describe(v)}`)
  return v
}

function milliseconds(v: unknown, name: string): number {
  if (typeof v !== 'number' || Number.isNaN(v) || v < 0) throw new RangeError(`${name} must be a number of milliseconds ≥ 0 (Infinity for no limit), got ${describe(v)}`)
  return v
}

function checkKey(k: string, name: string): string {
  if (k.length === 0 || k.length > LIMITS.key) throw new RangeError(`${name} must be 1 to ${LIMITS.key} characters, got ${k.length}`)
  return k
}

/** A short, safe rendering of a bad option value for an error message. */
export function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint' || v === undefined || v === null) return String(v)
  if (typeof v === 'function') return 'a function'
  if (Array.isArray(v)) return `an array of ${v.length}`
  return `a ${Object.prototype.toString.call(v).slice(8, -1)}`
}
