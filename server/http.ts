/**
 * The coordinator's edges: an HTTP server (pages, /tabgrid-client.js, /health, /metrics)
 * and a socket.io server whose sockets become Connections of the core (coordinator.ts).
 */
import { createServer, type IncomingMessage, type ServerResponse, type Server as HttpServer } from 'node:http'
import { readFile, stat } from 'node:fs/promises'
import { extname, join, normalize, resolve, dirname, relative, isAbsolute } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { AddressInfo } from 'node:net'
import { Server as IOServer, type Socket } from 'socket.io'
import { Coordinator, type CoordinatorOptions, type Connection } from '../core/coordinator.js'
import { attachDashboard } from './dashboard.js'
import { coordinatorMetrics } from './metrics.js'
import { LIMITS, type FrameEvents, type InboundFrameEvents, type SocketData } from '../shared/protocol.js'
import { Outbox, packFrame, decodeFrame } from '../shared/wire.js'
import { frameParser } from '../shared/socket-parser.js'

export interface StartOptions extends CoordinatorOptions {
  /** Default 8786; 0 picks a free port. */
  port?: number
  /** Default 127.0.0.1. */
  host?: string
  /** Folder with the built pages (vite). Default: dist/web next to this package. */
  webRoot?: string
  /** ms between dashboard snapshots. Default 500. */
  dashboardMs?: number
}

export interface RunningCoordinator {
  coordinator: Coordinator
  /** the socket.io server (for tests and embedding) */
  io: IOServer<InboundFrameEvents, FrameEvents, Record<string, never>, SocketData>
  /** http://host:port */
  url: string
  port: number
  workerPageUrl: string
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
  const coordinator = new Coordinator(options)
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
    }
    await serveFile(res, webRoot, page, headers)
  }

  const io = new IOServer<InboundFrameEvents, FrameEvents, Record<string, never>, SocketData>(http, {
    maxHttpBufferSize: LIMITS.frameBytes + (1 << 16),
    // one WebSocket message per frame, big data beside it uncopied (shared/socket-parser.ts)
    parser: frameParser,
    transports: ['websocket', 'polling'],
    pingInterval: 5_000,
    pingTimeout: 10_000,
    cors: { origin: true },
  })

  io.use((socket, next) => {
    const verdict = coordinator.authorize(socket.handshake.auth)
    if (verdict.ok) {
      socket.data.hello = verdict.hello
      next()
    } else {
      coordinator.metrics.badMessages++
      const role = (socket.handshake.auth as { role?: unknown } | undefined)?.role
      log(`refused a ${typeof role === 'string' ? role.slice(0, 20) : 'connection'} from ${socket.handshake.address}: ${verdict.message}`, 'warn')
      next(Object.assign(new Error(verdict.message), { data: { code: verdict.code } }))
    }
  })

  io.on('connection', (socket: Socket<InboundFrameEvents, FrameEvents, Record<string, never>, SocketData>) => {
    const outbox = new Outbox<object>(msgs => {
      const { frame, attachments } = packFrame(msgs)
      socket.emit('frame', frame, ...attachments)
    })
    const conn: Connection = {
      id: socket.id,
      send: msg => outbox.push(msg),
      close: () => { outbox.flush(); setImmediate(() => socket.disconnect(true)) },
    }
    const hello = socket.data.hello as Parameters<Coordinator['accept']>[1]
    const peerId = coordinator.accept(conn, hello)
    if (hello.role === 'client') {
      const name = hello.name ?? peerId
      log(`client ${name}${name === peerId ? '' : ` (${peerId})`} connected from ${socket.handshake.address}${hello.resume === peerId ? ' (resumed)' : ''}`)
    }
    // Frames are read in a catch-all listener, which socket.io calls as the packet
    // arrives: `socket.on(event)` listeners run a tick later and only if the socket is
    // still connected, so a frame a peer sent just before closing would be dropped.
    socket.onAny((event: string, frame: unknown, ...attachments: unknown[]) => {
      if (event !== 'frame') {
        coordinator.refuse(peerId, { code: 'bad-message', message: `unknown event "${String(event).slice(0, 40)}": send frames only` })
        return
      }
      let msgs: unknown[]
      try { msgs = decodeFrame(frame, attachments) } catch (err) {
        coordinator.refuse(peerId, { code: 'bad-message', message: (err as Error).message })
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
  })
  const port = (http.address() as AddressInfo).port
  const shownHost = host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host
  const url = `http://${shownHost}:${port}`
  let closing: Promise<void> | undefined
  return {
    coordinator, io, url, port,
    workerPageUrl: `${url}/worker`,
    dashboardUrl: `${url}/`,
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

/**
 * The volunteer page's policy. `connect-src 'self'` lets tasks reach this coordinator
 * and nothing else (CSP 3's 'self' also matches ws:/wss: to this host and port, which
 * socket.io uses); 'unsafe-eval' because task functions travel as source and are
 * compiled with `new Function`; `blob:` for uploaded modules, imported from Blob URLs.
 */
export const WORKER_CSP = [
  "default-src 'self'",
  "script-src 'self' 'unsafe-eval' blob:",
  "worker-src 'self' blob:",
  "connect-src 'self'",
  "img-src 'self' data:",
  "style-src 'self' 'unsafe-inline'",
  "object-src 'none'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
  "form-action 'none'",
].join('; ')

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
