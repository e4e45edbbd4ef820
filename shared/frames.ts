/**
 * Frames bounded on every hop. Every socket a tabgrid process writes to (client →
 * coordinator, coordinator → client, worker and dashboard, worker → coordinator) encodes
 * its batches with `packFrames`, which measures what it is about to send by its real
 * encoded size, the bytes that go on the wire, and cuts it so that no frame is over
 * `LIMITS.frameBytes` (the size the receiving end accepts) nor holds more than
 * `LIMITS.messagesPerFrame` messages:
 *
 * - a batch that encodes over the cap is cut into as many frames as its size needs
 *   (by message count, order kept), and each piece is measured again;
 * - one message over the cap by itself is split along its list (`SPLIT_LISTS`: the tasks
 *   of a `submit`, the keys of a `gather`, `release`, `free`…) into messages of the same
 *   kind, consecutive, so the receiver does what one message would have made it do;
 * - a list longer than `LIMITS.keys` (what the receiver's schema accepts) is split too;
 * - a message that has no list to split and is still over the cap goes to `tooLarge`,
 *   which says what to send instead (a coordinator answers a request whose reply does
 *   not fit with a `too-large` error), or nothing.
 *
 * The common case costs one encoding: a batch that fits is packed once, as before.
 *
 * @example
 * ```ts
 * for (const { frame, attachments } of packFrames(messages)) socket.emit('frame', frame, ...attachments)
 * ```
 */
import { LIMITS } from './protocol.js'
import { TooLargeError } from './errors.js'
import { packFrame, type PackedFrame } from './wire.js'

/** Messages that carry one list the receiver handles item by item: splitting it changes nothing but the frame count. */
export const SPLIT_LISTS: Readonly<Record<string, 'tasks' | 'keys'>> = {
  submit: 'tasks',
  release: 'keys',
  cancel: 'keys',
  gather: 'keys',
  'fire-and-forget': 'keys',
  retry: 'keys',
  free: 'keys',
  released: 'keys',
}

export interface FrameOptions {
  /** largest encoded frame, in bytes. Default LIMITS.frameBytes */
  cap?: number
  /** most messages in one frame. Default LIMITS.messagesPerFrame */
  maxMessages?: number
  /** most items in one list (SPLIT_LISTS). Default LIMITS.keys */
  maxItems?: number
  /**
   * A message with nothing to split that encodes to `bytes`, over the cap by itself:
   * what to send in its place (it must fit), or undefined for nothing. Default: throws
   * a TooLargeError.
   */
  tooLarge?: (msg: object, bytes: number) => object | undefined
}

/**
 * Splits a message along its list (SPLIT_LISTS) into `pieces` messages of the same kind
 * and nearly equal item counts, in order; undefined when it has no list, or fewer than 2
 * items to split.
 *
 * @example
 * ```ts
 * splitMessage({ type: 'release', keys: ['a', 'b', 'c'] }, 2)
 * // [{ type: 'release', keys: ['a', 'b'] }, { type: 'release', keys: ['c'] }]
 * ```
 */
export function splitMessage(msg: object, pieces: number): object[] | undefined {
  const field = SPLIT_LISTS[(msg as { type?: unknown }).type as string]
  if (field === undefined) return undefined
  const list = (msg as Record<string, unknown>)[field]
  if (!Array.isArray(list) || list.length < 2) return undefined
  const n = Math.min(list.length, Math.max(2, Math.ceil(pieces)))
  const size = Math.ceil(list.length / n)
  const out: object[] = []
  for (let i = 0; i < list.length; i += size) out.push({ ...msg, [field]: list.slice(i, i + size) })
  return out
}

/**
 * Encodes messages into frames, each at most `cap` bytes as encoded and at most
 * `maxMessages` messages, in order (see the module's comment). Throws a TooLargeError
 * for a message that cannot be made to fit, unless `tooLarge` says what to send instead.
 *
 * @example
 * ```ts
 * const frames = packFrames(batch, { tooLarge: (m, n) => ({ type: 'error', error: { code: 'too-large', message: `${n} bytes` } }) })
 * ```
 */
export function packFrames(messages: readonly object[], opts: FrameOptions = {}): PackedFrame[] {
  const cap = opts.cap ?? LIMITS.frameBytes
  const maxMessages = opts.maxMessages ?? LIMITS.messagesPerFrame
  const maxItems = opts.maxItems ?? LIMITS.keys
  const out: PackedFrame[] = []
  const tooLarge = opts.tooLarge ?? ((msg: object, bytes: number) => {
    throw new TooLargeError(`a ${String((msg as { type?: unknown }).type)} message encodes to ${bytes} bytes, over the ${cap} byte frame limit, and cannot be split`)
  })

  const pack = (msgs: readonly object[], replaced: boolean): void => {
    if (msgs.length > maxMessages) {
      for (let i = 0; i < msgs.length; i += maxMessages) pack(msgs.slice(i, i + maxMessages), replaced)
      return
    }
    const f = packFrame(msgs)
    const bytes = f.frame.byteLength
    if (bytes <= cap) { out.push(f); return }
    // how many frames this needs, with room for uneven pieces (each is measured again)
    const pieces = Math.ceil(bytes / (cap * 0.75))
    if (msgs.length > 1) {
      const size = Math.ceil(msgs.length / Math.min(msgs.length, pieces))
      for (let i = 0; i < msgs.length; i += size) pack(msgs.slice(i, i + size), replaced)
      return
    }
    const msg = msgs[0]!
    const parts = splitMessage(msg, pieces)
    if (parts !== undefined) { for (const p of parts) pack([p], replaced); return }
    if (replaced) throw new TooLargeError(`the message sent instead of one over the frame limit is ${bytes} bytes, over the ${cap} byte limit itself`)
    const instead = tooLarge(msg, bytes)
    if (instead !== undefined) pack([instead], true)
  }

  // lists longer than the receiver accepts are split first, whatever their size
  let batch: object[] | undefined
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!
    const field = SPLIT_LISTS[(m as { type?: unknown }).type as string]
    const list = field === undefined ? undefined : (m as Record<string, unknown>)[field]
    if (Array.isArray(list) && list.length > maxItems) {
      batch ??= messages.slice(0, i)
      batch.push(...splitMessage(m, Math.ceil(list.length / maxItems))!)
    } else batch?.push(m)
  }
  pack(batch ?? messages, false)
  return out
}

/**
 * What a string costs in a frame, exactly: its UTF-8 bytes and msgpack's header (1 byte
 * up to 31 bytes, 2 up to 255, 3 up to 65,535, else 5). For sizing lists before they are
 * sent, as a status request's keys.
 *
 * @example
 * ```ts
 * encodedStringBytes('inc-3f2a')   // 9
 * ```
 */
export function encodedStringBytes(s: string): number {
  let n = s.length
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) continue
    if (c < 0x800) n += 1
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) { n += 2; i++ } // a surrogate pair: 4 bytes for 2 code units
    else n += 2
  }
  return n + (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5)
}
