/**
 * The socket.io parser both ends use (`parser` option of the socket.io Server and of
 * `io()`): socket.io's own, except for the one event this protocol sends, `frame`.
 *
 * Why: socket.io's parser sends an event with binary arguments as a text packet naming
 * placeholders plus one WebSocket message per binary (`451-["frame",{"_placeholder":
 * true,"num":0}]`, then the bytes): every frame cost two messages, and a frame has
 * nothing but binary. Here a `frame` event with no attachments is ONE binary WebSocket
 * message, its bytes as they are; with n attachments (big `data` fields, wire.ts
 * `packFrame`) it is a text message `F<n>` and then n + 1 binary messages (the frame,
 * then the attachments), none of them copied or re-encoded. Every other packet (connect,
 * disconnect, errors, other events) is socket.io's text encoding, unchanged.
 * socket.io-msgpack-parser would also make one message per event, but by msgpack-encoding
 * the whole packet: a copy of every byte of every frame, on every hop.
 *
 * Binary socket.io events (`5…`/`6…`) are not part of this protocol: the decoder
 * refuses them, and socket.io closes a connection whose decoder throws.
 */
import { Decoder as SocketIoDecoder, Encoder as SocketIoEncoder, PacketType, type Packet } from 'socket.io-parser'
import { LIMITS } from './protocol.js'

const FRAME = 'frame'

function isBinary(x: unknown): x is Uint8Array | ArrayBuffer {
  return x instanceof Uint8Array || x instanceof ArrayBuffer
}

export class Encoder extends SocketIoEncoder {
  override encode(packet: Packet): (string | Uint8Array | ArrayBuffer)[] {
    const data = packet.data as unknown[] | undefined
    if (packet.type === PacketType.EVENT && packet.nsp === '/' && packet.id === undefined && Array.isArray(data) && data[0] === FRAME && data.length >= 2) {
      let binary = true
      for (let i = 1; i < data.length; i++) if (!isBinary(data[i])) { binary = false; break }
      if (binary) {
        const parts = data.slice(1) as (Uint8Array | ArrayBuffer)[]
        return parts.length === 1 ? parts : [`F${parts.length - 1}`, ...parts]
      }
    }
    return super.encode(packet) as (string | Uint8Array | ArrayBuffer)[]
  }
}

export class Decoder extends SocketIoDecoder {
  /** binary messages still to come for the frame being read (0: none) */
  private expecting = 0
  private got: (Uint8Array | ArrayBuffer)[] = []

  override add(chunk: unknown): void {
    if (typeof chunk === 'string') {
      if (this.expecting > 0) throw new Error('a text packet arrived in the middle of a frame')
      if (chunk.charCodeAt(0) === 70 /* F */) {
        const n = Number(chunk.slice(1))
        if (!Number.isInteger(n) || n < 1 || n > LIMITS.attachmentsPerFrame || chunk.length > 4) throw new Error(`bad frame header "${chunk.slice(0, 8)}"`)
        this.expecting = n + 1
        return
      }
      const type = chunk.charCodeAt(0) - 48
      if (type === PacketType.BINARY_EVENT || type === PacketType.BINARY_ACK) throw new Error('binary socket.io events are not used here: send frames')
      super.add(chunk)
      return
    }
    const bytes = chunk instanceof Uint8Array || chunk instanceof ArrayBuffer ? chunk : ArrayBuffer.isView(chunk) ? new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength) : undefined
    if (bytes === undefined) throw new Error('unknown packet type')
    if (this.expecting === 0) {
      this.emitReserved('decoded', { type: PacketType.EVENT, nsp: '/', data: [FRAME, bytes] })
      return
    }
    this.got.push(bytes)
    if (--this.expecting > 0) return
    const got = this.got
    this.got = []
    this.emitReserved('decoded', { type: PacketType.EVENT, nsp: '/', data: [FRAME, ...got] })
  }

  override destroy(): void {
    this.expecting = 0
    this.got = []
    super.destroy()
  }
}

/** What the `parser` options of socket.io's Server and of `io()` take. */
export const frameParser = { Encoder, Decoder }
