/**
 * Integration: what the worker runtime itself guarantees, on real threads — leases it
 * renews on its own (so `Client.local` runs tasks longer than a lease), and priorities
 * that hold for tasks already sent to a worker.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { Client, startLocalCluster } from 'tabgrid'
import { startGrid, until, type Grid } from './grid.js'

let client: Client | undefined
let grid: Grid | undefined

afterEach(async () => {
  await client?.close()
  client = undefined
  await grid?.close()
  grid = undefined
})

const sleep = async (ms: number): Promise<number> => { await new Promise(r => setTimeout(r, ms)); return ms }

describe('client.story(key) on a real grid', () => {
  it("merges the worker's own transitions (received, waiting, ready, executing, memory) into the scheduler's, in time order", async () => {
    grid = await startGrid({ workers: 1 })
    client = await Client.connect(grid.url, { token: grid.token })
    const before = Date.now()
    const x = client.submit(async (ms: number) => { await new Promise(r => setTimeout(r, ms)); return ms }, 200)
    const y = client.submit((v: number) => v + 1, x)
    expect(await y.result()).toBe(201)
    const [worker] = await client.workers()
    const story = await client.story(y)
    const mine = story.filter(e => e.source === 'worker')
    const sched = story.filter(e => e.source === undefined)
    // what the worker did with y: received (new), then on to memory, each with its time, thread and attempt
    expect(mine.map(e => e.to)).toContain('executing')
    expect(mine[0]!.from).toBe('new')
    expect(mine.at(-1)!.to).toBe('memory')
    for (const e of mine) {
      expect(e).toMatchObject({ key: y.key, worker: worker!.id, attempt: expect.any(Number) as number })
      expect(e.now).toBeGreaterThanOrEqual(before - 1_000)
      expect(e.now).toBeLessThanOrEqual(Date.now() + 1_000)
    }
    expect(mine.find(e => e.to === 'executing')!.thread).toBe(0)
    // the scheduler's part is all there, and the whole is in time order
    expect(sched.map(e => e.to)).toEqual((await grid.coord.coordinator.scheduler.story(y.key)).map(e => e.to))
    expect(story.map(e => e.now)).toEqual([...story.map(e => e.now)].sort((a, b) => a - b))
    // a key nobody knows has no story, and nothing is asked
    expect(await client.story('no-such-key')).toEqual([])
  })
})

describe('leases in Client.local', () => {
  it('a task four times longer than the lease succeeds: the runtime renews the leases itself', async () => {
    const cluster = await startLocalCluster({ workers: 1, leaseMs: 1_000, heartbeatMs: 200 })
    // fromLink is internal (left out of the package's typings)
    client = (Client as unknown as { fromLink(link: unknown, onClose: () => Promise<void>): Client }).fromLink(cluster.link, cluster.shutdown)
    // a thread busy with one synchronous task for 4 s: the worker's main side still speaks
    const f = client.with({ pure: false }).submit((ms: number) => { const end = Date.now() + ms; while (Date.now() < end) { /* busy */ } return 'done' }, 4_000)
    expect(await f.result()).toBe('done')
    const story = await client.story(f.key)
    expect(story.some(e => /lease/.test(`${e.stimulus} ${e.note ?? ''}`))).toBe(false)
    expect(story.filter(e => e.to === 'processing')).toHaveLength(1)
  })

  it('with the default 15 s lease, a 21 s task succeeds on its first attempt', { timeout: 60_000 }, async () => {
    client = await Client.local({ workers: 1 })
    const f = client.with({ pure: false }).submit(sleep, 21_000)
    expect(await f.result()).toBe(21_000)
    const story = await client.story(f.key)
    expect(story.filter(e => e.to === 'processing')).toHaveLength(1)
    expect(story.some(e => /lease/.test(`${e.stimulus} ${e.note ?? ''}`))).toBe(false)
  })
})

describe('priorities on a saturated worker', () => {
  it('a high-priority task submitted after low-priority ones already sent to the worker runs before them', async () => {
    grid = await startGrid({ workers: 1 })
    client = await Client.connect(grid.url, { token: grid.token })
    const c = client.with({ pure: false })
    // warm up on tiny tasks: the scheduler then keeps many tasks ahead on the worker
    await client.gather(c.map((x: number) => x + 1, Array.from({ length: 50 }, (_, i) => i)))
    const stamp = async (ms: number): Promise<number> => { await new Promise(r => setTimeout(r, ms)); return Date.now() }
    const lows = c.map(stamp, Array.from({ length: 10 }, () => 100))
    const scheduler = grid.coord.coordinator.scheduler
    // all ten are on the worker: one runs, nine wait there
    await until(() => (scheduler.workers()[0]?.processing ?? 0) === 10, 'the low-priority tasks on the worker')
    const high = c.with({ priority: 10 }).submit(stamp, 100)
    await until(() => scheduler.workers()[0]!.processing === 11, 'the high-priority task on the worker too')
    const [highEnd, lowEnds] = await Promise.all([high.result(), client.gather(lows)])
    // only the low-priority task running when the high one arrived ended before it
    expect(lowEnds.filter(t => t < highEnd)).toHaveLength(1)
  })
})

describe('dependents sent ahead, on a real grid', () => {
  it('a chain runs on the worker holding its head, each task sent before its input is done', async () => {
    grid = await startGrid({ workers: 2, workerArgs: ['--nprocs', '1', '--nthreads', '1'] })
    client = await Client.connect(grid.url, { token: grid.token })
    const c = client.with({ pure: false })
    let f = c.submit((x: number) => x + 1, 0)
    const keys = [f.key]
    for (let i = 0; i < 99; i++) { f = c.submit((x: number) => x + 1, f); keys.push(f.key) }
    expect(await f.result()).toBe(100)
    const stories = await Promise.all(keys.slice(1).map(k => client!.story(k)))
    const ahead = stories.filter(s => s.some(e => /sent ahead/.test(String(e.note ?? '')))).length
    // most hops never waited at the coordinator (the first few may, before the pipeline fills)
    expect(ahead).toBeGreaterThan(90)
  })

  it('a worker killed in the middle of a chain sent ahead to it: the rest is rescheduled, the answer is right', async () => {
    grid = await startGrid({ workers: 2, workerArgs: ['--nprocs', '1', '--nthreads', '1'] })
    client = await Client.connect(grid.url, { token: grid.token })
    const c = client.with({ pure: false })
    const slow = (x: number): number => { const end = Date.now() + 20; while (Date.now() < end) { /* busy */ } return x + 1 }
    let f = c.submit(slow, 0)
    for (let i = 0; i < 199; i++) f = c.submit(slow, f)
    // long tasks keep the pipeline short (a running task and one sent ahead); once a third
    // of the chain is done, kill the worker that holds the rest of it
    await until(async () => (await client!.workers()).some(w => (w.done as number) > 60 && (w.processing as number) >= 2), 'the chain to be under way', 30_000)
    const busy = (await client.workers()).find(w => (w.processing as number) >= 2)!
    grid.workers.find(w => w.name === busy.name)!.kill('SIGKILL')
    expect(await f.result()).toBe(200)
  }, 90_000)
})
