/**
 * The values one thread holds (results it computed, values put there), under an
 * optional memory budget (`memoryLimit`). Held values are kept in least-recently-used
 * order (touched when stored, used as a dependency, or read with get). Past
 * `spillAt × memoryLimit` bytes in memory, and when a SpillStore is given, the least
 * recently used values that no queued or running task needs (not pinned) are encoded and
 * moved to the store, after the current turn, until memory is back under that mark; they
 * stay held ("spilled"). Past the limit itself, tasks should wait for those writes to end
 * (`mustWait`). A spilled value is loaded back with `load`. A value loaded back keeps its
 * copy in the store, so spilling it again costs nothing. Past `pauseAt × memoryLimit` the
 * store reports `paused` (an ExecMemoryEvent), and again when memory is back under
 * `spillAt × memoryLimit`: the worker should take no new tasks meanwhile. Without a store
 * it never spills; it only measures and reports.
 *
 * Encodings. A value is encoded at most once: the bytes made for a `get`, a pushed
 * result, a digest or a spill are kept with the value, and a value stored from bytes
 * (`put`, or loaded back from the spill store) keeps those bytes as its encoding. So a
 * held value is sent as it was when first encoded (tasks must not mutate their inputs or
 * results afterwards; copies on other workers would not see it either). A kept encoding
 * is counted as memory for the bytes it adds: all of them for a value a task made, only
 * its header and skeleton for a value decoded from it (its arrays are views into it).
 * Past the spill mark, a spill writes the kept encoding (no second encode), and kept
 * encodings that no spill needs are dropped (they can be made again) before the store
 * pauses. A spilled value counts the bytes of its copy in the store.
 *
 * Streaming (`read`, with `shareOver`): the first read of a big value allocates its
 * encoding in shared memory and answers at once; the arrays are copied in right after,
 * a step at a time, and a shared counter (`ready`, notified with Atomics) says how much is
 * final, so the main side sends the first parts while the rest is still being copied. With `shareOver`, encodings of that size or more are made in a
 * SharedArrayBuffer, so a thread hands its kept bytes to the main side without a copy.
 */
import { ownBytes } from './bytes.js'
import { decodeValue, encodeValue, encodeValueLater, sizeOf, viewedBytes, type PendingEncoding } from './codec.js'
import type { SpillStore } from './spill.js'
import type { ExecEvent } from './protocol.js'

/**
 * `paused` flipped: true when in-memory bytes went past `pauseAt × memoryLimit` (or past
 * the limit itself while spills are still being written), false when back under
 * `spillAt × memoryLimit`. Only emitted when a memoryLimit is set.
 */
/** the thread protocol's memory event (protocol.ts execEvent) */
export type ExecMemoryEvent = Extract<ExecEvent, { type: 'memory' }>

export interface ValueStoreOptions {
  /** bytes of held values this thread may keep in memory; absent or 0: no budget (never pauses, never spills) */
  memoryLimit?: number
  /** fraction of memoryLimit past which values spill (with a store); also where a pause ends. Default 0.6 */
  spillAt?: number
  /** fraction of memoryLimit past which the store reports itself paused. Default 0.85 */
  pauseAt?: number
  /** where spilled values go; absent: never spill */
  spill?: SpillStore
  /**
   * encodings of at least this many bytes are made in a SharedArrayBuffer (hosts whose
   * threads share memory with their main side: Node worker_threads); absent: never
   */
  shareOver?: number
}

export interface ExecutorMemory {
  /** bytes of held values in memory, with what their kept encodings add */
  inMemory: number
  /** bytes that held values only in the spill store take there */
  spilled: number
  /** memoryLimit; 0 when there is none */
  limit: number
  paused: boolean
}

/** What the store tells its owner (the executor). */
export interface ValueStoreEvents {
  /** `paused` flipped */
  memory(ev: ExecMemoryEvent): void
  /** tasks that waited (`mustWait`) may try to start again */
  room(): void
}

/**
 * An encoding this thread is still copying arrays into (ValueStore.read): `bytes` is
 * complete up to `Atomics.load(ready, 0)` bytes, and Atomics.notify wakes who waits on
 * `ready` each time it grows, until it is `bytes.byteLength`.
 */
export interface StreamingBytes { bytes: Uint8Array; ready: Int32Array }

/** Values this big or more are streamed by `read` (smaller ones are encoded at once). */
export const STREAM_OVER = 4 << 20
/** How much `read` copies between two notifications. */
const STREAM_STEP = 1 << 20

const later: (f: () => void) => void = (globalThis as { setImmediate?: (f: () => void) => void }).setImmediate ?? (f => { setTimeout(f, 0) })

/** A value held in memory; also a node of the least-recently-used list (when spilling). */
class Held {
  /** a copy of it is in the spill store (written by us, or it was loaded from there) */
  disk = false
  /** bytes of that copy */
  stored = 0
  /** being written to the spill store: the bytes written (not counted: they go with the value once written) */
  writing: Uint8Array | undefined = undefined
  /** could not be encoded or written: it stays in memory */
  stuck = false
  prev: Held | null = null
  next: Held | null = null
  /** its encoding, kept once made */
  enc: Uint8Array | undefined = undefined
  /** the encoding is still being filled in (read) */
  filling: { pending: PendingEncoding; ready: Int32Array } | undefined = undefined
  /** bytes the kept encoding adds to the value's own (0 without one) */
  extra = 0
  /** `size`: the value's own bytes (sizeOf) */
  constructor(readonly key: string, public value: unknown, readonly size: number) {}
  /** bytes in memory: the value and what its kept encoding adds */
  get nbytes(): number { return this.size + this.extra }
}

/** A value held only in the spill store (an object, so a late answer can tell it is still the same entry). */
class Spilled {
  constructor(readonly nbytes: number) {}
}

const noop = (): void => {}

export class ValueStore {
  /** values in memory */
  private readonly mem = new Map<string, Held>()
  /** least and most recently used values in memory (a linked list, kept only when spilling is on) */
  private lruHead: Held | null = null
  private lruTail: Held | null = null
  /** values only in the spill store */
  private readonly spilled = new Map<string, Spilled>()
  /** bytes in memory */
  private nbytes = 0

  private readonly limit: number
  private readonly spillMark: number
  private readonly pauseMark: number
  /** past this many bytes in memory, pause even while spills are being written */
  private readonly hardMark: number
  private readonly store: SpillStore | undefined
  /** memoryLimit and a store: values may spill, so keep LRU order and pin dependencies */
  readonly spilling: boolean
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
  /** tasks wait for a spill write to end (memory is past the limit itself) */
  private waitingForSpill = false
  private roomQueued = false
  /** values whose kept encoding adds bytes (droppable when memory is tight), oldest first */
  private readonly encoded = new Set<Held>()
  private readonly shareOver: number | undefined

  constructor(private readonly events: ValueStoreEvents, options: ValueStoreOptions = {}) {
    const { memoryLimit = 0, spillAt = 0.6, pauseAt = 0.85, spill, shareOver } = options
    if (!(memoryLimit >= 0)) throw new RangeError(`memoryLimit must be a number of bytes ≥ 0, not ${memoryLimit}`)
    if (!(spillAt > 0) || !(pauseAt > 0)) throw new RangeError(`spillAt and pauseAt must be fractions > 0 (got ${spillAt}, ${pauseAt})`)
    this.limit = memoryLimit
    this.spillMark = memoryLimit * Math.min(spillAt, pauseAt)
    this.pauseMark = memoryLimit * pauseAt
    this.hardMark = Math.max(memoryLimit, this.pauseMark)
    this.store = spill
    this.spilling = memoryLimit > 0 && spill !== undefined
    if (this.spilling) this.pins = new Map()
    this.shareOver = shareOver
  }

  /** Held here, in memory or spilled. */
  has(key: string): boolean { return this.mem.has(key) || this.spilled.has(key) }

  /** Held in memory (not only spilled). */
  inMemory(key: string): boolean { return this.mem.has(key) }

  /** The in-memory value of a key; throws when it is not in memory. */
  value(key: string): unknown {
    const e = this.mem.get(key)
    if (e === undefined) throw new Error(`not held in memory here: ${key}`)
    return e.value
  }

  /**
   * The encoded value of a held key (for another worker or a client). For a value in
   * memory these are its kept encoding (made now if there is none yet): the caller must
   * not modify or transfer them (`kept` says which bytes are kept). A spilled key's bytes
   * come from the store as they are (a promise then), and belong to the caller.
   */
  get(key: string): Uint8Array | Promise<Uint8Array> {
    const e = this.mem.get(key)
    if (e !== undefined) {
      if (this.spilling) this.touch(e)
      if (e.filling !== undefined) this.filled(e)
      if (e.enc !== undefined) return e.enc
      if (e.writing !== undefined) return e.writing
      const enc = this.encode(e.value)
      this.setEncoding(e, enc, enc.byteLength, true)
      if (this.limit !== 0) this.grew()
      return enc
    }
    if (this.spilled.has(key)) {
      return this.op(key, () => this.store!.get(key)).then(b => {
        if (b === undefined) throw new Error(`${key} is no longer in the spill store`)
        return ownBytes(b)
      })
    }
    throw new Error(`not held here: ${key}`)
  }

  /**
   * Like `get`, for sending: a big value not encoded yet (with `shareOver`, where
   * Atomics can wait) comes back at once as StreamingBytes, filled in right after (see
   * the file comment); anything else as `get` has it.
   */
  read(key: string): Uint8Array | StreamingBytes | Promise<Uint8Array> {
    const e = this.mem.get(key)
    if (e !== undefined && e.writing === undefined) {
      if (e.filling !== undefined) {
        if (this.spilling) this.touch(e)
        return { bytes: e.filling.pending.bytes, ready: e.filling.ready }
      }
      if (e.enc === undefined && this.shareOver !== undefined && e.size >= STREAM_OVER && typeof Atomics.notify === 'function') {
        if (this.spilling) this.touch(e)
        const pending = encodeValueLater(e.value, 'value', { shareOver: this.shareOver })
        const bytes = pending.bytes
        if (!(bytes.buffer instanceof ArrayBuffer) && pending.ready < bytes.byteLength) {
          const ready = new Int32Array(new SharedArrayBuffer(4))
          Atomics.store(ready, 0, pending.ready)
          e.filling = { pending, ready }
          this.setEncoding(e, bytes, bytes.byteLength, true)
          // after this call's answer has been posted
          later(() => this.fill(e))
          if (this.limit !== 0) this.grew()
          return { bytes, ready }
        }
        pending.finish()
        this.setEncoding(e, bytes, bytes.byteLength, true)
        if (this.limit !== 0) this.grew()
        return bytes
      }
    }
    return this.get(key)
  }

  /** Copies a streaming encoding's arrays in, a step at a time, telling waiters each time. */
  private fill(e: Held): void {
    const f = e.filling
    if (f === undefined) return
    const { pending, ready } = f
    const total = pending.bytes.byteLength
    while (pending.ready < total) {
      Atomics.store(ready, 0, pending.step(STREAM_STEP))
      Atomics.notify(ready, 0)
    }
    e.filling = undefined
  }

  /** A streaming encoding is needed whole now: copy the rest at once. */
  private filled(e: Held): void {
    const f = e.filling
    if (f === undefined) return
    f.pending.finish()
    Atomics.store(f.ready, 0, f.pending.bytes.byteLength)
    Atomics.notify(f.ready, 0)
    e.filling = undefined
  }

  /** These are the kept encoding of key's value (not to be modified or transferred). */
  kept(key: string, bytes: Uint8Array): boolean {
    const e = this.mem.get(key)
    return e !== undefined && (e.enc === bytes || e.writing === bytes)
  }

  /** Encodes a value the way this store keeps encodings (in shared memory when big, with `shareOver`). */
  encode(value: unknown): Uint8Array {
    return this.shareOver === undefined ? encodeValue(value) : encodeValue(value, 'value', { shareOver: this.shareOver })
  }

  /**
   * Stores an encoded value, keeping `data` as its encoding (it must not be modified
   * afterwards); returns the value's size.
   */
  put(key: string, data: Uint8Array): number {
    const value = decodeValue(data)
    const size = sizeOf(value)
    const viewed = viewedBytes(value, data)
    this.hold(key, value, size, data, data.byteLength - viewed, viewed === 0)
    return size
  }

  /**
   * Holds a value (a task's result), with its encoding when one was made (`enc`, from
   * `encode`: kept, so it must not be modified or transferred afterwards). Returns the
   * value's size (`size`, when the caller measured it already).
   */
  keep(key: string, value: unknown, enc?: Uint8Array, size = sizeOf(value)): number {
    this.hold(key, value, size, enc, enc === undefined ? 0 : enc.byteLength, true)
    return size
  }

  private hold(key: string, value: unknown, size: number, enc: Uint8Array | undefined, extra: number, droppable: boolean): void {
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
    const e = new Held(key, value, size)
    this.addMem(e)
    if (enc !== undefined) this.setEncoding(e, enc, extra, droppable)
    if (this.limit !== 0) this.grew()
  }

  /**
   * Keeps `enc` as e's encoding, adding `extra` bytes to memory. `droppable`: forgetting
   * it frees its bytes (not so when the value's arrays are views into it).
   */
  private setEncoding(e: Held, enc: Uint8Array, extra: number, droppable: boolean): void {
    e.enc = enc
    e.extra = Math.max(0, extra)
    this.nbytes += e.extra
    // only a budget ever drops them
    if (droppable && e.extra > 0 && this.limit !== 0) this.encoded.add(e)
  }

  /** Forgets e's kept encoding. */
  private dropEncoding(e: Held): void {
    if (e.enc === undefined) return
    this.nbytes -= e.extra
    e.enc = undefined
    e.extra = 0
    this.encoded.delete(e)
  }

  /** Drops kept encodings (oldest first; not those being written) until memory is at most `target`. */
  private dropEncodings(target: number): void {
    for (const e of this.encoded) {
      if (this.nbytes - this.writingBytes <= target) return
      if (!e.writing) this.dropEncoding(e)
    }
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

  /**
   * Recomputes every counter from the entries and throws when one disagrees (tests, like
   * the scheduler's validate mode). Returns the sums: in memory (values and what kept
   * encodings add), spilled.
   */
  audit(): { values: number; encodings: number; inMemory: number; spilled: number } {
    let values = 0, encodings = 0, writing = 0, spilled = 0
    const fail = (why: string): never => { throw new Error(`value store out of step: ${why}`) }
    for (const [k, e] of this.mem) {
      if (e.key !== k) fail(`${k} is filed as ${e.key}`)
      values += e.size
      encodings += e.extra
      if (e.writing) writing += e.nbytes
      if (this.encoded.has(e) && e.extra === 0) fail(`${k}: listed as a droppable encoding that adds nothing`)
      if (e.enc === undefined && e.extra !== 0) fail(`${k}: counts ${e.extra} bytes for an encoding it does not keep`)
      if (this.spilled.has(k)) fail(`${k} is both in memory and spilled`)
    }
    for (const e of this.encoded) if (this.mem.get(e.key) !== e) fail(`${e.key}: an encoding listed for a value no longer held`)
    for (const s of this.spilled.values()) spilled += s.nbytes
    if (this.spilling) {
      const linked = new Set<Held>()
      for (let e = this.lruHead, prev: Held | null = null; e !== null; prev = e, e = e.next) {
        if (e.prev !== prev) fail(`${e.key}: broken recency list`)
        if (linked.has(e)) fail(`${e.key}: twice in the recency list`)
        linked.add(e)
        if (this.mem.get(e.key) !== e) fail(`${e.key}: in the recency list, not in memory`)
      }
      for (const e of this.mem.values()) if (!e.writing && !e.stuck && !linked.has(e)) fail(`${e.key}: in memory, not in the recency list`)
    }
    if (values + encodings !== this.nbytes) fail(`in memory: counted ${this.nbytes}, entries sum to ${values + encodings}`)
    if (writing !== this.writingBytes) fail(`being written: counted ${this.writingBytes}, entries sum to ${writing}`)
    if (spilled !== this.spilledBytes) fail(`spilled: counted ${this.spilledBytes}, entries sum to ${spilled}`)
    return { values, encodings, inMemory: this.nbytes, spilled }
  }

  /** keys held, in memory or spilled */
  get count(): number { return this.mem.size + this.spilled.size }
  /** bytes held in memory */
  get memoryBytes(): number { return this.nbytes }
  /** bytes held only in the spill store */
  get spilledTotal(): number { return this.spilledBytes }

  private heldBytes(key: string): number | undefined {
    return this.mem.get(key)?.size ?? this.spilled.get(key)?.nbytes
  }

  /** Holds a value in memory, most recently used. */
  private addMem(e: Held): void {
    this.mem.set(e.key, e)
    this.nbytes += e.nbytes
    if (this.spilling) this.link(e)
  }

  /** Stops holding a value in memory (and its kept encoding). */
  private dropMem(e: Held): void {
    this.mem.delete(e.key)
    this.nbytes -= e.nbytes
    // freed or replaced while being written: its bytes are no longer in memory here
    if (e.writing !== undefined) this.writingBytes -= e.nbytes
    if (this.spilling) this.unlink(e)
    this.encoded.delete(e)
    e.value = undefined
    e.enc = undefined
  }

  /** These in-memory keys were used (as a task's dependencies): most recently used. */
  use(keys: string[]): void {
    if (!this.spilling) return
    for (const k of keys) {
      const e = this.mem.get(k)
      if (e !== undefined) this.touch(e)
    }
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

  /** A queued task needs these keys: they must not spill until `unpin`. */
  pin(keys: string[]): void {
    const pins = this.pins
    if (pins !== undefined) for (const d of keys) pins.set(d, (pins.get(d) ?? 0) + 1)
  }

  unpin(keys: string[]): void {
    const pins = this.pins
    if (pins === undefined || keys.length === 0) return
    for (const d of keys) {
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
    if (this.maybeSpill()) return
    // without a store, kept encodings are what can go
    if (this.encoded.size !== 0 && this.nbytes > this.spillMark) this.dropEncodings(this.spillMark)
    this.checkPause()
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
    this.events.memory({ type: 'memory', inMemory: this.nbytes, spilled: this.spilledBytes, paused })
  }

  /**
   * Whether tasks should wait before starting, because spilling is behind; if so, the
   * owner hears `room` when they may try again: past the spill mark, the spill round
   * starts its writes first (one microtask); past the limit itself, tasks wait until a
   * write ends and frees memory. The owner asks only when it has tasks to start.
   */
  mustWait(): boolean {
    if (!this.spilling || !(this.spillQueued || this.nbytes > this.hardMark)) return false
    if (this.spillQueued) {
      if (!this.roomQueued) {
        this.roomQueued = true
        queueMicrotask(this.roomLater)
      }
      return true
    }
    if (this.writingBytes > 0) {
      this.waitingForSpill = true
      return true
    }
    return false // nothing can spill: run on (the store reports itself paused)
  }

  private readonly roomLater = (): void => {
    this.roomQueued = false
    this.events.room()
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
        if (e.filling !== undefined) this.filled(e)
        let bytes = e.enc
        if (bytes === undefined) {
          try {
            bytes = this.encode(e.value)
          } catch (err) {
            e.stuck = true
            this.unlink(e) // out of the way of later rounds
            projected += e.nbytes
            this.warn(`cannot spill ${key}: ${(err as Error)?.message}`)
            continue
          }
        }
        const data = bytes
        e.writing = data
        this.unlink(e) // later rounds need not walk past it; evicted or linked again when written
        this.writingBytes += e.nbytes
        this.op(key, () => store.set(key, data)).then(() => this.written(key, e, data, undefined), err => this.written(key, e, data, err ?? new Error('spill failed')))
      }
    }
    // what could not spill (needed by tasks): its kept encodings can still go
    if (this.encoded.size !== 0 && this.nbytes - this.writingBytes > this.spillMark) this.dropEncodings(this.spillMark)
    this.checkPause()
  }

  /** A spill write (of `data`) ended. */
  private written(key: string, e: Held, data: Uint8Array, err: unknown): void {
    const cur = this.mem.get(key)
    if (cur === e) this.writingBytes -= e.nbytes // (dropMem took them off already otherwise)
    e.writing = undefined
    if (cur === e) {
      if (err !== undefined) {
        e.stuck = true
        this.unlink(e)
        this.warn(`could not spill ${key}: ${(err as Error)?.message ?? err}`)
      } else {
        e.disk = true
        e.stored = data.byteLength
        // needed again by a task meanwhile: stays in memory, most recently used (the copy stays valid for next time)
        if (this.pins?.has(key)) {
          this.touch(e)
          // it stays: the bytes just written are its encoding now
          if (e.enc === undefined) this.setEncoding(e, data, data.byteLength, true)
        } else this.evict(key, e)
      }
    } else if (err === undefined && cur !== undefined && !cur.writing) {
      // replaced by a newer value while written: the copy is stale (a newer write would overwrite it; free() deletes it itself)
      this.storeDel([key])
    }
    this.maybeSpill()
    this.checkPause()
    if (this.waitingForSpill) {
      this.waitingForSpill = false
      this.events.room()
    }
  }

  /** Drops an in-memory value whose copy is in the store. */
  private evict(key: string, e: Held): void {
    this.dropMem(e)
    this.spilled.set(key, new Spilled(e.stored))
    this.spilledBytes += e.stored
    if (this.paused) this.checkPause()
  }

  /** Some of these keys are only in the spill store. */
  needsLoad(keys: string[]): boolean {
    if (this.spilled.size === 0) return false
    for (const d of keys) if (this.spilled.has(d)) return true
    return false
  }

  /** Brings the spilled ones of these keys back into memory. Never rejects (see `load`). */
  loadAll(keys: string[]): Promise<unknown> {
    const loads: Promise<void>[] = []
    for (const d of keys) if (this.spilled.has(d)) loads.push(this.load(d))
    return Promise.all(loads)
  }

  /** Brings a spilled value back into memory. Never rejects: a value that cannot be had is dropped (a task then reports it missing). */
  load(key: string): Promise<void> {
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
      const value = decodeValue(bytes)
      const e = new Held(key, value, sizeOf(value))
      e.disk = true
      e.stored = bytes.byteLength
      this.spilled.delete(key)
      this.spilledBytes -= s.nbytes
      this.addMem(e)
      const viewed = viewedBytes(value, bytes)
      this.setEncoding(e, bytes, bytes.byteLength - viewed, viewed === 0)
      if (this.limit !== 0) this.grew()
    }).catch(err => lose(String((err as Error)?.message ?? err))).finally(() => this.loads.delete(key))
    this.loads.set(key, p)
    return p
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
}
