/**
 * Frames: how messages travel. Every hop batches: messages queued during one turn of
 * the event loop go out together as one msgpack frame when the turn ends (never on a
 * timer, so a lone message leaves at once). Binary payloads over LIMITS.chunkBytes are
 * split into parts so that no frame grows past a few megabytes and big values stream.
 */
import { Packr } from 'msgpackr'
import { LIMITS } from './protocol.js'
export { ownBytes } from './bytes.js'
import { TabgridError, TimeoutError, TooLargeError, type WireError, fromWireError } from './errors.js'

const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, variableMapSize: true })

/** Encodes an array of messages into one frame. */
export function encodeFrame(messages: readonly object[]): Uint8Array {
  return packr.pack(messages)
}

/** Decodes a frame; throws a plain Error on anything that is not a msgpack array. */
export function decodeFrame(frame: unknown): unknown[] {
  if (!(frame instanceof Uint8Array) && !(frame instanceof ArrayBuffer)) throw new Error('a frame must be binary')
  const bytes = frame instanceof ArrayBuffer ? new Uint8Array(frame) : frame
  if (bytes.byteLength > LIMITS.frameBytes) throw new TooLargeError(`frame of ${bytes.byteLength} bytes is over the ${LIMITS.frameBytes} byte limit`)
  let out: unknown
  try { out = packr.unpack(bytes) } catch (err) { throw new Error(`undecodable frame: ${(err as Error).message}`) }
  if (!Array.isArray(out)) throw new Error('a frame must hold an array of messages')
  if (out.length > LIMITS.messagesPerFrame) throw new TooLargeError(`frame holds ${out.length} messages, over the limit of ${LIMITS.messagesPerFrame}`)
  return out
}

/** Anything with a binary `data` field may be split into parts. */
interface WithData { data: Uint8Array; part?: number; parts?: number; total?: number }

/**
 * Splits a message whose `data` is over the chunk size into parts (same header,
 * `part`/`parts`/`total`). Every part but the last is exactly LIMITS.chunkBytes long.
 */
export function splitParts<M extends WithData>(msg: M): M[] {
  const chunk = LIMITS.chunkBytes
  const n = msg.data.byteLength
  if (n <= chunk) return [msg]
  const parts = Math.ceil(n / chunk)
  const out: M[] = []
  for (let i = 0; i < parts; i++) {
    out.push({ ...msg, data: msg.data.subarray(i * chunk, Math.min(n, (i + 1) * chunk)), part: i, parts, total: n })
  }
  return out
}

/**
 * Joins parts back into whole payloads. `add` returns the whole bytes once every part has
 * arrived, else undefined. Parts out of shape (wrong sizes, duplicate or unknown index)
 * throw; `drop` forgets a half-joined payload.
 */
export class PartJoiner {
  private pending = new Map<string, { buf: Uint8Array; seen: Uint8Array; left: number }>()
  constructor(private readonly maxPending = 256) {}

  add(id: string, msg: WithData): Uint8Array | undefined {
    const parts = msg.parts ?? 1
    if (parts <= 1) return msg.data
    const part = msg.part ?? -1
    const total = msg.total ?? -1
    if (!(part >= 0 && part < parts) || total < 0 || total > LIMITS.valueBytes) throw new TabgridError('bad-message', `bad part ${part}/${parts} of ${id}`)
    let p = this.pending.get(id)
    if (!p) {
      if (this.pending.size >= this.maxPending) throw new TooLargeError(`too many values arriving in parts at once (${this.maxPending})`)
      p = { buf: new Uint8Array(total), seen: new Uint8Array(parts), left: parts }
      this.pending.set(id, p)
    }
    const chunk = LIMITS.chunkBytes
    const offset = part * chunk
    const expected = part === parts - 1 ? total - offset : chunk
    if (p.buf.byteLength !== total || p.seen.length !== parts || p.seen[part] || msg.data.byteLength !== expected || expected <= 0) {
      this.pending.delete(id)
      throw new TabgridError('bad-message', `part ${part}/${parts} of ${id} does not fit`)
    }
    p.buf.set(msg.data, offset)
    p.seen[part] = 1
    if (--p.left > 0) return undefined
    this.pending.delete(id)
    return p.buf
  }

  drop(id: string): void { this.pending.delete(id) }
  get size(): number { return this.pending.size }
}

/** Messages whose `data` may travel in parts (the protocol gives them part fields). */
const SPLITTABLE = new Set(['data', 'put', 'scatter'])

const schedule: (fn: () => void) => void = typeof queueMicrotask === 'function' ? queueMicrotask : fn => { void Promise.resolve().then(fn) }

/**
 * Queues messages for one peer and sends them as frames at the end of the current turn.
 * Messages with big `data` are split; a frame is cut when it reaches about a chunk's size,
 * so a 128 MB value leaves as a stream of ~1 MB frames.
 */
export class Outbox<M extends object> {
  private queue: M[] = []
  private bytes = 0
  private scheduled = false
  private closed = false

  /** `send` gets the messages of one frame (to encode and emit, or to hand over in memory). */
  constructor(private readonly send: (messages: M[]) => void) {}

  push(msg: M): void {
    if (this.closed) return
    const data = (msg as Partial<WithData>).data
    if (data instanceof Uint8Array && data.byteLength > LIMITS.chunkBytes && SPLITTABLE.has((msg as { type?: string }).type ?? '')) {
      for (const part of splitParts(msg as M & WithData)) this.pushOne(part)
    } else this.pushOne(msg)
  }

  private pushOne(msg: M): void {
    this.queue.push(msg)
    const data = (msg as Partial<WithData>).data
    this.bytes += data instanceof Uint8Array ? data.byteLength + 64 : 64
    if (this.bytes >= LIMITS.chunkBytes) this.flush()
    else if (!this.scheduled) {
      this.scheduled = true
      schedule(this.flushScheduled)
    }
  }

  private readonly flushScheduled = (): void => {
    this.scheduled = false
    this.flush()
  }

  /** Sends what is queued now. */
  flush(): void {
    if (this.queue.length === 0) return
    const batch = this.queue
    this.queue = []
    this.bytes = 0
    if (!this.closed) this.send(batch)
  }

  /** Drops what is queued and refuses more. */
  close(): void { this.closed = true; this.queue = []; this.bytes = 0 }
  get length(): number { return this.queue.length }
}

/**
 * Requests with ids and a timeout each; every pending one is rejected when the
 * transport closes. Nothing waits forever.
 */
export class PendingRequests<T = unknown> {
  private next = 1
  private pending = new Map<number, { resolve: (v: T) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> | undefined }>()

  /** Registers a request; returns its id and the promise of its answer. */
  open(timeoutMs: number, what: string): { id: number; promise: Promise<T> } {
    const id = this.next++
    const promise = new Promise<T>((resolve, reject) => {
      const timer = timeoutMs > 0 && Number.isFinite(timeoutMs)
        ? setTimeout(() => {
          this.pending.delete(id)
          reject(new TimeoutError(`${what}: no answer in ${timeoutMs} ms`))
        }, timeoutMs)
        : undefined
      // a pending request must not keep a process alive by itself (whoever awaits it decides)
      ;(timer as { unref?: () => void } | undefined)?.unref?.()
      this.pending.set(id, { resolve, reject, timer })
    })
    return { id, promise }
  }

  resolve(id: number, value: T): boolean {
    const p = this.pending.get(id)
    if (!p) return false
    this.pending.delete(id)
    if (p.timer) clearTimeout(p.timer)
    p.resolve(value)
    return true
  }

  reject(id: number, error: Error | WireError): boolean {
    const p = this.pending.get(id)
    if (!p) return false
    this.pending.delete(id)
    if (p.timer) clearTimeout(p.timer)
    p.reject(error instanceof Error ? error : fromWireError(error))
    return true
  }

  has(id: number): boolean { return this.pending.has(id) }

  /** Rejects every pending request (the transport closed). */
  rejectAll(error: Error): void {
    const all = [...this.pending.values()]
    this.pending.clear()
    for (const p of all) {
      if (p.timer) clearTimeout(p.timer)
      p.reject(error)
    }
  }

  get size(): number { return this.pending.size }
}
