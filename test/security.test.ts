/**
 * Bad input gets a clear error and loses nothing: wrong tokens, junk on the socket,
 * out-of-role messages, oversized frames. The coordinator never crashes, and honest
 * clients keep computing alongside.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { io as connect, type Socket } from 'socket.io-client'
import { Packr } from 'msgpackr'
import { Client, AuthError } from 'tabgrid'
import { frameParser } from '../shared/socket-parser.js'
import { startGrid, spawnWorker, until, type Grid } from './grid.js'

const packr = new Packr({ useRecords: false })
let grid: Grid
let honest: Client

beforeAll(async () => {
  grid = await startGrid({ workers: 1, workerArgs: ['--nprocs', '1', '--token', 'w-secret'], coordinator: { clientToken: 'c-secret', workerToken: 'w-secret', maxBadMessages: 1000 } })
  honest = await Client.connect(grid.url, { token: 'c-secret' })
})
afterAll(async () => {
  await honest?.close()
  await grid?.close()
})

/** A raw socket.io connection that collects the coordinator's `error` messages. */
async function raw(auth: Record<string, unknown>): Promise<{ socket: Socket; errors: string[]; closed: () => boolean }> {
  const socket = connect(grid.url, { transports: ['websocket'], auth, reconnection: false, parser: frameParser })
  const errors: string[] = []
  let closed = false
  socket.on('frame', (f: Uint8Array) => {
    for (const m of packr.unpack(f) as { type: string; error?: { code: string; message: string } }[]) {
      if (m.type === 'error') errors.push(`${m.error!.code}: ${m.error!.message}`)
    }
  })
  socket.on('disconnect', () => { closed = true })
  await new Promise<void>((resolve, reject) => {
    socket.on('connect', () => resolve())
    socket.on('connect_error', reject)
  })
  return { socket, errors, closed: () => closed }
}

const frame = (...msgs: unknown[]): Uint8Array => packr.pack(msgs)

describe('tokens and roles', () => {
  it('a client with a wrong or missing token is refused with AuthError', async () => {
    await expect(Client.connect(grid.url, { token: 'nope' })).rejects.toBeInstanceOf(AuthError)
    await expect(Client.connect(grid.url)).rejects.toThrow(/token/)
  })

  it('a worker with a wrong token exits with a clear message', async () => {
    const w = spawnWorker(grid.url, ['--token', 'nope', '--nprocs', '1'])
    const code = await w.exited
    expect(code).not.toBe(0)
    expect(w.output()).toMatch(/token/i)
  })

  it('a worker with the right token joins', async () => {
    const w = spawnWorker(grid.url, ['--token', 'w-secret', '--nprocs', '1'], 'tokened')
    grid.workers.push(w)
    await until(async () => (await honest.workers()).some(x => x.name === 'tokened'), 'the tokened worker')
  })

  it('a bad hello is refused', async () => {
    await expect(raw({ role: 'emperor' })).rejects.toThrow(/hello/)
    await expect(raw({ role: 'worker', token: 'w-secret', kind: 'node', slots: -1 })).rejects.toThrow(/slots/)
  })

  it('the dashboard role is read-only', async () => {
    const d = await raw({ role: 'dashboard', token: 'c-secret' })
    d.socket.emit('frame', frame({ type: 'submit', tasks: [] }))
    await until(() => d.errors.length, 'an error')
    expect(d.errors[0]).toMatch(/read-only/)
    d.socket.close()
  })

  it('a worker cannot submit, and a client cannot report results', async () => {
    const w = await raw({ role: 'worker', token: 'w-secret', kind: 'node', slots: 1, name: 'sneaky' })
    w.socket.emit('frame', frame({ type: 'submit', tasks: [] }, { type: 'function', hash: 'x', source: '() => 1' }))
    await until(() => w.errors.length >= 2, 'two errors')
    expect(w.errors[0]).toMatch(/bad-message/)
    w.socket.close()
    const c = await raw({ role: 'client', token: 'c-secret' })
    c.socket.emit('frame', frame({ type: 'finished', key: 'k', attempt: 1, nbytes: 1, ms: 1 }))
    await until(() => c.errors.length, 'an error')
    expect(c.errors[0]).toMatch(/bad client message "finished"/)
    c.socket.close()
  })
})

describe('junk on every event', () => {
  const clientJunk: unknown[] = [
    { type: 'function' }, { type: 'function', hash: 5, source: 'x' }, { type: 'function', hash: 'h', source: 'x'.repeat((1 << 20) + 1) },
    { type: 'submit' }, { type: 'submit', tasks: [{ key: 'k' }] }, { type: 'submit', tasks: 'lots' },
    { type: 'scatter', key: 'k' }, { type: 'scatter', key: 'k', data: 'not bytes' },
    { type: 'scatter', key: 'k', data: new Uint8Array(3), part: 7, parts: 2, total: 3 },
    { type: 'release' }, { type: 'release', keys: [1, 2] }, { type: 'cancel', keys: 'all' }, { type: 'gather', keys: [{}] },
    { type: 'request' }, { type: 'request', id: 1, op: { op: 'format-disk' } }, { type: 'request', id: -1, op: { op: 'workers' } },
    { type: 'nonsense' }, null, 42, 'string', [],
    { type: 'gather', keys: ['k'.repeat(10_000)] },
  ]
  const workerJunk: unknown[] = [
    { type: 'finished' }, { type: 'finished', key: 'k', attempt: 'one', nbytes: 1, ms: 1 },
    { type: 'erred', key: 'k', attempt: 1 }, { type: 'missing', key: 'k', attempt: 1, missing: 'x' }, { type: 'steal-response' },
    { type: 'stored', key: 'k' }, { type: 'fetch', id: 'x', key: 'k' }, { type: 'data', id: 1, key: 'k', data: 5 },
    { type: 'data-error', id: 1 }, { type: 'status', accepting: 'maybe' }, { type: 'released', keys: null },
    { type: 'submit', tasks: [] }, {}, undefined,
  ]

  it('every malformed client message gets an error back; the grid keeps working', async () => {
    const c = await raw({ role: 'client', token: 'c-secret' })
    for (const m of clientJunk) c.socket.emit('frame', frame(m))
    c.socket.emit('frame', 'a string, not a frame')
    c.socket.emit('frame', new Uint8Array([0xc1, 0xff, 0x00]))
    c.socket.emit('frame', packr.pack({ not: 'an array' }))
    c.socket.emit('other-event', { x: 1 })
    await until(() => c.errors.length >= clientJunk.length + 3, `errors for all ${clientJunk.length + 4} junk frames`)
    expect(c.errors.filter(e => !e.startsWith('bad-message') && !e.startsWith('too-large'))).toEqual([])
    expect(c.closed()).toBe(false)
    // well-formed, but naming a function never sent: that task errs with a clear message
    const states: { key: string; state: string; error?: { message: string } }[] = []
    c.socket.on('frame', (f: Uint8Array) => { for (const m of packr.unpack(f) as typeof states & { type: string }[]) if ((m as { type: string }).type === 'key-state') states.push(m) })
    c.socket.emit('frame', frame({ type: 'submit', tasks: [{ key: 'k1', fn: 'nope', args: new Uint8Array(1), deps: [], group: 'g' }] }))
    await until(() => states.length, 'a key-state')
    expect(states[0]!.error!.message).toMatch(/never sent/)
    // nothing was lost: an honest client computes
    expect(await honest.submit((x: number) => x * 3, 14).result()).toBe(42)
    c.socket.close()
  })

  it('every malformed worker message gets an error back; the grid keeps working', async () => {
    const w = await raw({ role: 'worker', token: 'w-secret', kind: 'node', slots: 1, name: 'junky' })
    for (const m of workerJunk) w.socket.emit('frame', frame(m))
    await until(() => w.errors.length >= workerJunk.length, 'errors for the junk')
    // well-formed but stale: a result for an attempt that was never assigned is dropped quietly
    w.socket.emit('frame', frame({ type: 'finished', key: 'nope', attempt: 99, nbytes: 1, ms: 1 }))
    w.socket.close()
    expect(await honest.gather(honest.map((x: number) => x + 1, [1, 2, 3]))).toEqual([2, 3, 4])
  })

  it('an oversized frame cuts only that connection', async () => {
    const c = await raw({ role: 'client', token: 'c-secret' })
    c.socket.emit('frame', new Uint8Array(20 << 20))
    await until(() => c.closed(), 'the oversized sender to be cut')
    expect(await honest.submit(() => 'still here').result()).toBe('still here')
  })

  it('a connection that keeps sending junk is cut', async () => {
    const small = await startGrid({ workers: 0, coordinator: { maxBadMessages: 5 } })
    try {
      const socket = connect(small.url, { transports: ['websocket'], auth: { role: 'client', token: small.token }, reconnection: false, parser: frameParser })
      await new Promise<void>(r => socket.on('connect', () => r()))
      let closed = false
      socket.on('disconnect', () => { closed = true })
      for (let i = 0; i < 10; i++) socket.emit('frame', frame({ type: 'junk', i }))
      await until(() => closed, 'the junk sender to be cut')
      expect(small.coord.coordinator.metrics.badMessages).toBeGreaterThanOrEqual(5)
    } finally { await small.close() }
  })

  it('a value too large to send is refused on the client with TooLargeError', async () => {
    const { TooLargeError } = await import('tabgrid')
    expect(TooLargeError).toBeDefined()
    // not allocating a gigabyte here: the limit is checked on the encoded size, see shared/client.test.ts
  })

  it('HTTP paths cannot leave the served folders', async () => {
    for (const path of ['/..%2f..%2fpackage.json', '/assets/..%2f..%2f..%2fpackage.json', '/%2e%2e/%2e%2e/package.json', '/lib/..%2f..%2fpackage.json']) {
      const res = await fetch(`${grid.url}${path}`)
      expect([403, 404]).toContain(res.status)
      expect(await res.text()).not.toContain('"name": "tabgrid"')
    }
    expect((await fetch(`${grid.url}/%E0%A4%A`)).status).toBe(400)
  })

  it('the coordinator is still healthy', async () => {
    const res = await fetch(`${grid.url}/health`)
    const body = await res.json() as { ok: boolean; badMessages: number }
    expect(body.ok).toBe(true)
    expect(body.badMessages).toBeGreaterThan(20)
  })
})
