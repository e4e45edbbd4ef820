/**
 * What operators use: /metrics checked by Prometheus' own promtool, and the command's
 * logs (pino: levels, --log-format json, --quiet, client connects logged), from real
 * `tabgrid coordinator` and `tabgrid worker` processes.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { Client } from 'tabgrid'
import { BIN, scratchDir, startGrid, until, type Grid } from './grid.js'

const running: ChildProcess[] = []
let grid: Grid | undefined
afterEach(async () => {
  for (const p of running.splice(0)) if (p.exitCode === null && p.signalCode === null) { p.kill('SIGKILL'); await new Promise(r => p.once('exit', r)) }
  await grid?.close()
  grid = undefined
})

function promtool(text: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const p = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) => {
      const e = err as (Error & { code?: number | string }) | null
      if (e && e.code === 'ENOENT') reject(new Error('promtool is missing: apt-get install prometheus (.ci/run installs it)'))
      else resolve({ code: e ? Number(e.code) : 0, out: stdout + stderr })
    })
    p.stdin!.end(text)
  })
}

/** A port nothing listens on now. */
async function freePort(): Promise<number> {
  const srv = createServer()
  await new Promise<void>(r => srv.listen(0, '127.0.0.1', r))
  const port = (srv.address() as { port: number }).port
  await new Promise(r => srv.close(r))
  return port
}

interface Proc { proc: ChildProcess; out: () => string; lines: () => string[]; exited: Promise<number | null> }
function run(args: string[], env: NodeJS.ProcessEnv = process.env): Proc {
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env, cwd: scratchDir() })
  running.push(proc)
  let out = ''
  proc.stdout!.on('data', d => { out += String(d) })
  proc.stderr!.on('data', d => { out += String(d) })
  const exited = new Promise<number | null>(r => proc.once('exit', code => r(code)))
  return { proc, out: () => out, lines: () => out.split('\n').filter(Boolean), exited }
}

describe('/metrics', () => {
  it('is Prometheus text that promtool accepts, with counters, a task-duration histogram, per-worker gauges and process metrics', async () => {
    grid = await startGrid({ workers: 1 })
    const client = await Client.connect(grid.url, { token: grid.token })
    await client.gather(client.map(x => x + 1, [1, 2, 3, 4, 5]))
    await expect(client.submit(() => { throw new Error('no') }).result()).rejects.toThrow('no')
    await client.close()
    const res = await fetch(`${grid.url}/metrics`)
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/)
    const text = await res.text()

    const check = await promtool(text)
    expect(check.out).toBe('')
    expect(check.code).toBe(0)

    const value = (series: string): number => {
      const line = text.split('\n').find(l => l.startsWith(`${series} `))
      if (!line) throw new Error(`no ${series} in /metrics`)
      return Number(line.slice(series.length + 1))
    }
    expect(text).toContain('# HELP tabgrid_tasks_finished_total Task results that workers returned.')
    expect(text).toContain('# TYPE tabgrid_tasks_finished_total counter')
    expect(value('tabgrid_tasks_submitted_total')).toBe(6)
    expect(value('tabgrid_tasks_finished_total')).toBe(5)
    expect(value('tabgrid_tasks_erred_total')).toBe(1)
    expect(text).toContain('# TYPE tabgrid_task_duration_seconds histogram')
    expect(value('tabgrid_task_duration_seconds_count')).toBe(5)
    expect(value('tabgrid_task_duration_seconds_bucket{le="+Inf"}')).toBe(5)
    expect(value('tabgrid_scheduler_seconds_total')).toBeGreaterThan(0)
    const w = grid.workers[0]!
    const id = (await (async () => { const c = await Client.connect(grid!.url, { token: grid!.token }); try { return (await c.workers())[0]!.id } finally { await c.close() } })())
    expect(value(`tabgrid_worker_slots{worker="${id}",name="${w.name}",kind="node"}`)).toBe(1)
    expect(value(`tabgrid_worker_tasks_done_total{worker="${id}",name="${w.name}",kind="node"}`)).toBe(5)
    expect(value('tabgrid_connections{role="worker"}')).toBe(1)
    expect(text).toContain('# TYPE process_cpu_seconds_total counter')
    expect(text).toContain('# TYPE nodejs_eventloop_lag_seconds gauge')
    // no metric is typed twice or left untyped
    const typed = text.split('\n').filter(l => l.startsWith('# TYPE ')).map(l => l.split(' ')[2])
    expect(new Set(typed).size).toBe(typed.length)
  })
})

describe('logs', () => {
  it('--log-format json: one pino record a line, with levels; client connects and worker joins are logged', async () => {
    const c = run(['coordinator', '--port', '0', '--log-format', 'json'])
    const records = (): Array<Record<string, unknown>> => c.lines().map(l => JSON.parse(l) as Record<string, unknown>)
    const banner = await until(() => records().find(r => typeof r.url === 'string'), 'the listening record')
    expect(banner).toMatchObject({ level: 30, name: 'coordinator', msg: expect.stringMatching(/^tabgrid coordinator .* listening on http:\/\/127\.0\.0\.1:\d+$/) })
    expect(typeof banner.time).toBe('number')
    // the dashboard's address carries the client token the coordinator made
    expect(banner.dashboard).toMatch(new RegExp(`^${String(banner.url)}/\\?token=[0-9a-f]{32}$`))
    const url = String(banner.url)
    const token = new URL(String(banner.dashboard)).searchParams.get('token')!

    const client = await Client.connect(url, { name: 'alice', token })
    const connected = await until(() => records().find(r => /client alice \(c-[\w-]+\) connected from/.test(String(r.msg))), 'the client connect record')
    expect(connected.level).toBe(30)

    const w = run(['worker', url, '--nworkers', '1', '--name', 'wj', '--log-format', 'json'])
    const joined = await until(() => w.lines().map(l => JSON.parse(l) as Record<string, unknown>).find(r => /^joined /.test(String(r.msg))), 'the worker joined record')
    expect(joined).toMatchObject({ level: 30, name: 'worker' })
    const id = /\((w-[\w-]+)\)/.exec(String(joined.msg))![1]!
    // the coordinator names the worker as the worker names itself: name, then id
    await until(() => records().find(r => String(r.msg).startsWith(`worker wj (${id}) joined`)), 'the coordinator join record')

    await client.close()
    await until(() => records().find(r => /client alice (closed|disconnected)/.test(String(r.msg))), 'the close record')
    c.proc.kill('SIGINT')
    expect(await c.exited).toBe(0)
    expect(records().at(-1)).toMatchObject({ msg: 'SIGINT: shutting down' })
  })

  it('--quiet logs warnings and errors only', async () => {
    const port = await freePort()
    const c = run(['coordinator', '--port', String(port), '--quiet', '--client-token', 'right', '--local-workers', '1'])
    const url = `http://127.0.0.1:${port}`
    await until(() => fetch(`${url}/health`).then(r => r.ok, () => false), 'the coordinator')
    const client = await Client.connect(url, { token: 'right', name: 'quiet-one' })
    await client.submit(x => x, 1).result()
    await client.close()
    expect(c.out()).toBe('')
    await expect(Client.connect(url, { token: 'wrong' })).rejects.toThrow(/token/)
    const warn = await until(() => c.lines().find(l => / WARN /.test(l)), 'the warning')
    expect(warn).toMatch(/WARN \(coordinator\): refused a client from .*: wrong or missing client token/)
    expect(c.lines()).toHaveLength(1)
  })

  it('text logs read as lines with a time, a level and who says it', async () => {
    const port = await freePort()
    const c = run(['coordinator', '--port', String(port)])
    const token = await until(() => /TABGRID_TOKEN=([0-9a-f]+)/.exec(c.out())?.[1], 'the banner, with the client token it made')
    const url = `http://127.0.0.1:${port}`
    const client = await Client.connect(url, { name: 'bob', token })
    const line = await until(() => c.lines().find(l => l.includes('client bob')), 'the connect line')
    expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(coordinator\): client bob \(c-[\w-]+\) connected from /)
    await client.close()
  })
})
