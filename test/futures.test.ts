/**
 * Futures that behave as a Dask user expects, on a real grid: a real coordinator at
 * port 0, real `tabgrid worker` processes (killed and stopped with real signals), real
 * clients over socket.io, and scripts run as their own Node processes.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest'
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Client, TaskError, SerializationError, fireAndForget } from 'tabgrid'
import { startGrid, until, type Grid } from './grid.js'

const ENTRY = fileURLToPath(new URL('../dist/server/index.js', import.meta.url))

/** Runs an ES module script with its own `node`; resolves with its exit code and output (or rejects past `ms`). */
async function runScript(source: string, args: string[], ms = 20_000): Promise<{ code: number | null; out: string; ms: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'tabgrid-script-'))
  const file = join(dir, 'script.mjs')
  await writeFile(file, source)
  const t0 = Date.now()
  try {
    return await new Promise((resolve, reject) => {
      const proc = spawn(process.execPath, [file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      proc.stdout.on('data', d => { out += String(d) })
      proc.stderr.on('data', d => { out += String(d) })
      const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`the script did not exit within ${ms} ms; output: ${out}`)) }, ms)
      proc.once('exit', code => { clearTimeout(timer); resolve({ code, out, ms: Date.now() - t0 }) })
    })
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

describe('on a grid of two workers', () => {
  let grid: Grid
  let client: Client
  beforeAll(async () => {
    // a long client grace: what close() releases must go at once, not after it
    grid = await startGrid({ workers: 2, coordinator: { clientGraceMs: 60_000 } })
    client = await Client.connect(grid.url, { token: grid.token })
  })
  afterAll(async () => {
    await client?.close()
    await grid?.close()
  })

  it('close() flushes its last frame and is acknowledged: nothing of the client is left running (10 of 10)', async () => {
    const scheduler = grid.coord.coordinator.scheduler
    for (let round = 0; round < 10; round++) {
      const c = await Client.connect(grid.url, { token: grid.token })
      // short: a Node worker cannot stop a running task, so a cancelled one still holds its thread until it ends
      const keep = c.with({ pure: false }).submit(async () => { await new Promise(r => setTimeout(r, 300)); return 'late' })
      await until(() => scheduler.taskStatus(keep.key) === 'processing', 'the long task to start')
      // the same turn: a cancel, a submit, and close
      const cancelled = c.with({ pure: false }).submit(async () => { await new Promise(r => setTimeout(r, 300)); return 'never' })
      void c.cancel(cancelled)
      const submitted = c.with({ pure: false }).submit(() => 'last')
      await c.close()
      // released at once: had it waited for the client's grace, keep would be in memory now
      await until(() => scheduler.taskStatus(keep.key) === undefined, `round ${round}: the client's work to be released`, 5_000)
      expect(scheduler.taskStatus(submitted.key)).toBeUndefined()
      expect(scheduler.taskStatus(cancelled.key)).toBeUndefined()
    }
    expect(scheduler.counts()).toMatchObject({ processing: 0, queued: 0, waiting: 0 })
    expect(grid.coord.coordinator.status()).toMatchObject({ clients: 1 })
  })

  it('a script that never calls close() exits once it has its result', async () => {
    const { code, out } = await runScript(`
      import { Client } from ${JSON.stringify(ENTRY)}
      const client = await Client.connect(process.argv[2], { token: process.argv[3] })
      console.log('sum', await client.submit((a, b) => a + b, 1, 2).result())
      client.submit(() => 'nobody waits for this')
    `, [grid.url, grid.token ?? ''])
    expect(out).toContain('sum 3')
    expect(code).toBe(0)
  })

  it('a Client.local script that never calls close() exits too, after its slow task', async () => {
    const { code, out } = await runScript(`
      import { Client } from ${JSON.stringify(ENTRY)}
      const client = await Client.local({ workers: 1 })
      console.log(await client.submit(async ms => { await new Promise(r => setTimeout(r, ms)); return 'slept' }, 500).result())
    `, [])
    expect(out).toContain('slept')
    expect(code).toBe(0)
  })

  it('a task that throws a 70,000-character message fails with it, truncated by the worker (it says so)', async () => {
    const f = client.submit((n: number) => { throw new RangeError('x'.repeat(n)) }, 70_000)
    const err = await f.result().catch((e: unknown) => e) as TaskError
    expect(err).toBeInstanceOf(TaskError)
    expect(err.remoteName).toBe('RangeError')
    expect(err.message.startsWith('x'.repeat(16_000))).toBe(true)
    expect(err.message).toMatch(/… \(message truncated by the worker: 70000 characters in all\)$/)
    expect(f.status).toBe('error')
    expect(grid.coord.coordinator.scheduler.taskStatus(f.key)).toBe('erred')
  })

  it('await scatter(v) gives a finished future: the data is on a worker', async () => {
    const s = await client.scatter({ table: new Float64Array([1, 2, 3]) })
    expect(s.status).toBe('finished')
    expect(grid.coord.coordinator.scheduler.whoHas(s.key)).toHaveLength(1)
    expect(await client.submit((t: { table: Float64Array }) => t.table.length, s).result()).toBe(3)
  })

  it('uploadModule refuses a module that does not parse, with the syntax error', async () => {
    await expect(client.uploadModule('broken', 'export function f( {')).rejects.toBeInstanceOf(SerializationError)
    await expect(client.uploadModule('broken', 'export function f( {')).rejects.toThrow(/does not parse as an ES module: .* at line 1, column \d+/)
  })

  it('a published dataset outlives the client that made it', async () => {
    const a = await Client.connect(grid.url, { token: grid.token })
    const f = a.submit((n: number) => Array.from({ length: n }, (_, i) => i * i), 5)
    await a.publishDataset('squares', f)
    await a.close()
    const b = await Client.connect(grid.url, { token: grid.token })
    try {
      expect(await b.listDatasets()).toEqual(['squares'])
      const got = await b.getDataset<number[]>('squares')
      expect(await got.result()).toEqual([0, 1, 4, 9, 16])
      expect(await b.submit((xs: number[]) => xs.length, got).result()).toBe(5)
      await b.unpublishDataset('squares')
      expect(await b.listDatasets()).toEqual([])
    } finally {
      await b.close()
    }
    await until(() => grid.coord.coordinator.scheduler.taskStatus(f.key) === undefined, 'the dataset to be forgotten')
  })

  it('fireAndForget: the task runs to the end after its client closed', async () => {
    const coordinator = grid.coord.coordinator
    const finished: string[] = []
    const listen = (o: { type: string; key?: string }): void => { if (o.type === 'finished' && o.key) finished.push(o.key) }
    coordinator.observers.push(listen)
    try {
      const c = await Client.connect(grid.url, { token: grid.token })
      const f = c.with({ pure: false }).submit(async () => { await new Promise(r => setTimeout(r, 500)); return 'done' })
      fireAndForget(f)
      await c.close()
      expect(coordinator.scheduler.taskStatus(f.key)).toBe('processing')
      await until(() => finished.includes(f.key), 'the task to finish')
      await until(() => coordinator.scheduler.taskStatus(f.key) === undefined, 'the task to be forgotten once done')
    } finally {
      coordinator.observers.splice(coordinator.observers.indexOf(listen), 1)
    }
  })
})

describe('faults around held data', () => {
  let grid: Grid | undefined
  let client: Client | undefined
  afterEach(async () => {
    await client?.close()
    await grid?.close()
    client = grid = undefined
  })

  it('a replicas-2 scatter survives both workers it was put on dying: the copies tasks fetched count', async () => {
    grid = await startGrid({ workers: 4 })
    client = await Client.connect(grid.url, { token: grid.token })
    const c = client
    const scheduler = grid.coord.coordinator.scheduler
    const s = await c.scatter(new Float64Array(1000).fill(7), { replicas: 2 })
    await until(() => scheduler.whoHas(s.key).length === 2, 'both replicas')
    const putOn = scheduler.whoHas(s.key)
    const names = new Map((await c.workers()).map(w => [w.id, w.name]))
    const others = [...names.keys()].filter(id => !putOn.includes(id))
    // tasks on the other two workers fetch s, and keep their copies
    for (const id of others) expect(await c.with({ workers: names.get(id)!, pure: false }).submit((a: Float64Array) => a[0], s).result()).toBe(7)
    await until(() => scheduler.whoHas(s.key).length === 4, 'the fetched copies to be counted')
    for (const id of putOn) grid.workers.find(w => w.name === names.get(id))!.kill('SIGKILL')
    await until(() => scheduler.workers().length === 2, 'the killed workers to be declared gone')
    expect(s.status).toBe('finished')
    expect((await s.result() as Float64Array)[999]).toBe(7)
    expect(await c.submit((a: Float64Array) => a.length, s).result()).toBe(1000)
    expect(scheduler.whoHas(s.key).sort()).toEqual(others.sort())
  })

  it('a holder that never answers a fetch (a stopped process): result() still comes, from a recomputation', async () => {
    // --trust-tasks: one process per worker, so SIGSTOP stops the agent itself (sandboxed, it would stop only the parent that started it)
    grid = await startGrid({ workers: 2, workerArgs: ['--nprocs', '1', '--nthreads', '1', '--trust-tasks'], coordinator: { fetchTimeoutMs: 1_000, leaseMs: 2_000, workerGraceMs: 60_000 } })
    client = await Client.connect(grid.url, { token: grid.token })
    const c = client
    const scheduler = grid.coord.coordinator.scheduler
    const x = c.submit((n: number) => new Float64Array(n).fill(3), 300_000) // 2.4 MB: fetched when asked, not pushed
    await until(() => x.status === 'finished', 'x to finish')
    const holder = scheduler.whoHas(x.key)[0]!
    const name = (await c.workers()).find(w => w.id === holder)!.name
    const stopped = grid.workers.find(w => w.name === name)!
    stopped.kill('SIGSTOP')
    try {
      const v = await x.result({ timeout: 20_000 }) as Float64Array
      expect(v.length).toBe(300_000)
      expect(v[299_999]).toBe(3)
      expect(scheduler.whoHas(x.key)).not.toContain(holder)
      expect(scheduler.story(x.key).some(e => e.stimulus.startsWith('data-lost'))).toBe(true)
    } finally {
      stopped.kill('SIGCONT')
    }
  })
})
