/**
 * The worker runtime, the same for a Node agent, a browser tab and `Client.local`: the
 * thin I/O shell around the worker state machine (core/worker-state.ts). It turns what
 * comes from the coordinator (a Link), from the threads (worker_threads or Web Workers,
 * through comlink and a task port each) and from time into events, and carries out the
 * instructions the machine returns: messages, task batches, comlink calls, one timer.
 *
 * It owns the worker's leases: heartbeats leave on the machine's own schedule (holding
 * tasks, after `heartbeatMs` — 1 s by default — of sending nothing else; idle, every
 * 10 s) from a timer here, so no host has to remember to send
 * them. A host whose timers are throttled (a background tab) also calls `tick()` from a
 * better clock (the tab's ticker Web Worker).
 */
import * as Comlink from 'comlink'
import type { Link, LinkStatus } from '../shared/link.js'
import { HELLO_HELD_MAX, LIMITS, describeIssues, execEvents, type ExecEvent, type WorkerStoryEntry, type ToWorkerMessage, type WorkerMessage } from '../shared/protocol.js'
import { PartJoiner, PendingRequests, ownBytes, streamParts } from '../shared/wire.js'
import { checkFirst, fastExecEvents } from '../shared/fast-parse.js'
import type { ExecutorApi, TaskPort } from '../shared/executor.js'
import { toWireError, TimeoutError, type WireError } from '../shared/errors.js'
import { WorkerState, type Instruction, type WorkerEvent, type WorkerStats } from './worker-state.js'

/** A thread as the host made it. */
export interface ThreadHandle {
  /** comlink endpoint of the thread (a Worker, or nodeEndpoint(worker) in Node) */
  endpoint: Comlink.Endpoint
  /** called once when the thread dies for any reason, with why */
  onExit(cb: (reason: string) => void): void
  /** stops the thread; may return a promise that settles once it is gone */
  terminate(): void | Promise<unknown>
  /** lets the host process exit while the thread lives (Node; see RuntimeOptions.unref) */
  unref?(): void
}

export interface RuntimeOptions {
  /** processes: how many threads */
  nprocs: number
  /** threads: tasks each runs at once */
  nthreads: number
  /** makes a thread */
  spawn: () => ThreadHandle
  /** ms a call into a thread may take before it fails; also how long a thread has to start. Default 60 s. */
  callTimeout?: number
  /** ms a worker holding tasks may send nothing before it heartbeats (any frame renews its leases at the coordinator). Default 1000. */
  heartbeatMs?: number
  /** log lines go here */
  log?: (line: string) => void
  /** extra options for thread `index`'s executor (memory budget, spill store name…) */
  threadInit?: (index: number) => Record<string, unknown>
  /** cancelling a running task terminates its thread (browsers: a hard cancel). Default false. */
  hardCancel?: boolean
  /** check the state machine's invariants after every event (tests) */
  validate?: boolean
  /**
   * Threads and their ports do not keep the host process alive (Node): for
   * `Client.local`, where the client keeps the process alive while someone waits on it.
   * Default false.
   */
  unref?: boolean
}

/** One thread's I/O side; its state lives in the machine. */
interface ThreadIO {
  readonly id: number
  readonly slot: number
  readonly handle: ThreadHandle
  readonly api: Comlink.Remote<ExecutorApi>
  /** the task stream: batches out, events in (see TaskPort) */
  readonly port: TaskPort
  /** rejects when the thread is gone, so calls into it fail at once */
  readonly dead: Promise<never>
  kill: (reason: string) => void
  gone: boolean
  /** resolves once the machine knows the thread started */
  started: Promise<void>
}

type StatusChange = LinkStatus | { state: 'welcome'; id: string; resumed: boolean; /** the secret that resumes this identity (keep it to resume after a reload) */ resume?: string } | { state: 'goodbye'; reason: string }

const now = (): number => performance.now()

/** Callbacks whose comlink port must not keep the host process alive (RuntimeOptions.unref). */
const unrefProxies = new WeakSet<object>()

/**
 * Marks a `Comlink.proxy` so that the port comlink makes for it, on this side, is
 * unref'd. Comlink makes that port inside its transfer handler, out of reach, so its
 * 'proxy' handler is wrapped (once): unmarked proxies are serialized exactly as before.
 */
function unrefWhenSent(proxy: object): void {
  unrefProxies.add(proxy)
  const handler = Comlink.transferHandlers.get('proxy') as Comlink.TransferHandler<object, unknown> & { unrefs?: true }
  if (handler.unrefs) return
  const wrapped: Comlink.TransferHandler<object, unknown> & { unrefs: true } = {
    unrefs: true,
    canHandle: handler.canHandle,
    deserialize: handler.deserialize,
    serialize(obj) {
      if (!unrefProxies.has(obj)) return handler.serialize(obj)
      const { port1, port2 } = new MessageChannel()
      Comlink.expose(obj, port1 as unknown as Comlink.Endpoint)
      ;(port1 as { unref?: () => void }).unref?.()
      return [port2, [port2] as unknown as ReturnType<typeof handler.serialize>[1]]
    },
  }
  Comlink.transferHandlers.set('proxy', wrapped)
}

export class WorkerRuntime {
  /** the worker's state; read it, never change it (feed events instead) */
  readonly state: WorkerState
  private readonly io = new Map<number, ThreadIO>()
  private readonly fetches = new PendingRequests<Uint8Array>()
  private readonly joiner = new PartJoiner()
  private readonly serving = new Map<ThreadIO, [number, string][]>()
  /** threads being terminated, for close() to wait on */
  private readonly stopping = new Set<Promise<unknown>>()
  private readonly callTimeout: number
  private readonly log: (line: string) => void
  private readonly spawnThread: () => ThreadHandle
  private readonly nthreads: number
  private readonly threadInit: ((index: number) => Record<string, unknown>) | undefined
  private readonly unref: boolean
  private link: Link<WorkerMessage, ToWorkerMessage> | undefined
  private pending: WorkerEvent[] = []
  private feeding = false
  private wakeTimer: ReturnType<typeof setTimeout> | undefined
  private wakeAt: number | null = null
  private closed = false
  onStatusChange: (status: StatusChange) => void = () => {}

  /**
   * Starts the pool. Attach a link to the coordinator with `attach` (after `adopt`, when
   * the threads may hold spilled data from before a reload).
   *
   * @example
   * ```ts
   * const runtime = new WorkerRuntime({ nprocs: 2, nthreads: 1, spawn: spawnThread })
   * runtime.attach(await connectLink(url, { role: 'worker', kind: 'node', slots: runtime.slots }))
   * ```
   */
  constructor(options: RuntimeOptions) {
    const callTimeout = options.callTimeout ?? 60_000
    if (!(callTimeout > 0)) throw new RangeError(`RuntimeOptions.callTimeout must be a positive number of ms, got ${String(options.callTimeout)}`)
    this.callTimeout = callTimeout
    this.log = options.log ?? (() => {})
    this.spawnThread = options.spawn
    this.unref = options.unref === true
    this.nthreads = options.nthreads
    this.threadInit = options.threadInit
    const ws: ConstructorParameters<typeof WorkerState>[0] = {
      nprocs: options.nprocs, nthreads: options.nthreads, hardCancel: options.hardCancel === true, startTimeoutMs: callTimeout,
      validate: options.validate === true,
    }
    if (options.heartbeatMs !== undefined) ws.heartbeatMs = options.heartbeatMs
    this.state = new WorkerState(ws)
    this.feed({ type: 'start', now: now() })
  }

  /** Connects the runtime to the coordinator. */
  attach(link: Link<WorkerMessage, ToWorkerMessage>): void {
    this.link = link
    link.onMessages = msgs => this.onMessages(msgs)
    link.onStatus = s => {
      if (s.state !== 'connected') {
        this.feed({ type: 'disconnected', now: now() })
        // the next hello says what this worker holds: a coordinator that restarted takes back what its journal agrees on
        if (s.state === 'disconnected' && this.link) {
          const held = this.state.heldKeys(HELLO_HELD_MAX)
          const hello = this.link.hello as typeof this.link.hello & { held?: unknown }
          if (hello.role === 'worker') this.link.hello = { ...hello, held }
        }
        this.fetches.rejectAll(new TimeoutError(`connection lost: ${s.reason}`))
        this.joiner.clear() // parts half received are dropped with the connection
      }
      this.onStatusChange(s)
    }
  }

  /**
   * Keys the threads hold from before (spilled to IndexedDB or disk by a previous page
   * load): put them in the hello's `held` so the coordinator doesn't recompute them.
   */
  async adopt(): Promise<{ key: string; nbytes: number }[]> {
    const out: { key: string; nbytes: number }[] = []
    const seen = new Set<string>()
    await Promise.all([...this.io.values()].map(async t => {
      try {
        await t.started
        const held = await this.call(t, 'adopt', () => t.api.adopt())
        this.feed({ type: 'thread-adopted', thread: t.id, held, now: now() })
        for (const h of held) if (!seen.has(h.key)) { seen.add(h.key); out.push(h) }
      } catch (err) { this.log(`thread ${t.slot} could not adopt its spilled data: ${(err as Error).message}`) }
    }))
    return out
  }

  /** Total tasks the pool runs at once. */
  get slots(): number { return this.state.slots }
  get isAccepting(): boolean { return this.state.isAccepting }
  /** tasks done, and ms of CPU given, for the page */
  get done(): number { return this.state.done }
  get busyMs(): number { return this.state.busyMs }
  /** the coordinator's id for this worker, once welcomed */
  get id(): string { return this.state.workerId }

  /**
   * Time passes: heartbeats, time limits, threads that do not start. The runtime ticks
   * itself on a timer; a host with a clock that is not throttled (a tab's ticker Web
   * Worker) calls this too.
   */
  tick(): void { this.feed({ type: 'tick', now: now() }) }

  /** Grows or shrinks the pool live. Threads removed lose their data (the grid recomputes what it still wants). */
  resize(nprocs: number): void {
    if (!Number.isInteger(nprocs) || nprocs < 1 || nprocs > 1024) throw new RangeError(`the pool size must be a whole number from 1 to 1024 (got ${nprocs})`)
    this.feed({ type: 'resize', nprocs, now: now() })
  }

  /** Stop taking tasks (the volunteer paused) or take them again. */
  setAccepting(accepting: boolean): void { this.feed({ type: 'set-accepting', accepting, now: now() }) }

  /** What the page shows: tasks running now, keys held. */
  stats(): WorkerStats { return this.state.stats() }

  /** Graceful leave: the coordinator moves wanted data elsewhere, then says goodbye. */
  retire(): void { this.feed({ type: 'retire', now: now() }) }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.wakeTimer)
    this.fetches.rejectAll(new Error('worker closed'))
    this.link?.close()
    this.feed({ type: 'close', now: now() })
    // wait for the threads to be gone, so that a process can exit as soon as we return
    await Promise.allSettled([...this.stopping])
  }

  // ───────────────────────────── events in ─────────────────────────────

  /** Feeds events to the machine and carries out its instructions; events that arrive meanwhile wait their turn. */
  private feed(...events: WorkerEvent[]): void {
    for (const e of events) this.pending.push(e)
    if (this.feeding) return
    this.feeding = true
    try {
      while (this.pending.length !== 0) {
        const batch = this.pending
        this.pending = []
        let out: Instruction[]
        try {
          out = batch.length === 1 ? this.state.handle(batch[0]!) : this.state.handleMany(batch)
        } catch (err) {
          this.log(`worker state error on ${batch.map(e => e.type).join(',')}: ${(err as Error).stack}`)
          continue
        }
        for (const i of out) {
          try { this.apply(i) } catch (err) { this.log(`error carrying out ${i.type}: ${(err as Error).stack}`) }
        }
      }
    } finally { this.feeding = false }
  }

  private onMessages(msgs: ToWorkerMessage[]): void {
    const t = now()
    const events: WorkerEvent[] = []
    let welcome: Extract<ToWorkerMessage, { type: 'welcome' }> | undefined
    for (const m of msgs) {
      try {
        switch (m.type) {
          case 'welcome':
            // later reconnects resume this identity (with the secret only this connection got);
            // what it held then is what the threads hold then
            if (this.link) {
              const hello = { ...this.link.hello } as typeof this.link.hello & { held?: unknown; resume?: string }
              if (m.resume) hello.resume = m.resume
              else delete hello.resume
              delete hello.held
              this.link.hello = hello
            }
            events.push({ type: 'welcome', id: m.id, resumed: m.resumed, now: t })
            welcome = m
            break
          case 'assign': {
            // one shape for every assignment (decoded messages have as many as the frames
            // that made them, and make the machine slow); the arguments leave for a thread
            // in a buffer of their own, not a view on the whole frame
            const deps: { key: string; nbytes: number }[] = new Array(m.deps.length)
            for (let i = 0; i < deps.length; i++) { const d = m.deps[i]!; deps[i] = { key: d.key, nbytes: d.nbytes } }
            events.push({
              type: 'assign', key: m.key, attempt: m.attempt, fn: m.fn, args: ownBytes(m.args), deps, push: m.push,
              digest: m.digest, timeout: m.timeout, priority: m.priority, seq: m.seq, ns: m.ns, now: t,
            })
            break
          }
          case 'module':
            // each client's modules live in its own namespace; its tasks carry the same `ns`
            events.push({ type: 'module', name: m.ns ? `${m.ns}/${m.name}` : m.name, source: m.source, now: t })
            break
          case 'function': case 'cancel-task': case 'steal': case 'free': case 'fetch': case 'free-functions': case 'free-modules':
            events.push({ ...m, now: t })
            break
          case 'put': {
            const data = this.joiner.add(`put:${m.key}`, m)
            if (data) events.push(m.digest === undefined ? { type: 'put', key: m.key, data, now: t } : { type: 'put', key: m.key, data, digest: m.digest, now: t })
            break
          }
          case 'data': {
            let data: Uint8Array | undefined
            try { data = this.joiner.add(`fetch:${m.id}`, m) } catch (err) {
              this.fetches.reject(m.id, err as Error)
              break
            }
            if (data) this.fetches.resolve(m.id, data)
            break
          }
          case 'data-error':
            this.joiner.drop(`fetch:${m.id}`)
            this.fetches.reject(m.id, m.error)
            break
          case 'goodbye':
            this.feed(...events)
            events.length = 0
            this.onStatusChange({ state: 'goodbye', reason: m.reason })
            void this.close()
            break
          case 'error':
            this.log(`the coordinator refused a message: ${m.error.message}`)
            break
          case 'story': {
            // a question about the machine's log, not an event: answered at once, on this worker's clock
            const entries = this.state.story(m.key).slice(-LIMITS.storyEntries).map(e => {
              const out: WorkerStoryEntry = { attempt: e.attempt, from: e.from, to: e.to, stimulus: e.stimulus, now: e.now }
              if (e.note !== undefined) out.note = e.note.slice(0, 1024)
              if (e.thread !== undefined) out.thread = e.thread
              return out
            })
            this.link?.send({ type: 'story', id: m.id, now: t, entries })
            break
          }
          default: {
            const never: never = m
            this.log(`unknown message ${(never as { type: string }).type}`)
          }
        }
      } catch (err) { this.log(`error handling ${m.type}: ${(err as Error).stack}`) }
    }
    if (events.length !== 0) this.feed(...events)
    if (welcome) this.onStatusChange(welcome.resume ? { state: 'welcome', id: welcome.id, resumed: welcome.resumed, resume: welcome.resume } : { state: 'welcome', id: welcome.id, resumed: welcome.resumed })
  }

  private onExecEvents(t: ThreadIO, raw: unknown): void {
    if (t.gone) return
    // a thread runs other people's code: what it says is parsed, and junk stops it like a crash
    // (a batch of plain 'finished' reports is checked by hand, shared/fast-parse.ts; anything else by its schema)
    const parsed = checkFirst(fastExecEvents, execEvents, raw)
    if (!parsed.success) {
      this.lose(t, `sent a malformed report (${describeIssues(parsed.error)})`, true)
      return
    }
    const events: ExecEvent[] = parsed.data
    const at = now()
    const out: WorkerEvent[] = new Array(events.length)
    for (let i = 0; i < events.length; i++) {
      const e = events[i]!
      // one shape per event type: the machine reads them fast
      out[i] = e.type === 'memory'
        ? { type: 'thread-memory', thread: t.id, inMemory: e.inMemory, spilled: e.spilled, paused: e.paused, now: at }
        : e.type === 'finished'
          ? { type: 'task-finished', thread: t.id, key: e.key, attempt: e.attempt, nbytes: e.nbytes, ms: e.ms, data: e.data, digest: e.digest, now: at }
          : { type: 'task-erred', thread: t.id, key: e.key, attempt: e.attempt, error: e.error, missing: e.missing, now: at }
    }
    this.feed(...out)
  }

  // ───────────────────────────── instructions out ─────────────────────────────

  private apply(i: Instruction): void {
    switch (i.type) {
      case 'send': this.link?.send(i.msg); return
      case 'run': {
        // the port queues messages until the thread listens; definitions travel before the tasks that use them
        const t = this.io.get(i.thread)
        if (t && !t.gone) t.port.postMessage(i.batch)
        return
      }
      case 'spawn-thread': this.spawn(i.thread, i.slot); return
      case 'stop-thread': {
        const t = this.io.get(i.thread)
        if (!t) return
        this.io.delete(i.thread)
        this.end(t, i.why)
        const p = Promise.resolve(t.handle.terminate()).catch(() => {})
        this.stopping.add(p)
        void p.finally(() => this.stopping.delete(p))
        return
      }
      case 'put-into-thread': {
        const t = this.io.get(i.thread)
        if (!t) return
        const { key } = i
        // cloned, not transferred: the machine keeps the bytes until the thread has them (a thread may die first)
        const data = ownBytes(i.data)
        this.call(t, 'put', () => t.api.put(key, data)).then(
          nbytes => this.feed({ type: 'put-done', thread: t.id, key, nbytes, now: now() }),
          err => this.feed({ type: 'put-failed', thread: t.id, key, error: (err as Error).message, now: now() }),
        )
        return
      }
      case 'copy-from-thread': {
        const from = this.io.get(i.from)
        const to = this.io.get(i.to)
        if (!to) return
        const { key } = i
        const failed = (err: unknown): void => this.feed({ type: 'put-failed', thread: i.to, key, error: (err as Error)?.message ?? String(err), from: i.from, now: now() })
        if (!from) { failed(new Error(`thread ${i.from} is gone`)); return }
        this.call(from, 'get', () => from.api.get(key))
          .then(bytes => {
            const own = ownBytes(bytes)
            return this.call(to, 'put', () => to.api.put(key, Comlink.transfer(own, [own.buffer as ArrayBuffer])))
          })
          .then(nbytes => this.feed({ type: 'put-done', thread: i.to, key, nbytes, now: now() }), failed)
        return
      }
      case 'free-in-thread': {
        const t = this.io.get(i.thread)
        if (t) void this.call(t, 'free', () => t.api.free(i.keys)).catch(() => {})
        return
      }
      case 'fetch-remote': {
        const { key } = i
        const req = this.fetches.open(this.callTimeout, `fetch ${key}`)
        this.link?.send({ type: 'fetch', id: req.id, key })
        req.promise.then(
          data => this.feed({ type: 'fetched', key, data, now: now() }),
          err => this.feed({ type: 'fetch-failed', key, error: toWireError(err, 'lost-data', key), now: now() }),
        )
        return
      }
      case 'serve': {
        const t = this.io.get(i.thread)
        if (!t) {
          this.link?.send({ type: 'data-error', id: i.id, key: i.key, error: { code: 'lost-data', message: `${i.key} is not held by this worker`, key: i.key } })
          return
        }
        // the fetches of one turn go to each thread in one call (a gather of 10,000 small
        // results would otherwise cost 10,000 comlink round trips)
        let q = this.serving.get(t)
        if (!q) {
          this.serving.set(t, q = [])
          queueMicrotask(() => void this.serveBatch(t))
        }
        q.push([i.id, i.key])
        return
      }
      case 'cancel-in-thread': {
        const t = this.io.get(i.thread)
        if (!t) return
        const { key, attempt } = i
        // no timeout: a thread busy with a long task answers when it is done, and the answer must be the thread's own
        this.call(t, 'cancel', () => t.api.cancel(key, attempt), Infinity).then(
          dropped => this.feed({ type: 'thread-cancel-answer', thread: t.id, key, attempt, dropped, now: now() }),
          () => {},
        )
        return
      }
      case 'query-memory': {
        const t = this.io.get(i.thread)
        if (!t) return
        this.call(t, 'memory', () => t.api.memory(), 5_000).then(
          m => this.feed({ type: 'thread-memory', thread: t.id, inMemory: m.inMemory, spilled: m.spilled, paused: m.paused, now: now() }),
          () => { /* a busy or dying thread: keep its last figures */ },
        )
        return
      }
      case 'wake-at':
        this.wakeAt = i.at
        this.arm()
        return
      case 'log': this.log(i.line); return
      default: {
        const never: never = i
        this.log(`unknown instruction ${(never as { type: string }).type}`)
      }
    }
  }

  /** One timer, for the machine's next deadline. */
  private arm(): void {
    clearTimeout(this.wakeTimer)
    this.wakeTimer = undefined
    const at = this.wakeAt
    if (at === null || this.closed) return
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = undefined
      this.tick()
      // a timer may fire a little before its time by our clock: the deadline is still ahead, so wait again
      if (this.wakeTimer === undefined) this.arm()
    }, Math.max(1, Math.ceil(at - now())))
    // the timer must not keep a process alive (Node timers have unref)
    ;(this.wakeTimer as { unref?: () => void }).unref?.()
  }

  private spawn(id: number, slot: number): void {
    let handle: ThreadHandle
    try {
      handle = this.spawnThread()
    } catch (err) {
      queueMicrotask(() => this.feed({ type: 'thread-died', thread: id, reason: `could not be made: ${(err as Error).message}`, now: now() }))
      return
    }
    const api = Comlink.wrap<ExecutorApi>(handle.endpoint)
    let kill!: (reason: string) => void
    const dead = new Promise<never>((_, reject) => { kill = reason => reject(new Error(reason)) })
    dead.catch(() => {})
    const channel = new MessageChannel()
    // a MessagePort is a TaskPort (the cast: DOM's typings of postMessage are wider than the core's)
    const t: ThreadIO = { id, slot, handle, api, port: channel.port1 as unknown as TaskPort, dead, kill, gone: false, started: Promise.resolve() }
    this.io.set(id, t)
    handle.onExit(reason => this.lose(t, reason, false))
    channel.port1.addEventListener('message', e => this.onExecEvents(t, e.data))
    channel.port1.start?.()
    const extra = this.threadInit?.(slot) ?? {}
    const onEvents = Comlink.proxy((events: ExecEvent[]) => this.onExecEvents(t, events))
    if (this.unref) {
      handle.unref?.()
      ;(channel.port1 as { unref?: () => void }).unref?.()
      unrefWhenSent(onEvents)
    }
    // no timeout here: the machine replaces a thread that does not start in time
    t.started = this.call(t, 'init', async () => {
      await api.init(onEvents, this.nthreads, extra)
      await api.connect(Comlink.transfer(channel.port2 as unknown as TaskPort, [channel.port2 as unknown as ArrayBuffer]))
    }, Infinity).then(
      () => { this.feed({ type: 'thread-started', thread: id, now: now() }) },
      err => {
        if (t.gone) throw err
        this.log(`thread ${slot} could not start: ${(err as Error).message}`)
        this.io.delete(id)
        this.end(t, 'could not start')
        void Promise.resolve(handle.terminate()).catch(() => {})
        this.feed({ type: 'thread-died', thread: id, reason: `could not start: ${(err as Error).message}`, now: now() })
        throw err
      },
    )
    t.started.catch(() => {})
  }

  /** A thread died (or is stopped for what it did): its I/O ends and the machine fails its tasks over like a crash. */
  private lose(t: ThreadIO, reason: string, terminate: boolean): void {
    if (t.gone) return
    if (terminate) this.log(`thread ${t.slot} ${reason}: stopped`)
    this.io.delete(t.id)
    this.end(t, reason)
    if (terminate) {
      const p = Promise.resolve(t.handle.terminate()).catch(() => {})
      this.stopping.add(p)
      void p.finally(() => this.stopping.delete(p))
    }
    this.feed({ type: 'thread-died', thread: t.id, reason, now: now() })
  }

  /** The thread's I/O is over: calls into it fail at once. */
  private end(t: ThreadIO, reason: string): void {
    t.gone = true
    t.kill(reason)
    t.port.close?.()
    this.serving.delete(t)
  }

  /**
   * A call into a thread with a timeout, failing at once if the thread dies. A thread
   * busy with a long task answers late, so a timeout only fails the call.
   */
  private call<T>(t: ThreadIO, what: string, f: () => Promise<T>, timeout = this.callTimeout): Promise<T> {
    if (t.gone) return Promise.reject(new Error(`thread ${t.slot} is gone`))
    if (!Number.isFinite(timeout)) return Promise.race([f(), t.dead])
    let timer: ReturnType<typeof setTimeout> | undefined
    const timed = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`thread ${t.slot} did not answer ${what} in ${timeout} ms`)), timeout)
      ;(timer as { unref?: () => void }).unref?.()
    })
    return Promise.race([f(), t.dead, timed]).finally(() => clearTimeout(timer))
  }

  private async serveBatch(t: ThreadIO): Promise<void> {
    const q = this.serving.get(t) ?? []
    this.serving.delete(t)
    if (q.length === 0) return
    try {
      const out = await this.call(t, 'getMany', () => t.api.getMany(q.map(([, key]) => key), true))
      q.forEach(([reqId, key], i) => {
        const data = out[i]
        if (data instanceof Uint8Array) this.link?.send({ type: 'data', id: reqId, key, data })
        else if (typeof data === 'object') {
          // a big value the thread is still encoding: its parts leave as they are ready
          streamParts(data, part => this.link?.send({ type: 'data', id: reqId, key, ...part }), () => !t.gone).catch((err: unknown) => {
            this.link?.send({ type: 'data-error', id: reqId, key, error: toWireError(err, 'lost-data', key) })
          })
        } else this.link?.send({ type: 'data-error', id: reqId, key, error: { code: 'lost-data', message: data ?? `${key} is not held here`, key } })
      })
    } catch (err) {
      for (const [reqId, key] of q) this.link?.send({ type: 'data-error', id: reqId, key, error: toWireError(err, 'lost-data', key) })
    }
  }
}

export type { WireError }
