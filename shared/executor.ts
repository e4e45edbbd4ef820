/**
 * The executor runs inside one thread (a Node worker_thread or a browser Web Worker),
 * exposed to the worker's main side through comlink. It holds the results it computed
 * (data stays where it was made), compiles task functions once per hash, and runs up
 * to `concurrency` tasks at a time (async tasks interleave; sync ones run to the end).
 * Completions leave in batches, one message per turn.
 *
 * Memory budget (optional: `memoryLimit`). Held values are kept in least-recently-used
 * order (touched when stored, used as a dependency, or read with get). Past
 * `spillAt × memoryLimit` bytes in memory, and when a SpillStore is given, the least
 * recently used values that no queued or running task needs are encoded and moved to
 * the store, after the current turn, until memory is back under that mark; they stay
 * held ("spilled"). Past the limit itself, queued tasks wait for those writes to end.
 * A task whose dependencies are spilled loads them back first (only then does starting
 * a task wait on anything). A value loaded back keeps its copy in the store, so
 * spilling it again costs nothing. Past `pauseAt × memoryLimit` the
 * executor reports `paused` (an ExecEvent of type 'memory'), and again when memory is
 * back under `spillAt × memoryLimit`: the worker should take no new tasks meanwhile.
 * Without a store the executor never spills; it only measures and reports.
 */
import { ownBytes } from './bytes.js'
import { decodeValue, encodeValue, sizeOf } from './codec.js'
import { FunctionCache } from './compile-function.js'
import { hashBytes } from './hash.js'
import { capWireError, toWireError, type WireError } from './errors.js'
import type { SpillStore } from './spill.js'
import { attemptId } from './attempt.js'

export type { SpillStore } from './spill.js'

/**
 * Reports of synchronous tasks run back to back leave together only while that keeps them
 * waiting less than this (ms): a task that ran this long, or a batch this old, is sent
 * before the next task starts, and so is everything before a task whose function ran this
 * long last time.
 */
const REPORT_WAIT_MS = 5

/** Largest result a worker sends along with its `finished` report; bigger ones are fetched in parts. */
export const PUSH_LIMIT = 256 << 10

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
  /** ms the run may take (the main side stops the thread past it) */
  timeout?: number
}

/** What the main side posts on the task port: definitions first, then the tasks that use them (one channel, so in order). */
export interface TaskBatch {
  fns?: [hash: string, source: string][]
  modules?: [name: string, source: string][]
  tasks: ExecTask[]
}

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

export type ExecEvent =
  | { type: 'finished'; key: string; attempt: number; nbytes: number; ms: number; data?: Uint8Array; digest?: string }
  | { type: 'erred'; key: string; attempt: number; error: WireError; /** dependencies this executor did not have */ missing?: string[] }
  | ExecMemoryEvent

/**
 * `paused` flipped: true when in-memory bytes went past `pauseAt × memoryLimit` (or past
 * the limit itself while spills are still being written), false when back under
 * `spillAt × memoryLimit`. Only emitted when a memoryLimit is set.
 */
export interface ExecMemoryEvent { type: 'memory'; inMemory: number; spilled: number; paused: boolean }

/** What a host gives the executor. */
export interface ExecutorHost {
  /** Evaluates an ES module's source and returns its namespace (data: URL in Node, Blob URL in a browser). */
  importSource(source: string): Promise<unknown>
  /** Posts a batch of events to the main side, transferring the listed buffers. */
  post(events: ExecEvent[], transfer: ArrayBuffer[]): void
}

export interface ExecutorOptions {
  /** bytes of held values this thread may keep in memory; absent or 0: no budget (never pauses, never spills) */
  memoryLimit?: number
  /** fraction of memoryLimit past which values spill (with a store); also where a pause ends. Default 0.6 */
  spillAt?: number
  /** fraction of memoryLimit past which the executor reports itself paused. Default 0.85 */
  pauseAt?: number
  /** where spilled values go; absent: never spill */
  spill?: SpillStore
}

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

export interface ExecutorMemory {
  /** bytes of held values in memory */
  inMemory: number
  /** bytes of held values only in the spill store */
  spilled: number
  /** memoryLimit; 0 when there is none */
  limit: number
  paused: boolean
}


/** A value held in memory; also a node of the least-recently-used list (when spilling). */
class Held {
  /** a copy of it is in the spill store (written by us, or it was loaded from there) */
  disk = false
  /** being written to the spill store */
  writing = false
  /** could not be encoded or written: it stays in memory */
  stuck = false
  prev: Held | null = null
  next: Held | null = null
  constructor(readonly key: string, public value: unknown, readonly nbytes: number) {}
}

/** A value held only in the spill store (an object, so a late answer can tell it is still the same entry). */
class Spilled {
  constructor(readonly nbytes: number) {}
}

const noop = (): void => {}

export class Executor {
  /** values in memory */
  private readonly mem = new Map<string, Held>()
  /** least and most recently used values in memory (a linked list, kept only when spilling is on) */
  private lruHead: Held | null = null
  private lruTail: Held | null = null
  /** values only in the spill store */
  private readonly spilled = new Map<string, Spilled>()
  private readonly sources = new Map<string, string>()
  private readonly modules = new Map<string, string>()
  private readonly moduleCache = new Map<string, Promise<unknown>>()
  private readonly functions: FunctionCache
  private readonly queue: ExecTask[] = []
  private queueHead = 0
  private running = 0
  /** bytes in memory */
  private nbytes = 0
  private outgoing: ExecEvent[] = []
  private transfer: ArrayBuffer[] = []
  private flushQueued = false
  private pumping = false
  /** keys of queued tasks that were cancelled before they started */
  private readonly dropped = new Set<string>()

  private readonly limit: number
  private readonly spillMark: number
  private readonly pauseMark: number
  /** past this many bytes in memory, pause even while spills are being written */
  private readonly hardMark: number
  private readonly store: SpillStore | undefined
  /** memoryLimit and a store: values may spill, so keep LRU order and pin dependencies */
  private readonly spilling: boolean
  /** dependencies of queued and running tasks (only when spilling) */
  private readonly pins: Map<string, number> | undefined
  private spilledBytes = 0
  /** bytes of values being written to the store (still in memory) */
  private writingBytes = 0
  private paused = false
  private spillQueued = false
  private warned = false
  /** loads from the store in flight, by key */
  private readonly loads = new Map<string, Promise<void>>()
  /** tail of the store operations on each key, so they happen in order */
  private readonly ops = new Map<string, Promise<void>>()
  /** tasks whose dependencies were loaded back: they start before queued ones */
  private readonly loaded: ExecTask[] = []
  private loadingTasks = 0
  /** tasks wait for a spill write to end (memory is past the limit itself) */
  private waitingForSpill = false
  private pumpQueued = false
  /** when the oldest report not yet posted was made */
  private outgoingSince = 0
  /** ms the last run of each function took */
  private readonly fnMs = new Map<string, number>()

  constructor(private readonly host: ExecutorHost, private concurrency = 1, options: ExecutorOptions = {}) {
    this.functions = new FunctionCache({ importModule: (name: string) => this.importModule(name) })
    const { memoryLimit = 0, spillAt = 0.6, pauseAt = 0.85, spill } = options
    if (!(memoryLimit >= 0)) throw new RangeError(`memoryLimit must be a number of bytes ≥ 0, not ${memoryLimit}`)
    if (!(spillAt > 0) || !(pauseAt > 0)) throw new RangeError(`spillAt and pauseAt must be fractions > 0 (got ${spillAt}, ${pauseAt})`)
    this.limit = memoryLimit
    this.spillMark = memoryLimit * Math.min(spillAt, pauseAt)
    this.pauseMark = memoryLimit * pauseAt
    this.hardMark = Math.max(memoryLimit, this.pauseMark)
    this.store = spill
    this.spilling = memoryLimit > 0 && spill !== undefined
    if (this.spilling) this.pins = new Map()
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
    const pins = this.pins
    for (const t of tasks) {
      this.queue.push(t)
      if (pins !== undefined) for (const d of t.deps) pins.set(d, (pins.get(d) ?? 0) + 1)
    }
    this.pump()
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
  has(key: string): boolean { return this.mem.has(key) || this.spilled.has(key) }

  /**
   * The encoded value of a held key (for another worker or a client). A spilled key's
   * bytes come from the store as they are (a promise then).
   */
  get(key: string): Uint8Array | Promise<Uint8Array> {
    const e = this.mem.get(key)
    if (e !== undefined) {
      if (this.spilling) this.touch(e)
      return ownBytes(encodeValue(e.value))
    }
    if (this.spilled.has(key)) {
      return this.op(key, () => this.store!.get(key)).then(b => {
        if (b === undefined) throw new Error(`${key} is no longer in the spill store`)
        return ownBytes(b)
      })
    }
    throw new Error(`not held here: ${key}`)
  }

  /** Stores an encoded value; returns its in-memory size. */
  put(key: string, data: Uint8Array): number {
    const value = decodeValue(data)
    return this.keep(key, value)
  }

  /** Forgets these keys, in memory and in the spill store. */
  free(keys: string[]): void {
    let dels: string[] | undefined
    for (const k of keys) {
      const e = this.mem.get(k)
      if (e !== undefined) {
        this.dropMem(e)
        if (e.disk || e.writing) (dels ??= []).push(k)
        continue
      }
      const s = this.spilled.get(k)
      if (s !== undefined) {
        this.spilled.delete(k)
        this.spilledBytes -= s.nbytes
        ;(dels ??= []).push(k)
      }
    }
    if (dels) this.storeDel(dels)
    if (this.limit !== 0) this.checkPause()
  }

  /**
   * Takes over what the spill store already holds (a tab that reloaded, an agent that
   * restarted with the same directory): those keys become held, spilled. Returns every
   * key of the store now held here, with its size (for a spilled one: its encoded size).
   */
  async adopt(): Promise<{ key: string; nbytes: number }[]> {
    const store = this.store
    if (!store) return []
    const out: { key: string; nbytes: number }[] = []
    for (const key of await store.keys()) {
      let nbytes = this.heldBytes(key)
      const e = this.mem.get(key)
      // held in memory already, by a value made since: the stored copy is an older one
      if (e !== undefined && !e.disk && !e.writing) this.storeDel([key])
      if (nbytes === undefined) {
        try {
          nbytes = typeof store.size === 'function' ? await store.size(key) : (await store.get(key))?.byteLength
        } catch (err) {
          this.warn(`could not read ${key} from the spill store: ${(err as Error)?.message}`)
          continue
        }
        if (nbytes === undefined) continue
        const now = this.heldBytes(key)
        if (now !== undefined) nbytes = now
        else {
          this.spilled.set(key, new Spilled(nbytes))
          this.spilledBytes += nbytes
        }
      }
      out.push({ key, nbytes })
    }
    return out
  }

  /** Resolves once no spill, load or delete is in flight (for tests, and before a graceful exit). */
  async settle(): Promise<void> {
    for (;;) {
      await Promise.resolve() // a spill round queued in this turn starts first
      if (!this.spillQueued && this.ops.size === 0 && this.loads.size === 0) return
      await Promise.all([...this.ops.values(), ...this.loads.values()])
    }
  }

  memory(): ExecutorMemory {
    return { inMemory: this.nbytes, spilled: this.spilledBytes, limit: this.limit, paused: this.paused }
  }

  stats(): ExecutorStats {
    return {
      held: this.mem.size + this.spilled.size,
      nbytes: this.nbytes,
      running: this.running,
      queued: this.queue.length - this.queueHead + this.loaded.length + this.loadingTasks,
      spilled: this.spilledBytes,
    }
  }

  private heldBytes(key: string): number | undefined {
    return this.mem.get(key)?.nbytes ?? this.spilled.get(key)?.nbytes
  }

  private keep(key: string, value: unknown): number {
    const nbytes = sizeOf(value)
    const old = this.mem.get(key)
    if (old !== undefined) {
      this.dropMem(old)
      // a copy of the old value in the store is stale now (one being written is deleted when the write ends)
      if (old.disk) this.storeDel([key])
    } else if (this.spilled.size !== 0) {
      const s = this.spilled.get(key)
      if (s !== undefined) {
        this.spilled.delete(key)
        this.spilledBytes -= s.nbytes
        this.storeDel([key])
      }
    }
    this.addMem(new Held(key, value, nbytes))
    if (this.limit !== 0) this.grew()
    return nbytes
  }

  /** Holds a value in memory, most recently used. */
  private addMem(e: Held): void {
    this.mem.set(e.key, e)
    this.nbytes += e.nbytes
    if (this.spilling) this.link(e)
  }

  /** Stops holding a value in memory. */
  private dropMem(e: Held): void {
    this.mem.delete(e.key)
    this.nbytes -= e.nbytes
    if (this.spilling) this.unlink(e)
    e.value = undefined
  }

  /** Marks a value most recently used (values being written or stuck stay out of the list). */
  private touch(e: Held): void {
    if (this.lruTail === e || e.writing || e.stuck) return
    this.unlink(e)
    this.link(e)
  }

  private link(e: Held): void {
    e.prev = this.lruTail
    e.next = null
    if (this.lruTail) this.lruTail.next = e
    else this.lruHead = e
    this.lruTail = e
  }

  private unlink(e: Held): void {
    if (e.prev) e.prev.next = e.next
    else if (this.lruHead === e) this.lruHead = e.next
    if (e.next) e.next.prev = e.prev
    else if (this.lruTail === e) this.lruTail = e.prev
    e.prev = e.next = null
  }

  private unpin(task: ExecTask): void {
    const pins = this.pins
    if (pins === undefined || task.deps.length === 0) return
    for (const d of task.deps) {
      const n = pins.get(d)
      if (n === undefined) continue
      if (n <= 1) pins.delete(d)
      else pins.set(d, n - 1)
    }
    this.maybeSpill() // values that were in use may spill now
  }

  // -------------------------------------------------------------------------------------
  // Memory budget

  /** Memory grew: spill (after this turn) or pause. */
  private grew(): void {
    // with spilling, the round decides about pausing once it knows what it could spill
    if (!this.maybeSpill()) this.checkPause()
  }

  /** Schedules a spill round (after this turn) when spilling is on and memory is past the spill mark. */
  private maybeSpill(): boolean {
    if (!this.spilling || this.nbytes - this.writingBytes <= this.spillMark) return false
    if (!this.spillQueued) {
      this.spillQueued = true
      queueMicrotask(this.spillRound)
    }
    return true
  }

  private checkPause(): void {
    if (!this.paused) {
      if (this.nbytes - this.writingBytes > this.pauseMark || this.nbytes > this.hardMark) this.setPaused(true)
    } else if (this.nbytes <= this.spillMark) this.setPaused(false)
  }

  private setPaused(paused: boolean): void {
    this.paused = paused
    this.emit({ type: 'memory', inMemory: this.nbytes, spilled: this.spilledBytes, paused })
  }

  /** Starts writing least recently used values to the store until memory will be under the spill mark. */
  private readonly spillRound = (): void => {
    this.spillQueued = false
    const store = this.store!
    const pins = this.pins!
    let projected = this.nbytes - this.writingBytes
    if (projected > this.spillMark) {
      for (let e = this.lruHead, next: Held | null; e !== null && projected > this.spillMark; e = next) {
        next = e.next
        const key = e.key
        if (e.writing || e.stuck || (pins.size !== 0 && pins.has(key))) continue
        projected -= e.nbytes
        if (e.disk) { this.evict(key, e); continue }
        let bytes: Uint8Array
        try {
          bytes = encodeValue(e.value)
        } catch (err) {
          e.stuck = true
          this.unlink(e) // out of the way of later rounds
          projected += e.nbytes
          this.warn(`cannot spill ${key}: ${(err as Error)?.message}`)
          continue
        }
        e.writing = true
        this.unlink(e) // later rounds need not walk past it; evicted or linked again when written
        this.writingBytes += e.nbytes
        this.op(key, () => store.set(key, bytes)).then(() => this.written(key, e, undefined), err => this.written(key, e, err ?? new Error('spill failed')))
      }
    }
    this.checkPause()
  }

  /** A spill write ended. */
  private written(key: string, e: Held, err: unknown): void {
    e.writing = false
    this.writingBytes -= e.nbytes
    const cur = this.mem.get(key)
    if (cur === e) {
      if (err !== undefined) {
        e.stuck = true
        this.unlink(e)
        this.warn(`could not spill ${key}: ${(err as Error)?.message ?? err}`)
      } else {
        e.disk = true
        // needed again by a task meanwhile: stays in memory, most recently used (the copy stays valid for next time)
        if (this.pins?.has(key)) this.touch(e)
        else this.evict(key, e)
      }
    } else if (err === undefined && cur !== undefined && !cur.writing) {
      // replaced by a newer value while written: the copy is stale (a newer write would overwrite it; free() deletes it itself)
      this.storeDel([key])
    }
    this.maybeSpill()
    this.checkPause()
    if (this.waitingForSpill) {
      this.waitingForSpill = false
      this.pump()
    }
  }

  /** Drops an in-memory value whose copy is in the store. */
  private evict(key: string, e: Held): void {
    this.dropMem(e)
    this.spilled.set(key, new Spilled(e.nbytes))
    this.spilledBytes += e.nbytes
    if (this.paused) this.checkPause()
  }

  /** Brings a spilled value back into memory. Never rejects: a value that cannot be had is dropped (the task then reports it missing). */
  private load(key: string): Promise<void> {
    let p = this.loads.get(key)
    if (p !== undefined) return p
    const s = this.spilled.get(key)
    if (s === undefined) return Promise.resolve()
    const lose = (why: string): void => {
      if (this.spilled.get(key) !== s) return
      this.spilled.delete(key)
      this.spilledBytes -= s.nbytes
      this.warn(`lost ${key} from the spill store: ${why}`)
    }
    p = this.op(key, () => this.store!.get(key)).then(bytes => {
      if (this.spilled.get(key) !== s) return // freed or replaced meanwhile
      if (bytes === undefined) { lose('not there'); return }
      const e = new Held(key, decodeValue(bytes), s.nbytes)
      e.disk = true
      this.spilled.delete(key)
      this.spilledBytes -= s.nbytes
      this.addMem(e)
      if (this.limit !== 0) this.grew()
    }).catch(err => lose(String((err as Error)?.message ?? err))).finally(() => this.loads.delete(key))
    this.loads.set(key, p)
    return p
  }

  private needsLoad(task: ExecTask): boolean {
    for (const d of task.deps) if (this.spilled.has(d)) return true
    return false
  }

  private loadThenStart(task: ExecTask): void {
    this.loadingTasks++
    const loads: Promise<void>[] = []
    for (const d of task.deps) if (this.spilled.has(d)) loads.push(this.load(d))
    void Promise.all(loads).then(() => {
      this.loadingTasks--
      this.loaded.push(task)
      this.pump()
    })
  }

  /** Runs store operations on one key in order. */
  private op<T>(key: string, f: () => Promise<T>): Promise<T> {
    const prev = this.ops.get(key)
    const p = prev ? prev.then(f) : new Promise<T>(resolve => resolve(f()))
    const tail = p.then(noop, noop)
    this.ops.set(key, tail)
    void tail.then(() => { if (this.ops.get(key) === tail) this.ops.delete(key) })
    return p
  }

  private storeDel(keys: string[]): void {
    const store = this.store
    if (!store) return
    const now: string[] = []
    const fail = (err: unknown): void => this.warn(`could not delete from the spill store: ${(err as Error)?.message ?? err}`)
    for (const k of keys) {
      if (this.ops.has(k)) this.op(k, () => store.del([k])).catch(fail)
      else now.push(k)
    }
    if (now.length === 0) return
    const p = new Promise<void>(resolve => resolve(store.del(now)))
    p.catch(fail)
    const tail = p.then(noop, noop)
    for (const k of now) this.ops.set(k, tail)
    void tail.then(() => { for (const k of now) if (this.ops.get(k) === tail) this.ops.delete(k) })
  }

  private warn(line: string): void {
    if (this.warned) return
    this.warned = true
    console.warn(`tabgrid executor: ${line} (further spill warnings are not shown)`)
  }

  // -------------------------------------------------------------------------------------
  // Running tasks

  private pump(): void {
    if (this.pumping) return
    this.pumping = true
    try {
      while (this.running < this.concurrency) {
        if (this.spilling && (this.spillQueued || this.nbytes > this.hardMark) && this.mustWait()) break
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
          if (this.spilled.size !== 0 && task.deps.length !== 0 && this.needsLoad(task)) { this.loadThenStart(task); continue }
        } else break
        this.start(task)
      }
    } finally { this.pumping = false }
  }

  /**
   * Whether starting tasks should wait for spilling, and arranges to pump again: past the
   * spill mark, the spill round starts its writes first (one microtask); past the limit
   * itself, tasks wait until a write ends and frees memory.
   */
  private mustWait(): boolean {
    if (this.queueHead >= this.queue.length && this.loaded.length === 0) return false
    if (this.spillQueued) {
      if (!this.pumpQueued) {
        this.pumpQueued = true
        queueMicrotask(this.pumpLater)
      }
      return true
    }
    if (this.writingBytes > 0) {
      this.waitingForSpill = true
      return true
    }
    return false // nothing can spill: run on (the executor reports itself paused)
  }

  private readonly pumpLater = (): void => {
    this.pumpQueued = false
    this.pump()
  }

  private start(task: ExecTask): void {
    // a task with a time limit may be stopped with its thread, and a long one would hold the
    // reports back: send what is done first
    const t0 = performance.now()
    if (this.outgoing.length !== 0 && (task.timeout !== undefined || t0 - this.outgoingSince >= REPORT_WAIT_MS || (this.fnMs.get(task.fn) ?? 0) >= REPORT_WAIT_MS)) this.flush()
    let result: unknown
    try {
      if (task.deps.length !== 0) {
        const missing = task.deps.filter(d => !this.mem.has(d))
        if (missing.length) {
          this.unpin(task)
          this.emit({ type: 'erred', key: task.key, attempt: task.attempt, error: { code: 'lost-data', message: `dependencies not held here: ${missing.join(', ')}`, key: task.key }, missing })
          return
        }
        if (this.spilling) for (const d of task.deps) this.touch(this.mem.get(d)!)
      }
      const source = this.sources.get(task.fn)
      if (source === undefined) throw new Error(`function ${task.fn} was never sent to this worker`)
      const fn = this.functions.compile(task.fn, source)
      const args = decodeValue(task.args, k => this.mem.get(k)!.value)
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
      // a small result a client waits for rides along with the report; a big one is
      // fetched in parts when asked (it must not be encoded here for nothing)
      const push = task.push && sizeOf(value) <= PUSH_LIMIT
      if (push || task.digest) {
        const enc = encodeValue(value)
        if (task.digest) digest = hashBytes(enc)
        if (push && enc.byteLength <= PUSH_LIMIT) {
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
  /** the encoded value; a promise for a spilled key (its bytes are read from the store) */
  get(key: string): Uint8Array | Promise<Uint8Array>
  /** many keys in one call: each the encoded value, or an error message when it is not held */
  getMany(keys: string[]): Promise<(Uint8Array | string)[]>
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
): ExecutorApi {
  let executor: Executor | undefined
  const ex = (): Executor => {
    if (!executor) throw new Error('executor used before init()')
    return executor
  }
  const out = (b: Uint8Array): Uint8Array => b.byteLength >= 64 << 10 ? transfer(b, [b.buffer as ArrayBuffer]) : b
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
      executor = new Executor({ importSource, post }, concurrency, { ...budget, spill: store })
      return 'ready'
    },
    connect(p) {
      port = p
      p.addEventListener('message', e => {
        const b = e.data as TaskBatch
        const x = ex()
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
    get: key => { const b = ex().get(key); return b instanceof Uint8Array ? out(b) : b.then(out) },
    getMany: async keys => {
      const x = ex()
      const all = await Promise.all(keys.map(async k => {
        try { return await x.get(k) } catch (err) { return (err as Error).message || String(err) }
      }))
      const buffers = all.filter((b): b is Uint8Array => b instanceof Uint8Array && b.byteLength >= 64 << 10).map(b => b.buffer as ArrayBuffer)
      return buffers.length ? transfer(all, buffers) : all
    },
    put: (key, data) => ex().put(key, data),
    free: keys => ex().free(keys),
    stats: () => ex().stats(),
    adopt: () => ex().adopt(),
    memory: () => ex().memory(),
  }
}
