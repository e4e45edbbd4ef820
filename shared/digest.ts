/**
 * SHA-256 digests of encoded values, and the random secrets and ids the coordinator
 * hands out. @noble/hashes (audited, dependency-free) rather than Web Crypto: Web
 * Crypto's digest is asynchronous and one-shot, and it is missing altogether where a
 * worker tab is not a secure context (plain http on a LAN address); the coordinator
 * checks values it relays part by part, which needs an incremental hash. The
 * coordinator's Node edge passes node:crypto's native hash instead (`Digester`).
 */
import { sha256 } from '@noble/hashes/sha2.js'
import { bytesToHex, randomBytes } from '@noble/hashes/utils.js'

/** An incremental hash: feed parts in order, then read the hex digest once. */
export interface Digester {
  update(part: Uint8Array): void
  /** lowercase hex */
  digest(): string
}

/** Makes a fresh incremental SHA-256. */
export type DigesterFactory = () => Digester

/**
 * SHA-256 of `bytes`, 64 lowercase hex characters.
 *
 * @example
 * sha256Hex(new TextEncoder().encode('abc')) // 'ba7816bf…f20015ad'
 */
export function sha256Hex(bytes: Uint8Array): string {
  return bytesToHex(sha256(bytes))
}

/** The portable incremental SHA-256 (browsers, and Node where nothing faster is passed). */
export const sha256Digester: DigesterFactory = () => {
  const h = sha256.create()
  return {
    update: part => { h.update(part) },
    digest: () => bytesToHex(h.digest()),
  }
}

/**
 * A random secret of `bytes` bytes (default 24: 192 bits) as lowercase hex, from the
 * platform's cryptographic random source.
 */
export function randomSecret(bytes = 24): string {
  return bytesToHex(randomBytes(bytes))
}

/** A random public id: `prefix-` and 12 hex digits (not guessable, not a secret either). */
export function randomId(prefix: string): string {
  return `${prefix}-${bytesToHex(randomBytes(6))}`
}
