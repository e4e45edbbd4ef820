import { afterAll, describe, expect, it } from 'vitest'
import { Executor, INLINE_LIMIT, createExecutorApi, type ExecEvent, type ExecMemoryEvent, type ExecTask, type ExecutorHost, type ExecutorOptions } from './executor.js'
import { MemorySpillStore, type SpillStore } from './spill.js'
import { DiskSpillStore } from '../server/spill-disk.js'
import { FutureRef, collectRefs, decodeValue, encodeValue } from './codec.js'
import { hashString } from './hash.js'
import { sha256Hex } from './digest.js'

// ---------------------------------------------------------------------------------------
// Harness

class Host implements ExecutorHost {
  readonly events: ExecEvent[] = []
  private waiters: { pred: () => boolean; resolve: () => void }[] = []

  importSource(source: string): Promise<unknown> {
    return import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`)
  }

  post(events: ExecEvent[]): void {
    this.events.push(...events)
    this.waiters = this.waiters.filter(w => (w.pred() ? (w.resolve(), false) : true))
  }

  until(pred: () => boolean, what = 'condition', ms = 5000): Promise<void> {
    if (pred()) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)
      this.waiters.push({ pred, resolve: () => { clearTimeout(timer); resolve() } })
    })
  }

  /** the finished/erred event of key (waits for it) */
  async outcome(key: string): Promise<Extract<ExecEvent, { type: 'finished' | 'erred' }>> {
    const find = (): ExecEvent | undefined => this.events.find(e => e.type !== 'memory' && e.key === key)
    await this.until(() => find() !== undefined, `outcome of ${key}`)
    return find() as Extract<ExecEvent, { type: 'finished' | 'erred' }>
  }

  /** the decoded result of key (the task must have been run with push) */
  async value(key: string): Promise<unknown> {
    const ev = await this.outcome(key)
    if (ev.type === 'erred') throw new Error(`${key} erred: ${ev.error.message}`)
    if (!ev.data) throw new Error(`${key} was not pushed`)
    return decodeValue(ev.data)
  }

  memoryEvents(): ExecMemoryEvent[] {
    return this.events.filter((e): e is ExecMemoryEvent => e.type === 'memory')
  }
}

/** Makes an ExecTask for fn(...args); FutureRefs in args become deps. Defines fn on the executor. */
function task(ex: Executor, key: string, fn: ((...a: never[]) => unknown) | string, args: unknown[] = [], opts: Partial<ExecTask> = {}): ExecTask {
  const source = typeof fn === 'string' ? fn : fn.toString()
  const hash = hashString(source)
  ex.defineFunction(hash, source)
  return { key, attempt: 1, fn: hash, args: encodeValue(args), deps: [...collectRefs(args)], push: true, digest: false, ...opts }
}

const ref = (key: string): FutureRef => new FutureRef(key)
const tick = (ms = 0): Promise<void> => new Promise(r => setTimeout(r, ms))
/**
 * A value whose encoding is exactly n bytes: stored from its bytes (put) it counts n in
 * memory (its array and the encoding's header), and n spilled (the copy in the store).
 */
function blob(n: number, fill = 1): Float64Array {
  for (const header of [24, 32]) {
    const a = new Float64Array((n - header) / 8).fill(fill)
    if (encodeValue(a).byteLength === n) return a
  }
  throw new Error(`no Float64Array encodes to exactly ${n} bytes`)
}

function setup(options: ExecutorOptions = {}, concurrency = 1): { host: Host; ex: Executor } {
  const host = new Host()
  return { host, ex: new Executor(host, concurrency, options) }
}

/** waits until the executor has no spill work in flight, and its events are posted */
async function settled(ex: Executor, _host?: Host): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined
  await Promise.race([ex.settle(), new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('spill work did not settle')), 20_000) })])
  clearTimeout(timer)
  await tick()
}

/** waits until nothing changes any more (for a store that never answers) */
async function quiet(ex: Executor, host: Host): Promise<void> {
  let last = ''
  for (let i = 0; i < 500; i++) {
    await tick(i < 5 ? 0 : 5)
    const now = JSON.stringify([ex.memory(), ex.stats(), host.events.length])
    if (now === last) return
    last = now
  }
}

// ---------------------------------------------------------------------------------------
// Existing behaviour

describe('Executor: running tasks', () => {
  it('runs sync functions, holds results, pushes encoded results and digests', async () => {
    const { host, ex } = setup()
    const big = 'x'.repeat(INLINE_LIMIT)
    ex.run([
      task(ex, 'a', (x: number, y: number) => x + y, [2, 3]),
      task(ex, 'b', (s: string) => s.toUpperCase(), ['hi'], { push: false, digest: true }),
      task(ex, 'c', (s: string) => s + '!', [big], { push: false }),
    ])
    expect(await host.value('a')).toBe(5)
    const b = await host.outcome('b')
    expect(b.type).toBe('finished')
    if (b.type !== 'finished') return
    // a tiny result rides with its report even when no client waits for it yet
    expect(b.data).toEqual(encodeValue('HI'))
    expect(b.digest).toBe(sha256Hex(encodeValue('HI')))
    // one over INLINE_LIMIT is fetched when wanted
    const c = await host.outcome('c')
    expect(c.type === 'finished' && c.data).toBe(undefined)
    expect(ex.has('a') && ex.has('b') && ex.has('c')).toBe(true)
    expect(decodeValue(ex.get('b') as Uint8Array)).toBe('HI')
    expect(ex.stats()).toMatchObject({ held: 3, running: 0, queued: 0, spilled: 0 })
    expect(() => ex.get('nope')).toThrow(/not held here/)
  })

  it("hashes results with its host's digest where the host gives one (Node's native SHA-256)", async () => {
    const host = new Host()
    const seen: number[] = []
    ;(host as Host & { digest: (b: Uint8Array) => string }).digest = b => { seen.push(b.byteLength); return sha256Hex(b) }
    const ex = new Executor(host, 1)
    ex.run([task(ex, 'h', (s: string) => s + '!', ['hi'], { digest: true })])
    const h = await host.outcome('h')
    expect(h.type === 'finished' && h.digest).toBe(sha256Hex(encodeValue('hi!')))
    expect(seen).toEqual([encodeValue('hi!').byteLength])
  })

  it('passes held values as dependencies, nested', async () => {
    const { host, ex } = setup()
    ex.put('x', encodeValue(new Float64Array([1, 2, 3])))
    ex.run([task(ex, 's', (o: { a: Float64Array[] }) => o.a[0]!.reduce((p, q) => p + q, 0), [{ a: [ref('x')] }])])
    expect(await host.value('s')).toBe(6)
  })

  it('reports a throwing task, a missing function, and missing dependencies', async () => {
    const { host, ex } = setup()
    ex.run([
      task(ex, 'boom', () => { throw new TypeError('nope') }),
      { ...task(ex, 'nofn', () => 1), fn: 'unknown-hash' },
      task(ex, 'dep', (a: number) => a, [ref('ghost')]),
    ])
    const boom = await host.outcome('boom')
    expect(boom.type === 'erred' && boom.error.message).toMatch(/nope/)
    const nofn = await host.outcome('nofn')
    expect(nofn.type === 'erred' && nofn.error.message).toMatch(/never sent/)
    const dep = await host.outcome('dep')
    expect(dep.type === 'erred' && dep.missing).toEqual(['ghost'])
  })

  it('imports uploaded modules with importModule', async () => {
    const { host, ex } = setup()
    ex.defineModule('stats', 'export const mean = a => a.reduce((x, y) => x + y, 0) / a.length')
    ex.run([
      task(ex, 'm', 'async (a) => (await importModule("stats")).mean(a)', [[1, 2, 3, 6]]),
      task(ex, 'none', 'async () => importModule("missing")'),
    ])
    expect(await host.value('m')).toBe(3)
    const none = await host.outcome('none')
    expect(none.type === 'erred' && none.error.message).toMatch(/no module named "missing"/)
  })

  it('runs up to `concurrency` async tasks at once', async () => {
    const { host, ex } = setup({}, 2)
    const slow = 'async (i) => { await new Promise(r => setTimeout(r, 40)); return i * 10 }'
    ex.run([0, 1, 2, 3, 4].map(i => task(ex, `t${i}`, slow, [i])))
    expect(ex.stats()).toMatchObject({ running: 2, queued: 3 })
    await host.outcome('t1')
    expect(ex.stats().running).toBeLessThanOrEqual(2)
    for (let i = 0; i < 5; i++) expect(await host.value(`t${i}`)).toBe(i * 10)
    expect(ex.stats()).toMatchObject({ running: 0, queued: 0, held: 5 })
  })

  it('cancels a queued task, not a running one', async () => {
    const { host, ex } = setup({}, 1)
    ex.run([
      task(ex, 'running', 'async () => { await new Promise(r => setTimeout(r, 30)); return 1 }'),
      task(ex, 'queued', () => 2),
      task(ex, 'after', () => 3),
    ])
    expect(ex.cancel('running', 1)).toBe(false)
    expect(ex.cancel('queued', 2)).toBe(false) // wrong attempt
    expect(ex.cancel('queued', 1)).toBe(true)
    expect(await host.value('after')).toBe(3)
    expect(host.events.some(e => e.type !== 'memory' && e.key === 'queued')).toBe(false)
    expect(ex.has('queued')).toBe(false)
  })

  it('batches completions: a few posts for 100 tasks, not one each', async () => {
    const host = new Host()
    let posts = 0
    const post = host.post.bind(host)
    host.post = (evs: ExecEvent[]) => { posts++; post(evs) }
    const ex = new Executor(host, 1)
    ex.run(Array.from({ length: 100 }, (_, i) => task(ex, `k${i}`, (x: number) => x, [i])))
    await host.outcome('k99')
    // one post per turn, or one per 5 ms of a long turn (a loaded machine may take longer)
    expect(posts).toBeGreaterThanOrEqual(1)
    expect(posts).toBeLessThanOrEqual(5)
  })

  it('reports each long synchronous task when it ends, not with the queued tasks after it', async () => {
    const host = new Host()
    const posts: { at: number; keys: string[] }[] = []
    const post = host.post.bind(host)
    host.post = (evs: ExecEvent[]) => { posts.push({ at: performance.now(), keys: evs.flatMap(e => e.type === 'memory' ? [] : [e.key]) }); post(evs) }
    const ex = new Executor(host, 1)
    const spin = (ms: number): number => { const end = Date.now() + ms; while (Date.now() < end) { /* busy */ } return ms }
    ex.run(['a', 'b', 'c'].map(k => task(ex, k, spin, [30])))
    await host.outcome('c')
    // one report per task, each as its task ended (30 ms apart), not all three at the end
    expect(posts.map(p => p.keys)).toEqual([['a'], ['b'], ['c']])
    expect(posts[1]!.at - posts[0]!.at).toBeGreaterThanOrEqual(25)
    // and a short task queued before a function known to be long does not wait for it
    posts.length = 0
    ex.run([task(ex, 'tiny', (x: number) => x, [1]), task(ex, 'd', spin, [30])])
    await host.outcome('d')
    expect(posts.map(p => p.keys)).toEqual([['tiny'], ['d']])
  })

  it('free forgets values', () => {
    const { ex } = setup()
    ex.put('a', encodeValue(blob(800)))
    expect(ex.stats().nbytes).toBe(800)
    ex.free(['a', 'unknown'])
    expect(ex.has('a')).toBe(false)
    expect(ex.stats()).toMatchObject({ held: 0, nbytes: 0 })
  })
})

// ---------------------------------------------------------------------------------------
// Memory budget and spilling

const LIMIT = 10_000 // spill mark 6,000, pause mark 8,500
const V = 2_000 // bytes per test value

const tmpStores: DiskSpillStore[] = []
afterAll(async () => { for (const s of tmpStores) await s.clear() })

const kinds: [string, () => SpillStore][] = [
  ['MemorySpillStore', () => new MemorySpillStore()],
  ['DiskSpillStore', () => { const s = new DiskSpillStore(); tmpStores.push(s); return s }],
]

describe.each(kinds)('Executor spilling to a %s', (_name, makeStore) => {
  it('spills least recently used values past the mark, keeping them held', async () => {
    const store = makeStore()
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store })
    for (const k of ['v1', 'v2', 'v3']) ex.put(k, encodeValue(blob(V, +k[1]!)))
    await settled(ex, host)
    expect(await store.keys()).toEqual([]) // 6,000: at the mark, not past it
    ex.put('v4', encodeValue(blob(V, 4)))
    await settled(ex, host)
    expect(await store.keys()).toEqual(['v1'])
    expect(ex.memory()).toEqual({ inMemory: 3 * V, spilled: V, limit: LIMIT, paused: false })
    // touch v2 (get), so v3 is now the least recently used
    decodeValue(ex.get('v2') as Uint8Array)
    ex.put('v5', encodeValue(blob(V, 5)))
    await settled(ex, host)
    expect((await store.keys()).sort()).toEqual(['v1', 'v3'])
    for (const k of ['v1', 'v2', 'v3', 'v4', 'v5']) expect(ex.has(k)).toBe(true)
    expect(ex.stats()).toMatchObject({ held: 5, nbytes: 3 * V, spilled: 2 * V })
    expect(host.memoryEvents()).toEqual([]) // never near the pause mark
  })

  it('a value used as a dependency becomes most recently used', async () => {
    const store = makeStore()
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store })
    for (const k of ['v1', 'v2', 'v3']) ex.put(k, encodeValue(blob(V)))
    ex.run([task(ex, 'use1', (a: Float64Array) => a.length, [ref('v1')], { push: false })])
    await host.outcome('use1') // result is 8 bytes: 6,008 in memory → spills v2, the least recently used now
    await settled(ex, host)
    expect(await store.keys()).toEqual(['v2'])
  })

  it('never spills values a queued or running task needs', async () => {
    const store = makeStore()
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store }, 1)
    for (const k of ['v1', 'v2', 'v3']) ex.put(k, encodeValue(blob(V)))
    // v1 needed by a running task, v2 by a queued one
    ex.run([
      task(ex, 'hold1', 'async (a) => { await new Promise(r => setTimeout(r, 80)); return a.length }', [ref('v1')]),
      task(ex, 'hold2', (a: Float64Array) => a.length, [ref('v2')]),
    ])
    ex.put('v4', encodeValue(blob(V)))
    await settled(ex, host)
    expect(await store.keys()).toEqual(['v3'])
    expect(ex.memory().spilled).toBe(V)
    expect(await host.value('hold1')).toBe(blob(V).length)
    expect(await host.value('hold2')).toBe(blob(V).length)
  })

  it('loads spilled dependencies back before running the task', async () => {
    const store = makeStore()
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store })
    const n = blob(V).length
    const values = [1, 2, 3, 4].map(i => Float64Array.from({ length: n }, (_, j) => i * 1000 + j))
    for (const [i, v] of values.entries()) { ex.put(`v${i + 1}`, encodeValue(v)); await settled(ex, host) }
    expect(await store.keys()).toEqual(['v1'])
    ex.run([task(ex, 'sum', (a: Float64Array, b: Float64Array) => [a[0], a[a.length - 1], b[0]], [ref('v1'), ref('v4')])])
    expect(await host.value('sum')).toEqual([1000, 1000 + n - 1, 4000])
    await settled(ex, host)
    // v1 came back (most recently used), so v2 went out (and maybe v3, for the result's bytes); v1's copy stays in the store
    expect(await store.keys()).toEqual(expect.arrayContaining(['v1', 'v2']))
    expect(await store.keys()).not.toContain('v4')
    for (const k of ['v1', 'v2', 'v3', 'v4']) expect(ex.has(k)).toBe(true)
    expect(ex.stats().held).toBe(5)
    expect(ex.memory().inMemory).toBeLessThanOrEqual(LIMIT * 0.6)
    // a task whose dependency is in memory runs without loading anything
    ex.run([task(ex, 'first', (a: Float64Array) => a[0], [ref('v1')])])
    expect(await host.value('first')).toBe(1000)
  })

  it('several tasks waiting on the same spilled value load it once', async () => {
    const store = new MemorySpillStore()
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store }, 4)
    for (const k of ['v1', 'v2', 'v3', 'v4']) { ex.put(k, encodeValue(blob(V, 7))); await settled(ex, host) }
    expect(store.data.has('v1')).toBe(true)
    ex.run([1, 2, 3].map(i => task(ex, `r${i}`, (a: Float64Array, m: number) => a[0]! * m, [ref('v1'), i])))
    for (const i of [1, 2, 3]) expect(await host.value(`r${i}`)).toBe(7 * i)
    expect(store.log.filter(l => l === 'get v1')).toHaveLength(1)
    expect(store.log.filter(l => l === 'set v1')).toHaveLength(1)
  })

  it('a value loaded back and spilled again is not written twice', async () => {
    const store = new MemorySpillStore()
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store })
    for (const k of ['v1', 'v2', 'v3', 'v4']) { ex.put(k, encodeValue(blob(V))); await settled(ex, host) }
    ex.run([task(ex, 'u', (a: Float64Array) => a.length, [ref('v1')], { push: false })])
    await host.outcome('u')
    await settled(ex, host)
    ex.put('v5', encodeValue(blob(V)))
    ex.put('v6', encodeValue(blob(V)))
    await settled(ex, host)
    expect(store.log.filter(l => l === 'set v1')).toHaveLength(1)
    expect(ex.memory().inMemory).toBeLessThanOrEqual(LIMIT * 0.6)
  })

  it('get() of a spilled key returns the stored bytes, which decode to the value', async () => {
    const store = makeStore()
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store })
    const v1 = { name: 'first', data: Float64Array.from({ length: V / 8 }, (_, i) => i / 3) }
    ex.put('v1', encodeValue(v1))
    for (const k of ['v2', 'v3', 'v4']) { ex.put(k, encodeValue(blob(V))); await settled(ex, host) }
    expect(await store.keys()).toContain('v1')
    const got = ex.get('v1')
    expect(got).toBeInstanceOf(Promise)
    const bytes = await got
    expect(bytes).toEqual(await store.get('v1'))
    expect(decodeValue(bytes)).toEqual(v1)
    expect(ex.memory().spilled).toBeGreaterThan(0) // still spilled: get does not load it back
  })

  it('free deletes spilled values from the store', async () => {
    const store = makeStore()
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store })
    for (const k of ['v1', 'v2', 'v3', 'v4', 'v5']) { ex.put(k, encodeValue(blob(V))); await settled(ex, host) }
    expect((await store.keys()).sort()).toEqual(['v1', 'v2'])
    ex.free(['v1', 'v5'])
    await settled(ex, host)
    expect(await store.keys()).toEqual(['v2'])
    expect(ex.has('v1') || ex.has('v5')).toBe(false)
    expect(ex.memory()).toMatchObject({ inMemory: 2 * V, spilled: V })
    expect(() => ex.get('v1')).toThrow(/not held/)
  })

  it('adopt() after a restart re-announces spilled keys, and tasks can use them', async () => {
    const store = makeStore()
    const first = setup({ memoryLimit: LIMIT, spill: store })
    const v1 = Float64Array.from({ length: V / 8 }, (_, i) => i)
    first.ex.put('v1', encodeValue(v1))
    for (const k of ['v2', 'v3', 'v4', 'v5']) { first.ex.put(k, encodeValue(blob(V))); await settled(first.ex, first.host) }
    expect((await store.keys()).sort()).toEqual(['v1', 'v2'])

    // the tab reloads: a new executor on the same store
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store })
    expect(ex.has('v1')).toBe(false)
    const adopted = await ex.adopt()
    expect(adopted.map(a => a.key).sort()).toEqual(['v1', 'v2'])
    for (const a of adopted) expect(a.nbytes).toBeGreaterThanOrEqual(V) // encoded size
    expect(ex.has('v1') && ex.has('v2')).toBe(true)
    expect(ex.memory()).toMatchObject({ inMemory: 0, spilled: adopted[0]!.nbytes + adopted[1]!.nbytes })
    expect(await ex.adopt()).toEqual(adopted) // idempotent
    ex.run([task(ex, 'last', (a: Float64Array) => a[a.length - 1], [ref('v1')])])
    expect(await host.value('last')).toBe(V / 8 - 1)
    expect(decodeValue(await ex.get('v2'))).toEqual(blob(V))
    ex.free(['v1', 'v2'])
    await settled(ex, host)
    expect(await store.keys()).toEqual([])
  })

  it('pauses when spilling cannot keep up, and resumes once, when back under the spill mark', async () => {
    const store = makeStore()
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store }, 1)
    for (const k of ['v1', 'v2', 'v3', 'v4', 'v5']) ex.put(k, encodeValue(blob(V)))
    // a running task needs all five: nothing can spill; its result (8 bytes) lands on 10,008
    ex.run([task(ex, 'all', 'async (...a) => { await new Promise(r => setTimeout(r, 60)); return a.length }', ['v1', 'v2', 'v3', 'v4', 'v5'].map(ref), { push: false })])
    await settled(ex, host)
    expect(host.memoryEvents().map(e => e.paused)).toEqual([true])
    expect(ex.memory().paused).toBe(true)
    expect(await store.keys()).toEqual([])
    ex.put('v6', encodeValue(blob(32))) // more while paused: no new event
    await host.outcome('all')
    await settled(ex, host)
    // the task ended: values spill, memory goes under the mark, and the worker resumes
    expect(host.memoryEvents().map(e => e.paused)).toEqual([true, false])
    const resumed = host.memoryEvents()[1]!
    expect(resumed.inMemory).toBeLessThanOrEqual(LIMIT * 0.6)
    expect(resumed.spilled).toBeGreaterThan(0)
    expect(resumed).toMatchObject({ type: 'memory' })
    expect(ex.memory().paused).toBe(false)
  })
})

describe('Executor without a spill store', () => {
  it('never spills; pauses past pauseAt and resumes under spillAt, one event each way', async () => {
    const { host, ex } = setup({ memoryLimit: LIMIT })
    for (let i = 1; i <= 4; i++) ex.put(`v${i}`, encodeValue(blob(V)))
    await tick()
    expect(host.memoryEvents()).toEqual([]) // 8,000 ≤ 8,500
    ex.put('v5', encodeValue(blob(V)))
    ex.put('v6', encodeValue(blob(V)))
    await tick()
    expect(host.memoryEvents()).toEqual([{ type: 'memory', inMemory: 5 * V, spilled: 0, paused: true }])
    ex.free(['v1', 'v2']) // 8,000: under pauseAt, still over spillAt: stays paused
    await tick()
    expect(host.memoryEvents()).toHaveLength(1)
    ex.free(['v3']) // 6,000
    await tick()
    expect(host.memoryEvents().map(e => e.paused)).toEqual([true, false])
    expect(ex.memory()).toEqual({ inMemory: 3 * V, spilled: 0, limit: LIMIT, paused: false })
    expect(ex.stats().spilled).toBe(0)
    expect(await ex.adopt()).toEqual([])
  })

  it('task results count too; custom marks', async () => {
    const { host, ex } = setup({ memoryLimit: 1000, spillAt: 0.5, pauseAt: 0.7 })
    ex.run([task(ex, 'big', (n: number) => new Uint8Array(n), [800], { push: false })])
    await host.outcome('big')
    await tick()
    expect(host.memoryEvents().map(e => [e.paused, e.inMemory])).toEqual([[true, 800]])
    ex.free(['big'])
    await tick()
    expect(host.memoryEvents().map(e => e.paused)).toEqual([true, false])
  })

  it('with a store but no memoryLimit: never spills, but adopts and loads', async () => {
    const store = new MemorySpillStore()
    const { host, ex } = setup({ spill: store })
    for (let i = 0; i < 20; i++) ex.put(`v${i}`, encodeValue(blob(V)))
    await settled(ex, host)
    expect(store.data.size).toBe(0)
    expect(host.memoryEvents()).toEqual([])
    expect(ex.memory()).toEqual({ inMemory: 20 * V, spilled: 0, limit: 0, paused: false })
    await store.set('old', encodeValue('kept'))
    expect(await ex.adopt()).toEqual([{ key: 'old', nbytes: encodeValue('kept').byteLength }])
    ex.run([task(ex, 'o', (s: string) => s + '!', [ref('old')])])
    expect(await host.value('o')).toBe('kept!')
  })

  it('without memoryLimit: no events at all', async () => {
    const { host, ex } = setup()
    for (let i = 0; i < 10; i++) ex.put(`v${i}`, encodeValue(blob(1 << 20)))
    await tick()
    expect(host.memoryEvents()).toEqual([])
    expect(ex.memory()).toEqual({ inMemory: 10 << 20, spilled: 0, limit: 0, paused: false })
  })
})

describe('Executor spilling: edge cases', () => {
  it('a value freed while being written does not come back; one replaced is not served stale', async () => {
    // a store whose writes wait until released
    const inner = new MemorySpillStore()
    const gates: (() => void)[] = []
    const store: SpillStore = {
      set: (k, d) => new Promise<void>(r => gates.push(r)).then(() => inner.set(k, d)),
      get: k => inner.get(k), del: ks => inner.del(ks), keys: () => inner.keys(), clear: () => inner.clear(),
    }
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store })
    for (const k of ['v1', 'v2', 'v3', 'v4']) ex.put(k, encodeValue(blob(V)))
    await tick()
    expect(gates).toHaveLength(1) // v1 being written
    ex.free(['v1'])
    gates.shift()!()
    await quiet(ex, host)
    expect(inner.data.has('v1')).toBe(false)
    expect(ex.has('v1')).toBe(false)
    // replaced while written: the new value stays in memory, the old copy is deleted
    ex.put('v5', encodeValue(blob(V))) // 8,000 → v2 goes
    await tick()
    expect(gates).toHaveLength(1)
    ex.put('v2', encodeValue('new v2'))
    gates.shift()!()
    await quiet(ex, host)
    expect(inner.data.has('v2')).toBe(false)
    expect(decodeValue(ex.get('v2') as Uint8Array)).toBe('new v2')
  })

  it('past the limit itself, queued tasks wait for spill writes to end', async () => {
    const inner = new MemorySpillStore()
    const gates: (() => void)[] = []
    const store: SpillStore = {
      set: (k, d) => new Promise<void>(r => gates.push(r)).then(() => inner.set(k, d)),
      get: k => inner.get(k), del: ks => inner.del(ks), keys: () => inner.keys(), clear: () => inner.clear(),
    }
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store }, 1)
    let peak = 0
    const post = host.post.bind(host)
    host.post = evs => { peak = Math.max(peak, ex.memory().inMemory); post(evs) }
    ex.run(Array.from({ length: 10 }, (_, i) => task(ex, `r${i}`, (n: number) => new Uint8Array(n), [V], { push: false })))
    await quiet(ex, host)
    const finished = (): number => host.events.filter(e => e.type === 'finished').length
    expect(finished()).toBeLessThan(10) // waiting on the store
    expect(ex.memory().inMemory).toBeLessThanOrEqual(LIMIT + V)
    expect(ex.stats().queued).toBe(10 - finished())
    expect(host.memoryEvents().map(e => e.paused)).toEqual([true])
    while (finished() < 10) {
      expect(gates.length).toBeGreaterThan(0)
      gates.shift()!()
      await quiet(ex, host)
    }
    while (gates.length) { gates.shift()!(); await quiet(ex, host) }
    expect(peak).toBeLessThanOrEqual(LIMIT + V)
    expect(ex.memory().inMemory).toBeLessThanOrEqual(LIMIT * 0.6)
    expect(host.memoryEvents().map(e => e.paused)).toEqual([true, false])
  })

  it('a spilled value lost from the store makes its task report it missing', async () => {
    const store = new MemorySpillStore()
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store })
    for (const k of ['v1', 'v2', 'v3', 'v4']) { ex.put(k, encodeValue(blob(V))); await settled(ex, host) }
    store.data.delete('v1') // evicted behind our back
    ex.run([task(ex, 't', (a: Float64Array) => a.length, [ref('v1')])])
    const ev = await host.outcome('t')
    expect(ev.type === 'erred' && ev.missing).toEqual(['v1'])
    expect(ex.has('v1')).toBe(false)
  })

  it('a value that cannot be encoded stays in memory', async () => {
    const store = new MemorySpillStore()
    const { host, ex } = setup({ memoryLimit: LIMIT, spill: store })
    ex.run([task(ex, 'odd', '() => { class Box { constructor() { this.a = new Uint8Array(5000) } }; return new Box() }', [], { push: false })])
    await host.outcome('odd')
    ex.put('v2', encodeValue(blob(V)))
    await settled(ex, host)
    expect(ex.memory().inMemory).toBeGreaterThan(5000)
    expect(store.data.has('v2')).toBe(true) // the next one went instead
  })

  it('rejects bad options', () => {
    expect(() => setup({ memoryLimit: -1 })).toThrow(RangeError)
    expect(() => setup({ memoryLimit: 100, spillAt: 0 })).toThrow(RangeError)
  })
})

describe('Executor spilling: random operations against a slow store', () => {
  /** a MemorySpillStore answering after random delays */
  class SlowStore extends MemorySpillStore {
    constructor(private readonly rand: () => number) { super() }
    private later<T>(f: () => Promise<T>): Promise<T> { return new Promise(r => setTimeout(r, Math.floor(this.rand() * 4))).then(f) }
    override set(k: string, d: Uint8Array): Promise<void> { const copy = d.slice(); return this.later(() => super.set(k, copy)) }
    override get(k: string): Promise<Uint8Array | undefined> { return this.later(() => super.get(k)) }
    override del(ks: string[]): Promise<void> { return this.later(() => super.del(ks)) }
  }

  for (const seed of [1, 2, 3, 4]) {
    it(`seed ${seed}: values stay right, accounting adds up, the store holds nothing unknown`, async () => {
      let x = seed * 2654435761 >>> 0
      const rand = (): number => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32 }
      const store = new SlowStore(rand)
      const { host, ex } = setup({ memoryLimit: 20_000, spill: store }, 3)
      const expected = new Map<string, number>() // key → first element; every value is a Float64Array(n)
      const sizes = new Map<string, number>()
      const fn = 'async (n, wait, ...xs) => { if (wait) await new Promise(r => setTimeout(r, wait)); const o = new Float64Array(n); o[0] = xs.reduce((s, a) => s + a[0], 1); return o }'
      let id = 0
      for (let step = 0; step < 300; step++) {
        const r = rand()
        const keys = [...expected.keys()]
        if (r < 0.25 || keys.length < 3) {
          const k = `p${id++}`, n = 8 * (1 + Math.floor(rand() * 300)), v = Math.floor(rand() * 1000)
          const arr = new Float64Array(n / 8); arr[0] = v
          ex.put(k, encodeValue(arr))
          expected.set(k, v); sizes.set(k, n)
        } else if (r < 0.75) {
          const deps = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => keys[Math.floor(rand() * keys.length)]!)
          const k = `t${id++}`, n = 8 * (1 + Math.floor(rand() * 300))
          ex.run([task(ex, k, fn, [n / 8, rand() < 0.3 ? 1 : 0, ...deps.map(ref)], { push: false })])
          const v = deps.reduce((s, d) => s + expected.get(d)!, 1)
          await host.outcome(k).then(ev => { if (ev.type !== 'finished') throw new Error(`${k}: ${JSON.stringify(ev)}`) })
          expected.set(k, v); sizes.set(k, n)
        } else if (r < 0.9) {
          const k = keys[Math.floor(rand() * keys.length)]!
          ex.free([k]); expected.delete(k); sizes.delete(k)
        } else {
          const k = keys[Math.floor(rand() * keys.length)]!
          const got = decodeValue(await ex.get(k)) as Float64Array
          expect(got[0]).toBe(expected.get(k))
        }
        if (rand() < 0.3) await tick(Math.floor(rand() * 3))
      }
      await settled(ex)
      expect(ex.stats().held).toBe(expected.size)
      const total = [...sizes.values()].reduce((a, b) => a + b, 0)
      const m = ex.memory()
      // every counter agrees with the entries; every value is either in memory or spilled
      const audit = ex.values.audit()
      expect(audit).toMatchObject({ inMemory: m.inMemory, spilled: m.spilled })
      const inMemory = [...expected.keys()].filter(k => ex.values.inMemory(k))
      expect(audit.values).toBe(inMemory.reduce((a, k) => a + sizes.get(k)!, 0))
      // a spilled value counts its encoding: the array, the header
      expect(m.spilled).toBeGreaterThanOrEqual(total - audit.values)
      expect(m.spilled).toBeLessThanOrEqual(total - audit.values + 32 * (expected.size - inMemory.length))
      expect(m.inMemory).toBeLessThanOrEqual(20_000 * 0.6)
      expect(m.spilled).toBeGreaterThan(0)
      const stored = new Set(await store.keys())
      for (const k of stored) expect(expected.has(k)).toBe(true) // nothing freed is left behind
      // spilled values are in the store, and every value reads back right (through get and through a task)
      for (const [k, v] of expected) expect((decodeValue(await ex.get(k)) as Float64Array)[0]).toBe(v)
      const all = [...expected.keys()]
      ex.run([task(ex, 'sum-all', '(...xs) => xs.reduce((s, a) => s + a[0], 0)', all.map(ref))])
      expect(await host.value('sum-all')).toBe([...expected.values()].reduce((a, b) => a + b, 0))
      expect(host.memoryEvents().length % 2).toBe(ex.memory().paused ? 1 : 0)
      for (let i = 1; i < host.memoryEvents().length; i++) expect(host.memoryEvents()[i]!.paused).toBe(!host.memoryEvents()[i - 1]!.paused)
    })
  }
})

describe('createExecutorApi', () => {
  const importSource = (s: string): Promise<unknown> => import(`data:text/javascript;base64,${Buffer.from(s).toString('base64')}`)
  const transfer = <T>(v: T): T => v

  it('init keeps its old two-argument form', async () => {
    const api = createExecutorApi(importSource, transfer)
    const events: ExecEvent[] = []
    expect(api.init(evs => events.push(...evs), 2)).toBe('ready')
    api.put('x', encodeValue(41))
    api.defineFunction('f', 'x => x + 1')
    api.run([{ key: 'y', attempt: 1, fn: 'f', args: encodeValue([new FutureRef('x')]), deps: ['x'], push: true, digest: false }])
    await tick()
    expect(events).toMatchObject([{ type: 'finished', key: 'y' }])
    expect(api.memory()).toMatchObject({ limit: 0, paused: false })
  })

  it('tasks come on the task port as TaskBatches (protocol.ts); a malformed batch fails each task it names, the rest run', async () => {
    const api = createExecutorApi(importSource, transfer)
    api.init(() => {}, 1)
    const { port1, port2 } = new MessageChannel()
    const events: ExecEvent[] = []
    port1.addEventListener('message', e => events.push(...(e.data as ExecEvent[])))
    port1.start()
    api.connect(port2 as unknown as Parameters<typeof api.connect>[0])
    const hash = 'h1'
    port1.postMessage({ fns: [[hash, '(a, b) => a * b']], tasks: [{ key: 'ok', attempt: 1, fn: hash, args: encodeValue([6, 7]), deps: [], push: true, digest: false }] })
    // attempt as text and args not binary: nothing in this batch runs, and each task it names hears why
    port1.postMessage({ tasks: [{ key: 'bad', attempt: 2, fn: hash, args: [1, 2], deps: [], push: true, digest: false }, { key: 'worse', attempt: 'three' }] })
    port1.postMessage({ tasks: [{ key: 'ok2', attempt: 4, fn: hash, args: encodeValue([2, 3]), deps: [], push: true, digest: false }] })
    for (let i = 0; i < 100 && events.length < 3; i++) await tick()
    port1.close()
    const byKey = new Map(events.map(e => ['key' in e ? e.key : '', e]))
    expect(decodeValue((byKey.get('ok') as Extract<ExecEvent, { type: 'finished' }>).data!)).toBe(42)
    expect(byKey.get('bad')).toMatchObject({ type: 'erred', attempt: 2, error: { code: 'bad-message', message: expect.stringMatching(/malformed task batch: tasks\.0\.args: expected binary data/) as string } })
    expect(byKey.has('worse')).toBe(false)
    expect(decodeValue((byKey.get('ok2') as Extract<ExecEvent, { type: 'finished' }>).data!)).toBe(6)
  })

  it('getMany answers many keys in one call, with a message for each missing one', async () => {
    const api = createExecutorApi(importSource, transfer)
    api.init(() => {}, 1)
    api.put('a', encodeValue('first'))
    api.put('b', encodeValue([2]))
    const out = await api.getMany(['a', 'nope', 'b'])
    expect(decodeValue(out[0] as Uint8Array)).toBe('first')
    expect(typeof out[1]).toBe('string')
    expect(out[1]).toMatch(/nope/)
    expect(decodeValue(out[2] as Uint8Array)).toEqual([2])
  })

  it('turns a spill name into a store with the host factory', async () => {
    const made: (string | undefined)[] = []
    const stores: MemorySpillStore[] = []
    const api = createExecutorApi(importSource, transfer, name => { made.push(name); const s = new MemorySpillStore(); stores.push(s); return s })
    api.init(() => {}, 1, { memoryLimit: LIMIT, spill: 'tab-1-thread-0' })
    api.init(() => {}, 1, { memoryLimit: LIMIT, spill: true })
    expect(made).toEqual(['tab-1-thread-0', undefined])
    for (const k of ['v1', 'v2', 'v3', 'v4']) { api.put(k, encodeValue(blob(V))); await tick(5) }
    expect(stores[1]!.data.has('v1')).toBe(true)
    const b = await api.get('v1')
    expect(decodeValue(b)).toEqual(blob(V))
    expect(api.stats().spilled).toBe(V)
    expect(await api.adopt()).toContainEqual({ key: 'v1', nbytes: V })
    const noFactory = createExecutorApi(importSource, transfer)
    expect(() => noFactory.init(() => {}, 1, { spill: 'x' })).toThrow(/makeSpillStore/)
  })
})

// ---------------------------------------------------------------------------------------
// Hot path micro-benchmark (printed, not asserted)

describe('Executor hot path', () => {
  it('10,000 tiny sync tasks, with and without a memory budget', async () => {
    const N = 10_000
    const BATCH = 64
    const fn = '(i) => i + 1'
    const args = Array.from({ length: N }, (_, i) => encodeValue([i]))
    const round = async (options: ExecutorOptions, withDep = false): Promise<number> => {
      const host = new Host()
      let done = 0
      let resolve!: () => void
      const all = new Promise<void>(r => { resolve = r })
      host.post = (evs: ExecEvent[]) => { done += evs.length; if (done >= N) resolve() }
      const ex = new Executor(host, 1, options)
      const hash = hashString(fn)
      ex.defineFunction(hash, fn)
      if (withDep) ex.put('d', encodeValue(1))
      const tasks: ExecTask[] = args.map((a, i) => ({ key: `t${i}`, attempt: 1, fn: hash, args: a, deps: withDep ? ['d'] : [], push: false, digest: false }))
      const t0 = performance.now()
      for (let i = 0; i < N; i += BATCH) ex.run(tasks.slice(i, i + BATCH))
      await all
      return performance.now() - t0
    }
    const configs: [string, () => ExecutorOptions, boolean][] = [
      ['no budget', () => ({}), false],
      ['memoryLimit 1 GB, no store', () => ({ memoryLimit: 1 << 30 }), false],
      ['memoryLimit 1 GB + MemorySpillStore', () => ({ memoryLimit: 1 << 30, spill: new MemorySpillStore() }), false],
      ['no budget, 1 dependency each', () => ({}), true],
      ['memoryLimit 1 GB + MemorySpillStore, 1 dependency each', () => ({ memoryLimit: 1 << 30, spill: new MemorySpillStore() }), true],
    ]
    for (const [, opts, dep] of configs) await round(opts(), dep) // warm up
    const REPS = 9
    const best = new Map<string, number>()
    for (let rep = 0; rep < REPS; rep++) {
      for (const [name, opts, dep] of configs) {
        const ms = await round(opts(), dep)
        best.set(name, Math.min(best.get(name) ?? Infinity, ms))
      }
    }
    for (const [name, ms] of best) console.log(`executor hot path, ${name}: ${N} tiny tasks in ${ms.toFixed(1)} ms (${((ms * 1000) / N).toFixed(2)} µs/task, best of ${REPS})`)
    expect(best.size).toBe(configs.length)
  })
})
