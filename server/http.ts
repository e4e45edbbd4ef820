/**
 * The coordinator's edges: an HTTP server (pages, /tabgrid-client.js, /health, /metrics)
 * and a socket.io server whose sockets become Connections of the core (coordinator.ts).
 */
import { createServer, type IncomingMessage, type ServerResponse, type Server as HttpServer } from 'node:http'
import { createHash, hash, timingSafeEqual, type Hash } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { extname, join, normalize, resolve, dirname, relative, isAbsolute } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { AddressInfo } from 'node:net'
import { Server as IOServer, type Socket } from 'socket.io'
import { Coordinator, type CoordinatorOptions, type Connection } from '../core/coordinator.js'
import { attachDashboard } from './dashboard.js'
import { coordinatorMetrics } from './metrics.js'
import { LIMITS, type FrameEvents, type InboundFrameEvents, type SocketData } from '../shared/protocol.js'
import { Outbox, decodeFrame } from '../shared/wire.js'
import { packFrames } from '../shared/frames.js'
import { TooLargeError } from '../shared/errors.js'
import { frameParser } from '../shared/socket-parser.js'
import { randomSecret, type DigesterFactory } from '../shared/digest.js'
import { openJournal } from './journal.js'

export interface StartOptions extends Omit<CoordinatorOptions, 'journal'> {
  /**
   * A file (SQLite, server/journal.ts) where the coordinator journals what it must not
   * forget: started again on the same file after a crash, it replays it, and clients and
   * workers carry on. Default false (none); `tabgrid coordinator` journals to
   * ./tabgrid-journal.db unless told `--no-journal`.
   */
  journal?: string | false | undefined
  /**
   * How long (ms) the journal keeps task changes in its log before folding them into its
   * tasks table (server/journal.ts `foldMs`): a task that lives less costs no row of its
   * own; a restart replays about this much of the log. Default 5,000.
   */
  journalFoldMs?: number
  /** Default 8786; 0 picks a free port. */
  port?: number
  /** Default 127.0.0.1. */
  host?: string
  /** Folder with the built pages (vite). Default: dist/web next to this package. */
  webRoot?: string
  /** ms between dashboard snapshots. Default 500. */
  dashboardMs?: number
  /**
   * Origins of web apps that embed the client (`https://app.example.org`), besides the
   * coordinator's own; `'*'` lets any page connect. Socket.io connections from other
   * browser origins are refused. Node programs send no Origin and are not affected.
   */
  allowOrigin?: string[]
  /** failed token checks one address may make within `authWindowMs` before it is refused outright. Default 10 */
  maxAuthFailures?: number
  /** Default 60 s */
  authWindowMs?: number
  /**
   * The coordinator is behind a reverse proxy: take each connection's address from the
   * last entry of its `X-Forwarded-For` header (the one the proxy added; earlier entries
   * are whatever the peer sent) instead of the TCP peer, which is the proxy. It decides
   * who is one volunteer, quarantines and failed-auth limits. Only set it when every
   * connection comes through a proxy that appends that header, or any peer can pick its
   * address. Default false.
   */
  trustProxy?: boolean
}

export interface RunningCoordinator {
  coordinator: Coordinator
  /**
   * The token clients and the dashboard present: the one given, or one made for this run
   * when none was (pass `clientToken: ''` to run without, behind auth of your own).
   */
  clientToken: string | undefined
  /** the socket.io server (for tests and embedding) */
  io: IOServer<InboundFrameEvents, FrameEvents, Record<string, never>, SocketData>
  /** http://host:port */
  url: string
  port: number
  workerPageUrl: string
  /** the dashboard, with the client token in it (`/?token=…`), as Jupyter prints its URL */
  dashboardUrl: string
  close(): Promise<void>
}

const here = dirname(fileURLToPath(import.meta.url))
/** The package root, from src (server/) or from the build (dist/server/). */
export const packageRoot = resolve(here, here.includes(`${'dist'}`) ? '../..' : '..')

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.svg': 'image/svg+xml', '.png': 'image/png',
  '.map': 'application/json', '.ts': 'text/plain; charset=utf-8', '.ico': 'image/x-icon', '.woff2': 'font/woff2',
}

/** Starts a coordinator; resolves when it listens. */
export async function startCoordinator(options: StartOptions = {}): Promise<RunningCoordinator> {
  // safe by default: a grid started without a client token gets one
  const clientToken = options.clientToken === undefined ? randomSecret(16) : options.clientToken || undefined
  const journal = options.journal ? openJournal(options.journal, { ...(options.log ? { log: options.log } : {}), ...(options.journalFoldMs === undefined ? {} : { foldMs: options.journalFoldMs }) }) : undefined
  const coordinator = new Coordinator({ tokenEquals, digester: nodeDigester, batchTurns: true, ...options, clientToken, journal })
  const allowed = new Set(options.allowOrigin ?? [])
  const failures = new AuthFailures(options.maxAuthFailures ?? 10, options.authWindowMs ?? 60_000)
  const metrics = coordinatorMetrics(coordinator)
  const log = options.log ?? (() => {})
  const webRoot = options.webRoot ?? join(packageRoot, 'dist', 'web')
  const libRoot = join(packageRoot, 'dist', 'lib')

  const http: HttpServer = createServer((req, res) => {
    handleHttp(req, res).catch(err => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' })
      res.end(`internal error: ${(err as Error).message}`)
    })
  })

  async function handleHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x')
    const path = url.pathname
    if (path === '/health') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      res.end(JSON.stringify({ ok: true, ...coordinator.status() }))
      return
    }
    if (path === '/metrics') {
      const body = await metrics.text()
      res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' })
      res.end(body)
      return
    }
    if (path === '/tabgrid-client.js' || path === '/tabgrid-client.d.ts' || path.startsWith('/lib/')) {
      const file = path.startsWith('/lib/') ? path.slice('/lib/'.length) : path.slice(1)
      // any web app may import the library, from any origin (module scripts are fetched with CORS)
      await serveFile(res, libRoot, file, { 'access-control-allow-origin': '*' })
      return
    }
    if (path === '/worker/') {
      // the page's asset URLs are relative to /worker
      res.writeHead(308, { location: `/worker${url.search}` })
      res.end()
      return
    }
    if (/^\/examples\/[\w-]+\.html$/.test(path)) {
      // example web apps (examples/embed.html): plain pages that import /tabgrid-client.js
      await serveFile(res, join(packageRoot, 'examples'), path.slice('/examples/'.length), {})
      return
    }
    // pages: / (dashboard), /worker (volunteer page), and their assets
    const page = path === '/' ? 'index.html' : path === '/worker' ? 'worker.html' : path.slice(1)
    const headers: Record<string, string> = {}
    if (page === 'worker.html' || page.startsWith('assets/')) {
      // Tasks run only in Web Workers and may reach nothing but this coordinator. A Web
      // Worker gets its CSP from its own script's response, so assets carry it too.
      headers['content-security-policy'] = WORKER_CSP
    } else if (page.endsWith('.html')) {
      // the dashboard reaches only this coordinator, and no other site may frame it
      headers['content-security-policy'] = DASHBOARD_CSP
    }
    if (page.endsWith('.html')) {
      headers['x-frame-options'] = 'DENY'
      // its address may carry the client token: never send it on to another site
      headers['referrer-policy'] = 'no-referrer'
    }
    await serveFile(res, webRoot, page, headers)
  }

  const io = new IOServer<InboundFrameEvents, FrameEvents, Record<string, never>, SocketData>(http, {
    maxHttpBufferSize: LIMITS.frameBytes + (1 << 16),
    // one WebSocket message per frame, big data beside it uncopied (shared/socket-parser.ts)
    parser: frameParser,
    transports: ['websocket', 'polling'],
    // a ping every 45 s: at 5,000 workers one every 5 s was a fifth of an idle coordinator's
    // CPU, and one every 25 s (socket.io's default) still 2.5% of a core; a worker quiet with
    // tasks in hand loses them at its lease (15 s) whatever the pings say, so they only find
    // idle connections that died silently
    pingInterval: 45_000,
    // a client may block its event loop for seconds: map() returns a million futures at
    // once, 5-12 s of synchronous work on a loaded machine, which no slicing can split
    pingTimeout: 20_000,
    // browsers say where a page comes from: this coordinator's own pages, and the web apps allowed
    allowRequest: (req, cb) => {
      const origin = req.headers.origin
      if (origin === undefined || allowed.has('*') || allowed.has(origin) || sameOrigin(origin, req.headers.host)) cb(null, true)
      else {
        coordinator.metrics.badMessages++
        log(`refused a connection from ${req.socket.remoteAddress ?? '?'}: its origin ${origin.slice(0, 100)} may not connect (tabgrid coordinator --allow-origin)`, 'warn')
        cb(`the origin ${origin.slice(0, 100)} may not connect (tabgrid coordinator --allow-origin)`, false)
      }
    },
    cors: { origin: (origin, cb) => cb(null, origin === undefined || allowed.has('*') || allowed.has(origin)) },
  })

  const trustProxy = options.trustProxy === true
  io.use((socket, next) => {
    const address = peerAddress(socket.handshake, trustProxy)
    const now = Date.now()
    const locked = failures.lockedFor(address, now)
    const verdict = locked > 0
      ? { ok: false as const, code: 'auth' as const, message: `too many failed token checks from ${address}: try again in ${Math.ceil(locked / 1000)} s` }
      : coordinator.authorize(socket.handshake.auth, address)
    if (verdict.ok) {
      socket.data.hello = verdict.hello
      next()
      return
    }
    coordinator.metrics.badMessages++
    const role = (socket.handshake.auth as { role?: unknown } | undefined)?.role
    log(`refused a ${typeof role === 'string' ? role.slice(0, 20) : 'connection'} from ${address}: ${verdict.message}`, 'warn')
    next(Object.assign(new Error(verdict.message), { data: { code: verdict.code } }))
    if (verdict.code === 'auth') {
      if (locked === 0) failures.add(address, now)
      // one connection gets one try: the refusal goes out, then the connection is cut
      setTimeout(() => socket.conn.close(), 50)
    }
  })

  io.on('connection', (socket: Socket<InboundFrameEvents, FrameEvents, Record<string, never>, SocketData>) => {
    const outbox = new Outbox<object>(msgs => {
      const m = coordinator.metrics
      for (const { frame, attachments } of packFrames(msgs, { tooLarge: (msg, bytes) => tooLargeInstead(msg, bytes, log, m) })) {
        m.framesOut++
        if (frame.byteLength > m.largestFrameOut) m.largestFrameOut = frame.byteLength
        socket.emit('frame', frame, ...attachments)
      }
    })
    const engine = socket.conn as unknown as EngineSocket
    const ws = (): WsLike | undefined => engine.transport?.name === 'websocket' ? engine.transport.socket : undefined
    const buffered = (): number => {
      let n = ws()?.bufferedAmount ?? 0
      for (const p of engine.writeBuffer ?? []) n += typeof p.data === 'string' ? p.data.length : p.data?.byteLength ?? 0
      return n
    }
    const cap = options.outputCapBytes ?? 64 << 20
    const address = peerAddress(socket.handshake, trustProxy)
    const conn: Connection = {
      id: socket.id,
      address,
      send: msg => outbox.push(msg),
      close: reason => {
        outbox.flush()
        setImmediate(() => {
          const transport = ws()
          socket.disconnect(true)
          // a peer cut for reading nothing would never read the closing handshake either
          if (reason.startsWith('cut')) transport?.terminate?.()
        })
      },
      buffered,
      pause: () => ws()?.pause?.(),
      resume: () => ws()?.resume?.(),
    }
    const hello = socket.data.hello as Parameters<Coordinator['accept']>[1]
    const peerId = coordinator.accept(conn, hello)
    // what was queued for the peer went out: relays waiting for room may go on
    const onDrain = (): void => { if (buffered() <= cap) coordinator.drained(peerId) }
    engine.transport?.on('drain', onDrain)
    socket.conn.on('upgrade', () => engine.transport?.on('drain', onDrain))
    if (hello.role === 'client') {
      const name = hello.name ?? peerId
      log(`client ${name}${name === peerId ? '' : ` (${peerId})`} connected from ${address}${hello.resume !== undefined ? ' (resuming)' : ''}`)
    }
    // Frames are read in a catch-all listener, which socket.io calls as the packet
    // arrives: `socket.on(event)` listeners run a tick later and only if the socket is
    // still connected, so a frame a peer sent just before closing would be dropped.
    socket.onAny((event: string, frame: unknown, ...attachments: unknown[]) => {
      if (event !== 'frame') {
        coordinator.refuse(peerId, { code: 'bad-message', message: `unknown event "${String(event).slice(0, 40)}": send frames only` })
        return
      }
      const m = coordinator.metrics
      m.framesIn++
      const inBytes = (frame as { byteLength?: unknown } | undefined)?.byteLength
      if (typeof inBytes === 'number' && inBytes > m.largestFrameIn) m.largestFrameIn = inBytes
      let msgs: unknown[]
      try { msgs = decodeFrame(frame, attachments) } catch (err) {
        // too-large tells a client its frame was refused for its size (it then checks what it lost)
        coordinator.refuse(peerId, { code: err instanceof TooLargeError ? 'too-large' : 'bad-message', message: (err as Error).message })
        return
      }
      coordinator.receive(peerId, msgs)
    })
    socket.on('disconnect', reason => {
      outbox.close()
      coordinator.disconnected(peerId, reason)
    })
  })

  const dashboard = attachDashboard(coordinator, { intervalMs: options.dashboardMs ?? 500 })

  const host = options.host ?? '127.0.0.1'
  await new Promise<void>((resolveListen, reject) => {
    http.once('error', reject)
    http.listen(options.port ?? 8786, host, () => { http.off('error', reject); resolveListen() })
  }).catch((err: unknown) => {
    // the journal (and its lock) is let go with the coordinator that could not listen
    dashboard.stop()
    metrics.stop()
    coordinator.close()
    throw err
  })
  const port = (http.address() as AddressInfo).port
  const shownHost = host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host
  const url = `http://${shownHost}:${port}`
  let closing: Promise<void> | undefined
  return {
    coordinator, io, url, port, clientToken,
    workerPageUrl: `${url}/worker`,
    dashboardUrl: clientToken ? `${url}/?token=${encodeURIComponent(clientToken)}` : `${url}/`,
    close: () => closing ??= (async () => {
      dashboard.stop()
      metrics.stop()
      coordinator.close()
      await new Promise<void>(r => setTimeout(r, 20))
      // io.close() waits for every open connection: cut them first
      io.disconnectSockets(true)
      http.closeAllConnections?.()
      await new Promise<void>(r => io.close(() => r()))
    })(),
  }
}

/** A Content-Security-Policy: what both pages share (only this origin, never framed), plus `script` and `img` sources. */
function policy(script: string, img: string): string {
  return [
    "default-src 'self'", `script-src ${script}`, "worker-src 'self' blob:", "connect-src 'self'", `img-src ${img}`,
    "style-src 'self' 'unsafe-inline'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'", "form-action 'none'",
  ].join('; ')
}

/**
 * The volunteer page's policy. `connect-src 'self'` lets tasks reach this coordinator
 * and nothing else (CSP 3's 'self' also matches ws:/wss: to this host and port, which
 * socket.io uses); 'unsafe-eval' because task functions travel as source and are
 * compiled with `new Function`; `blob:` for uploaded modules, imported from Blob URLs.
 */
export const WORKER_CSP = policy("'self' 'unsafe-eval' blob:", "'self' data:")

/**
 * The dashboard's policy: it talks to this coordinator only, runs the Drive panel's code
 * (compiled with AsyncFunction: 'unsafe-eval'), and no other site may frame it.
 */
export const DASHBOARD_CSP = policy("'self' 'unsafe-eval'", "'self' data: blob:")

/** What of engine.io's socket the output cap reads (not in its public typings). */
interface WsLike { bufferedAmount?: number; pause?(): void; resume?(): void; terminate?(): void }
interface EngineSocket {
  transport?: { name: string; socket?: WsLike; on(event: 'drain', f: () => void): void }
  writeBuffer?: { data?: string | Uint8Array }[]
}

/** Whether a browser Origin is this coordinator's own (same host and port as the request). */
function sameOrigin(origin: string, host: string | undefined): boolean {
  if (!host) return false
  try { return new URL(origin).host === host } catch { return false }
}

/**
 * A connection's network address: the TCP peer's, or with `trustProxy` the last entry of
 * `X-Forwarded-For` (what the reverse proxy in front appended; the entries before it are
 * the peer's own word). Without the header it is the TCP peer's.
 *
 * @example
 * peerAddress({ address: '127.0.0.1', headers: { 'x-forwarded-for': '6.6.6.6, 203.0.113.7' } }, true) // '203.0.113.7'
 */
export function peerAddress(handshake: { address: string; headers: Record<string, string | string[] | undefined> }, trustProxy: boolean): string {
  if (!trustProxy) return handshake.address
  const h = handshake.headers['x-forwarded-for']
  const list = (Array.isArray(h) ? h.join(',') : h ?? '').split(',')
  const last = (list[list.length - 1] ?? '').trim()
  return last === '' || last.length > 64 ? handshake.address : last
}

/** Token checks in constant time: SHA-256 both (so lengths don't show), compare with timingSafeEqual. */
export function tokenEquals(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest()
  const b = createHash('sha256').update(expected).digest()
  return timingSafeEqual(a, b)
}

/**
 * node:crypto's native SHA-256, for the bytes the coordinator checks as it relays them.
 * Most values come in one part (every pushed result is hashed as it arrives): one part is
 * hashed at once by `crypto.hash`, without the incremental Hash object (twice as fast on
 * a small value, and nothing left for the garbage collector); a second part starts one.
 * A part is read by the next `update` or by `digest`, not before: parts are frames
 * received, never reused.
 */
const nodeDigester: DigesterFactory = () => {
  let first: Uint8Array | undefined
  let h: Hash | undefined
  return {
    update: part => {
      if (h) h.update(part)
      else if (first === undefined) first = part
      else h = createHash('sha256').update(first).update(part)
    },
    digest: () => h ? h.digest('hex') : hash('sha256', first ?? new Uint8Array(0), 'hex'),
  }
}

/** Failed token checks per address in a sliding window: past `max`, the address is refused until the window passes. */
class AuthFailures {
  private readonly byAddress = new Map<string, number[]>()
  constructor(private readonly max: number, private readonly windowMs: number) {}

  add(address: string, now: number): void {
    if (this.byAddress.size > 10_000) this.byAddress.clear()
    const list = (this.byAddress.get(address) ?? []).filter(t => now - t < this.windowMs)
    list.push(now)
    this.byAddress.set(address, list)
  }

  /** ms until the address may try again (0: it may now). */
  lockedFor(address: string, now: number): number {
    const list = this.byAddress.get(address)
    if (!list) return 0
    const recent = list.filter(t => now - t < this.windowMs)
    if (recent.length === 0) { this.byAddress.delete(address); return 0 }
    if (recent.length < this.max) return 0
    return Math.max(1, this.windowMs - (now - (recent[recent.length - this.max] as number)))
  }
}

async function serveFile(res: ServerResponse, root: string, rel: string, headers: Record<string, string>): Promise<void> {
  let name: string
  try { name = decodeURIComponent(rel) } catch {
    res.writeHead(400, { 'content-type': 'text/plain' })
    res.end('bad path')
    return
  }
  const file = normalize(join(root, name))
  const inside = relative(root, file)
  if (inside.startsWith('..') || isAbsolute(inside) || name.includes('\0')) {
    res.writeHead(403, { 'content-type': 'text/plain' })
    res.end('forbidden')
    return
  }
  try {
    const s = await stat(file)
    if (!s.isFile()) throw new Error('not a file')
  } catch {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' })
    res.end(rel.endsWith('.html') || rel.endsWith('.js')
      ? `not found: ${rel}\n(the pages are built by \`npm run build\`; \`npm start\` builds them first)`
      : `not found: ${rel}`)
    return
  }
  const body = await readFile(file)
  res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff', ...headers })
  res.end(body)
}

/**
 * What goes to a peer instead of a message that fits in no frame (packFrames could not
 * split it): a reply becomes a `too-large` error for that request, so the caller hears
 * why at once instead of waiting for its timeout; anything else is dropped, and said.
 */
function tooLargeInstead(msg: object, bytes: number, log: (line: string, level?: 'info' | 'warn' | 'error') => void, m: { tooLargeMessages: number }): object | undefined {
  m.tooLargeMessages++
  const type = String((msg as { type?: unknown }).type)
  if (type === 'reply') {
    const id = (msg as { id?: unknown }).id
    return { type: 'reply', id, ok: false, error: { code: 'too-large', message: `the answer is ${bytes} bytes encoded, over the ${LIMITS.frameBytes} byte frame limit: ask for less at a time` } }
  }
  log(`dropped a ${type.slice(0, 40)} message of ${bytes} bytes: over the ${LIMITS.frameBytes} byte frame limit and nothing in it to split`, 'error')
  return undefined
}
