/**
 * The coordinator's core: connections in, scheduler events out, commands back to
 * connections. It knows nothing of socket.io or HTTP (see http.ts), so `Client.local`
 * runs the very same core in memory. It keeps what the scheduler doesn't: task
 * arguments and function sources, scattered bytes until a worker has them, and the
 * relay of data between workers and to clients (workers never talk to each other).
 */
import { Scheduler } from './scheduler.js'
import type { AssignedTask, Command, SchedulerEvent, TaskSpec, WorkerKind } from './scheduler-types.js'
import {
  LIMITS, PROTOCOL_VERSION, clientMessage, hello as helloSchema, workerMessage, describeIssues,
  type Hello, type ClientMessage, type ToClientMessage, type WorkerMessage, type ToWorkerMessage, type ToDashboardMessage,
} from '../shared/protocol.js'
import { PartJoiner, ownBytes } from '../shared/wire.js'
import { toWireError, type WireError } from '../shared/errors.js'
import { withDefaults } from '../shared/defaults.js'
import { moduleSyntaxError } from '../shared/modules.js'
import { decodeValue } from '../shared/codec.js'
import { Datasets } from './datasets.js'

/** One connected peer, whatever carries it. `send` gets a batch of messages of one frame. */
export interface Connection {
  readonly id: string
  send(msg: object): void
  close(reason: string): void
}

/** What observers (the dashboard stream) hear: facts, after they happened. */
export type Observed =
  | { type: 'finished'; worker: string; key: string; attempt: number; ms: number; nbytes: number; at: number; /** the task's group (function name), when the coordinator knows it */ group?: string }
  | { type: 'erred'; worker: string; key: string; attempt: number; at: number; message: string }
  | { type: 'scheduled'; ms: number; events: number }

export interface CoordinatorOptions {
  clientToken?: string | undefined
  workerToken?: string | undefined
  /** ms a disconnected worker keeps its identity before it is declared gone. Default 5 s. */
  workerGraceMs?: number
  /** ms a disconnected client keeps its futures. Default 30 s. */
  clientGraceMs?: number
  /**
   * ms a worker with tasks may go without a word (a heartbeat or any message) before its
   * leases run out: its tasks go elsewhere and it gets no new ones until it speaks again.
   * Default 15 s.
   */
  leaseMs?: number
  /** send dependents ahead to the worker computing their inputs (see SchedulerOptions.sendAhead). Default true. */
  sendAhead?: boolean
  /**
   * ms a holder may take to start answering a fetch, or between two parts of its answer.
   * Past it the holder is taken to have lost the data: another holder is asked, or the
   * key is recomputed (or, for scattered data held nowhere else, lost). Default 15 s.
   */
  fetchTimeoutMs?: number
  /** malformed messages a connection may send before it is cut. Default 100. */
  maxBadMessages?: number
  /** check scheduler invariants after every event (tests) */
  validate?: boolean
  /** where the coordinator says what happens; `level` is 'info' when left out */
  log?: (line: string, level?: 'info' | 'warn' | 'error') => void
  now?: () => number
  /** the clock (ms) the scheduler's own time is measured with. Default performance.now */
  timer?: () => number
}

interface Peer {
  conn: Connection | undefined
  role: 'client' | 'worker' | 'dashboard'
  id: string
  name: string
  bad: number
  joiner: PartJoiner
  graceTimer: ReturnType<typeof setTimeout> | undefined
}
interface WorkerPeer extends Peer {
  role: 'worker'
  kind: WorkerKind
  slots: number
  fns: Set<string>
  memory: number
  spilled: number
  since: number
  /** what the worker last said about taking tasks */
  accepting: boolean
}
interface ClientPeer extends Peer {
  role: 'client'
  fns: Set<string>
}

interface StoredTask { fn: string; args: Uint8Array; redundancy: number; timeout: number | undefined; group: string }

/** A pending data relay: bytes asked of a holder, for a requester. */
interface Relay {
  key: string
  holder: string
  tried: Set<string>
  /** when it was asked, or last sent a part (coordinator clock) */
  at: number
  to: { kind: 'worker'; worker: string; id: number } | { kind: 'client'; client: string } | { kind: 'move'; worker: string }
}

let seq = 0
const newId = (prefix: string): string => `${prefix}-${Date.now().toString(36)}-${(seq++).toString(36)}`

export class Coordinator {
  readonly scheduler: Scheduler
  private readonly peers = new Map<string, Peer>()
  private readonly functions = new Map<string, string>()
  private readonly modules = new Map<string, string>()
  private readonly tasks = new Map<string, StoredTask>()
  private readonly scattered = new Map<string, { data: Uint8Array; replicas: number; stored: number }>()
  private readonly relays = new Map<number, Relay>()
  private readonly datasets = new Datasets()
  private relaySeq = 1
  /** gathers whose holders are all disconnected (in their grace period): asked again when that resolves */
  private readonly deferredGathers = new Map<string, Set<string>>()
  /** results pushed with `finished` this turn, for send-data */
  private pushed = new Map<string, Uint8Array>()
  private readonly opts: Required<Omit<CoordinatorOptions, 'clientToken' | 'workerToken'>> & Pick<CoordinatorOptions, 'clientToken' | 'workerToken'>
  /** counters for /metrics and the dashboard */
  readonly metrics = { badMessages: 0, tasksSubmitted: 0, tasksFinished: 0, tasksErred: 0, bytesRelayed: 0, schedulerMs: 0, events: 0 }
  private closed = false
  /** listeners for the dashboard stream; empty costs nothing */
  readonly observers: ((o: Observed) => void)[] = []

  private observe(o: Observed): void {
    for (const f of this.observers) {
      try { f(o) } catch (err) { this.opts.log(`observer failed: ${(err as Error).message}`, 'error') }
    }
  }

  constructor(options: CoordinatorOptions = {}) {
    this.opts = {
      ...withDefaults({
        workerGraceMs: 5_000, clientGraceMs: 30_000, leaseMs: 15_000, fetchTimeoutMs: 15_000, sendAhead: true as boolean, maxBadMessages: 100, validate: false as boolean,
        log: (_line: string): void => {}, now: (): number => Date.now(), timer: (): number => performance.now(),
      }, options),
      clientToken: options.clientToken, workerToken: options.workerToken,
    }
    this.scheduler = new Scheduler({ validate: this.opts.validate, leaseMs: this.opts.leaseMs, sendAhead: this.opts.sendAhead })
    // leases are the scheduler's: it only needs to be told the time now and then
    this.tickTimer = setInterval(() => {
      if (this.closed) return
      this.handle({ type: 'tick' })
      this.checkRelays()
    }, Math.max(50, Math.min(1_000, this.opts.leaseMs / 4, this.opts.fetchTimeoutMs / 4)))
    ;(this.tickTimer as { unref?: () => void }).unref?.()
  }

  private readonly tickTimer: ReturnType<typeof setInterval>

  // ------------------------------------------------------------ connections

  /**
   * Checks a hello (socket.io `auth`): returns an error message to refuse the connection
   * with, or undefined to accept.
   */
  authorize(hello: unknown): { ok: true; hello: Hello } | { ok: false; code: 'auth' | 'bad-message'; message: string } {
    const parsed = helloSchema.safeParse(hello)
    if (!parsed.success) return { ok: false, code: 'bad-message', message: `bad hello: ${describeIssues(parsed.error)}` }
    const h = parsed.data
    const want = h.role === 'worker' ? this.opts.workerToken : h.role === 'client' ? this.opts.clientToken : this.opts.clientToken
    if (h.role === 'dashboard') {
      // the dashboard is read-only: it needs the client token only when one is set
      if (want && h.token !== want) return { ok: false, code: 'auth', message: 'this coordinator needs a token to watch it (wrong or missing token)' }
      return { ok: true, hello: h }
    }
    if (want && h.token !== want) return { ok: false, code: 'auth', message: `wrong or missing ${h.role} token` }
    return { ok: true, hello: h }
  }

  /** A connection authorized with `hello` joins. Returns the peer id. */
  accept(conn: Connection, hello: Hello): string {
    if (hello.role === 'worker') return this.acceptWorker(conn, hello)
    if (hello.role === 'client') return this.acceptClient(conn, hello)
    const peer: Peer = { conn, role: 'dashboard', id: conn.id, name: 'dashboard', bad: 0, joiner: new PartJoiner(), graceTimer: undefined }
    this.peers.set(peer.id, peer)
    conn.send({ type: 'welcome', id: peer.id, version: PROTOCOL_VERSION, resumed: false } satisfies ToDashboardMessage)
    return peer.id
  }

  private acceptWorker(conn: Connection, hello: Extract<Hello, { role: 'worker' }>): string {
    const old = hello.resume ? this.peers.get(hello.resume) : undefined
    if (old && old.role === 'worker' && old.graceTimer !== undefined) {
      const w = old as WorkerPeer
      clearTimeout(w.graceTimer)
      w.graceTimer = undefined
      w.conn = conn
      w.fns = new Set()
      w.joiner = new PartJoiner()
      this.opts.log(`worker ${w.name} is back`)
      this.handle({ type: 'worker-seen', worker: w.id })
      conn.send({ type: 'welcome', id: w.id, version: PROTOCOL_VERSION, resumed: true } satisfies ToWorkerMessage)
      for (const [name, source] of this.modules) conn.send({ type: 'module', name, source } satisfies ToWorkerMessage)
      // what it no longer holds (a reloaded tab keeps only what it spilled)
      if (hello.held) {
        const still = new Set(hello.held.map(h => h.key))
        const gone = this.scheduler.heldBy(w.id).filter(k => !still.has(k))
        if (gone.length) this.handle({ type: 'data-released', worker: w.id, keys: gone })
      }
      // assignments it may have missed: the scheduler's record is the only one
      for (const a of this.scheduler.assignmentsOf(w.id)) this.sendAssign(w, a)
      this.retryDeferredGathers()
      return w.id
    }
    const id = newId('w')
    const w: WorkerPeer = {
      conn, role: 'worker', id, name: hello.name ?? id, bad: 0, joiner: new PartJoiner(), graceTimer: undefined,
      kind: hello.kind, slots: hello.slots, fns: new Set(), memory: 0, spilled: 0, since: this.opts.now(), accepting: true,
    }
    this.peers.set(id, w)
    conn.send({ type: 'welcome', id, version: PROTOCOL_VERSION, resumed: false } satisfies ToWorkerMessage)
    for (const [name, source] of this.modules) conn.send({ type: 'module', name, source } satisfies ToWorkerMessage)
    this.opts.log(`worker ${w.name} (${id}) joined (${w.kind}, ${w.slots} slots)`)
    const ev: SchedulerEvent = { type: 'worker-added', worker: id, name: w.name, kind: w.kind, slots: w.slots }
    if (hello.held?.length) ev.held = hello.held
    this.handle(ev)
    return id
  }


  private acceptClient(conn: Connection, hello: Extract<Hello, { role: 'client' }>): string {
    const old = hello.resume ? this.peers.get(hello.resume) : undefined
    if (old && old.role === 'client' && old.graceTimer !== undefined) {
      clearTimeout(old.graceTimer)
      old.graceTimer = undefined
      old.conn = conn
      ;(old as ClientPeer).fns = new Set()
      old.joiner = new PartJoiner()
      conn.send({ type: 'welcome', id: old.id, version: PROTOCOL_VERSION, resumed: true } satisfies ToClientMessage)
      return old.id
    }
    const id = newId('c')
    const c: ClientPeer = { conn, role: 'client', id, name: hello.name ?? id, bad: 0, joiner: new PartJoiner(), graceTimer: undefined, fns: new Set() }
    this.peers.set(id, c)
    conn.send({ type: 'welcome', id, version: PROTOCOL_VERSION, resumed: false } satisfies ToClientMessage)
    this.handle({ type: 'client-added', client: id })
    return id
  }

  /** The connection of peer `id` closed. Its identity is kept for a grace period. */
  disconnected(id: string, reason: string): void {
    const p = this.peers.get(id)
    if (!p || this.closed) return
    p.conn = undefined
    if (p.role === 'dashboard') { this.peers.delete(id); return }
    // relays from this peer go to another holder now (or fail); relays to it stop (it asks again when back)
    for (const [rid, r] of this.relays) {
      if (r.holder === id) this.retryRelay(rid, { code: 'lost-data', message: `holder of ${r.key} disconnected`, key: r.key })
      else if ((r.to.kind === 'client' ? r.to.client : r.to.worker) === id) this.relays.delete(rid)
    }
    // and nothing it sent half of stays allocated
    p.joiner.clear()
    const grace = p.role === 'worker' ? this.opts.workerGraceMs : this.opts.clientGraceMs
    this.opts.log(`${p.role} ${p.name} disconnected (${reason}); grace ${grace} ms`)
    p.graceTimer = setTimeout(() => this.gone(id, reason === 'left' ? 'left' : 'disconnected'), grace)
  }

  private gone(id: string, reason: 'left' | 'disconnected' | 'kicked'): void {
    const p = this.peers.get(id)
    if (!p) return
    if (p.graceTimer !== undefined) clearTimeout(p.graceTimer)
    this.peers.delete(id)
    if (p.conn) p.conn.close(reason)
    if (p.role === 'worker') {
      this.opts.log(`worker ${p.name} is gone (${reason})`)
      for (const [rid, r] of this.relays) if (r.holder === id) this.relayFailed(rid, { code: 'lost-data', message: `holder of ${r.key} left`, key: r.key })
      this.handle({ type: 'worker-removed', worker: id, reason })
      this.retryDeferredGathers()
    } else if (p.role === 'client') {
      this.handle({ type: 'client-removed', client: id })
    }
  }

  // ------------------------------------------------------------ inbound

  /** A frame of messages from peer `id`, already decoded from msgpack (not yet validated). */
  receive(id: string, msgs: unknown[]): void {
    const p = this.peers.get(id)
    if (!p || !p.conn) return
    if (p.role === 'dashboard') {
      this.refuse(p, { code: 'bad-message', message: 'the dashboard role is read-only' })
      return
    }
    const schema = p.role === 'client' ? clientMessage : workerMessage
    // any frame renews a worker's leases (and brings back one that had lapsed)
    this.batch = p.role === 'worker' ? [{ type: 'worker-seen', worker: p.id }] : []
    try {
      this.receiveAll(p, schema, msgs)
    } finally { this.flushBatch() }
  }

  private receiveAll(p: Peer, schema: typeof clientMessage | typeof workerMessage, msgs: unknown[]): void {
    const id = p.id
    for (const raw of msgs) {
      const parsed = schema.safeParse(raw)
      if (!parsed.success) {
        const type = typeof (raw as { type?: unknown })?.type === 'string' ? String((raw as { type: string }).type).slice(0, 40) : '?'
        const message = `bad ${p.role} message "${type}": ${describeIssues(parsed.error)}`
        this.refuse(p, { code: 'bad-message', message })
        this.settleRefused(p, raw, message)
        if (!this.peers.get(id)?.conn) return
        continue
      }
      try {
        if (p.role === 'client') this.onClient(p as ClientPeer, parsed.data as ClientMessage)
        else this.onWorker(p as WorkerPeer, parsed.data as WorkerMessage)
      } catch (err) {
        // a bug or an impossible request: answer, count, never crash
        this.opts.log(`error handling ${(parsed.data as { type: string }).type} from ${p.name}: ${(err as Error).stack}`, 'error')
        this.refuse(p, toWireError(err, 'internal'))
      }
    }
  }

  /**
   * A refused message must not leave a future pending: a worker's refused report on a
   * task fails that attempt (the scheduler retries or errs it as for any failure), and
   * the tasks of a client's refused submit or scatter err with the reason.
   */
  private settleRefused(p: Peer, raw: unknown, message: string): void {
    if (typeof raw !== 'object' || raw === null) return
    const m = raw as { type?: unknown; key?: unknown; attempt?: unknown; tasks?: unknown }
    const isKey = (k: unknown): k is string => typeof k === 'string' && k.length > 0 && k.length <= LIMITS.key
    if (p.role === 'worker') {
      if ((m.type !== 'finished' && m.type !== 'erred' && m.type !== 'missing') || !isKey(m.key)) return
      if (typeof m.attempt !== 'number' || !Number.isSafeInteger(m.attempt) || m.attempt < 0) return
      const error: WireError = { code: 'task-error', message: `the worker's report on this run was refused by the coordinator (${message}), so the run counts as failed`, key: m.key }
      this.handle({ type: 'task-erred', worker: p.id, key: m.key, attempt: m.attempt, error })
    } else if (p.role === 'client') {
      const keys = m.type === 'scatter' && isKey(m.key) ? [m.key]
        : m.type === 'submit' && Array.isArray(m.tasks) ? m.tasks.slice(0, LIMITS.keys).map(t => (t as { key?: unknown } | null)?.key).filter(isKey)
          : []
      for (const key of keys) {
        p.conn?.send({ type: 'key-state', key, state: 'erred', error: { code: 'bad-message', message: `the coordinator refused the message carrying ${key}: ${message}`, key } } satisfies ToClientMessage)
      }
    }
  }

  /** Counts a bad message, answers with an error, and cuts a peer that keeps sending junk. */
  refuse(p: Peer | string, error: WireError): void {
    const peer = typeof p === 'string' ? this.peers.get(p) : p
    this.metrics.badMessages++
    if (!peer?.conn) return
    peer.bad++
    peer.conn.send({ type: 'error', error })
    if (peer.bad >= this.opts.maxBadMessages) {
      this.opts.log(`cutting ${peer.role} ${peer.name}: ${peer.bad} bad messages`, 'warn')
      const conn = peer.conn
      this.disconnected(peer.id, 'kicked')
      conn.close('too many bad messages')
    }
  }

  private onClient(c: ClientPeer, m: ClientMessage): void {
    switch (m.type) {
      case 'function':
        this.functions.set(m.hash, m.source)
        c.fns.add(m.hash)
        return
      case 'submit': {
        const specs: TaskSpec[] = []
        for (const t of m.tasks) {
          if (!this.functions.has(t.fn)) {
            c.conn?.send({ type: 'key-state', key: t.key, state: 'erred', error: { code: 'bad-message', message: `function ${t.fn} was never sent: send a 'function' message first`, key: t.key } } satisfies ToClientMessage)
            continue
          }
          if (!this.tasks.has(t.key)) this.tasks.set(t.key, { fn: t.fn, args: ownBytes(t.args), redundancy: t.redundancy ?? 1, timeout: t.timeout, group: t.group })
          specs.push({
            key: t.key, fn: t.fn, deps: t.deps, group: t.group, priority: t.priority ?? 0, retries: t.retries ?? 0,
            redundancy: t.redundancy ?? 1, workers: t.workers ?? [], nbytes: t.args.byteLength,
          })
        }
        this.metrics.tasksSubmitted += specs.length
        if (specs.length) this.handle({ type: 'submit', client: c.id, tasks: specs })
        return
      }
      case 'scatter': {
        let data: Uint8Array | undefined
        try { data = c.joiner.add(`scatter:${m.key}`, m) } catch (err) {
          this.refuse(c, toWireError(err, 'bad-message', m.key))
          return
        }
        if (!data) return
        if (!this.scattered.has(m.key) && this.scheduler.taskStatus(m.key) === undefined) {
          this.scattered.set(m.key, { data: ownBytes(data), replicas: m.replicas ?? 1, stored: 0 })
        }
        this.handle({ type: 'submit', client: c.id, tasks: [{ key: m.key, fn: null, deps: [], group: 'scatter', priority: 0, retries: 0, redundancy: m.replicas ?? 1, workers: [], nbytes: data.byteLength }] })
        return
      }
      case 'release': return this.handle({ type: 'release', client: c.id, keys: m.keys })
      case 'cancel': return this.handle({ type: 'cancel', client: c.id, keys: m.keys })
      case 'gather': return this.handle({ type: 'gather', client: c.id, keys: m.keys })
      case 'fire-and-forget': return this.handle({ type: 'fire-and-forget', client: c.id, keys: m.keys })
      case 'retry': return this.retry(c, m.keys)
      case 'request': return this.onRequest(c, m.id, m.op)
      default: {
        const never: never = m
        throw new Error(`unhandled client message ${(never as { type: string }).type}`)
      }
    }
  }

  /** What the scheduler was told earlier in this frame must count before it is asked (a publish after its submit). */
  private catchUp(): void {
    if (!this.batch?.length) return
    this.flushBatch()
    this.batch = []
  }

  private onRequest(c: ClientPeer, id: number, op: Extract<ClientMessage, { type: 'request' }>['op']): void {
    this.catchUp()
    const reply = (value: unknown): void => c.conn?.send({ type: 'reply', id, ok: true, value } satisfies ToClientMessage)
    const fail = (error: WireError): void => c.conn?.send({ type: 'reply', id, ok: false, error } satisfies ToClientMessage)
    switch (op.op) {
      case 'workers': return reply(this.workerSummaries())
      case 'upload-module': {
        // the client checked too, but a client is not trusted to have
        const syntax = moduleSyntaxError(op.source)
        if (syntax !== undefined) return fail({ code: 'serialization', message: `module ${op.name} does not parse as an ES module: ${syntax}; nothing was uploaded` })
        this.modules.set(op.name, op.source)
        for (const p of this.peers.values()) if (p.role === 'worker' && p.conn) p.conn.send({ type: 'module', name: op.name, source: op.source } satisfies ToWorkerMessage)
        return reply(true)
      }
      case 'story': return reply(this.scheduler.story(op.key))
      case 'who-has': return reply(Object.fromEntries(op.keys.map(k => [k, this.scheduler.whoHas(k)])))
      case 'status': return reply(Object.fromEntries(op.keys.map(k => [k, this.scheduler.taskStatus(k) ?? 'forgotten'])))
      case 'close':
        reply(true)
        return this.clientClosed(c)
      case 'publish-dataset': {
        if (!this.scheduler.wantedBy(op.key).includes(c.id)) {
          return fail({ code: 'not-found', message: `cannot publish ${op.key} as ${op.name}: this client holds no future to it (it was released, or never submitted)`, key: op.key })
        }
        const r = this.datasets.publish(op.name, op.key, op.override === true)
        if ('error' in r) return fail(r.error)
        for (const e of r.events) this.handle(e)
        return reply(true)
      }
      case 'get-dataset': {
        const key = this.datasets.get(op.name)
        if (key === undefined) return fail({ code: 'not-found', message: `no dataset named ${op.name} (see listDatasets())` })
        // the reply goes first: the client makes its future, then hears the key's state
        reply({ key })
        return this.handle({ type: 'want', client: c.id, keys: [key] })
      }
      case 'list-datasets': return reply(this.datasets.names())
      case 'unpublish-dataset': {
        const events = this.datasets.unpublish(op.name)
        if (events === undefined) return fail({ code: 'not-found', message: `no dataset named ${op.name} (see listDatasets())` })
        for (const e of events) this.handle(e)
        return reply(true)
      }
      default: {
        const never: never = op
        throw new Error(`unknown request ${(never as { op: string }).op}`)
      }
    }
  }

  /**
   * `future.retry()`: the erred keys run again, each after the erred tasks it depends on
   * (read from its stored arguments: an erred task no longer links its dependencies).
   */
  private retry(c: ClientPeer, keys: string[]): void {
    this.catchUp()
    const order: { key: string; deps: string[] }[] = []
    const seen = new Set<string>()
    // depth-first, dependencies before dependents, without recursion (chains can be long)
    const stack: { key: string; deps: string[] | undefined }[] = []
    for (const root of keys) {
      if (seen.has(root)) continue
      seen.add(root)
      stack.push({ key: root, deps: undefined })
      while (stack.length > 0 && order.length < LIMITS.keys) {
        const top = stack[stack.length - 1]!
        if (top.deps === undefined) {
          const stored = this.tasks.get(top.key)
          const deps = new Set<string>()
          if (stored && this.scheduler.taskStatus(top.key) === 'erred') {
            try { decodeValue(stored.args, k => { deps.add(k); return null }) } catch { /* its deps stay unknown: it errs again, saying so */ }
          }
          top.deps = [...deps]
          let pushed = false
          for (const d of top.deps) {
            if (seen.has(d) || this.scheduler.taskStatus(d) !== 'erred') continue
            seen.add(d)
            stack.push({ key: d, deps: undefined })
            pushed = true
          }
          if (pushed) continue
        }
        stack.pop()
        order.push({ key: top.key, deps: top.deps })
      }
    }
    if (order.length) this.handle({ type: 'retry', client: c.id, tasks: order })
  }

  /** The client said goodbye: everything it sent before is handled; it wants nothing more, so no grace period. */
  private clientClosed(c: ClientPeer): void {
    this.peers.delete(c.id)
    c.conn = undefined
    this.opts.log(`client ${c.name} closed`)
    this.handle({ type: 'client-removed', client: c.id })
  }

  /** What `client.workers()` returns. */
  workerSummaries(): Array<Record<string, unknown>> {
    return this.scheduler.workers().map(w => {
      const p = this.peers.get(w.id) as WorkerPeer | undefined
      return { ...w, connected: !!p?.conn, memory: p?.memory ?? 0, spilled: p?.spilled ?? 0 }
    })
  }

  private onWorker(w: WorkerPeer, m: WorkerMessage): void {
    switch (m.type) {
      case 'finished': {
        this.metrics.tasksFinished++
        if (m.data) this.pushed.set(m.key, m.data)
        const ev: SchedulerEvent = { type: 'task-finished', worker: w.id, key: m.key, attempt: m.attempt, nbytes: m.nbytes, ms: m.ms }
        if (m.digest) ev.digest = m.digest
        if (this.observers.length) {
          const o: Observed = { type: 'finished', worker: w.id, key: m.key, attempt: m.attempt, ms: m.ms, nbytes: m.nbytes, at: this.opts.now() }
          const group = this.tasks.get(m.key)?.group
          if (group !== undefined) o.group = group
          this.observe(o)
        }
        this.handle(ev)
        return
      }
      case 'erred': {
        this.metrics.tasksErred++
        if (this.observers.length) this.observe({ type: 'erred', worker: w.id, key: m.key, attempt: m.attempt, at: this.opts.now(), message: m.error.message })
        const ev: SchedulerEvent = { type: 'task-erred', worker: w.id, key: m.key, attempt: m.attempt, error: m.error }
        if (m.crashed) ev.crashed = true
        return this.handle(ev)
      }
      case 'missing':
        return this.handle({ type: 'missing-data', worker: w.id, key: m.key, attempt: m.attempt, missing: m.missing })
      case 'steal-response':
        return this.handle({ type: 'steal-response', worker: w.id, key: m.key, attempt: m.attempt, ok: m.ok })
      case 'stored': {
        const s = this.scattered.get(m.key)
        if (s && ++s.stored >= s.replicas) this.scattered.delete(m.key)
        return this.handle({ type: 'data-added', worker: w.id, key: m.key, nbytes: m.nbytes })
      }
      case 'fetch': {
        // a worker needs a dependency: relay it from a holder
        const holders = this.scheduler.whoHas(m.key).filter(h => h !== w.id && this.peers.get(h)?.conn)
        if (!holders.length) {
          w.conn?.send({ type: 'data-error', id: m.id, key: m.key, error: { code: 'lost-data', message: `no worker holds ${m.key}`, key: m.key } } satisfies ToWorkerMessage)
          return
        }
        this.startRelay(m.key, holders, { kind: 'worker', worker: w.id, id: m.id })
        return
      }
      case 'data': return this.onRelayData(w, m)
      case 'data-error': {
        const r = this.relays.get(m.id)
        if (!r || r.holder !== w.id) return
        w.joiner.drop(`relay:${m.id}`)
        this.handle({ type: 'data-lost', worker: w.id, keys: [m.key] })
        this.retryRelay(m.id, m.error, true)
        return
      }
      case 'status': {
        w.memory = m.memory ?? w.memory
        w.spilled = m.spilled ?? w.spilled
        w.accepting = m.accepting
        if (m.slots !== undefined) w.slots = m.slots
        const ev: SchedulerEvent = { type: 'worker-status', worker: w.id, accepting: m.accepting }
        if (m.slots !== undefined) ev.slots = m.slots
        return this.handle(ev)
      }
      case 'heartbeat':
        w.memory = m.memory ?? w.memory
        w.spilled = m.spilled ?? w.spilled
        return
      case 'released': return this.handle({ type: 'data-released', worker: w.id, keys: m.keys })
      case 'retire': return this.handle({ type: 'worker-retiring', worker: w.id })
      default: {
        const never: never = m
        throw new Error(`unhandled worker message ${(never as { type: string }).type}`)
      }
    }
  }

  // ------------------------------------------------------------ relay

  private startRelay(key: string, holders: string[], to: Relay['to'], tried = new Set<string>()): void {
    const holder = holders[0]!
    const rid = this.relaySeq++
    tried.add(holder)
    this.relays.set(rid, { key, holder, tried, to, at: this.opts.now() })
    ;(this.peers.get(holder) as WorkerPeer).conn!.send({ type: 'fetch', id: rid, key } satisfies ToWorkerMessage)
  }

  /** Data from a holder: forward each part as it arrives (a stream, not a store-and-forward). */
  private onRelayData(w: WorkerPeer, m: Extract<WorkerMessage, { type: 'data' }>): void {
    const r = this.relays.get(m.id)
    if (!r || r.holder !== w.id) return
    const last = (m.parts ?? 1) <= 1 || m.part === (m.parts ?? 1) - 1
    r.at = this.opts.now()
    this.metrics.bytesRelayed += m.data.byteLength
    // the part goes on as it came (an attachment is forwarded, not copied); `stream` tells
    // the receiver a relay from another holder apart from what an earlier one left
    const parts: { part?: number; parts?: number; total?: number; stream?: number } = {}
    if (m.parts !== undefined) { parts.part = m.part ?? 0; parts.parts = m.parts; parts.total = m.total ?? 0; parts.stream = m.id }
    if (r.to.kind === 'worker') {
      const dest = this.peers.get(r.to.worker)
      dest?.conn?.send({ type: 'data', id: r.to.id, key: r.key, data: m.data, ...parts } satisfies ToWorkerMessage)
    } else if (r.to.kind === 'client') {
      const dest = this.peers.get(r.to.client)
      dest?.conn?.send({ type: 'data', key: r.key, data: m.data, ...parts } satisfies ToClientMessage)
    } else {
      const dest = this.peers.get(r.to.worker)
      dest?.conn?.send({ type: 'put', key: r.key, data: m.data, ...parts } satisfies ToWorkerMessage)
    }
    if (last) this.relays.delete(m.id)
  }

  /**
   * Holders that did not answer a fetch in time (a frozen tab, a lost message) are taken
   * to have lost the data: the scheduler hears data-lost (and recomputes it if no other
   * copy is left), the holder is told to drop it, and the requester is served another way.
   */
  private checkRelays(): void {
    if (this.relays.size === 0) return
    const now = this.opts.now()
    const late: number[] = []
    for (const [rid, r] of this.relays) if (now - r.at >= this.opts.fetchTimeoutMs) late.push(rid)
    if (late.length === 0) return
    // one batch: a gather asked again goes with the data-lost, so the recomputation
    // pushes its result back instead of waiting to be fetched
    if (this.batch !== null) { this.expireRelays(late); return }
    this.batch = []
    try { this.expireRelays(late) } finally { this.flushBatch() }
  }

  private expireRelays(late: number[]): void {
    for (const rid of late) {
      const r = this.relays.get(rid)
      if (!r) continue
      const holder = this.peers.get(r.holder)
      this.opts.log(`worker ${holder?.name ?? r.holder} did not answer a fetch of ${r.key} within ${this.opts.fetchTimeoutMs} ms`)
      holder?.joiner.drop(`relay:${rid}`)
      holder?.conn?.send({ type: 'free', keys: [r.key] } satisfies ToWorkerMessage)
      this.handle({ type: 'data-lost', worker: r.holder, keys: [r.key] })
      this.retryRelay(rid, { code: 'lost-data', message: `no holder of ${r.key} answered within ${this.opts.fetchTimeoutMs} ms`, key: r.key }, true)
    }
  }

  private retryRelay(rid: number, error: WireError, regather = false): void {
    const r = this.relays.get(rid)
    if (!r) return
    this.relays.delete(rid)
    const holders = this.scheduler.whoHas(r.key).filter(h => !r.tried.has(h) && this.peers.get(h)?.conn)
    if (holders.length) this.startRelay(r.key, holders, r.to, r.tried)
    else this.relayFailed(rid, error, r, regather)
  }

  /** `regather`: the holders lost the data (not just disconnected), so a client's gather is asked again at once: it is recomputed, or lost. */
  private relayFailed(rid: number, error: WireError, r = this.relays.get(rid), regather = false): void {
    if (!r) return
    this.relays.delete(rid)
    if (r.to.kind === 'worker') {
      this.peers.get(r.to.worker)?.conn?.send({ type: 'data-error', id: r.to.id, key: r.key, error } satisfies ToWorkerMessage)
    } else if (r.to.kind === 'client' && regather) {
      if (this.peers.get(r.to.client)?.conn) this.handle({ type: 'gather', client: r.to.client, keys: [r.key] })
    } else if (r.to.kind === 'client') {
      // the scheduler recomputes it or declares it lost (the client hears a key-state);
      // ask again once the failed holder is back or gone
      this.deferGather(r.key, r.to.client)
    }
  }

  private deferGather(key: string, client: string): void {
    let s = this.deferredGathers.get(key)
    if (!s) this.deferredGathers.set(key, s = new Set())
    s.add(client)
  }

  /** A worker came back or is gone for good: gathers that waited on it are asked again. */
  private retryDeferredGathers(): void {
    if (!this.deferredGathers.size) return
    const all = [...this.deferredGathers]
    this.deferredGathers.clear()
    const byClient = new Map<string, string[]>()
    for (const [key, clients] of all) for (const c of clients) {
      let l = byClient.get(c)
      if (!l) byClient.set(c, l = [])
      l.push(key)
    }
    for (const [client, keys] of byClient) if (this.peers.has(client)) this.handle({ type: 'gather', client, keys })
  }

  // ------------------------------------------------------------ scheduler

  /** Events gathered while a frame is read, fed to the scheduler together at its end. */
  private batch: SchedulerEvent[] | null = null

  /** Feeds the scheduler one event (or queues it with the frame's others) and carries out its commands. */
  handle(event: SchedulerEvent): void {
    if (this.batch) this.batch.push(event)
    else this.feed([event])
  }

  private flushBatch(): void {
    const events = this.batch
    this.batch = null
    if (events?.length) this.feed(events)
  }

  private feed(events: SchedulerEvent[]): void {
    const t0 = this.opts.timer()
    let commands: Command[]
    try {
      commands = this.scheduler.handleMany(events, this.opts.now())
    } catch (err) {
      this.opts.log(`scheduler error on ${events.map(e => e.type).join(',')}: ${(err as Error).stack}`, 'error')
      if (this.opts.validate) throw err
      return
    }
    this.metrics.events += events.length
    const ms = this.opts.timer() - t0
    this.metrics.schedulerMs += ms
    if (this.observers.length) this.observe({ type: 'scheduled', ms, events: events.length })
    // work for workers leaves first: a client's key-state must not delay the next assignment
    for (const c of commands) if (c.type === 'assign') this.applySafely(c)
    for (const c of commands) if (c.type !== 'assign') this.applySafely(c)
    if (this.pushed.size) this.pushed = new Map()
  }

  private applySafely(c: Command): void {
    try { this.apply(c) } catch (err) { this.opts.log(`error applying ${c.type}: ${(err as Error).stack}`, 'error') }
  }

  private apply(c: Command): void {
    switch (c.type) {
      case 'assign': {
        const w = this.peers.get(c.worker) as WorkerPeer | undefined
        if (w) this.sendAssign(w, c.task)
        return
      }
      case 'worker-lapsed': {
        const w = this.peers.get(c.worker)
        this.opts.log(`worker ${w?.name ?? c.worker} went quiet for ${Math.round(c.quietMs)} ms with ${c.tasks} tasks: its leases ran out`, 'warn')
        return
      }
      case 'cancel-task':
      case 'steal-request': {
        const w = this.peers.get(c.worker) as WorkerPeer | undefined
        w?.conn?.send({ type: c.type === 'cancel-task' ? 'cancel-task' : 'steal', key: c.key, attempt: c.attempt } satisfies ToWorkerMessage)
        return
      }
      case 'free-keys':
        this.peers.get(c.worker)?.conn?.send({ type: 'free', keys: c.keys } satisfies ToWorkerMessage)
        return
      case 'put-data': {
        const s = this.scattered.get(c.key)
        const w = this.peers.get(c.worker)
        if (s && w?.conn) w.conn.send({ type: 'put', key: c.key, data: s.data } satisfies ToWorkerMessage)
        return
      }
      case 'move-data': {
        // the scheduler's choice first, else any holder that is connected: a source in
        // its grace period would leave the copy (a replica, a hand-off) waiting for nothing
        const holders = [c.from, ...this.scheduler.whoHas(c.key).filter(h => h !== c.from)].filter(h => h !== c.to && this.peers.get(h)?.conn)
        if (!holders.length) return
        this.startRelay(c.key, holders, { kind: 'move', worker: c.to })
        return
      }
      case 'key-state': {
        const msg: ToClientMessage = { type: 'key-state', key: c.key, state: c.state }
        if (c.error) msg.error = c.error
        if (c.nbytes !== undefined) msg.nbytes = c.nbytes
        for (const id of c.clients) this.peers.get(id)?.conn?.send(msg)
        return
      }
      case 'send-data': {
        const client = this.peers.get(c.client)
        if (!client?.conn) return
        const pushed = this.pushed.get(c.key)
        if (pushed) {
          client.conn.send({ type: 'data', key: c.key, data: pushed } satisfies ToClientMessage)
          return
        }
        const holders = [c.worker, ...this.scheduler.whoHas(c.key).filter(h => h !== c.worker)].filter(h => this.peers.get(h)?.conn)
        if (!holders.length) {
          // its holders are in their grace period: ask again once they are back or gone
          this.deferGather(c.key, c.client)
          return
        }
        this.startRelay(c.key, holders, { kind: 'client', client: c.client })
        return
      }
      case 'forget':
        this.tasks.delete(c.key)
        this.scattered.delete(c.key)
        return
      case 'retire-done': {
        const w = this.peers.get(c.worker)
        w?.conn?.send({ type: 'goodbye', reason: 'retired: your data was handed to other workers' } satisfies ToWorkerMessage)
        this.gone(c.worker, 'left')
        return
      }
      default: {
        const never: never = c
        throw new Error(`unknown command ${(never as { type: string }).type}`)
      }
    }
  }

  /** Sends an assignment (with its function's source the first time this connection needs it). */
  private sendAssign(w: WorkerPeer, a: AssignedTask): void {
    const t = a.fn !== null ? this.tasks.get(a.key) : undefined
    if (!w.conn || !t) return
    const msg: ToWorkerMessage & { type: 'assign' } = {
      type: 'assign', key: a.key, attempt: a.attempt, fn: t.fn, args: t.args, deps: a.deps, push: a.push, priority: a.priority, seq: a.seq,
    }
    if (t.redundancy > 1) msg.digest = true
    if (t.timeout !== undefined) msg.timeout = t.timeout
    if (!w.fns.has(msg.fn)) {
      const source = this.functions.get(msg.fn)
      if (source !== undefined) {
        w.fns.add(msg.fn)
        w.conn.send({ type: 'function', hash: msg.fn, source } satisfies ToWorkerMessage)
      }
    }
    w.conn.send(msg)
  }

  // ------------------------------------------------------------ status

  /** A bounded summary for /health, /metrics and the dashboard. */
  status(): Record<string, unknown> {
    let clients = 0, workers = 0, dashboards = 0
    for (const p of this.peers.values()) {
      if (!p.conn) continue
      if (p.role === 'client') clients++
      else if (p.role === 'worker') workers++
      else dashboards++
    }
    return {
      clients, workers, dashboards,
      tasks: this.scheduler.counts(),
      functions: this.functions.size, modules: this.modules.size,
      ...this.metrics,
    }
  }

  /** Sends a message to every dashboard. */
  broadcastDashboards(msg: ToDashboardMessage): void {
    for (const p of this.peers.values()) if (p.role === 'dashboard' && p.conn) p.conn.send(msg)
  }

  /** Ends every connection. */
  close(): void {
    if (this.closed) return
    this.closed = true
    clearInterval(this.tickTimer)
    for (const p of this.peers.values()) {
      if (p.graceTimer !== undefined) clearTimeout(p.graceTimer)
      if (p.role === 'worker') p.conn?.send({ type: 'goodbye', reason: 'the coordinator is shutting down' } satisfies ToWorkerMessage)
      p.conn?.close('coordinator closed')
    }
    this.peers.clear()
  }
}
