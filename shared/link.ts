/**
 * A Link is one side of a connection to the coordinator, whatever carries it: a
 * socket.io socket (`connectLink`) or memory (`memoryLinkPair`, for `Client.local`).
 * Messages are queued and leave in one frame at the end of the turn.
 */
import { io, type Socket } from 'socket.io-client'
import type { FrameEvents, Hello, InboundFrameEvents } from './protocol.js'
import { AuthError } from './errors.js'
import { Outbox, decodeFrame } from './wire.js'
import { packFrames } from './frames.js'
import { frameParser } from './socket-parser.js'

export type LinkStatus =
  | { state: 'connected'; /** true after a reconnect */ again: boolean }
  | { state: 'disconnected'; reason: string }
  | { state: 'closed'; reason: string }

export interface Link<Out extends object, In extends object> {
  /** Queue a message; it leaves with the others of this turn. */
  send(msg: Out): void
  /** Send what is queued now (before a close, say). */
  flush(): void
  /** Messages from the peer, one frame at a time. */
  onMessages: (msgs: In[]) => void
  onStatus: (status: LinkStatus) => void
  /** A frame from the peer could not be read and was dropped (its messages are lost): the owner may check what it missed. Optional. */
  onDropped?: (reason: string) => void
  /** The hello sent on (re)connect; owners update `resume` after a welcome. */
  hello: Hello
  close(): void
  readonly connected: boolean
}

const IN_NODE = typeof (globalThis as { process?: { versions?: { node?: unknown } } }).process?.versions?.node === 'string'

export interface ConnectOptions {
  /** ms to wait for the first connection before failing. Default 10 s. */
  timeout?: number
  /** Reconnect after a lost connection (default true). */
  reconnect?: boolean
  /**
   * Let the process exit while the link is up (Node; ignored in browsers): the socket and
   * socket.io's timers are unref'd, so only what the link's owner holds keeps the process
   * alive. Default false.
   */
  unref?: boolean
  /** Node only: the local address to connect from */
  localAddress?: string
}

/**
 * Connects to a coordinator over socket.io (websocket only). Resolves once connected;
 * rejects with AuthError when the token is refused, or a plain Error when nothing answers.
 */
export function connectLink<Out extends object, In extends object>(url: string, hello: Hello, opts: ConnectOptions = {}): Promise<Link<Out, In>> {
  const socket: Socket<InboundFrameEvents, FrameEvents> = io(url, {
    transports: ['websocket'],
    // one WebSocket message per frame, big data beside it uncopied (socket-parser.ts)
    parser: frameParser,
    reconnection: opts.reconnect ?? true,
    reconnectionDelay: 200,
    reconnectionDelayMax: 2000,
    timeout: opts.timeout ?? 10_000,
    // Node only: in a browser socket.io-client would call unref() on timers that have none
    autoUnref: (opts.unref ?? false) && IN_NODE,
    auth: cb => cb(link.hello as unknown as Record<string, unknown>),
    ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
  })
  const outbox = new Outbox<Out>(msgs => {
    // no frame over what the coordinator accepts, whatever the batch (shared/frames.ts)
    for (const { frame, attachments } of packFrames(msgs, { tooLarge: dropTooLarge })) socket.emit('frame', frame, ...attachments)
  })
  let closed = false
  let everConnected = false
  const link: Link<Out, In> = makeLink(hello, outbox, () => socket.connected, () => {
    if (closed) return
    closed = true
    outbox.flush()
    outbox.close()
    socket.close()
    link.onStatus({ state: 'closed', reason: 'closed by this side' })
  })
  socket.on('frame', (frame: unknown, ...attachments: unknown[]) => {
    let msgs: unknown[]
    try { msgs = decodeFrame(frame, attachments) } catch (err) {
      console.error(`tabgrid: dropped a frame from the coordinator: ${(err as Error).message}`)
      link.onDropped?.((err as Error).message)
      return
    }
    link.onMessages(msgs as In[])
  })
  socket.on('disconnect', reason => {
    if (!closed) link.onStatus({ state: 'disconnected', reason })
  })
  return new Promise((resolve, reject) => {
    const fail = (err: Error & { data?: { code?: string } }): void => {
      if (err.data?.code === 'auth' || /token/i.test(err.message)) {
        closed = true
        socket.close()
        const e = new AuthError(err.message)
        if (everConnected) link.onStatus({ state: 'closed', reason: e.message })
        else reject(e)
        return
      }
      if (!everConnected && !(opts.reconnect ?? true)) { socket.close(); reject(new Error(`cannot reach the coordinator at ${url}: ${err.message}`)) }
    }
    socket.on('connect_error', fail)
    const firstTimeout = setTimeout(() => {
      if (!everConnected) { closed = true; socket.close(); reject(new Error(`cannot reach the coordinator at ${url} within ${opts.timeout ?? 10_000} ms`)) }
    }, opts.timeout ?? 10_000)
    socket.on('connect', () => {
      const again = everConnected
      everConnected = true
      clearTimeout(firstTimeout)
      if (!again) resolve(link)
      link.onStatus({ state: 'connected', again })
    })
  })
}

/** A message that fits in no frame and has nothing to split (its senders keep each one under the cap: this is a bug, said loudly). */
function dropTooLarge(msg: object, bytes: number): undefined {
  console.error(`tabgrid: dropped a ${String((msg as { type?: unknown }).type).slice(0, 40)} message of ${bytes} bytes: over the frame limit and nothing in it to split`)
  return undefined
}

/**
 * Two links joined in memory: what one side sends, the other receives at the end of
 * the turn, without encoding (values are already bytes). Used by `Client.local`.
 */
export function memoryLinkPair<A extends object, B extends object>(helloA: Hello, helloB: Hello): [Link<A, B>, Link<B, A>] {
  let closed = false
  const make = <O extends object, I extends object>(hello: Hello, deliver: (msgs: O[]) => void): Link<O, I> => {
    // in memory a whole value is handed over as it is: no parts to split and join
    const outbox = new Outbox<O>(msgs => deliver(msgs), false)
    return makeLink<O, I>(hello, outbox, () => !closed, () => {
      if (closed) return
      closed = true
      outbox.flush()
      a.onStatus({ state: 'closed', reason: 'closed' })
      b.onStatus({ state: 'closed', reason: 'closed' })
    })
  }
  const a: Link<A, B> = make<A, B>(helloA, msgs => b.onMessages(msgs))
  const b: Link<B, A> = make<B, A>(helloB, msgs => a.onMessages(msgs))
  return [a, b]
}

/** A link that queues into `outbox`; the carrier supplies `connected` and `close`. */
function makeLink<O extends object, I extends object>(hello: Hello, outbox: Outbox<O>, connected: () => boolean, close: () => void): Link<O, I> {
  return withEarlyBuffer<O, I>({
    hello,
    send: msg => outbox.push(msg),
    flush: () => outbox.flush(),
    onMessages: () => {},
    onStatus: () => {},
    close,
    get connected() { return connected() },
  })
}

/**
 * Messages can arrive before the link's owner has set `onMessages` (the welcome comes in
 * the same packet as the connect): keep them until a handler is set, then hand them over.
 */
function withEarlyBuffer<O extends object, I extends object>(link: Link<O, I>): Link<O, I> {
  let handler: ((msgs: I[]) => void) | undefined
  const early: I[][] = []
  Object.defineProperty(link, 'onMessages', {
    get: () => (msgs: I[]) => { if (handler) handler(msgs); else early.push(msgs) },
    set: (h: (msgs: I[]) => void) => {
      handler = h
      while (early.length) h(early.shift()!)
    },
  })
  return link
}
