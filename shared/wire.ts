/**
 * Frames: how messages travel. Every hop batches: messages queued during one turn of
 * the event loop go out together as one msgpack frame when the turn ends (never on a
 * timer, so a lone message leaves at once). Binary payloads over LIMITS.chunkBytes are
 * split into parts so that no frame grows past a few megabytes and big values stream.
 *
 * A big binary `data` field (LIMITS.attachBytes or more) does not go inside the msgpack
 * frame: it travels beside it as a binary attachment (`packFrame`; a WebSocket message of
 * its own, see socket-parser.ts), so the sender copies it into no frame and the
 * coordinator forwards the part it received as it is. In the frame its `data` is the
 * attachment's index; `decodeFrame` puts the bytes back before anything is validated.
 */
import { Packr } from 'msgpackr'
import { LIMITS } from './protocol.js'
export { ownBytes } from './bytes.js'
import { TabgridError, TimeoutError, TooLargeError, type WireError, fromWireError } from './errors.js'

const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, variableMapSize: true })

/** Encodes an array of messages into one frame, every binary field inside it. */
export function encodeFrame(messages: readonly object[]): Uint8Array {
  return packr.pack(messages)
}

/** A frame and the binary attachments its messages point to (by index, in their `data`). */
export interface PackedFrame {
  frame: Uint8Array
  attachments: Uint8Array[]
}

/**
 * Encodes messages into a frame, moving each binary `data` of LIMITS.attachBytes or more
 * out as an attachment (the messages themselves are not changed).
 */
export function packFrame(messages: readonly object[]): PackedFrame {
  let attachments: Uint8Array[] | undefined
  let out: object[] | undefined
  for (let i = 0; i < messages.length; i++) {
    const data = (messages[i] as { data?: unknown }).data
    if (!(data instanceof Uint8Array) || data.byteLength < LIMITS.attachBytes) continue
    out ??= messages.slice()
    attachments ??= []
    out[i] = { ...messages[i], data: attachments.length }
    attachments.push(data)
  }
  return { frame: packr.pack(out ?? messages), attachments: attachments ?? [] }
}

const asBytes = (x: unknown): Uint8Array | undefined => x instanceof Uint8Array ? x : x instanceof ArrayBuffer ? new Uint8Array(x) : undefined

/**
 * Decodes a frame and puts its attachments back into the messages that point to them;
 * throws a plain Error on anything that is not a msgpack array, TooLargeError past the
 * limits. A message whose `data` points to no attachment keeps the number (validation
 * then refuses that message alone).
 */
export function decodeFrame(frame: unknown, attachments: readonly unknown[] = []): unknown[] {
  const bytes = asBytes(frame)
  if (!bytes) throw new Error('a frame must be binary')
  if (bytes.byteLength > LIMITS.frameBytes) throw new TooLargeError(`frame of ${bytes.byteLength} bytes is over the ${LIMITS.frameBytes} byte limit`)
  if (attachments.length > LIMITS.attachmentsPerFrame) throw new TooLargeError(`frame has ${attachments.length} attachments, over the limit of ${LIMITS.attachmentsPerFrame}`)
  const atts: Uint8Array[] = []
  for (const a of attachments) {
    const b = asBytes(a)
    if (!b) throw new Error('a frame attachment must be binary')
    if (b.byteLength > LIMITS.chunkBytes) throw new TooLargeError(`frame attachment of ${b.byteLength} bytes is over the ${LIMITS.chunkBytes} byte limit`)
    atts.push(b)
  }
  let out: unknown
  try { out = packr.unpack(bytes) } catch (err) { throw new Error(`undecodable frame: ${(err as Error).message}`) }
  if (!Array.isArray(out)) throw new Error('a frame must hold an array of messages')
  if (out.length > LIMITS.messagesPerFrame) throw new TooLargeError(`frame holds ${out.length} messages, over the limit of ${LIMITS.messagesPerFrame}`)
  if (atts.length) {
    for (const m of out) {
      if (typeof m !== 'object' || m === null) continue
      const i = (m as { data?: unknown }).data
      if (typeof i === 'number' && Number.isInteger(i) && i >= 0 && i < atts.length) (m as { data: unknown }).data = atts[i]
    }
  }
  return out
}

/** Anything with a binary `data` field may be split into parts. */
interface WithData { data: Uint8Array; part?: number | undefined; parts?: number | undefined; total?: number | undefined; stream?: number | undefined }

/**
 * Splits a message whose `data` is over the chunk size into parts (same header,
 * `part`/`parts`/`total`). Every part but the last is exactly LIMITS.chunkBytes long;
 * the parts are views of `data`, not copies.
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
 * Sends bytes that another thread is still filling in (a StreamingBytes of
 * value-store.ts), part by part as `Atomics.load(ready, 0)` passes each part's end: the
 * parts are views of `bytes`, shaped as splitParts makes them. Rejects when `ready` stops
 * growing for `stallMs` or `alive()` turns false (the thread filling it died), so a
 * stream never hangs.
 */
export async function streamParts(
  s: { bytes: Uint8Array; ready: Int32Array },
  send: (part: { data: Uint8Array; part: number; parts: number; total: number }) => void,
  alive: () => boolean = () => true,
  stallMs = 30_000,
): Promise<void> {
  const total = s.bytes.byteLength
  const chunk = LIMITS.chunkBytes
  const parts = Math.ceil(total / chunk)
  const waitAsync = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number, ms: number): { async: boolean; value: Promise<string> | string } }).waitAsync
  let next = 0
  let since = Date.now()
  while (next < parts) {
    const ready = Atomics.load(s.ready, 0)
    let sent = false
    while (next < parts && Math.min(total, (next + 1) * chunk) <= ready) {
      send({ data: s.bytes.subarray(next * chunk, Math.min(total, (next + 1) * chunk)), part: next, parts, total })
      next++
      sent = true
    }
    if (next >= parts) return
    if (sent) since = Date.now()
    else if (!alive() || Date.now() - since > stallMs) throw new Error(`the value stopped arriving after ${next} of ${parts} parts`)
    const w = waitAsync(s.ready, 0, ready, 1000)
    if (w.async) await w.value
  }
}

interface Joining {
  total: number
  parts: number
  stream: number | undefined
  /** parts that arrived before `whole` was made */
  got: (Uint8Array | undefined)[]
  /** which parts arrived */
  seen: Uint8Array
  left: number
  /** bytes of the parts that arrived */
  bytes: number
  /** the whole payload, made once half of it arrived; parts are copied in as they land */
  whole: Uint8Array | undefined
}

/**
 * The whole of a payload is allocated once this share of it has arrived: a peer must
 * send half of what it announces before the rest is reserved, and the copy of the first
 * half happens while the second streams in (not all at the end, when the value is awaited).
 */
const ALLOCATE_AT = 0.5

/**
 * Joins parts back into whole payloads. `add` returns the whole bytes once every part has
 * arrived, else undefined. Parts may come in any order. An announced `total` reserves
 * nothing: the parts are kept as they arrive, and the whole is allocated only once half
 * of it has arrived (then the parts so far are copied in, and later ones as they land),
 * so memory held is at most twice what the peer actually sent. A total over
 * LIMITS.valueBytes throws TooLargeError; parts out of shape (a size that does not fit,
 * a duplicate, a total or count that disagrees with the parts before) throw
 * TabgridError('bad-message'), and what was half joined is forgotten. A part of another
 * `stream` (the coordinator relays from another holder) replaces what the old one left.
 * After one error, the other parts of that payload (same stream) are ignored, up to its
 * last one: the sender hears of the error once, not once per part.
 * `drop` forgets one half-joined payload, `clear` all (the connection closed).
 */
export class PartJoiner {
  private pending = new Map<string, Joining>()
  private held = 0
  /** payloads refused part way, by id: their stream (their later parts are ignored) */
  private refused = new Map<string, number | undefined>()
  constructor(private readonly maxPending = 256) {}

  add(id: string, msg: WithData): Uint8Array | undefined {
    const parts = msg.parts ?? 1
    if (parts <= 1) return msg.data
    const part = msg.part ?? -1
    if (this.refused.size !== 0 && this.refused.has(id)) {
      if (this.refused.get(id) === msg.stream) {
        if (part >= parts - 1) this.refused.delete(id)
        return undefined
      }
      this.refused.delete(id) // another stream: a new start
    }
    try {
      return this.join(id, msg, part, parts)
    } catch (err) {
      this.drop(id)
      if (part < parts - 1) {
        if (this.refused.size >= 64) this.refused.delete(this.refused.keys().next().value!)
        this.refused.set(id, msg.stream)
      }
      throw err
    }
  }

  private join(id: string, msg: WithData, part: number, parts: number): Uint8Array | undefined {
    const total = msg.total ?? -1
    if (!Number.isInteger(total) || total < 0 || !Number.isInteger(part) || part < 0 || part >= parts) {
      throw new TabgridError('bad-message', `bad part ${part}/${parts} of ${id}`)
    }
    if (total > LIMITS.valueBytes) {
      throw new TooLargeError(`${id}: a value of ${total} bytes is over the limit of ${LIMITS.valueBytes} bytes`)
    }
    const chunk = LIMITS.chunkBytes
    if (parts !== Math.ceil(total / chunk)) {
      throw new TabgridError('bad-message', `${id}: ${parts} parts cannot make ${total} bytes in parts of ${chunk}`)
    }
    let p = this.pending.get(id)
    if (p !== undefined && p.stream !== msg.stream) { this.drop(id); p = undefined }
    if (p === undefined) {
      if (this.pending.size >= this.maxPending) throw new TooLargeError(`too many values arriving in parts at once (${this.maxPending})`)
      p = { total, parts, stream: msg.stream, got: [], seen: new Uint8Array(parts), left: parts, bytes: 0, whole: undefined }
      this.pending.set(id, p)
    } else if (p.total !== total || p.parts !== parts) {
      throw new TabgridError('bad-message', `${id}: part ${part} says ${total} bytes in ${parts} parts, the parts before said ${p.total} in ${p.parts}`)
    }
    const expected = part === parts - 1 ? total - part * chunk : chunk
    if (p.seen[part] || msg.data.byteLength !== expected) {
      throw new TabgridError('bad-message', p.seen[part] ? `${id}: part ${part} arrived twice` : `${id}: part ${part} of ${parts} has ${msg.data.byteLength} bytes, not ${expected}`)
    }
    p.seen[part] = 1
    p.bytes += expected
    if (p.whole !== undefined) p.whole.set(msg.data, part * chunk)
    else {
      p.got[part] = msg.data
      this.held += expected
      if (p.bytes >= total * ALLOCATE_AT) {
        const whole = new Uint8Array(total)
        p.got.forEach((b, i) => { if (b !== undefined) whole.set(b, i * chunk) })
        p.got = []
        p.whole = whole
        this.held += total - p.bytes
      }
    }
    if (--p.left > 0) return undefined
    const whole = p.whole!
    this.drop(id)
    return whole
  }

  drop(id: string): void {
    const p = this.pending.get(id)
    if (p === undefined) return
    this.pending.delete(id)
    this.held -= p.whole !== undefined ? p.total : p.bytes
  }

  clear(): void {
    this.pending.clear()
    this.refused.clear()
    this.held = 0
  }

  /** payloads half joined */
  get size(): number { return this.pending.size }
  /** bytes of the parts they hold (what is allocated for them) */
  get bytes(): number { return this.held }
}

/** Messages whose `data` may travel in parts (the protocol gives them part fields). */
const SPLITTABLE = new Set(['data', 'put', 'scatter'])

const schedule: (fn: () => void) => void = typeof queueMicrotask === 'function' ? queueMicrotask : fn => { void Promise.resolve().then(fn) }

/**
 * Queues messages for one peer and sends them as frames at the end of the current turn.
 * Messages with big `data` are split (unless `split` is false: in memory, a whole value
 * costs nothing to hand over); a frame is cut when it reaches about a chunk's size or
 * LIMITS.attachmentsPerFrame attachments, so a 128 MB value leaves as a stream of ~1 MB
 * frames.
 */
export class Outbox<M extends object> {
  private queue: M[] = []
  private bytes = 0
  private attachments = 0
  private scheduled = false
  private closed = false

  /** `send` gets the messages of one frame (to encode and emit, or to hand over in memory). */
  constructor(private readonly send: (messages: M[]) => void, private readonly split = true) {}

  push(msg: M): void {
    if (this.closed) return
    const data = (msg as Partial<WithData>).data
    if (this.split && data instanceof Uint8Array && data.byteLength > LIMITS.chunkBytes && SPLITTABLE.has((msg as { type?: string }).type ?? '')) {
      for (const part of splitParts(msg as M & WithData)) this.pushOne(part)
    } else this.pushOne(msg)
  }

  private pushOne(msg: M): void {
    this.queue.push(msg)
    const data = (msg as Partial<WithData>).data
    if (data instanceof Uint8Array) {
      this.bytes += data.byteLength + 64
      if (data.byteLength >= LIMITS.attachBytes) this.attachments++
    } else this.bytes += 64
    // a task's arguments (an assign) are bytes too; the real size is measured when the frame is packed (frames.ts)
    const args = (msg as { args?: unknown }).args
    if (args instanceof Uint8Array) this.bytes += args.byteLength
    if (this.bytes >= LIMITS.chunkBytes || this.attachments >= LIMITS.attachmentsPerFrame) this.flush()
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
    this.attachments = 0
    if (!this.closed) this.send(batch)
  }

  /** Drops what is queued and refuses more. */
  close(): void { this.closed = true; this.queue = []; this.bytes = 0; this.attachments = 0 }
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
