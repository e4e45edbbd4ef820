/**
 * A worker's memory budget: past it, results spill to disk and come back on demand;
 * nothing is lost or recomputed.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { Client } from 'tabgrid'
import { startGrid, until, type Grid } from './grid.js'

let grid: Grid | undefined
let client: Client | undefined
afterAll(async () => { await client?.close(); await grid?.close() })

describe('memory budget', () => {
  it('spills results past the budget to disk and reads them back', async () => {
    grid = await startGrid({ workers: 1, workerArgs: ['--nprocs', '1', '--memory-limit', '8MB'] })
    client = await Client.connect(grid.url, { token: grid.token })
    const parts = client.map((i: number) => new Float64Array(131_072).fill(i), Array.from({ length: 12 }, (_, i) => i))
    const firsts = await client.gather(parts.map(p => client!.submit((a: Float64Array) => a[0], p)))
    expect(firsts).toEqual(Array.from({ length: 12 }, (_, i) => i))
    const w = await until(async () => (await client!.workers()).find(x => (x.spilled as number) > 0), 'the worker to report spilled bytes', 30_000)
    expect(w!.spilled as number).toBeGreaterThan(1 << 20)
    // every part, spilled or not, comes back right, and nothing was recomputed
    const total = await client.submit((...arrs: Float64Array[]) => arrs.reduce((s, a) => s + a[a.length - 1]!, 0), ...parts).result()
    expect(total).toBe(66)
    expect(grid.coord.coordinator.metrics.tasksFinished).toBe(12 + 12 + 1)
  })
})
