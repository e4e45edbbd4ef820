/**
 * The command as people run it: worker flags in Dask's spellings, addresses without
 * http://, the joined line every time, and `--local-workers` on the coordinator.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { Client } from 'tabgrid'
import { BIN, scratchDir, spawnWorker, startGrid, until, type Grid, type WorkerProcess } from './grid.js'

let grid: Grid | undefined
const extra: Array<WorkerProcess | ChildProcess> = []
afterEach(async () => {
  for (const w of extra.splice(0)) {
    const proc = 'proc' in w ? w.proc : w
    if (proc.exitCode === null && proc.signalCode === null) { proc.kill('SIGKILL'); await new Promise(r => proc.once('exit', r)) }
  }
  await grid?.close()
  grid = undefined
})

const joinedLine = /INFO \(worker\): joined (http:\/\/\S+) as (\S+) \((w-[\w-]+)\): (\d+) threads? × (\d+) tasks?, (.+) memory limit/

async function summaries(url: string, token = grid?.token): Promise<Array<{ name: string; slots: number }>> {
  const c = await Client.connect(url, { token })
  try { return (await c.workers()) as Array<{ name: string; slots: number }> } finally { await c.close() }
}

describe('tabgrid worker', () => {
  it('prints its joined line on every start, naming itself as the coordinator does', async () => {
    const lines: string[] = []
    grid = await startGrid({ workers: 0, coordinator: { log: line => lines.push(line) } })
    const ws = Array.from({ length: 6 }, (_, i) => spawnWorker(grid!.url, ['--nworkers', '1'], `j${i}`))
    extra.push(...ws)
    // six processes starting at once on a loaded machine: each gets a minute, all wait together
    const joined = await Promise.all(ws.map(w => until(() => joinedLine.exec(w.output()), `${w.name}'s joined line`, 60_000)))
    for (const [i, w] of ws.entries()) {
      const m = joined[i]!
      expect(m[1]).toBe(grid.url)
      expect(m[2]).toBe(w.name)
      expect(lines).toContain(`worker ${w.name} (${m[3]}) joined (node, 1 slots)`)
    }
  }, 90_000)

  it('--nworkers sets the threads, and --nprocs still does', async () => {
    grid = await startGrid({ workers: 0 })
    extra.push(spawnWorker(grid.url, ['--nworkers', '3'], 'nw'), spawnWorker(grid.url, ['--nprocs', '2', '--nthreads', '2'], 'np'))
    await grid.waitForWorkers(2)
    const byName = Object.fromEntries((await summaries(grid.url)).map(w => [w.name, w.slots]))
    expect(byName).toEqual({ nw: 3, np: 4 })
  })

  it('--memory-limit takes auto, a fraction and sizes, and says at once what is wrong', async () => {
    grid = await startGrid({ workers: 0 })
    const big = spawnWorker(grid.url, ['--nworkers', '1', '--memory-limit', '4GB'], 'm4')
    const half = spawnWorker(grid.url, ['--nworkers', '1', '--memory-limit', '0.5'], 'mh')
    const auto = spawnWorker(grid.url, ['--nworkers', '1', '--memory-limit', 'auto'], 'ma')
    extra.push(big, half, auto)
    expect((await until(() => joinedLine.exec(big.output()), 'm4 joined'))[6]).toBe('4 GB')
    const halfOf = (await until(() => joinedLine.exec(half.output()), 'mh joined'))[6]!
    const all = (await until(() => joinedLine.exec(auto.output()), 'ma joined'))[6]!
    const num = (s: string): number => Number.parseFloat(s) * ({ MB: 1e6, GB: 1e9, TB: 1e12 } as Record<string, number>)[s.split(' ')[1]!]!
    expect(num(halfOf) / num(all)).toBeCloseTo(0.5, 1)

    const bad = spawnWorker(grid.url, ['--memory-limit', 'plenty'], 'mb')
    extra.push(bad)
    expect(await bad.exited).toBe(2)
    expect(bad.output()).toContain('--memory-limit must be auto, a fraction of the machine\'s memory like 0.5, or a size of at least 1MB like 512MB or 4GB (got plenty)')
  })

  it('--lifetime retires it gracefully: its results move to another worker before it leaves', async () => {
    grid = await startGrid({ workers: 1 })
    const short = spawnWorker(grid.url, ['--nworkers', '1', '--lifetime', '2s'], 'short')
    extra.push(short)
    await grid.waitForWorkers(2)
    const client = await Client.connect(grid.url, { token: grid.token })
    try {
      const x = client.with({ workers: 'short' }).submit(() => new Float64Array(1000).fill(7))
      await x.result()
      expect(await short.exited).toBe(0)
      expect(short.output()).toMatch(/its lifetime of 2 s ran out \(--lifetime\): handing data off and leaving/)
      // nothing recomputed: the value was handed to the other worker
      expect((await x.result())[999]).toBe(7)
      expect((await client.workers()).map(w => w.name)).toEqual([grid.workers[0]!.name])
    } finally {
      await client.close()
    }
  })

  it('--death-timeout gives up once the coordinator has been gone that long', async () => {
    // a coordinator that vanishes (a clean shutdown says goodbye, and workers leave at once)
    const c = spawn(process.execPath, [BIN, 'coordinator', '--port', '0', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'], cwd: scratchDir() })
    extra.push(c)
    let out = ''
    c.stdout!.on('data', d => { out += String(d) })
    const url = await until(() => /"url":"(http:\/\/[^"]+)"/.exec(out)?.[1], 'the banner')
    const w = spawnWorker(url, ['--nworkers', '1', '--death-timeout', '1'], 'dt')
    extra.push(w)
    await until(() => joinedLine.test(w.output()), 'the worker to join')
    c.kill('SIGKILL')
    expect(await w.exited).toBe(1)
    expect(w.output()).toMatch(/lost the coordinator \(.*\); reconnecting for up to 1 s \(--death-timeout\)/)
    expect(w.output()).toMatch(/the coordinator was gone for 1 s \(--death-timeout\): giving up/)
  })

  it('takes an address without http://, and refuses tcp:// at once with what to write', async () => {
    grid = await startGrid({ workers: 0 })
    const hostPort = grid.url.replace('http://', '')
    const plain = spawnWorker(hostPort, ['--nworkers', '1'], 'plain')
    extra.push(plain)
    expect((await until(() => joinedLine.exec(plain.output()), 'plain joined'))[1]).toBe(grid.url)

    const tcp = spawnWorker(`tcp://${hostPort}`, [], 'tcp')
    extra.push(tcp)
    // 2: refused as a usage error before any connection is tried (a connect failure exits 1, after its timeout)
    expect(await tcp.exited).toBe(2)
    expect(tcp.output()).toContain(`a tabgrid coordinator speaks HTTP and WebSocket, not tcp:// (Dask's scheme): use http://${hostPort}`)
  })

  it('with no address reads TABGRID_URL, and without it says what it needs', async () => {
    grid = await startGrid({ workers: 0 })
    const run = (env: NodeJS.ProcessEnv): ChildProcess => {
      const p = spawn(process.execPath, [BIN, 'worker', '--nworkers', '1', '--name', 'envw'], { stdio: ['ignore', 'pipe', 'pipe'], env })
      extra.push(p)
      return p
    }
    run({ ...process.env, TABGRID_URL: grid.url })
    await grid.waitForWorkers(1)
    const { TABGRID_URL: _, ...rest } = process.env
    const p = run(rest)
    let err = ''
    p.stderr!.on('data', d => { err += String(d) })
    expect(await new Promise(r => p.once('exit', r))).toBe(2)
    expect(err).toContain("worker needs the coordinator's address: tabgrid worker http://HOST:8786 (or TABGRID_URL set)")
  })
})

describe('tabgrid coordinator --local-workers', () => {
  it('starts Node workers beside it, so a fresh grid computes at once', async () => {
    const p = spawn(process.execPath, [BIN, 'coordinator', '--port', '0', '--local-workers', '2', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'], cwd: scratchDir() })
    extra.push(p)
    let out = ''
    p.stdout!.on('data', d => { out += String(d) })
    const url = await until(() => /"url":"(http:\/\/[^"]+)"/.exec(out)?.[1], 'the banner')
    const token = /"dashboard":"[^"]*\?token=([0-9a-f]+)"/.exec(out)?.[1]
    await until(() => (out.match(/"msg":"joined /g) ?? []).length === 2, 'both local workers')
    const client = await Client.connect(url, { token })
    try {
      expect((await client.workers()).map(w => `${w.name} ${w.kind} ${w.slots}`).sort()).toEqual(['local-1 node 1', 'local-2 node 1'])
      expect(await client.gather(client.map(x => x * 2, [1, 2, 3]))).toEqual([2, 4, 6])
    } finally {
      await client.close()
    }
    p.kill('SIGINT')
    expect(await new Promise(r => p.once('exit', r))).toBe(0)
  })
})
