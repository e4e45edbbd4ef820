/**
 * What real tabs do to a grid, in real Chromium: they close mid-run, take data with
 * them, reload, crash or hang a Web Worker, and go quiet in the background.
 */
import { describe, it, expect } from 'vitest'
import { CancelledError, TaskError } from 'tabgrid'
import { browserSuite, until, type BrowserGrid } from './harness.js'

const suite = browserSuite()
let grid: BrowserGrid | undefined

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i)

describe('faults in worker tabs', () => {
  it('closing a tab in the middle of a run loses nothing', async () => {
    grid = await suite.start()
    const tabs = [await grid.openTab(), await grid.openTab(), await grid.openTab()]
    const client = await grid.client()
    const coord = grid.coord.coordinator
    const fs = client.map(async (i: number) => { await new Promise(r => setTimeout(r, 40)); return i * i }, range(90))
    await until(() => coord.metrics.tasksFinished >= 15, 'some tasks to finish')
    const victim = await tabs[0]!.workerId()
    expect(coord.scheduler.workers().find(w => w.id === victim)?.processing ?? 0).toBeGreaterThan(0)
    await tabs[0]!.close()
    expect(await client.gather(fs)).toEqual(range(90).map(i => i * i))
    await until(async () => (await client.workers()).length === 2, 'the closed tab to be declared gone')
  })

  it('data held only by a closed tab is recomputed from its lineage', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 1 })
    const b = await grid.openTab({ workers: 1 })
    const client = await grid.client()
    const coord = grid.coord.coordinator
    const base = client.submit((n: number) => Array.from({ length: n }, (_, i) => i), 1000)
    const x = client.submit((v: number[]) => v.map(k => k * 2), base)
    await x.result()
    const holders = coord.scheduler.whoHas(x.key)
    expect(holders).toHaveLength(1)
    const victim = (await a.workerId()) === holders[0] ? a : b
    await victim.close()
    await until(() => coord.scheduler.workers().length === 1, 'the closed tab to be declared gone')
    const sum = await client.submit((v: number[]) => v.reduce((s, k) => s + k, 0), x).result()
    expect(sum).toBe(999 * 1000)
    expect(coord.scheduler.story(x.key).filter(s => s.to === 'memory').length).toBeGreaterThanOrEqual(2)
  })

  it('a task that closes its Web Worker fails alone; the tab replaces the Web Worker', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 2 })
    const client = await grid.client()
    const ok = client.map(async (i: number) => { await new Promise(r => setTimeout(r, 30)); return i + 1 }, range(20))
    const killer = client.submit(() => { (self as unknown as { close(): void }).close(); return 1 })
    const err = await killer.result().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TaskError)
    expect((err as TaskError).message).toMatch(/closed its Web Worker|died/)
    expect(await client.gather(ok)).toEqual(range(20).map(i => i + 1))
    await until(async () => (await a.stats()).threads === 2, 'the Web Workers to be replaced')
    expect(await client.submit((v: number) => v * 2, 21).result()).toBe(42)
  })

  it('a Web Worker that dies silently after starting is noticed (its Web Lock is released): its task fails over like a crash', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 1 })
    const client = await grid.client()
    // closes its Web Worker a little later with postMessage muted first, so the entry's note never leaves: no message at all
    const killer = client.submit(() => {
      const scope = self as unknown as { postMessage: unknown; close(): void }
      setTimeout(() => { scope.postMessage = () => {}; scope.close() }, 300)
      return 1
    })
    const slow = client.submit(async () => { await new Promise(r => setTimeout(r, 1500)); return 'ok' })
    expect(await killer.result()).toBe(1)
    // nobody wants the killer again (it would be recomputed with the data lost with its thread)
    killer.release()
    expect(await slow.result()).toBe('ok')
    const story = grid.coord.coordinator.scheduler.story(slow.key)
    expect(story.some(e => /crashed its worker/.test(e.note ?? ''))).toBe(true)
    await until(async () => (await a.stats()).threads === 1, 'the Web Worker to be replaced')
  })

  it('a task that hangs past its time limit fails alone; the tab replaces its Web Worker', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 2 })
    const client = await grid.client()
    const hang = client.with({ timeout: 400 }).submit(() => { for (;;) { /* spin */ } })
    const ok = client.map(async (i: number) => { await new Promise(r => setTimeout(r, 20)); return -i }, range(20))
    const err = await hang.result().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TaskError)
    expect((err as TaskError).message).toMatch(/time limit/)
    expect(await client.gather(ok)).toEqual(range(20).map(i => -i))
    await until(async () => (await a.stats()).threads === 2, 'the Web Worker to be replaced')
  })

  it('cancelling a running task stops its Web Worker (a hard cancel)', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 1 })
    const client = await grid.client()
    const id = await a.workerId()
    const spin = client.submit(() => { for (;;) { /* spin */ } })
    await until(async () => (await a.stats()).running === 1, 'the spinning task to start')
    await client.cancel([spin])
    expect(await spin.result().catch((e: unknown) => e)).toBeInstanceOf(CancelledError)
    // with its only Web Worker stopped and replaced, the tab runs tasks again
    const after = client.with({ workers: [id] }).map((i: number) => i * 10, range(5))
    expect(await client.gather(after)).toEqual(range(5).map(i => i * 10))
    expect((await a.stats()).threads).toBe(1)
  })

  it('a reloaded tab keeps its identity and its spilled data: nothing is recomputed', async () => {
    grid = await suite.start({ workerGraceMs: 10_000 })
    // a 1 MB budget: every result of 256 kB spills to IndexedDB soon after it is made
    const a = await grid.openTab({ workers: 1, memory: 1 })
    const client = await grid.client()
    const coord = grid.coord.coordinator
    const id = await a.workerId()
    const xs = client.map((i: number) => new Float64Array(32 * 1024).fill(i), range(8))
    await client.gather(xs.map(x => client.submit((v: Float64Array) => v.length, x)))
    await until(async () => (await a.stats()).spilled > 0, 'values to spill to IndexedDB')
    const before = await a.stats()

    await a.reload()
    const back = await a.waitFor('connected')
    expect(back.id).toBe(id)
    expect(back.resumed).toBe(true)
    // what was spilled is still held by the tab after the reload, and the grid knows
    const size = 32 * 1024 * 8
    await until(async () => (await a.stats()).held >= Math.floor(before.spilled / size), 'the adopted values')
    const sums = await client.gather(xs.map(x => client.submit((v: Float64Array) => v[0]! * v.length, x)))
    expect(sums).toEqual(range(8).map(i => i * 32 * 1024))
    // only values that were in memory (lost with the page) may have been computed again
    const recomputed = xs.filter(x => coord.scheduler.story(x.key).filter(s => s.to === 'processing').length > 1)
    expect(recomputed.length).toBeLessThanOrEqual(Math.ceil(before.memory / size))
    expect(xs.length - recomputed.length).toBeGreaterThanOrEqual(Math.floor(before.spilled / size))
  })

  it('a tab that goes quiet loses its leases: its tasks go elsewhere, and its late results are dropped', async () => {
    grid = await suite.start({ leaseMs: 1_500 })
    const a = await grid.openTab({ workers: 1 })
    const b = await grid.openTab({ workers: 1 })
    const client = await grid.client()
    const coord = grid.coord.coordinator
    const idA = await a.workerId()
    const fs = client.map(async (i: number) => { await new Promise(r => setTimeout(r, 300)); return i }, range(12))
    await until(() => coord.scheduler.workers().find(w => w.id === idA)?.processing, 'tab A to get tasks')
    // A's page stops answering without disconnecting, as a frozen tab does (CDP's freeze has no
    // effect on headless Chromium): its main thread is busy for 3 s, so no heartbeat leaves it
    await a.page.evaluate(() => { setTimeout(() => { const end = Date.now() + 3_000; while (Date.now() < end) { /* not answering */ } }, 0) })
    expect(await client.gather(fs)).toEqual(range(12))
    const expired = fs.filter(f => coord.scheduler.story(f.key).some(e => /lease expired/.test(String(e.note ?? ''))))
    expect(expired.length, 'tasks whose lease on A ran out').toBeGreaterThan(0)
    await until(async () => (await a.stats()).running === 0, 'A to answer again and finish what it had')
    // whatever A sent for its lapsed attempts was dropped: each result came from a later attempt
    const attempt = (note: unknown): number => Number(/attempt (\d+)/.exec(String(note ?? ''))?.[1] ?? NaN)
    for (const f of expired) {
      const story = coord.scheduler.story(f.key)
      const lapsed = story.filter(e => /lease expired/.test(String(e.note ?? ''))).map(e => attempt(e.note))
      const kept = story.filter(e => e.from === 'processing' && e.to === 'memory').map(e => attempt(e.note))
      expect(kept).toHaveLength(1)
      expect(lapsed).not.toContain(kept[0])
      for (const e of story) if (e.from === 'memory' && lapsed.includes(attempt(e.note))) expect(e.note).toMatch(/stale result dropped/)
    }
    expect((await a.status()).state).toBe('connected')
    expect(await client.gather(fs)).toEqual(range(12))
  })

  it('heartbeats from the ticker Web Worker keep the leases of a tab running long tasks', async () => {
    grid = await suite.start({ leaseMs: 1_500 })
    const a = await grid.openTab({ workers: 2 })
    const client = await grid.client()
    const coord = grid.coord.coordinator
    // each task outlives the lease; only heartbeats keep it on this tab
    const fs = client.map(async (i: number) => { await new Promise(r => setTimeout(r, 3_500)); return i }, range(2))
    expect(await client.gather(fs)).toEqual(range(2))
    for (const f of fs) expect(coord.scheduler.story(f.key).some(e => /lease/.test(String(e.note ?? '')))).toBe(false)
    expect((await a.stats()).done).toBe(2)
  })
})
