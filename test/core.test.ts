/**
 * Integration: a real coordinator at port 0, real `tabgrid worker` processes, a real
 * client over socket.io — the seed's examples end to end.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { Client, partitionAll, asCompleted, wait, TaskError, LostDataError, CancelledError, SerializationError } from 'tabgrid'
import { startGrid, until, type Grid } from './grid.js'

let grid: Grid
let client: Client

beforeAll(async () => {
  grid = await startGrid({ workers: 2 })
  client = await Client.connect(grid.url, { token: grid.token })
})
afterAll(async () => {
  await client?.close()
  await grid?.close()
})

describe('the seed examples on a real grid', () => {
  it('lists the Node workers', async () => {
    const ws = await client.workers()
    expect(ws).toHaveLength(2)
    for (const w of ws) {
      expect(w.kind).toBe('node')
      expect(w.slots).toBe(1)
      expect(typeof w.id).toBe('string')
    }
    expect(ws.map(w => w.name).sort()).toEqual(grid.workers.map(w => w.name).sort())
  })

  it('shape: sends the function to the data instead of pulling the data', async () => {
    const x = client.submit((n: number, m: number) => {
      const a = new Float64Array(n * m)
      for (let i = 0; i < a.length; i++) a[i] = i
      return { shape: [n, m], data: a }
    }, 500, 400)
    const shape = await client.submit((a: { shape: number[] }) => a.shape, x).result()
    expect(shape).toEqual([500, 400])
    // the fast path ran where x lives: only the few bytes of the answer moved
    const relayedBefore = grid.coord.coordinator.metrics.bytesRelayed
    expect(await client.submit((a: { data: Float64Array }) => a.data.length, x).result()).toBe(200_000)
    expect(grid.coord.coordinator.metrics.bytesRelayed - relayedBefore).toBeLessThan(100)
    // the slow path pulls the whole value, with its types
    const whole = await x.result()
    expect(whole.data).toBeInstanceOf(Float64Array)
    expect(whole.data.length).toBe(200_000)
    expect(whole.data[199_999]).toBe(199_999)
  })

  it('map + gather, and map over several iterables zips them', async () => {
    const fs = client.map((i: number) => i + 1, Array.from({ length: 1000 }, (_, i) => i))
    const out = await client.gather(fs)
    expect(out).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1))
    const sums = await client.gather(client.map((a: number, b: number) => a + b, [1, 2, 3], [10, 20, 30, 40]))
    expect(sums).toEqual([11, 22, 33])
  })

  it('map over partitionAll chunks (larger tasks)', async () => {
    const seq = Array.from({ length: 20_000 }, (_, i) => i)
    const chunks = client.map((c: number[]) => c.map(x => x + 1), [...partitionAll(5_000, seq)])
    expect(chunks).toHaveLength(4)
    const out = (await client.gather(chunks)).flat()
    expect(out).toHaveLength(20_000)
    expect(out[19_999]).toBe(20_000)
  })

  it('gather keeps the nesting of its input', async () => {
    const a = client.submit(() => 1)
    const b = client.submit(() => 'two')
    const out = await client.gather({ a, list: [b, 3], m: new Map([['k', a]]) })
    expect(out).toEqual({ a: 1, list: ['two', 3], m: new Map([['k', 1]]) })
  })

  it('futures nested in arguments become their values on the worker; async tasks work', async () => {
    const a = client.submit(() => [1, 2, 3])
    const b = client.submit(() => new Map([['x', 10]]))
    const c = client.submit(async (o: { xs: number[]; m: Map<string, number> }) => {
      await new Promise(r => setTimeout(r, 5))
      return o.xs.reduce((s, v) => s + v, 0) + o.m.get('x')!
    }, { xs: a, m: b })
    expect(await c.result()).toBe(16)
  })

  it('a dependent chain', async () => {
    let f = client.submit((x: number) => x + 1, 0)
    for (let i = 0; i < 50; i++) f = client.submit((x: number) => x + 1, f)
    expect(await f.result()).toBe(51)
  })

  it('values round-trip with their types through the grid', async () => {
    const v = {
      n: -0, big: 2n ** 70n, d: new Date(5), u: undefined, s: new Set([1, 'a']), m: new Map([[1, { z: null }]]),
      ab: new Uint8Array([1, 2, 3]).buffer, f32: new Float32Array([1.5]), i64: new BigInt64Array([-5n]),
    }
    const back = await client.submit((x: unknown) => x, v).result()
    expect(back).toEqual(v)
    expect(Object.is((back as typeof v).n, -0)).toBe(true)
    expect('u' in (back as object)).toBe(true)
  })

  it('scatter puts one value on the grid; tasks use it in place', async () => {
    const big = new Float64Array(300_000).fill(2)
    const d = await client.scatter(big)
    expect(await client.submit((a: Float64Array) => a.reduce((s, x) => s + x, 0), d).result()).toBe(600_000)
    const back = await d.result()
    expect(back).toBeInstanceOf(Float64Array)
    expect((back as Float64Array).length).toBe(300_000)
  })

  it('asCompleted yields futures as they finish; wait FIRST_COMPLETED', async () => {
    const slow = client.submit(async (ms: number) => { await new Promise(r => setTimeout(r, ms)); return ms }, 300)
    const fast = client.submit(async (ms: number) => { await new Promise(r => setTimeout(r, ms)); return ms }, 1)
    const first = await wait([slow, fast], { returnWhen: 'FIRST_COMPLETED' })
    expect(first.done.has(fast)).toBe(true)
    const order: number[] = []
    for await (const f of asCompleted([slow, fast])) order.push(await f.result() as number)
    expect(order.sort((a, b) => a - b)).toEqual([1, 300])
  })

  it('uploadModule: tasks import it', async () => {
    await client.uploadModule('stats', 'export const mean = xs => xs.reduce((a, b) => a + b, 0) / xs.length')
    const m = await client.submit(async (xs: number[]) => {
      const stats = await importModule('stats') as { mean: (xs: number[]) => number }
      return stats.mean(xs)
    }, [1, 2, 3, 6]).result()
    expect(m).toBe(3)
  })

  it('a task that throws fails its future and its dependents with the remote message and stack', async () => {
    const bad = client.submit(function explode(x: number) { if (x > 0) throw new RangeError(`too big: ${x}`); return x }, 5)
    const dep = client.submit((x: number) => x + 1, bad)
    const err = await bad.result().catch(e => e)
    expect(err).toBeInstanceOf(TaskError)
    expect(err.message).toContain('too big: 5')
    expect(err.remoteName).toBe('RangeError')
    expect(err.remoteStack).toContain('explode')
    const derr = await dep.result().catch(e => e)
    expect(derr).toBeInstanceOf(TaskError)
    expect(derr.message).toContain('too big: 5')
  })

  it('retries re-run a failing task', async () => {
    const f = client.with({ retries: 3, pure: false }).submit(() => {
      const g = globalThis as { __flaky?: number }
      g.__flaky = (g.__flaky ?? 0) + 1
      if (g.__flaky % 2 === 1) throw new Error('flaky')
      return 'ok'
    })
    expect(await f.result()).toBe('ok')
  })

  it('functions that cannot travel are refused at submit time', () => {
    const y = 3
    expect(() => client.submit(Math.random)).toThrow(SerializationError)
    expect(() => client.submit(({ f(x: number) { return x } }).f, 1)).toThrow(/arrow function/)
    expect(() => client.submit((x: number) => x + y, 1)).toThrow(/y/)
    expect(() => client.submit((x: unknown) => x, () => 1)).toThrow(SerializationError)
  })

  it('a free variable the static check cannot see fails on the worker naming it', async () => {
    // the name is inside a string, so only the worker can find out
    const f = client.submit((x: number) => x + (new Function('return notDefinedAnywhere')() as number), 1)
    const err = await f.result().catch(e => e)
    expect(err).toBeInstanceOf(TaskError)
    expect(err.message).toContain('notDefinedAnywhere')
    // a standard global (allowed at submit time) that a Node worker does not have
    const g = client.submit(() => indexedDB.open('x'))
    const err2 = await g.result().catch(e => e)
    expect(err2).toBeInstanceOf(TaskError)
    expect(err2.remoteName).toBe('FreeVariableError')
    expect(err2.message).toBe(
      'task function uses "indexedDB", which is not defined on the worker: functions travel as source text, ' +
        'so pass indexedDB as an argument or define it inside the function',
    )
  })

  it('the submit-time check reads regex literals as regex literals, and refuses what it finds', async () => {
    expect(await client.submit((s: string) => { if (s) /a+b/.test(s); return s }, 'ab').result()).toBe('ab')
    const limit = 3
    expect(() => client.submit((xs: number[]) => xs.filter(x => x < limit), [1])).toThrow(
      /^task function uses `limit`, which would be undefined on the worker/,
    )
  })

  it('cancel rejects with CancelledError', async () => {
    const f = client.with({ pure: false }).submit(async () => { await new Promise(r => setTimeout(r, 2000)); return 1 })
    await client.cancel([f])
    await expect(f.result()).rejects.toBeInstanceOf(CancelledError)
  })

  it('release lets the grid forget a result', async () => {
    const f = client.with({ pure: false }).submit(() => 42)
    expect(await f.result()).toBe(42)
    const key = f.key
    f.release()
    await until(() => grid.coord.coordinator.scheduler.taskStatus(key) === undefined, 'the key to be forgotten')
  })

  it('redundancy runs a task on two volunteers and accepts agreeing results', async () => {
    // every worker here comes from 127.0.0.1, one volunteer: a second address makes a second
    await grid.addWorker(['--nprocs', '1', '--local-address', '127.0.0.2'], 'second-volunteer')
    const f = client.with({ redundancy: 2, pure: false }).submit((x: number) => x * 2, 21)
    expect(await f.result()).toBe(42)
    const story = await client.story(f.key) as { worker?: string }[]
    const ran = new Set(story.filter(s => s.worker).map(s => s.worker))
    expect(ran.size).toBeGreaterThanOrEqual(2)
  })

  it('scattered data held only by a worker that dies fails with LostDataError', async () => {
    await grid.addWorker(['--nprocs', '1'], 'extra')
    const d = await client.scatter([1, 2, 3, Math.random()])
    const holders = await until(() => { const h = grid.coord.coordinator.scheduler.whoHas(d.key); return h.length ? h : undefined }, 'the scatter to land')
    const name = (await client.workers()).find(w => w.id === holders![0])!.name
    const victim = grid.workers.find(w => w.name === name)!
    victim.kill('SIGKILL')
    await victim.exited
    const err = await client.submit((xs: number[]) => xs.length, d).result().catch(e => e)
    expect(err).toBeInstanceOf(LostDataError)
    expect(err.message).toMatch(/scatter|held only/)
  })
})

declare global { function importModule(name: string): Promise<unknown> }
