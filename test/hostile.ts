/**
 * Scripted hostile peers for the attack tests: raw socket.io connections speaking the
 * wire protocol themselves (msgpack frames of shared/protocol.ts messages), with no
 * tabgrid client or runtime in between, so they can say anything a real attacker could.
 */
import { io as connect, type Socket } from 'socket.io-client'
import { frameParser } from '../shared/socket-parser.js'
import { decodeFrame, packFrame } from '../shared/wire.js'
import { until } from './grid.js'

export type Msg = { type: string; [k: string]: unknown }

export interface RawPeer {
  socket: Socket
  /** every message received, in order */
  received: Msg[]
  /** messages of one type received so far */
  of(type: string): Msg[]
  /** `error` messages, as 'code: message' */
  errors(): string[]
  send(...msgs: object[]): void
  /** polls until a message matching `pred` arrived; returns it */
  waitFor(pred: (m: Msg) => boolean, what: string, timeoutMs?: number): Promise<Msg>
  /** called for each message as it arrives (after it is recorded) */
  onMessage: (m: Msg) => void
  closed(): boolean
  close(): void
  /** stops reading from the socket (TCP backpressure reaches the coordinator) */
  stopReading(): void
}

export interface RawOptions {
  /** connect from this local address (127.0.0.N: another volunteer) */
  localAddress?: string
  /** the Origin header a browser page would send */
  origin?: string
  /** more request headers (X-Forwarded-For, as a reverse proxy adds it) */
  headers?: Record<string, string>
}

/** Opens a raw connection; resolves once connected, rejects with the coordinator's refusal. */
export async function rawPeer(url: string, auth: Record<string, unknown>, opts: RawOptions = {}): Promise<RawPeer> {
  const socket = connect(url, {
    transports: ['websocket'], auth, reconnection: false, forceNew: true, parser: frameParser,
    ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
    ...(opts.origin || opts.headers ? { extraHeaders: { ...opts.headers, ...(opts.origin ? { origin: opts.origin } : {}) } } : {}),
  } as Parameters<typeof connect>[1])
  let closed = false
  const peer: RawPeer = {
    socket,
    received: [],
    of: type => peer.received.filter(m => m.type === type),
    errors: () => peer.of('error').map(m => { const e = m.error as { code: string; message: string }; return `${e.code}: ${e.message}` }),
    send: (...msgs) => { const { frame, attachments } = packFrame(msgs); socket.emit('frame', frame, ...attachments) },
    waitFor: (pred, what, timeoutMs = 15_000) => until(() => peer.received.find(pred), what, timeoutMs) as Promise<Msg>,
    onMessage: () => {},
    closed: () => closed,
    close: () => { socket.close() },
    stopReading: () => {
      const ws = (socket.io.engine as unknown as { transport: { ws?: { pause?: () => void; _socket?: { pause(): void } } } }).transport.ws
      if (ws?.pause) ws.pause()
      else ws?._socket?.pause()
    },
  }
  socket.on('frame', (f: Uint8Array, ...attachments: Uint8Array[]) => {
    for (const m of decodeFrame(f, attachments) as Msg[]) {
      peer.received.push(m)
      try { peer.onMessage(m) } catch (err) { console.error('hostile peer handler failed:', err) }
    }
  })
  socket.on('disconnect', () => { closed = true })
  await new Promise<void>((resolve, reject) => {
    socket.on('connect', () => resolve())
    socket.on('connect_error', err => { socket.close(); reject(err) })
  })
  return peer
}

/** The worker hello a raw peer sends. */
export function workerHello(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { role: 'worker', kind: 'node', slots: 1, name, ...extra }
}

