/**
 * The seed's examples run as a user runs them (`node examples/X.mjs`) and print right answers.
 */
import { describe, it, expect } from 'vitest'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { startGrid } from './grid.js'

const run = async (file: string, ...args: string[]): Promise<string> => {
  const { TABGRID_URL: _, ...env } = process.env
  const { stdout } = await promisify(execFile)(process.execPath, [`examples/${file}`, ...args], { timeout: 60_000, env })
  return stdout
}

describe('examples', () => {
  it('shape.mjs: sending the function beats pulling the array', async () => {
    const out = await run('shape.mjs', '500')
    expect(out).toMatch(/pull the array, then read .shape:\s+500×500/)
    expect(out).toMatch(/send a => a.shape to the data:\s+500×500/)
  })
  it('chunks.mjs: the same answer one item a task and in chunks', async () => {
    const out = await run('chunks.mjs', '20000', '5000')
    // sum of squares 0..19999
    expect(out).toContain(`sum of squares: ${(19999 * 20000 * 39999) / 6}`)
    expect(out).toMatch(/chunks of 5000: .*\(20000 items, 4 tasks\)/)
  })
  it('nprocs.mjs: both layouts finish', async () => {
    const out = await run('nprocs.mjs')
    expect(out).toMatch(/--nworkers 2 --nthreads 1: 8 CPU-bound tasks in \d+ ms/)
    expect(out).toMatch(/--nworkers 1 --nthreads 8: .* 16 waiting tasks \(100 ms each\) in \d+ ms/)
  })
  it('nprocs.mjs against TABGRID_URL: one run on that grid, labelled as what it is', async () => {
    const grid = await startGrid({ workers: 1, workerArgs: ['--nworkers', '2', '--nthreads', '2'] })
    try {
      const { stdout } = await promisify(execFile)(process.execPath, ['examples/nprocs.mjs'], { timeout: 60_000, env: { ...process.env, TABGRID_URL: grid.url, TABGRID_TOKEN: grid.token ?? '' } })
      expect(stdout).toMatch(new RegExp(`^your grid at ${grid.url} \\(1 workers, 4 slots\\): 8 CPU-bound tasks in \\d+ ms, 16 waiting tasks \\(100 ms each\\) in \\d+ ms\n`))
      expect(stdout).not.toMatch(/^--nworkers/m)
    } finally {
      await grid.close()
    }
  })
  it('local.mjs: Client.local computes without a coordinator', async () => {
    expect(await run('local.mjs')).toContain('sum of 0..999999 on 2 local threads: 499999500000')
  })
})
