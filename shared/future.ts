/**
 * Futures: a handle on a value that lives (or will live) on the grid, and the helpers
 * that wait on many of them (`asCompleted`, `wait`, `partitionAll`).
 *
 * Several Future objects may share one key (pure tasks dedupe): their client keeps one
 * `KeyRecord` per key with a count of the Future objects that hold it. A Future is
 * deliberately not thenable (no `then`): `await f` must not pull a value off the grid
 * by accident; call `f.result()`.
 */
import type { Client } from './client.js'
import { TabgridError, TimeoutError } from './errors.js'
import { describe, resolveAsCompletedOptions, resolveWaitOptions, type AsCompletedOptions, type WaitOptions } from './options.js'

/**
 * Where a future's task stands, from this client's point of view:
 * `pending` (not done yet), `finished` (the value is on the grid), `error` (the task
 * failed), `cancelled`, `lost` (the data is gone and cannot be recomputed).
 */
export type FutureStatus = 'pending' | 'finished' | 'error' | 'cancelled' | 'lost'

/** @internal A resolvable promise. */
export interface Deferred<T> {
  promise: Promise<T>
  resolve: (v: T) => void
  reject: (e: Error) => void
}

/** @internal */
export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void
  let reject!: (e: Error) => void
  const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

/** @internal The client's record of one key, shared by every Future object with that key. */
export interface KeyRecord {
  readonly key: string
  status: FutureStatus
  /** why the key is not `finished`, once it failed */
  error: Error | undefined
  /** Future objects holding this record and not yet released */
  refs: number
  /** a fetch of the value in flight: everyone awaiting the value shares it */
  fetch: Deferred<unknown> | undefined
  /** resolved when status leaves `pending` (created only when someone waits) */
  settled: Deferred<void> | undefined
  /** times the value was disproven and replaced after the key was finished */
  replaced: number
  /** the task as it was submitted, until the coordinator is known to have it: sent again if a dropped connection lost it (client.ts) */
  spec?: unknown
}

/** @internal What a Future needs from the client that made it. */
export interface FutureOwner {
  /** the value of rec's key, fetched from the grid */
  fetch(rec: KeyRecord): Promise<unknown>
  /** one Future object holding rec let go of it */
  release(rec: KeyRecord, future: Future): void
  cancel(futures: Future[]): Promise<void>
  /** keeps the process alive until p settles (someone waits on it) */
  hold<T>(p: Promise<T>): Promise<T>
  retry(futures: Future[]): void
}

/** @internal Marks rec as done (or pending again) and wakes those waiting for it to finish. */
export function settleRecord(rec: KeyRecord, status: FutureStatus, error?: Error): void {
  rec.status = status
  rec.error = error
  if (status !== 'pending' && rec.settled) {
    const s = rec.settled
    rec.settled = undefined
    s.resolve()
  }
}

/**
 * A value that lives (or will live) on the grid: the result of `client.submit`,
 * `client.map` or `client.scatter`. Pass it as an argument to more tasks to run them
 * where the data is; call `result()` only when you need the value here.
 *
 * @example
 * ```ts
 * const x = client.submit((n) => new Float64Array(n).fill(1), 1e8)
 * const total = client.submit((a) => a.reduce((s, v) => s + v, 0), x)   // runs where x lives
 * console.log(await total.result(), x.status)
 * x.release()
 * ```
 */
export class Future<T = unknown> {
  /** The task's key on the grid, e.g. `inc-3f2a9c…`. Futures with the same key share one result. */
  readonly key: string
  /** The client that made this future. */
  readonly client: Client
  private readonly rec: KeyRecord
  private readonly owner: FutureOwner
  private released = false
  /** only there to make Future<T> carry T in its structure */
  declare private readonly _type?: T

  /** @internal Futures are made by a Client (`submit`, `map`, `scatter`). */
  constructor(client: Client, rec: KeyRecord, owner: FutureOwner) {
    this.key = rec.key
    this.client = client
    this.rec = rec
    this.owner = owner
    rec.refs++
  }

  /**
   * Where the task stands: `'pending' | 'finished' | 'error' | 'cancelled' | 'lost'`.
   *
   * @example
   * ```ts
   * if (f.status === 'error') console.error(await f.exception())
   * ```
   */
  get status(): FutureStatus { return this.rec.status }

  /**
   * How many times the value was replaced after the future finished: the volunteer that
   * computed it (or one of its inputs) was caught lying, and a run on another volunteer
   * gave a different value. A value read before then is not to be trusted; `result()`
   * now returns the re-verified one (the task's story says what happened).
   *
   * @example
   * ```ts
   * const v = await f.result()
   * // … later
   * if (f.replaced > 0) console.warn(`${f.key} was recomputed:`, await f.result())
   * ```
   */
  get replaced(): number { return this.rec.replaced }

  /**
   * True once the task is no longer pending (finished, failed, cancelled or lost).
   *
   * @example
   * ```ts
   * const ready = fs.filter(f => f.done())
   * ```
   */
  done(): boolean { return this.rec.status !== 'pending' }

  /**
   * The value, pulled from the grid to here (each call fetches it again: values are not
   * cached on the client). Rejects with the task's error: a `TaskError` (with the
   * remote stack), `CancelledError` or `LostDataError`.
   *
   * @example
   * ```ts
   * const v = await client.submit((a, b) => a + b, 1, 2).result()   // 3
   * await f.result({ timeout: 5000 })                               // TimeoutError after 5 s
   * ```
   */
  result(opts?: { timeout?: number }): Promise<T> {
    if (this.released) return Promise.reject(releasedError(this.key))
    // the callback holds this Future until the value arrives: in `await client.submit(f).result()`
    // nothing else does, and collecting it would release the key mid-fetch
    const p = this.owner.fetch(this.rec).then(v => this.hold(v)) as Promise<T>
    return opts?.timeout === undefined ? p : withTimeout(p, opts.timeout, `result of ${this.key}`)
  }

  private hold<V>(v: V): V { return v }

  /**
   * Waits until the task is done and returns its error, or undefined if it finished.
   *
   * @example
   * ```ts
   * const err = await f.exception()
   * if (err instanceof TaskError) console.error(err.remoteStack)
   * ```
   */
  async exception(): Promise<Error | undefined> {
    if (this.released) throw releasedError(this.key)
    await this.whenDone()
    return this.rec.status === 'finished' ? undefined : this.rec.error
  }

  /**
   * Cancels the task; `result()` then rejects with a `CancelledError`.
   *
   * @example
   * ```ts
   * await f.cancel()
   * ```
   */
  cancel(): Promise<void> { return this.owner.cancel([this]) }

  /**
   * Runs the task again if it failed (status `'error'` or `'lost'`), with the failed
   * tasks it depends on whose futures are still held; does nothing otherwise. The
   * future is pending again at once.
   *
   * @example
   * ```ts
   * const flaky = client.submit(fetchPage, url)
   * if (await flaky.exception()) flaky.retry()
   * console.log(await flaky.result())
   * ```
   */
  retry(): void {
    if (this.released) throw releasedError(this.key)
    this.owner.retry([this])
  }

  /**
   * Lets the grid forget this future's data once no other future holds its key.
   * Idempotent; also happens when the Future is garbage-collected.
   *
   * @example
   * ```ts
   * const n = await client.submit(a => a.length, x).result()
   * x.release()
   * ```
   */
  release(): void {
    if (this.released) return
    this.released = true
    this.owner.release(this.rec, this)
  }

  /** @internal Resolves when the task is no longer pending. */
  whenDone(): Promise<void> {
    if (this.rec.status !== 'pending') return Promise.resolve()
    if (this.released) return Promise.reject(releasedError(this.key))
    if (this.rec.settled === undefined) {
      this.rec.settled = deferred<void>()
      this.owner.hold(this.rec.settled.promise)
    }
    return this.rec.settled.promise
  }

  /** @internal */
  get isReleased(): boolean { return this.released }

  /** @internal */
  get record(): KeyRecord { return this.rec }

  toString(): string { return `<Future ${this.key} ${this.rec.status}>` }
  toJSON(): unknown { return { future: this.key, status: this.rec.status } }
}

function releasedError(key: string): Error {
  return new TabgridError('not-found', `future ${key} was released: a released future cannot be used any more`)
}

/** @internal p, or a TimeoutError after ms */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  if (!(ms >= 0)) return Promise.reject(new RangeError(`timeout must be a number of milliseconds ≥ 0, got ${describe(ms)}`))
  if (ms === Infinity) return p
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new TimeoutError(`${what}: not ready within ${ms} ms`)), ms)
    p.then(v => { clearTimeout(timer); resolve(v) }, (e: unknown) => { clearTimeout(timer); reject(e) })
  })
}

function toFutureList(futures: Iterable<Future> | Future, what: string): Future[] {
  if (futures instanceof Future) return [futures]
  if (futures === null || typeof futures !== 'object' || typeof (futures as Iterable<Future>)[Symbol.iterator] !== 'function') {
    throw new TypeError(`${what} takes a Future or an iterable of Futures, got ${describe(futures)}`)
  }
  const out = Array.isArray(futures) ? futures as Future[] : [...futures]
  for (let i = 0; i < out.length; i++) {
    if (!(out[i] instanceof Future)) throw new TypeError(`${what}: item ${i} is not a Future (got ${describe(out[i])})`)
  }
  return out
}

/** One finished future in an AsCompleted queue, with its value or error once fetched. */
interface Completion<T> { future: Future<T>; value?: T; error?: Error }

/**
 * Futures as they finish (finished, failed, cancelled or lost), in completion order:
 * Dask's `as_completed`. Iterate it with `for await`, one future at a time or in
 * `batches()` of whatever finished together; `add()` more futures at any time, also
 * while iterating. The iteration ends when every future added so far has been yielded
 * (adding more later and iterating again goes on). Futures may come from any client. A
 * future released before it finished makes the iteration throw instead of waiting
 * forever.
 *
 * With `{ withResults: true }` it yields `[future, value]` pairs, fetching values as
 * futures finish; a failed future then makes the iteration throw its error, or with
 * `raiseErrors: false` yields `[future, error]`.
 *
 * @example
 * ```ts
 * const ac = asCompleted(client.map(crawl, seeds))
 * for await (const f of ac) {
 *   for (const link of await f.result()) ac.add(client.submit(crawl, link))   // grows while iterating
 * }
 * for await (const batch of asCompleted(fs).batches()) console.log(batch.length, 'finished together')
 * for await (const [f, v] of asCompleted(fs, { withResults: true })) console.log(f.key, v)
 * ```
 */
export class AsCompleted<T = unknown, Y = Future<T>> implements AsyncIterableIterator<Y> {
  private readonly withResults: boolean
  private readonly raiseErrors: boolean
  /** added and not yet in the queue (not done, or done and its value being fetched) */
  private readonly waiting = new Set<Future<T>>()
  private queue: Completion<T>[] = []
  private head = 0
  private failure: Error | undefined
  private wakers: (() => void)[] = []

  /** @internal made by `asCompleted()` */
  constructor(futures: Future<T>[], opts: { withResults: boolean; raiseErrors: boolean }) {
    this.withResults = opts.withResults
    this.raiseErrors = opts.raiseErrors
    for (const f of futures) this.add(f)
  }

  /**
   * Adds a future to wait for (also while iterating). Adding one already waited for,
   * and not yet yielded, does nothing.
   *
   * @example
   * ```ts
   * ac.add(client.submit(retryLater, job))
   * ```
   */
  add(future: Future<T>): void {
    if (!(future instanceof Future)) throw new TypeError(`asCompleted: add takes a Future, got ${describe(future)}`)
    if (this.waiting.has(future)) return
    this.waiting.add(future)
    if (future.done()) this.completed(future)
    else future.whenDone().then(() => this.completed(future), (e: Error) => { this.waiting.delete(future); this.failure ??= e; this.wake() })
  }

  /**
   * Adds several futures.
   *
   * @example
   * ```ts
   * ac.update(client.map(f, more))
   * ```
   */
  update(futures: Iterable<Future<T>>): void {
    for (const f of toFutureList(futures, 'asCompleted: update') as Future<T>[]) this.add(f)
  }

  /**
   * Futures added and not yet yielded.
   *
   * @example
   * ```ts
   * console.log(`${ac.count()} to go`)
   * ```
   */
  count(): number { return this.waiting.size + this.queue.length - this.head }

  /**
   * True when nothing is left to yield.
   *
   * @example
   * ```ts
   * if (ac.isEmpty()) console.log('all done')
   * ```
   */
  isEmpty(): boolean { return this.count() === 0 }

  /**
   * True when a future is ready to be yielded without waiting.
   *
   * @example
   * ```ts
   * if (ac.hasReady()) console.log('something finished')
   * ```
   */
  hasReady(): boolean { return this.head < this.queue.length }

  /**
   * Stops waiting for every future added (they are not cancelled).
   *
   * @example
   * ```ts
   * ac.clear()
   * ```
   */
  clear(): void {
    this.waiting.clear()
    this.queue = []
    this.head = 0
    this.wake()
  }

  /**
   * The next finished future (or pair); `done` once nothing is left.
   *
   * @example
   * ```ts
   * const { value: first } = await ac.next()
   * ```
   */
  async next(): Promise<IteratorResult<Y, undefined>> {
    for (;;) {
      if (this.head < this.queue.length) return { done: false, value: this.take() }
      if (this.failure) { const e = this.failure; this.failure = undefined; throw e }
      if (this.waiting.size === 0) return { done: true, value: undefined }
      await new Promise<void>(resolve => this.wakers.push(resolve))
    }
  }

  /**
   * Ends a `for await` early (`break`): the futures left stay added, and iterating again
   * goes on with them.
   *
   * @example
   * ```ts
   * for await (const f of ac) if (f.status === 'error') break
   * ```
   */
  async return(): Promise<IteratorResult<Y, undefined>> {
    return { done: true, value: undefined }
  }

  [Symbol.asyncIterator](): this { return this }

  /**
   * Whatever finished together, as arrays: waits for at least one, then takes every
   * future (or pair) ready at that moment.
   *
   * @example
   * ```ts
   * for await (const batch of asCompleted(fs).batches()) await store(await client.gather(batch))
   * ```
   */
  async *batches(): AsyncGenerator<Y[], void, undefined> {
    for (;;) {
      const first = await this.next()
      if (first.done) return
      const batch: Y[] = [first.value]
      while (this.head < this.queue.length) {
        // an error to raise ends the batch; the next call throws it
        if (this.withResults && this.raiseErrors && this.queue[this.head]!.error !== undefined) break
        batch.push(this.take())
      }
      yield batch
    }
  }

  private take(): Y {
    const c = this.queue[this.head++]!
    // a long stream: drop what has been taken so the queue does not hold everything
    if (this.head > 1024 && this.head * 2 > this.queue.length) { this.queue = this.queue.slice(this.head); this.head = 0 }
    if (!this.withResults) return c.future as Y
    if (c.error !== undefined) {
      if (this.raiseErrors) throw c.error
      return [c.future, c.error] as Y
    }
    return [c.future, c.value] as Y
  }

  private completed(f: Future<T>): void {
    if (!this.waiting.has(f)) return
    if (!this.withResults) { this.enqueue({ future: f }); return }
    f.result().then(
      value => this.enqueue({ future: f, value }),
      (error: Error) => this.enqueue({ future: f, error }),
    )
  }

  private enqueue(c: Completion<T>): void {
    // cleared meanwhile: nothing to yield
    if (!this.waiting.delete(c.future)) return
    this.queue.push(c)
    this.wake()
  }

  private wake(): void {
    const ws = this.wakers
    if (ws.length === 0) return
    this.wakers = []
    for (const w of ws) w()
  }
}

/**
 * Futures as they finish: see AsCompleted. `futures` may be empty (add them later).
 *
 * @example
 * ```ts
 * for await (const f of asCompleted(client.map(slow, seq))) {
 *   if (f.status === 'finished') console.log(await f.result())
 * }
 * ```
 */
export function asCompleted<T>(futures?: Iterable<Future<T>>, opts?: { withResults?: false; raiseErrors?: boolean }): AsCompleted<T, Future<T>>
export function asCompleted<T>(futures: Iterable<Future<T>> | undefined, opts: { withResults: true; raiseErrors?: true }): AsCompleted<T, [Future<T>, T]>
export function asCompleted<T>(futures: Iterable<Future<T>> | undefined, opts: { withResults: true; raiseErrors: false }): AsCompleted<T, [Future<T>, T | Error]>
export function asCompleted<T>(futures: Iterable<Future<T>> | undefined, opts?: AsCompletedOptions): AsCompleted<T, unknown>
export function asCompleted<T>(futures?: Iterable<Future<T>>, opts?: AsCompletedOptions): AsCompleted<T, unknown> {
  // checked here, so a bad call fails where it is made
  const list = futures === undefined ? [] : toFutureList(futures, 'asCompleted') as Future<T>[]
  return new AsCompleted<T, unknown>(list, resolveAsCompletedOptions(opts))
}

/**
 * Lets futures' tasks run to the end even once nothing holds them (Dask's
 * `fire_and_forget`); see `client.fireAndForget`. Futures may come from any client.
 *
 * @example
 * ```ts
 * fireAndForget(client.submit(sendEmail, to))
 * ```
 */
export function fireAndForget(futures: Future | Iterable<Future>): void {
  for (const f of toFutureList(futures, 'fireAndForget')) f.client.fireAndForget(f)
}

/**
 * Waits for futures (from any client). Resolves with the futures that are done and
 * those that are not: when all are done (default), at the first done
 * (`'FIRST_COMPLETED'`), at the first that failed (`'FIRST_EXCEPTION'`), or when
 * `timeout` ms have passed — whichever comes first. Never rejects because a task
 * failed: check `status` or `exception()`.
 *
 * @example
 * ```ts
 * await wait(fs)                                              // all done
 * const { done, notDone } = await wait(fs, { returnWhen: 'FIRST_COMPLETED', timeout: 1000 })
 * ```
 */
export function wait<T>(futures: Iterable<Future<T>> | Future<T>, options?: WaitOptions): Promise<{ done: Set<Future<T>>; notDone: Set<Future<T>> }> {
  let list: Future<T>[]
  let opts: ReturnType<typeof resolveWaitOptions>
  try {
    list = toFutureList(futures as Iterable<Future>, 'wait') as Future<T>[]
    opts = resolveWaitOptions(options)
  } catch (err) { return Promise.reject(err) }
  const { returnWhen, timeout } = opts
  const split = (): { done: Set<Future<T>>; notDone: Set<Future<T>> } => {
    const done = new Set<Future<T>>()
    const notDone = new Set<Future<T>>()
    for (const f of list) (f.done() ? done : notDone).add(f)
    return { done, notDone }
  }
  const failed = (f: Future<T>): boolean => f.status !== 'pending' && f.status !== 'finished'
  const enough = (): boolean => {
    if (returnWhen === 'FIRST_COMPLETED') return list.length === 0 || list.some(f => f.done())
    if (returnWhen === 'FIRST_EXCEPTION' && list.some(failed)) return true
    return list.every(f => f.done())
  }
  if (enough() || timeout === 0) return Promise.resolve(split())
  return new Promise((resolve, reject) => {
    let finished = false
    let left = 0
    const timer = timeout !== undefined && timeout !== Infinity ? setTimeout(() => finish(), timeout) : undefined
    function finish(err?: Error): void {
      if (finished) return
      finished = true
      if (timer !== undefined) clearTimeout(timer)
      if (err) reject(err)
      else resolve(split())
    }
    for (const f of list) {
      if (f.done()) continue
      left++
      f.whenDone().then(() => {
        left--
        if (returnWhen === 'FIRST_COMPLETED' || left === 0 || (returnWhen === 'FIRST_EXCEPTION' && failed(f))) finish()
      }, (e: Error) => finish(e))
    }
  })
}

/**
 * Splits an iterable into arrays of `n` items (the last may be shorter): the way to make
 * tasks big enough that the per-task overhead does not matter.
 *
 * @example
 * ```ts
 * const chunks = client.map(xs => xs.map(f), [...partitionAll(10_000, seq)])
 * [...partitionAll(2, [1, 2, 3])]   // [[1, 2], [3]]
 * ```
 */
export function partitionAll<T>(n: number, iterable: Iterable<T>): Generator<T[], void, undefined> {
  // checked here, not inside the generator, so a bad call fails where it is made
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) throw new RangeError(`partitionAll: n must be a whole number ≥ 1, got ${describe(n)}`)
  if (iterable === null || typeof (iterable as Iterable<T> | undefined)?.[Symbol.iterator] !== 'function') {
    throw new TypeError(`partitionAll: expected an iterable (an array, a Set, a generator…), got ${describe(iterable)}`)
  }
  return Array.isArray(iterable) ? sliceArray(n, iterable as T[]) : chunkIterable(n, iterable)
}

function* sliceArray<T>(n: number, a: readonly T[]): Generator<T[], void, undefined> {
  for (let i = 0; i < a.length; i += n) yield a.slice(i, i + n)
}

function* chunkIterable<T>(n: number, iterable: Iterable<T>): Generator<T[], void, undefined> {
  let chunk: T[] = []
  for (const item of iterable) {
    chunk.push(item)
    if (chunk.length === n) { yield chunk; chunk = [] }
  }
  if (chunk.length) yield chunk
}
