/**
 * Every wire message, defined once. Each role's messages are a discriminated union on
 * `type`, validated by a zod schema with size caps: types validate nothing, so every
 * socket handler parses `unknown` through these before it trusts a byte.
 *
 * On the wire a connection carries one socket.io event, `frame`, whose single argument
 * is a msgpack-encoded array of messages (see `wire.ts`): many assignments or results
 * travel in one frame, and binary fields travel as binary, never as JSON.
 */
import { z } from 'zod'
import { ERROR_CODES, type ErrorCode } from './errors.js'

/** Limits every side enforces on what it receives. */
export const LIMITS = {
  /** longest key */
  key: 256,
  /** longest function or module source */
  source: 1 << 20,
  /** most messages in one frame */
  messagesPerFrame: 200_000,
  /** most keys in one list */
  keys: 200_000,
  /** largest encoded frame a coordinator accepts (socket.io maxHttpBufferSize) */
  frameBytes: 16 << 20,
  /** binary payloads above this are split into parts of this size */
  chunkBytes: 1 << 20,
  /** binary `data` of at least this many bytes travels beside its frame, as an attachment (wire.ts) */
  attachBytes: 64 << 10,
  /** most attachments beside one frame (each at most chunkBytes) */
  attachmentsPerFrame: 16,
  /** largest single value (encoded) that may travel */
  valueBytes: 1 << 30,
  /** longest name (worker, module, group) */
  name: 128,
  /** longest error message or stack */
  text: 64 << 10,
  /** most entries in a worker's story of one key */
  storyEntries: 1000,
} as const

export const PROTOCOL_VERSION = 1

const key = z.string().min(1).max(LIMITS.key)
const keys = z.array(key).max(LIMITS.keys)
const name = z.string().min(1).max(LIMITS.name)
const text = z.string().max(LIMITS.text)
const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)
const bytes = z.custom<Uint8Array>(v => v instanceof Uint8Array, 'expected binary data')

/** The one table of error codes is errors.ts's ERROR_CODES. */
const errorCode = z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]])
/** An error as it travels (see errors.ts). */
export const wireError = z.object({
  code: errorCode,
  message: text,
  name: z.string().max(LIMITS.name).optional(),
  stack: text.optional(),
  key: key.optional(),
})

/**
 * A binary payload that may be split into parts: a message with `parts` > 1 is one
 * piece of `total` bytes; the receiver joins the pieces (wire.ts `PartJoiner`).
 */
const partFields = {
  /** this piece's index, from 0 */
  part: count.optional(),
  /** how many pieces make the whole (absent: 1) */
  parts: count.max(LIMITS.valueBytes / LIMITS.chunkBytes + 1).optional(),
  /** bytes of the whole (over LIMITS.valueBytes: refused, before anything is allocated) */
  total: count.optional(),
  /**
   * which stream of parts this piece belongs to (the coordinator's relay id): a piece of
   * another stream for the same payload (relayed again, from another holder) replaces
   * the pieces the old one left
   */
  stream: count.optional(),
}

// ---------------------------------------------------------------- handshake

/** The coordinator's first message on every connection, whatever the role. */
export const welcomeMessage = z.object({
  type: z.literal('welcome'),
  /** the peer's id at the coordinator (a worker's or client's public id) */
  id: z.string(),
  version: z.number(),
  /** true when this connection picked up an identity kept during its grace period */
  resumed: z.boolean(),
  /** a secret for this connection alone (clients and workers): present it in a later hello's `resume` to pick up this identity; the public id resumes nothing */
  resume: z.string().optional(),
})

/** Most keys a worker lists in its hello's `held` (a hello stays well under the frame cap); a list this long may leave some out. */
export const HELLO_HELD_MAX = 50_000

/** What a connecting socket says about itself (socket.io `auth`). */
export const hello = z.discriminatedUnion('role', [
  z.object({
    role: z.literal('client'),
    token: z.string().max(1024).optional(),
    /** the `resume` secret of an earlier welcome, to pick up its futures after a reconnect within the grace period (a public id resumes nothing) */
    resume: z.string().max(64).optional(),
    name: name.optional(),
  }),
  z.object({
    role: z.literal('worker'),
    token: z.string().max(1024).optional(),
    /** the `resume` secret of an earlier welcome: keeps the identity (and its data) across a reload within the grace period */
    resume: z.string().max(64).optional(),
    name: name.optional(),
    kind: z.enum(['browser', 'node']),
    /** how many tasks it runs at once (processes × threads) */
    slots: z.number().int().min(1).max(4096),
    /**
     * keys it still holds (a reloaded tab re-announces what it spilled to IndexedDB; any
     * worker, after losing the coordinator, what it holds then), with the digest its
     * report gave (or its put carried), which a restarted coordinator checks against its journal
     */
    held: z.array(z.object({ key, nbytes: count, digest: z.string().max(64).optional() })).max(LIMITS.keys).optional(),
  }),
  z.object({
    role: z.literal('dashboard'),
    token: z.string().max(1024).optional(),
  }),
])
export type Hello = z.infer<typeof hello>
export type Role = Hello['role']

// ---------------------------------------------------------------- client → coordinator

/** One task as a client submits it. */
export const taskSubmit = z.object({
  /** unique key, named after the function: `inc-3f2a…` */
  key,
  /** hash of the function's source (sent before in a `function` message); absent for scattered data */
  fn: z.string().min(1).max(64),
  /** encoded arguments array (codec.ts), FutureRefs inside */
  args: bytes,
  /** keys of the futures inside args */
  deps: keys,
  group: name,
  priority: z.number().finite().optional(),
  retries: z.number().int().min(0).max(100).optional(),
  redundancy: z.number().int().min(1).max(16).optional(),
  workers: z.array(z.string().max(LIMITS.name)).max(1024).optional(),
  /** ms a run may take; past it the worker stops the thread running it and the task errs */
  timeout: z.number().int().positive().max(2 ** 31 - 1).optional(),
  /** false: its result is never spot-checked on another volunteer (random or side-effecting functions) */
  spotCheck: z.boolean().optional(),
})
export type TaskSubmit = z.infer<typeof taskSubmit>

export const clientMessage = z.discriminatedUnion('type', [
  /** a task function's source; sent once per connection before the tasks that use it */
  z.object({ type: z.literal('function'), hash: z.string().min(1).max(64), source: z.string().min(1).max(LIMITS.source) }),
  /**
   * tasks to run; `more`: tasks submitted in the same turn follow in the next frame (a
   * map cut into frames), so the coordinator may hold these briefly and place them all in
   * one wave (CoordinatorOptions.submitHoldMs)
   */
  z.object({ type: z.literal('submit'), tasks: z.array(taskSubmit).max(LIMITS.keys), more: z.boolean().optional() }),
  /** one value onto the grid (possibly in parts) */
  z.object({ type: z.literal('scatter'), key, data: bytes, replicas: z.number().int().min(1).max(64).optional(), ...partFields }),
  /** the client holds no future to these keys any more */
  z.object({ type: z.literal('release'), keys }),
  /** cancel these keys */
  z.object({ type: z.literal('cancel'), keys }),
  /** send me these keys' data when ready */
  z.object({ type: z.literal('gather'), keys }),
  /** run these keys (held by this client) to the end even if every client lets go of them */
  z.object({ type: z.literal('fire-and-forget'), keys }),
  /** run these erred keys (held by this client) again, with the erred tasks they depend on */
  z.object({ type: z.literal('retry'), keys }),
  /** a request with an answer (`reply`) */
  z.object({ type: z.literal('request'), id: count, op: z.discriminatedUnion('op', [
    z.object({ op: z.literal('workers') }),
    z.object({ op: z.literal('upload-module'), name, source: z.string().min(1).max(LIMITS.source) }),
    z.object({ op: z.literal('story'), key }),
    z.object({ op: z.literal('who-has'), keys }),
    z.object({ op: z.literal('status'), keys }),
    /** publish a key this client holds under a name that outlives the client */
    z.object({ op: z.literal('publish-dataset'), name, key, override: z.boolean().optional() }),
    /** the key published under a name (answered `{ key }`); the client then holds it */
    z.object({ op: z.literal('get-dataset'), name }),
    z.object({ op: z.literal('list-datasets') }),
    z.object({ op: z.literal('unpublish-dataset'), name }),
    /** the client is closing: answered once everything it sent before is handled; its work is released at once (no grace period) */
    z.object({ op: z.literal('close') }),
  ]) }),
])
export type ClientMessage = z.infer<typeof clientMessage>
export type ClientRequest = Extract<ClientMessage, { type: 'request' }>['op']

// ---------------------------------------------------------------- replies

/** A task's state at the coordinator, as a `status` reply names it (Dask's, and 'forgotten' for a key it does not know). */
export const taskStatus = z.enum(['waiting', 'queued', 'processing', 'memory', 'erred', 'released', 'forgotten'])

/** One worker in a `workers` reply (`client.workers()`); the coordinator may add fields. */
export const workerSummary = z.looseObject({
  id: z.string(),
  name: z.string(),
  kind: z.enum(['browser', 'node']),
  /** tasks it runs at once (processes × threads) */
  slots: count,
  accepting: z.boolean().optional(),
  /** handing its data off before it leaves */
  retiring: z.boolean().optional(),
  /** the worker's lifecycle at the scheduler: 'running', 'paused', 'lapsed', 'retiring', 'retired' */
  status: z.string().max(LIMITS.name).optional(),
  /** tasks assigned to it now */
  processing: count.optional(),
  /** keys it holds */
  held: count.optional(),
  /** bytes of results it holds, as the scheduler counts them */
  nbytes: count.optional(),
  done: count.optional(),
  /** when it joined, ms since the epoch (coordinator clock) */
  since: z.number().optional(),
  connected: z.boolean().optional(),
  /** bytes in memory and spilled, as the worker last said */
  memory: count.optional(),
  spilled: count.optional(),
})

/**
 * One step of a key's history in a `story` reply (`client.story(key)`). Entries of the
 * scheduler have `worker` when one was involved; entries of a worker's own state machine
 * (what it did with the key: received, waiting, ready, executing, memory) have
 * `source: 'worker'`, `worker` and `thread`, with `now` on the coordinator's clock.
 */
export const storyEntry = z.looseObject({
  key,
  from: z.string().max(LIMITS.name),
  to: z.string().max(LIMITS.name),
  /** what caused the transition, e.g. 'submit-42' */
  stimulus: z.string().max(LIMITS.text),
  worker: z.string().max(LIMITS.name).optional(),
  /** ms: the coordinator's clock (ms since the epoch) */
  now: z.number(),
  note: z.string().max(LIMITS.text).optional(),
  /** who recorded it: the scheduler (absent) or the worker's own state machine */
  source: z.enum(['scheduler', 'worker']).optional(),
  /** the worker's thread, for worker entries */
  thread: count.optional(),
  /** the attempt the entry is about, for worker entries */
  attempt: count.optional(),
})

/**
 * What each request kind answers with (`reply.value` when `ok`), by `op`. The reply
 * message itself carries only the request's id, so the client checks its value against
 * the schema of the request it sent under that id: a malformed reply fails that request
 * alone, with a `bad-message` error.
 */
export const replyValues = {
  workers: z.array(workerSummary).max(1 << 20),
  'upload-module': z.literal(true),
  story: z.array(storyEntry).max(1 << 16),
  /** for each key asked, the ids of the workers holding it */
  'who-has': z.record(z.string(), z.array(z.string())),
  /** for each key asked, its state ('forgotten' when the coordinator does not know it) */
  status: z.record(z.string(), taskStatus),
  'publish-dataset': z.literal(true),
  'get-dataset': z.object({ key }),
  'list-datasets': z.array(z.string()).max(1 << 20),
  'unpublish-dataset': z.literal(true),
  close: z.literal(true),
} satisfies Record<ClientRequest['op'], z.ZodType>
/** The value a request of kind `O` answers with. */
export type ReplyValue<O extends ClientRequest['op']> = z.infer<(typeof replyValues)[O]>

// ---------------------------------------------------------------- coordinator → client

export const keyStateMessage = z.object({
  type: z.literal('key-state'), key,
  state: z.enum(['memory', 'erred', 'cancelled', 'lost']),
  error: wireError.optional(), nbytes: count.optional(),
  /** the value the client was told of before was disproven (its volunteer was caught lying, and a re-run differs): this one replaces it */
  replaced: z.boolean().optional(),
})

export const toClientMessage = z.discriminatedUnion('type', [
  welcomeMessage,
  keyStateMessage,
  /** a key's data (possibly in parts) */
  z.object({ type: z.literal('data'), key, data: bytes, ...partFields }),
  /** a gathered key's data could not be had */
  z.object({ type: z.literal('data-error'), key, error: wireError }),
  /** the answer to a request; `value` is checked against `replyValues[op]` by the client, which knows the op it sent under `id` */
  z.object({ type: z.literal('reply'), id: count, ok: z.boolean(), value: z.unknown().optional(), error: wireError.optional() }),
  /** something the client sent was refused */
  z.object({ type: z.literal('error'), error: wireError }),
])
export type ToClientMessage = z.infer<typeof toClientMessage>

// ---------------------------------------------------------------- coordinator → worker

/** One transition of the worker's state machine for a key (core/worker-state.ts), as the worker reports it. */
export const workerStoryEntry = z.object({
  attempt: count,
  /** 'new' (received), 'waiting' (for inputs), 'ready', 'copying', 'executing', 'memory', 'erred', … */
  from: z.string().max(32),
  to: z.string().max(32),
  /** what caused it on the worker, e.g. 'assign-12' */
  stimulus: z.string().max(256),
  /** the worker's clock (ms) */
  now: z.number().finite(),
  note: z.string().max(1024).optional(),
  /** the thread it was on, if any */
  thread: count.optional(),
})
export type WorkerStoryEntry = z.infer<typeof workerStoryEntry>

export const toWorkerMessage = z.discriminatedUnion('type', [
  welcomeMessage,
  /** a task function's source; `hash` is its id (the SHA-256 of the source) */
  z.object({ type: z.literal('function'), hash: z.string(), source: z.string() }),
  /** a client's module; tasks of that client (assignments with the same `ns`) import it by name */
  z.object({ type: z.literal('module'), name, source: z.string(), ns: z.string().optional() }),
  z.object({
    type: z.literal('assign'), key, attempt: count,
    /** function hash; its source came earlier in a `function` message */
    fn: z.string(),
    args: bytes,
    /** dependencies: the worker uses its own copy or fetches the rest */
    deps: z.array(z.object({ key, nbytes: count })),
    /** send the encoded result back with `finished` */
    push: z.boolean(),
    /** report a digest of the encoded result (redundant runs, spot checks, re-verification) */
    digest: z.boolean().optional(),
    /** ms the run may take */
    timeout: z.number().optional(),
    /** higher runs first, also among tasks already on the worker */
    priority: z.number().finite().optional(),
    /** submission order: among equal priorities, lower runs first */
    seq: z.number().int().optional(),
    /** the module namespace of the client that submitted it (absent: it uploaded none) */
    ns: z.string().optional(),
  }),
  z.object({ type: z.literal('cancel-task'), key, attempt: count }),
  z.object({ type: z.literal('steal'), key, attempt: count }),
  z.object({ type: z.literal('free'), keys }),
  /** forget these function sources (least recently used of one client's, past its per-worker cap); keep any a task here still needs */
  z.object({ type: z.literal('free-functions'), hashes: z.array(z.string().max(64)).max(LIMITS.keys) }),
  /** forget the modules of the client with this namespace (it is gone) */
  z.object({ type: z.literal('free-modules'), ns: z.string().max(64) }),
  /** store this value (scattered data, or a hand-off from a leaving worker) */
  z.object({ type: z.literal('put'), key, data: bytes, /** SHA-256 of the bytes, when the coordinator knows it (scattered data): the worker names it when it re-announces the key */ digest: z.string().max(64).optional(), ...partFields }),
  /** send me key's data, answer with `data` carrying the same id */
  z.object({ type: z.literal('fetch'), id: count, key }),
  /** answer to the worker's own fetch */
  z.object({ type: z.literal('data'), id: count, key, data: bytes, ...partFields }),
  z.object({ type: z.literal('data-error'), id: count, key, error: wireError }),
  /** the coordinator asks the worker to leave (retire done, or shutting down) */
  z.object({ type: z.literal('goodbye'), reason: text }),
  /** what the worker's own state machine did with key (for `client.story`): answered by `story` with the same id */
  z.object({ type: z.literal('story'), id: count, key }),
  z.object({ type: z.literal('error'), error: wireError }),
])
export type ToWorkerMessage = z.infer<typeof toWorkerMessage>

// ---------------------------------------------------------------- worker → coordinator

export const workerMessage = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('finished'), key, attempt: count, nbytes: count,
    /** run time in ms */
    ms: z.number().nonnegative().finite(),
    /** SHA-256 of the encoded result (hex), when the task asks for redundancy: the coordinator checks the bytes it relays against it */
    digest: z.string().max(64).optional(),
    /** the encoded result, when the assignment said `push` (small values only) */
    data: bytes.optional(),
  }),
  z.object({ type: z.literal('erred'), key, attempt: count, error: wireError, crashed: z.boolean().optional() }),
  z.object({ type: z.literal('missing'), key, attempt: count, missing: z.array(z.object({ key, holder: z.string().max(64) })).max(LIMITS.keys) }),
  z.object({ type: z.literal('steal-response'), key, attempt: count, ok: z.boolean() }),
  /** a `put` was stored, or a copy fetched as a dependency was kept */
  z.object({ type: z.literal('stored'), key, nbytes: count }),
  /** the worker needs key's data from elsewhere; answered by `data` with the same id */
  z.object({ type: z.literal('fetch'), id: count, key }),
  /** answer to the coordinator's fetch */
  z.object({ type: z.literal('data'), id: count, key, data: bytes, ...partFields }),
  z.object({ type: z.literal('data-error'), id: count, key, error: wireError }),
  /** accepting false: paused by the volunteer or past the memory high-water mark */
  z.object({ type: z.literal('status'), accepting: z.boolean(), memory: count.optional(), spilled: count.optional(), /** the pool was resized */ slots: z.number().int().min(1).max(4096).optional() }),
  /** renews the worker's leases: sent every second or so from a tick that background tabs don't throttle */
  z.object({ type: z.literal('heartbeat'), /** bytes of results in memory */ memory: count.optional(), /** bytes spilled to disk / IndexedDB */ spilled: count.optional() }),
  /** the worker dropped these keys */
  z.object({ type: z.literal('released'), keys }),
  /** graceful leave: hand off data, then the coordinator says goodbye */
  z.object({ type: z.literal('retire') }),
  /** answer to the coordinator's `story`: the worker's transitions for the key, oldest first, times on the worker's clock */
  z.object({ type: z.literal('story'), id: count, /** the worker's clock when it answered (ms), to place its entries on the coordinator's */ now: z.number().finite(), entries: z.array(workerStoryEntry).max(LIMITS.storyEntries) }),
])
export type WorkerMessage = z.infer<typeof workerMessage>

// ---------------------------------------------------------------- coordinator → dashboard

/*
 * The dashboard stream (server/dashboard.ts): one `stream` message per interval (500 ms),
 * only while a dashboard is connected. `full: true` replaces everything the page holds
 * (sent when a dashboard joins, and every 30 s); otherwise lists hold only what changed.
 * Rows are tuples, not objects: thousands of them travel, and msgpack repeats object keys.
 * Every list is bounded, whatever the size of the grid.
 */

/** A worker in the workers table. */
export const dashboardWorkerRow = z.tuple([
  /* id */ z.string(),
  /* name */ z.string(),
  /* kind */ z.enum(['browser', 'node']),
  /* slots: Web Workers (tab) or threads (Node agent) × tasks each runs at once */ count,
  /* tasks running (or assigned) now */ count,
  /* tasks done since it joined */ count,
  /* bytes of results it holds in memory */ count,
  /* bytes it spilled to IndexedDB or disk */ count,
  /* joined at, ms since the epoch (coordinator clock) */ count,
  /* 'ok'; 'paused' (by the volunteer, or memory); 'leaving' (handing off data); 'away' (disconnected, in its grace period) */
  z.enum(['ok', 'paused', 'leaving', 'away']),
])
export type DashboardWorkerRow = z.infer<typeof dashboardWorkerRow>

/** A task group's progress (a group is the function name keys are named after: `inc-3f2a…` → `inc`). */
export const dashboardGroupRow = z.tuple([
  /* group */ z.string(),
  /* done: finished since the group last started after a pause of 30 s or more */ count,
  /* running */ count,
  /* queued: waiting for dependencies or for a slot */ count,
  /* failed */ count,
])
export type DashboardGroupRow = z.infer<typeof dashboardGroupRow>

/** One point of the time series, about a second apart. Rates are per second; costs are µs per finished task. */
export const dashboardPoint = z.tuple([
  /* end of the interval, ms since the epoch */ count,
  /* tasks finished per second */ z.number().nonnegative(),
  /* failed attempts per second (a retried task may fail more than once) */ z.number().nonnegative(),
  /* scheduler µs per task over the last 10 s: its time ÷ max(tasks finished, tasks submitted) (null: too few tasks to say) */ z.number().nonnegative().nullable(),
  /* coordinator µs per task over the last 10 s: its CPU time (scheduler, messages, relay) less its idle baseline, ÷ max(finished, submitted) (null: too few) */ z.number().nonnegative().nullable(),
])
export type DashboardPoint = z.infer<typeof dashboardPoint>

/** A bar of the task stream: one task, or tasks of one group run back to back on one slot, merged. */
export const dashboardBar = z.tuple([
  /* id: a later bar with the same id replaces this one (it grew) */ count,
  /* stream worker index (`stream.lanes`) */ count,
  /* lane: the worker's slot row, from 0 */ count,
  /* group index (`stream.groups`) */ count,
  /* start, ms after `stream.t0` */ count,
  /* end, ms after `stream.t0` */ count,
  /* tasks merged into the bar */ count,
  /* their run time summed, µs (less than end − start when the slot idled between them) */ count,
  /* a key in the bar, for its story ('' = the one sent before for this id) */ z.string().max(LIMITS.key),
])
export type DashboardBar = z.infer<typeof dashboardBar>

export const dashboardUpdate = z.object({
  type: z.literal('stream'),
  /** replaces everything the dashboard holds; otherwise only changes */
  full: z.boolean(),
  /** coordinator clock, ms since the epoch */
  now: count,
  /** the whole grid at a glance */
  grid: z.object({
    workers: count, slots: count, running: count, clients: count, dashboards: count,
    /** tasks per scheduler state */
    tasks: z.record(z.string(), count),
    submitted: count, finished: count, erred: count,
    /** bytes of results held on workers, and spilled */
    memory: count, spilled: count,
  }),
  /** workers table: new or changed rows (the first `maxWorkers` workers by join order) */
  workers: z.array(dashboardWorkerRow),
  /** ids of rows to remove */
  workersGone: z.array(z.string()),
  /** workers not in the table (past its bound) */
  workersHidden: count,
  /** joins and leaves since the last update (full: the last few): [at, 'joined' | 'left', name, kind] */
  events: z.array(z.tuple([count, z.enum(['joined', 'left']), z.string(), z.enum(['browser', 'node'])])),
  /** progress per group: new or changed rows */
  groups: z.array(dashboardGroupRow),
  groupsGone: z.array(z.string()),
  /** time series: new points (full: the last 5 minutes) */
  series: z.array(dashboardPoint),
  /** how long tasks run, and whether that is worth distributing */
  tasks: z.object({
    /** tasks finished in the last minute */
    count,
    /** median run time of those, ms (null: none) */
    medianMs: z.number().nonnegative().nullable(),
    /** coordinator CPU µs per task over the last minute, less its idle baseline (null: too few tasks to say) */
    overheadUs: z.number().nonnegative().nullable(),
    /** scheduler alone, µs per task over the last minute */
    schedulerUs: z.number().nonnegative().nullable(),
    /** tasks shorter than this spend more than 1% of their time in overhead: 100 × overheadUs */
    worthMs: z.number().nonnegative().nullable(),
    /** the median task is shorter than `worthMs` */
    tooShort: z.boolean(),
  }),
  /** the task stream: the last `windowMs`, one row per worker slot */
  stream: z.object({
    /** bar times are ms after this (ms since the epoch) */
    t0: count,
    windowMs: count,
    /** same-group tasks closer than this on a slot share a bar (grows when the grid is busy) */
    mergeMs: count,
    /** stream workers: [index, worker id, name, lanes]; absent when unchanged (full: all) */
    lanes: z.array(z.tuple([count, z.string(), z.string(), count])).optional(),
    /** group names for bars, by index: new ones (full: all in use) */
    groups: z.array(z.tuple([count, z.string()])),
    /** new or grown bars (full: all in the window) */
    bars: z.array(dashboardBar),
    /** past the row bound, workers are left out of the stream: how many, and the tasks they ran in the window */
    hiddenWorkers: count,
    hiddenTasks: count,
  }),
})
export type DashboardUpdate = z.infer<typeof dashboardUpdate>

export const toDashboardMessage = z.discriminatedUnion('type', [
  welcomeMessage,
  z.object({ type: z.literal('error'), error: wireError }),
  /** the dashboard stream (above) */
  dashboardUpdate,
])
export type ToDashboardMessage = z.infer<typeof toDashboardMessage>

// ---------------------------------------------------------------- worker runtime ⇄ its threads

/*
 * Between a worker's runtime (core/runtime.ts, on the main side of a tab or a Node agent)
 * and each of its threads (a Web Worker, web/thread/webworker.ts, or a worker_thread,
 * server/thread.ts, both running shared/executor.ts). Tasks go on a MessagePort of their
 * own as `TaskBatch`es, and results come back on it as arrays of `ExecEvent`s; control
 * calls (init, get, put, free, cancel…) go through comlink (`ExecutorApi`). A Web Worker
 * also posts `ThreadSignal`s beside comlink's messages (comlink ignores messages without
 * its id), so the tab learns that a thread started and when it ends, even silently.
 * Both ends are tabgrid's own code, but a thread runs other people's tasks: the runtime
 * parses what a thread sends, and a thread that sends junk is stopped like a crash.
 */

/** One task handed to a thread. Every dependency is already stored in that thread. */
export const execTask = z.object({
  key,
  /** the attempt id the scheduler gave this run */
  attempt: count,
  /** function hash; its source was defined before, in this batch or an earlier one */
  fn: z.string().max(64),
  /** encoded arguments array, FutureRefs inside (resolved from the thread's own values) */
  args: bytes,
  /** keys of the FutureRefs in args: all held by this thread */
  deps: keys,
  /** send the encoded result back with `finished` */
  push: z.boolean(),
  /** compute a SHA-256 digest of the encoded result (redundant runs) */
  digest: z.boolean(),
  /** ms the run may take (the main side stops the thread past it) */
  timeout: z.number().positive().optional(),
  /** module namespace: `importModule(name)` finds `${ns}/${name}` (each client's modules are its own) */
  ns: z.string().max(LIMITS.name).optional(),
})
export type ExecTask = z.infer<typeof execTask>

/** What the main side posts on the task port: definitions first, then the tasks that use them (one channel, so in order). */
export const taskBatch = z.object({
  /** sources and modules to forget first (the worker's cache of each client's is bounded) */
  forgetFns: z.array(z.string().max(64)).max(LIMITS.keys).optional(),
  forgetModules: z.array(z.string().max(2 * LIMITS.name + 1)).max(LIMITS.keys).optional(),
  /** function sources by hash */
  fns: z.array(z.tuple([z.string().max(64), z.string().max(LIMITS.source)])).optional(),
  /** modules by full name (`ns/name`) */
  modules: z.array(z.tuple([z.string().max(2 * LIMITS.name + 1), z.string().max(LIMITS.source)])).optional(),
  tasks: z.array(execTask).max(LIMITS.keys),
})
export type TaskBatch = z.infer<typeof taskBatch>

/** What a thread reports, in batches (one array per turn of its event loop). */
export const execEvent = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('finished'), key, attempt: count,
    /** size of the result as the thread holds it */
    nbytes: count,
    /** run time */
    ms: z.number().nonnegative(),
    /** the encoded result, when the task said `push` and it is small (executor PUSH_LIMIT) */
    data: bytes.optional(),
    /** SHA-256 (hex) of the encoded result, when the task asked for a digest */
    digest: z.string().max(64).optional(),
  }),
  z.object({
    type: z.literal('erred'), key, attempt: count, error: wireError,
    /** dependencies this thread did not have */
    missing: keys.optional(),
  }),
  /** the thread's memory changed past a mark: `paused` while it should take no new tasks */
  z.object({ type: z.literal('memory'), inMemory: count, spilled: count, paused: z.boolean() }),
])
export type ExecEvent = z.infer<typeof execEvent>
export const execEvents = z.array(execEvent).max(LIMITS.messagesPerFrame)

/**
 * A Web Worker's notes to its tab, beside comlink's messages. `ready`: the executor is
 * exposed, and the thread holds the Web Lock named `lock` for as long as it lives, so the
 * tab, asking for the same lock, gets it the moment the thread is gone, however it died
 * (the browser killed it, a task closed it behind the entry's back). `closing`: a task
 * called `self.close()`.
 */
export const threadSignal = z.discriminatedUnion('tabgrid', [
  z.object({ tabgrid: z.literal('ready'), lock: z.string().max(LIMITS.name).optional() }),
  z.object({ tabgrid: z.literal('closing') }),
])
export type ThreadSignal = z.infer<typeof threadSignal>

/**
 * socket.io event maps, the same on both ends (`Server<InboundFrameEvents, FrameEvents, …>`
 * at the coordinator, `Socket<InboundFrameEvents, FrameEvents>` in clients and workers):
 * one event, carrying a frame of messages. What is sent is a msgpack-encoded array.
 */
export interface FrameEvents {
  /**
   * a msgpack-encoded array of messages, then the binary attachments its messages point
   * to (wire.ts `packFrame`)
   */
  frame: (frame: Uint8Array, ...attachments: Uint8Array[]) => void
}
/** The same event as it arrives: not trusted until `decodeFrame` and the schemas have read it. */
export interface InboundFrameEvents {
  frame: (frame: unknown, ...attachments: unknown[]) => void
}
/** What the coordinator keeps on a socket: the hello it accepted. */
export interface SocketData {
  hello: Hello
}

/** What a parse failure reports: which message and why, capped so junk can't make the reply huge. */
export function describeIssues(err: z.ZodError): string {
  return err.issues.slice(0, 3).map(i => `${i.path.join('.') || '(message)'}: ${i.message}`).join('; ').slice(0, 500)
}
