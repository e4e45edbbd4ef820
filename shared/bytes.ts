/**
 * The bytes of `b` in an ArrayBuffer of their own, copying only when `b` is a view on a
 * larger buffer. Posting a view to a thread clones its whole buffer (a frame, or Node's
 * Buffer pool), and a Node Buffer's own `slice()` is a view, not a copy — hence this.
 * A module of its own so the thread bundle can use it without the wire's dependencies.
 */
export function ownBytes(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer && b.constructor === Uint8Array ? b : new Uint8Array(b)
}

/** Most bytes one piece of an arena holds (what a value copied into it can keep alive). */
export const ARENA_CHUNK = 64 << 10
/** Values up to this size go into the arena; bigger ones get a buffer of their own. */
export const ARENA_ITEM = 1 << 10

/**
 * Copies many small values side by side into a few shared buffers, each value a view of
 * its own bytes there: a submit of 50,000 tiny tasks keeps one ArrayBuffer per ~64 KiB of
 * arguments instead of one (and its malloc'd store) per task, ~180 bytes of the
 * coordinator's memory per queued task. The price: a value kept long keeps the rest of its
 * piece alive, at most ARENA_CHUNK bytes. The views must never be transferred (that would
 * detach the whole piece); a receiver that transfers copies them first (ownBytes).
 *
 * @example
 * const arena = new ByteArena(sumOfSmallSizes)
 * const kept = values.map(v => arena.copy(v))
 */
export class ByteArena {
  private chunk: Uint8Array | null = null
  private used = 0

  /** `expected`: the bytes of small values about to be copied (pieces are cut to it, so nothing is wasted when it is right) */
  constructor(private expected: number) {}

  copy(b: Uint8Array): Uint8Array {
    const n = b.byteLength
    if (n > ARENA_ITEM || n === 0) return ownBytes(b)
    if (this.chunk === null || this.used + n > this.chunk.byteLength) {
      this.chunk = new Uint8Array(Math.min(ARENA_CHUNK, Math.max(this.expected, n)))
      this.used = 0
    }
    const out = this.chunk.subarray(this.used, this.used + n)
    out.set(b)
    this.used += n
    this.expected = Math.max(0, this.expected - n)
    return out
  }
}
