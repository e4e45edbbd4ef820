/**
 * The executor runs inside one thread (a Node worker_thread or a browser Web Worker),
 * exposed to the worker's main side through comlink. It holds the results it computed
 * (data stays where it was made) in its ValueStore (value-store.ts: the memory budget
 * and spilling), compiles task functions once per hash, and runs up to `concurrency`
 * tasks at a time (async tasks interleave; sync ones run to the end). Completions leave
 * in batches, one message per turn.
 *
 * Memory: past the limit itself, queued tasks wait for spill writes to end; a task whose
 * dependencies are spilled loads them back first (only then does starting a task wait on
 * anything). The store's `paused` flips reach the main side as ExecEvents of type
 * 'memory': the worker should take no new tasks meanwhile.
 */
import { decodeValue, sizeOf } from './codec.js'
import { FunctionCache } from './compile-function.js'
import { sha256Hex } from './digest.js'
import { capWireError, toWireError, type WireError } from './errors.js'
import type { SpillStore } from './spill.js'
import { attemptId } from './attempt.js'
import { describeIssues, taskBatch, type ExecEvent, type ExecTask, type TaskBatch } from './protocol.js'
import { checkFirst, fastTaskBatch } from './fast-parse.js'
import { ValueStore, type ExecMemoryEvent, type ExecutorMemory, type StreamingBytes, type ValueStoreOptions } from './value-store.js'

export type { SpillStore } from './spill.js'
/** the thread protocol lives in protocol.ts */
export type { ExecEvent, ExecTask, TaskBatch } from './protocol.js'
export type { ExecMemoryEvent, ExecutorMemory, StreamingBytes } from './value-store.js'

/**
 * Reports of synchronous tasks run back to back leave together only while that keeps them
 * waiting less than this (ms): a task that ran this long, or a batch this old, is sent
 * before the next task starts, and so is everything before a task whose function ran this
 * long last time.
 */
const REPORT_WAIT_MS = 5

/** Largest result a worker sends along with its `finished` report when a client waits for it; bigger ones are fetched in parts. */
export const PUSH_LIMIT = 256 << 10

/**
 * Largest result (encoded) that rides along with its `finished` report whether or not a
 * client waits for it yet: the coordinator keeps a copy (bounded, `smallResultBytes`) to
 * answer the first gather without a round trip to this worker. Encoding and sending a value
 * this small costs less than the fetch it saves; the value itself stays here as ever.
 */
export const INLINE_LIMIT = 1024

/**
 * A MessagePort, as browsers and Node both have it. Tasks and their results travel on a
 * port of their own rather than through comlink: comlink's per-call envelope (a uuid, a
 * path, a reply) costs ~4× a raw postMessage, and the task stream is the hot path.
 */
export interface TaskPort {
  postMessage(message: unknown, transfer?: ArrayBuffer[]): void
  addEventListener(type: 'message', listener: (e: { data: unknown }) => void): void
  start?(): void
  close?(): void
}

/** What a host gives the executor. */
export interface ExecutorHost {
  /** Evaluates an ES module's source and returns its namespace (data: URL in Node, Blob URL in a browser). */
  importSource(source: string): Promise<unknown>
  /** Posts a batch of events to the main side, transferring the listed buffers. */
  post(events: ExecEvent[], transfer: ArrayBuffer[]): void
  /** SHA-256 (lowercase hex) of a result's encoding, where the host has a faster one than the portable `sha256Hex` (Node's native hash) */
  digest?: (bytes: Uint8Array) => string
}

/** The memory budget and spill store of the executor's values (value-store.ts). */
export type ExecutorOptions = ValueStoreOptions

export interface ExecutorStats {
  /** keys held, in memory or spilled */
  held: number
  /** bytes held in memory */
  nbytes: number
  running: number
  queued: number
  /** bytes held only in the spill store */
  spilled: number
}

export class Executor {
  /** the values this thread holds, in memory or spilled (read it; change it only through the executor) */
  readonly values: ValueStore
  private readonly sources = new Map<string, string>()
  private readonly modules = new Map<string, string>()
  private readonly moduleCache = new Map<string, Promise<unknown>>()
  private readonly functions: FunctionCache
  /** one cache per module namespace, so importModule resolves in the task's own */
  private readonly nsFunctions = new Map<string, FunctionCache>()
  private readonly queue: ExecTask[] = []
  private queueHead = 0
  private running = 0
  private outgoing: ExecEvent[] = []
  private transfer: ArrayBuffer[] = []
  private flushQueued = false
  private pumping = false
  /** keys of queued tasks that were cancelled before they started */
  private readonly dropped = new Set<string>()
  /** tasks whose dependencies were loaded back: they start before queued ones */
  private readonly loaded: ExecTask[] = []
  private loadingTasks = 0
  /** when the oldest report not yet posted was made */
  private outgoingSince = 0
  /** ms the last run of each function took */
  private readonly fnMs = new Map<string, number>()

  constructor(private readonly host: ExecutorHost, private concurrency = 1, options: ExecutorOptions = {}) {
    this.functions = new FunctionCache({ importModule: (name: string) => this.importModule(name) })
    this.values = new ValueStore({ memory: ev => this.emit(ev), room: () => this.pump() }, options)
  }

  setConcurrency(n: number): void { this.concurrency = Math.max(1, n | 0); this.pump() }

  defineFunction(hash: string, source: string): void { this.sources.set(hash, source) }

  /** Forgets a function's source and its compiled form (no queued task uses it: the main side checked). */
  forgetFunction(hash: string): void {
    this.sources.delete(hash)
    this.functions.delete(hash)
    for (const c of this.nsFunctions.values()) c.delete(hash)
  }

  forgetModule(name: string): void {
    this.modules.delete(name)
    this.moduleCache.delete(name)
  }

  defineModule(name: string, source: string): void {
    this.modules.set(name, source)
    this.moduleCache.delete(name)
  }

  private functionsOf(ns: string): FunctionCache {
    let c = this.nsFunctions.get(ns)
    if (!c) {
      if (this.nsFunctions.size >= 64) this.nsFunctions.clear()
      c = new FunctionCache({ importModule: (name: unknown) => this.importModule(name, ns) })
      this.nsFunctions.set(ns, c)
    }
    return c
  }

  private importModule(name: unknown, ns?: string): Promise<unknown> {
    if (typeof name !== 'string') return Promise.reject(new TypeError('importModule(name) takes the name given to client.uploadModule'))
    const full = ns ? `${ns}/${name}` : name
    let p = this.moduleCache.get(full)
    if (!p) {
      const source = this.modules.get(full)
      if (source === undefined) return Promise.reject(new Error(`no module named "${name}" was uploaded by this task's client (client.uploadModule('${name}', source))`))
      p = this.host.importSource(source)
      this.moduleCache.set(full, p)
    }
    return p
  }

  run(tasks: ExecTask[]): void {
    const values = this.values
    for (const t of tasks) {
      this.queue.push(t)
      if (values.spilling) values.pin(t.deps)
    }
    this.pump()
  }

  /**
   * A batch that is not the thread protocol's (a bug on the main side): each task in it
   * whose key and attempt can be read fails with a bad-message error, so none waits.
   */
  refuse(batch: unknown, why: string): void {
    const tasks = (batch as { tasks?: unknown } | null)?.tasks
    if (!Array.isArray(tasks)) { console.error(`tabgrid thread: a task batch without tasks was refused (${why})`); return }
    for (const t of tasks as { key?: unknown; attempt?: unknown }[]) {
      if (typeof t?.key !== 'string' || typeof t.attempt !== 'number') continue
      this.emit({ type: 'erred', key: t.key, attempt: t.attempt, error: { code: 'bad-message', message: `the worker sent its thread a malformed task batch: ${why}`, key: t.key } })
    }
  }

  /** Drops a queued task; false when it already started or is unknown. */
  cancel(key: string, attempt: number): boolean {
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const t = this.queue[i]!
      if (t.key === key && t.attempt === attempt) {
        this.dropped.add(attemptId(key, attempt))
        return true
      }
    }
    return false
  }

  /** Held here, in memory or spilled. */
  has(key: string): boolean { return this.values.has(key) }

  /**
   * The encoded value of a held key (for another worker or a client): its kept encoding,
   * made once (see `kept`). A spilled key's bytes come from the store as they are (a
   * promise then).
   */
  get(key: string): Uint8Array | Promise<Uint8Array> { return this.values.get(key) }

  /** `get` for sending: a big value may come back as StreamingBytes, filled in right after (value-store.ts). */
  read(key: string): Uint8Array | StreamingBytes | Promise<Uint8Array> { return this.values.read(key) }

  /** These bytes (from get) are key's kept encoding: never to be transferred or modified. */
  kept(key: string, bytes: Uint8Array): boolean { return this.values.kept(key, bytes) }

  /** Stores an encoded value (keeping `data` as its encoding); returns the value's size. */
  put(key: string, data: Uint8Array): number { return this.values.put(key, data) }

  /** Forgets these keys, in memory and in the spill store. */
  free(keys: string[]): void { this.values.free(keys) }

  /**
   * Takes over what the spill store already holds (a tab that reloaded, an agent that
   * restarted with the same directory): those keys become held, spilled. Returns every
   * key of the store now held here, with its size (for a spilled one: its encoded size).
   */
  adopt(): Promise<{ key: string; nbytes: number }[]> { return this.values.adopt() }

  /** Resolves once no spill, load or delete is in flight (for tests, and before a graceful exit). */
  settle(): Promise<void> { return this.values.settle() }

  memory(): ExecutorMemory { return this.values.memory() }

  stats(): ExecutorStats {
    const v = this.values
    return {
      held: v.count,
      nbytes: v.memoryBytes,
      running: this.running,
      queued: this.queue.length - this.queueHead + this.loaded.length + this.loadingTasks,
      spilled: v.spilledTotal,
    }
  }

  private unpin(task: ExecTask): void {
    if (this.values.spilling) this.values.unpin(task.deps)
  }

  private loadThenStart(task: ExecTask): void {
    this.loadingTasks++
    void this.values.loadAll(task.deps).then(() => {
      this.loadingTasks--
      this.loaded.push(task)
      this.pump()
    })
  }

  // -------------------------------------------------------------------------------------
  // Running tasks

  private pump(): void {
    if (this.pumping) return
    this.pumping = true
    try {
      while (this.running < this.concurrency) {
        if (this.values.spilling && (this.loaded.length !== 0 || this.queueHead < this.queue.length) && this.values.mustWait()) break
        let task: ExecTask
        if (this.loaded.length !== 0) task = this.loaded.shift()!
        else if (this.queueHead < this.queue.length) {
          task = this.queue[this.queueHead]!
          this.queue[this.queueHead++] = undefined as unknown as ExecTask
          if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
            this.queue.splice(0, this.queueHead)
            this.queueHead = 0
          }
          if (this.dropped.size && this.dropped.delete(attemptId(task.key, task.attempt))) { this.unpin(task); continue }
          if (task.deps.length !== 0 && this.values.needsLoad(task.deps)) { this.loadThenStart(task); continue }
        } else break
        this.start(task)
      }
    } finally { this.pumping = false }
  }

  private start(task: ExecTask): void {
    // a task with a time limit may be stopped with its thread, and a long one would hold the
    // reports back: send what is done first
    const t0 = performance.now()
    if (this.outgoing.length !== 0 && (task.timeout !== undefined || t0 - this.outgoingSince >= REPORT_WAIT_MS || (this.fnMs.get(task.fn) ?? 0) >= REPORT_WAIT_MS)) this.flush()
    let result: unknown
    try {
      if (task.deps.length !== 0) {
        const missing = task.deps.filter(d => !this.values.inMemory(d))
        if (missing.length) {
          this.unpin(task)
          this.emit({ type: 'erred', key: task.key, attempt: task.attempt, error: { code: 'lost-data', message: `dependencies not held here: ${missing.join(', ')}`, key: task.key }, missing })
          return
        }
        this.values.use(task.deps)
      }
      const source = this.sources.get(task.fn)
      if (source === undefined) throw new Error(`function ${task.fn} was never sent to this worker`)
      const fn = (task.ns ? this.functionsOf(task.ns) : this.functions).compile(task.fn, source)
      const args = decodeValue(task.args, k => this.values.value(k))
      if (!Array.isArray(args)) throw new Error('task arguments must be an array')
      result = fn(...args)
    } catch (err) {
      this.unpin(task)
      this.fail(task, err)
      this.ranSync(task, t0)
      return
    }
    if (result !== null && typeof result === 'object' && typeof (result as PromiseLike<unknown>).then === 'function') {
      this.running++
      // report at once, before the next task starts: it might never end
      ;(result as Promise<unknown>).then(
        v => { this.running--; this.unpin(task); this.succeed(task, v, t0); this.flush(); this.pump() },
        e => { this.running--; this.unpin(task); this.fail(task, e); this.flush(); this.pump() },
      )
    } else {
      this.unpin(task)
      this.succeed(task, result, t0)
      this.ranSync(task, t0)
    }
  }

  /** A synchronous task ended: one that ran long is reported now, not with the queued tasks after it. */
  private ranSync(task: ExecTask, t0: number): void {
    const ms = performance.now() - t0
    this.fnMs.set(task.fn, ms)
    if (ms >= REPORT_WAIT_MS && this.outgoing.length !== 0) this.flush()
  }

  private succeed(task: ExecTask, value: unknown, t0: number): void {
    const ms = performance.now() - t0
    let nbytes: number
    let data: Uint8Array | undefined
    let digest: string | undefined
    try {
      // a small result a client waits for rides along with the report, and so does a
      // tiny one (INLINE_LIMIT) in any case; a big one is fetched in parts when asked (it
      // must not be encoded here for nothing). The encoding made is kept with the value,
      // so it is not transferred (it is shared memory where the host allows, else copied:
      // small).
      const size = sizeOf(value)
      const limit = task.push ? PUSH_LIMIT : INLINE_LIMIT
      const push = size <= limit
      let enc: Uint8Array | undefined
      if (push || task.digest) {
        enc = this.values.encode(value)
        if (task.digest) digest = (this.host.digest ?? sha256Hex)(enc)
        if (push && enc.byteLength <= limit) data = enc
      }
      nbytes = this.values.keep(task.key, value, enc, size)
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
    this.emit({ type: 'erred', key: task.key, attempt: task.attempt, error: capWireError(toWireError(err, code, task.key)) })
  }

  private emit(ev: ExecEvent): void {
    if (this.outgoing.length === 0) this.outgoingSince = performance.now()
    this.outgoing.push(ev)
    if (!this.flushQueued) {
      this.flushQueued = true
      queueMicrotask(this.flush)
    }
  }

  private readonly flush = (): void => {
    this.flushQueued = false
    if (this.outgoing.length === 0) return
    const events = this.outgoing
    const transfer = this.transfer
    this.outgoing = []
    this.transfer = []
    this.host.post(events, transfer)
  }
}

/** Options of ExecutorApi.init: structured-clonable, since they cross comlink. */
export interface ExecutorInitOptions {
  memoryLimit?: number
  spillAt?: number
  pauseAt?: number
  /**
   * Where to spill: a name the host's `makeSpillStore` turns into a store (an IndexedDB
   * database in a tab, a directory for a Node agent), `true` for the host's default
   * (a fresh temporary directory in Node), or a SpillStore object (in-process use, or a
   * comlink proxy of one). Absent: never spill.
   */
  spill?: string | true | SpillStore
}

/** What the host entry of a thread knows about its platform (createExecutorApi). */
export interface ExecutorHostOptions {
  /**
   * Encodings of at least this many bytes are made in a SharedArrayBuffer, so the kept
   * bytes reach the main side without a copy (Node worker_threads). Absent (browsers,
   * where pages are not cross-origin isolated): kept bytes are copied when posted.
   */
  shareOver?: number
  /** SHA-256 (lowercase hex) faster than the portable one (ExecutorHost.digest) */
  digest?: (bytes: Uint8Array) => string
}

/** The object a thread exposes through comlink. */
export interface ExecutorApi {
  /** First call: how to report events, how many tasks to run at once, the memory budget. Answers 'ready'. */
  init(onEvents: (events: ExecEvent[]) => void, concurrency: number, options?: ExecutorInitOptions): 'ready'
  /** After init: batches (TaskBatch) arrive on this port and events leave on it. */
  connect(port: TaskPort): 'connected'
  defineFunction(hash: string, source: string): void
  defineModule(name: string, source: string): void
  run(tasks: ExecTask[]): void
  cancel(key: string, attempt: number): boolean
  /** the encoded value (made once and kept); a promise for a spilled key (its bytes are read from the store) */
  get(key: string): Uint8Array | Promise<Uint8Array>
  /**
   * many keys in one call: each the encoded value, or an error message when it is not
   * held. With `stream`, a big value may come as StreamingBytes (shared memory this thread
   * fills in right after answering; send it part by part as `ready` grows: wire.ts streamParts).
   */
  getMany(keys: string[], stream?: boolean): Promise<(Uint8Array | StreamingBytes | string)[]>
  put(key: string, data: Uint8Array): number
  free(keys: string[]): void
  stats(): ExecutorStats
  /** keys already in the spill store (after a reload), now held here as spilled, with their sizes */
  adopt(): Promise<{ key: string; nbytes: number }[]>
  memory(): ExecutorMemory
}

/**
 * Builds the API a thread exposes. `transfer(value, buffers)` is comlink's transfer,
 * passed in by the host entry so this file needs no comlink import. `makeSpillStore`
 * turns `init`'s `spill` name into a store (`undefined` for `spill: true`): a
 * DiskSpillStore in Node, an IdbSpillStore in a Web Worker.
 */
export function createExecutorApi(
  importSource: (source: string) => Promise<unknown>,
  transfer: <T>(value: T, buffers: ArrayBuffer[]) => T,
  makeSpillStore?: (name: string | undefined) => SpillStore,
  hostOptions: ExecutorHostOptions = {},
): ExecutorApi {
  let executor: Executor | undefined
  const ex = (): Executor => {
    if (!executor) throw new Error('executor used before init()')
    return executor
  }
  // bytes read from the spill store are ours to transfer; a kept encoding stays here (shared memory, or copied)
  const movable = (key: string, b: Uint8Array): boolean => b.byteLength >= 64 << 10 && b.buffer instanceof ArrayBuffer && !ex().kept(key, b)
  const out = (key: string, b: Uint8Array): Uint8Array => movable(key, b) ? transfer(b, [b.buffer as ArrayBuffer]) : b
  let port: TaskPort | undefined
  return {
    init(onEvents, concurrency, options = {}) {
      const { spill, ...budget } = options
      let store: SpillStore | undefined
      if (typeof spill === 'string' || spill === true) {
        if (!makeSpillStore) throw new Error('this thread cannot spill: its host gave createExecutorApi no makeSpillStore')
        store = makeSpillStore(spill === true ? undefined : spill)
      } else if (spill) store = spill
      const post = (events: ExecEvent[], buffers: ArrayBuffer[]): void => {
        if (port) port.postMessage(events, buffers)
        else void onEvents(buffers.length ? transfer(events, buffers) : events)
      }
      const host: ExecutorHost = { importSource, post }
      if (hostOptions.digest) host.digest = hostOptions.digest
      executor = new Executor(host, concurrency, { ...budget, spill: store, shareOver: hostOptions.shareOver })
      return 'ready'
    },
    connect(p) {
      port = p
      p.addEventListener('message', e => {
        const x = ex()
        const parsed = checkFirst(fastTaskBatch, taskBatch, e.data)
        if (!parsed.success) { x.refuse(e.data, describeIssues(parsed.error)); return }
        const b: TaskBatch = parsed.data
        if (b.forgetFns) for (const hash of b.forgetFns) x.forgetFunction(hash)
        if (b.forgetModules) for (const name of b.forgetModules) x.forgetModule(name)
        if (b.fns) for (const [hash, source] of b.fns) x.defineFunction(hash, source)
        if (b.modules) for (const [name, source] of b.modules) x.defineModule(name, source)
        x.run(b.tasks)
      })
      p.start?.()
      return 'connected'
    },
    defineFunction: (hash, source) => ex().defineFunction(hash, source),
    defineModule: (name, source) => ex().defineModule(name, source),
    run: tasks => ex().run(tasks),
    cancel: (key, attempt) => ex().cancel(key, attempt),
    get: key => { const b = ex().get(key); return b instanceof Uint8Array ? out(key, b) : b.then(d => out(key, d)) },
    getMany: async (keys, stream) => {
      const x = ex()
      const all = await Promise.all(keys.map(async k => {
        try { return await (stream ? x.read(k) : x.get(k)) } catch (err) { return (err as Error).message || String(err) }
      }))
      const buffers: ArrayBuffer[] = []
      all.forEach((b, i) => { if (b instanceof Uint8Array && movable(keys[i]!, b)) buffers.push(b.buffer as ArrayBuffer) })
      return buffers.length ? transfer(all, buffers) : all
    },
    put: (key, data) => ex().put(key, data),
    free: keys => ex().free(keys),
    stats: () => ex().stats(),
    adopt: () => ex().adopt(),
    memory: () => ex().memory(),
  }
}
