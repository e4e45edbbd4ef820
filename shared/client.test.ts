import { afterEach, describe, expect, it, vi } from 'vitest'
import { Client, setLocalClusterFactory } from './client.js'
import { Future, fireAndForget } from './future.js'
import { memoryLinkPair, type Link } from './link.js'
import type { ClientMessage, Hello, ToClientMessage, ToWorkerMessage, WorkerMessage } from './protocol.js'
import { LIMITS, PROTOCOL_VERSION } from './protocol.js'
import { Coordinator, type CoordinatorOptions } from '../core/coordinator.js'
import { FutureRef, decodeValue, encodeValue } from './codec.js'
import { packFrame, splitParts } from './wire.js'
import { sha256Hex } from './digest.js'
import { hashString } from './hash.js'
import { CancelledError, LostDataError, SerializationError, TabgridError, TaskError, TimeoutError, TooLargeError, toWireError } from './errors.js'

type Msg<T extends ClientMessage['type']> = Extract<ClientMessage, { type: T }>

/**
 * A client over a memory link, with the test playing the coordinator. It answers what
 * any coordinator would without being asked: a scattered value is stored (unless
 * `storeScatters: false`), and close() is acknowledged.
 */
function harness(opts: { storeScatters?: boolean } = {}) {
  const [clientSide, coordinator] = memoryLinkPair<ClientMessage, ToClientMessage>({ role: 'client' }, { role: 'client' })
  const frames: ClientMessage[][] = []
  coordinator.onMessages = msgs => {
    frames.push(msgs)
    for (const m of msgs) {
      if (m.type === 'request' && m.op.op === 'close') coordinator.send({ type: 'reply', id: m.id, ok: true, value: true })
      if (m.type === 'scatter' && opts.storeScatters !== false && (m.parts === undefined || m.part === m.parts - 1)) coordinator.send({ type: 'key-state', key: m.key, state: 'memory' })
    }
  }
  const client = Client.fromLink(clientSide)
  const all = (): ClientMessage[] => frames.flat()
  const of = <T extends ClientMessage['type']>(type: T): Msg<T>[] => all().filter((m): m is Msg<T> => m.type === type)
  const send = (...msgs: ToClientMessage[]): void => { for (const m of msgs) coordinator.send(m) }
  return { client, clientSide, coordinator, frames, all, of, send, clear: () => { frames.length = 0 } }
}

/** lets queued microtasks and the memory link deliver */
const tick = (): Promise<void> => new Promise(resolve => setTimeout(resolve, 0))

const closers: Client[] = []
afterEach(async () => { for (const c of closers.splice(0)) await c.close() })
function track<T extends { client: Client }>(h: T): T { closers.push(h.client); return h }

describe('submit', () => {
  it('batches 10,000 submits in one turn into one submit message, with the function sent once', async () => {
    const h = track(harness())
    const inc = (x: number): number => x + 1
    const fs: Future<number>[] = []
    for (let i = 0; i < 10_000; i++) fs.push(h.client.submit(inc, i))
    expect(h.frames).toHaveLength(0) // nothing leaves before the turn ends
    await tick()
    expect(h.frames).toHaveLength(1)
    const [fn, submit, ...rest] = h.frames[0]!
    expect(rest).toHaveLength(0)
    expect(fn).toMatchObject({ type: 'function' })
    expect(submit!.type).toBe('submit')
    const tasks = (submit as Msg<'submit'>).tasks
    expect(tasks).toHaveLength(10_000)
    expect(new Set(tasks.map(t => t.key)).size).toBe(10_000)
    expect(tasks[0]!.key).toMatch(/^inc-[0-9a-f]{16}$/)
    expect(tasks[0]!.fn).toBe((fn as Msg<'function'>).hash)
    expect(tasks[0]!.group).toBe('inc')
    expect(decodeValue(tasks[7]!.args)).toEqual([7])
    expect(fs[7]!.key).toBe(tasks[7]!.key)
    // a later turn does not send the function again
    h.client.submit(inc, -1)
    await tick()
    expect(h.of('function')).toHaveLength(1)
    expect(h.of('submit')).toHaveLength(2)
  })

  it("says `more` on each submit of a turn's tasks but the last, when they are cut into frames", async () => {
    const h = track(harness())
    const big = 'x'.repeat(20_000)
    h.client.with({ pure: false }).map((s: string) => s.length, Array.from({ length: 300 }, () => big))
    h.client.submit((x: number) => x, 1)
    await tick()
    const submits = h.of('submit')
    expect(submits.length).toBeGreaterThanOrEqual(2)
    expect(submits.reduce((n, m) => n + m.tasks.length, 0)).toBe(301)
    expect(submits.map(m => m.more)).toEqual([...submits.slice(1).map(() => true), undefined])
    // a turn whose tasks fit one frame says nothing of more
    h.clear()
    h.client.submit((x: number) => x, 2)
    await tick()
    expect(h.of('submit').map(m => 'more' in m)).toEqual([false])
  })

  it('gives the same key to the same function and arguments (pure), and unique keys with pure: false', async () => {
    const h = track(harness())
    const add = (a: number, b: number): number => a + b
    const a = h.client.submit(add, 1, 2)
    const b = h.client.submit(add, 1, 2)
    const c = h.client.submit(add, 2, 1)
    expect(a.key).toBe(b.key)
    expect(a.key).not.toBe(c.key)
    const impure = h.client.with({ pure: false })
    const r1 = impure.submit(() => Math.random())
    const r2 = impure.submit(() => Math.random())
    expect(r1.key).not.toBe(r2.key)
    await tick()
    expect(h.of('submit').flatMap(m => m.tasks).map(t => t.key)).toEqual([a.key, c.key, r1.key, r2.key])
    // one record: the shared key finishes for both
    h.send({ type: 'key-state', key: a.key, state: 'memory' })
    await tick()
    expect(a.status).toBe('finished')
    expect(b.status).toBe('finished')
  })

  it('replaces futures in arguments (nested in arrays, objects, Maps and Sets) by refs and lists them as deps', async () => {
    const h = track(harness())
    const x = h.client.submit(() => 1)
    const y = h.client.submit(() => 2)
    const z = h.client.submit(() => 3)
    const w = h.client.submit(() => 4)
    const user = { list: [x, 5], nested: { y } }
    const t = h.client.submit((...args: unknown[]) => args.length, user, new Map([['z', z]]), new Set([w]), x)
    await tick()
    const task = h.of('submit').flatMap(m => m.tasks).find(k => k.key === t.key)!
    expect(new Set(task.deps)).toEqual(new Set([x.key, y.key, z.key, w.key]))
    expect(task.deps).toHaveLength(4)
    const args = decodeValue(task.args) as [{ list: unknown[]; nested: { y: unknown } }, Map<string, unknown>, Set<unknown>, unknown]
    expect(args[0].list[0]).toEqual(new FutureRef(x.key))
    expect(args[0].list[1]).toBe(5)
    expect(args[0].nested.y).toEqual(new FutureRef(y.key))
    expect(args[1].get('z')).toEqual(new FutureRef(z.key))
    expect([...args[2]][0]).toEqual(new FutureRef(w.key))
    expect(args[3]).toEqual(new FutureRef(x.key))
    // the caller's objects are not touched
    expect(user.list[0]).toBe(x)
    // dependencies are in the same submit message, before the task that needs them
    const keys = h.of('submit').flatMap(m => m.tasks).map(k => k.key)
    expect(keys.indexOf(x.key)).toBeLessThan(keys.indexOf(t.key))
  })

  it('sends per-call options with each task', async () => {
    const h = track(harness())
    const f = h.client.with({ priority: 10, retries: 2, workers: 'tab-1', redundancy: 3 }).submit((a: number) => a, 1)
    const k = h.client.with({ key: 'my-key' }).submit((a: number) => a, 1)
    await tick()
    const tasks = h.of('submit').flatMap(m => m.tasks)
    expect(tasks[0]).toMatchObject({ key: f.key, priority: 10, retries: 2, workers: ['tab-1'], redundancy: 3 })
    expect(tasks[1]).toMatchObject({ key: 'my-key' })
    expect(tasks[1]).not.toHaveProperty('priority')
  })

  it('refuses functions and arguments that cannot travel, synchronously, with a SerializationError', () => {
    const h = track(harness())
    expect(() => h.client.submit(Math.random)).toThrow(SerializationError)
    expect(() => h.client.submit(Math.random)).toThrow(/native function Math\.random.*wrap it/)
    const obj = { double(x: number) { return x * 2 } }
    expect(() => h.client.submit(obj.double, 1)).toThrow(/method shorthand/)
    const y = 10
    expect(() => h.client.submit((x: number) => x + y, 1)).toThrow(SerializationError)
    expect(() => h.client.submit((x: number) => x + y, 1)).toThrow(/uses `y`, which would be undefined on the worker: .*pass it as an argument or define it inside the function/)
    let err: unknown
    try { h.client.submit((a: unknown, b: unknown) => [a, b], 1, { cb: () => 1 }) } catch (e) { err = e }
    expect(err).toBeInstanceOf(SerializationError)
    expect((err as Error).message).toContain('args[1].cb')
    expect((err as { path: string }).path).toBe('args[1].cb')
    expect(() => h.client.submit('x => x' as unknown as () => void)).toThrow(/expected a function/)
  })

  it('refuses futures of another client and released futures as arguments', () => {
    const h = track(harness())
    const other = track(harness())
    const x = other.client.submit(() => 1)
    expect(() => h.client.submit((a: number) => a, x)).toThrow(/another client/)
    const y = h.client.submit(() => 2)
    y.release()
    expect(() => h.client.submit((a: number) => a, y)).toThrow(/released/)
  })

  it('refuses task arguments too big for one frame with a TooLargeError that says to scatter', () => {
    const h = track(harness())
    const big = new Uint8Array(LIMITS.frameBytes)
    expect(() => h.client.submit((a: Uint8Array) => a.length, big)).toThrow(TooLargeError)
    expect(() => h.client.submit((a: Uint8Array) => a.length, big)).toThrow(/client\.scatter/)
  })
})

describe('map', () => {
  it('zips iterables, stopping at the shortest, one task per item', async () => {
    const h = track(harness())
    const fs = h.client.map((a: number, b: string) => `${a}${b}`, [1, 2, 3], new Set(['a', 'b']))
    expect(fs).toHaveLength(2)
    await tick()
    const tasks = h.of('submit').flatMap(m => m.tasks)
    expect(tasks.map(t => decodeValue(t.args))).toEqual([[1, 'a'], [2, 'b']])
    function* naturals(): Generator<number> { for (let i = 0; ; i++) yield i }
    expect(h.client.map((a: number, b: number) => a * b, naturals(), [5, 6, 7])).toHaveLength(3)
    expect(h.client.map((a: number) => a, [])).toEqual([])
    expect(h.client.map((c: string) => c, 'ab')).toHaveLength(2)
  })

  it('takes futures as items, key prefixes and key lists', async () => {
    const h = track(harness())
    const xs = h.client.map((i: number) => i, [1, 2])
    const ys = h.client.map((x: number) => x * 2, xs)
    await tick()
    const tasks = h.of('submit').flatMap(m => m.tasks)
    expect(tasks.find(t => t.key === ys[1]!.key)!.deps).toEqual([xs[1]!.key])
    expect(h.client.with({ key: 'load' }).map((i: number) => i, [1])[0]!.key).toMatch(/^load-[0-9a-f]{16}$/)
    expect(h.client.with({ key: ['a', 'b'] }).map((i: number) => i, [1, 2]).map(f => f.key)).toEqual(['a', 'b'])
    expect(() => h.client.with({ key: ['a'] }).map((i: number) => i, [1, 2])).toThrow(/1 keys for 2 items/)
  })

  it('names the item that cannot travel and releases the futures it made', async () => {
    const h = track(harness())
    expect(() => h.client.map((a: unknown) => a, [1, 2, Symbol('no')])).toThrow(/map item 2: .*args\[0\]/)
    await tick()
    const submitted = h.of('submit').flatMap(m => m.tasks).map(t => t.key)
    expect(submitted).toHaveLength(2)
    expect(h.of('release').flatMap(m => m.keys)).toEqual(submitted)
    expect(() => h.client.map((a: number) => a, 5 as unknown as number[])).toThrow(/argument 2 must be an iterable/)
    expect(() => (h.client.map as (f: unknown) => unknown)((a: number) => a)).toThrow(/at least one iterable/)
  })

  it('measures the client-side cost of map over 100,000 items', async () => {
    const h = track(harness())
    const seq = Array.from({ length: 100_000 }, (_, i) => i)
    const f = (x: number): number => x * 2
    for (const x of h.client.map(f, seq.map(x => -x - 1).slice(0, 20_000))) x.release() // warm up the JIT
    await tick()
    const costs: string[] = []
    for (let round = 0; round < 3; round++) {
      h.clear()
      const items = seq.map(x => x + round * 100_000)
      const t0 = performance.now()
      const fs = h.client.map(f, items)
      const t1 = performance.now()
      await tick()
      const t2 = performance.now()
      costs.push(`${((t1 - t0) * 1000 / 1e5).toFixed(2)} µs (${((t2 - t0) * 1000 / 1e5).toFixed(2)} µs with the flush to the link)`)
      expect(fs).toHaveLength(100_000)
      const submits = h.of('submit')
      expect(submits.reduce((n, m) => n + m.tasks.length, 0)).toBe(100_000)
      for (const m of submits) expect(m.tasks.length).toBeLessThanOrEqual(LIMITS.keys)
      for (const x of fs) x.release()
      await tick()
    }
    console.log(`client-side cost of map over 100,000 items, per item, 3 rounds: ${costs.join('; ')}`)
  })
})

describe('gather', () => {
  it('keeps the nesting of its input and sends one gather message', async () => {
    const h = track(harness())
    const [a, b, c] = h.client.map((i: number) => i, [1, 2, 3]) as [Future<number>, Future<number>, Future<number>]
    await tick()
    h.clear()
    const p = h.client.gather({ list: [a, b, 'plain'], map: new Map([['c', c]]), set: new Set([a]), n: 7, again: a })
    await tick()
    expect(h.of('gather')).toHaveLength(1)
    expect(h.of('gather')[0]!.keys.sort()).toEqual([a.key, b.key, c.key].sort())
    h.send(
      { type: 'data', key: a.key, data: encodeValue(10) },
      { type: 'data', key: b.key, data: encodeValue({ deep: [20] }) },
      { type: 'data', key: c.key, data: encodeValue('thirty') },
    )
    const out = await p
    expect(out).toEqual({ list: [10, { deep: [20] }, 'plain'], map: new Map([['c', 'thirty']]), set: new Set([10]), n: 7, again: 10 })
    expect(await h.client.gather([])).toEqual([])
    expect(await h.client.gather(5)).toBe(5)
  })

  it('decodes once and hands the value to everyone waiting; result() fetches again later', async () => {
    const h = track(harness())
    const f = h.client.submit(() => [1, 2, 3])
    const g = h.client.submit(() => [1, 2, 3])
    const p1 = f.result()
    const p2 = g.result()
    const p3 = h.client.gather([f, g])
    await tick()
    expect(h.of('gather').flatMap(m => m.keys)).toEqual([f.key])
    h.send({ type: 'data', key: f.key, data: encodeValue([1, 2, 3]) })
    const [v1, v2, [v3]] = await Promise.all([p1, p2, p3])
    expect(v1).toEqual([1, 2, 3])
    expect(v2).toBe(v1)
    expect(v3).toBe(v1)
    expect(f.status).toBe('finished')
    const again = f.result()
    await tick()
    expect(h.of('gather').flatMap(m => m.keys)).toEqual([f.key, f.key])
    h.send({ type: 'data', key: f.key, data: encodeValue([1, 2, 3]) })
    expect(await again).toEqual([1, 2, 3])
  })

  it('joins data that arrives in parts', async () => {
    const h = track(harness())
    const n = 300_000 // 2.4 MB: three parts
    const f = h.client.submit((k: number) => new Float64Array(k), n)
    const p = f.result() as Promise<Float64Array>
    const big = new Float64Array(n).map((_, i) => i * 0.5)
    const parts = splitParts({ type: 'data' as const, key: f.key, data: encodeValue(big) })
    expect(parts).toHaveLength(3)
    await tick()
    h.send(parts[2]!, parts[0]!, parts[1]!) // in any order
    const got = await p
    expect(got).toBeInstanceOf(Float64Array)
    expect(got.length).toBe(n)
    let same = true
    for (let i = 0; i < n; i++) if (got[i] !== big[i]) { same = false; break }
    expect(same).toBe(true)
  })

  it('rejects with the named error classes', async () => {
    const h = track(harness())
    const [t, c, l, d] = h.client.map((i: number) => i, [1, 2, 3, 4])
    const results = [t, c, l, d].map(f => f!.result())
    for (const r of results) r.catch(() => {})
    h.send(
      { type: 'key-state', key: t!.key, state: 'erred', error: { code: 'task-error', message: 'boom', name: 'RangeError', stack: 'RangeError: boom\n    at task (worker.js:1:1)' } },
      { type: 'key-state', key: c!.key, state: 'cancelled' },
      { type: 'key-state', key: l!.key, state: 'lost' },
      { type: 'data-error', key: d!.key, error: { code: 'lost-data', message: 'no worker holds it' } },
    )
    const e1 = await results[0]!.catch((e: unknown) => e) as TaskError
    expect(e1).toBeInstanceOf(TaskError)
    expect(e1.message).toBe('boom')
    expect(e1.remoteName).toBe('RangeError')
    expect(e1.remoteStack).toContain('worker.js:1:1')
    expect(e1.key).toBe(t!.key)
    await expect(results[1]).rejects.toBeInstanceOf(CancelledError)
    await expect(results[2]).rejects.toBeInstanceOf(LostDataError)
    await expect(results[3]).rejects.toBeInstanceOf(LostDataError)
    expect([t!.status, c!.status, l!.status]).toEqual(['error', 'cancelled', 'lost'])
    expect(await t!.exception()).toBe(e1)
    await expect(h.client.gather([d, t])).rejects.toBeInstanceOf(Error)
  })

  it('surfaces refused messages: on the future named by the error, else one warning per code', async () => {
    const h = track(harness())
    const f = h.client.submit(() => 1)
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {})
    h.send(
      { type: 'error', error: { code: 'bad-message', message: 'bad task', key: f.key } },
      { type: 'error', error: { code: 'too-large', message: 'frame too big' } },
      { type: 'error', error: { code: 'too-large', message: 'frame too big again' } },
    )
    await tick()
    expect(f.status).toBe('error')
    await expect(f.result()).rejects.toThrow('bad task')
    expect(warn).toHaveBeenCalledTimes(1)
    expect(String(warn.mock.calls[0]![0])).toContain('frame too big')
    warn.mockRestore()
  })
})

describe('release and cancel', () => {
  it('counts references per key and sends release when the last Future lets go', async () => {
    const h = track(harness())
    const fn = (x: number): number => x
    const a = h.client.submit(fn, 1)
    const b = h.client.submit(fn, 1)
    await tick()
    a.release()
    a.release()
    await tick()
    expect(h.of('release')).toHaveLength(0)
    b.release()
    await tick()
    expect(h.of('release').flatMap(m => m.keys)).toEqual([a.key])
    await expect(a.result()).rejects.toThrow(/released/)
    // many releases in one turn are one message
    const fs = h.client.map(fn, [10, 11, 12])
    for (const f of fs) f.release()
    await tick()
    expect(h.of('release').at(-1)!.keys).toEqual(fs.map(f => f.key))
  })

  it('keeps message order: a release then a resubmit of the same key in one turn', async () => {
    const h = track(harness())
    const fn = (x: number): number => x
    const a = h.client.submit(fn, 1)
    await tick()
    h.clear()
    a.release()
    const b = h.client.submit(fn, 1)
    await tick()
    expect(h.all().map(m => m.type)).toEqual(['release', 'submit'])
    expect(b.key).toBe(a.key)
    expect(b.status).toBe('pending')
  })

  it('releases futures that are garbage-collected', async () => {
    const { setFlagsFromString } = await import('node:v8')
    const { runInNewContext } = await import('node:vm')
    setFlagsFromString('--expose_gc')
    const gc = runInNewContext('gc') as () => void
    const h = track(harness())
    let key = ''
    ;(() => { key = h.client.submit((x: number) => x, 42).key })()
    for (let i = 0; i < 50 && h.of('release').length === 0; i++) {
      gc()
      await tick()
    }
    expect(h.of('release').flatMap(m => m.keys)).toEqual([key])
  })

  it('keeps a future alive while its result is awaited, even when nothing else holds it', async () => {
    const { setFlagsFromString } = await import('node:v8')
    const { runInNewContext } = await import('node:vm')
    setFlagsFromString('--expose_gc')
    const gc = runInNewContext('gc') as () => void
    const h = track(harness())
    const p = h.client.submit((x: number) => x + 1, 41).result()
    for (let i = 0; i < 10; i++) { gc(); await tick() }
    expect(h.of('release')).toHaveLength(0)
    const key = h.of('submit')[0]!.tasks[0]!.key
    h.send({ type: 'data', key, data: encodeValue(42) })
    expect(await p).toBe(42)
    for (let i = 0; i < 50 && h.of('release').length === 0; i++) { gc(); await tick() }
    expect(h.of('release').flatMap(m => m.keys)).toEqual([key]) // and let go of afterwards
  })

  it('cancels: a cancel message, and result() rejects with CancelledError', async () => {
    const h = track(harness())
    const fs = h.client.map((x: number) => x, [1, 2])
    const waiting = fs[0]!.result()
    await h.client.cancel(fs)
    await expect(waiting).rejects.toBeInstanceOf(CancelledError)
    await expect(fs[1]!.result()).rejects.toBeInstanceOf(CancelledError)
    expect(fs.map(f => f.status)).toEqual(['cancelled', 'cancelled'])
    await tick()
    expect(h.of('cancel').flatMap(m => m.keys)).toEqual(fs.map(f => f.key))
    // a late "memory" does not revive it
    h.send({ type: 'key-state', key: fs[0]!.key, state: 'memory' })
    await tick()
    expect(fs[0]!.status).toBe('cancelled')
    // submitting the same work again runs it again
    const again = h.client.submit((x: number) => x, 1)
    expect(again.key).toBe(fs[0]!.key)
    expect(again.status).toBe('pending')
    await fs[1]!.cancel()
  })
})

describe('scatter', () => {
  it('sends the value under its content hash, with replicas', async () => {
    const h = track(harness())
    const value = { table: new Float64Array([1, 2, 3]), name: 'x' }
    const f = await h.client.scatter(value, { replicas: 2 })
    const g = await h.client.scatter({ table: new Float64Array([1, 2, 3]), name: 'x' })
    expect(f.key).toMatch(/^scatter-[0-9a-f]{16}$/)
    expect(g.key).toBe(f.key)
    await tick()
    const msgs = h.of('scatter')
    expect(msgs).toHaveLength(1)
    expect(msgs[0]!.replicas).toBe(2)
    expect(decodeValue(msgs[0]!.data)).toEqual(value)
    await expect(h.client.scatter(f)).rejects.toThrow(/not a Future/)
    await expect(h.client.scatter([f])).rejects.toThrow(/holds futures/)
    await expect(h.client.scatter(1, { replicas: 0 })).rejects.toThrow('replicas must be a whole number from 1 to 64, got 0')
  })

  it('a big value goes whole over a memory link (a socket link splits it into parts: wire.test.ts)', async () => {
    const h = track(harness())
    await h.client.scatter(new Uint8Array(3 * LIMITS.chunkBytes + 5))
    await tick()
    const parts = h.of('scatter')
    expect(parts.length).toBe(1)
    expect(parts[0]!.parts).toBeUndefined()
    expect(parts[0]!.data.byteLength).toBeGreaterThan(3 * LIMITS.chunkBytes)
  })
})

describe('requests', () => {
  it('answers workers(), story() and uploadModule() from replies', async () => {
    const h = track(harness())
    h.coordinator.onMessages = msgs => {
      for (const m of msgs) {
        if (m.type !== 'request') continue
        const value = m.op.op === 'workers' ? [{ id: 'w1', name: 'tab', kind: 'browser', slots: 4, extra: true }]
          : m.op.op === 'story' ? [{ key: m.op.key, from: 'new', to: 'waiting', stimulus: 'submit-1', now: 1 }]
            : true
        h.coordinator.send({ type: 'reply', id: m.id, ok: true, value })
      }
    }
    expect(await h.client.workers()).toEqual([{ id: 'w1', name: 'tab', kind: 'browser', slots: 4, extra: true }])
    expect((await h.client.story('k'))[0]!.to).toBe('waiting')
    await expect(h.client.uploadModule('stats', 'export const x = 1')).resolves.toBeUndefined()
    await expect(h.client.uploadModule('', 'x')).rejects.toThrow(/module name/)
  })

  it('checks each reply against its request kind: a malformed one fails that request only, clearly', async () => {
    const h = track(harness())
    h.coordinator.onMessages = msgs => {
      for (const m of msgs) {
        if (m.type !== 'request') continue
        const value = m.op.op === 'workers' ? { not: 'a list' }
          : m.op.op === 'get-dataset' ? { key: 5 }
            : m.op.op === 'list-datasets' ? ['a', 'b']
              : m.op.op === 'story' ? [{ key: m.op.key, from: 'new', to: 'waiting', stimulus: 'submit-1' }]
                : m.op.op === 'close' ? true : 'what?'
        h.coordinator.send({ type: 'reply', id: m.id, ok: true, value })
      }
    }
    const [workers, dataset, names, story, upload] = await Promise.allSettled([
      h.client.workers(), h.client.getDataset('d'), h.client.listDatasets(), h.client.story('k'), h.client.uploadModule('m', 'export const x = 1'),
    ])
    const reason = (r: PromiseSettledResult<unknown>): TabgridError => (r as PromiseRejectedResult).reason as TabgridError
    expect(reason(workers)).toBeInstanceOf(TabgridError)
    expect(reason(workers).code).toBe('bad-message')
    expect(reason(workers).message).toMatch(/^workers\(\): the coordinator's reply is malformed \(\(message\): .*expected array/)
    expect(reason(dataset).code).toBe('bad-message')
    expect(reason(dataset).message).toMatch(/^getDataset\(d\): .*key: .*expected string/)
    // the reply that was right in the same frame is answered
    expect(names).toEqual({ status: 'fulfilled', value: ['a', 'b'] })
    // a story entry without its time is refused, and so is `'what?'` for an upload (true expected)
    expect(reason(story).message).toMatch(/^story\(k\): .*0\.now/)
    expect(reason(upload).message).toMatch(/^uploadModule\(m\): /)
    // nothing else is broken: the client still submits and closes
    expect(h.client.submit((x: number) => x, 1)).toBeInstanceOf(Future)
  })

  it('rejects with the remote error, on timeout, and when the client closes', async () => {
    const h = harness()
    h.coordinator.onMessages = msgs => {
      for (const m of msgs) if (m.type === 'request' && m.op.op === 'story') h.coordinator.send({ type: 'reply', id: m.id, ok: false, error: { code: 'not-found', message: 'no such key' } })
    }
    await expect(h.client.story('nope')).rejects.toThrow('no such key')
    await expect(h.client.workers({ timeout: 20 })).rejects.toBeInstanceOf(TimeoutError)
    const pending = h.client.workers()
    await h.client.close()
    await expect(pending).rejects.toBeInstanceOf(CancelledError)
    await expect(h.client.workers()).rejects.toThrow('client closed')
  })
})

describe('with()', () => {
  it('validates options with messages that name them', () => {
    const h = track(harness())
    expect(() => h.client.with({ retries: 1.5 })).toThrow('retries must be a whole number from 0 to 100, got 1.5')
    expect(() => h.client.with({ retries: 101 })).toThrow('retries must be a whole number from 0 to 100')
    expect(() => h.client.with({ redundancy: 0 })).toThrow('redundancy must be a whole number from 1 to 16, got 0')
    expect(() => h.client.with({ priority: NaN })).toThrow('priority must be a finite number, got NaN')
    expect(() => h.client.with({ pure: 'yes' as unknown as boolean })).toThrow('pure must be true or false, got "yes"')
    expect(() => h.client.with({ workers: [1] as unknown as string[] })).toThrow(/^workers must be a worker id or name/)
    expect(() => h.client.with({ key: '' })).toThrow('key must be 1 to 256 characters, got 0')
    expect(() => h.client.with({ retry: 1 } as unknown as { retries: number })).toThrow('unknown option `retry` in task options (known: key, pure, priority, retries, workers, redundancy, timeout, spotCheck)')
    expect(() => h.client.with(null as unknown as object)).toThrow('task options must be an object, got null')
    expect(() => h.client.with({ key: ['a', 'b'] }).submit(() => 1)).toThrow(/an array of keys is for map/)
  })

  it('chains: later options add to earlier ones', async () => {
    const h = track(harness())
    const v = h.client.with({ priority: 5 }).with({ retries: 1 })
    expect(v.options).toMatchObject({ priority: 5, retries: 1, pure: true })
    v.submit(() => 1)
    await tick()
    expect(h.of('submit')[0]!.tasks[0]).toMatchObject({ priority: 5, retries: 1 })
  })
})

describe('reconnect', () => {
  function welcome(resumed: boolean, id = 'c1'): ToClientMessage {
    return { type: 'welcome', id, version: PROTOCOL_VERSION, resumed, resume: `secret-of-${id}` }
  }

  it('resumes: asks again for awaited values, resyncs states, and sends what was held', async () => {
    const h = track(harness())
    h.send(welcome(false))
    await tick()
    expect(h.client.id).toBe('c1')
    expect(h.clientSide.hello).toMatchObject({ resume: 'secret-of-c1' })
    const f = h.client.submit((x: number) => x, 1)
    const g = h.client.submit((x: number) => x, 2)
    const p = f.result()
    await tick()
    h.clear()
    h.clientSide.onStatus({ state: 'disconnected', reason: 'transport close' })
    expect(h.client.connected).toBe(false)
    const later = h.client.submit((x: number) => x * 3, 3) // held while away
    await expect(h.client.workers()).rejects.toBeInstanceOf(TimeoutError)
    await tick()
    expect(h.frames).toHaveLength(0)
    h.clientSide.onStatus({ state: 'connected', again: true })
    h.send(welcome(true))
    await tick()
    expect(h.client.connected).toBe(true)
    expect(h.of('function')).toHaveLength(1) // the function is sent again on the new connection
    expect(h.of('submit').flatMap(m => m.tasks).map(t => t.key)).toEqual([later.key])
    expect(h.of('gather').flatMap(m => m.keys)).toEqual([f.key])
    const status = h.of('request')[0]!
    expect(status.op).toEqual({ op: 'status', keys: [f.key, g.key, later.key] })
    h.send({ type: 'reply', id: status.id, ok: true, value: { [f.key]: 'memory', [g.key]: 'erred', [later.key]: 'queued' } })
    h.send({ type: 'data', key: f.key, data: encodeValue(1) })
    expect(await p).toBe(1)
    await tick()
    expect([f.status, g.status, later.status]).toEqual(['finished', 'error', 'pending'])
  })

  it('fails every pending future with LostDataError when the coordinator forgot this client', async () => {
    const h = track(harness())
    h.send(welcome(false))
    await tick()
    const f = h.client.submit((x: number) => x, 1)
    const done = h.client.submit((x: number) => x, 2)
    h.send({ type: 'key-state', key: done.key, state: 'memory' })
    const p = f.result()
    await tick()
    h.clientSide.onStatus({ state: 'disconnected', reason: 'transport close' })
    const whileAway = h.client.submit((s: string) => s, 'away') // held, then dropped with the rest
    h.clientSide.onStatus({ state: 'connected', again: true })
    h.send(welcome(false, 'c2'))
    const err = await p.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(LostDataError)
    expect((err as Error).message).toMatch(/the coordinator restarted or forgot this client/)
    expect(f.status).toBe('lost')
    expect(done.status).toBe('lost')
    expect(whileAway.status).toBe('lost')
    expect(h.client.id).toBe('c2')
    expect(h.clientSide.hello).toMatchObject({ resume: 'secret-of-c2' })
    // the same work can be submitted again
    h.clear()
    const again = h.client.submit((x: number) => x, 1)
    expect(again.key).toBe(f.key)
    expect(f.status).toBe('pending')
    const again2 = h.client.submit((s: string) => s, 'away')
    expect(again2.key).toBe(whileAway.key)
    await tick()
    expect(h.all().map(m => m.type)).toEqual(['function', 'function', 'submit'])
    expect(h.of('submit')[0]!.tasks.map(t => t.key)).toEqual([f.key, whileAway.key])
  })
})

describe('reconnect at scale', () => {
  it('re-checks 300,000 futures after a reconnect in paced status requests, every frame under the cap by its encoded size', async () => {
    const h = track(harness())
    h.send({ type: 'welcome', id: 'c1', version: PROTOCOL_VERSION, resumed: false, resume: 's1' })
    await tick()
    const n = 300_000
    const fs = h.client.with({ pure: false }).map((x: number) => x, Array.from({ length: n }, (_, i) => i))
    await tick()
    // what the client sends, encoded as its socket would before the size is checked: under the cap already
    for (const batch of h.frames) expect(packFrame(batch).frame.byteLength).toBeLessThanOrEqual(LIMITS.frameBytes)
    h.clear()
    h.clientSide.onStatus({ state: 'disconnected', reason: 'transport close' })
    h.clientSide.onStatus({ state: 'connected', again: true })
    h.send({ type: 'welcome', id: 'c1', version: PROTOCOL_VERSION, resumed: true, resume: 's2' })
    await tick()
    const asked = new Set<number>()
    const keys: string[] = []
    const requests = (): Msg<'request'>[] => h.of('request').filter(r => !asked.has(r.id))
    // paced: two in flight; each answer lets the next go
    for (let round = 0; ; round++) {
      await tick()
      const open = requests()
      if (open.length === 0) break
      expect(open.length).toBeLessThanOrEqual(2)
      for (const r of open) {
        asked.add(r.id)
        expect(r.op.op).toBe('status')
        const ks = (r.op as { keys: string[] }).keys
        keys.push(...ks)
        const bytes = packFrame([r]).frame.byteLength
        expect(bytes).toBeLessThanOrEqual((1 << 20) + 100)
        // the answer (each key with its state) is under the cap too
        const value = Object.fromEntries(ks.map(k => [k, 'memory']))
        expect(packFrame([{ type: 'reply', id: r.id, ok: true, value }]).frame.byteLength).toBeLessThan(LIMITS.frameBytes / 4)
        h.send({ type: 'reply', id: r.id, ok: true, value })
      }
      expect(round).toBeLessThan(1000)
    }
    for (const batch of h.frames) expect(packFrame(batch).frame.byteLength).toBeLessThanOrEqual(LIMITS.frameBytes)
    expect(asked.size).toBeGreaterThan(5)
    expect(keys).toEqual(fs.map(f => f.key))
    expect(fs.every(f => f.status === 'finished')).toBe(true)
  }, 60_000)
})

describe('reconnect: tasks lost with the connection', () => {
  it('sends again, with its function, a task the coordinator never got (a frame lost as the connection dropped); not one it has', async () => {
    const h = track(harness())
    h.send({ type: 'welcome', id: 'c1', version: PROTOCOL_VERSION, resumed: false, resume: 's1' })
    await tick()
    const lost = h.client.submit((x: number) => x + 1, 1)
    const value = lost.result()
    const kept = h.client.submit((x: number) => x + 1, 2)
    const done = h.client.submit((x: number) => x * 5, 3)
    h.send({ type: 'key-state', key: done.key, state: 'memory' })
    await tick()
    h.clear()
    h.clientSide.onStatus({ state: 'disconnected', reason: 'ping timeout' })
    h.clientSide.onStatus({ state: 'connected', again: true })
    h.send({ type: 'welcome', id: 'c1', version: PROTOCOL_VERSION, resumed: true, resume: 's2' })
    await tick()
    const status = h.of('request')[0]!
    expect(status.op).toEqual({ op: 'status', keys: [lost.key, kept.key] })
    // the gather asked again on reconnecting is refused: the coordinator never got the task
    expect(h.of('gather').flatMap(g => g.keys)).toEqual([lost.key])
    h.send({ type: 'key-state', key: lost.key, state: 'erred', error: { code: 'not-found', message: `key ${lost.key} is unknown to the scheduler`, key: lost.key } })
    await tick()
    expect(lost.status).toBe('pending')
    h.clear()
    h.send({ type: 'reply', id: status.id, ok: true, value: { [lost.key]: 'forgotten', [kept.key]: 'queued' } })
    await tick()
    expect(h.all().map(m => m.type)).toEqual(['function', 'submit', 'gather'])
    const task = h.of('submit')[0]!.tasks
    expect(task.map(t => t.key)).toEqual([lost.key])
    expect(decodeValue(task[0]!.args)).toEqual([1])
    expect([lost.status, kept.status]).toEqual(['pending', 'pending'])
    h.send({ type: 'key-state', key: lost.key, state: 'memory' }, { type: 'data', key: lost.key, data: encodeValue(2) })
    expect(await value).toBe(2)
    expect(lost.status).toBe('finished')
  })
})

describe('lifecycle', () => {
  it('close() releases everything, rejects pending futures, is idempotent, and runs onClose', async () => {
    const [clientSide, coordinator] = memoryLinkPair<ClientMessage, ToClientMessage>({ role: 'client' }, { role: 'client' })
    const got: ClientMessage[] = []
    coordinator.onMessages = msgs => { got.push(...msgs) }
    const onClose = vi.fn(async () => {})
    const client = Client.fromLink(clientSide, onClose)
    const f = client.submit((x: number) => x, 1)
    const p = f.result()
    const c1 = client.close()
    const c2 = client.close()
    expect(c1).toBe(c2)
    await c1
    await expect(p).rejects.toThrow('client closed')
    await expect(p).rejects.toBeInstanceOf(CancelledError)
    expect(f.status).toBe('cancelled')
    expect(got.map(m => m.type)).toEqual(['function', 'submit', 'gather', 'release'])
    expect(onClose).toHaveBeenCalledTimes(1)
    expect(() => client.submit(() => 1)).toThrow(/client closed/)
    f.release() // harmless after close
  })

  it('Client.local needs a registered factory, and closes the cluster with the client', async () => {
    setLocalClusterFactory(undefined)
    await expect(Client.local()).rejects.toThrow(/no local cluster/)
    let coordinatorSide: Link<ToClientMessage, ClientMessage> | undefined
    const shutdown = vi.fn(async () => {})
    setLocalClusterFactory(async opts => {
      expect(opts).toEqual({ workers: 2 })
      const [a, b] = memoryLinkPair<ClientMessage, ToClientMessage>({ role: 'client' }, { role: 'client' })
      coordinatorSide = b
      return { link: a, shutdown }
    })
    try {
      const client = await Client.local({ workers: 2 })
      await expect(Client.local({ workers: 0 })).rejects.toThrow('workers must be a whole number from 1 to 4096, got 0')
      const seen: ClientMessage[] = []
      coordinatorSide!.onMessages = msgs => { seen.push(...msgs) }
      client.submit(() => 1)
      await tick()
      // (a `workers` request went first, for String(client); this fake never answers it)
      expect(seen.map(m => m.type)).toEqual(['request', 'function', 'submit'])
      await client.close()
      expect(shutdown).toHaveBeenCalledTimes(1)
    } finally {
      setLocalClusterFactory(undefined)
    }
  })

  it('fails everything when the link closes under it', async () => {
    const h = harness()
    const f = h.client.submit(() => 1)
    const p = f.result()
    h.coordinator.close()
    await expect(p).rejects.toBeInstanceOf(CancelledError)
    expect(() => h.client.submit(() => 2)).toThrow(TabgridError)
    await h.client.close()
  })
})

// ---------------------------------------------------------------- against the in-memory coordinator

/**
 * A scripted worker on the in-memory coordinator: by default it runs what it is
 * assigned (functions are evaluated here, dependencies it lacks are fetched through the
 * coordinator, copies it keeps are reported), stores puts and answers fetches. A test
 * turns behaviours off to play a worker that misbehaves.
 */
class ScriptedWorker {
  readonly values = new Map<string, unknown>()
  readonly received: ToWorkerMessage[] = []
  /** run assignments (false: they wait in `assigned` for the test) */
  auto = true
  /** never answer anything (a frozen tab, a stopped process) */
  frozen = false
  /** how it answers a story question (absent: it does not) */
  onStory: ((m: Extract<ToWorkerMessage, { type: 'story' }>) => void) | undefined
  readonly assigned: Extract<ToWorkerMessage, { type: 'assign' }>[] = []
  private readonly fns = new Map<string, string>()
  private readonly fetches = new Map<number, (m: Extract<ToWorkerMessage, { type: 'data' | 'data-error' }>) => void>()
  private fetchSeq = 1

  constructor(readonly id: string, private readonly link: Link<WorkerMessage, ToWorkerMessage>, readonly disconnect: () => void) {
    link.onMessages = msgs => { for (const m of msgs) this.on(m) }
  }

  send(m: WorkerMessage): void { this.link.send(m) }

  private on(m: ToWorkerMessage): void {
    if (this.frozen) return
    this.received.push(m)
    switch (m.type) {
      case 'function': this.fns.set(m.hash, m.source); return
      case 'assign':
        if (this.auto) void this.run(m)
        else this.assigned.push(m)
        return
      case 'put':
        this.values.set(m.key, decodeValue(m.data))
        this.send({ type: 'stored', key: m.key, nbytes: m.data.byteLength })
        return
      case 'fetch':
        if (this.values.has(m.key)) this.send({ type: 'data', id: m.id, key: m.key, data: encodeValue(this.values.get(m.key)) })
        else this.send({ type: 'data-error', id: m.id, key: m.key, error: { code: 'lost-data', message: `${m.key} is not held here`, key: m.key } })
        return
      case 'data':
      case 'data-error':
        this.fetches.get(m.id)?.(m)
        this.fetches.delete(m.id)
        return
      case 'free': for (const k of m.keys) this.values.delete(k); return
      case 'steal': this.send({ type: 'steal-response', key: m.key, attempt: m.attempt, ok: false }); return
      case 'story': this.onStory?.(m); return
      default: return
    }
  }

  /** Runs an assignment the way an executor would. */
  async run(a: Extract<ToWorkerMessage, { type: 'assign' }>): Promise<void> {
    const missing: { key: string; holder: string }[] = []
    for (const d of a.deps) {
      if (this.values.has(d.key)) continue
      try {
        this.values.set(d.key, await this.fetch(d.key))
        this.send({ type: 'stored', key: d.key, nbytes: d.nbytes })
      } catch { missing.push({ key: d.key, holder: '' }) }
    }
    if (missing.length) { this.send({ type: 'missing', key: a.key, attempt: a.attempt, missing }); return }
    try {
      const fn = new Function(`return (${this.fns.get(a.fn)})`)() as (...args: unknown[]) => unknown
      const value = await fn(...(decodeValue(a.args, k => this.values.get(k)) as unknown[]))
      this.values.set(a.key, value)
      const data = encodeValue(value)
      this.send({ type: 'finished', key: a.key, attempt: a.attempt, nbytes: data.byteLength, ms: 1, ...(a.push ? { data } : {}), ...(a.digest ? { digest: sha256Hex(data) } : {}) })
    } catch (err) {
      this.send({ type: 'erred', key: a.key, attempt: a.attempt, error: toWireError(err, 'task-error', a.key) })
    }
  }

  private fetch(key: string): Promise<unknown> {
    const id = this.fetchSeq++
    return new Promise((resolve, reject) => {
      this.fetches.set(id, m => { if (m.type === 'data') resolve(decodeValue(m.data)); else reject(new Error(m.error.message)) })
      this.send({ type: 'fetch', id, key })
    })
  }
}

/** A real coordinator core in memory (validate mode), clients over memory links, scripted workers. */
function memoryGrid(opts: CoordinatorOptions = {}) {
  // scripted workers are honest and all alike: no spot checks re-running their results elsewhere
  const coordinator = new Coordinator({ validate: true, workerGraceMs: 60_000, clientGraceMs: 60_000, spotCheck: false, ...opts })
  let n = 0
  const join = <Out extends object, In extends object>(hello: Hello, tamper?: (m: Out) => unknown): { side: Link<Out, In>; peer: string } => {
    const [side, coordSide] = memoryLinkPair<Out, In>(hello, hello)
    const peer = coordinator.accept({ id: `conn-${n++}`, send: m => coordSide.send(m as In), close: () => coordSide.close() }, hello)
    coordSide.onMessages = msgs => coordinator.receive(peer, tamper ? msgs.map(tamper) : msgs)
    return { side, peer }
  }
  const grid = {
    coordinator,
    scheduler: coordinator.scheduler,
    /** a client, welcomed; `tamper` changes what it sends on the way */
    async client(tamper?: (m: ClientMessage) => unknown): Promise<Client> {
      const c = Client.fromLink(join<ClientMessage, ToClientMessage>({ role: 'client' }, tamper).side)
      closers.push(c)
      await tick()
      return c
    },
    worker(name: string, slots = 1): ScriptedWorker {
      const { side, peer } = join<WorkerMessage, ToWorkerMessage>({ role: 'worker', kind: 'node', slots, name })
      return new ScriptedWorker(peer, side, () => coordinator.disconnected(peer, 'transport close'))
    },
  }
  grids.push(grid)
  return grid
}
const grids: { coordinator: Coordinator }[] = []
afterEach(() => { for (const g of grids.splice(0)) g.coordinator.close() })

/** waits (polling) until check() is true */
async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const t0 = Date.now()
  while (!check()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 5))
  }
}

describe('story() against the in-memory coordinator', () => {
  it("merges the worker's answer on the coordinator's clock; an answer from another worker is not believed", async () => {
    const g = memoryGrid()
    const w1 = g.worker('w1')
    const w2 = g.worker('w2')
    const c = await g.client()
    const f = c.submit((x: number) => x + 1, 1)
    expect(await f.result()).toBe(2)
    const runner = g.scheduler.whoHas(f.key)[0]!
    const [mine, other] = runner === w1.id ? [w1, w2] : [w2, w1]
    mine.onStory = m => {
      // the other worker answers first, with the same id: not its question
      other.send({ type: 'story', id: m.id, now: 0, entries: [{ attempt: 1, from: 'new', to: 'memory', stimulus: 'forged', now: 0 }] })
      mine.send({ type: 'story', id: m.id, now: 10_000, entries: [
        { attempt: 1, from: 'new', to: 'waiting', stimulus: 'assign', now: 9_990, thread: 0 },
        { attempt: 1, from: 'executing', to: 'memory', stimulus: 'task-finished', now: 9_995, note: 'took 1 ms' },
      ] })
    }
    const t0 = Date.now()
    const story = await c.story(f)
    const fromWorker = story.filter(e => e.source === 'worker')
    expect(fromWorker.map(e => [e.from, e.to, e.stimulus, e.worker, e.attempt])).toEqual([['new', 'waiting', 'assign', mine.id, 1], ['executing', 'memory', 'task-finished', mine.id, 1]])
    expect(fromWorker[0]!.thread).toBe(0)
    expect(fromWorker[1]!.note).toBe('took 1 ms')
    // 10 ms and 5 ms before the coordinator's now when it read the answer
    expect(fromWorker[0]!.now).toBeGreaterThanOrEqual(t0 - 10 - 5)
    expect(fromWorker[1]!.now - fromWorker[0]!.now).toBe(5)
    expect(story.filter(e => e.source === undefined).map(e => e.to)).toEqual(g.scheduler.story(f.key).map(e => e.to))
  })

  it('a worker that answers junk or not at all leaves its part out, after 2 s', async () => {
    const g = memoryGrid()
    const w = g.worker('w1')
    const c = await g.client()
    const f = c.submit((x: number) => x + 1, 1)
    await f.result()
    w.onStory = m => w.send({ type: 'story', id: m.id, now: 'soon', entries: 'none' } as unknown as WorkerMessage)
    const t0 = Date.now()
    const story = await c.story(f)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1_900)
    expect(story).toEqual(g.scheduler.story(f.key))
    expect(g.coordinator.metrics.badMessages).toBeGreaterThan(0)
  })
})

describe('digests asked for, against the in-memory coordinator', () => {
  it('a worker that leaves out the digest its run was asked for is quarantined, and the task runs on another volunteer', async () => {
    // two volunteers and spot checks on: every run is asked for its digest (none drawn for a re-run here)
    const g = memoryGrid({ spotCheck: { rate: 0, floor: 0 } })
    const a1 = g.worker('a1')
    const a2 = g.worker('a2')
    a1.auto = false
    a2.auto = false
    const c = await g.client()
    const f = c.submit((x: number) => x + 1, 1)
    await until(() => a1.assigned.length + a2.assigned.length === 1, 'the assignment')
    const [liar, honest] = a1.assigned.length === 1 ? [a1, a2] : [a2, a1]
    const a = liar.assigned.shift()!
    expect(a.digest).toBe(true)
    honest.auto = true
    // well-formed, but without the digest it was asked for: it would dodge every check
    liar.send({ type: 'finished', key: a.key, attempt: a.attempt, nbytes: 9, ms: 1 })
    expect(await f.result()).toBe(2)
    expect(g.coordinator.metrics.quarantined).toBe(1)
    expect(g.scheduler.whoHas(f.key)).toEqual([honest.id])
  })
})

describe('small results that ride with their reports, against the in-memory coordinator', () => {
  /** one worker that waits, a client, and a task assigned but not yet reported */
  async function pending(opts: CoordinatorOptions = {}) {
    const g = memoryGrid(opts)
    const w = g.worker('w1')
    w.auto = false
    const c = await g.client()
    const f = c.submit((x: number) => x + 1, 1)
    await until(() => w.assigned.length === 1, 'the assignment')
    const a = w.assigned.shift()!
    /** the worker reports the result (2) with its bytes, and the client hears it is done */
    const finishWithBytes = async (): Promise<void> => {
      w.values.set(a.key, 2)
      w.send({ type: 'finished', key: a.key, attempt: a.attempt, nbytes: 1, ms: 1, data: encodeValue(2) })
      await until(() => f.status === 'finished', 'the result')
    }
    return { g, w, c, f, a, finishWithBytes }
  }
  const fetches = (w: ScriptedWorker) => w.received.filter(m => m.type === 'fetch').length

  it('a result reported with its bytes before anyone gathered it is served from the coordinator\'s copy: no fetch', async () => {
    const { w, f, a, finishWithBytes } = await pending()
    expect(a.push).toBe(false)
    await finishWithBytes()
    expect(await f.result()).toBe(2)
    expect(fetches(w)).toBe(0)
  })

  it('the copy is given once: a gather after the client dropped its value fetches from the worker', async () => {
    const { g, w, c, f, finishWithBytes } = await pending()
    await finishWithBytes()
    expect(await f.result()).toBe(2)
    // a second client wants the same key: the coordinator's copy went to the first
    await c.publishDataset('two', f)
    const c2 = await g.client()
    expect(await (await c2.getDataset<number>('two')).result()).toBe(2)
    expect(fetches(w)).toBe(1)
  })

  it('with no budget for copies (smallResultBytes 0), such a result is fetched when gathered', async () => {
    const { w, f, finishWithBytes } = await pending({ smallResultBytes: 0 })
    await finishWithBytes()
    expect(await f.result()).toBe(2)
    expect(fetches(w)).toBe(1)
  })

  it("bytes pushed by a worker that was not given the task are never served: the runner's result is", async () => {
    const { g, w, f, a } = await pending()
    const liar = g.worker('liar')
    liar.auto = false
    w.values.set(a.key, 2)
    w.send({ type: 'finished', key: a.key, attempt: a.attempt, nbytes: 1, ms: 1 })
    await until(() => f.status === 'finished', 'the result')
    // then a well-formed report about someone else's task, with bytes: refused, and nothing of it kept
    liar.send({ type: 'finished', key: a.key, attempt: a.attempt, nbytes: 1, ms: 1, data: encodeValue(666) })
    await tick()
    expect(await f.result()).toBe(2)
    expect(fetches(w)).toBe(1)
    expect(g.scheduler.whoHas(f.key)).toEqual([w.id])
  })

  it("a liar's bytes in the same scheduler batch as the runner's report are not what the gatherer gets", async () => {
    // worker frames of one turn go to the scheduler together, as on the socket server
    const { g, w, f, a } = await pending({ batchTurns: true })
    const waiting = f.result()
    await until(() => w.received.some(m => m.type === 'assign'), 'the assignment')
    const liar = g.worker('liar')
    liar.auto = false
    w.values.set(a.key, 2)
    // one turn: the runner's report without its bytes, then a forged one about the same task with bytes
    w.send({ type: 'finished', key: a.key, attempt: a.attempt, nbytes: 1, ms: 1 })
    liar.send({ type: 'finished', key: a.key, attempt: a.attempt, nbytes: 1, ms: 1, data: encodeValue(666) })
    expect(await waiting).toBe(2)
    expect(fetches(w)).toBe(1)
    expect(g.scheduler.whoHas(f.key)).toEqual([w.id])
  })

  it('a copy is dropped when its worker no longer holds the key: the gather goes to the holder that does', async () => {
    const { g, w, f, a } = await pending({ workerGraceMs: 10 })
    w.values.set(a.key, 2)
    w.send({ type: 'finished', key: a.key, attempt: a.attempt, nbytes: 1, ms: 1, data: encodeValue(2) })
    await until(() => g.scheduler.whoHas(f.key).length === 1, 'the result held')
    // the key is lost with its worker and recomputed elsewhere, with a different value
    const w2 = g.worker('w2')
    w2.auto = false
    w.disconnect()
    await until(() => w2.assigned.length === 1, 'the re-run')
    const b = w2.assigned.shift()!
    w2.values.set(b.key, 3)
    w2.send({ type: 'finished', key: b.key, attempt: b.attempt, nbytes: 1, ms: 1 })
    expect(await f.result()).toBe(3)
  })
})

describe('close() against the in-memory coordinator', () => {
  it('is acknowledged: cancels and submits of the same turn arrive, and the client is released at once, not after its grace', async () => {
    const g = memoryGrid({ clientGraceMs: 60_000 })
    const w = g.worker('w1')
    w.auto = false
    const c = await g.client()
    const slow = c.submit((x: number) => x, 1)
    await until(() => w.assigned.length === 1, 'the assignment')
    const submitted = g.coordinator.metrics.tasksSubmitted
    // the same turn: a cancel, a submit, and close
    void c.cancel(slow)
    c.submit((x: number) => x * 2, 2)
    await c.close()
    expect(g.coordinator.metrics.tasksSubmitted).toBe(submitted + 1)
    expect(w.received.filter(m => m.type === 'cancel-task').map(m => (m as { key: string }).key)).toContain(slow.key)
    // nothing of this client is left on the grid, 60 s of grace notwithstanding
    expect(g.scheduler.counts()).toMatchObject({ waiting: 0, queued: 0, processing: 0, memory: 0 })
    expect(g.coordinator.status()).toMatchObject({ clients: 0 })
  })

  it('does not wait for an acknowledgement that cannot come (the link closed)', async () => {
    const h = harness()
    h.coordinator.onMessages = () => {} // a coordinator that never answers
    h.send({ type: 'welcome', id: 'c1', version: PROTOCOL_VERSION, resumed: false })
    await tick()
    const closing = h.client.close()
    await tick()
    h.coordinator.close()
    await closing
    expect(h.client.connected).toBe(false)
  })
})

describe('uploadModule syntax check', () => {
  it('refuses a module that does not parse, with line and column, before sending anything', async () => {
    const h = track(harness())
    const err = await h.client.uploadModule('stats', 'export const mean = xs =>\n  xs.reduce((a, b) => a + b) /\n}').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(SerializationError)
    expect((err as Error).message).toBe('module stats does not parse as an ES module: Unexpected token at line 3, column 1; nothing was uploaded')
    await tick()
    expect(h.of('request')).toHaveLength(0)
  })

  it('is checked again at the coordinator (a client is not trusted to have checked)', async () => {
    const g = memoryGrid()
    const w = g.worker('w1')
    const [side, coordSide] = memoryLinkPair<ClientMessage, ToClientMessage>({ role: 'client' }, { role: 'client' })
    const peer = g.coordinator.accept({ id: 'raw', send: m => coordSide.send(m as ToClientMessage), close: () => {} }, { role: 'client' })
    coordSide.onMessages = msgs => g.coordinator.receive(peer, msgs)
    const replies: ToClientMessage[] = []
    side.onMessages = msgs => { replies.push(...msgs) }
    side.send({ type: 'request', id: 7, op: { op: 'upload-module', name: 'bad', source: 'export default (' } })
    await until(() => replies.some(m => m.type === 'reply'), 'the reply')
    expect(replies.find(m => m.type === 'reply')).toEqual({ type: 'reply', id: 7, ok: false, error: { code: 'serialization', message: 'module bad does not parse as an ES module: Unexpected token at line 1, column 17; nothing was uploaded' } })
    expect(w.received.filter(m => m.type === 'module')).toHaveLength(0)
  })
})

describe("a submit's arguments at the coordinator", () => {
  it('tasks it refuses take no room: the bytes kept are cut to the arguments of the tasks it took', async () => {
    const g = memoryGrid()
    const w = g.worker('w1')
    w.auto = false
    // a client speaking the protocol itself: a thousand tasks of a function it never sent, and one good one
    const [side, coordSide] = memoryLinkPair<ClientMessage, ToClientMessage>({ role: 'client' }, { role: 'client' })
    const peer = g.coordinator.accept({ id: 'raw', send: m => coordSide.send(m as ToClientMessage), close: () => {} }, { role: 'client' })
    coordSide.onMessages = msgs => g.coordinator.receive(peer, msgs)
    const replies: ToClientMessage[] = []
    side.onMessages = msgs => { replies.push(...msgs) }
    const source = '(x) => x'
    side.send({ type: 'function', hash: hashString(source), source })
    const args = encodeValue([1])
    const refused = Array.from({ length: 1000 }, (_, i) => ({ key: `never-${i}`, fn: 'unsent', args: new Uint8Array(500).fill(i & 255), deps: [], group: 'never' }))
    side.send({ type: 'submit', tasks: [...refused, { key: 'one-1', fn: hashString(source), args, deps: [], group: 'one' }] })
    await until(() => w.assigned.length === 1, 'the assignment')
    expect(replies.filter(m => m.type === 'key-state' && m.state === 'erred')).toHaveLength(1000)
    const a = w.assigned[0]!
    expect([...a.args]).toEqual([...args])
    // the refused tasks' 500 kB does not size the buffer the one task's bytes are kept in
    expect(a.args.buffer.byteLength).toBe(args.byteLength)
  })
})

describe('no refused message leaves a future pending', () => {
  it("a worker's report the coordinator refuses (a 70,000-character error) fails that run", async () => {
    const g = memoryGrid()
    const w = g.worker('w1')
    w.auto = false
    const c = await g.client()
    const f = c.submit(() => 1)
    await until(() => w.assigned.length === 1, 'the assignment')
    const a = w.assigned[0]!
    w.send({ type: 'erred', key: a.key, attempt: a.attempt, error: { code: 'task-error', message: 'x'.repeat(70_000) } })
    const err = await f.result().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TaskError)
    expect((err as Error).message).toMatch(/^the worker's report on this run was refused by the coordinator \(bad worker message "erred": error\.message: .*\), so the run counts as failed$/)
    expect(g.scheduler.taskStatus(f.key)).toBe('erred')
  })

  it("a client's refused submit errs its futures with the reason", async () => {
    const g = memoryGrid()
    g.worker('w1')
    // a message the coordinator's schema refuses (this client never sends one; an older or broken one might)
    const c = await g.client(m => m.type === 'submit' ? { ...m, tasks: m.tasks.map(t => ({ ...t, group: 'g'.repeat(200) })) } : m)
    const f = c.submit((x: number) => x, 1)
    const err = await f.result().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TabgridError)
    expect((err as TabgridError).code).toBe('bad-message')
    expect((err as Error).message).toMatch(/the coordinator refused the message carrying .*: bad client message "submit": tasks\.0\.group/)
    expect(f.status).toBe('error')
  })
})

describe('futures and data against the in-memory coordinator', () => {
  it('submitting with a cancelled future as an argument throws CancelledError', async () => {
    const g = memoryGrid()
    g.worker('w1')
    const c = await g.client()
    const x = c.submit((n: number) => n, 1)
    expect(await x.result()).toBe(1)
    await c.cancel(x)
    expect(() => c.submit((n: number) => n + 1, x)).toThrow(CancelledError)
    expect(() => c.submit((n: number) => n + 1, x)).toThrow(`future ${x.key} was cancelled: a task cannot take it as an argument`)
    expect(() => c.map((n: number) => n, [x])).toThrow(CancelledError)
  })

  it('scatter resolves once a worker holds the value: the future is finished', async () => {
    const g = memoryGrid()
    const c = await g.client()
    let done = false
    const p = c.scatter([1, 2, 3]).then(f => { done = true; return f })
    await tick()
    expect(done).toBe(false) // no worker yet
    const w = g.worker('w1')
    const f = await p
    expect(f.status).toBe('finished')
    expect(w.values.get(f.key)).toEqual([1, 2, 3])
    await expect(c.scatter('lonely', { timeout: 20 }).then(() => 'resolved')).resolves.toBe('resolved')
  })

  it('scatter rejects with the reason when the value cannot be stored, and after its timeout', async () => {
    const h = track(harness({ storeScatters: false }))
    const p = h.client.scatter({ a: 1 })
    await tick()
    const key = h.of('scatter')[0]!.key
    h.send({ type: 'key-state', key, state: 'lost', error: { code: 'lost-data', message: 'the worker left' } })
    await expect(p).rejects.toBeInstanceOf(LostDataError)
    await expect(h.client.scatter({ b: 2 }, { timeout: 10 })).rejects.toBeInstanceOf(TimeoutError)
    await expect(h.client.scatter(1, { timeout: -1 })).rejects.toThrow('timeout must be a number of milliseconds')
  })

  it('move-data from a holder in its grace period takes another holder as the source', async () => {
    const g = memoryGrid()
    const [w1, w2, w3] = [g.worker('w1'), g.worker('w2'), g.worker('w3')]
    const c = await g.client()
    const s = await c.scatter('precious', { replicas: 3 })
    await until(() => g.scheduler.whoHas(s.key).length === 3, 'three replicas')
    w1.disconnect() // in its grace period: the scheduler still counts it, and picks it as the source
    // w2 drops its copy: one replica to make again
    w2.send({ type: 'released', keys: [s.key] })
    await until(() => g.scheduler.whoHas(s.key).length === 3, 'the replica made again')
    expect(w2.values.get(s.key)).toBe('precious')
    expect((await c.story(s)).some(e => e.note === `replica copy from ${w1.id}`)).toBe(true)
    // the coordinator took the copy from w3, which is connected
    expect(w3.received.some(m => m.type === 'fetch' && m.key === s.key)).toBe(true)
  })
})

describe('a holder that never answers a fetch', () => {
  it("a client's result(): past the deadline the holder is taken to have lost it, and the key is recomputed", async () => {
    const g = memoryGrid({ fetchTimeoutMs: 100, leaseMs: 300 })
    const a = g.worker('a')
    const c = await g.client()
    const x = c.submit(() => 'value')
    await until(() => x.status === 'finished', 'x to finish')
    a.frozen = true
    const b = g.worker('b')
    expect(await x.result({ timeout: 5000 })).toBe('value')
    expect(g.scheduler.whoHas(x.key)).toEqual([b.id])
    const story = await c.story(x)
    expect(story.map(e => `${e.from}>${e.to}`)).toContain('memory>queued')
    expect(story.find(e => e.from === 'memory' && e.to === 'queued')).toMatchObject({ stimulus: expect.stringMatching(/^data-lost/), note: `data lost with ${'a'}` })
  })

  it("a worker's dependency: the task runs once the dependency is recomputed", async () => {
    const g = memoryGrid({ fetchTimeoutMs: 100, leaseMs: 300 })
    const a = g.worker('a')
    const c = await g.client()
    const x = c.submit(() => 20)
    await until(() => x.status === 'finished', 'x to finish')
    a.frozen = true
    const b = g.worker('b')
    const y = c.with({ workers: 'b' }).submit((v: number) => v + 1, x)
    expect(await y.result({ timeout: 5000 })).toBe(21)
    expect(b.values.get(x.key)).toBe(20)
  })
})

describe('datasets against the in-memory coordinator', () => {
  it('outlive the client that published them; any client gets, lists and unpublishes them', async () => {
    const g = memoryGrid()
    g.worker('w1')
    const a = await g.client()
    const f = a.submit((n: number) => ({ model: n }), 7)
    await a.publishDataset('model', f)
    await expect(a.publishDataset('model', f)).rejects.toThrow('a dataset named model already exists: unpublish it first, or publish with { override: true }')
    await a.publishDataset('model', f, { override: true })
    await a.close()
    expect(g.scheduler.taskStatus(f.key)).toBe('memory')
    const b = await g.client()
    expect(await b.listDatasets()).toEqual(['model'])
    const got = await b.getDataset<{ model: number }>('model')
    expect(got.key).toBe(f.key)
    expect(await got.result()).toEqual({ model: 7 })
    expect(got.status).toBe('finished')
    await b.unpublishDataset('model')
    expect(await b.listDatasets()).toEqual([])
    expect(g.scheduler.taskStatus(f.key)).toBe('memory') // b still holds it
    got.release()
    await until(() => g.scheduler.taskStatus(f.key) === undefined, 'the data to be forgotten')
    await expect(b.getDataset('model')).rejects.toThrow('no dataset named model (see listDatasets())')
    await expect(b.unpublishDataset('model')).rejects.toThrow('no dataset named model')
  })

  it('refuses to publish what the client does not hold, and names that are not strings', async () => {
    const g = memoryGrid()
    g.worker('w1')
    const c = await g.client()
    const f = c.submit(() => 1)
    await f.result()
    const key = f.key
    f.release()
    const again = c.submit(() => 1)
    expect(again.key).toBe(key)
    again.release()
    await expect(c.publishDataset('x', again)).rejects.toThrow(/released/)
    await expect(c.publishDataset('', c.submit(() => 2))).rejects.toThrow('a dataset name must be a string of 1 to 128 characters, got ""')
    await expect(c.publishDataset('v', 5 as unknown as Future)).rejects.toThrow(/publishDataset takes a Future, got 5: put a value on the grid first/)
  })
})

describe('fireAndForget against the in-memory coordinator', () => {
  it('runs even after the client goes, then is released', async () => {
    const g = memoryGrid()
    const w = g.worker('w1')
    w.auto = false
    const c = await g.client()
    const f = c.submit((n: number) => n * 2, 21)
    fireAndForget(f)
    await c.close()
    await until(() => w.assigned.length === 1, 'the assignment')
    expect(g.scheduler.taskStatus(f.key)).toBe('processing')
    await w.run(w.assigned[0]!)
    await until(() => g.scheduler.taskStatus(f.key) === undefined, 'the task to be forgotten')
    // its data is freed (a worker's frees wait up to a second for something else going to it)
    await until(() => !w.values.has(f.key), 'its data to be freed')
  })
})

describe('retry against the in-memory coordinator', () => {
  it('runs a failed task again, with the failed task it depends on', async () => {
    const g = memoryGrid()
    g.worker('w1')
    const c = await g.client()
    const flaky = (): number => {
      const g = globalThis as unknown as { tries?: number }
      g.tries = (g.tries ?? 0) + 1
      if (g.tries === 1) throw new Error('flaky')
      return g.tries
    }
    ;(globalThis as unknown as { tries?: number }).tries = 0
    const a = c.with({ pure: false }).submit(flaky)
    const b = c.submit((n: number) => n * 10, a)
    await expect(b.result()).rejects.toThrow(/dependency .* failed: flaky/)
    expect([a.status, b.status]).toEqual(['error', 'error'])
    b.retry()
    expect(b.status).toBe('pending')
    expect(await b.result()).toBe(20)
    expect(a.status).toBe('finished')
    expect(await a.result()).toBe(2)
    b.retry() // finished: nothing to do
    expect(b.status).toBe('finished')
  })
})

describe('gather with errors: skip', () => {
  it('leaves failed futures out of arrays, objects, Maps and Sets; a cancelled one still rejects', async () => {
    const h = track(harness())
    const [ok, bad, lost, ok2] = h.client.map((i: number) => i, [1, 2, 3, 4]) as Future<number>[]
    h.send(
      { type: 'key-state', key: bad!.key, state: 'erred', error: { code: 'task-error', message: 'boom' } },
      { type: 'key-state', key: lost!.key, state: 'lost' },
    )
    h.coordinator.onMessages = msgs => {
      for (const m of msgs) if (m.type === 'gather') for (const k of m.keys) if (k === ok!.key || k === ok2!.key) h.coordinator.send({ type: 'data', key: k, data: encodeValue(k === ok!.key ? 1 : 4) })
    }
    await tick()
    expect(await h.client.gather([ok, bad, lost, ok2], { errors: 'skip' })).toEqual([1, 4])
    expect(await h.client.gather({ ok, bad, n: 5 }, { errors: 'skip' })).toEqual({ ok: 1, n: 5 })
    expect(await h.client.gather(new Map([['a', ok], ['b', bad]]), { errors: 'skip' })).toEqual(new Map([['a', 1]]))
    expect(await h.client.gather(new Set([ok, bad]), { errors: 'skip' })).toEqual(new Set([1]))
    expect(await h.client.gather(bad!, { errors: 'skip' })).toBeUndefined()
    await expect(h.client.gather([ok, bad])).rejects.toThrow('boom')
    await h.client.cancel(ok2!)
    await expect(h.client.gather([ok, ok2], { errors: 'skip' })).rejects.toBeInstanceOf(CancelledError)
    await expect(h.client.gather([ok], { errors: 'ignore' as 'skip' })).rejects.toThrow("errors must be 'raise' or 'skip', got \"ignore\"")
  })
})
