/**
 * Checks for the messages that come once per task (a worker's `finished`, a client's
 * `submit`) and the lists that come with every batch (`gather`, `release`, `heartbeat`),
 * written out by hand beside their zod schemas in protocol.ts.
 *
 * Why: zod took 11% of the coordinator's CPU in `node bench/sim.js --workers 10` and made a
 * third of the garbage it collects per task (~1.9 kB of a 5.9 kB allocation profile): a
 * `finished` report checked by `workerMessage.safeParse` costs ~1.1 µs, the check below
 * ~0.07 µs (`shared/fast-parse.test.ts` shows they agree).
 *
 * A check here only ever says "this is valid, and here is what zod would have returned" or
 * "not sure": anything unusual (an unknown field is fine, zod drops it too; a wrong type,
 * a bound crossed, a message of another type) falls through to the zod schema, which gives
 * the answer and the error message. So the schemas stay the one definition of the protocol;
 * these are a shortcut that must agree with them, and the test compares the two on valid
 * messages and on every mutation of one field.
 */
import type { z } from 'zod'
import { LIMITS } from './protocol.js'

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
const isKey = (v: unknown): v is string => typeof v === 'string' && v.length >= 1 && v.length <= LIMITS.key
const isKeys = (v: unknown): v is string[] => {
  if (!Array.isArray(v) || v.length > LIMITS.keys) return false
  for (let i = 0; i < v.length; i++) if (!isKey(v[i])) return false
  return true
}

type Obj = Record<string, unknown>

/**
 * `schema.safeParse(raw)`, the hand check first: what `fast` is sure of, as the schema
 * would give it; anything else, the schema's answer (and its error).
 *
 * @example
 * const parsed = checkFirst(fastWorkerMessage, workerMessage, raw)
 */
export function checkFirst<T>(fast: (raw: unknown) => unknown, schema: z.ZodType<T>, raw: unknown): z.ZodSafeParseResult<T> {
  const quick = fast(raw)
  return quick !== undefined ? { success: true, data: quick as T } : schema.safeParse(raw)
}

/** Every item of a list (at most `max`) through `check`, in a new list; undefined if one is not sure. */
function listOf(raw: unknown, max: number, check: (v: unknown) => Obj | undefined): Obj[] | undefined {
  if (!Array.isArray(raw) || raw.length > max) return undefined
  const out: Obj[] = new Array(raw.length)
  for (let i = 0; i < raw.length; i++) {
    const item = check(raw[i])
    if (item === undefined) return undefined
    out[i] = item
  }
  return out
}

/** A `finished` report, a worker's to the coordinator or a thread's to its runtime (the same fields). */
function finished(m: Obj): Obj | undefined {
  const { key, attempt, nbytes, ms, digest, data } = m
  if (!isKey(key) || !isCount(attempt) || !isCount(nbytes) || typeof ms !== 'number' || !(ms >= 0) || ms === Infinity) return undefined
  if (digest !== undefined && (typeof digest !== 'string' || digest.length > 64)) return undefined
  if (data !== undefined && !(data instanceof Uint8Array)) return undefined
  const out: Obj = { type: 'finished', key, attempt, nbytes, ms }
  if (digest !== undefined) out.digest = digest
  if (data !== undefined) out.data = data
  return out
}

/** A worker's message as `workerMessage.parse` would give it, or undefined: ask zod. */
export function fastWorkerMessage(raw: unknown): Obj | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined
  const m = raw as Obj
  switch (m.type) {
    case 'finished':
      return finished(m)
    case 'heartbeat': {
      const { memory, spilled } = m
      if ((memory !== undefined && !isCount(memory)) || (spilled !== undefined && !isCount(spilled))) return undefined
      const out: Obj = { type: 'heartbeat' }
      if (memory !== undefined) out.memory = memory
      if (spilled !== undefined) out.spilled = spilled
      return out
    }
    case 'released':
      return isKeys(m.keys) ? { type: 'released', keys: m.keys } : undefined
    default:
      return undefined
  }
}

/** One task of a `submit` as `taskSubmit.parse` would give it, or undefined. */
function fastTask(raw: unknown): Obj | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined
  const { key, fn, args, deps, group, priority, retries, redundancy, workers, timeout, spotCheck } = raw as Obj
  if (!isKey(key) || typeof fn !== 'string' || fn.length < 1 || fn.length > 64 || !(args instanceof Uint8Array) || !isKeys(deps)) return undefined
  if (typeof group !== 'string' || group.length < 1 || group.length > LIMITS.name) return undefined
  const out: Obj = { key, fn, args, deps, group }
  if (priority !== undefined) { if (typeof priority !== 'number' || !Number.isFinite(priority)) return undefined; out.priority = priority }
  if (retries !== undefined) { if (!Number.isSafeInteger(retries) || (retries as number) < 0 || (retries as number) > 100) return undefined; out.retries = retries }
  if (redundancy !== undefined) { if (!Number.isSafeInteger(redundancy) || (redundancy as number) < 1 || (redundancy as number) > 16) return undefined; out.redundancy = redundancy }
  if (workers !== undefined) {
    if (!Array.isArray(workers) || workers.length > 1024) return undefined
    for (const w of workers) if (typeof w !== 'string' || w.length > LIMITS.name) return undefined
    out.workers = workers
  }
  if (timeout !== undefined) { if (!Number.isSafeInteger(timeout) || (timeout as number) <= 0 || (timeout as number) > 2 ** 31 - 1) return undefined; out.timeout = timeout }
  if (spotCheck !== undefined) { if (typeof spotCheck !== 'boolean') return undefined; out.spotCheck = spotCheck }
  return out
}

/** A client's message as `clientMessage.parse` would give it, or undefined: ask zod. */
export function fastClientMessage(raw: unknown): Obj | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined
  const m = raw as Obj
  switch (m.type) {
    case 'submit': {
      const tasks = listOf(m.tasks, LIMITS.keys, fastTask)
      if (tasks === undefined) return undefined
      if (m.more === undefined) return { type: 'submit', tasks }
      return typeof m.more === 'boolean' ? { type: 'submit', tasks, more: m.more } : undefined
    }
    case 'gather':
    case 'release':
      return isKeys(m.keys) ? { type: m.type, keys: m.keys } : undefined
    default:
      return undefined
  }
}

/** A thread's batch of reports as `execEvents.parse` would give it, or undefined: ask zod. */
export function fastExecEvents(raw: unknown): Obj[] | undefined {
  return listOf(raw, LIMITS.messagesPerFrame, e => (typeof e === 'object' && e !== null && (e as Obj).type === 'finished' ? finished(e as Obj) : undefined))
}

/** One task for a thread as `execTask.parse` would give it, or undefined. */
function fastExecTask(raw: unknown): Obj | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined
  const { key, attempt, fn, args, deps, push, digest, timeout, ns } = raw as Obj
  if (!isKey(key) || !isCount(attempt) || typeof fn !== 'string' || fn.length > 64 || !(args instanceof Uint8Array) || !isKeys(deps)) return undefined
  if (typeof push !== 'boolean' || typeof digest !== 'boolean') return undefined
  const out: Obj = { key, attempt, fn, args, deps, push, digest }
  if (timeout !== undefined) { if (typeof timeout !== 'number' || !(timeout > 0) || timeout === Infinity) return undefined; out.timeout = timeout }
  if (ns !== undefined) { if (typeof ns !== 'string' || ns.length > LIMITS.name) return undefined; out.ns = ns }
  return out
}

/** A batch of tasks for a thread (tasks only, or with function sources) as `taskBatch.parse` would give it, or undefined: ask zod. */
export function fastTaskBatch(raw: unknown): Obj | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined
  const { forgetFns, forgetModules, fns, modules, tasks } = raw as Obj
  // what comes with a task's first run (forgetting, modules) is rare: zod's
  if (forgetFns !== undefined || forgetModules !== undefined || modules !== undefined) return undefined
  const ts = listOf(tasks, LIMITS.keys, fastExecTask)
  if (ts === undefined) return undefined
  const out: Obj = {}
  if (fns !== undefined) {
    if (!Array.isArray(fns)) return undefined
    for (const f of fns) {
      if (!Array.isArray(f) || f.length !== 2 || typeof f[0] !== 'string' || f[0].length > 64 || typeof f[1] !== 'string' || f[1].length > LIMITS.source) return undefined
    }
    out.fns = fns
  }
  out.tasks = ts
  return out
}
