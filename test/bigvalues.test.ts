/**
 * Big values through a real grid (a coordinator on port 0, real `tabgrid worker`
 * processes): they arrive byte for byte, stream in parts through the coordinator, and a
 * holder that dies in the middle of a stream costs a retry from another holder (or a
 * recompute, or a clear error), never a hang, and leaves nothing half received behind.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { Client, wait, type Future } from 'tabgrid'
import { startGrid, until, type Grid, type WorkerProcess } from './grid.js'

let grid: Grid | undefined
let client: Client | undefined
afterEach(async () => {
  await client?.close()
  await grid?.close()
  client = grid = undefined
})

const MB = 1 << 20

/**
 * n bytes of a pattern that tells every position apart. Tasks run this very function on
 * a worker (its source travels), so the bytes are checked, not just the length.
 */
const pattern = (n: number, seed: number): Uint8Array => {
  const b = new Uint8Array(n)
  let x = seed >>> 0
  for (let i = 0; i < n; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; b[i] = x >>> 24 }
  return b
}
const digest = (b: ArrayBufferView): string => createHash('sha256').update(new Uint8Array(b.buffer, b.byteOffset, b.byteLength)).digest('hex')

interface Internals {
  relays: Map<number, { key: string; holder: string }>
}
const internals = (g: Grid): Internals => g.coord.coordinator as unknown as Internals

/** The worker process of a worker id. */
function processOf(g: Grid, id: string): WorkerProcess {
  const name = g.coord.coordinator.scheduler.workers().find(w => w.id === id)?.name
  const p = g.workers.find(w => w.name === name)
  if (!p) throw new Error(`no worker process for ${id}`)
  return p
}

/** Resolves with the holder of the first relay of `key` once at least `bytes` of it went through the coordinator. */
async function midStream(g: Grid, key: string, bytes: number): Promise<string> {
  const start = g.coord.coordinator.metrics.bytesRelayed
  for (let i = 0; i < 20_000; i++) {
    const r = [...internals(g).relays.values()].find(x => x.key === key)
    if (r && g.coord.coordinator.metrics.bytesRelayed - start >= bytes) return r.holder
    await new Promise(res => setTimeout(res, 1))
  }
  throw new Error(`${key} never streamed ${bytes} bytes`)
}

describe('big values', () => {
  it('a 24 MB result pulled to the client arrives byte for byte, again on a second pull, and moves to another worker exactly', async () => {
    grid = await startGrid({ workers: 2 })
    client = await Client.connect(grid.url, { token: grid.token })
    const [a, b] = grid.coord.coordinator.scheduler.workers().map(w => w.name)
    const n = 24 * MB + 12_345
    const bytes = client.with({ workers: a!, pure: false }).submit(pattern, n, 7)
    const x = client.with({ workers: a!, pure: false }).submit(
      (bytes: Uint8Array) => ({ bytes, doubles: Float64Array.from({ length: 1000 }, (_, i) => i / 3), label: 'big' }),
      bytes,
    ) as Future<{ bytes: Uint8Array; doubles: Float64Array; label: string }>
    const want = pattern(n, 7)
    const first = await x.result()
    expect(first.label).toBe('big')
    expect(first.bytes.byteLength).toBe(n)
    expect(digest(first.bytes)).toBe(digest(want))
    expect(Array.from(first.doubles.subarray(0, 4))).toEqual([0, 1 / 3, 2 / 3, 1])
    // the holder keeps the encoding: the second pull is the same bytes
    const second = await x.result()
    expect(digest(second.bytes)).toBe(digest(want))
    // a task on the other worker fetches it through the coordinator and sees every byte
    const seen = await client.with({ workers: b!, pure: false }).submit((v: { bytes: Uint8Array }) => {
      let h = 0
      for (let i = 0; i < v.bytes.length; i++) h = (Math.imul(h, 31) + v.bytes[i]!) >>> 0
      return [v.bytes.length, h]
    }, x).result()
    let h = 0
    for (let i = 0; i < want.length; i++) h = (Math.imul(h, 31) + want[i]!) >>> 0
    expect(seen).toEqual([n, h])
  })

  it('a big scattered value comes back exactly', async () => {
    grid = await startGrid({ workers: 1 })
    client = await Client.connect(grid.url, { token: grid.token })
    const value = { data: pattern(9 * MB + 3, 11), n: 42 }
    const f = await client.scatter(value)
    const back = await f.result() as typeof value
    expect(back.n).toBe(42)
    expect(digest(back.data)).toBe(digest(value.data))
  })

  it('a holder that dies mid-stream: the client gets the value from the other holder, exactly', async () => {
    grid = await startGrid({ workers: 2, coordinator: { workerGraceMs: 60_000 } })
    client = await Client.connect(grid.url, { token: grid.token })
    const value = pattern(48 * MB, 5)
    const f = await client.scatter(value, { replicas: 2 })
    await until(() => grid!.coord.coordinator.scheduler.whoHas(f.key).length === 2, 'both replicas')
    const pulled = f.result() as Promise<Uint8Array>
    const holder = await midStream(grid, f.key, 8 * MB)
    processOf(grid, holder).kill('SIGKILL')
    const got = await pulled
    expect(got.byteLength).toBe(value.byteLength)
    expect(digest(got)).toBe(digest(value))
    // nothing half joined is left at the client, nothing relayed from the dead holder
    expect((client as unknown as { joiner: { size: number; bytes: number } }).joiner).toMatchObject({ size: 0, bytes: 0 })
    expect([...internals(grid).relays.values()].filter(r => r.holder === holder)).toEqual([])
  })

  it('the only holder dies mid-stream: the value is recomputed and arrives, never a hang', async () => {
    grid = await startGrid({ workers: 2 })
    client = await Client.connect(grid.url, { token: grid.token })
    const n = 48 * MB
    const x = client.with({ pure: false }).submit(pattern, n, 3) as Future<Uint8Array>
    await wait([x])
    // after the holder dies, the other worker recomputes it
    const pulled = (x.result() as Promise<Uint8Array>).then(v => v, e => e as Error)
    const holder = await midStream(grid, x.key, 8 * MB)
    processOf(grid, holder).kill('SIGKILL')
    const got = await pulled
    if (got instanceof Error) {
      // a clear error is the other allowed outcome
      expect(got.name).toMatch(/LostData|Cancelled|Task/)
    } else {
      expect(digest(got)).toBe(digest(pattern(n, 3)))
    }
  }, 60_000)

  it('a client whose connection is cut mid-stream gets the value after it reconnects; nothing half received stays', async () => {
    // a grace period long enough for socket.io's reconnect on a loaded machine
    grid = await startGrid({ workers: 1, coordinator: { clientGraceMs: 20_000 } })
    client = await Client.connect(grid.url, { token: grid.token })
    const value = pattern(48 * MB, 9)
    const f = await client.scatter(value)
    const pulled = f.result() as Promise<Uint8Array>
    await midStream(grid, f.key, 8 * MB)
    let cut = 0
    for (const socket of grid.coord.io.sockets.sockets.values()) {
      if ((socket.data as { hello?: { role?: string } }).hello?.role === 'client') { socket.conn.close(); cut++ }
    }
    expect(cut).toBe(1)
    const got = await pulled
    expect(digest(got)).toBe(digest(value))
    expect((client as unknown as { joiner: { size: number; bytes: number } }).joiner).toMatchObject({ size: 0, bytes: 0 })
    await until(() => internals(grid!).relays.size === 0, 'no relay left')
  })
})
