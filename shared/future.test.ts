import { afterEach, describe, expect, it } from 'vitest'
import { Client } from './client.js'
import { Future, asCompleted, partitionAll, wait } from './future.js'
import { memoryLinkPair, type Link } from './link.js'
import type { ClientMessage, ToClientMessage } from './protocol.js'
import { CancelledError, TaskError, TimeoutError } from './errors.js'
import { encodeValue } from './codec.js'

const tick = (): Promise<void> => new Promise(resolve => setTimeout(resolve, 0))

const clients: Client[] = []
afterEach(async () => { for (const c of clients.splice(0)) await c.close() })

/** A client and the coordinator side of its link (the test plays the coordinator). */
function grid(): { client: Client; coordinator: Link<ToClientMessage, ClientMessage>; finish: (f: Future, value?: unknown) => void; fail: (f: Future, message: string) => void } {
  const [clientSide, coordinator] = memoryLinkPair<ClientMessage, ToClientMessage>({ role: 'client' }, { role: 'client' })
  const values = new Map<string, unknown>()
  coordinator.onMessages = msgs => {
    for (const m of msgs) {
      if (m.type !== 'gather') continue
      for (const key of m.keys) if (values.has(key)) coordinator.send({ type: 'data', key, data: encodeValue(values.get(key)) })
    }
  }
  const client = Client.fromLink(clientSide)
  clients.push(client)
  return {
    client,
    coordinator,
    finish: (f, value) => { values.set(f.key, value); coordinator.send({ type: 'key-state', key: f.key, state: 'memory' }) },
    fail: (f, message) => coordinator.send({ type: 'key-state', key: f.key, state: 'erred', error: { code: 'task-error', message } }),
  }
}

describe('Future', () => {
  it('tracks status, done() and exception(), and is not thenable', async () => {
    const g = grid()
    const [a, b] = g.client.map((x: number) => x, [1, 2]) as [Future<number>, Future<number>]
    expect(a).toBeInstanceOf(Future)
    expect('then' in a).toBe(false)
    expect(await Promise.resolve(a)).toBe(a) // awaiting a Future gives the Future, not its value
    expect([a.status, a.done()]).toEqual(['pending', false])
    g.finish(a, 10)
    g.fail(b, 'nope')
    expect(await a.exception()).toBeUndefined()
    expect(await b.exception()).toBeInstanceOf(TaskError)
    expect([a.status, a.done(), b.status, b.done()]).toEqual(['finished', true, 'error', true])
    expect(await a.result()).toBe(10)
    expect(String(a)).toBe(`<Future ${a.key} finished>`)
    expect(a.client).toBe(g.client)
  })

  it('result() takes a timeout', async () => {
    const g = grid()
    const f = g.client.submit(() => 1)
    await expect(f.result({ timeout: 10 })).rejects.toBeInstanceOf(TimeoutError)
  })
})

describe('asCompleted', () => {
  it('yields futures in the order they finish, whatever their outcome', async () => {
    const g = grid()
    const [a, b, c, d] = g.client.map((x: number) => x, [1, 2, 3, 4]) as Future[]
    const order: string[] = []
    const run = (async () => { for await (const f of asCompleted([a!, b!, c!, d!])) order.push(f.key) })()
    g.finish(c!, 3)
    await tick()
    g.fail(a!, 'a failed')
    await tick()
    await g.client.cancel(d!)
    await tick()
    g.finish(b!, 2)
    await run
    expect(order).toEqual([c!.key, a!.key, d!.key, b!.key])
  })

  it('yields already-done futures first, handles empty input and futures from several clients', async () => {
    const g1 = grid()
    const g2 = grid()
    const x = g1.client.submit(() => 'x')
    const y = g2.client.submit(() => 'y')
    g2.finish(y, 'y')
    await tick()
    const seen: Future[] = []
    const it = asCompleted([x, y])
    const first = await it.next()
    seen.push(first.value as Future)
    g1.finish(x, 'x')
    for await (const f of it) seen.push(f)
    expect(seen).toEqual([y, x])
    const none: Future[] = []
    for await (const f of asCompleted([])) none.push(f)
    expect(none).toEqual([])
    expect(() => asCompleted([1] as unknown as Future[])).toThrow(/item 0 is not a Future/)
  })

  it('does not wait forever for a future released meanwhile', async () => {
    const g = grid()
    const f = g.client.submit(() => 1)
    const it = asCompleted([f])
    const next = it.next()
    f.release()
    expect((await next).value).toBe(f)
    expect(f.status).toBe('cancelled')
    await expect(f.result()).rejects.toThrow(/released/)
    expect((await asCompleted([f]).next()).value).toBe(f)
  })
})

describe('asCompleted, as in Dask', () => {
  it('takes more futures with add() while iterating, and ends when every one added is yielded', async () => {
    const g = grid()
    const [a, b] = g.client.map((x: number) => x, [1, 2]) as Future<number>[]
    const ac = asCompleted([a!])
    expect(ac.count()).toBe(1)
    const seen: string[] = []
    const more = g.client.map((x: number) => x * 10, [3, 4]) as Future<number>[]
    const run = (async () => {
      for await (const f of ac) {
        seen.push(f.key)
        if (f === a) { ac.add(b!); ac.update(more) } // grows while iterating
      }
    })()
    g.finish(a!, 1)
    await tick()
    expect(ac.count()).toBe(3)
    g.finish(more[1]!, 40)
    await tick()
    g.finish(b!, 2)
    await tick()
    expect(ac.hasReady()).toBe(false)
    g.finish(more[0]!, 30)
    await run
    expect(seen).toEqual([a!.key, more[1]!.key, b!.key, more[0]!.key])
    expect(ac.isEmpty()).toBe(true)
    // adding after the end and iterating again goes on
    const c = g.client.submit(() => 5)
    ac.add(c)
    g.finish(c, 5)
    const { value } = await ac.next()
    expect(value).toBe(c)
    expect((await ac.next()).done).toBe(true)
    expect(() => ac.add(5 as unknown as Future<number>)).toThrow('asCompleted: add takes a Future, got 5')
  })

  it('starts empty and takes futures later', async () => {
    const g = grid()
    const ac = asCompleted<number>()
    expect((await ac.next()).done).toBe(true)
    const f = g.client.submit(() => 1)
    ac.add(f)
    const next = ac.next()
    g.finish(f, 1)
    expect((await next).value).toBe(f)
  })

  it('withResults yields [future, value]; a failure throws its error, or is yielded with raiseErrors: false', async () => {
    const g = grid()
    const [a, b] = g.client.map((x: number) => x, [1, 2]) as Future<number>[]
    const pairs: [Future<number>, number][] = []
    const run = (async () => { for await (const pair of asCompleted([a!, b!], { withResults: true })) pairs.push(pair) })()
    g.finish(b!, 20)
    await tick()
    g.finish(a!, 10)
    await run
    expect(pairs).toEqual([[b, 20], [a, 10]])

    const [c, d] = g.client.map((x: number) => x * 3, [1, 2]) as Future<number>[]
    const thrown = (async () => { for await (const pair of asCompleted([c!, d!], { withResults: true })) void pair })()
    g.fail(c!, 'c broke')
    await expect(thrown).rejects.toThrow('c broke')

    const [e, f] = g.client.map((x: number) => x * 5, [1, 2]) as Future<number>[]
    const kept: [Future<number>, number | Error][] = []
    const run2 = (async () => { for await (const pair of asCompleted([e!, f!], { withResults: true, raiseErrors: false })) kept.push(pair) })()
    g.fail(e!, 'e broke')
    await tick()
    g.finish(f!, 10)
    await run2
    expect(kept[0]![0]).toBe(e)
    expect(kept[0]![1]).toBeInstanceOf(TaskError)
    expect(kept[1]).toEqual([f, 10])
    expect(() => asCompleted([], { withResults: 'yes' as unknown as true })).toThrow('withResults must be true or false, got "yes"')
  })

  it('batches() yields whatever finished together', async () => {
    const g = grid()
    const fs = g.client.map((x: number) => x, [1, 2, 3, 4, 5]) as Future<number>[]
    const ac = asCompleted(fs)
    const batches: number[][] = []
    const run = (async () => { for await (const batch of ac.batches()) batches.push(batch.map(f => fs.indexOf(f))) })()
    g.finish(fs[3]!, 3)
    g.finish(fs[0]!, 0) // the same turn as fs[3]
    await tick()
    g.finish(fs[4]!, 4)
    await tick()
    g.finish(fs[1]!, 1)
    g.finish(fs[2]!, 2)
    await run
    expect(batches).toEqual([[3, 0], [4], [1, 2]])
    // with results, batches of pairs
    const [x, y] = g.client.map((v: number) => v * 7, [1, 2]) as Future<number>[]
    const got: [Future<number>, number][][] = []
    const run2 = (async () => { for await (const batch of asCompleted([x!, y!], { withResults: true }).batches()) got.push(batch) })()
    g.finish(x!, 7)
    g.finish(y!, 14)
    await run2
    expect(got.flat()).toEqual([[x, 7], [y, 14]])
  })
})

describe('wait', () => {
  it('waits for all by default', async () => {
    const g = grid()
    const fs = g.client.map((x: number) => x, [1, 2, 3])
    const p = wait(fs)
    fs.forEach((f, i) => g.finish(f, i))
    const { done, notDone } = await p
    expect(done.size).toBe(3)
    expect(notDone.size).toBe(0)
  })

  it('returns at the first completed', async () => {
    const g = grid()
    const [a, b] = g.client.map((x: number) => x, [1, 2]) as [Future, Future]
    const p = wait([a, b], { returnWhen: 'FIRST_COMPLETED' })
    g.fail(b, 'b failed')
    const { done, notDone } = await p
    expect([...done]).toEqual([b])
    expect([...notDone]).toEqual([a])
  })

  it('returns at the first exception, or when all are done', async () => {
    const g = grid()
    const [a, b, c] = g.client.map((x: number) => x, [1, 2, 3]) as [Future, Future, Future]
    const p = wait([a, b, c], { returnWhen: 'FIRST_EXCEPTION' })
    g.finish(a, 1)
    await tick()
    g.fail(c, 'c failed')
    const { done, notDone } = await p
    expect(new Set(done)).toEqual(new Set([a, c]))
    expect([...notDone]).toEqual([b])
  })

  it('returns what is done when the timeout passes', async () => {
    const g = grid()
    const [a, b] = g.client.map((x: number) => x, [1, 2]) as [Future, Future]
    g.finish(a, 1)
    await tick()
    const t0 = performance.now()
    const { done, notDone } = await wait([a, b], { timeout: 30 })
    expect(performance.now() - t0).toBeGreaterThanOrEqual(25)
    expect([...done]).toEqual([a])
    expect([...notDone]).toEqual([b])
    expect((await wait([b], { timeout: 0 })).notDone.size).toBe(1)
  })

  it('validates its options and inputs', async () => {
    await expect(wait([], { returnWhen: 'ANY' as 'ALL_COMPLETED' })).rejects.toThrow(/returnWhen must be 'ALL_COMPLETED', 'FIRST_COMPLETED' or 'FIRST_EXCEPTION', got "ANY"/)
    await expect(wait([], { timeout: -1 })).rejects.toThrow(/timeout must be a number of milliseconds/)
    await expect(wait(5 as unknown as Future[])).rejects.toThrow(/takes a Future or an iterable of Futures/)
    expect(await wait([])).toEqual({ done: new Set(), notDone: new Set() })
  })

  it('resolves when pending futures are cancelled by closing the client', async () => {
    const g = grid()
    const f = g.client.submit(() => 1)
    const p = wait([f])
    await g.client.close()
    const { done } = await p
    expect([...done]).toEqual([f])
    expect(await f.exception()).toBeInstanceOf(CancelledError)
  })
})

describe('partitionAll', () => {
  it('splits into chunks of n, the last shorter', () => {
    expect([...partitionAll(2, [1, 2, 3, 4, 5])]).toEqual([[1, 2], [3, 4], [5]])
    expect([...partitionAll(3, [1, 2, 3])]).toEqual([[1, 2, 3]])
    expect([...partitionAll(10, [1, 2])]).toEqual([[1, 2]])
    expect([...partitionAll(1, 'ab')]).toEqual([['a'], ['b']])
    expect([...partitionAll(2, [])]).toEqual([])
    expect([...partitionAll(2, new Set([1, 2, 3]))]).toEqual([[1, 2], [3]])
    function* gen(): Generator<number> { yield 1; yield 2; yield 3; yield 4 }
    expect([...partitionAll(2, gen())]).toEqual([[1, 2], [3, 4]])
  })

  it('is lazy over infinite iterables', () => {
    function* naturals(): Generator<number> { for (let i = 0; ; i++) yield i }
    const it = partitionAll(3, naturals())
    expect(it.next().value).toEqual([0, 1, 2])
    expect(it.next().value).toEqual([3, 4, 5])
  })

  it('checks n and the iterable where it is called', () => {
    expect(() => partitionAll(0, [1])).toThrow('partitionAll: n must be a whole number ≥ 1, got 0')
    expect(() => partitionAll(1.5, [1])).toThrow(/got 1\.5/)
    expect(() => partitionAll(NaN, [1])).toThrow(/got NaN/)
    expect(() => partitionAll('2' as unknown as number, [1])).toThrow(/got "2"/)
    expect(() => partitionAll(2, 5 as unknown as number[])).toThrow(/expected an iterable/)
  })
})
