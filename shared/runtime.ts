/**
 * The worker runtime's main side, the same for a Node agent and a browser tab: it talks
 * to the coordinator over a Link and drives a pool of threads (worker_threads or Web
 * Workers) through comlink. It sends each task to the thread that already holds its
 * data, fetches what no local thread holds through the coordinator, answers the
 * coordinator's fetches from its threads, and survives a thread that crashes: only that
 * thread's tasks fail, its data is reported gone, and a new thread takes its place.
 */
import * as Comlink from 'comlink'
import type { Link, LinkStatus } from './link.js'
import type { ToWorkerMessage, WorkerMessage } from './protocol.js'
import { PartJoiner, PendingRequests, ownBytes } from './wire.js'
import type { ExecEvent, ExecTask, ExecutorApi, TaskBatch, TaskPort } from './executor.js'
import { toWireError, TimeoutError, type WireError } from './errors.js'

/** A thread as the host made it. */
export interface ThreadHandle {
  /** comlink endpoint of the thread (a Worker, or nodeEndpoint(worker) in Node) */
  endpoint: Comlink.Endpoint
  /** called once when the thread dies for any reason, with why */
  onExit(cb: (reason: string) => void): void
  /** stops the thread; may return a promise that settles once it is gone */
  terminate(): void | Promise<unknown>
}

export interface RuntimeOptions {
  /** processes: how many threads */
  nprocs: number
  /** threads: tasks each runs at once */
  nthreads: number
  /** makes a thread */
  spawn: () => ThreadHandle
  /** ms a call into a thread may take before it fails (a thread that does not start in this time is replaced). Default 60 s. */
  callTimeout?: number
  /** tasks queued in a thread beyond its running ones. Default 64. */
  lookahead?: number
  /** log lines go here */
  log?: (line: string) => void
  /** extra options for thread `index`'s executor (memory budget, spill store name…) */
  threadInit?: (index: number) => Record<string, unknown>
  /** cancelling a running task terminates its thread (browsers: a hard cancel). Default false. */
  hardCancel?: boolean
}

/** Why a thread was stopped: decides what happens to the tasks it had. */
type Death =
  | { cause: 'crash' }
  /** terminated to stop one task (hard cancel or time limit); the others go to other threads */
  | { cause: 'cancel' | 'timeout'; culprit: string }
  /** the pool shrank */
  | { cause: 'resize' }

type Assign = Extract<ToWorkerMessage, { type: 'assign' }>

interface Thread {
  index: number
  handle: ThreadHandle
  api: Comlink.Remote<ExecutorApi>
  ready: Promise<unknown>
  alive: boolean
  /** tasks sent and not reported */
  inflight: Map<string, Assign>
  /** keys whose data this thread holds */
  held: Set<string>
  fns: Set<string>
  modules: Set<string>
  dead: Promise<never>
  kill: (reason: string) => void
  started: number
  /** the executor is past its memory high-water mark */
  memPaused: boolean
  inMemory: number
  spilled: number
  /** time-limit timers of its running tasks, by key@attempt */
  timers: Map<string, ReturnType<typeof setTimeout>>
  /** set before terminate(): what to do with its tasks */
  death: Death | undefined
  /** the task stream: batches out, events in (see TaskPort) */
  port: TaskPort
  /** definitions to send with the next batch */
  defs: TaskBatch
}

const id = (key: string, attempt: number): string => `${key}@${attempt}`

export class WorkerRuntime {
  readonly threads: Thread[] = []
  private readonly functions = new Map<string, string>()
  private readonly modules = new Map<string, string>()
  /** assigned, not yet in a thread */
  private readonly waiting: Assign[] = []
  /** assignments known, by key@attempt */
  private readonly known = new Map<string, Assign>()
  /** finished reports, kept so a reconnect can resend ones that may have been lost */
  private readonly reports = new Map<string, WorkerMessage>()
  /** the primary thread holding each key */
  private readonly where = new Map<string, Thread>()
  private readonly fetches = new PendingRequests<Uint8Array>()
  private readonly fetching = new Map<string, Promise<Uint8Array>>()
  private readonly joiner = new PartJoiner()
  private readonly opts: Required<Omit<RuntimeOptions, 'threadInit'>> & Pick<RuntimeOptions, 'threadInit'>
  private deaths: number[] = []
  private accepting = true
  private sentAccepting = true
  private closed = false
  private link: Link<WorkerMessage, ToWorkerMessage> | undefined
  /** tasks done, and ms of CPU given, for the page */
  done = 0
  busyMs = 0
  id = ''
  onStatusChange: (status: LinkStatus | { state: 'welcome'; id: string; resumed: boolean } | { state: 'goodbye'; reason: string }) => void = () => {}

  /**
   * Starts the pool. Attach a link to the coordinator with `attach` (after `adopt`, when
   * the threads may hold spilled data from before a reload).
   */
  constructor(options: RuntimeOptions) {
    this.opts = { callTimeout: 60_000, lookahead: 64, log: () => {}, hardCancel: false, ...options }
    for (let i = 0; i < this.opts.nprocs; i++) this.threads.push(this.makeThread(i))
  }

  /** Connects the runtime to the coordinator. */
  attach(link: Link<WorkerMessage, ToWorkerMessage>): void {
    this.link = link
    link.onMessages = msgs => this.onMessages(msgs)
    link.onStatus = s => {
      if (s.state === 'disconnected') this.fetches.rejectAll(new TimeoutError(`connection lost: ${s.reason}`))
      this.onStatusChange(s)
    }
  }

  private send(msg: WorkerMessage): void { this.link?.send(msg) }

  /**
   * Keys the threads hold from before (spilled to IndexedDB or disk by a previous page
   * load): put them in the hello's `held` so the coordinator doesn't recompute them.
   */
  async adopt(): Promise<{ key: string; nbytes: number }[]> {
    const out: { key: string; nbytes: number }[] = []
    await Promise.all(this.threads.map(async t => {
      try {
        await t.ready
        const held = await this.call(t, 'adopt', () => t.api.adopt())
        for (const h of held) {
          if (this.where.has(h.key)) continue
          t.held.add(h.key)
          this.where.set(h.key, t)
          out.push(h)
        }
      } catch (err) { this.opts.log(`thread ${t.index} could not adopt its spilled data: ${(err as Error).message}`) }
    }))
    return out
  }

  /** Total tasks the pool runs at once. */
  get slots(): number { return this.threads.length * this.opts.nthreads }

  /** Renews this worker's leases at the coordinator. Hosts call it from an unthrottled tick. */
  heartbeat(): void {
    if (!this.link?.connected || this.beating) return
    this.beating = true
    // with the memory figures of every thread (for the dashboard and the page)
    void Promise.all(this.threads.filter(t => t.alive).map(async t => {
      try {
        const m = await this.call(t, 'memory', () => t.api.memory(), 5_000)
        t.inMemory = m.inMemory
        t.spilled = m.spilled
      } catch { /* a busy or dying thread: keep its last figures */ }
    })).finally(() => {
      this.beating = false
      let memory = 0, spilled = 0
      for (const t of this.threads) if (t.alive) { memory += t.inMemory; spilled += t.spilled }
      this.send({ type: 'heartbeat', memory, spilled })
    })
  }

  private beating = false

  /** Grows or shrinks the pool live. Threads removed lose their data (the grid recomputes what it still wants). */
  resize(nprocs: number): void {
    if (!Number.isInteger(nprocs) || nprocs < 1 || nprocs > 1024) throw new RangeError(`the pool size must be a whole number from 1 to 1024 (got ${nprocs})`)
    if (nprocs === this.threads.length) return
    while (this.threads.length < nprocs) this.threads.push(this.makeThread(this.threads.length))
    while (this.threads.length > nprocs) {
      const t = this.threads.pop()!
      this.stopThread(t, { cause: 'resize' }, 'the pool shrank')
    }
    this.opts.nprocs = nprocs
    this.sendStatus(true)
    this.pump()
  }

  private makeThread(index: number): Thread {
    const handle = this.opts.spawn()
    const api = Comlink.wrap<ExecutorApi>(handle.endpoint)
    let kill!: (reason: string) => void
    const dead = new Promise<never>((_, reject) => { kill = reason => reject(new Error(reason)) })
    dead.catch(() => {})
    const channel = new MessageChannel()
    const t: Thread = {
      index, handle, api, alive: true, inflight: new Map(), held: new Set(), fns: new Set(), modules: new Set(),
      dead, kill, started: Date.now(), ready: Promise.resolve(), memPaused: false, inMemory: 0, spilled: 0,
      timers: new Map(), death: undefined, port: channel.port1, defs: { tasks: [] },
    }
    handle.onExit(reason => this.threadDied(t, reason))
    channel.port1.addEventListener('message', e => this.onEvents(t, e.data as ExecEvent[]))
    channel.port1.start?.()
    const extra = this.opts.threadInit?.(index) ?? {}
    const onEvents = Comlink.proxy((events: ExecEvent[]) => this.onEvents(t, events))
    t.ready = this.call(t, 'init', async () => {
      await api.init(onEvents, this.opts.nthreads, extra)
      return api.connect(Comlink.transfer(channel.port2, [channel.port2 as unknown as ArrayBuffer]))
    })
    t.ready.catch(() => {}) // a thread that dies before it is ready is handled by threadDied
    return t
  }

  /**
   * A call into a thread with a timeout, failing at once if the thread dies. A thread
   * busy with a long task answers late, so a timeout only fails the call — except at
   * start (`init`), where no answer means the thread is broken and it is replaced.
   */
  private call<T>(t: Thread, what: string, f: () => Promise<T>, timeout = this.opts.callTimeout): Promise<T> {
    if (!t.alive) return Promise.reject(new Error(`thread ${t.index} is gone`))
    let timer: ReturnType<typeof setTimeout> | undefined
    const timed = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new TimeoutError(`thread ${t.index} did not answer ${what} in ${timeout} ms`))
        if (what === 'init') {
          this.opts.log(`thread ${t.index} did not start; replacing it`)
          this.stopThread(t, { cause: 'crash' }, 'did not start')
        }
      }, timeout)
      // a pending call must not keep a process alive (Node timers have unref)
      ;(timer as { unref?: () => void }).unref?.()
    })
    return Promise.race([f(), t.dead, timed]).finally(() => clearTimeout(timer))
  }

  /** Terminates a thread on purpose; `death` says what becomes of its tasks. */
  private stopThread(t: Thread, death: Death, reason: string): void {
    if (!t.alive) return
    t.death = death
    t.handle.terminate()
    this.threadDied(t, reason)
  }

  private threadDied(t: Thread, reason: string): void {
    if (!t.alive) return
    t.alive = false
    t.kill(reason)
    t.port.close?.()
    for (const timer of t.timers.values()) clearTimeout(timer)
    t.timers.clear()
    const death = t.death ?? { cause: 'crash' }
    const lost: string[] = []
    for (const key of t.held) {
      if (this.where.get(key) !== t) continue
      this.where.delete(key)
      const other = this.threads.find(o => o !== t && o.alive && o.held.has(key))
      if (other) this.where.set(key, other)
      else lost.push(key)
    }
    // the tasks it was running: a crash fails them; other tasks it had go to other threads
    let i = 0
    const requeue: Assign[] = []
    for (const [k, a] of t.inflight) {
      const running = i++ < this.opts.nthreads
      if (death.cause === 'crash' && running) {
        this.known.delete(k)
        this.send({ type: 'erred', key: a.key, attempt: a.attempt, crashed: true, error: { code: 'task-error', message: `the thread running ${a.key} died: ${reason}`, key: a.key } })
      } else if ((death.cause === 'cancel' || death.cause === 'timeout') && k === death.culprit) {
        this.known.delete(k)
        if (death.cause === 'timeout') {
          const msg: WorkerMessage = { type: 'erred', key: a.key, attempt: a.attempt, error: { code: 'task-error', name: 'TimeoutError', message: `${a.key} ran past its time limit of ${a.timeout} ms; its thread was stopped`, key: a.key } }
          this.remember(k, msg)
          this.send(msg)
        }
      } else requeue.push(a)
    }
    t.inflight.clear()
    this.waiting.unshift(...requeue)
    if (lost.length) this.send({ type: 'released', keys: lost })
    this.sendStatus()
    if (this.closed) return
    if (death.cause === 'resize') { this.pump(); return }
    if (death.cause === 'crash') this.opts.log(`thread ${t.index} died: ${reason}`)
    // replace it, unless threads keep dying at start (no respawn loop)
    const now = Date.now()
    const slot = this.threads.indexOf(t)
    if (death.cause === 'crash') {
      this.deaths = this.deaths.filter(d => now - d < 10_000)
      this.deaths.push(now)
      if (this.deaths.length > 3 * this.opts.nprocs + 3) {
        this.opts.log('threads keep dying; not replacing them for now')
        setTimeout(() => { if (!this.closed && slot >= 0 && this.threads[slot] === t) this.replace(slot) }, 5_000)
        return
      }
    }
    if (slot >= 0) this.replace(slot)
  }

  private replace(slot: number): void {
    this.threads[slot] = this.makeThread(slot)
    this.pump()
  }

  private onMessages(msgs: ToWorkerMessage[]): void {
    for (const m of msgs) {
      try { this.onMessage(m) } catch (err) { this.opts.log(`error handling ${m.type}: ${(err as Error).stack}`) }
    }
    this.pump()
  }

  private onMessage(m: ToWorkerMessage): void {
    switch (m.type) {
      case 'welcome':
        this.id = m.id
        // later reconnects resume this identity; what it held then is what the threads hold then
        if (this.link) {
          const hello = { ...this.link.hello, resume: m.id } as typeof this.link.hello & { held?: unknown }
          delete hello.held
          this.link.hello = hello
        }
        if (m.resumed) for (const r of this.reports.values()) this.send(r)
        // a fresh identity starts accepting: say so if we are not
        if (!m.resumed) { this.sentAccepting = true; this.sendStatus() }
        this.onStatusChange({ state: 'welcome', id: m.id, resumed: m.resumed })
        return
      case 'function':
        this.functions.set(m.hash, m.source)
        return
      case 'module':
        this.modules.set(m.name, m.source)
        // a new version of a module reaches every thread with its next batch
        for (const t of this.threads) if (t.alive) { t.modules.delete(m.name) }
        return
      case 'assign': {
        const k = id(m.key, m.attempt)
        const report = this.reports.get(k)
        if (report) { this.send(report); return }
        if (this.known.has(k)) return
        const a = { ...m, args: ownBytes(m.args) }
        this.known.set(k, a)
        this.waiting.push(a)
        return
      }
      case 'cancel-task':
      case 'steal': {
        const k = id(m.key, m.attempt)
        const ok = this.dropWaiting(k)
        if (m.type === 'cancel-task') {
          if (ok) return
          // a running task can only be stopped with its thread (a hard cancel, in browsers);
          // a thread busy with it could not even answer a request to drop it
          const t = this.threads.find(th => th.alive && th.inflight.has(k))
          if (t && this.opts.hardCancel && this.isRunning(t, k)) {
            this.stopThread(t, { cause: 'cancel', culprit: k }, `${m.key} was cancelled while running`)
            return
          }
          this.cancelInThread(m.key, m.attempt, () => {})
          return
        }
        if (ok) { this.send({ type: 'steal-response', key: m.key, attempt: m.attempt, ok: true }); return }
        this.cancelInThread(m.key, m.attempt, dropped => this.send({ type: 'steal-response', key: m.key, attempt: m.attempt, ok: dropped }))
        return
      }
      case 'free':
        this.free(m.keys)
        return
      case 'put': {
        const data = this.joiner.add(`put:${m.key}`, m)
        if (data) void this.store(m.key, data)
        return
      }
      case 'fetch':
        this.serve(m.id, m.key)
        return
      case 'data': {
        const data = this.joiner.add(`fetch:${m.id}`, m)
        if (data) this.fetches.resolve(m.id, data)
        return
      }
      case 'data-error':
        this.joiner.drop(`fetch:${m.id}`)
        this.fetches.reject(m.id, m.error)
        return
      case 'goodbye':
        this.onStatusChange({ state: 'goodbye', reason: m.reason })
        void this.close()
        return
      case 'error':
        this.opts.log(`the coordinator refused a message: ${m.error.message}`)
        return
      default: {
        const never: never = m
        this.opts.log(`unknown message ${(never as { type: string }).type}`)
      }
    }
  }

  private dropWaiting(k: string): boolean {
    const i = this.waiting.findIndex(a => id(a.key, a.attempt) === k)
    if (i < 0) return false
    this.waiting.splice(i, 1)
    this.known.delete(k)
    return true
  }

  /** Whether the task is (most likely) running: among the first `nthreads` the thread was given. */
  private isRunning(t: Thread, k: string): boolean {
    let i = 0
    for (const key of t.inflight.keys()) {
      if (key === k) return true
      if (++i >= this.opts.nthreads) return false
    }
    return false
  }

  private cancelInThread(key: string, attempt: number, done: (dropped: boolean) => void): void {
    const k = id(key, attempt)
    const t = this.threads.find(th => th.inflight.has(k))
    if (!t) { done(false); return }
    this.call(t, 'cancel', () => t.api.cancel(key, attempt), 2_000).then(dropped => {
      if (dropped) { t.inflight.delete(k); this.known.delete(k) }
      done(dropped)
      this.pump()
    }, () => done(false))
  }

  private free(keys: string[]): void {
    const byThread = new Map<Thread, string[]>()
    for (const key of keys) {
      this.where.delete(key)
      for (const t of this.threads) if (t.held.delete(key)) {
        let l = byThread.get(t)
        if (!l) byThread.set(t, l = [])
        l.push(key)
      }
    }
    for (const [t, ks] of byThread) void this.call(t, 'free', () => t.api.free(ks)).catch(() => {})
  }

  private async store(key: string, data: Uint8Array): Promise<void> {
    const t = this.leastLoaded(true)
    if (!t) return
    try {
      await t.ready
      const own = ownBytes(data)
      const nbytes = await this.call(t, 'put', () => t.api.put(key, Comlink.transfer(own, [own.buffer as ArrayBuffer])))
      t.held.add(key)
      this.where.set(key, t)
      this.send({ type: 'stored', key, nbytes })
    } catch (err) {
      this.opts.log(`could not store ${key}: ${(err as Error).message}`)
    }
  }

  /** Answers the coordinator's fetch of a key we hold. */
  private serve(reqId: number, key: string): void {
    const t = this.where.get(key)
    if (!t || !t.alive) {
      this.send({ type: 'data-error', id: reqId, key, error: { code: 'lost-data', message: `${key} is not held by this worker`, key } })
      return
    }
    // the fetches of one turn go to each thread in one call (a gather of 10,000 small
    // results would otherwise cost 10,000 comlink round trips)
    let q = this.serving.get(t)
    if (!q) {
      this.serving.set(t, q = [])
      queueMicrotask(() => void this.serveBatch(t))
    }
    q.push([reqId, key])
  }

  private readonly serving = new Map<Thread, [number, string][]>()

  private async serveBatch(t: Thread): Promise<void> {
    const q = this.serving.get(t) ?? []
    this.serving.delete(t)
    try {
      const out = await this.call(t, 'getMany', () => t.api.getMany(q.map(([, key]) => key)))
      q.forEach(([reqId, key], i) => {
        const data = out[i]
        if (data instanceof Uint8Array) this.send({ type: 'data', id: reqId, key, data })
        else this.send({ type: 'data-error', id: reqId, key, error: { code: 'lost-data', message: data ?? `${key} is not held here`, key } })
      })
    } catch (err) {
      for (const [reqId, key] of q) this.send({ type: 'data-error', id: reqId, key, error: toWireError(err, 'lost-data', key) })
    }
  }

  private leastLoaded(any = false): Thread | undefined {
    let best: Thread | undefined
    for (const t of this.threads) {
      if (!t.alive) continue
      if (!any && t.inflight.size >= this.opts.nthreads + this.opts.lookahead) continue
      if (!best || t.inflight.size < best.inflight.size) best = t
    }
    return best
  }

  /** Hands waiting tasks to threads: to the one holding most of their data, else the least busy. */
  private pump(): void {
    if (this.closed || this.waiting.length === 0) return
    const batches = new Map<Thread, ExecTask[]>()
    let i = 0
    const cap = this.opts.nthreads + this.opts.lookahead
    while (i < this.waiting.length) {
      const a = this.waiting[i]!
      let t: Thread | undefined
      if (a.deps.length) {
        let bestBytes = -1
        for (const th of this.threads) {
          if (!th.alive || th.inflight.size >= cap) continue
          let b = 0
          for (const d of a.deps) if (th.held.has(d.key)) b += d.nbytes + 1
          if (b > bestBytes || (b === bestBytes && t && th.inflight.size < t.inflight.size)) { bestBytes = b; t = th }
        }
      } else t = this.leastLoaded()
      if (!t) { i++; continue }
      this.waiting.splice(i, 1)
      const k = id(a.key, a.attempt)
      t.inflight.set(k, a)
      const missing = a.deps.filter(d => !t!.held.has(d.key))
      if (missing.length) {
        void this.prepare(t, a, missing.map(d => d.key))
        continue
      }
      let batch = batches.get(t)
      if (!batch) batches.set(t, batch = [])
      batch.push(this.execTask(t, a))
    }
    for (const [t, batch] of batches) this.run(t, batch)
  }

  private execTask(t: Thread, a: Assign): ExecTask {
    // definitions travel on the task port with the batch, so they arrive first
    if (!t.fns.has(a.fn)) {
      const source = this.functions.get(a.fn)
      if (source !== undefined) {
        t.fns.add(a.fn)
        ;(t.defs.fns ??= []).push([a.fn, source])
      }
    }
    for (const [name, source] of this.modules) if (!t.modules.has(name)) {
      t.modules.add(name)
      ;(t.defs.modules ??= []).push([name, source])
    }
    const task: ExecTask = { key: a.key, attempt: a.attempt, fn: a.fn, args: a.args, deps: a.deps.map(d => d.key), push: a.push, digest: a.digest ?? false }
    if (a.timeout !== undefined) task.timeout = a.timeout
    return task
  }

  private run(t: Thread, tasks: ExecTask[]): void {
    // the port queues messages until the thread listens, so no need to wait for `ready`
    const batch = t.defs
    batch.tasks = tasks
    t.defs = { tasks: [] }
    t.port.postMessage(batch)
    this.armTimers(t)
  }

  /** Starts the time limit of tasks with one that are (most likely) running now: the first `nthreads` of the thread. */
  private armTimers(t: Thread): void {
    let i = 0
    for (const [k, a] of t.inflight) {
      if (i++ >= this.opts.nthreads) break
      if (a.timeout === undefined || t.timers.has(k)) continue
      t.timers.set(k, setTimeout(() => {
        t.timers.delete(k)
        if (t.alive && t.inflight.has(k)) this.stopThread(t, { cause: 'timeout', culprit: k }, `${a.key} ran past its time limit`)
      }, a.timeout))
    }
  }

  /** Brings dependencies the thread lacks (from a sibling thread or through the coordinator), then runs the task. */
  private async prepare(t: Thread, a: Assign, missing: string[]): Promise<void> {
    const lostFrom: { key: string; holder: string }[] = []
    await Promise.all(missing.map(async key => {
      try {
        let data: Uint8Array
        const sibling = this.where.get(key)
        if (sibling && sibling !== t && sibling.alive) data = await this.call(sibling, 'get', () => sibling.api.get(key))
        else data = await this.fetchRemote(key)
        if (!t.alive) return
        if (!t.held.has(key)) {
          await this.call(t, 'put', () => t.api.put(key, data))
          t.held.add(key)
          if (!this.where.has(key)) this.where.set(key, t)
        }
      } catch (err) {
        lostFrom.push({ key, holder: (err as { holder?: string }).holder ?? '' })
      }
    }))
    const k = id(a.key, a.attempt)
    if (!t.alive || !t.inflight.has(k)) return
    if (lostFrom.length) {
      t.inflight.delete(k)
      this.known.delete(k)
      this.send({ type: 'missing', key: a.key, attempt: a.attempt, missing: lostFrom })
      return
    }
    this.run(t, [this.execTask(t, a)])
  }

  private fetchRemote(key: string): Promise<Uint8Array> {
    let p = this.fetching.get(key)
    if (!p) {
      const req = this.fetches.open(this.opts.callTimeout, `fetch ${key}`)
      this.send({ type: 'fetch', id: req.id, key })
      p = req.promise.finally(() => this.fetching.delete(key))
      this.fetching.set(key, p)
    }
    return p
  }

  private onEvents(t: Thread, events: ExecEvent[]): void {
    if (!t.alive) return
    for (const ev of events as (ExecEvent | { type: 'memory'; inMemory: number; spilled: number; paused: boolean })[]) {
      if (ev.type === 'memory') {
        t.memPaused = ev.paused
        t.inMemory = ev.inMemory
        t.spilled = ev.spilled
        this.sendStatus()
        continue
      }
      const k = id(ev.key, ev.attempt)
      t.inflight.delete(k)
      this.known.delete(k)
      const timer = t.timers.get(k)
      if (timer !== undefined) { clearTimeout(timer); t.timers.delete(k) }
      if (ev.type === 'finished') {
        t.held.add(ev.key)
        this.where.set(ev.key, t)
        this.done++
        this.busyMs += ev.ms
        const msg: WorkerMessage = { type: 'finished', key: ev.key, attempt: ev.attempt, nbytes: ev.nbytes, ms: ev.ms }
        if (ev.digest) msg.digest = ev.digest
        this.remember(k, msg)
        this.send(ev.data ? { ...msg, data: ev.data } : msg)
      } else if (ev.missing?.length) {
        this.send({ type: 'missing', key: ev.key, attempt: ev.attempt, missing: ev.missing.map(key => ({ key, holder: this.id })) })
      } else {
        const msg: WorkerMessage = { type: 'erred', key: ev.key, attempt: ev.attempt, error: ev.error }
        this.remember(k, msg)
        this.send(msg)
      }
    }
    if (t.inflight.size !== 0) this.armTimers(t)
    this.pump()
  }

  private remember(k: string, msg: WorkerMessage): void {
    this.reports.set(k, msg)
    if (this.reports.size > 20_000) {
      let n = 10_000
      for (const key of this.reports.keys()) { this.reports.delete(key); if (--n === 0) break }
    }
  }

  /** Stop taking tasks (the volunteer paused) or take them again. */
  setAccepting(accepting: boolean): void {
    this.accepting = accepting
    this.sendStatus()
  }

  /** Tells the coordinator whether to send tasks (paused by the volunteer, or memory past the high mark). */
  private sendStatus(slotsChanged = false): void {
    const accepting = this.accepting && !this.threads.some(t => t.alive && t.memPaused)
    if (accepting === this.sentAccepting && !slotsChanged) return
    this.sentAccepting = accepting
    let memory = 0, spilled = 0
    for (const t of this.threads) if (t.alive) { memory += t.inMemory; spilled += t.spilled }
    const msg: WorkerMessage = { type: 'status', accepting, memory, spilled }
    if (slotsChanged) msg.slots = this.slots
    this.send(msg)
  }

  get isAccepting(): boolean { return this.accepting }

  /** What the page shows: tasks running now, keys held. */
  stats(): { running: number; queued: number; held: number; done: number; busyMs: number; threads: number; memory: number; spilled: number; accepting: boolean } {
    let running = 0, memory = 0, spilled = 0
    const held = new Set<string>()
    for (const t of this.threads) {
      if (!t.alive) continue
      running += Math.min(t.inflight.size, this.opts.nthreads)
      memory += t.inMemory
      spilled += t.spilled
      for (const k of t.held) held.add(k)
    }
    return {
      running, queued: this.waiting.length + this.threads.reduce((s, t) => s + Math.max(0, t.inflight.size - this.opts.nthreads), 0),
      held: held.size, done: this.done, busyMs: this.busyMs, threads: this.threads.filter(t => t.alive).length, memory, spilled,
      accepting: this.sentAccepting,
    }
  }

  /** Graceful leave: the coordinator moves wanted data elsewhere, then says goodbye. */
  retire(): void { this.send({ type: 'retire' }) }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.fetches.rejectAll(new Error('worker closed'))
    this.link?.close()
    // wait for the threads to be gone, so that a process can exit as soon as we return
    await Promise.allSettled(this.threads.map(t => {
      t.alive = false
      t.kill('the worker closed') // settles every call still waiting on it
      t.port.close?.()
      return t.handle.terminate()
    }))
  }
}

export type { WireError }
