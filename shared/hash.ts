/**
 * Fast non-cryptographic 64-bit hashing (two 32-bit lanes), rendered as 16 hex chars.
 *
 * The per-word step is MurmurHash3's (multiply, rotate, multiply) feeding two lanes
 * that update differently, and the finalizer is MurmurHash3 x86's (cross-add the lanes,
 * fmix32 both, cross-add again). Good distribution and avalanche for content keys; not
 * collision resistant against an adversary, so never use it for security.
 *
 * Works on plain ES2023: no Buffer, no crypto, no TextEncoder.
 */

const C1 = 0xcc9e2d51
const C2 = 0x1b873593
const P2 = 0x9e3779b1 // golden ratio, odd
const SEED1 = 0x5bd1e995
const SEED2 = 0x27d4eb2f

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1

function fmix32(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h
}

function hex8(h: number): string {
  return (h >>> 0).toString(16).padStart(8, '0')
}

function finish(h1: number, h2: number, len: number, tail: number, hasTail: boolean): string {
  if (hasTail) {
    let k = Math.imul(tail, C1)
    k = (k << 15) | (k >>> 17)
    k = Math.imul(k, C2)
    h1 ^= k
    h2 = (h2 + k) | 0
    h2 = Math.imul(h2 ^ (h2 >>> 15), P2)
  }
  h1 ^= len | 0
  h2 ^= Math.floor(len / 4294967296) | 0
  h1 = (h1 + h2) | 0
  h2 = (h2 + h1) | 0
  h1 = fmix32(h1)
  h2 = fmix32(h2)
  h1 = (h1 + h2) | 0
  h2 = (h2 + h1) | 0
  return hex8(h2) + hex8(h1)
}

/**
 * Hash of a string's UTF-16 code units: 16 lowercase hex characters.
 * Deterministic across runs, platforms and engines.
 */
export function hashString(s: string): string {
  let h1 = SEED1 ^ 0x3c6ef372 // different seed from hashBytes: separate domains
  let h2 = SEED2
  const n = s.length
  const end = n & ~1
  for (let i = 0; i < end; i += 2) {
    let k = s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16)
    k = Math.imul(k, C1)
    k = (k << 15) | (k >>> 17)
    k = Math.imul(k, C2)
    h1 ^= k
    h1 = (h1 << 13) | (h1 >>> 19)
    h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0
    h2 = (h2 + k) | 0
    h2 = (h2 << 17) | (h2 >>> 15)
    h2 = Math.imul(h2, P2)
  }
  const hasTail = end < n
  return finish(h1, h2, n, hasTail ? s.charCodeAt(end) : 0, hasTail)
}

/**
 * Hash of raw bytes: 16 lowercase hex characters. Reads aligned data as little-endian
 * 32-bit words (one tight loop); unaligned views give the same result, just slower.
 */
export function hashBytes(b: Uint8Array): string {
  let h1 = SEED1
  let h2 = SEED2
  const n = b.byteLength
  const words = n >>> 2
  if (LITTLE_ENDIAN && (b.byteOffset & 3) === 0) {
    const w = new Uint32Array(b.buffer, b.byteOffset, words)
    for (let i = 0; i < words; i++) {
      let k = w[i]!
      k = Math.imul(k, C1)
      k = (k << 15) | (k >>> 17)
      k = Math.imul(k, C2)
      h1 ^= k
      h1 = (h1 << 13) | (h1 >>> 19)
      h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0
      h2 = (h2 + k) | 0
      h2 = (h2 << 17) | (h2 >>> 15)
      h2 = Math.imul(h2, P2)
    }
  } else {
    for (let i = 0, p = 0; i < words; i++, p += 4) {
      let k = b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)
      k = Math.imul(k, C1)
      k = (k << 15) | (k >>> 17)
      k = Math.imul(k, C2)
      h1 ^= k
      h1 = (h1 << 13) | (h1 >>> 19)
      h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0
      h2 = (h2 + k) | 0
      h2 = (h2 << 17) | (h2 >>> 15)
      h2 = Math.imul(h2, P2)
    }
  }
  const rem = n & 3
  let tail = 0
  if (rem > 0) {
    const p = words << 2
    tail = b[p]!
    if (rem > 1) tail |= b[p + 1]! << 8
    if (rem > 2) tail |= b[p + 2]! << 16
    tail |= 1 << (rem * 8) // length marker inside the tail word
  }
  return finish(h1, h2, n, tail, rem > 0)
}
