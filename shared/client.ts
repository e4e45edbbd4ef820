/**
 * The client library: submit functions, get futures back, gather values, all over one
 * Link to a coordinator (socket.io) or to an in-process cluster (`Client.local`).
 *
 * Batching. Everything a client does in one turn of the event loop leaves in one frame:
 * consecutive messages of the same kind (`submit`, `gather`, `release`, `cancel`) are
 * coalesced into one message while the turn runs, so 10,000 `submit` calls are one
 * `submit` message with 10,000 tasks. Order is kept: a message of another kind first
 * closes the one being built, so a `gather` never overtakes the `submit` it depends on.
 * A task function's source goes out once per connection, always before the tasks that
 * use it.
 *
 * Reconnects. After a lost connection the client says `resume: <the secret of its welcome>` in its hello;
 * within the coordinator's grace period it gets its futures back (`resumed: true`) and
 * asks again for the values it was still waiting for. Otherwise every future fails with
 * a LostDataError. While disconnected, messages wait here; requests fail at once.
 */
import type { ClientMessage, ClientRequest, Hello, ReplyValue, TaskSubmit, ToClientMessage } from './protocol.js'
import { LIMITS, PROTOCOL_VERSION, describeIssues, replyValues } from './protocol.js'
import { connectLink, type Link, type LinkStatus } from './link.js'
import { PartJoiner, PendingRequests } from './wire.js'
import { encodedStringBytes } from './frames.js'
import { coordinatorUrl } from './address.js'
import { formatBytes } from './size.js'
import {
  CancelledError, LostDataError, SerializationError, TabgridError, TaskError, TimeoutError, TooLargeError,
  fromWireError, type WireError,
} from './errors.js'
import { CodecError, FutureRef, decodeValue, encodeValue } from './codec.js'
import { toTaskFunction, type TaskFunction } from './serialize-function.js'
import { hashBytes, hashString } from './hash.js'
import { moduleSyntaxError } from './modules.js'
import { DROP, KEEP, forEachNested, mapNested } from './nested.js'
import { Future, deferred, settleRecord, withTimeout, type Deferred, type FutureOwner, type FutureStatus, type KeyRecord } from './future.js'
import {
  DEFAULT_TASK_OPTIONS, describe, resolveConnectOptions, resolveGatherOptions, resolveLocalOptions, resolvePublishOptions, resolveRequestOptions,
  resolveScatterOptions, resolveTaskOptions,
  type ClientConnectOptions, type GatherOptions, type LocalOptions, type PublishOptions, type RequestOptions, type ResolvedTaskOptions, type ScatterOptions, type TaskOptions,
} from './options.js'

// ---------------------------------------------------------------- public types

/**
 * One worker as `client.workers()` reports it. The coordinator may add fields.
 *
 * @example
 * ```ts
 * const slots = (await client.workers()).reduce((n, w) => n + w.slots, 0)
 * ```
 */
export interface WorkerSummary {
  id: string
  name: string
  kind: 'browser' | 'node'
  /** tasks it runs at once (processes × threads) */
  slots: number
  /** its lifecycle at the scheduler: 'running', 'paused' (by the volunteer, or memory), 'lapsed' (silent past its lease), 'retiring', 'retired' */
  status?: string
  accepting?: boolean
  retiring?: boolean
  /** tasks assigned to it now */
  processing?: number
  /** keys it holds, and their bytes as the scheduler counts them */
  held?: number
  nbytes?: number
  /** tasks done since it joined */
  done?: number
  /** when it joined, ms since the epoch (coordinator clock) */
  since?: number
  connected?: boolean
  /** bytes in memory and spilled, as the worker last said */
  memory?: number
  spilled?: number
  [field: string]: unknown
}

/**
 * One step in a key's history, as `client.story(key)` reports it.
 *
 * @example
 * ```ts
 * for (const s of await client.story(f)) console.log(s.from, '→', s.to, s.stimulus)
 * ```
 */
export interface StoryEntry {
  key: string
  from: string
  to: string
  /** what caused the transition, e.g. 'submit-42' */
  stimulus: string
  worker?: string
  now: number
  /** more about it, when the scheduler has more to say (e.g. 'attempt 3: sent ahead …') */
  note?: string
  /** 'worker' for a step of the worker's own state machine (absent: the scheduler's) */
  source?: 'scheduler' | 'worker'
  /** worker steps: the thread that ran it, and the attempt */
  thread?: number
  attempt?: number
  [field: string]: unknown
}

/** An argument that may be given as a value or as a Future of that value, also nested in arrays, objects, Maps and Sets. */
export type MaybeFuture<T> = T | Future<T> | NestedFutures<T>

/** A value with futures anywhere inside arrays, plain objects, Map values and Sets (replaced by their values on the worker). */
export type NestedFutures<T> =
  T extends Date | RegExp | ArrayBuffer | ArrayBufferView | ((...a: never[]) => unknown) ? never
    : T extends readonly (infer E)[] ? MaybeFuture<E>[]
    : T extends Map<infer K, infer V> ? Map<K, MaybeFuture<V>>
    : T extends Set<infer E> ? Set<MaybeFuture<E>>
    : T extends object ? { [P in keyof T]: MaybeFuture<T[P]> }
    : never

/**
 * What `gather` resolves to: `x` with every Future replaced by its value.
 *
 * @example
 * ```ts
 * const out: { a: number; b: number[] } = await client.gather({ a: fa, b: [fb, 2] })
 * ```
 */
export type Gathered<T> =
  T extends Future<infer R> ? R
    : T extends Date | RegExp | ArrayBuffer | ArrayBufferView | string | number | boolean | bigint | symbol | null | undefined ? T
      : T extends readonly unknown[] ? { -readonly [K in keyof T]: Gathered<T[K]> }
        : T extends ReadonlyMap<infer K, infer V> ? Map<K, Gathered<V>>
          : T extends ReadonlySet<infer V> ? Set<Gathered<V>>
            : T extends object ? { [K in keyof T]: Gathered<T[K]> }
              : T

/** What a host entry registers so that `Client.local()` can start an in-process cluster. */
export type LocalClusterFactory = (opts: LocalOptions) => Promise<{
  link: Link<ClientMessage, ToClientMessage>
  shutdown(): Promise<void>
}>

let localClusterFactory: LocalClusterFactory | undefined

/**
 * Registers how `Client.local()` starts a cluster on this host (worker_threads in Node,
 * Web Workers in a page). Called by the package's host entry, not by users.
 *
 * @example
 * ```ts
 * setLocalClusterFactory(async ({ workers }) => {
 *   const cluster = await startLocalCluster(workers)
 *   return { link: cluster.clientLink, shutdown: () => cluster.stop() }
 * })
 * ```
 */
export function setLocalClusterFactory(factory: LocalClusterFactory | undefined): void {
  localClusterFactory = factory
}

// ---------------------------------------------------------------- internals

/** Task arguments over this don't fit in one frame: they must be scattered first. */
const MAX_TASK_ARGS = LIMITS.frameBytes - (64 << 10)
/** A frame is cut once this much has been queued in it (the coordinator takes up to LIMITS.frameBytes). */
const FRAME_BUDGET = LIMITS.frameBytes >> 2
/** Per-task overhead in a submit message, beyond its key and arguments. */
const TASK_OVERHEAD = 80
const REQUEST_TIMEOUT = 30_000
/** Long loops (asking for a million values, re-checking them after a reconnect) yield to the event loop this often, in ms, so the socket is served */
const SLICE_MS = 5
/** Keys in one status request after a reconnect, in encoded bytes: the answer (each key again, with its state) stays far under the frame limit */
const STATUS_BYTES = 1 << 20
/** Status requests in flight at once while re-checking after a reconnect (the next goes when one is answered) */
const STATUS_IN_FLIGHT = 2
/** how long close() waits for the coordinator to acknowledge (it answers in a round trip unless a big upload is ahead) */
const CLOSE_TIMEOUT = 30_000
const noop = (): void => {}
/** shared by every task without dependencies (frozen: nobody may add to it) */
const NO_DEPS = Object.freeze([]) as unknown as string[]
const FORGOT_US = 'the coordinator restarted or forgot this client (it was away longer than the grace period): the futures it held are lost; submit the work again'

type KeysKind = 'gather' | 'release' | 'cancel' | 'fire-and-forget' | 'retry'
/** The message being built in this turn: more of the same kind join it. */
type Building =
  | { type: 'submit'; tasks: TaskSubmit[]; bytes: number; more?: true }
  | { type: KeysKind; keys: string[]; bytes: number }

/** `awaiting-welcome`: reconnected, and messages wait until the coordinator says whether it remembers this client */
type ConnectionState = 'connected' | 'reconnecting' | 'awaiting-welcome' | 'closed'

/** What Client and its views share to make tasks (not public). */
interface TaskMaker {
  submit(o: ResolvedTaskOptions, fn: unknown, args: unknown[]): Future
  map(o: ResolvedTaskOptions, fn: unknown, iterables: unknown[]): Future[]
  scatter(value: unknown, opts: unknown): Promise<Future>
}

/** the function's hash as bytes, to hash together with small arguments in one pass */
const hashPrefixes = new Map<string, Uint8Array>()

/** The hash part of a pure task's key: of the function and the encoded arguments. */
function pureKeyHash(tf: TaskFunction, args: Uint8Array): string {
  if (args.byteLength > 4096) return hashString(tf.hash + hashBytes(args))
  let prefix = hashPrefixes.get(tf.hash)
  if (prefix === undefined) {
    if (hashPrefixes.size >= 1000) hashPrefixes.clear()
    prefix = new TextEncoder().encode(tf.hash.padEnd(24, ' ').slice(0, 24))
    hashPrefixes.set(tf.hash, prefix)
  }
  // one hash call instead of two (hashing is cheap, rendering hex is not), in a reused buffer
  scratch.set(prefix)
  scratch.set(args, prefix.byteLength)
  return hashBytes(scratch.subarray(0, prefix.byteLength + args.byteLength))
}
const scratch = new Uint8Array(4096 + 64)

function newRecord(key: string): KeyRecord {
  return { key, status: 'pending', error: undefined, refs: 0, fetch: undefined, settled: undefined, replaced: 0, spec: undefined }
}

function randomId(): string {
  let s = ''
  for (let i = 0; i < 3; i++) s += Math.floor(Math.random() * 0x100000000).toString(36).padStart(7, '0')
  return s
}

// ---------------------------------------------------------------- Client

/**
 * A connection to a tabgrid grid: submit functions, get futures back.
 *
 * @example
 * ```ts
 * const client = await Client.connect('http://localhost:8786', { token })
 * const fs = client.map(x => x * x, [1, 2, 3])
 * console.log(await client.gather(fs))   // [1, 4, 9]
 * await client.close()
 * ```
 */
export class Client {
  private readonly link: Link<ClientMessage, ToClientMessage>
  private readonly onClose: (() => Promise<void> | void) | undefined
  private readonly records = new Map<string, KeyRecord>()
  private readonly owner: FutureOwner
  private readonly maker: TaskMaker
  private readonly registry: FinalizationRegistry<KeyRecord>
  private readonly requests = new PendingRequests<unknown>()
  private joiner = new PartJoiner()
  /** function hashes sent on this connection */
  private readonly sentFunctions = new Set<string>()
  /** the source of each function submitted, by hash: a task sent again after a reconnect may need it again */
  private readonly sources = new Map<string, string>()
  private building: Building | undefined
  /** the re-check of futures after a reconnect now running (a newer one stops an older one) */
  private resyncRun = 0
  /** a re-check is running (one at a time is enough) */
  private resyncing = false
  private scheduled = false
  /** bytes handed to the link since its last frame (the Outbox only sees top-level data) */
  private linkBytes = 0
  private state: ConnectionState = 'connected'
  /** messages kept while disconnected */
  private held: ClientMessage[] = []
  private readonly warned = new Set<string>()
  private readonly welcome: Deferred<void> = deferred<void>()
  private clientId: string | undefined
  private closing: Promise<void> | undefined
  /** waits the user asked for (a value, a request, a future to finish) still open */
  private waits = 0
  /** while there are waits: a timer that keeps a Node process alive (the link itself does not) */
  private keepAlive: TimerHandle | undefined
  private readonly nonce = randomId()
  private counter = 0
  /** the coordinator's URL (undefined for Client.local) */
  private address: string | undefined
  /** the grid as the last `workers()` answer showed it (memory: bytes of results held), for `String(client)` */
  private lastSeen: { workers: number; slots: number; memory: number } | undefined

  private constructor(link: Link<ClientMessage, ToClientMessage>, onClose?: () => Promise<void> | void) {
    this.link = link
    this.onClose = onClose
    this.state = link.connected ? 'connected' : 'reconnecting'
    this.owner = {
      fetch: rec => this.fetch(rec),
      release: (rec, future) => { this.registry.unregister(future); this.unref(rec) },
      cancel: futures => this.cancel(futures),
      hold: p => this.hold(p),
      retry: futures => this.retry(futures),
    }
    this.maker = {
      submit: (o, fn, args) => this.submitWith(o, fn, args),
      map: (o, fn, iterables) => this.mapWith(o, fn, iterables),
      scatter: (value, opts) => this.scatterWith(value, opts),
    }
    this.registry = new FinalizationRegistry(rec => this.unref(rec))
    this.welcome.promise.catch(() => {})
    link.onMessages = msgs => this.receive(msgs)
    link.onStatus = status => this.onLinkStatus(status)
    // a frame of the coordinator's that could not be read held key states this client now lacks: ask
    link.onDropped = () => { if (this.state === 'connected') this.resync() }
  }

  /**
   * Connects to a coordinator and waits for its welcome. The address may leave out
   * `http://` (`127.0.0.1:8786`); with none at all, it is the `TABGRID_URL` environment
   * variable, and the token (unless given) `TABGRID_TOKEN`. An address that can't work
   * (`tcp://…`, not a URL) throws a TypeError at once.
   * Rejects with AuthError when the token is refused, or an Error when nothing answers
   * within `timeout` ms.
   *
   * @example
   * ```ts
   * const client = await Client.connect('http://localhost:8786', { token: 's3cret' })
   * const fromEnv = await Client.connect()     // TABGRID_URL, TABGRID_TOKEN
   * ```
   */
  static async connect(address?: string, opts?: ClientConnectOptions): Promise<Client> {
    const env = environment()
    if (address === undefined && env.TABGRID_URL === undefined) {
      throw new TypeError("Client.connect() needs the coordinator's address, e.g. Client.connect('http://127.0.0.1:8786'), or TABGRID_URL set in the environment")
    }
    const fromEnv = address === undefined
    const url = coordinatorUrl(fromEnv ? env.TABGRID_URL : address)
    const o = resolveConnectOptions(opts)
    // the environment's token goes only to the environment's coordinator
    if (o.token === undefined && env.TABGRID_TOKEN && (fromEnv || (env.TABGRID_URL !== undefined && safeUrl(env.TABGRID_URL) === url))) o.token = env.TABGRID_TOKEN
    const hello: Hello = { role: 'client' }
    if (o.token !== undefined) hello.token = o.token
    if (o.name !== undefined) hello.name = o.name
    // unref: a script that never calls close() still exits, as a Dask script does; the
    // client keeps the process alive only while someone waits on it (see hold)
    const link = await connectLink<ClientMessage, ToClientMessage>(url, hello, { timeout: o.timeout, unref: true })
    const client = new Client(link)
    client.address = url
    let timer: TimerHandle | undefined
    try {
      await Promise.race([
        client.welcome.promise,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new TimeoutError(`the coordinator at ${url} did not welcome this client within ${o.timeout} ms`)), o.timeout)
        }),
      ])
    } catch (err) {
      await client.close()
      throw err
    } finally {
      clearTimeout(timer)
    }
    // what String(client) shows until the next workers() call
    await client.workers({ timeout: o.timeout }).catch(() => {})
    return client
  }

  /**
   * A cluster on this machine with the same API and no coordinator to run: worker
   * threads in Node, Web Workers in a page. `close()` shuts it down.
   *
   * @example
   * ```ts
   * const client = await Client.local({ workers: 4 })
   * console.log(await client.submit((a, b) => a + b, 1, 2).result())
   * await client.close()
   * ```
   */
  static async local(opts?: LocalOptions): Promise<Client> {
    const o = resolveLocalOptions(opts)
    const factory = localClusterFactory
    if (!factory) {
      throw new Error(
        'Client.local() has no local cluster to start on this host: import Client from the "tabgrid" package ' +
          '(its Node and browser entries register one), or connect to a coordinator with Client.connect(url)',
      )
    }
    const { link, shutdown } = await factory(o)
    const client = Client.fromLink(link, shutdown)
    // what String(client) shows; an in-process cluster answers at once, and nothing waits on one that doesn't
    let timer: TimerHandle | undefined
    await Promise.race([client.workers().catch(() => {}), new Promise<void>(r => { timer = setTimeout(r, 1000) })])
    clearTimeout(timer)
    return client
  }

  /**
   * A client over an existing link (an in-process cluster, or tests playing the
   * coordinator). `onClose` runs after `close()` closed the link. Not part of the
   * package's typings (the link's message types are internal).
   *
   * @internal
   *
   * @example
   * ```ts
   * const [clientSide, coordinatorSide] = memoryLinkPair<ClientMessage, ToClientMessage>({ role: 'client' }, { role: 'client' })
   * const client = Client.fromLink(clientSide)
   * ```
   */
  static fromLink(link: Link<ClientMessage, ToClientMessage>, onClose?: () => Promise<void> | void): Client {
    return new Client(link, onClose)
  }

  /**
   * The id the coordinator gave this client (after its welcome), kept across reconnects.
   *
   * @example
   * ```ts
   * console.log(`connected as ${client.id}`)
   * ```
   */
  get id(): string | undefined { return this.clientId }

  /**
   * True while the link to the coordinator is up.
   *
   * @example
   * ```ts
   * if (!client.connected) console.warn('reconnecting…')
   * ```
   */
  get connected(): boolean { return this.state === 'connected' }

  /**
   * The coordinator's dashboard (`http://HOST:PORT/`), as Dask's `client.dashboard_link`;
   * undefined for `Client.local`, which has none. A client token is not in it: the page
   * asks for one when the coordinator has one.
   *
   * @example
   * ```ts
   * console.log(`watch it at ${client.dashboardLink}`)
   * ```
   */
  get dashboardLink(): string | undefined { return this.address === undefined ? undefined : `${this.address}/` }

  /**
   * One line about this client, like Dask's repr: where it is connected, the grid as the
   * last `workers()` call (or the connect) saw it, and the futures it holds.
   *
   * @example
   * ```ts
   * console.log(String(client))
   * // <Client: 'http://127.0.0.1:8786' workers=2 slots=4 memory=1.2 MB futures=10 (3 pending)>
   * ```
   */
  toString(): string {
    const where = this.address === undefined ? 'local' : `'${this.address}'`
    const parts = [`<Client: ${where}`]
    if (this.state === 'closed') parts.push('closed')
    else if (this.state !== 'connected') parts.push('reconnecting')
    if (this.lastSeen) parts.push(`workers=${this.lastSeen.workers} slots=${this.lastSeen.slots} memory=${formatBytes(this.lastSeen.memory)}`)
    let pending = 0
    for (const rec of this.records.values()) if (rec.status === 'pending') pending++
    parts.push(`futures=${this.records.size}${pending ? ` (${pending} pending)` : ''}`)
    return `${parts.join(' ')}>`
  }

  /** `util.inspect(client)` and `console.log(client)` in Node show `String(client)`. */
  [Symbol.for('nodejs.util.inspect.custom')](): string { return this.toString() }

  // ------------------------------------------------------------ tasks

  /**
   * Runs `fn(...args)` on the grid and returns a Future of its result. Futures among
   * the arguments (also inside arrays, plain objects, Maps and Sets) are replaced by
   * their values on the worker, which is chosen to be where that data already is.
   * `fn` must be self-contained (it travels as source text); throws a
   * SerializationError at once if it or an argument cannot travel.
   *
   * @example
   * ```ts
   * const x = client.submit((n) => Array.from({ length: n }, (_, i) => i), 1000)
   * const total = client.submit((a) => a.reduce((s, v) => s + v, 0), x)
   * console.log(await total.result())   // 499500
   * ```
   */
  submit<A extends unknown[], R>(fn: (...args: A) => R | Promise<R>, ...args: { [K in keyof A]: MaybeFuture<A[K]> }): Future<Awaited<R>> {
    return this.submitWith(DEFAULT_TASK_OPTIONS, fn, args) as Future<Awaited<R>>
  }

  /**
   * One task per item: `fn(a[i], b[i], …)` for iterables zipped together (stopping at
   * the shortest, like Python's map). Items may be Futures. Use `partitionAll` to make
   * tasks big enough that the overhead per task does not matter.
   *
   * @example
   * ```ts
   * const squares = client.map(x => x * x, [1, 2, 3])
   * const sums = client.map((a, b) => a + b, [1, 2], [10, 20])      // 11, 22
   * const chunks = client.map(xs => xs.map(f), [...partitionAll(10_000, seq)])
   * ```
   */
  map<A extends unknown[], R>(fn: (...args: A) => R | Promise<R>, ...iterables: { [K in keyof A]: Iterable<MaybeFuture<A[K]>> }): Future<Awaited<R>>[] {
    return this.mapWith(DEFAULT_TASK_OPTIONS, fn, iterables) as Future<Awaited<R>>[]
  }

  /**
   * Puts one value onto the grid and returns its Future, to pass to tasks instead of
   * sending the value with each of them. Resolves once a worker holds the value (the
   * future is `finished`, as in Dask); waits for a worker if there is none yet, up to
   * `timeout` ms if given. The key is the value's content hash, so scattering the same
   * value twice gives the same key.
   *
   * @example
   * ```ts
   * const table = await client.scatter(new Float64Array(1e7), { replicas: 2 })
   * const fs = client.map((t, i) => t[i], Array(10).fill(table), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
   * ```
   */
  scatter<T>(value: T, opts?: ScatterOptions): Promise<Future<T>> {
    return this.scatterWith(value, opts) as Promise<Future<T>>
  }

  /**
   * The same `submit`, `map` and `scatter` with per-call options: `key`, `pure`,
   * `priority`, `retries`, `workers`, `redundancy`. Options are checked here, with a
   * message naming the one that is wrong.
   *
   * @example
   * ```ts
   * client.with({ priority: 10, retries: 2 }).map(f, seq)
   * client.with({ pure: false }).submit(() => Math.random())
   * client.with({ key: 'load-2024' }).submit(load, '2024')
   * ```
   */
  with(options: TaskOptions): ClientView {
    return new ClientView(this, resolveTaskOptions(options), this.maker)
  }

  // ------------------------------------------------------------ values

  /**
   * The values of futures, in the same shape as given: a Future, or arrays, plain
   * objects, Maps and Sets holding futures (other values are kept as they are).
   * Rejects with the first error (a TaskError, CancelledError, LostDataError…), or with
   * `{ errors: 'skip' }` leaves failed futures out: array items and Set members are
   * dropped, object properties and Map entries removed, a lone failed Future gives
   * undefined. A cancelled future still rejects (as in Dask).
   *
   * @example
   * ```ts
   * const [a, b] = await client.gather([fa, fb])
   * const { x, rest } = await client.gather({ x: fx, rest: [fy, 3] })
   * const ok = await client.gather(fs, { errors: 'skip' })   // only the values of those that finished
   * ```
   */
  async gather<T>(x: T, opts?: GatherOptions): Promise<Gathered<T>> {
    const { errors } = resolveGatherOptions(opts)
    const seen = new Set<Future>()
    const futures: Future[] = []
    forEachNested(x, isFuture, v => { const f = v as Future; if (!seen.has(f)) { seen.add(f); futures.push(f) } })
    if (futures.length === 0) return x as Gathered<T>
    const skip = errors === 'skip'
    // Asking for a million values is seconds of work: it goes in slices of a few ms, between
    // which the socket is served (pings answered, values coming in), one Promise.all per
    // slice (handled at once: a rejection while later slices wait is not "unhandled")
    const slices: Promise<unknown[]>[] = []
    let slice: Promise<unknown>[] = []
    let t0 = Date.now()
    for (let i = 0; i < futures.length; i++) {
      const f = futures[i]!
      const p = f.result()
      slice.push(skip ? p.catch((err: unknown) => failed(f) ? DROP : Promise.reject(err)) : p)
      if ((i & 1023) === 1023 && Date.now() - t0 >= SLICE_MS) {
        const all = Promise.all(slice)
        all.catch(noop)
        slices.push(all)
        slice = []
        await nextTurn()
        t0 = Date.now()
      }
    }
    slices.push(Promise.all(slice))
    const values = slices.length === 1 ? await slices[0]! : (await Promise.all(slices)).flat()
    const byFuture = new Map<Future, unknown>()
    for (let i = 0; i < futures.length; i++) byFuture.set(futures[i]!, values[i])
    // containers holding futures are copied, with each value in its future's place (a failed one's place dropped)
    const out = mapNested(x, v => v instanceof Future ? byFuture.get(v) : KEEP)
    return (out === DROP ? undefined : out) as Gathered<T>
  }

  /**
   * Cancels futures: their tasks stop (if no other client wants them) and their
   * `result()` rejects with a CancelledError.
   *
   * @example
   * ```ts
   * const fs = client.map(slow, seq)
   * await client.cancel(fs)
   * ```
   */
  async cancel(futures: Future | Iterable<Future>): Promise<void> {
    for (const f of futureList(futures, 'cancel')) {
      if (f.client !== this) { await f.client.cancel(f); continue }
      const rec = f.record
      if (this.records.get(rec.key) !== rec) continue
      if (rec.status === 'pending' || rec.status === 'finished') this.fail(rec, 'cancelled', new CancelledError(`${rec.key} was cancelled`))
      if (this.state !== 'closed') this.addKey('cancel', rec.key)
    }
  }

  /**
   * Lets tasks run to the end even once nothing holds their futures any more (Dask's
   * `fire_and_forget`): for side effects, whether or not this client closes or goes
   * away. Their data is released once they finish or fail.
   *
   * @example
   * ```ts
   * client.fireAndForget(client.map(saveReport, days))
   * await client.close()   // the reports still get saved
   * ```
   */
  fireAndForget(futures: Future | Iterable<Future>): void {
    for (const f of futureList(futures, 'fireAndForget')) {
      if (f.client !== this) { f.client.fireAndForget(f); continue }
      const rec = f.record
      if (this.records.get(rec.key) !== rec || rec.status !== 'pending') continue
      this.assertOpen()
      this.addKey('fire-and-forget', rec.key)
    }
  }

  /**
   * Runs failed futures again (those with status `'error'` or `'lost'`), with the failed
   * tasks they depend on; the others are left as they are. The futures are pending
   * again at once.
   *
   * @example
   * ```ts
   * if (f.status === 'error') client.retry(f)      // or f.retry()
   * ```
   */
  retry(futures: Future | Iterable<Future>): void {
    for (const f of futureList(futures, 'retry')) {
      if (f.client !== this) { f.client.retry(f); continue }
      const rec = f.record
      if (this.records.get(rec.key) !== rec || !failedRecord(rec)) continue
      this.assertOpen()
      settleRecord(rec, 'pending')
      this.addKey('retry', rec.key)
    }
  }

  // ------------------------------------------------------------ datasets

  /**
   * Publishes a future under a name, on the coordinator: its data stays on the grid
   * after this client closes, until `unpublishDataset(name)`, and any client gets it
   * with `getDataset(name)`. A taken name rejects unless `{ override: true }`.
   *
   * @example
   * ```ts
   * await client.publishDataset('model', client.submit(train, data))
   * ```
   */
  async publishDataset(name: string, future: Future, opts?: PublishOptions): Promise<void> {
    checkDatasetName(name)
    const { override } = resolvePublishOptions(opts)
    if (!(future instanceof Future)) {
      throw new TypeError(`publishDataset takes a Future, got ${describe(future)}: put a value on the grid first, publishDataset(name, await client.scatter(value))`)
    }
    if (future.client !== this) throw new TypeError(`future ${future.key} belongs to another client: publish it with that client`)
    if (future.isReleased) throw new TabgridError('not-found', `future ${future.key} was released: a released future cannot be published`)
    const op: Extract<ClientRequest, { op: 'publish-dataset' }> = { op: 'publish-dataset', name, key: future.key }
    if (override) op.override = true
    await this.request(op, REQUEST_TIMEOUT, `publishDataset(${name})`)
  }

  /**
   * A Future of the dataset published under `name` (by any client). Rejects with a
   * `not-found` TabgridError when there is none.
   *
   * @example
   * ```ts
   * const model = await client.getDataset<Model>('model')
   * const scores = client.map((m, x) => m.score(x), Array(10).fill(model), inputs)
   * ```
   */
  async getDataset<T = unknown>(name: string, opts?: RequestOptions): Promise<Future<T>> {
    checkDatasetName(name)
    const { key } = await this.request({ op: 'get-dataset', name }, resolveRequestOptions(opts).timeout, `getDataset(${name})`)
    let rec = this.records.get(key)
    if (rec === undefined) { rec = newRecord(key); this.records.set(key, rec) } else if (rec.status === 'cancelled' || rec.status === 'lost') settleRecord(rec, 'pending')
    return this.newFuture(rec) as Future<T>
  }

  /**
   * The names of the published datasets, sorted.
   *
   * @example
   * ```ts
   * if ((await client.listDatasets()).includes('model')) …
   * ```
   */
  async listDatasets(opts?: RequestOptions): Promise<string[]> {
    return await this.request({ op: 'list-datasets' }, resolveRequestOptions(opts).timeout, 'listDatasets()')
  }

  /**
   * Forgets a dataset: its data goes once no client holds a future to it. Rejects with a
   * `not-found` TabgridError when there is none.
   *
   * @example
   * ```ts
   * await client.unpublishDataset('model')
   * ```
   */
  async unpublishDataset(name: string, opts?: RequestOptions): Promise<void> {
    checkDatasetName(name)
    await this.request({ op: 'unpublish-dataset', name }, resolveRequestOptions(opts).timeout, `unpublishDataset(${name})`)
  }

  // ------------------------------------------------------------ requests

  /**
   * Uploads an ES module to every worker (now and when they join); tasks load it with
   * `await importModule(name)`. A source that does not parse as an ES module is refused
   * here with a SerializationError naming the line and column (nothing is uploaded).
   *
   * @example
   * ```ts
   * await client.uploadModule('stats', 'export const mean = xs => xs.reduce((a, b) => a + b) / xs.length')
   * const m = client.submit(async xs => (await importModule('stats')).mean(xs), [1, 2, 3])
   * ```
   */
  async uploadModule(name: string, source: string, opts?: RequestOptions): Promise<void> {
    if (typeof name !== 'string' || name.length === 0 || name.length > LIMITS.name) throw new TypeError(`module name must be a string of 1 to ${LIMITS.name} characters, got ${describe(name)}`)
    if (typeof source !== 'string' || source.length === 0) throw new TypeError(`module source must be a non-empty string of ES module code, got ${describe(source)}`)
    if (source.length > LIMITS.source) throw new TooLargeError(`module ${name} is ${source.length} characters, over the limit of ${LIMITS.source}`)
    const syntax = moduleSyntaxError(source)
    if (syntax !== undefined) throw new SerializationError(`module ${name} does not parse as an ES module: ${syntax}; nothing was uploaded`)
    await this.request({ op: 'upload-module', name, source }, resolveRequestOptions(opts).timeout, `uploadModule(${name})`)
  }

  /**
   * The workers on the grid now.
   *
   * @example
   * ```ts
   * for (const w of await client.workers()) console.log(w.name, w.kind, w.slots)
   * ```
   */
  async workers(opts?: RequestOptions): Promise<WorkerSummary[]> {
    const list: WorkerSummary[] = await this.request({ op: 'workers' }, resolveRequestOptions(opts).timeout, 'workers()')
    let slots = 0, memory = 0
    for (const w of list) { slots += w.slots; memory += w.nbytes ?? 0 }
    this.lastSeen = { workers: list.length, slots, memory }
    return list
  }

  /**
   * What happened to a key: its recent state transitions, with their causes.
   *
   * @example
   * ```ts
   * console.table(await client.story(f))
   * ```
   */
  async story(key: string | Future, opts?: RequestOptions): Promise<StoryEntry[]> {
    const k = key instanceof Future ? key.key : key
    if (typeof k !== 'string' || k.length === 0 || k.length > LIMITS.key) throw new TypeError(`story takes a Future or a key, got ${describe(key)}`)
    return await this.request({ op: 'story', key: k }, resolveRequestOptions(opts).timeout, `story(${k})`)
  }

  // ------------------------------------------------------------ lifecycle

  /**
   * Releases everything this client holds on the grid, sends what is queued (cancels
   * and submits made in the same turn too), waits for the coordinator to acknowledge it
   * all, and closes the connection (and the local cluster made by `Client.local`). The
   * coordinator lets go of the client's work at once, with no grace period. Futures
   * still pending reject with CancelledError('client closed'). Idempotent. A script
   * that never calls it still exits (its futures are released after the grace period).
   *
   * @example
   * ```ts
   * try { await work(client) } finally { await client.close() }
   * ```
   */
  close(): Promise<void> {
    if (!this.closing) {
      const done = deferred<void>()
      this.closing = done.promise
      this.shutdown().then(done.resolve, done.reject)
    }
    return this.closing
  }

  private async shutdown(): Promise<void> {
    if (this.state === 'connected') {
      for (const key of this.records.keys()) this.addKey('release', key)
      this.flushBuilding()
    }
    // the coordinator answers after everything sent before it (this turn's cancels and
    // submits too): only then may the link close without losing the last frame (a
    // client never welcomed has no coordinator to answer)
    if (this.state === 'connected' && this.clientId !== undefined) {
      try {
        await this.request({ op: 'close' }, CLOSE_TIMEOUT, 'close()')
      } catch (err) {
        if ((this.state as ConnectionState) !== 'closed') console.warn(`tabgrid: the coordinator did not acknowledge close() (${(err as Error).message}); it releases this client's work after its grace period`)
      }
    }
    this.link.flush()
    this.terminate(new CancelledError('client closed'))
    this.link.close()
    if (this.onClose) await this.onClose()
  }

  /**
   * Keeps a Node process alive until `p` settles: the link is unref'd, so what the user
   * waits for (a value, a request, a future to finish) is all that holds the process,
   * as grpc-js channels and pg's `allowExitOnIdle` pools do. Returns `p`.
   */
  private hold<T>(p: Promise<T>): Promise<T> {
    if (this.waits++ === 0) this.keepAlive = setInterval(noop, 1 << 30)
    const done = (): void => {
      if (--this.waits === 0) { clearInterval(this.keepAlive); this.keepAlive = undefined }
    }
    p.then(done, done)
    return p
  }

  /** Everything pending fails with `err`; nothing more is sent. */
  private terminate(err: Error): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.building = undefined
    this.held = []
    this.welcome.reject(err)
    for (const rec of this.records.values()) {
      if (rec.fetch) { rec.fetch.reject(err); rec.fetch = undefined }
      if (rec.status === 'pending') settleRecord(rec, 'cancelled', err)
    }
    this.records.clear()
    this.requests.rejectAll(err)
  }

  private assertOpen(): void {
    if (this.state === 'closed' || this.closing) throw new CancelledError('client closed: make a new one with Client.connect or Client.local')
  }

  // ------------------------------------------------------------ making tasks

  private submitWith(o: ResolvedTaskOptions, fn: unknown, args: unknown[]): Future {
    this.assertOpen()
    if (o.key !== undefined && typeof o.key !== 'string') throw new TypeError('key: submit takes one key (a string); an array of keys is for map')
    const tf = toTaskFunction(fn)
    return this.makeTask(tf, args, o, o.key as string | undefined, tf.name)
  }

  private mapWith(o: ResolvedTaskOptions, fn: unknown, iterables: unknown[]): Future[] {
    this.assertOpen()
    if (iterables.length === 0) throw new TypeError('map needs at least one iterable of arguments, e.g. client.map(f, [1, 2, 3])')
    let allArrays = true
    for (let j = 0; j < iterables.length; j++) {
      const it = iterables[j]
      if (typeof it !== 'string' && (it === null || typeof it !== 'object' || typeof (it as Iterable<unknown>)[Symbol.iterator] !== 'function')) {
        throw new TypeError(`map: argument ${j + 2} must be an iterable (an array, a Set, a generator…), got ${describe(it)}`)
      }
      if (!Array.isArray(it)) allArrays = false
    }
    const tf = toTaskFunction(fn)
    const keys = Array.isArray(o.key) ? o.key as readonly string[] : undefined
    const prefix = typeof o.key === 'string' ? o.key : tf.name
    if (prefix.length > LIMITS.key - 17) throw new RangeError(`key: a prefix for map must be at most ${LIMITS.key - 17} characters, got ${prefix.length}`)
    const out: Future[] = []
    const width = iterables.length
    let i = 0
    let its: Iterator<unknown>[] | undefined
    try {
      if (allArrays) {
        const cols = iterables as unknown[][]
        let n = Infinity
        for (const c of cols) n = Math.min(n, c.length)
        if (keys && keys.length !== n) throw new RangeError(`key: map was given ${keys.length} keys for ${n} items`)
        if (width === 1) {
          const col = cols[0]!
          for (; i < n; i++) out.push(this.makeTask(tf, [col[i]], o, keys?.[i], prefix))
        } else {
          for (; i < n; i++) {
            const args = new Array<unknown>(width)
            for (let j = 0; j < width; j++) args[j] = cols[j]![i]
            out.push(this.makeTask(tf, args, o, keys?.[i], prefix))
          }
        }
      } else {
        its = iterables.map(it => (it as Iterable<unknown>)[Symbol.iterator]())
        for (;;) {
          const args = new Array<unknown>(width)
          let end = false
          for (let j = 0; j < width; j++) {
            const r = its[j]!.next()
            if (r.done) { end = true; break }
            args[j] = r.value
          }
          if (end) break
          if (keys && i >= keys.length) throw new RangeError(`key: map was given ${keys.length} keys for more items than that`)
          out.push(this.makeTask(tf, args, o, keys?.[i], prefix))
          i++
        }
        if (keys && keys.length !== i) throw new RangeError(`key: map was given ${keys.length} keys for ${i} items`)
      }
    } catch (err) {
      for (const f of out) f.release()
      // which item could not travel, when makeTask refused one
      if (err instanceof CodecError) throw new CodecError(`map item ${i}: ${err.message}`, err.path, { cause: err })
      if (err instanceof TooLargeError) throw new TooLargeError(`map item ${i}: ${err.message}`, { cause: err })
      throw err
    } finally {
      if (its) for (const it of its) it.return?.()
    }
    return out
  }

  /** The hot path of submit and map: one task, deduplicated by key. */
  private makeTask(tf: TaskFunction, args: unknown[], o: ResolvedTaskOptions, explicitKey: string | undefined, prefix: string): Future {
    let deps: string[] | undefined
    let argv = args
    for (let j = 0; j < args.length; j++) {
      if (typeof args[j] !== 'object' || args[j] === null) continue
      // some argument is an object: it may hold futures
      deps = []
      argv = this.replaceFutures(args, deps) as unknown[]
      if (deps.length === 0) deps = undefined
      break
    }
    const bytes = encodeValue(argv, 'args')
    if (bytes.byteLength > MAX_TASK_ARGS) {
      throw new TooLargeError(
        `the arguments of ${tf.name} encode to ${bytes.byteLength} bytes, over the ${MAX_TASK_ARGS} byte limit for task arguments: ` +
          'put big values on the grid with client.scatter(value) and pass the Future instead',
      )
    }
    if (deps && deps.length > 1) deps = [...new Set(deps)]
    const key = explicitKey ?? (o.pure ? `${prefix}-${pureKeyHash(tf, bytes)}` : `${prefix}-${this.nonce}${(this.counter++).toString(36)}`)
    let rec = this.records.get(key)
    if (rec === undefined || rec.status === 'cancelled' || rec.status === 'lost') {
      if (rec === undefined) {
        rec = newRecord(key)
        this.records.set(key, rec)
      } else settleRecord(rec, 'pending')
      const task: TaskSubmit = { key, fn: tf.hash, args: bytes, deps: deps ?? NO_DEPS, group: tf.name }
      if (o.priority !== undefined) task.priority = o.priority
      if (o.retries !== undefined) task.retries = o.retries
      if (o.redundancy !== undefined) task.redundancy = o.redundancy
      if (o.workers !== undefined) task.workers = o.workers
      if (o.timeout !== undefined) task.timeout = o.timeout
      // two honest runs of a random function differ: impure tasks are not spot-checked unless asked
      if (!(o.spotCheck ?? o.pure)) task.spotCheck = false
      this.ensureScheduled()
      if (!this.sentFunctions.has(tf.hash)) {
        this.sentFunctions.add(tf.hash)
        this.out({ type: 'function', hash: tf.hash, source: tf.source }, tf.source.length)
      }
      rec.spec = task
      if (!this.sources.has(tf.hash)) this.sources.set(tf.hash, tf.source)
      this.addTask(task, bytes.byteLength + key.length * 2 + TASK_OVERHEAD + (deps ? deps.length * 40 : 0))
    }
    return this.newFuture(rec)
  }

  private newFuture(rec: KeyRecord): Future {
    const f = new Future(this, rec, this.owner)
    this.registry.register(f, rec, f)
    return f
  }

  /** A copy of v with each Future replaced by a FutureRef (v itself when it holds none); their keys go to deps. */
  private replaceFutures(v: unknown, deps: string[]): unknown {
    return mapNested(v, x => {
      if (!(x instanceof Future)) return KEEP
      if (x.client !== this) throw new TypeError(`future ${x.key} belongs to another client: a task can only use futures of the client that submits it`)
      if (x.isReleased) throw new TabgridError('not-found', `future ${x.key} was released: a released future cannot be passed to a task`)
      if (x.status === 'cancelled') throw new CancelledError(`future ${x.key} was cancelled: a task cannot take it as an argument (submit its work again for a new future)`)
      deps.push(x.key)
      return new FutureRef(x.key)
    })
  }

  private async scatterWith(value: unknown, opts: unknown): Promise<Future> {
    this.assertOpen()
    const o = resolveScatterOptions(opts)
    if (value instanceof Future) throw new TypeError(`scatter takes a value, not a Future: ${value.key} is already on the grid; pass it to tasks as it is`)
    const found: string[] = []
    this.replaceFutures(value, found)
    if (found.length) throw new TypeError(`scatter takes plain data, but the value holds futures (${found.slice(0, 3).join(', ')}): gather them first, or pass them to a task`)
    const bytes = encodeValue(value, 'value')
    if (bytes.byteLength > LIMITS.valueBytes) throw new TooLargeError(`the scattered value encodes to ${bytes.byteLength} bytes, over the limit of ${LIMITS.valueBytes}`)
    const key = `scatter-${hashBytes(bytes)}`
    let rec = this.records.get(key)
    if (rec === undefined || rec.status === 'cancelled' || rec.status === 'lost') {
      if (rec === undefined) { rec = newRecord(key); this.records.set(key, rec) } else settleRecord(rec, 'pending')
      const msg: ClientMessage = { type: 'scatter', key, data: bytes }
      if (o.replicas !== undefined) msg.replicas = o.replicas
      this.sendNow(msg, bytes.byteLength)
    }
    const f = this.newFuture(rec)
    // as in Dask, the future comes back finished: the value is on a worker
    try {
      await (o.timeout === undefined ? f.whenDone() : withTimeout(f.whenDone(), o.timeout, `scatter of ${key}`))
    } catch (err) {
      f.release()
      throw err
    }
    if (f.status !== 'finished') {
      const err = f.record.error ?? new LostDataError(`scatter of ${key} failed`)
      f.release()
      throw err
    }
    return f
  }

  // ------------------------------------------------------------ fetching values

  private fetch(rec: KeyRecord): Promise<unknown> {
    if (this.state === 'closed') return Promise.reject(new CancelledError('client closed'))
    if (rec.status !== 'pending' && rec.status !== 'finished') return Promise.reject(rec.error)
    if (rec.fetch) return rec.fetch.promise
    const d = deferred<unknown>()
    rec.fetch = d
    this.addKey('gather', rec.key)
    return this.hold(d.promise)
  }

  /** One Future object let go of rec (release() or garbage collection). */
  private unref(rec: KeyRecord): void {
    if (--rec.refs > 0 || this.records.get(rec.key) !== rec) return
    this.records.delete(rec.key)
    // an Error costs microseconds (its stack): make one only for someone still waiting
    if (rec.fetch || (rec.settled && rec.status === 'pending')) {
      const err = new CancelledError(`${rec.key} was released`)
      if (rec.fetch) { rec.fetch.reject(err); rec.fetch = undefined }
      if (rec.status === 'pending') settleRecord(rec, 'cancelled', err)
    }
    if (this.joiner.size) this.joiner.drop(rec.key)
    if (this.state !== 'closed') this.addKey('release', rec.key)
  }

  /** rec ends in a failed state; whoever awaits its value gets `err`. */
  private fail(rec: KeyRecord, status: Exclude<FutureStatus, 'pending' | 'finished'>, err: Error): void {
    rec.spec = undefined
    settleRecord(rec, status, err)
    if (rec.fetch) { rec.fetch.reject(err); rec.fetch = undefined }
    this.joiner.drop(rec.key)
  }

  // ------------------------------------------------------------ sending

  private ensureScheduled(): void {
    if (this.scheduled) return
    this.scheduled = true
    queueMicrotask(this.endTurn)
  }

  /** Runs before the link's own end-of-turn flush (it was queued first), so the whole turn is one frame. */
  private readonly endTurn = (): void => {
    this.scheduled = false
    this.flushBuilding()
    if (this.state === 'connected') this.link.flush()
    this.linkBytes = 0
  }

  private addTask(task: TaskSubmit, bytes: number): void {
    const b = this.building
    if (b && b.type === 'submit') {
      if (b.tasks.length < LIMITS.keys && b.bytes + bytes <= FRAME_BUDGET) {
        b.tasks.push(task)
        b.bytes += bytes
        return
      }
      // a turn's tasks cut into frames: the coordinator may wait for the rest and place them in one wave
      b.more = true
    }
    this.flushBuilding()
    this.ensureScheduled()
    this.building = { type: 'submit', tasks: [task], bytes }
  }

  private addKey(type: KeysKind, key: string): void {
    const b = this.building
    // key.length + 3 is a key's encoded size for ASCII keys (the frame's real size is measured when it is packed)
    if (b && b.type === type && b.keys.length < LIMITS.keys && b.bytes + key.length + 3 <= FRAME_BUDGET) {
      b.keys.push(key)
      b.bytes += key.length + 3
      return
    }
    this.flushBuilding()
    this.ensureScheduled()
    this.building = { type, keys: [key], bytes: key.length + 32 }
  }

  private flushBuilding(): void {
    const b = this.building
    if (!b) return
    this.building = undefined
    if (b.type === 'submit') this.out(b.more ? { type: 'submit', tasks: b.tasks, more: true } : { type: 'submit', tasks: b.tasks }, b.bytes)
    else this.out({ type: b.type, keys: b.keys }, b.bytes)
  }

  /** Sends msg after whatever is being built (so order is kept). */
  private sendNow(msg: ClientMessage, bytes: number): void {
    this.flushBuilding()
    this.out(msg, bytes)
  }

  private out(msg: ClientMessage, bytes: number): void {
    if (this.state !== 'connected') {
      if (this.state !== 'closed') this.held.push(msg)
      return
    }
    this.ensureScheduled()
    if (this.linkBytes > 0 && this.linkBytes + bytes > FRAME_BUDGET) { this.link.flush(); this.linkBytes = 0 }
    this.link.send(msg)
    this.linkBytes += bytes
    if (this.linkBytes >= FRAME_BUDGET) { this.link.flush(); this.linkBytes = 0 }
  }

  /** Sends a request; its answer is checked against the reply schema of its kind (a malformed one fails this request only). */
  private request<O extends ClientRequest>(op: O, timeout: number, what: string, bytes = 64): Promise<ReplyValue<O['op']>> {
    if (this.state === 'closed') return Promise.reject(new CancelledError('client closed'))
    if (!this.connected) return Promise.reject(new TimeoutError(`${what}: not connected to the coordinator (reconnecting)`))
    const { id, promise } = this.requests.open(timeout, what)
    this.sendNow({ type: 'request', id, op }, bytes + (op.op === 'upload-module' ? op.source.length : 0))
    const schema = replyValues[op.op as O['op']]
    return this.hold(promise.then(value => {
      const r = schema.safeParse(value)
      if (!r.success) throw new TabgridError('bad-message', `${what}: the coordinator's reply is malformed (${describeIssues(r.error)}): ${describe(value)}`)
      return r.data as ReplyValue<O['op']>
    }))
  }

  // ------------------------------------------------------------ receiving

  private receive(msgs: ToClientMessage[]): void {
    for (const m of msgs) {
      try {
        this.handle(m)
      } catch (err) {
        console.error(`tabgrid: error handling a ${String((m as { type?: unknown }).type)} message from the coordinator:`, err)
      }
    }
  }

  private handle(m: ToClientMessage): void {
    switch (m.type) {
      case 'welcome': return this.onWelcome(m)
      case 'key-state': {
        const rec = this.records.get(m.key)
        if (!rec) return
        // a gather of a task whose submit was lost with a dropped connection: the re-check sends both again
        if (m.state === 'erred' && m.error?.code === 'not-found' && rec.spec !== undefined && rec.status === 'pending') { if (!this.resyncing) this.resync(); return }
        rec.spec = undefined
        switch (m.state) {
          case 'memory':
            // the value it had was disproven and replaced: result() now gets the new one
            if (m.replaced && rec.status !== 'pending') rec.replaced++
            // a late "memory" does not undo a cancel made here
            if (rec.status !== 'cancelled') settleRecord(rec, 'finished')
            return
          case 'erred': {
            const err = fromWireError(withKey(m.error ?? { code: 'task-error', message: `task ${m.key} failed` }, m.key))
            return this.fail(rec, err.code === 'cancelled' ? 'cancelled' : err.code === 'lost-data' ? 'lost' : 'error', err)
          }
          case 'cancelled':
            return this.fail(rec, 'cancelled', m.error ? fromWireError(withKey(m.error, m.key)) : new CancelledError(`${m.key} was cancelled`))
          case 'lost':
            return this.fail(rec, 'lost', m.error ? fromWireError(withKey(m.error, m.key)) : new LostDataError(`${m.key} is lost: no worker holds it and it cannot be recomputed`))
          default: {
            const never: never = m.state
            throw new Error(`unknown key state ${String(never)}`)
          }
        }
      }
      case 'data': {
        const rec = this.records.get(m.key)
        let bytes: Uint8Array | undefined
        try {
          bytes = this.joiner.add(m.key, m)
        } catch (err) {
          if (rec?.fetch) { rec.fetch.reject(err instanceof TooLargeError ? err : new TabgridError('bad-message', `the data of ${m.key} arrived broken: ${(err as Error).message}`, { cause: err })); rec.fetch = undefined }
          return
        }
        if (!bytes || !rec?.fetch) return
        const d = rec.fetch
        rec.fetch = undefined
        if (rec.status === 'pending') settleRecord(rec, 'finished')
        rec.spec = undefined
        let value: unknown
        try {
          value = decodeValue(bytes)
        } catch (err) {
          d.reject(err instanceof SerializationError ? err : new SerializationError(`cannot decode the value of ${m.key}: ${(err as Error).message}`, { cause: err }))
          return
        }
        d.resolve(value)
        return
      }
      case 'data-error': {
        const rec = this.records.get(m.key)
        this.joiner.drop(m.key)
        if (rec?.fetch) { rec.fetch.reject(fromWireError(withKey(m.error, m.key))); rec.fetch = undefined }
        return
      }
      case 'reply':
        if (m.ok) this.requests.resolve(m.id, m.value)
        else this.requests.reject(m.id, m.error ?? { code: 'internal', message: 'the request failed without a reason' })
        return
      case 'error': {
        const rec = m.error.key !== undefined ? this.records.get(m.error.key) : undefined
        // a gather of a task whose submit was lost with a dropped connection: the re-check sends both again
        if (rec && rec.spec !== undefined && m.error.code === 'not-found' && rec.status === 'pending') { if (!this.resyncing) this.resync(); return }
        if (rec) return this.fail(rec, 'error', fromWireError(m.error))
        // a frame of this client's refused for its size: what it carried is lost, find out which futures that leaves hanging
        if (m.error.code === 'too-large' && m.error.key === undefined) this.resync()
        if (this.warned.has(m.error.code)) return
        this.warned.add(m.error.code)
        console.warn(`tabgrid: the coordinator refused something this client sent (${m.error.code}): ${m.error.message} (further '${m.error.code}' errors are not shown)`)
        return
      }
      default: {
        const never: never = m
        throw new Error(`unknown message type ${String((never as { type?: unknown }).type)}`)
      }
    }
  }

  private onWelcome(m: Extract<ToClientMessage, { type: 'welcome' }>): void {
    if (m.version !== PROTOCOL_VERSION) {
      const err = new TabgridError('bad-message', `the coordinator speaks protocol version ${m.version}, this client ${PROTOCOL_VERSION}: use matching tabgrid versions`)
      this.terminate(err)
      this.link.close()
      return
    }
    if (this.state === 'closed') return
    const first = this.clientId === undefined
    this.clientId = m.id
    // a reconnect resumes with the secret only this connection was given (the id is public)
    if (this.link.hello.role === 'client') { if (m.resume) this.link.hello.resume = m.resume; else delete this.link.hello.resume }
    const reconnected = this.state === 'awaiting-welcome' && !first
    this.state = 'connected'
    const held = this.held
    this.held = []
    if (!reconnected || m.resumed) {
      for (const msg of held) if (!reconnected || msg.type !== 'gather') this.out(msg, 'data' in msg ? msg.data.byteLength : 64)
    }
    if (reconnected && m.resumed) {
      for (const rec of this.records.values()) if (rec.fetch) this.addKey('gather', rec.key)
      this.resync()
    } else if (reconnected) {
      for (const rec of this.records.values()) {
        if (rec.status === 'pending' || rec.status === 'finished') this.fail(rec, 'lost', new LostDataError(`${rec.key}: ${FORGOT_US}`))
      }
      this.building = undefined
      // functions "sent" while away were dropped with the rest
      this.sentFunctions.clear()
    }
    this.welcome.resolve()
  }

  /**
   * After a resumed reconnect: key states sent while this client was away did not reach
   * it, and tasks sent as the connection dropped may never have arrived. Ask.
   */
  private resync(): void {
    const run = ++this.resyncRun
    this.resyncing = true
    const keys: string[] = []
    for (const rec of this.records.values()) if (rec.status === 'pending') keys.push(rec.key)
    let next = 0
    let inFlight = 0
    let warned = false
    const current = (): boolean => run === this.resyncRun && this.state === 'connected'
    // Paced: a few requests of about STATUS_BYTES each in flight, the next when one is
    // answered, so neither end gets one huge frame and the socket stays served in between
    const pump = (): void => {
      if (run === this.resyncRun && inFlight === 0 && (next >= keys.length || !current())) this.resyncing = false
      while (inFlight < STATUS_IN_FLIGHT && next < keys.length && current()) {
        const chunk: string[] = []
        let bytes = 0
        while (next < keys.length && chunk.length < LIMITS.keys) {
          const b = encodedStringBytes(keys[next]!)
          if (chunk.length > 0 && bytes + b > STATUS_BYTES) break
          chunk.push(keys[next++]!)
          bytes += b
        }
        inFlight++
        this.request({ op: 'status', keys: chunk }, REQUEST_TIMEOUT, 'status after reconnect', bytes + 64).then(value => {
          inFlight--
          this.applyStatus(chunk, value)
          pump()
        }, (err: Error) => {
          inFlight--
          if (run === this.resyncRun) this.resyncing = false
          // a newer reconnect checks again from the start; say it once per run
          if (warned || this.state === 'closed' || run !== this.resyncRun) return
          warned = true
          console.warn(`tabgrid: could not check ${keys.length - next + chunk.length} futures after reconnecting (${err.message}); they are checked again on the next reconnect, and their states still arrive as they change`)
        })
      }
    }
    pump()
  }

  /** Settles what a status answer says was decided while this client was away. */
  private applyStatus(chunk: readonly string[], states: ReplyValue<'status'>): void {
    for (const key of chunk) {
      const rec = this.records.get(key)
      if (!rec || rec.status !== 'pending') continue
      const st = states[key]
      if ((st === 'forgotten' || st === 'released') && rec.spec !== undefined) {
        // lost with a frame the dropped connection never delivered: send it again
        const task = rec.spec as TaskSubmit
        if (!this.sentFunctions.has(task.fn)) {
          const source = this.sources.get(task.fn)
          if (source !== undefined) { this.sentFunctions.add(task.fn); this.out({ type: 'function', hash: task.fn, source }, source.length) }
        }
        this.addTask(task, task.args.byteLength + key.length * 2 + TASK_OVERHEAD + task.deps.length * 40)
        // a gather sent before the task was known was refused: ask again
        if (rec.fetch) this.addKey('gather', key)
        continue
      }
      rec.spec = undefined
      if (st === 'memory') settleRecord(rec, 'finished')
      else if (st === 'erred') this.fail(rec, 'error', new TaskError(`${key} failed while this client was reconnecting (its error did not reach this client: see client.story(key))`, { key }))
      else if (st === 'forgotten' || st === 'released') this.fail(rec, 'lost', new LostDataError(`${key} did not reach the coordinator before the connection dropped: submit it again`))
    }
  }

  private onLinkStatus(s: LinkStatus): void {
    switch (s.state) {
      case 'connected':
        if (this.state === 'closed') return
        if (s.again || this.state === 'reconnecting') this.state = 'awaiting-welcome'
        return
      case 'disconnected':
        if (this.state === 'closed') return
        this.state = 'reconnecting'
        this.sentFunctions.clear()
        this.joiner = new PartJoiner()
        this.linkBytes = 0
        this.requests.rejectAll(new TimeoutError(`lost the connection to the coordinator (${s.reason})`))
        return
      case 'closed':
        // close() may be waiting for its acknowledgement: it will not come now
        if (this.closing) { this.requests.rejectAll(new CancelledError(`the connection to the coordinator closed (${s.reason})`)); return }
        this.terminate(new CancelledError(`client closed: the connection to the coordinator closed (${s.reason})`))
        this.closing = Promise.resolve().then(() => this.onClose?.()).catch((err: unknown) => {
          console.error('tabgrid: shutting down the local cluster failed:', err)
        })
        return
      default: {
        const never: never = s
        throw new Error(`unknown link status ${String(never)}`)
      }
    }
  }
}

/** The futures a cancel, retry or fireAndForget was given, all checked before any is acted on. */
function futureList(futures: Future | Iterable<Future>, what: string): Future[] {
  const list = futures instanceof Future ? [futures] : [...futures as Iterable<Future>]
  for (const f of list) if (!(f instanceof Future)) throw new TypeError(`${what} takes Futures, got ${describe(f)}`)
  return list
}

/** Resolves in a later turn of the event loop (after I/O: pings, incoming frames), not a microtask. */
function nextTurn(): Promise<void> {
  const g = globalThis as { setImmediate?: (fn: () => void) => unknown; MessageChannel?: new () => { port1: { onmessage: (() => void) | null; close(): void }; port2: { postMessage(v: unknown): void; close(): void } } }
  return new Promise(resolve => {
    if (g.setImmediate) { g.setImmediate(resolve); return }
    if (g.MessageChannel) {
      // a browser clamps nested setTimeout(0) to 4 ms; a message is not clamped
      const ch = new g.MessageChannel()
      ch.port1.onmessage = () => { ch.port1.close(); ch.port2.close(); resolve() }
      ch.port2.postMessage(0)
      return
    }
    setTimeout(resolve, 0)
  })
}

function checkDatasetName(name: unknown): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > LIMITS.name) throw new TypeError(`a dataset name must be a string of 1 to ${LIMITS.name} characters, got ${describe(name)}`)
}

/** A key whose task failed (and may be retried). */
function failedRecord(rec: KeyRecord): boolean {
  return rec.status === 'error' || rec.status === 'lost'
}

/** Environment variables where there are any (Node), else none (browsers). */
function environment(): Record<string, string | undefined> {
  const p = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
  return p?.env ?? {}
}

function safeUrl(address: string): string | undefined {
  try { return coordinatorUrl(address) } catch { return undefined }
}

function withKey(e: WireError, key: string): WireError {
  return e.key === undefined ? { ...e, key } : e
}

const isFuture = (x: object): boolean => x instanceof Future

/** Failed in a way `errors: 'skip'` leaves out (not cancelled: that still rejects, as in Dask). */
function failed(f: Future): boolean {
  return f.status === 'error' || f.status === 'lost'
}


/**
 * A client with per-call options applied (`client.with(...)`): the same `submit`,
 * `map` and `scatter`, and `with` to add more options.
 *
 * @example
 * ```ts
 * const urgent = client.with({ priority: 100 })
 * const f = urgent.submit(check, data)
 * urgent.with({ retries: 3 }).map(fetchPage, urls)
 * ```
 */
export class ClientView {
  /** @internal made by `client.with(options)` */
  constructor(
    /** The client this view submits through. */
    readonly client: Client,
    /** The options applied, validated. */
    readonly options: Readonly<ResolvedTaskOptions>,
    private readonly maker: TaskMaker,
  ) {}

  /**
   * `client.submit` with this view's options.
   *
   * @example
   * ```ts
   * client.with({ key: 'answer' }).submit(() => 42)
   * ```
   */
  submit<A extends unknown[], R>(fn: (...args: A) => R | Promise<R>, ...args: { [K in keyof A]: MaybeFuture<A[K]> }): Future<Awaited<R>> {
    return this.maker.submit(this.options, fn, args) as Future<Awaited<R>>
  }

  /**
   * `client.map` with this view's options; `key` may be a prefix or one key per item.
   *
   * @example
   * ```ts
   * client.with({ retries: 2, key: ['a', 'b'] }).map(load, ['a.csv', 'b.csv'])
   * ```
   */
  map<A extends unknown[], R>(fn: (...args: A) => R | Promise<R>, ...iterables: { [K in keyof A]: Iterable<MaybeFuture<A[K]>> }): Future<Awaited<R>>[] {
    return this.maker.map(this.options, fn, iterables) as Future<Awaited<R>>[]
  }

  /**
   * `client.scatter` (task options do not apply to scattered data).
   *
   * @example
   * ```ts
   * const d = await view.scatter(bigArray, { replicas: 2 })
   * ```
   */
  scatter<T>(value: T, opts?: ScatterOptions): Promise<Future<T>> {
    return this.maker.scatter(value, opts) as Promise<Future<T>>
  }

  /**
   * More options on top of these.
   *
   * @example
   * ```ts
   * const v = client.with({ priority: 5 }).with({ retries: 1 })   // both apply
   * ```
   */
  with(options: TaskOptions): ClientView {
    return new ClientView(this.client, resolveTaskOptions(options, this.options), this.maker)
  }
}

export type { TaskOptions, ScatterOptions, ClientConnectOptions, LocalOptions, RequestOptions, GatherOptions, PublishOptions, AsCompletedOptions } from './options.js'
