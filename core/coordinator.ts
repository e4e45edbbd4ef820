/**
 * The coordinator's core: connections in, scheduler events out, commands back to
 * connections. It knows nothing of socket.io or HTTP (see http.ts), so `Client.local`
 * runs the very same core in memory. It keeps what the scheduler doesn't: task
 * arguments and function sources, scattered bytes until a worker has them, and the
 * relay of data between workers and to clients (workers never talk to each other).
 *
 * Volunteers are untrusted: a worker's message is a claim, checked against what this
 * core assigned to and sent to that worker (see README, Security). Clients are tenants:
 * their functions and modules live in namespaces of their own, and what each may hold
 * here is capped.
 */
import { Scheduler } from './scheduler.js'
import type { AssignedTask, Command, SchedulerEvent, TaskSpec, WorkerKind } from './scheduler-types.js'
import { volunteerOf, type DeadlineOptions } from './trust.js'
import {
  HELLO_HELD_MAX, LIMITS, PROTOCOL_VERSION, clientMessage, hello as helloSchema, workerMessage, describeIssues,
  type Hello, type ClientMessage, type ToClientMessage, type WorkerMessage, type ToWorkerMessage, type ToDashboardMessage, type ClientRequest, type ReplyValue,
} from '../shared/protocol.js'
import { PartJoiner, ownBytes } from '../shared/wire.js'
import { checkFirst, fastClientMessage, fastWorkerMessage } from '../shared/fast-parse.js'
import { ARENA_ITEM, ByteArena } from '../shared/bytes.js'
import { hashString } from '../shared/hash.js'
import { randomId, randomSecret, sha256Digester, type Digester, type DigesterFactory } from '../shared/digest.js'
import { toWireError, type WireError } from '../shared/errors.js'
import { withDefaults } from '../shared/defaults.js'
import { moduleSyntaxError } from '../shared/modules.js'
import { decodeValue } from '../shared/codec.js'
import { Datasets } from './datasets.js'
import type { Journal, JournalSnapshot } from './journal.js'
import { FIRE_AND_FORGET, type RestoredTask } from './scheduler-types.js'

/** A result that came with its worker's `finished` report. */
interface Pushed { worker: string; data: Uint8Array }

/** What a kept small result costs beyond its bytes (its map entry, its record, its array), for the budget. */
const SMALL_OVERHEAD = 160

/** Runs `fn` once the event loop has read what arrived this turn (Node's setImmediate; a timer elsewhere). */
const afterIo: (fn: () => void) => void = (globalThis as { setImmediate?: (fn: () => void) => unknown }).setImmediate ?? (fn => { setTimeout(fn, 0) })

/** One connected peer, whatever carries it. `send` gets a batch of messages of one frame. */
export interface Connection {
  readonly id: string
  send(msg: object): void
  close(reason: string): void
  /** the peer's network address, when it has one: worker connections from one address are one volunteer */
  readonly address?: string | undefined
  /** bytes sent to this peer and not yet written out to the network (0 or absent: unknown) */
  buffered?(): number
  /** stop reading this peer's messages until `resume` (it feeds a relay whose destination is full) */
  pause?(): void
  resume?(): void
}

/** What observers (the dashboard stream) hear: facts, after they happened. */
export type Observed =
  | { type: 'finished'; worker: string; key: string; attempt: number; ms: number; nbytes: number; at: number; /** the task's group (function name), when the coordinator knows it */ group?: string }
  | { type: 'erred'; worker: string; key: string; attempt: number; at: number; message: string }
  | { type: 'scheduled'; ms: number; events: number }

/** What one client may hold at the coordinator. */
export interface ClientLimits {
  /** tasks it submitted that are still known here. Default 1,000,000 */
  tasks: number
  /** bytes of task arguments and scattered values held here for it. Default 1 GiB */
  bytes: number
  /** bytes of function and module sources it registered. Default 32 MiB */
  sources: number
}

export const DEFAULT_CLIENT_LIMITS: ClientLimits = { tasks: 1_000_000, bytes: 1 << 30, sources: 32 << 20 }

export interface CoordinatorOptions {
  clientToken?: string | undefined
  workerToken?: string | undefined
  /**
   * Compares a presented token with the expected one without leaking, through its
   * timing, how much of it matched. Default: a portable comparison of SHA-256 digests
   * (the Node edge passes crypto.timingSafeEqual over digests).
   */
  tokenEquals?: (given: string, expected: string) => boolean
  /** incremental SHA-256 for bytes the coordinator checks as it relays them. Default: @noble/hashes */
  digester?: DigesterFactory
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
  /** what one client may hold here (tasks, bytes, sources) */
  clientLimits?: Partial<ClientLimits>
  /** bytes queued to one connection past which it is paused (the relays feeding it wait). Default 64 MiB */
  outputCapBytes?: number
  /** ms a connection may stay past its output cap before it is cut. Default 10 s */
  stallMs?: number
  /** tasks a new worker may hold at once; one more per result it returns, halved when it lapses. Default 8 */
  initialWindow?: number
  /** deadlines the coordinator enforces itself (core/trust.ts). Defaults: factor 10, minMs = leaseMs, slackMs 5 s */
  deadlines?: Partial<DeadlineOptions>
  /** ms a steal-request may go unanswered before the coordinator takes the task back anyway. Default 5 s */
  stealTimeoutMs?: number
  /** ms a redundant task may lack a volunteer that has not run it yet before it fails. Default 30 s */
  redundancyWaitMs?: number
  /** ms a volunteer outvoted by a quorum (or caught serving other bytes than it reported) may not rejoin. Default 1 h */
  quarantineMs?: number
  /**
   * Spot checks of results without redundancy (BOINC's adaptive replication, see
   * SchedulerOptions.spotCheck): a new worker's results are re-run on another volunteer
   * at `rate` (default 0.5), falling to rate × halfLife / (halfLife + n) once n of them
   * were confirmed (halfLife 10), never below `floor` (0.02). `false` turns them off.
   * Default: on, unless `trustWorkers`.
   */
  spotCheck?: { rate?: number; halfLife?: number; floor?: number } | false
  /**
   * Bytes of one client's function sources a worker keeps: past it, the worker is told to
   * forget that client's least recently used ones (sent again when a task needs them), so
   * no tenant fills a volunteer's memory. Default 8 MiB
   */
  workerSourceBytes?: number
  /**
   * Feed the frames of every worker received in one turn of the event loop to the scheduler
   * together (one placement pass, one stealing round for all of them) instead of one frame
   * at a time. Default false (each `receive` is handled before it returns); the socket
   * server (startCoordinator) turns it on.
   */
  batchTurns?: boolean
  /**
   * ms a client's submit may wait for the rest of its turn's tasks when it says more follow
   * (a map cut into frames, `more` on the submit): they are then placed in one wave, one
   * frame per worker instead of one per frame of the client's. It waits only while the
   * free workers have room for more than it holds, and never for another client's or
   * another message. Each frame with tasks that says more gives the rest another
   * submitHoldMs (a coordinator busy reading a big map's frames is not a client that
   * stopped), up to 5 × submitHoldMs in all. Default 200; 0 places each frame as it
   * comes; at most 60,000.
   */
  submitHoldMs?: number
  /**
   * Bytes of small results (those that ride with their worker's report, executor
   * INLINE_LIMIT) the coordinator keeps copies of, to answer a client's first gather of
   * them without a fetch from the worker. A copy is dropped once sent to a gatherer, when
   * its key is forgotten, or when its worker no longer holds the key; past this budget,
   * results are fetched as before. Default 32 MiB; 0 keeps none.
   */
  smallResultBytes?: number
  /**
   * The workers are this process's own (Client.local): no windows, deadlines or steal
   * timeouts. The checks of what a worker claims stay. Default false.
   */
  trustWorkers?: boolean
  /**
   * Where the coordinator records what it must not forget across a crash (client sessions,
   * wanted tasks and their functions, which worker holds which result, with its digest).
   * What it holds is replayed before anyone connects; the Node edge opens one in SQLite
   * (server/journal.ts). Default: none (a restart forgets everything).
   */
  journal?: Journal | undefined
  /** ms clients and workers restored from a journal have to come back before they are gone. Default 30 s */
  restartGraceMs?: number
  /** check scheduler invariants after every event (tests) */
  validate?: boolean
  /** where the coordinator says what happens; `level` is 'info' when left out */
  log?: (line: string, level?: 'info' | 'warn' | 'error') => void
  now?: () => number
  /** the clock (ms) the scheduler's own time is measured with. Default performance.now */
  timer?: () => number
}

type Assign = ToWorkerMessage & { type: 'assign' }

interface Peer {
  conn: Connection | undefined
  role: 'client' | 'worker' | 'dashboard'
  id: string
  name: string
  bad: number
  joiner: PartJoiner
  graceTimer: ReturnType<typeof setTimeout> | undefined
  /** the resume secret handed to its connection alone ('' for dashboards) */
  secret: string
  /** since when its connection is past the output cap (−1: it is not) */
  overSince: number
}
interface WorkerPeer extends Peer {
  role: 'worker'
  kind: WorkerKind
  slots: number
  volunteer: string
  /** function ids sent to it → the client whose task needed it, least recently used first */
  fns: Map<string, { client: string; bytes: number }>
  /** bytes of sources sent to it, per client (capped: workerSourceBytes) */
  fnBytes: Map<string, number>
  /** keys whose bytes the coordinator sent it (puts, copies, fetched inputs), until it says it stored them: the only 'stored' it may report */
  sent: Set<string>
  memory: number
  spilled: number
  since: number
  /** what the worker last said about taking tasks */
  accepting: boolean
}
interface ClientPeer extends Peer {
  role: 'client'
  /** its function hashes → content ids in the shared table */
  fns: Map<string, string>
  /** its modules (name → source), sent to workers under its namespace */
  modules: Map<string, string>
  /** the namespace its tasks import modules from */
  ns: string
  /** bytes of sources it registered */
  sourceBytes: number
  /** tasks it owns here, and the bytes of their arguments and of its scattered values held here */
  tasks: number
  bytes: number
}

interface StoredTask { fn: string; args: Uint8Array; redundancy: number; timeout: number | undefined; group: string; owner: ClientPeer }
/** A function's source, shared by content: `id` is its SHA-256, so no one can change what an id runs. */
interface StoredFunction { source: string; tasks: number; clients: number }

/** A pending data relay: bytes asked of a holder, for a requester. */
interface Relay {
  key: string
  holder: string
  tried: Set<string>
  /** when it was asked, or last sent a part (coordinator clock) */
  at: number
  to: { kind: 'worker'; worker: string; id: number } | { kind: 'client'; client: string } | { kind: 'move'; worker: string }
  /** the digest the bytes must have (agreed by redundant runs, or of scattered bytes); the relay is checked before anything is forwarded */
  expect?: string
  hasher?: Digester
  /** parts held back until the digest is checked (a copy to a worker, or a value in one part) */
  held?: Extract<WorkerMessage, { type: 'data' }>[]
  /** parts received so far, the next part to hash (parts are hashed in order as they pass), and those that came before their turn */
  got?: number
  next?: number
  early?: Map<number, Uint8Array>
}

const encoder = new TextEncoder()

/** ms the keys a worker is told to free may wait for something else going to it (see FreesFirst) */
const FREE_DELAY_MS = 1_000
/** A timer that does not keep the process alive (Node; a browser's timers have no unref). */
function backgroundTimeout(fn: () => void, ms: number): ReturnType<typeof setTimeout> {
  const timer = setTimeout(fn, ms)
  ;(timer as { unref?: () => void }).unref?.()
  return timer
}

/** a client's held submit waits at most this many times submitHoldMs in all, however many frames say more follow */
const HOLD_LIMIT = 5
/** the longest submitHoldMs (a held client waits 5 times it at most) */
const MAX_HOLD_MS = 60_000

/**
 * A worker's connection that keeps the keys it is to free until something else goes to
 * it, or FREE_DELAY_MS pass: releasing a map's results costs no frame of its own per
 * worker, they ride with its next assignment. Whatever is sent after a free reaches the
 * worker after it (a key freed, then computed there again, is never freed afterwards).
 */
class FreesFirst implements Connection {
  private keys: string[] | null = null
  constructor(readonly inner: Connection) {}
  get id(): string { return this.inner.id }
  get address(): string | undefined { return this.inner.address }
  /** keys to free, sent with the next message or by `flush` */
  free(keys: readonly string[]): void {
    if (this.keys === null) this.keys = keys.slice()
    else for (const k of keys) this.keys.push(k)
  }
  flush(): void {
    const keys = this.keys
    if (keys === null) return
    this.keys = null
    this.inner.send({ type: 'free', keys } satisfies ToWorkerMessage)
  }
  send(msg: object): void {
    if (this.keys !== null) this.flush()
    this.inner.send(msg)
  }
  close(reason: string): void {
    this.keys = null
    this.inner.close(reason)
  }
  buffered(): number { return this.inner.buffered?.() ?? 0 }
  pause(): void { this.inner.pause?.() }
  resume(): void { this.inner.resume?.() }
}

/** ms a worker has to answer a story question before the story goes without its part */
const STORY_WAIT_MS = 2_000
/** most workers asked for their part of one story */
const STORY_WORKERS = 8
type StoryReply = ReplyValue<'story'>

export class Coordinator {
  readonly scheduler: Scheduler
  private readonly peers = new Map<string, Peer>()
  /** resume secrets → peer ids */
  private readonly secrets = new Map<string, string>()
  private readonly functions = new Map<string, StoredFunction>()
  private readonly tasks = new Map<string, StoredTask>()
  private readonly scattered = new Map<string, { data: Uint8Array; replicas: number; stored: number; owner: ClientPeer }>()
  /**
   * what a key's bytes must hash to: per holder for computed results (each reported its
   * digest; one holder's claim as a pair, the usual case, several in a map), or one digest
   * for scattered values
   */
  private readonly digests = new Map<string, string | [worker: string, digest: string] | Map<string, string>>()
  private readonly relays = new Map<number, Relay>()
  private readonly datasets = new Datasets()
  private relaySeq = 1
  /** story questions out to workers (client.story), by id */
  private readonly storyAsks = new Map<number, { worker: string; key: string; done: (entries: StoryReply) => void }>()
  private storySeq = 1
  /** gathers whose holders are all disconnected (in their grace period): asked again when that resolves */
  private readonly deferredGathers = new Map<string, Set<string>>()
  /** results pushed with `finished` this turn, for send-data, with the worker that sent each */
  private pushed = new Map<string, Pushed>()
  /** copies of small results pushed before anyone gathered them (smallResultBytes), by key */
  private readonly small = new Map<string, Pushed>()
  private smallBytes = 0
  /** holders paused because a destination of theirs is past its output cap: destination → holders */
  private readonly pausedFor = new Map<string, Set<string>>()
  /** volunteers that may not join until then */
  private readonly quarantined = new Map<string, number>()
  private readonly limits: ClientLimits
  private readonly opts: Required<Omit<CoordinatorOptions, 'clientToken' | 'workerToken' | 'deadlines' | 'clientLimits' | 'spotCheck' | 'journal'>> & Pick<CoordinatorOptions, 'clientToken' | 'workerToken' | 'deadlines'>
  private readonly journal: Journal | undefined
  /** keys whose journal record may have changed this turn (written when the turn's microtasks run) */
  private readonly dirty = new Set<string>()
  /** digests reported with results this turn: key → [worker, digest] */
  private readonly reportedDigests = new Map<string, [string, string]>()
  /** SHA-256 of resume secrets of peers restored from the journal (their secrets were never written) → peer id */
  private readonly restoredSecrets = new Map<string, string>()
  /** workers restored from the journal that have not come back yet */
  private readonly restoredWorkers = new Set<string>()
  /** digests the journal holds for results on restored workers, checked when they re-announce them */
  private readonly restoredDigests = new Map<string, string>()
  /** counters for /metrics and the dashboard */
  readonly metrics = {
    badMessages: 0, tasksSubmitted: 0, tasksFinished: 0, tasksErred: 0, bytesRelayed: 0, schedulerMs: 0, events: 0,
    /** claims and requests refused as outside what a connection was given */
    refused: 0,
    /** workers quarantined (outvoted, or caught serving other bytes than they reported) */
    quarantined: 0,
    /** attempts taken back past a deadline the coordinator enforces */
    deadlinesMissed: 0,
    /** connections cut for reading nothing while past their output cap */
    connectionsCut: 0,
    /** most bytes seen queued to one connection */
    peakOutputBytes: 0,
    /** frames written to connections, and the largest of them (encoded bytes, attachments aside): never over LIMITS.frameBytes */
    framesOut: 0,
    largestFrameOut: 0,
    /** frames read from connections, and the largest of them (encoded bytes, attachments aside) */
    framesIn: 0,
    largestFrameIn: 0,
    /** messages that could not be made to fit in a frame (a reply answered with a too-large error instead, anything else dropped) */
    tooLargeMessages: 0,
  }
  private closed = false
  /** listeners for the dashboard stream; empty costs nothing */
  readonly observers: ((o: Observed) => void)[] = []

  private observe(o: Observed): void {
    for (const f of this.observers) {
      try { f(o) } catch (err) { this.opts.log(`observer failed: ${(err as Error).message}`, 'error') }
    }
  }

  constructor(options: CoordinatorOptions = {}) {
    const digester = options.digester ?? sha256Digester
    this.opts = {
      ...withDefaults({
        workerGraceMs: 5_000, clientGraceMs: 30_000, leaseMs: 15_000, fetchTimeoutMs: 15_000, sendAhead: true as boolean, maxBadMessages: 100, validate: false as boolean, trustWorkers: false as boolean,
        log: (_line: string, _level?: 'info' | 'warn' | 'error'): void => {}, now: (): number => Date.now(), timer: (): number => performance.now(),
        digester, tokenEquals: portableTokenEquals(digester),
        outputCapBytes: 64 << 20, stallMs: 10_000, workerSourceBytes: 8 << 20, initialWindow: 8, stealTimeoutMs: 5_000, redundancyWaitMs: 30_000, quarantineMs: 3_600_000, batchTurns: false as boolean, submitHoldMs: 200,
        restartGraceMs: 30_000, smallResultBytes: 32 << 20,
      }, options),
      clientToken: options.clientToken, workerToken: options.workerToken, deadlines: options.deadlines,
    }
    const hold = this.opts.submitHoldMs
    if (!(typeof hold === 'number' && hold >= 0 && hold <= MAX_HOLD_MS)) throw new RangeError(`submitHoldMs must be a number of ms from 0 to ${MAX_HOLD_MS}, not ${String(hold)}`)
    this.limits = withDefaults(DEFAULT_CLIENT_LIMITS, options.clientLimits)
    this.scheduler = new Scheduler({
      validate: this.opts.validate, leaseMs: this.opts.leaseMs, sendAhead: this.opts.sendAhead, redundancyWaitMs: this.opts.redundancyWaitMs,
      // volunteers are untrusted: windows, deadlines, unanswered steals
      ...(this.opts.trustWorkers ? {} : {
        initialWindow: this.opts.initialWindow, deadlines: { minMs: this.opts.leaseMs, ...options.deadlines }, stealTimeoutMs: this.opts.stealTimeoutMs,
      }),
      // which results are checked must not be guessable: the draws are seeded at random
      ...(this.opts.trustWorkers || options.spotCheck === false ? {} : { spotCheck: { ...options.spotCheck, seed: parseInt(randomSecret(4), 16) } }),
    })
    // leases and deadlines are the scheduler's: it only needs to be told the time now and then
    this.tickTimer = setInterval(() => this.checkTime(), Math.max(50, Math.min(1_000, this.opts.leaseMs / 4, this.opts.stallMs / 4, this.opts.fetchTimeoutMs / 4)))
    ;(this.tickTimer as { unref?: () => void }).unref?.()
    this.journal = options.journal
    if (this.journal) this.restore(this.journal.load())
  }

  // ------------------------------------------------------------ journal

  private hashSecret(secret: string): string {
    return this.hashOf(encoder.encode(secret))
  }

  /** Records a peer's session (with the hash of its current secret, never the secret). */
  private journalPeer(p: Peer): void {
    const j = this.journal
    if (!j || !p.secret) return
    if (p.role === 'client') j.putClient({ id: p.id, name: p.name, secretHash: this.hashSecret(p.secret), ns: (p as ClientPeer).ns })
    else if (p.role === 'worker') {
      const w = p as WorkerPeer
      j.putWorker({ id: w.id, name: w.name, kind: w.kind, slots: w.slots, volunteer: w.volunteer, secretHash: this.hashSecret(w.secret) })
    }
  }

  /** The key's record may have changed: it is written once this turn's work is done. */
  private markDirty(key: string): void {
    if (!this.journal) return
    if (this.dirty.size === 0) queueMicrotask(this.flushJournal)
    this.dirty.add(key)
  }

  private readonly flushJournal = (): void => {
    const j = this.journal
    if (!j || this.closed) { this.dirty.clear(); return }
    // workers' events of this turn are not in the scheduler yet: written when they are (endTurn)
    if (this.turn !== null) return
    for (const key of this.dirty) {
      const st = this.scheduler.snapshot(key)
      if (st === undefined) { j.removeTask(key); continue }
      const state = st.status === 'memory' ? 'memory' : st.status === 'erred' ? 'erred' : 'pending'
      const r = this.reportedDigests.get(key)
      const digest = r !== undefined && state === 'memory' && st.holders.includes(r[0]) ? r[1] : null
      j.updateTask(key, { state, wanters: st.wanters, holders: st.holders, nbytes: st.nbytes, digest, error: st.error })
    }
    this.dirty.clear()
    this.reportedDigests.clear()
  }

  /**
   * Replays a journal before anyone connects: clients and workers come back as if in their
   * grace period (they resume with their secrets, or are gone after `restartGraceMs`),
   * restored workers take no tasks until they are back, and tasks come back as they were:
   * results in memory on the workers that held them (until those re-announce them, or
   * not), failures failed, the rest to run.
   */
  private restore(snap: JournalSnapshot): void {
    const grace = this.opts.restartGraceMs
    const events: SchedulerEvent[] = []
    const clients = new Map<string, ClientPeer>()
    for (const jc of snap.clients) {
      const c: ClientPeer = {
        conn: undefined, role: 'client', id: jc.id, name: jc.name, bad: 0, joiner: new PartJoiner(), graceTimer: undefined, secret: '', overSince: -1,
        fns: new Map(), modules: new Map(), ns: jc.ns, sourceBytes: 0, tasks: 0, bytes: 0,
      }
      this.peers.set(c.id, c)
      clients.set(c.id, c)
      this.restoredSecrets.set(jc.secretHash, c.id)
      c.graceTimer = setTimeout(() => this.gone(c.id, 'disconnected'), grace)
      events.push({ type: 'client-added', client: c.id })
    }
    for (const [client, name, source] of snap.modules) {
      const c = clients.get(client)
      if (c) { c.modules.set(name, source); c.sourceBytes += source.length }
    }
    const workers = new Set<string>()
    for (const jw of snap.workers) {
      const w: WorkerPeer = {
        conn: undefined, role: 'worker', id: jw.id, name: jw.name, bad: 0, joiner: new PartJoiner(), graceTimer: undefined, secret: '', overSince: -1,
        kind: jw.kind, slots: jw.slots, volunteer: jw.volunteer, fns: new Map(), fnBytes: new Map(), sent: new Set(), memory: 0, spilled: 0, since: this.opts.now(), accepting: false,
      }
      this.peers.set(w.id, w)
      workers.add(w.id)
      this.restoredWorkers.add(w.id)
      this.restoredSecrets.set(jw.secretHash, w.id)
      w.graceTimer = setTimeout(() => this.gone(w.id, 'disconnected'), grace)
      events.push({ type: 'worker-added', worker: w.id, name: w.name, kind: w.kind, slots: w.slots, volunteer: w.volunteer })
      // it gets work once it is back
      events.push({ type: 'worker-status', worker: w.id, accepting: false })
    }
    for (const [id, source] of snap.functions) this.functions.set(id, { source, tasks: 0, clients: 0 })
    const datasets = new Set<string>()
    for (const [name, key] of snap.datasets) {
      this.datasets.publish(name, key, true)
      datasets.add(Datasets.holder(name))
    }
    // owners gone before the crash still carry the counts of what they submitted
    const owners = new Map<string, ClientPeer>(clients)
    const ownerOf = (id: string): ClientPeer => {
      let c = owners.get(id)
      if (!c) {
        c = { conn: undefined, role: 'client', id, name: id, bad: 0, joiner: new PartJoiner(), graceTimer: undefined, secret: '', overSince: -1, fns: new Map(), modules: new Map(), ns: randomId('m'), sourceBytes: 0, tasks: 0, bytes: 0 }
        owners.set(id, c)
      }
      return c
    }
    const restored: RestoredTask[] = []
    for (const jt of snap.tasks) {
      const spec = jt.spec
      const owner = ownerOf(jt.owner)
      const holders = jt.state === 'memory' ? jt.holders.filter(h => workers.has(h)) : []
      const r: RestoredTask = {
        spec, owner: owner.id, nbytes: jt.nbytes, holders,
        wanters: jt.wanters.filter(c => clients.has(c) || datasets.has(c) || c === FIRE_AND_FORGET),
      }
      if (jt.state === 'erred' && jt.error) r.error = jt.error
      if (spec.fn !== null) {
        const f = this.functions.get(spec.fn)
        if (f === undefined || jt.args === null) {
          r.error ??= { code: 'lost-data', message: `${spec.key} could not be restored after the coordinator restarted: its function or arguments were not in the journal`, key: spec.key }
        } else {
          this.tasks.set(spec.key, { fn: spec.fn, args: jt.args, redundancy: spec.redundancy, timeout: spec.timeout, group: spec.group, owner })
          f.tasks++
          owner.tasks++
          owner.bytes += jt.args.byteLength
        }
        if (jt.digest !== null && spec.redundancy > 1) for (const h of holders) this.claimDigest(spec.key, h, jt.digest)
      } else {
        if (jt.digest !== null) this.digests.set(spec.key, jt.digest)
        if (jt.args !== null) {
          this.scattered.set(spec.key, { data: jt.args, replicas: spec.redundancy, stored: 0, owner })
          owner.bytes += jt.args.byteLength
        } else if (holders.length === 0 && r.error === undefined) {
          r.error = { code: 'lost-data', message: `the scattered value ${spec.key} was held by no worker the coordinator knew after it restarted`, key: spec.key }
        }
      }
      if (holders.length && jt.digest !== null) this.restoredDigests.set(spec.key, jt.digest)
      restored.push(r)
    }
    for (const [id, f] of this.functions) if (f.tasks === 0) { this.functions.delete(id); this.journal?.removeFunction(id) }
    events.push({ type: 'restore', tasks: restored })
    this.feed(events)
    if (snap.tasks.length || snap.clients.length || snap.workers.length) {
      this.opts.log(`restored from the journal: ${snap.clients.length} clients, ${snap.workers.length} workers, ${snap.tasks.length} tasks (${restored.filter(r => r.holders.length).length} results held); they have ${grace} ms to come back`)
    }
  }

  private readonly tickTimer: ReturnType<typeof setInterval>

  /** Once in a while: connections stuck past their output cap, and the scheduler's clock. */
  private checkTime(): void {
    if (this.closed) return
    const now = this.opts.now()
    for (const p of [...this.peers.values()]) if (p.conn) this.checkOutput(p, now)
    this.handle({ type: 'tick' })
    this.checkRelays()
  }

  /** A connection that stays past its output cap is cut (reading nothing, it would make us buffer without end). */
  private checkOutput(p: Peer, now: number): void {
    const buffered = p.conn?.buffered?.() ?? 0
    if (buffered > this.metrics.peakOutputBytes) this.metrics.peakOutputBytes = buffered
    if (buffered <= this.opts.outputCapBytes) {
      if (p.overSince >= 0) this.drained(p.id)
      return
    }
    if (p.overSince < 0) p.overSince = now
    else if (now - p.overSince > this.opts.stallMs || buffered > 4 * this.opts.outputCapBytes) {
      this.cut(p, `it read nothing of the ${buffered} bytes queued for it for ${now - p.overSince} ms`)
    }
  }

  private cut(p: Peer, why: string): void {
    const conn = p.conn
    if (!conn) return
    this.opts.log(`cutting ${p.role} ${p.name}: ${why}`, 'warn')
    this.metrics.connectionsCut++
    this.disconnected(p.id, 'cut')
    conn.close(`cut: ${why}`)
  }

  /** The edge says everything queued for peer `id` went out: relays feeding it go on. */
  drained(id: string): void {
    const p = this.peers.get(id)
    if (p) p.overSince = -1
    const holders = this.pausedFor.get(id)
    if (!holders) return
    this.pausedFor.delete(id)
    for (const h of holders) {
      let still = false
      for (const s of this.pausedFor.values()) if (s.has(h)) { still = true; break }
      if (!still) this.peers.get(h)?.conn?.resume?.()
    }
  }

  // ------------------------------------------------------------ connections

  /**
   * Checks a hello (socket.io `auth`) and, for a worker, that its volunteer is not in
   * quarantine: returns the error to refuse the connection with, or the parsed hello.
   */
  authorize(hello: unknown, address?: string): { ok: true; hello: Hello } | { ok: false; code: 'auth' | 'bad-message' | 'forbidden'; message: string } {
    const parsed = helloSchema.safeParse(hello)
    if (!parsed.success) return { ok: false, code: 'bad-message', message: `bad hello: ${describeIssues(parsed.error)}` }
    const h = parsed.data
    const want = h.role === 'worker' ? this.opts.workerToken : this.opts.clientToken
    if (want && !this.opts.tokenEquals(h.token ?? '', want)) {
      return { ok: false, code: 'auth', message: h.role === 'dashboard' ? 'this coordinator needs a token to watch it (wrong or missing token)' : `wrong or missing ${h.role} token` }
    }
    if (h.role === 'worker' && address !== undefined) {
      const until = this.quarantined.get(volunteerOf(address, ''))
      if (until !== undefined) {
        if (until > this.opts.now()) return { ok: false, code: 'forbidden', message: `workers from ${address} are quarantined until ${new Date(until).toISOString()}: results from this address disagreed with a quorum of other volunteers` }
        this.quarantined.delete(volunteerOf(address, ''))
      }
    }
    return { ok: true, hello: h }
  }

  /** A connection authorized with `hello` joins. Returns the peer id. */
  accept(conn: Connection, hello: Hello): string {
    this.endTurn()
    if (hello.role === 'worker') return this.acceptWorker(conn, hello)
    if (hello.role === 'client') return this.acceptClient(conn, hello)
    const peer: Peer = { conn, role: 'dashboard', id: conn.id, name: 'dashboard', bad: 0, joiner: new PartJoiner(4), graceTimer: undefined, secret: '', overSince: -1 }
    this.peers.set(peer.id, peer)
    conn.send({ type: 'welcome', id: peer.id, version: PROTOCOL_VERSION, resumed: false } satisfies ToDashboardMessage)
    return peer.id
  }

  /** The peer a resume secret names, if it is in its grace period (disconnected, not gone). */
  private resumable(secret: string | undefined, role: 'worker' | 'client'): Peer | undefined {
    if (!secret) return undefined
    const id = this.secrets.get(secret)
    const p = id === undefined ? undefined : this.peers.get(id)
    if (p && p.role === role && p.graceTimer !== undefined && p.secret === secret) return p
    // a peer restored from the journal: only its secret's hash was kept
    if (this.restoredSecrets.size === 0 || id !== undefined) return undefined
    const hash = this.hashSecret(secret)
    const rid = this.restoredSecrets.get(hash)
    const r = rid === undefined ? undefined : this.peers.get(rid)
    if (!r || r.role !== role || r.graceTimer === undefined || r.secret !== '') return undefined
    this.restoredSecrets.delete(hash)
    return r
  }

  /** A new secret for the peer's new connection (the old one no longer resumes anything). */
  private rotateSecret(p: Peer): string {
    if (p.secret) this.secrets.delete(p.secret)
    p.secret = randomSecret()
    this.secrets.set(p.secret, p.id)
    this.journalPeer(p)
    return p.secret
  }

  private acceptWorker(conn: Connection, hello: Extract<Hello, { role: 'worker' }>): string {
    const old = this.resumable(hello.resume, 'worker')
    if (old) {
      const w = old as WorkerPeer
      clearTimeout(w.graceTimer)
      w.graceTimer = undefined
      w.conn = new FreesFirst(conn)
      w.fns = new Map()
      w.fnBytes = new Map()
      w.joiner = new PartJoiner()
      w.overSince = -1
      this.opts.log(`worker ${w.name} is back`)
      this.handle({ type: 'worker-seen', worker: w.id })
      conn.send({ type: 'welcome', id: w.id, version: PROTOCOL_VERSION, resumed: true, resume: this.rotateSecret(w) } satisfies ToWorkerMessage)
      this.sendModules(conn)
      // what it no longer holds (a reloaded tab keeps only what it spilled); what it says
      // it holds beyond what it was given here is not believed
      const restored = this.restoredWorkers.delete(w.id)
      if (hello.held || restored) {
        const mine = new Set(this.scheduler.heldBy(w.id))
        const still = new Set<string>()
        const refused: string[] = []
        for (const h of hello.held ?? []) {
          // after a restart, a result is taken back only where the journal agrees: same worker, same key, same digest
          if (restored && mine.has(h.key) && (h.digest === undefined || h.digest !== this.restoredDigests.get(h.key))) refused.push(h.key)
          else still.add(h.key)
        }
        // (kept for the other restored holders of the same keys until none is left)
        if (restored && this.restoredWorkers.size === 0) this.restoredDigests.clear()
        // a list cut at its cap leaves keys out: only a restored worker loses what it did not name (the journal's word alone is not enough)
        const complete = (hello.held?.length ?? 0) < HELLO_HELD_MAX
        const gone = complete || restored ? [...mine].filter(k => !still.has(k)) : []
        if (gone.length) this.handle({ type: 'data-released', worker: w.id, keys: gone })
        // results whose report is on its way (a live assignment here), and inputs it fetched for one, are not claims
        let running: Set<string> | undefined
        const claimed = [...still].filter(k => !mine.has(k) && !(running ??= new Set(this.scheduler.assignmentsOf(w.id).map(a => a.key))).has(k) && !this.scheduler.isInputOf(k, w.id))
        if (refused.length) {
          this.metrics.refused += refused.length
          this.opts.log(`worker ${w.name} re-announced ${refused.length} results whose digest is not the journal's (${refused.slice(0, 3).join(', ')}): not believed`, 'warn')
        }
        if (claimed.length || refused.length) conn.send({ type: 'free', keys: [...claimed, ...refused] } satisfies ToWorkerMessage)
      }

      // assignments it may have missed: the scheduler's record is the only one
      for (const a of this.scheduler.assignmentsOf(w.id)) this.sendAssign(w, a)
      // restored from the journal, it takes work again once its status says it does (a resumed worker sends one at once)
      this.retryDeferredGathers()
      return w.id
    }
    const id = randomId('w')
    const w: WorkerPeer = {
      conn: new FreesFirst(conn), role: 'worker', id, name: hello.name ?? id, bad: 0, joiner: new PartJoiner(), graceTimer: undefined, secret: '', overSince: -1,
      kind: hello.kind, slots: hello.slots, volunteer: volunteerOf(conn.address, id), fns: new Map(), fnBytes: new Map(), sent: new Set(),
      memory: 0, spilled: 0, since: this.opts.now(), accepting: true,
    }
    this.peers.set(id, w)
    conn.send({ type: 'welcome', id, version: PROTOCOL_VERSION, resumed: false, resume: this.rotateSecret(w) } satisfies ToWorkerMessage)
    this.sendModules(conn)
    // a new identity holds nothing here, whatever it says (a tab back after its grace
    // period, or a claim to data it never computed): it may drop what it announced
    if (hello.held?.length) conn.send({ type: 'free', keys: hello.held.map(h => h.key) } satisfies ToWorkerMessage)
    this.opts.log(`worker ${w.name} (${id}) joined (${w.kind}, ${w.slots} slots)`)
    this.handle({ type: 'worker-added', worker: id, name: w.name, kind: w.kind, slots: w.slots, volunteer: w.volunteer })
    return id
  }

  private sendModules(conn: Connection): void {
    for (const p of this.peers.values()) {
      if (p.role !== 'client') continue
      const c = p as ClientPeer
      for (const [name, source] of c.modules) conn.send({ type: 'module', name, source, ns: c.ns } satisfies ToWorkerMessage)
    }
  }

  private acceptClient(conn: Connection, hello: Extract<Hello, { role: 'client' }>): string {
    const old = this.resumable(hello.resume, 'client')
    if (old) {
      clearTimeout(old.graceTimer)
      old.graceTimer = undefined
      old.conn = conn
      old.joiner = new PartJoiner()
      old.overSince = -1
      conn.send({ type: 'welcome', id: old.id, version: PROTOCOL_VERSION, resumed: true, resume: this.rotateSecret(old) } satisfies ToClientMessage)
      return old.id
    }
    const id = randomId('c')
    const c: ClientPeer = {
      conn, role: 'client', id, name: hello.name ?? id, bad: 0, joiner: new PartJoiner(), graceTimer: undefined, secret: '', overSince: -1,
      fns: new Map(), modules: new Map(), ns: randomId('m'), sourceBytes: 0, tasks: 0, bytes: 0,
    }
    this.peers.set(id, c)
    conn.send({ type: 'welcome', id, version: PROTOCOL_VERSION, resumed: false, resume: this.rotateSecret(c) } satisfies ToClientMessage)
    this.handle({ type: 'client-added', client: id })
    return id
  }

  /** The connection of peer `id` closed. Its identity is kept for a grace period. */
  disconnected(id: string, reason: string): void {
    this.endTurn()
    const p = this.peers.get(id)
    if (!p || this.closed || !p.conn) return
    p.conn = undefined
    this.drained(id)
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

  private gone(id: string, reason: 'left' | 'disconnected' | 'kicked' | 'quarantined'): void {
    const p = this.peers.get(id)
    if (!p) return
    if (p.graceTimer !== undefined) clearTimeout(p.graceTimer)
    this.peers.delete(id)
    if (p.secret) this.secrets.delete(p.secret)
    if (this.restoredSecrets.size) for (const [h, rid] of this.restoredSecrets) if (rid === id) this.restoredSecrets.delete(h)
    this.drained(id)
    if (p.conn) p.conn.close(reason)
    if (p.role === 'worker') {
      this.journal?.removeWorker(id)
      if (this.restoredWorkers.delete(id) && this.restoredWorkers.size === 0) this.restoredDigests.clear()
      this.opts.log(`worker ${p.name} is gone (${reason})`)
      for (const [rid, r] of this.relays) if (r.holder === id) this.relayFailed(rid, { code: 'lost-data', message: `holder of ${r.key} left`, key: r.key })
      this.handle({ type: 'worker-removed', worker: id, reason })
      this.retryDeferredGathers()
    } else if (p.role === 'client') {
      const c = p as ClientPeer
      if (this.heldSubmit?.client === c) this.releaseSubmit()
      this.journal?.removeClient(id)
      for (const hash of [...c.fns.keys()]) this.unregister(c, hash)
      this.handle({ type: 'client-removed', client: id })
      if (c.tasks === 0) this.dropModules(c)
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
    if (p.role === 'worker' && this.opts.batchTurns) {
      // Frames from many workers in one turn of the event loop go to the scheduler together
      // (one placement pass, one stealing round): at thousands of workers, most frames carry
      // a result or two, and a pass per frame would cost more than the results.
      if (this.turn === null) { this.turn = []; afterIo(this.endTurn) }
      const turn = this.turn
      const mark = turn.length
      this.batch = turn
      try {
        // as below: a frame with a message accepted renews the worker's leases
        if (this.receiveAll(p, schema, msgs)) {
          if (this.batch === turn) turn.splice(mark, 0, { type: 'worker-seen', worker: p.id })
          else this.batch.unshift({ type: 'worker-seen', worker: p.id })
        }
      } finally {
        this.turn = this.batch
        this.batch = null
      }
      return
    }
    // a client's message comes after every worker's report already received
    this.endTurn()
    this.batch = []
    try {
      // a frame with at least one message accepted renews a worker's leases (and brings
      // back one that had lapsed); junk and refused claims prove nothing, so a worker
      // that sends only those lapses like a silent one
      if (this.receiveAll(p, schema, msgs) && p.role === 'worker') this.batch.unshift({ type: 'worker-seen', worker: p.id })
    } finally { this.flushBatch() }
  }

  /** Workers' events received this turn, not yet given to the scheduler (see receive). */
  private turn: SchedulerEvent[] | null = null

  private readonly endTurn = (): void => {
    const events = this.turn
    this.turn = null
    if (events !== null && events.length > 0 && !this.closed) this.feed(events)
    if (this.dirty.size > 0) this.flushJournal()
  }

  /** Handles a frame's messages; true if at least one was accepted (not refused). */
  private receiveAll(p: Peer, schema: typeof clientMessage | typeof workerMessage, msgs: unknown[]): boolean {
    const id = p.id
    let accepted = false
    // the messages of every task are checked by hand first (shared/fast-parse.ts), the rest by their schema
    const fast = schema === clientMessage ? fastClientMessage : fastWorkerMessage
    for (const raw of msgs) {
      const parsed = checkFirst<ClientMessage | WorkerMessage>(fast, schema, raw)
      if (!parsed.success) {
        const type = typeof (raw as { type?: unknown })?.type === 'string' ? String((raw as { type: string }).type).slice(0, 40) : '?'
        const message = `bad ${p.role} message "${type}": ${describeIssues(parsed.error)}`
        this.refuse(p, { code: 'bad-message', message })
        this.settleRefused(p, raw, message)
        if (!this.peers.get(id)?.conn) return accepted
        continue
      }
      const bad = p.bad
      try {
        if (p.role === 'client') this.onClient(p as ClientPeer, parsed.data as ClientMessage)
        else this.onWorker(p as WorkerPeer, parsed.data as WorkerMessage)
      } catch (err) {
        // a bug or an impossible request: answer, count, never crash
        this.opts.log(`error handling ${(parsed.data as { type: string }).type} from ${p.name}: ${(err as Error).stack}`, 'error')
        this.refuse(p, toWireError(err, 'internal'))
      }
      if (p.bad === bad) accepted = true
      if (!this.peers.get(id)?.conn) return accepted
    }
    return accepted
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
    if (error.code === 'forbidden') this.metrics.refused++
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
    // tasks held for the rest of a map go first, before anything else a client says
    const held = this.heldSubmit
    if (held !== null && (m.type !== 'submit' || held.client !== c)) this.releaseSubmit()
    switch (m.type) {
      case 'function': {
        // the hash is the client's name for the source; it must be the source's
        if (hashString(m.source) !== m.hash) {
          this.refuse(c, { code: 'bad-message', message: `function hash ${m.hash} is not the hash of the source sent with it (shared/hash.ts hashString)` })
          return
        }
        const refused = this.register(c, m.hash, m.source)
        if (refused) c.conn?.send({ type: 'error', error: refused } satisfies ToClientMessage)
        return
      }
      case 'submit': return this.onSubmit(c, m.tasks, m.more === true)
      case 'scatter': {
        let data: Uint8Array | undefined
        try { data = c.joiner.add(`scatter:${m.key}`, m) } catch (err) {
          this.refuse(c, toWireError(err, 'bad-message', m.key))
          return
        }
        if (!data) return
        const digest = this.hashOf(data)
        const known = this.digests.get(m.key)
        const status = this.scheduler.taskStatus(m.key)
        if (status !== undefined) {
          // the same key must be the same bytes: a scatter can't replace what another client scattered
          if (typeof known !== 'string' || known !== digest) {
            c.conn?.send({ type: 'key-state', key: m.key, state: 'erred', error: { code: 'forbidden', message: `${m.key} already names ${typeof known === 'string' ? 'other bytes' : 'a computed result'}: scatter under another key`, key: m.key } } satisfies ToClientMessage)
            return
          }
        } else {
          if (c.bytes + data.byteLength > this.limits.bytes) {
            c.conn?.send({ type: 'key-state', key: m.key, state: 'erred', error: { code: 'too-large', message: `this client holds ${c.bytes} bytes at the coordinator; ${data.byteLength} more would pass its limit of ${this.limits.bytes}`, key: m.key } } satisfies ToClientMessage)
            return
          }
          const old = this.scattered.get(m.key)
          if (old) old.owner.bytes -= old.data.byteLength
          const own = ownBytes(data)
          this.scattered.set(m.key, { data: own, replicas: m.replicas ?? 1, stored: 0, owner: c })
          c.bytes += data.byteLength
          this.digests.set(m.key, digest)
          const spec: TaskSpec = { key: m.key, fn: null, deps: [], group: 'scatter', priority: 0, retries: 0, redundancy: m.replicas ?? 1, workers: [], nbytes: data.byteLength }
          this.journal?.putTask({ spec, owner: c.id, args: own, state: 'pending', wanters: [c.id], holders: [], nbytes: data.byteLength, digest, error: null })
        }
        this.markDirty(m.key)
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

  private onSubmit(c: ClientPeer, tasks: Extract<ClientMessage, { type: 'submit' }>['tasks'], more: boolean): void {
    const specs: TaskSpec[] = []
    const erred = (key: string, error: WireError): void => {
      c.conn?.send({ type: 'key-state', key, state: 'erred', error: { ...error, key } } satisfies ToClientMessage)
    }
    // new tasks keep views of the frame until the loop is done, then copies of their own
    const fresh: { stored: StoredTask; spec: TaskSpec }[] = []
    for (const t of tasks) {
      let stored: StoredTask | undefined
      const fn = c.fns.get(t.fn)
      if (fn === undefined) {
        erred(t.key, { code: 'bad-message', message: `function ${t.fn} was never sent: send a 'function' message first` })
        continue
      }
      const old = this.tasks.get(t.key)
      if (old !== undefined) {
        // a key names one computation: the same function on the same arguments, or nothing
        if (old.fn !== fn || !sameBytes(old.args, t.args)) {
          erred(t.key, { code: 'forbidden', message: `${t.key} already names another computation (another function or other arguments): submit it under another key` })
          continue
        }
      } else if (this.scheduler.taskStatus(t.key) !== undefined) {
        erred(t.key, { code: 'forbidden', message: `${t.key} already names scattered data: submit the task under another key` })
        continue
      } else {
        if (c.tasks >= this.limits.tasks) {
          erred(t.key, { code: 'too-large', message: `this client has ${c.tasks} tasks at the coordinator, its limit: wait for some to finish or release them` })
          continue
        }
        if (c.bytes + t.args.byteLength > this.limits.bytes) {
          erred(t.key, { code: 'too-large', message: `this client holds ${c.bytes} bytes of arguments and scattered data at the coordinator; ${t.args.byteLength} more would pass its limit of ${this.limits.bytes}` })
          continue
        }
        stored = { fn, args: t.args, redundancy: t.redundancy ?? 1, timeout: t.timeout, group: t.group, owner: c }
        this.tasks.set(t.key, stored)
        c.tasks++
        c.bytes += t.args.byteLength
        const f = this.functions.get(fn) as StoredFunction
        if (++f.tasks === 1) this.journal?.putFunction(fn, f.source)
      }
      const spec: TaskSpec = {
        key: t.key, fn, deps: t.deps, group: t.group, priority: t.priority ?? 0, retries: t.retries ?? 0,
        redundancy: t.redundancy ?? 1, workers: t.workers ?? [], nbytes: t.args.byteLength,
      }
      if (t.timeout !== undefined) spec.timeout = t.timeout
      if (t.spotCheck === false) spec.spotCheck = false
      specs.push(spec)
      if (stored) fresh.push({ stored, spec })
      // another client wants it too
      else this.markDirty(t.key)
    }
    // the small arguments of the tasks taken share a few buffers cut to their sum (shared/bytes.ts):
    // sized after the checks, so arguments refused take no room that the client's limit does not count
    let small = 0
    for (const { stored } of fresh) if (stored.args.byteLength <= ARENA_ITEM) small += stored.args.byteLength
    const arena = new ByteArena(small)
    for (const { stored, spec } of fresh) {
      stored.args = arena.copy(stored.args)
      this.journal?.putTask({ spec, owner: c.id, args: stored.args, state: 'pending', wanters: [c.id], holders: [], nbytes: 0, digest: null, error: null })
    }
    this.metrics.tasksSubmitted += specs.length
    this.submitted(c, specs, more)
  }

  /** workers' connections with keys to free not sent yet, and the timer that sends them */
  private freesDue = new Set<FreesFirst>()
  private freeTimer: ReturnType<typeof setTimeout> | undefined
  private readonly sendDueFrees = (): void => {
    this.freeTimer = undefined
    const due = this.freesDue
    this.freesDue = new Set()
    for (const conn of due) conn.flush()
  }

  /** a client's tasks from frames that said more follow, fed to the scheduler with the rest as one event (see submitted) */
  private heldSubmit: { client: ClientPeer; specs: TaskSpec[]; timer: ReturnType<typeof setTimeout>; /** when it began (opts.timer, ms) */ since: number } | null = null

  /**
   * A submit's tasks go to the scheduler; those of a frame that says more follow wait for
   * the rest (submitHoldMs after the last frame with tasks that said so, 5 × submitHoldMs at most
   * in all, while the free workers have room for more than they are), so a map cut into
   * frames is placed in one wave: each worker gets its share in one frame, and answers in
   * one. What is held is only this client's, and goes first whatever else arrives
   * (onClient, disconnected, close).
   */
  private submitted(c: ClientPeer, specs: TaskSpec[], more: boolean): void {
    // (what another client held went before this submit was read: onClient)
    let h = this.heldSubmit
    if (h !== null) for (const s of specs) h.specs.push(s)
    const holdMs = this.opts.submitHoldMs
    if (more && holdMs > 0 && !this.closed) {
      if (h === null) {
        if (specs.length === 0) return
        h = this.heldSubmit = { client: c, specs, timer: backgroundTimeout(this.releaseSubmit, holdMs), since: this.opts.timer() }
      } else if (specs.length > 0) {
        // more came: the rest has another submitHoldMs, within the hold's whole allowance
        clearTimeout(h.timer)
        h.timer = backgroundTimeout(this.releaseSubmit, Math.max(0, Math.min(holdMs, h.since + HOLD_LIMIT * holdMs - this.opts.timer())))
      }
      // placing them now would fill every free worker anyway: nothing to wait for
      if (h.specs.length >= this.scheduler.room()) this.releaseSubmit()
      return
    }
    if (h !== null) this.releaseSubmit()
    else if (specs.length) this.handle({ type: 'submit', client: c.id, tasks: specs })
  }

  private readonly releaseSubmit = (): void => {
    const h = this.heldSubmit
    if (h === null) return
    this.heldSubmit = null
    clearTimeout(h.timer)
    if (h.specs.length) this.handle({ type: 'submit', client: h.client.id, tasks: h.specs })
  }

  /**
   * Registers a client's function. Sources live once, under their SHA-256 (what workers
   * see as the function's id), so one client's source can never change what another's
   * tasks run; each client's hashes map into that table through its own namespace.
   * Returns an error when the client's sources would pass its limit.
   */
  private register(c: ClientPeer, hash: string, source: string): WireError | undefined {
    const id = this.hashOf(encoder.encode(source))
    const had = c.fns.get(hash)
    if (had === id) return undefined
    if (had !== undefined) this.unregister(c, hash)
    if (!this.makeRoom(c, source.length)) return { code: 'too-large', message: `this client's function and module sources would pass its limit of ${this.limits.sources} bytes; release tasks that use old functions` }
    let f = this.functions.get(id)
    if (!f) this.functions.set(id, f = { source, tasks: 0, clients: 0 })
    f.clients++
    c.fns.set(hash, id)
    c.sourceBytes += source.length
    return undefined
  }

  private unregister(c: ClientPeer, hash: string): void {
    const id = c.fns.get(hash)
    if (id === undefined) return
    c.fns.delete(hash)
    const f = this.functions.get(id)
    if (!f) return
    c.sourceBytes -= f.source.length
    f.clients--
    if (f.clients <= 0 && f.tasks <= 0) this.functions.delete(id)
  }

  /** Frees the client's oldest registrations no task uses until `more` bytes fit its limit. */
  private makeRoom(c: ClientPeer, more: number): boolean {
    if (c.sourceBytes + more <= this.limits.sources) return true
    for (const [hash, id] of [...c.fns]) {
      if ((this.functions.get(id)?.tasks ?? 0) > 0) continue
      this.unregister(c, hash)
      if (c.sourceBytes + more <= this.limits.sources) return true
    }
    return c.sourceBytes + more <= this.limits.sources
  }

  /** What the scheduler was told earlier in this frame must count before it is asked (a publish after its submit). */
  private catchUp(): void {
    if (!this.batch?.length) return
    this.flushBatch()
    this.batch = []
  }

  private onRequest(c: ClientPeer, id: number, op: Extract<ClientMessage, { type: 'request' }>['op']): void {
    this.catchUp()
    // typed by the request's kind: the client checks the value against replyValues[kind]
    const reply = <K extends ClientRequest['op']>(_kind: K, value: ReplyValue<K>): void => c.conn?.send({ type: 'reply', id, ok: true, value } satisfies ToClientMessage)
    const fail = (error: WireError): void => c.conn?.send({ type: 'reply', id, ok: false, error } satisfies ToClientMessage)
    switch (op.op) {
      case 'workers': return reply(op.op, this.workerSummaries())
      case 'upload-module': {
        // the client checked too, but a client is not trusted to have
        const syntax = moduleSyntaxError(op.source)
        if (syntax !== undefined) return fail({ code: 'serialization', message: `module ${op.name} does not parse as an ES module: ${syntax}; nothing was uploaded` })
        // modules are per client: its tasks import them, no one else's
        const old = c.modules.get(op.name)
        const more = op.source.length - (old?.length ?? 0)
        if (more > 0 && !this.makeRoom(c, more)) return fail({ code: 'too-large', message: `this client's function and module sources would pass its limit of ${this.limits.sources} bytes` })
        c.modules.set(op.name, op.source)
        c.sourceBytes += more
        this.journal?.putModule(c.id, op.name, op.source)
        for (const p of this.peers.values()) if (p.role === 'worker' && p.conn) p.conn.send({ type: 'module', name: op.name, source: op.source, ns: c.ns } satisfies ToWorkerMessage)
        return reply(op.op, true)
      }
      case 'story': {
        // the scheduler's story, with the transitions of the workers that ran or hold the key
        const own = this.scheduler.story(op.key)
        const asked = this.askStories(op.key, own)
        if (asked.length === 0) return reply(op.op, own)
        void Promise.all(asked).then(parts => reply(op.op, mergeStories(own, parts)))
        return
      }
      case 'who-has': return reply(op.op, Object.fromEntries(op.keys.map(k => [k, this.scheduler.whoHas(k)])))
      case 'status': return reply(op.op, Object.fromEntries(op.keys.map(k => [k, this.scheduler.taskStatus(k) ?? 'forgotten'])))
      case 'close':
        reply(op.op, true)
        return this.clientClosed(c)
      case 'publish-dataset': {
        if (!this.scheduler.wantedBy(op.key).includes(c.id)) {
          return fail({ code: 'not-found', message: `cannot publish ${op.key} as ${op.name}: this client holds no future to it (it was released, or never submitted)`, key: op.key })
        }
        const r = this.datasets.publish(op.name, op.key, op.override === true)
        if ('error' in r) return fail(r.error)
        this.journal?.putDataset(op.name, op.key)
        for (const e of r.events) this.handle(e)
        return reply(op.op, true)
      }
      case 'get-dataset': {
        const key = this.datasets.get(op.name)
        if (key === undefined) return fail({ code: 'not-found', message: `no dataset named ${op.name} (see listDatasets())` })
        // the reply goes first: the client makes its future, then hears the key's state
        reply(op.op, { key })
        return this.handle({ type: 'want', client: c.id, keys: [key] })
      }
      case 'list-datasets': return reply(op.op, this.datasets.names())
      case 'unpublish-dataset': {
        const events = this.datasets.unpublish(op.name)
        if (events === undefined) return fail({ code: 'not-found', message: `no dataset named ${op.name} (see listDatasets())` })
        this.journal?.removeDataset(op.name)
        for (const e of events) this.handle(e)
        return reply(op.op, true)
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
    this.opts.log(`client ${c.name} closed`)
    this.gone(c.id, 'left')
  }

  /** What `client.workers()` returns. */
  workerSummaries(): ReplyValue<'workers'> {
    return this.scheduler.workers().map(w => {
      const p = this.peers.get(w.id) as WorkerPeer | undefined
      return { ...w, connected: !!p?.conn, memory: p?.memory ?? 0, spilled: p?.spilled ?? 0 }
    })
  }

  // ------------------------------------------------------------ workers' claims

  /** A claim outside what this worker was given: refused, counted, and it changes nothing. */
  private forbid(w: WorkerPeer, message: string, key?: string): void {
    const error: WireError = { code: 'forbidden', message }
    if (key !== undefined) error.key = key
    this.refuse(w, error)
  }

  private onWorker(w: WorkerPeer, m: WorkerMessage): void {
    switch (m.type) {
      case 'finished': {
        this.metrics.tasksFinished++
        const t = this.tasks.get(m.key)
        // a digest asked for (a redundant run, a spot check, a journal) must come: leaving it out would dodge the check
        if (t && (t.redundancy > 1 || m.digest !== undefined || this.journal !== undefined || this.scheduler.askedDigest(m.key, w.id, m.attempt))) {
          // its bytes are checked against its digest wherever they go, starting with these
          // (a spot check or a re-verification compares digests: the bytes must be what was compared)
          if (m.digest === undefined) return this.distrust(w, `reported ${m.key} without the digest its run was asked for`)
          if (m.data && this.hashOf(m.data) !== m.digest) return this.distrust(w, `pushed bytes of ${m.key} that are not what its digest says`)
          this.claimDigest(m.key, w.id, m.digest)
        }
        if (m.data) this.pushed.set(m.key, { worker: w.id, data: m.data })
        else if (this.small.size > 0) this.dropSmall(m.key)
        if (m.digest !== undefined && this.journal) this.reportedDigests.set(m.key, [w.id, m.digest])
        const ev: SchedulerEvent = { type: 'task-finished', worker: w.id, key: m.key, attempt: m.attempt, nbytes: m.nbytes, ms: m.ms }
        if (m.digest) ev.digest = m.digest
        if (this.observers.length) {
          const o: Observed = { type: 'finished', worker: w.id, key: m.key, attempt: m.attempt, ms: m.ms, nbytes: m.nbytes, at: this.opts.now() }
          if (t !== undefined) o.group = t.group
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
      case 'missing': {
        // A worker speaks for itself only: that it lacks a key it was said to hold. That
        // another holder failed to serve it, the coordinator saw itself (it relayed the fetch).
        const self = m.missing.filter(x => x.holder === w.id)
        if (self.length !== m.missing.length && m.missing.some(x => x.holder !== '' && x.holder !== w.id)) {
          this.forbid(w, `'missing' names other workers (${m.missing.filter(x => x.holder !== w.id).map(x => x.holder).slice(0, 3).join(', ')}): a worker reports only on itself`, m.key)
        }
        return this.handle({ type: 'missing-data', worker: w.id, key: m.key, attempt: m.attempt, missing: self })
      }
      case 'steal-response':
        return this.handle({ type: 'steal-response', worker: w.id, key: m.key, attempt: m.attempt, ok: m.ok })
      case 'stored': {
        // a worker stores only bytes it was sent: a copy it claims otherwise is not believed
        if (!w.sent.delete(m.key)) {
          this.forbid(w, `'stored' for ${m.key}, whose bytes this worker was never sent`, m.key)
          return
        }
        const s = this.scattered.get(m.key)
        if (s && ++s.stored >= s.replicas) this.dropScattered(m.key)
        return this.handle({ type: 'data-added', worker: w.id, key: m.key, nbytes: m.nbytes })
      }
      case 'fetch': {
        // a worker reads only the inputs of tasks it was given
        if (!this.scheduler.isInputOf(m.key, w.id)) {
          w.conn?.send({ type: 'data-error', id: m.id, key: m.key, error: { code: 'forbidden', message: `${m.key} is not an input of a task assigned to this worker`, key: m.key } } satisfies ToWorkerMessage)
          this.forbid(w, `fetch of ${m.key}, which is not an input of a task assigned to this worker`, m.key)
          return
        }
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
      case 'story': {
        // only an answer to a question put to this worker counts (a late one is dropped)
        const ask = this.storyAsks.get(m.id)
        if (ask === undefined || ask.worker !== w.id) return
        // its clock is not ours: its entries are placed as long before our now as they were before its own
        const offset = this.opts.now() - m.now
        ask.done(m.entries.map(e => {
          const out: StoryReply[number] = { key: ask.key, from: e.from, to: e.to, stimulus: e.stimulus, worker: w.id, now: Math.round(e.now + offset), source: 'worker', attempt: e.attempt }
          if (e.note !== undefined) out.note = e.note
          if (e.thread !== undefined) out.thread = e.thread
          return out
        }))
        return
      }
      default: {
        const never: never = m
        throw new Error(`unhandled worker message ${(never as { type: string }).type}`)
      }
    }
  }

  /**
   * A worker proved false (outvoted by a quorum, or caught serving other bytes than it
   * reported): it is cut, its volunteer may not rejoin for `quarantineMs`, and what it
   * held is recomputed elsewhere when still wanted (BOINC's adaptive replication: its
   * other results are not believed either).
   */
  private distrust(w: WorkerPeer, why: string): void {
    if (!this.peers.has(w.id)) return
    this.metrics.quarantined++
    const until = this.opts.now() + this.opts.quarantineMs
    if (w.volunteer !== w.id) this.quarantined.set(w.volunteer, until)
    this.opts.log(`quarantining worker ${w.name} (${w.volunteer}): it ${why}`, 'warn')
    w.conn?.send({ type: 'error', error: { code: 'forbidden', message: `quarantined: this worker ${why}` } } satisfies ToWorkerMessage)
    w.conn?.send({ type: 'goodbye', reason: `quarantined: this worker ${why}` } satisfies ToWorkerMessage)
    for (const p of [...this.peers.values()]) {
      if (p.role === 'worker' && (p as WorkerPeer).volunteer === w.volunteer) this.gone(p.id, 'quarantined')
    }
  }

  private claimDigest(key: string, worker: string, digest: string): void {
    const d = this.digests.get(key)
    if (typeof d === 'string') return
    // a map per key only once a second holder claims (a journal asks every result's digest)
    if (d === undefined) this.digests.set(key, [worker, digest])
    else if (Array.isArray(d)) {
      if (d[0] === worker) d[1] = digest
      else this.digests.set(key, new Map([[d[0], d[1]], [worker, digest]]))
    } else d.set(worker, digest)
  }

  /** The digest a holder's bytes of `key` must have, if one was agreed or scattered. */
  private expected(key: string, holder: string): string | undefined {
    const d = this.digests.get(key)
    return typeof d === 'string' ? d : Array.isArray(d) ? (d[0] === holder ? d[1] : undefined) : d?.get(holder)
  }

  private hashOf(bytes: Uint8Array): string {
    const h = this.opts.digester()
    h.update(bytes)
    return h.digest()
  }

  // ------------------------------------------------------------ relay

  private startRelay(key: string, holders: string[], to: Relay['to'], tried = new Set<string>()): void {
    const holder = holders[0]!
    const rid = this.relaySeq++
    tried.add(holder)
    const r: Relay = { key, holder, tried, to, at: this.opts.now() }
    const expect = this.expected(key, holder)
    if (expect !== undefined) { r.expect = expect; r.hasher = this.opts.digester(); r.held = [] }
    this.relays.set(rid, r)
    ;(this.peers.get(holder) as WorkerPeer).conn!.send({ type: 'fetch', id: rid, key } satisfies ToWorkerMessage)
  }

  /**
   * A holder served bytes whose SHA-256 is not the one agreed: it is distrusted, and the
   * value comes from another holder, or the relay fails (the liar's removal is in this
   * batch already: a client's gather asked again finds the key being recomputed).
   */
  private forgedRelay(r: Relay, w: WorkerPeer, id: number, got: string): void {
    this.distrust(w, `served bytes of ${r.key} whose SHA-256 (${got.slice(0, 12)}…) is not the one agreed (${(r.expect as string).slice(0, 12)}…)`)
    const holders = this.scheduler.whoHas(r.key).filter(h => !r.tried.has(h) && this.peers.get(h)?.conn)
    if (holders.length) this.startRelay(r.key, holders, r.to, r.tried)
    else this.relayFailed(id, { code: 'lost-data', message: `no honest holder of ${r.key} is left`, key: r.key }, r, true)
  }

  /**
   * Data from a holder: each part is forwarded as it arrives (a stream, not a
   * store-and-forward). When its bytes must match a digest they are hashed as they pass,
   * and the last part to arrive is held until the digest is checked: the receiver can't
   * finish the value before then, and on a mismatch it is told to discard what it got
   * (a relay from another holder replaces it, or a data-error ends it) while the holder
   * is distrusted. A copy to a worker (a replica, a hand-off) is still held whole.
   */
  private onRelayData(w: WorkerPeer, m: Extract<WorkerMessage, { type: 'data' }>): void {
    const r = this.relays.get(m.id)
    if (!r || r.holder !== w.id) return
    const last = (m.parts ?? 1) <= 1 || m.part === (m.parts ?? 1) - 1
    r.at = this.opts.now()
    this.metrics.bytesRelayed += m.data.byteLength
    if (r.hasher && r.to.kind !== 'move' && (m.parts ?? 1) > 1) {
      const parts = m.parts as number
      const part = m.part ?? 0
      r.got = (r.got ?? 0) + 1
      r.next ??= 0
      if (part === r.next) {
        r.hasher.update(m.data)
        r.next++
        // parts that came early are hashed once those before them have been
        for (let d = r.early?.get(r.next); d !== undefined; d = r.early?.get(r.next)) {
          r.early!.delete(r.next)
          r.hasher.update(d)
          r.next++
        }
      } else (r.early ??= new Map()).set(part, m.data)
      if (r.got < parts) { this.forward(r, w, m); return }
      // the last part to arrive: every part is hashed now
      this.relays.delete(m.id)
      const got = r.hasher.digest()
      if (got !== r.expect) { this.forgedRelay(r, w, m.id, got); return }
      if (r.to.kind !== 'client') this.claimDigest(r.key, r.to.worker, got)
      this.forward(r, w, m)
      this.delivered(r)
      return
    }
    if (r.hasher) {
      const held = r.held as Extract<WorkerMessage, { type: 'data' }>[]
      held.push(m)
      if (held.length < (m.parts ?? 1)) return
      this.relays.delete(m.id)
      // parts may come in any order: the bytes are hashed in theirs
      held.sort((a, b) => (a.part ?? 0) - (b.part ?? 0))
      for (const p of held) r.hasher.update(p.data)
      const got = r.hasher.digest()
      if (got !== r.expect) { this.forgedRelay(r, w, m.id, got); return }
      if (r.to.kind !== 'client') this.claimDigest(r.key, r.to.worker, got)
      for (const part of r.held as Extract<WorkerMessage, { type: 'data' }>[]) this.forward(r, w, part)
      this.delivered(r)
      return
    }
    this.forward(r, w, m)
    if (last) { this.relays.delete(m.id); this.delivered(r) }
  }

  /** A relay's last part went to a worker: it may now say it stored the key. */
  private delivered(r: Relay): void {
    if (r.to.kind === 'client') return
    const dest = this.peers.get(r.to.worker) as WorkerPeer | undefined
    if (dest) this.sentTo(dest, r.key)
  }

  private sentTo(w: WorkerPeer, key: string): void {
    // bounded: a worker that never acknowledges what it was sent forgets the oldest first
    if (w.sent.size >= 100_000) for (const k of w.sent) { w.sent.delete(k); if (w.sent.size < 90_000) break }
    w.sent.add(key)
  }

  private forward(r: Relay, from: WorkerPeer, m: Extract<WorkerMessage, { type: 'data' }>): void {
    // the part goes on as it came (an attachment is forwarded, not copied); `stream` tells
    // the receiver a relay from another holder apart from what an earlier one left
    const parts: { part?: number; parts?: number; total?: number; stream?: number } = {}
    if (m.parts !== undefined) { parts.part = m.part ?? 0; parts.parts = m.parts; parts.total = m.total ?? 0; parts.stream = m.id }
    const dest = this.peers.get(r.to.kind === 'client' ? r.to.client : r.to.worker)
    if (!dest?.conn) return
    if (r.to.kind === 'worker') dest.conn.send({ type: 'data', id: r.to.id, key: r.key, data: m.data, ...parts } satisfies ToWorkerMessage)
    else if (r.to.kind === 'client') dest.conn.send({ type: 'data', key: r.key, data: m.data, ...parts } satisfies ToClientMessage)
    else dest.conn.send({ type: 'put', key: r.key, data: m.data, ...parts } satisfies ToWorkerMessage)
    // backpressure: past its cap, the destination's feeders stop being read until it drains
    const buffered = dest.conn.buffered?.() ?? 0
    if (buffered > this.metrics.peakOutputBytes) this.metrics.peakOutputBytes = buffered
    if (buffered > this.opts.outputCapBytes && from.conn?.pause) {
      if (dest.overSince < 0) dest.overSince = this.opts.now()
      let s = this.pausedFor.get(dest.id)
      if (!s) this.pausedFor.set(dest.id, s = new Set())
      if (!s.has(from.id)) { s.add(from.id); from.conn.pause() }
    }
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
    if (this.journal) this.journalEvent(event)
    if (this.batch) this.batch.push(event)
    else {
      // after what workers said earlier this turn, in order
      this.endTurn()
      this.feed([event])
    }
  }

  /** Events that change what the journal keeps of their keys. */
  private journalEvent(e: SchedulerEvent): void {
    switch (e.type) {
      case 'release': case 'cancel': case 'want': case 'fire-and-forget': case 'data-released': case 'data-lost':
        for (const k of e.keys) this.markDirty(k)
        return
      case 'task-finished': case 'data-added':
        this.markDirty(e.key)
        return
      case 'retry':
        for (const t of e.tasks) this.markDirty(t.key)
        return
      default:
    }
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
    // commands may lead to more events (a distrusted worker leaves): they go in a batch of their own
    const outer = this.batch
    this.batch = []
    // work for workers leaves first: a client's key-state must not delay the next assignment
    for (const c of commands) if (c.type === 'assign') this.applySafely(c)
    for (const c of commands) if (c.type !== 'assign') this.applySafely(c)
    if (this.pushed.size) this.keepSmall()
    const more = this.batch
    this.batch = outer
    if (more.length) this.feed(more)
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
      case 'deadline-missed': {
        this.metrics.deadlinesMissed++
        const w = this.peers.get(c.worker)
        // a put or copy taken back: its late 'stored' is not believed (the value went elsewhere)
        if ((c.why === 'put' || c.why === 'move') && w?.role === 'worker') (w as WorkerPeer).sent.delete(c.key)
        if (c.why === 'move') {
          // and a copy still on its way there stops
          for (const [rid, r] of this.relays) {
            if (r.key !== c.key || r.to.kind !== 'move' || r.to.worker !== c.worker) continue
            this.relays.delete(rid)
            this.peers.get(r.holder)?.joiner.drop(`relay:${rid}`)
          }
        }
        const what = c.why === 'put' || c.why === 'move' ? `did not store ${c.why === 'move' ? 'a copy of ' : ''}${c.key}` : c.why === 'steal' ? `did not answer a steal-request for ${c.key}` : `held ${c.key} past its deadline`
        this.opts.log(`worker ${w?.name ?? c.worker} ${what} (${Math.round(c.heldMs)} ms): it goes elsewhere`, 'warn')
        return
      }
      case 'cancel-task':
      case 'steal-request': {
        const w = this.peers.get(c.worker) as WorkerPeer | undefined
        w?.conn?.send({ type: c.type === 'cancel-task' ? 'cancel-task' : 'steal', key: c.key, attempt: c.attempt } satisfies ToWorkerMessage)
        return
      }
      case 'free-keys': {
        if (this.journal) for (const k of c.keys) this.markDirty(k)
        // every worker's connection is a FreesFirst (accepted, or resumed); none: it is away, and tells what it holds when back
        const conn = this.peers.get(c.worker)?.conn
        if (!(conn instanceof FreesFirst)) return
        conn.free(c.keys)
        this.freesDue.add(conn)
        this.freeTimer ??= backgroundTimeout(this.sendDueFrees, FREE_DELAY_MS)
        return
      }
      case 'put-data': {
        const s = this.scattered.get(c.key)
        const w = this.peers.get(c.worker) as WorkerPeer | undefined
        if (s && w?.conn) {
          this.sentTo(w, c.key)
          const digest = this.digests.get(c.key)
          w.conn.send(typeof digest === 'string' ? { type: 'put', key: c.key, data: s.data, digest } satisfies ToWorkerMessage : { type: 'put', key: c.key, data: s.data } satisfies ToWorkerMessage)
        }
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
        this.markDirty(c.key)
        const msg: ToClientMessage = { type: 'key-state', key: c.key, state: c.state }
        if (c.error) msg.error = c.error
        if (c.nbytes !== undefined) msg.nbytes = c.nbytes
        if (c.replaced) msg.replaced = true
        for (const id of c.clients) this.peers.get(id)?.conn?.send(msg)
        return
      }
      case 'send-data': {
        const client = this.peers.get(c.client)
        if (!client?.conn) return
        // a result pushed this turn, or a small one kept from before, if its sender still holds it
        const p = this.pushed.get(c.key) ?? this.small.get(c.key)
        if (p !== undefined && this.scheduler.holds(c.key, p.worker)) {
          client.conn.send({ type: 'data', key: c.key, data: p.data } satisfies ToClientMessage)
          // the client keeps the value now: a later gather (another client's) fetches it
          this.pushed.delete(c.key)
          this.dropSmall(c.key)
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
        this.forget(c.key)
        return
      case 'retire-done': {
        const w = this.peers.get(c.worker)
        w?.conn?.send({ type: 'goodbye', reason: 'retired: your data was handed to other workers' } satisfies ToWorkerMessage)
        this.gone(c.worker, 'left')
        return
      }
      case 'outvoted': {
        const w = this.peers.get(c.worker)
        if (w?.role === 'worker') this.distrust(w as WorkerPeer, `was outvoted on ${c.key}: a quorum agreed on ${c.agreed.slice(0, 12)}…, it reported ${c.digest.slice(0, 12) || '(nothing)'}`)
        return
      }
      default: {
        const never: never = c
        throw new Error(`unknown command ${(never as { type: string }).type}`)
      }
    }
  }

  /**
   * Results pushed this turn that no gather took: copies of them are kept (smallResultBytes),
   * so a gather that comes after the result costs no fetch. Copied: the pushed bytes may be a
   * view into the whole frame they came in.
   */
  private keepSmall(): void {
    const budget = this.opts.smallResultBytes
    for (const [key, p] of this.pushed) {
      if (this.small.has(key)) this.dropSmall(key)
      const cost = p.data.byteLength + SMALL_OVERHEAD
      // only what the scheduler accepted: a report it refused (a stale run, a liar's) keeps nothing
      if (this.smallBytes + cost > budget || !this.scheduler.holds(key, p.worker)) continue
      this.small.set(key, { worker: p.worker, data: p.data.slice() })
      this.smallBytes += cost
    }
    this.pushed = new Map()
  }

  private dropSmall(key: string): void {
    const p = this.small.get(key)
    if (p === undefined) return
    this.small.delete(key)
    this.smallBytes -= p.data.byteLength + SMALL_OVERHEAD
  }

  /** The scheduler forgot the key: what was kept for it goes, and its owner's share of the limits with it. */
  private forget(key: string): void {
    this.markDirty(key)
    if (this.small.size > 0) this.dropSmall(key)
    if (this.restoredDigests.size > 0) this.restoredDigests.delete(key)
    // a key names a task or scattered data, never both (onSubmit and the scatter refuse a key taken)
    const t = this.tasks.get(key)
    if (t === undefined) this.dropScattered(key)
    else {
      this.tasks.delete(key)
      const c = t.owner
      c.tasks--
      c.bytes -= t.args.byteLength
      const f = this.functions.get(t.fn)
      if (f && --f.tasks <= 0) {
        this.journal?.removeFunction(t.fn)
        if (f.clients <= 0) this.functions.delete(t.fn)
      }
      if (c.tasks === 0 && !this.peers.has(c.id)) this.dropModules(c)
    }
    if (this.digests.size > 0) this.digests.delete(key)
  }

  private dropScattered(key: string): void {
    const s = this.scattered.get(key)
    if (!s) return
    this.scattered.delete(key)
    s.owner.bytes -= s.data.byteLength
    this.journal?.dropArgs(key)
  }

  /** Sends an assignment (with its function's source the first time this connection needs it). */
  private sendAssign(w: WorkerPeer, a: AssignedTask): void {
    const t = a.fn !== null ? this.tasks.get(a.key) : undefined
    if (!w.conn || !t) return
    const msg: Assign = {
      type: 'assign', key: a.key, attempt: a.attempt, fn: t.fn, args: t.args, deps: a.deps, push: a.push, priority: a.priority, seq: a.seq,
    }
    // a journal keeps every result's digest: a worker re-announcing it after a restart must name the same
    if (t.redundancy > 1 || a.digest || this.journal) msg.digest = true
    if (t.timeout !== undefined) msg.timeout = t.timeout
    // its client's modules, not anyone else's
    if (t.owner.modules.size) msg.ns = t.owner.ns
    const user = w.fns.get(msg.fn)
    if (user !== undefined) {
      // most recently used last
      w.fns.delete(msg.fn)
      w.fns.set(msg.fn, user)
    } else {
      const f = this.functions.get(msg.fn)
      if (f !== undefined) {
        this.makeWorkerRoom(w, t.owner.id, f.source.length)
        w.fns.set(msg.fn, { client: t.owner.id, bytes: f.source.length })
        w.fnBytes.set(t.owner.id, (w.fnBytes.get(t.owner.id) ?? 0) + f.source.length)
        w.conn.send({ type: 'function', hash: msg.fn, source: f.source } satisfies ToWorkerMessage)
      }
    }
    w.conn.send(msg)
  }

  /** A client that left and has no task left: its modules go, here and on the workers. */
  private dropModules(c: ClientPeer): void {
    if (c.modules.size === 0) return
    c.modules.clear()
    for (const p of this.peers.values()) if (p.role === 'worker') p.conn?.send({ type: 'free-modules', ns: c.ns } satisfies ToWorkerMessage)
  }

  /** Tells the worker to forget the client's least recently used sources until `more` bytes fit its cap there. */
  private makeWorkerRoom(w: WorkerPeer, client: string, more: number): void {
    let used = w.fnBytes.get(client) ?? 0
    if (used + more <= this.opts.workerSourceBytes) return
    const drop: string[] = []
    for (const [fn, sent] of w.fns) {
      if (sent.client !== client) continue
      drop.push(fn)
      w.fns.delete(fn)
      used -= sent.bytes
      if (used + more <= this.opts.workerSourceBytes) break
    }
    w.fnBytes.set(client, Math.max(0, used))
    if (drop.length) w.conn?.send({ type: 'free-functions', hashes: drop } satisfies ToWorkerMessage)
  }

  // ------------------------------------------------------------ status

  /** A bounded summary for /health, /metrics and the dashboard. */
  status(): Record<string, unknown> {
    let clients = 0, workers = 0, dashboards = 0, modules = 0
    for (const p of this.peers.values()) {
      if (p.role === 'client') modules += (p as ClientPeer).modules.size
      if (!p.conn) continue
      if (p.role === 'client') clients++
      else if (p.role === 'worker') workers++
      else dashboards++
    }
    return {
      clients, workers, dashboards,
      tasks: this.scheduler.counts(),
      functions: this.functions.size, modules,
      ...this.metrics,
    }
  }

  /** Sends a message to every dashboard. */
  broadcastDashboards(msg: ToDashboardMessage): void {
    for (const p of this.peers.values()) if (p.role === 'dashboard' && p.conn) p.conn.send(msg)
  }

  /**
   * Asks the workers named in a key's story, and those holding it, for their own part of
   * it (connected ones, at most STORY_WORKERS): each promise resolves with the worker's
   * entries, or none if it does not answer within STORY_WAIT_MS.
   */
  private askStories(key: string, own: StoryReply): Promise<StoryReply>[] {
    const ids = new Set<string>()
    for (const e of own) if (e.worker !== undefined) ids.add(e.worker)
    for (const id of this.scheduler.whoHas(key)) ids.add(id)
    const out: Promise<StoryReply>[] = []
    for (const id of ids) {
      if (out.length >= STORY_WORKERS) break
      const p = this.peers.get(id)
      if (p?.role !== 'worker' || !p.conn) continue
      const conn = p.conn
      const askId = this.storySeq++
      out.push(new Promise<StoryReply>(resolve => {
        const timer = setTimeout(() => done([]), STORY_WAIT_MS)
        ;(timer as { unref?: () => void }).unref?.()
        const done = (entries: StoryReply): void => {
          if (!this.storyAsks.delete(askId)) return
          clearTimeout(timer)
          resolve(entries)
        }
        this.storyAsks.set(askId, { worker: id, key, done })
        conn.send({ type: 'story', id: askId, key } satisfies ToWorkerMessage)
      }))
    }
    return out
  }

  /** Ends every connection. */
  close(): void {
    if (this.closed) return
    this.closed = true
    clearInterval(this.tickTimer)
    if (this.heldSubmit !== null) { clearTimeout(this.heldSubmit.timer); this.heldSubmit = null }
    clearTimeout(this.freeTimer)
    for (const ask of [...this.storyAsks.values()]) ask.done([])
    if (this.journal) {
      // every session ends here (workers are told goodbye): nothing is left to resume
      this.dirty.clear()
      this.journal.clear()
      this.journal.close()
    }
    for (const p of this.peers.values()) {
      if (p.graceTimer !== undefined) clearTimeout(p.graceTimer)
      if (p.role === 'worker') p.conn?.send({ type: 'goodbye', reason: 'the coordinator is shutting down' } satisfies ToWorkerMessage)
      p.conn?.close('coordinator closed')
    }
    this.peers.clear()
  }
}

/** The scheduler's entries and the workers', in time order (the scheduler's first among equal times). */
function mergeStories(own: StoryReply, parts: StoryReply[]): StoryReply {
  // sort is stable: among equal times the scheduler's come first, each side in its own order
  return own.concat(...parts).sort((a, b) => a.now - b.now)
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * Token comparison whose time doesn't depend on how much of the token matched: both are
 * hashed (so lengths don't show either) and the digests compared in full.
 */
function portableTokenEquals(digester: DigesterFactory): (given: string, expected: string) => boolean {
  const hex = (s: string): string => { const h = digester(); h.update(encoder.encode(s)); return h.digest() }
  return (given, expected) => {
    const a = hex(given)
    const b = hex(expected)
    let diff = a.length ^ b.length
    for (let i = 0; i < a.length && i < b.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i)
    return diff === 0
  }
}
