import { describe, expect, it } from 'vitest'
import { fastClientMessage, fastExecEvents, fastTaskBatch, fastWorkerMessage } from './fast-parse.js'
import { LIMITS, clientMessage, execEvents, taskBatch, workerMessage } from './protocol.js'

// values each field is swapped for, one field at a time: types, bounds on both sides, oddities
const ODD: unknown[] = [
  undefined, null, true, false, 0, -0, 1, -1, 1.5, 16, 17, 64, 65, 100, 101, 1024, 2 ** 31 - 1, 2 ** 31, Number.MAX_SAFE_INTEGER, 2 ** 53, NaN, Infinity, -Infinity,
  '', 'x', 'a'.repeat(64), 'a'.repeat(65), 'k'.repeat(LIMITS.name), 'k'.repeat(LIMITS.name + 1), 'k'.repeat(LIMITS.key), 'k'.repeat(LIMITS.key + 1),
  [], ['a'], [''], ['a', 2], ['k'.repeat(LIMITS.key + 1)], {}, { type: 'finished' }, new Uint8Array(0), new Uint8Array(3), Buffer.from('ab'), new ArrayBuffer(2), [new Uint8Array(1)],
]

const task = { key: 'inc-a1', fn: 'f'.repeat(16), args: new Uint8Array([1, 2]), deps: ['inc-a0'], group: 'inc', priority: -2.5, retries: 3, redundancy: 2, workers: ['alice'], timeout: 1000, spotCheck: false }
const bases = {
  worker: [
    { type: 'finished', key: 'inc-a1', attempt: 2, nbytes: 3, ms: 0.25, digest: 'd'.repeat(64), data: new Uint8Array([7]) },
    { type: 'finished', key: 'inc-a1', attempt: 0, nbytes: 0, ms: 0 },
    { type: 'heartbeat', memory: 10, spilled: 0 },
    { type: 'heartbeat' },
    { type: 'released', keys: ['a', 'b'] },
  ],
  client: [
    { type: 'submit', tasks: [task, { key: 'inc-a2', fn: 'f', args: Buffer.from([1]), deps: [], group: 'g' }] },
    { type: 'submit', tasks: [] },
    { type: 'submit', tasks: [task], more: true },
    { type: 'submit', tasks: [], more: false },
    { type: 'gather', keys: ['a', 'b'] },
    { type: 'release', keys: [] },
  ],
}

const execTask = { key: 'inc-a1', attempt: 4, fn: 'f'.repeat(64), args: new Uint8Array([1]), deps: ['inc-a0'], push: true, digest: false, timeout: 1.5, ns: 'c-1' }
// the thread side: what a runtime posts to a thread, and a thread's reports (arrays and objects alike mutated one field at a time)
const threadBases = {
  batch: [
    { tasks: [execTask, { key: 'b', attempt: 0, fn: '', args: new Uint8Array(0), deps: [], push: false, digest: true }] },
    { fns: [['f'.repeat(64), 'x => x']], tasks: [execTask] },
    { tasks: [] },
  ],
  events: [
    [{ type: 'finished', key: 'k', attempt: 1, nbytes: 2, ms: 0, data: new Uint8Array(2), digest: 'ab' }, { type: 'finished', key: 'k2', attempt: 2, nbytes: 0, ms: 3.5 }],
  ],
}

/** Every message one field away from `m` (swapped for each odd value, or left out), and one field deeper in the first task of a submit. */
function* mutations(m: Record<string, unknown>): Generator<Record<string, unknown>> {
  for (const f of [...Object.keys(m), 'extra']) {
    for (const v of ODD) yield { ...m, [f]: v }
    const { [f]: _, ...rest } = m
    yield rest
  }
  if (Array.isArray(m.fns) && m.fns.length > 0) {
    for (const v of ODD) yield { ...m, fns: [v] }
    for (const v of ODD) yield { ...m, fns: [[v, 'src']] }
    for (const v of ODD) yield { ...m, fns: [['h', v]] }
    yield { ...m, fns: [['h', 'src', 'extra']] }
    for (const n of [LIMITS.source, LIMITS.source + 1]) yield { ...m, fns: [['h', 's'.repeat(n)]] }
  }
  if (Array.isArray(m.tasks) && m.tasks.length > 0) {
    for (const t of mutations(m.tasks[0] as Record<string, unknown>)) yield { ...m, tasks: [t, ...m.tasks.slice(1)] }
  }
  if (Array.isArray(m.keys)) yield { ...m, keys: Array.from({ length: LIMITS.keys + 1 }, () => 'k') }
}

function agree(fast: (raw: unknown) => unknown, schema: { safeParse: (v: unknown) => { success: boolean; data?: unknown } }, m: unknown): 'fast' | 'zod' {
  const quick = fast(m)
  const z = schema.safeParse(m)
  if (quick === undefined) return 'zod'
  // what the hand check accepts, zod accepts, with the same result (the same fields: zod drops unknown ones)
  expect(z.success, JSON.stringify(m, (_k, v) => (v instanceof Uint8Array ? `bytes(${v.length})` : v))?.slice(0, 300)).toBe(true)
  expect(quick).toEqual(z.data)
  expect(Object.keys(quick as object).every(k => k in (z.data as object))).toBe(true)
  return 'fast'
}

describe('hand-written checks of the per-task messages', () => {
  it('take every valid message zod takes, giving what zod gives', () => {
    for (const m of bases.worker) expect(agree(fastWorkerMessage, workerMessage, m)).toBe('fast')
    for (const m of bases.client) expect(agree(fastClientMessage, clientMessage, m)).toBe('fast')
  })

  it('never take what zod refuses, nor give other than zod, for any one field swapped or left out', () => {
    let fast = 0
    let total = 0
    for (const [fn, schema, list] of [[fastWorkerMessage, workerMessage, bases.worker], [fastClientMessage, clientMessage, bases.client]] as const) {
      for (const base of list) {
        for (const m of mutations(base)) {
          total++
          if (agree(fn, schema, m) === 'fast') fast++
        }
      }
    }
    // the shortcut is taken for the valid variants, not just never
    expect(total).toBeGreaterThan(1500)
    expect(fast).toBeGreaterThan(100)
    expect(fast).toBeLessThan(total)
  })

  it('on the thread side too: a batch of tasks, and a batch of reports, one field swapped or left out', () => {
    let fast = 0
    let total = 0
    for (const base of threadBases.batch) {
      expect(agree(fastTaskBatch, taskBatch, base)).toBe('fast')
      for (const m of mutations(base)) { total++; if (agree(fastTaskBatch, taskBatch, m) === 'fast') fast++ }
    }
    for (const base of threadBases.events) {
      expect(agree(fastExecEvents, execEvents, base)).toBe('fast')
      for (const [i, e] of base.entries()) {
        for (const m of mutations(e)) {
          const list = base.map((x, j) => (j === i ? m : x))
          total++
          if (agree(fastExecEvents, execEvents, list) === 'fast') fast++
        }
      }
    }
    expect(total).toBeGreaterThan(1000)
    expect(fast).toBeGreaterThan(50)
    expect(fast).toBeLessThan(total)
    // what comes rarely goes to zod: forgetting, modules, other reports
    expect(fastTaskBatch({ tasks: [], forgetFns: [] })).toBeUndefined()
    expect(fastTaskBatch({ tasks: [], modules: [] })).toBeUndefined()
    expect(fastExecEvents([{ type: 'memory', inMemory: 1, spilled: 0, paused: false }])).toBeUndefined()
    expect(fastExecEvents({ length: 0 })).toBeUndefined()
  })

  it('leave other messages, and non-objects, to zod', () => {
    for (const raw of [null, 3, 'finished', [], { type: 'retire' }, { type: 'steal-response', key: 'a', attempt: 1, ok: true }, { type: 'stored', key: 'a', nbytes: 1 }]) expect(fastWorkerMessage(raw)).toBeUndefined()
    for (const raw of [null, { type: 'scatter', key: 'a', data: new Uint8Array(1) }, { type: 'cancel', keys: [] }, { type: 'request', id: 1, op: { op: 'workers' } }]) expect(fastClientMessage(raw)).toBeUndefined()
  })
})
