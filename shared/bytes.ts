/**
 * The bytes of `b` in an ArrayBuffer of their own, copying only when `b` is a view on a
 * larger buffer. Posting a view to a thread clones its whole buffer (a frame, or Node's
 * Buffer pool), and a Node Buffer's own `slice()` is a view, not a copy — hence this.
 * A module of its own so the thread bundle can use it without the wire's dependencies.
 */
export function ownBytes(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer && b.constructor === Uint8Array ? b : new Uint8Array(b)
}
