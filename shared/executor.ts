/**
 * The executor runs inside one thread (a Node worker_thread or a browser Web Worker),
 * exposed to the worker's main side through comlink. It holds the results it computed
 * (data stays where it was made), compiles task functions once per hash, and runs up
 * to `concurrency` tasks at a time (async tasks interleave; sync ones run to the end).
 * Completions leave in batches, one message per turn.
 */
import { decodeValue, encodeValue, sizeOf } from './codec.js'
import { FunctionCache } from './fn.js'
import { hashBytes } from './hash.js'
import { toWireError, type WireError } from './errors.js'

/** One task handed to the executor. Every dependency is already stored in this executor. */
export interface ExecTask {
  key: string
  attempt: number
  fn: string
  args: Uint8Array
  deps: string[]
  /** send the encoded result back with `finished` */
  push: boolean
  /** compute a digest of the encoded result (redundant runs) */
  digest: boolean
}

export type ExecEvent =
  | { type: 'finished'; key: string; attempt: number; nbytes: number; ms: number; data?: Uint8Array; digest?: string }
  | { type: 'erred'; key: string; attempt: number; error: WireError; /** dependencies this executor did not have */ missing?: string[] }

/** What a host gives the executor. */
export interface ExecutorHost {
  /** Evaluates an ES module's source and returns its namespace (data: URL in Node, Blob URL in a browser). */
  importSource(source: string): Promise<unknown>
  /** Posts a batch of events to the main side, transferring the listed buffers. */
  post(events: ExecEvent[], transfer: ArrayBuffer[]): void
}

export interface ExecutorStats { held: number; nbytes: number; running: number; queued: number }

/** Copies a view that does not own its whole buffer, so it can be transferred or cloned cheaply. */
export function ownBytes(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer ? b : b.slice()
}

export class Executor {
  private readonly store = new Map<string, { value: unknown; nbytes: number }>()
  private readonly sources = new Map<string, string>()
  private readonly modules = new Map<string, string>()
  private readonly moduleCache = new Map<string, Promise<unknown>>()
  private readonly functions: FunctionCache
  private readonly queue: ExecTask[] = []
  private queueHead = 0
  private running = 0
  private nbytes = 0
  private outgoing: ExecEvent[] = []
  private transfer: ArrayBuffer[] = []
  private flushQueued = false
  private pumping = false
  /** keys of queued tasks that were cancelled before they started */
  private readonly dropped = new Set<string>()

  constructor(private readonly host: ExecutorHost, private concurrency = 1) {
    this.functions = new FunctionCache({ importModule: (name: string) => this.importModule(name) })
  }

  setConcurrency(n: number): void { this.concurrency = Math.max(1, n | 0); this.pump() }

  defineFunction(hash: string, source: string): void { this.sources.set(hash, source) }

  defineModule(name: string, source: string): void {
    this.modules.set(name, source)
    this.moduleCache.delete(name)
  }

  private importModule(name: unknown): Promise<unknown> {
    if (typeof name !== 'string') return Promise.reject(new TypeError('importModule(name) takes the name given to client.uploadModule'))
    let p = this.moduleCache.get(name)
    if (!p) {
      const source = this.modules.get(name)
      if (source === undefined) return Promise.reject(new Error(`no module named "${name}" was uploaded (client.uploadModule('${name}', source))`))
      p = this.host.importSource(source)
      this.moduleCache.set(name, p)
    }
    return p
  }

  run(tasks: ExecTask[]): void {
    for (const t of tasks) this.queue.push(t)
    this.pump()
  }

  /** Drops a queued task; false when it already started or is unknown. */
  cancel(key: string, attempt: number): boolean {
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const t = this.queue[i]!
      if (t.key === key && t.attempt === attempt) {
        this.dropped.add(`${key}@${attempt}`)
        return true
      }
    }
    return false
  }

  has(key: string): boolean { return this.store.has(key) }

  /** The encoded value of a held key (for another worker or a client). */
  get(key: string): Uint8Array {
    const e = this.store.get(key)
    if (!e) throw new Error(`not held here: ${key}`)
    return ownBytes(encodeValue(e.value))
  }

  /** Stores an encoded value; returns its in-memory size. */
  put(key: string, data: Uint8Array): number {
    const value = decodeValue(data)
    return this.keep(key, value)
  }

  free(keys: string[]): void {
    for (const k of keys) {
      const e = this.store.get(k)
      if (e) { this.nbytes -= e.nbytes; this.store.delete(k) }
    }
  }

  stats(): ExecutorStats {
    return { held: this.store.size, nbytes: this.nbytes, running: this.running, queued: this.queue.length - this.queueHead }
  }

  private keep(key: string, value: unknown): number {
    const old = this.store.get(key)
    if (old) this.nbytes -= old.nbytes
    const nbytes = sizeOf(value)
    this.store.set(key, { value, nbytes })
    this.nbytes += nbytes
    return nbytes
  }

  private pump(): void {
    if (this.pumping) return
    this.pumping = true
    try {
      while (this.running < this.concurrency && this.queueHead < this.queue.length) {
        const task = this.queue[this.queueHead]!
        this.queue[this.queueHead++] = undefined as unknown as ExecTask
        if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
          this.queue.splice(0, this.queueHead)
          this.queueHead = 0
        }
        if (this.dropped.size && this.dropped.delete(`${task.key}@${task.attempt}`)) continue
        this.start(task)
      }
    } finally { this.pumping = false }
  }

  private start(task: ExecTask): void {
    const t0 = performance.now()
    let result: unknown
    try {
      const missing = task.deps.filter(d => !this.store.has(d))
      if (missing.length) {
        this.emit({ type: 'erred', key: task.key, attempt: task.attempt, error: { code: 'lost-data', message: `dependencies not held here: ${missing.join(', ')}`, key: task.key }, missing })
        return
      }
      const source = this.sources.get(task.fn)
      if (source === undefined) throw new Error(`function ${task.fn} was never sent to this worker`)
      const fn = this.functions.compile(task.fn, source)
      const args = decodeValue(task.args, k => this.store.get(k)!.value)
      if (!Array.isArray(args)) throw new Error('task arguments must be an array')
      result = fn(...args)
    } catch (err) {
      this.fail(task, err)
      return
    }
    if (result !== null && typeof result === 'object' && typeof (result as PromiseLike<unknown>).then === 'function') {
      this.running++
      ;(result as Promise<unknown>).then(
        v => { this.running--; this.succeed(task, v, t0); this.pump() },
        e => { this.running--; this.fail(task, e); this.pump() },
      )
    } else this.succeed(task, result, t0)
  }

  private succeed(task: ExecTask, value: unknown, t0: number): void {
    const ms = performance.now() - t0
    let nbytes: number
    let data: Uint8Array | undefined
    let digest: string | undefined
    try {
      if (task.push || task.digest) {
        const enc = encodeValue(value)
        if (task.digest) digest = hashBytes(enc)
        if (task.push) {
          data = ownBytes(enc)
          if (data.byteLength >= 64 << 10) this.transfer.push(data.buffer as ArrayBuffer)
        }
      }
      nbytes = this.keep(task.key, value)
    } catch (err) {
      this.fail(task, err)
      return
    }
    const ev: ExecEvent = { type: 'finished', key: task.key, attempt: task.attempt, nbytes, ms }
    if (data) ev.data = data
    if (digest) ev.digest = digest
    this.emit(ev)
  }

  private fail(task: ExecTask, err: unknown): void {
    const code = (err as { name?: string })?.name === 'CodecError' ? 'serialization' : 'task-error'
    this.emit({ type: 'erred', key: task.key, attempt: task.attempt, error: toWireError(err, code, task.key) })
  }

  private emit(ev: ExecEvent): void {
    this.outgoing.push(ev)
    if (!this.flushQueued) {
      this.flushQueued = true
      queueMicrotask(this.flush)
    }
  }

  private readonly flush = (): void => {
    this.flushQueued = false
    const events = this.outgoing
    const transfer = this.transfer
    this.outgoing = []
    this.transfer = []
    this.host.post(events, transfer)
  }
}

/** The object a thread exposes through comlink. */
export interface ExecutorApi {
  /** First call: how to report events, and how many tasks to run at once. Answers 'ready'. */
  init(onEvents: (events: ExecEvent[]) => void, concurrency: number): 'ready'
  defineFunction(hash: string, source: string): void
  defineModule(name: string, source: string): void
  run(tasks: ExecTask[]): void
  cancel(key: string, attempt: number): boolean
  get(key: string): Uint8Array
  put(key: string, data: Uint8Array): number
  free(keys: string[]): void
  stats(): ExecutorStats
}

/**
 * Builds the API a thread exposes. `transfer(value, buffers)` is comlink's transfer,
 * passed in by the host entry so this file needs no comlink import.
 */
export function createExecutorApi(importSource: (source: string) => Promise<unknown>, transfer: <T>(value: T, buffers: ArrayBuffer[]) => T): ExecutorApi {
  let executor: Executor | undefined
  const ex = (): Executor => {
    if (!executor) throw new Error('executor used before init()')
    return executor
  }
  return {
    init(onEvents, concurrency) {
      executor = new Executor({ importSource, post: (events, buffers) => { void onEvents(buffers.length ? transfer(events, buffers) : events) } }, concurrency)
      return 'ready'
    },
    defineFunction: (hash, source) => ex().defineFunction(hash, source),
    defineModule: (name, source) => ex().defineModule(name, source),
    run: tasks => ex().run(tasks),
    cancel: (key, attempt) => ex().cancel(key, attempt),
    get: key => { const b = ex().get(key); return b.byteLength >= 64 << 10 ? transfer(b, [b.buffer as ArrayBuffer]) : b },
    put: (key, data) => ex().put(key, data),
    free: keys => ex().free(keys),
    stats: () => ex().stats(),
  }
}
