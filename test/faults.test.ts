/**
 * Faults are normal: workers die mid-task, data is lost, tasks kill their threads,
 * clients vanish. Real coordinator, real worker processes killed with SIGKILL.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { spawn } from 'node:child_process'
import { io as connect } from 'socket.io-client'
import { frameParser } from '../shared/socket-parser.js'
import { Packr } from 'msgpackr'
import { Client, TaskError } from 'tabgrid'
import { startGrid, until, type Grid } from './grid.js'

let grid: Grid | undefined
let client: Client | undefined
afterEach(async () => {
  await client?.close()
  await grid?.close()
  client = undefined
  grid = undefined
})

const nameOf = async (c: Client, id: string): Promise<string> => (await c.workers()).find(w => w.id === id)!.name

describe('faults', () => {
  it('a worker process killed mid-run loses nothing', async () => {
    grid = await startGrid({ workers: 3 })
    client = await Client.connect(grid.url, { token: grid.token })
    const n = 90
    const fs = client.map(async (i: number) => { await new Promise(r => setTimeout(r, 40)); return i * i }, Array.from({ length: n }, (_, i) => i))
    const coord = grid.coord.coordinator
    await until(() => coord.metrics.tasksFinished >= 15, 'some tasks to finish')
    grid.workers[0]!.kill('SIGKILL')
    const out = await client.gather(fs)
    expect(out).toEqual(Array.from({ length: n }, (_, i) => i * i))
    expect((await client.workers()).length).toBe(2)
  })

  it('a result held only by a killed worker is recomputed from its lineage', async () => {
    grid = await startGrid({ workers: 2 })
    client = await Client.connect(grid.url, { token: grid.token })
    const base = client.submit((n: number) => Array.from({ length: n }, (_, i) => i), 1000)
    const x = client.submit((a: number[]) => a.map(v => v * 2), base)
    await x.result()
    const holder = grid.coord.coordinator.scheduler.whoHas(x.key)[0]!
    const name = await nameOf(client, holder)
    grid.workers.find(w => w.name === name)!.kill('SIGKILL')
    await until(() => grid!.coord.coordinator.scheduler.workers().length === 1, 'the worker to be declared gone')
    const sum = await client.submit((a: number[]) => a.reduce((s, v) => s + v, 0), x).result()
    expect(sum).toBe(999 * 1000)
    const story = grid.coord.coordinator.scheduler.story(x.key)
    expect(story.filter(s => s.to === 'memory').length).toBeGreaterThanOrEqual(2)
  })

  it('a worker that dies while a task waits to fetch its data: the task still completes', async () => {
    grid = await startGrid({ workers: 2 })
    client = await Client.connect(grid.url, { token: grid.token })
    const xs = client.map((i: number) => new Float64Array(50_000).fill(i), [1, 2, 3, 4, 5, 6])
    await client.gather(xs.map(x => client!.submit((a: Float64Array) => a.length, x)))
    const total = client.submit((...arrs: Float64Array[]) => arrs.reduce((s, a) => s + a[0]!, 0), ...xs)
    grid.workers[1]!.kill('SIGKILL')
    expect(await total.result()).toBe(21)
  })

  it('a task that kills its thread three times is failed instead of killing more', async () => {
    grid = await startGrid({ workers: 2 })
    client = await Client.connect(grid.url, { token: grid.token })
    const killer = client.submit(() => { (globalThis as unknown as { process: { exit(c: number): void } }).process.exit(3); return 1 })
    const err = await killer.result().catch(e => e)
    expect(err).toBeInstanceOf(TaskError)
    expect(err.code).toBe('killed-worker')
    expect(err.message).toMatch(/3 workers|died/)
    // the grid still works, with its threads replaced
    expect(await client.submit((x: number) => x + 1, 1).result()).toBe(2)
    expect((await client.workers()).length).toBe(2)
  })

  it('a thread that exits quietly after starting (exit code 0, no error) is noticed: the task it was running fails over like a crash', async () => {
    grid = await startGrid({ workers: 1 })
    client = await Client.connect(grid.url, { token: grid.token })
    const killer = client.submit(() => {
      setTimeout(() => { (globalThis as unknown as { process: { exit(c: number): void } }).process.exit(0) }, 300)
      return 1
    })
    const slow = client.submit(async () => { await new Promise(r => setTimeout(r, 1500)); return 'ok' })
    expect(await killer.result()).toBe(1)
    // nobody wants the killer again (it would be recomputed with the data lost with its thread)
    killer.release()
    expect(await slow.result()).toBe('ok')
    const story = grid.coord.coordinator.scheduler.story(slow.key)
    expect(story.some(e => /crashed its worker/.test(e.note ?? ''))).toBe(true)
  })

  it('a client that disconnects has its futures released after the grace period', async () => {
    grid = await startGrid({ workers: 1 })
    const script = `
      import { Client } from 'tabgrid'
      const c = await Client.connect(${JSON.stringify(grid.url)}, { token: ${JSON.stringify(grid.token)} })
      const fs = c.map(async i => { await new Promise(r => setTimeout(r, 20)); return i }, Array.from({ length: 50 }, (_, i) => i))
      await fs[0].result()
      console.log('ready')
      setInterval(() => {}, 1000)
    `
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise<void>(r => child.stdout!.on('data', d => { if (String(d).includes('ready')) r() }))
    const sched = grid.coord.coordinator.scheduler
    expect(Object.values(sched.counts()).reduce((a, b) => a + b, 0)).toBeGreaterThan(0)
    child.kill('SIGKILL')
    await until(() => {
      const c = sched.counts()
      return c.waiting + c.queued + c.processing + c.memory === 0
    }, 'the vanished client\'s work to be released')
  })

  it('a worker that reconnects within the grace period keeps its identity and data', async () => {
    grid = await startGrid({ workers: 1, coordinator: { workerGraceMs: 5_000 } })
    client = await Client.connect(grid.url, { token: grid.token })
    const x = client.submit(() => 'kept')
    await x.result()
    const before = (await client.workers())[0]!.id
    // cut the worker's connection under it (as a network blip would); socket.io reconnects it
    let cut = 0
    for (const socket of grid.coord.io.sockets.sockets.values()) {
      if ((socket.data as { hello?: { role?: string } }).hello?.role === 'worker') { socket.conn.close(); cut++ }
    }
    expect(cut).toBe(1)
    await until(async () => !(await client!.workers())[0]!.connected, 'the worker to drop', 5_000).catch(() => {})
    await until(async () => (await client!.workers()).every(w => w.connected), 'the worker to come back')
    expect((await client.workers())[0]!.id).toBe(before)
    expect(await client.submit((s: string) => s.toUpperCase(), x).result()).toBe('KEPT')
  })

  it('a task past its time limit is stopped and fails alone; its thread is replaced', async () => {
    grid = await startGrid({ workers: 1, workerArgs: ['--nprocs', '2'] })
    client = await Client.connect(grid.url, { token: grid.token })
    const others = client.map(async (i: number) => { await new Promise(r => setTimeout(r, 50)); return i }, [1, 2, 3, 4])
    const hung = client.with({ timeout: 500, pure: false }).submit(() => { for (;;) { /* spin */ } })
    const err = await hung.result().catch(e => e)
    expect(err).toBeInstanceOf(TaskError)
    expect(err.message).toMatch(/time limit of 500 ms/)
    expect(await client.gather(others)).toEqual([1, 2, 3, 4])
    expect(await client.submit((x: number) => x * 2, 21).result()).toBe(42)
  })

  it('a worker that goes quiet without disconnecting loses its leases; its tasks run elsewhere', async () => {
    grid = await startGrid({ workers: 0, coordinator: { leaseMs: 600 } })
    client = await Client.connect(grid.url, { token: grid.token })
    // a "frozen tab": connected (socket.io answers pings) but never runs or reports anything
    const frozen = connect(grid.url, { transports: ['websocket'], auth: { role: 'worker', kind: 'browser', slots: 4, name: 'frozen' }, parser: frameParser })
    const assigned: string[] = []
    const packr = new Packr({ useRecords: false })
    frozen.on('frame', (f: Uint8Array) => { for (const m of packr.unpack(f) as { type: string; key?: string }[]) if (m.type === 'assign') assigned.push(m.key!) })
    await until(() => grid!.coord.coordinator.scheduler.workers().length === 1, 'the frozen worker')
    const fs = client.map((i: number) => i + 100, [1, 2, 3])
    await until(() => assigned.length === 3, 'tasks assigned to the frozen worker')
    await grid.addWorker()
    expect(await client.gather(fs)).toEqual([101, 102, 103])
    const story = grid.coord.coordinator.scheduler.story(fs[0]!.key)
    expect(story.some(e => /lease/.test(`${e.stimulus} ${e.note ?? ''}`))).toBe(true)
    frozen.close()
  })
})
