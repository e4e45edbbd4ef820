/**
 * The volunteer page in real Chromium against a real coordinator: tabs join as browser
 * workers, the seed's examples compute inside them, the volunteer can pause, resume,
 * resize and leave, and the page says what it is doing.
 */
import { describe, it, expect } from 'vitest'
import { partitionAll, startCoordinator } from 'tabgrid'
import { browserSuite, screenshot, until, untilText, nameOf, type BrowserGrid } from './harness.js'

const suite = browserSuite()
let grid: BrowserGrid | undefined

describe('worker tabs', () => {
  it('are watched: an error on the page or in a Web Worker would fail the test', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 1 })
    const client = await grid.client()
    await a.page.evaluate(() => { setTimeout(() => { throw new Error('deliberate page error') }, 0) })
    await a.page.evaluate(() => console.error('deliberate console error'))
    expect(await client.submit(() => { console.error('deliberate error in a task'); return 1 }).result()).toBe(1)
    const seen = await until(() => grid!.errors().length >= 3 && grid!.errors().join('\n'), 'the three errors')
    expect(seen).toMatch(/uncaught: .*deliberate page error/)
    expect(seen).toMatch(/console.error: deliberate console error/)
    expect(seen).toMatch(/in a Web Worker: deliberate error in a task/)
    grid.clearErrors()
  })

  it('join, and client.workers() lists them as browser workers with their slots', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 2 })
    const b = await grid.openTab({ workers: 1 })
    const client = await grid.client()
    const ws = await client.workers()
    expect(ws).toHaveLength(2)
    const byName = new Map(ws.map(w => [w.name, w]))
    expect(byName.get(a.name)).toMatchObject({ kind: 'browser', slots: 2 })
    expect(byName.get(b.name)).toMatchObject({ kind: 'browser', slots: 1 })
    expect(await a.workerId()).toBe(byName.get(a.name)!.id)
    expect((await a.stats()).threads).toBe(2)
    await untilText(a.page, '#status-text', /Connected/)
  })

  it("compute the seed's examples inside the browser", async () => {
    grid = await suite.start()
    await grid.openTab({ workers: 2 })
    await grid.openTab({ workers: 2 })
    const client = await grid.client()
    const browsers = new Set((await client.workers()).map(w => w.id))

    // shape: pull the array vs send the function to it
    const x = client.submit((n: number, m: number) => {
      const data = new Float64Array(n * m)
      for (let i = 0; i < data.length; i++) data[i] = i % 7
      return { shape: [n, m], data }
    }, 500, 400)
    expect(await client.submit((a: { shape: number[] }) => a.shape, x).result()).toEqual([500, 400])
    const whole = await x.result()
    expect(whole.data).toBeInstanceOf(Float64Array)
    expect(whole.data.length).toBe(200_000)
    expect(whole.data[13]).toBe(6)
    const holders = grid.coord.coordinator.scheduler.whoHas(x.key)
    expect(holders.length).toBeGreaterThan(0)
    for (const h of holders) expect(browsers.has(h)).toBe(true)

    // map, one task per item vs chunks of partitionAll
    const seq = Array.from({ length: 600 }, (_, i) => i)
    const one = await client.gather(client.map((v: number) => v * v, seq))
    expect(one).toEqual(seq.map(v => v * v))
    const chunks = client.map((c: number[]) => c.map(v => v * v), [...partitionAll(75, seq)])
    expect(chunks).toHaveLength(8)
    expect((await client.gather(chunks)).flat()).toEqual(seq.map(v => v * v))

    // a dependent chain: each task takes the previous one's future
    let f = client.submit((v: number) => v + 1, 0)
    for (let i = 1; i < 60; i++) f = client.submit((v: number) => v + 1, f)
    expect(await f.result()).toBe(60)

    // async tasks and typed values round-trip through the Web Workers
    const y = client.submit(async (m: Map<string, bigint>) => { await new Promise(r => setTimeout(r, 5)); return new Set([...m.values()].map(v => v * 2n)) }, new Map([['a', 2n ** 70n]]))
    expect(await y.result()).toEqual(new Set([2n ** 71n]))

    // an uploaded module is imported from a Blob URL inside the Web Worker
    await client.uploadModule('stats', 'export const mean = xs => xs.reduce((a, b) => a + b, 0) / xs.length')
    const mean = client.submit(async (xs: number[]) => (await importModule('stats')).mean(xs), [1, 2, 3, 6])
    expect(await mean.result()).toBe(3)
  })

  it('big values travel byte for byte: tab to client, and tab to tab through the coordinator', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 1 })
    const b = await grid.openTab({ workers: 1 })
    const client = await grid.client()
    const [idA, idB] = [await a.workerId(), await b.workerId()]
    // a pattern that tells every byte apart, built the same way in the tab and here
    const pattern = (n: number, seed: number): Uint8Array => {
      const out = new Uint8Array(n)
      let x = seed >>> 0
      for (let i = 0; i < n; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; out[i] = x >>> 24 }
      return out
    }
    const checksum = (v: Uint8Array): number => {
      let h = 0
      for (let i = 0; i < v.length; i++) h = (Math.imul(h, 31) + v[i]!) >>> 0
      return h
    }
    const n = 12 * (1 << 20) + 5
    const x = client.with({ workers: [idA], pure: false }).submit(pattern, n, 4)
    const want = pattern(n, 4)
    const got = await x.result() as Uint8Array
    expect(got.byteLength).toBe(n)
    expect(Buffer.compare(Buffer.from(got.buffer, got.byteOffset, got.byteLength), Buffer.from(want.buffer))).toBe(0)
    expect(grid.coord.coordinator.scheduler.whoHas(x.key)).toEqual([idA])
    // tab B fetches it through the coordinator (binary attachments arrive in a page as ArrayBuffers)
    const seen = await client.with({ workers: [idB], pure: false }).submit((v: Uint8Array) => {
      let h = 0
      for (let i = 0; i < v.length; i++) h = (Math.imul(h, 31) + v[i]!) >>> 0
      return [v.length, h]
    }, x).result()
    expect(seen).toEqual([n, checksum(want)])
  })

  it('pause stops new tasks reaching a tab; resume brings them back', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 1 })
    const b = await grid.openTab({ workers: 1 })
    const client = await grid.client()
    const idA = await a.workerId()
    const coord = grid.coord.coordinator

    await a.page.getByRole('button', { name: 'Pause' }).click()
    await until(async () => (await client.workers()).find(w => w.id === idA)?.accepting === false, 'the coordinator to see tab A paused')
    await untilText(a.page, '#status-text', /Paused/)
    await screenshot(a.page, 'worker-paused')
    const doneA = (await a.stats()).done
    const fs = client.with({ pure: false }).map(async (i: number) => { await new Promise(r => setTimeout(r, 10)); return i }, Array.from({ length: 30 }, (_, i) => i))
    expect(await client.gather(fs)).toEqual(Array.from({ length: 30 }, (_, i) => i))
    expect((await a.stats()).done).toBe(doneA)
    for (const f of fs) expect(coord.scheduler.whoHas(f.key)).not.toContain(idA)

    // resume A and pause B: now only A can take them
    await a.page.getByRole('button', { name: 'Resume' }).click()
    await b.page.getByRole('button', { name: 'Pause' }).click()
    const idB = await b.workerId()
    await until(async () => {
      const ws = await client.workers()
      return ws.find(w => w.id === idA)?.accepting === true && ws.find(w => w.id === idB)?.accepting === false
    }, 'A resumed and B paused')
    const gs = client.with({ pure: false }).map((i: number) => -i, Array.from({ length: 20 }, (_, i) => i))
    expect(await client.gather(gs)).toEqual(Array.from({ length: 20 }, (_, i) => -i))
    for (const g of gs) expect(coord.scheduler.whoHas(g.key)).toEqual([idA])
    expect((await a.stats()).done).toBeGreaterThanOrEqual(doneA + 20)
  })

  it('leave hands the data off, the tab says it left, and rejoin makes it a worker again', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 1 })
    const b = await grid.openTab({ workers: 1 })
    const client = await grid.client()
    const idA = await a.workerId()
    const coord = grid.coord.coordinator
    const xs = client.with({ workers: [idA] }).map((i: number) => new Float64Array(1000).fill(i), [1, 2, 3, 4])
    await client.gather(xs.map(x => client.submit((v: Float64Array) => v.length, x)))
    for (const x of xs) expect(coord.scheduler.whoHas(x.key)).toContain(idA)

    const spillDbs = (): Promise<unknown[]> => a.page.evaluate(async () => (await indexedDB.databases()).map(d => d.name).filter(n => n?.startsWith('tabgrid-')))
    expect(await spillDbs()).toHaveLength(1)
    await a.page.getByRole('button', { name: 'Leave the grid' }).click()
    await a.waitFor('left')
    await untilText(a.page, '#headline', /You left the grid/)
    await until(() => a.page.getByRole('button', { name: 'Rejoin' }).isVisible(), 'the Rejoin button')
    await screenshot(a.page, 'worker-left')
    await until(async () => !(await client.workers()).some(w => w.id === idA), 'the coordinator to let A go')

    // the values moved to B: nothing was recomputed
    const idB = await b.workerId()
    for (const x of xs) expect(coord.scheduler.whoHas(x.key)).toEqual([idB])
    expect(await client.gather(client.map((v: Float64Array) => v[0]! * v.length, xs))).toEqual([1000, 2000, 3000, 4000])
    for (const x of xs) expect(coord.scheduler.story(x.key).filter(s => s.to === 'processing')).toHaveLength(1)
    expect((await a.stats()).threads).toBe(0)
    // its spill databases are gone with it
    expect(await spillDbs()).toEqual([])

    await a.page.getByRole('button', { name: 'Rejoin' }).click()
    const again = await a.waitFor('connected')
    expect(again.id).not.toBe(idA)
    expect(await nameOf(client, again.id!)).toBe(a.name)
  })

  it('the pool grows and shrinks live, and the coordinator sees the new slots', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 1 })
    const client = await grid.client()
    const id = await a.workerId()
    const slots = async (): Promise<unknown> => (await client.workers()).find(w => w.id === id)?.slots
    await a.page.getByRole('button', { name: 'One Web Worker more' }).click()
    await until(async () => await slots() === 2, 'slots 2')
    await until(async () => (await a.stats()).threads === 2, 'two Web Workers')
    // kept in the URL, so a reload keeps it
    expect(await a.page.evaluate(() => new URLSearchParams(location.search).get('workers'))).toBe('2')
    await a.page.evaluate(() => window.tabgrid.setPool(3))
    await until(async () => await slots() === 3, 'slots 3')
    const out = await client.gather(client.with({ pure: false }).map(async (i: number) => { await new Promise(r => setTimeout(r, 20)); return i * 3 }, Array.from({ length: 30 }, (_, i) => i)))
    expect(out).toEqual(Array.from({ length: 30 }, (_, i) => i * 3))
    await a.page.getByRole('button', { name: 'One Web Worker fewer' }).click()
    await until(async () => await slots() === 2, 'slots 2 again')
    await until(async () => (await a.stats()).threads === 2, 'two Web Workers again')
    expect(await client.submit((v: number) => v + 1, 41).result()).toBe(42)
  })

  it('says when the grid shuts down, and rejoins when it is back', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 1 })
    await a.workerId()
    const port = grid.coord.port
    await grid.coord.close()
    await a.waitFor('left')
    await untilText(a.page, '#headline', /shut down/)
    const again = await startCoordinator({ port, validate: true })
    try {
      await a.page.getByRole('button', { name: 'Rejoin' }).click()
      await a.waitFor('connected')
      expect(again.coordinator.workerSummaries().map(w => w.name)).toEqual([a.name])
    } finally {
      await a.context.close()
      await again.close()
    }
  })

  it('joins with the worker token from its URL, and says so plainly when it has the wrong one', async () => {
    grid = await suite.start({ workerToken: 's3cret' })
    const good = await grid.openTab({ workers: 1, query: { token: 's3cret' } })
    expect((await good.status()).state).toBe('connected')
    const bad = await grid.openTab({ workers: 1, query: { token: 'guess' }, join: false })
    const st = await bad.waitFor('failed')
    expect(st.error).toMatch(/token/i)
    await untilText(bad.page, '#headline', /couldn’t join/)
    expect(await bad.page.getByRole('button', { name: 'Try again' }).isVisible()).toBe(true)
    await screenshot(bad.page, 'worker-refused')
    expect(grid.coord.coordinator.scheduler.workers()).toHaveLength(1)
  })

  it('says plainly what it is doing (screenshot)', async () => {
    grid = await suite.start()
    const a = await grid.openTab({ workers: 2 })
    const client = await grid.client()
    const fs = client.with({ pure: false }).map(async (i: number) => {
      let s = 0
      for (let k = 0; k < 2e6; k++) s += Math.sqrt(k)
      await new Promise(r => setTimeout(r, 30))
      return new Float64Array(2000).fill(i + s * 0)
    }, Array.from({ length: 40 }, (_, i) => i))
    await client.gather(fs.slice(0, 20))
    await untilText(a.page, '#done', /^[1-9]/)
    await untilText(a.page, '#data', /\d (kB|MB)$/)
    await screenshot(a.page, 'worker-connected')
    await client.gather(fs)
    const stats = await a.stats()
    expect(stats.done).toBe(40)
    expect(stats.held).toBe(40)
    expect(stats.busyMs).toBeGreaterThan(0)
    await a.page.setViewportSize({ width: 390, height: 844 })
    await screenshot(a.page, 'worker-narrow')
  })
})

declare function importModule(name: string): Promise<{ mean(xs: number[]): number }>
