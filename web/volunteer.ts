/**
 * A volunteer's tab as a worker of the grid: the lifecycle behind the worker page. It
 * starts a pool of Web Workers (the shared WorkerRuntime over spawnWebWorker), takes
 * back what they spilled before a reload, joins the coordinator of this page's origin,
 * and lets the volunteer resize the pool, pause, leave and rejoin. The page (worker.ts)
 * only renders `state` and `stats()` and calls these methods.
 */
import { connectLink, type Link } from '../shared/link.js'
import { WorkerRuntime } from '../core/runtime.js'
import { AuthError } from '../shared/errors.js'
import type { Hello, ToWorkerMessage, WorkerMessage } from '../shared/protocol.js'
import { spawnWebWorker } from './pool.js'
import { collectStaleSpillDbs, deleteSpillDbs, loadIdentity, markAlive, saveIdentity, spillDbName, type TabIdentity } from './tab.js'

/** Where the tab is in its life as a worker. */
export type VolunteerState =
  /** the Web Workers start and look for data spilled before a reload */
  | { state: 'starting' }
  /** trying to reach the coordinator (`error`: why the last try failed) */
  | { state: 'connecting'; error?: string }
  /** a worker of the grid (`resumed`: kept its identity across a reload or a lost connection) */
  | { state: 'connected'; id: string; resumed: boolean }
  /** the connection dropped; socket.io is reconnecting, work in the tab goes on */
  | { state: 'reconnecting'; reason: string }
  /** the volunteer left: data the grid wants is moving to other workers */
  | { state: 'leaving' }
  /** not a worker any more (left, or the coordinator shut down) */
  | { state: 'left'; reason: string }
  /** refused for good (a wrong join token, say) */
  | { state: 'failed'; error: string }

type StateName = VolunteerState['state']

/** Which state may follow which: anything else is a bug, and throws. */
const NEXT: Record<StateName, readonly StateName[]> = {
  starting: ['connecting', 'failed'],
  connecting: ['connecting', 'connected', 'reconnecting', 'failed', 'left'],
  connected: ['connected', 'reconnecting', 'leaving', 'left', 'failed'],
  reconnecting: ['reconnecting', 'connected', 'leaving', 'left', 'failed'],
  leaving: ['leaving', 'connected', 'reconnecting', 'left', 'failed'],
  left: ['starting'],
  failed: ['starting'],
}

export interface VolunteerOptions {
  /** the coordinator (this page's origin) */
  url: string
  /** Web Workers in the pool */
  workers: number
  /** bytes of task data the whole tab keeps in memory before spilling to IndexedDB */
  memoryBudget: number
  /** the name the grid shows for this tab */
  name?: string
  /** the coordinator's worker token, if it has one */
  token?: string
  log?: (line: string) => void
}

export interface VolunteerStats {
  threads: number
  running: number
  queued: number
  done: number
  /** ms of Web Worker time spent in tasks */
  busyMs: number
  /** results held, and their bytes in memory and spilled to IndexedDB */
  held: number
  memory: number
  spilled: number
  paused: boolean
}

/** Counted across rejoins, for "what this tab gave" */
interface Totals { done: number; busyMs: number }

/**
 * @example
 * ```ts
 * const volunteer = new Volunteer({ url: location.origin, workers: 3, memoryBudget: 512 << 20 })
 * volunteer.onChange = state => render(state, volunteer.stats())
 * await volunteer.start()          // resolves once connected (or refused for good)
 * volunteer.setPaused(true)        // finish what runs, take nothing new
 * volunteer.leave()                // hand data off; state becomes 'left' after the goodbye
 * ```
 */
export class Volunteer {
  state: VolunteerState = { state: 'starting' }
  runtime: WorkerRuntime | undefined
  /** called after every state change */
  onChange: (state: VolunteerState) => void = () => {}
  private link: Link<WorkerMessage, ToWorkerMessage> | undefined
  private identity: TabIdentity
  private workers: number
  private paused = false
  private readonly past: Totals = { done: 0, busyMs: 0 }
  private readonly ticker: Worker
  private readonly log: (line: string) => void
  private aliveTimer: ReturnType<typeof setInterval> | undefined
  /** bumps on every (re)join, so a stale connect attempt gives up */
  private generation = 0

  constructor(private readonly opts: VolunteerOptions) {
    this.workers = opts.workers
    this.log = opts.log ?? (() => {})
    this.identity = loadIdentity()
    // the runtime renews its leases on a timer of its own, which a background tab throttles: ticks from
    // a Web Worker are not, so they keep its heartbeats (and time limits) on time
    this.ticker = new Worker(new URL('./thread/ticker.ts', import.meta.url), { type: 'module', name: 'tabgrid-ticker' })
    this.ticker.onmessage = () => this.runtime?.tick()
  }

  get tab(): string { return this.identity.tab }
  get poolSize(): number { return this.workers }
  get isPaused(): boolean { return this.paused }

  private setState(next: VolunteerState): void {
    if (!NEXT[this.state.state].includes(next.state)) {
      throw new Error(`volunteer: ${this.state.state} → ${next.state} is not a transition (${JSON.stringify(next)})`)
    }
    this.state = next
    this.onChange(next)
  }

  /** Starts the pool and joins the grid; resolves once connected (or failed for good). */
  async start(): Promise<void> {
    if (this.runtime) return // already started (a double click on Rejoin)
    if (this.state.state === 'left' || this.state.state === 'failed') this.setState({ state: 'starting' })
    const generation = ++this.generation
    this.identity.maxThreads = Math.max(this.identity.maxThreads, this.workers)
    saveIdentity(this.identity)
    markAlive(this.identity.tab)
    this.aliveTimer ??= setInterval(() => markAlive(this.identity.tab), 30_000)
    void collectStaleSpillDbs(this.identity.tab).then(n => { if (n) this.log(`deleted ${n} spill databases left by closed tabs`) })

    const runtime = new WorkerRuntime({
      nprocs: this.workers,
      nthreads: 1,
      spawn: () => spawnWebWorker(message => this.log(`a task left an uncaught error in its Web Worker: ${message}`)),
      hardCancel: true,
      threadInit: index => ({ memoryLimit: Math.floor(this.opts.memoryBudget / this.workers), spill: spillDbName(this.identity.tab, index) }),
      log: this.log,
    })
    this.runtime = runtime
    const held = await runtime.adopt()
    if (held.length) this.log(`kept ${held.length} results spilled before the reload`)

    const hello: Hello = { role: 'worker', kind: 'browser', slots: runtime.slots, name: this.opts.name ?? `browser tab ${this.identity.tab.slice(0, 6)}` }
    if (this.opts.token) hello.token = this.opts.token
    if (this.identity.resume) hello.resume = this.identity.resume
    if (held.length) hello.held = held

    let link: Link<WorkerMessage, ToWorkerMessage> | undefined
    this.setState({ state: 'connecting' })
    while (!link) {
      try {
        link = await connectLink<WorkerMessage, ToWorkerMessage>(this.opts.url, hello, { timeout: 10_000 })
      } catch (err) {
        if (generation !== this.generation) return
        if (err instanceof AuthError) {
          this.runtime = undefined
          await runtime.close()
          this.setState({ state: 'failed', error: err.message })
          return
        }
        this.setState({ state: 'connecting', error: (err as Error).message })
        await new Promise(r => setTimeout(r, 2_000))
      }
      if (generation !== this.generation) { link?.close(); return }
    }
    this.link = link
    runtime.onStatusChange = s => {
      switch (s.state) {
        case 'welcome':
          this.identity.worker = s.id
          if (s.resume) this.identity.resume = s.resume
          else delete this.identity.resume
          saveIdentity(this.identity)
          // a retire sent while disconnected waits in socket.io's buffer and goes out now
          this.setState(this.state.state === 'leaving' ? { state: 'leaving' } : { state: 'connected', id: s.id, resumed: s.resumed })
          return
        case 'connected':
          return
        case 'disconnected':
          // socket.io does not reconnect after the server closed the connection on purpose
          if (s.reason === 'io server disconnect') void this.finish(runtime, 'the coordinator closed this tab’s connection', false)
          else if (this.state.state !== 'leaving') this.setState({ state: 'reconnecting', reason: s.reason })
          return
        case 'goodbye':
          void this.finish(runtime, s.reason, true)
          return
        case 'closed':
          // the link closed under us: refused on reconnect, or closed after a goodbye
          if (this.state.state !== 'left') void this.finish(runtime, s.reason, false)
          return
        default: {
          const never: never = s
          this.log(`unknown status ${JSON.stringify(never)}`)
        }
      }
    }
    runtime.attach(link)
    if (this.paused) runtime.setAccepting(false)
  }

  /** The grid let this tab go (or refused it): tally, forget the identity, free the spill space. */
  private async finish(runtime: WorkerRuntime, reason: string, goodbye: boolean): Promise<void> {
    if (this.runtime !== runtime || this.state.state === 'left' || this.state.state === 'failed') return
    const s = runtime.stats()
    this.past.done += s.done
    this.past.busyMs += s.busyMs
    this.runtime = undefined
    this.link = undefined
    delete this.identity.worker
    saveIdentity(this.identity)
    await runtime.close()
    if (goodbye) {
      await deleteSpillDbs(this.identity.tab, this.identity.maxThreads)
      this.identity.maxThreads = 0
      saveIdentity(this.identity)
      this.setState({ state: 'left', reason })
    } else this.setState({ state: 'failed', error: reason })
  }

  /** Grows or shrinks the pool now. */
  resize(workers: number): void {
    if (!Number.isInteger(workers) || workers < 1 || workers > 1024) throw new RangeError(`Web Workers must be a whole number from 1 to 1024 (got ${workers})`)
    this.workers = workers
    this.identity.maxThreads = Math.max(this.identity.maxThreads, workers)
    saveIdentity(this.identity)
    if (!this.runtime) return
    this.runtime.resize(workers)
    // a reconnect announces the pool as it is now
    if (this.link && this.link.hello.role === 'worker') this.link.hello = { ...this.link.hello, slots: this.runtime.slots }
  }

  /** Pause: finish what is running, take nothing new. Resume takes tasks again. */
  setPaused(paused: boolean): void {
    this.paused = paused
    this.runtime?.setAccepting(!paused)
    this.onChange(this.state)
  }

  /** Graceful leave: the data the grid still wants moves elsewhere, then the coordinator says goodbye. */
  leave(): void {
    if (!this.runtime) return
    if (this.state.state === 'connecting') {
      // not joined yet: nothing to hand off
      this.generation++
      void this.finish(this.runtime, 'left before joining', true)
      return
    }
    this.setState({ state: 'leaving' })
    this.runtime.retire()
  }

  stats(): VolunteerStats {
    const s = this.runtime?.stats()
    return {
      threads: s?.threads ?? 0,
      running: s?.running ?? 0,
      queued: s?.queued ?? 0,
      done: this.past.done + (s?.done ?? 0),
      busyMs: this.past.busyMs + (s?.busyMs ?? 0),
      held: s?.held ?? 0,
      memory: s?.memory ?? 0,
      spilled: s?.spilled ?? 0,
      paused: this.paused,
    }
  }
}
