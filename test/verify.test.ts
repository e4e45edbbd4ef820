/**
 * Issue 8, what was left: a volunteer's word proves nothing unless it can be checked.
 * Hostile peers speak the wire protocol themselves (test/hostile.ts) against a real
 * coordinator; loopback addresses stand for volunteers.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { Client } from 'tabgrid'
import { startGrid, until, type Grid } from './grid.js'
import { rawPeer, workerHello, type RawPeer } from './hostile.js'
import { decodeValue, encodeValue } from '../shared/codec.js'
import { sha256Hex } from '../shared/digest.js'
import { PartJoiner } from '../shared/wire.js'
import { LIMITS } from '../shared/protocol.js'

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i)

const volunteerOf = (g: Grid, id: string): string | undefined => g.coord.coordinator.scheduler.byId.get(id)?.volunteer

describe('reverse proxies', () => {
  it('without --trust-proxy, X-Forwarded-For is ignored: everyone behind the proxy is one volunteer', async () => {
    const grid = await startGrid({ workers: 0 })
    try {
      const a = await rawPeer(grid.url, workerHello('a'), { localAddress: '127.0.0.50', headers: { 'x-forwarded-for': '203.0.113.7' } })
      const b = await rawPeer(grid.url, workerHello('b'), { localAddress: '127.0.0.50', headers: { 'x-forwarded-for': '203.0.113.8' } })
      const ids = await Promise.all([a, b].map(async x => (await x.waitFor(m => m.type === 'welcome', 'a welcome')).id as string))
      expect(ids.map(id => volunteerOf(grid, id))).toEqual(['127.0.0.50', '127.0.0.50'])
      a.close(); b.close()
    } finally { await grid.close() }
  })

  it('with trustProxy, the last hop of X-Forwarded-For is the address: volunteers, quarantine and auth limits follow it', async () => {
    const grid = await startGrid({ workers: 0, coordinator: { trustProxy: true, workerToken: 'join', maxAuthFailures: 3 } })
    try {
      // the proxy appends what it saw; what the peer wrote before it is not believed
      const a = await rawPeer(grid.url, workerHello('a', { token: 'join' }), { localAddress: '127.0.0.51', headers: { 'x-forwarded-for': '198.51.100.1, 203.0.113.7' } })
      const b = await rawPeer(grid.url, workerHello('b', { token: 'join' }), { localAddress: '127.0.0.51', headers: { 'x-forwarded-for': '198.51.100.1, 203.0.113.8' } })
      const ids = await Promise.all([a, b].map(async x => (await x.waitFor(m => m.type === 'welcome', 'a welcome')).id as string))
      expect(ids.map(id => volunteerOf(grid, id))).toEqual(['203.0.113.7', '203.0.113.8'])
      a.close(); b.close()
      // failed token checks count against the forwarded address, not the proxy's
      for (let i = 0; i < 3; i++) {
        await expect(rawPeer(grid.url, workerHello('guess', { token: `guess-${i}` }), { headers: { 'x-forwarded-for': '203.0.113.66' } })).rejects.toThrow(/wrong or missing worker token/)
      }
      await expect(rawPeer(grid.url, workerHello('guess', { token: 'join' }), { headers: { 'x-forwarded-for': '203.0.113.66' } })).rejects.toThrow(/too many failed token checks from 203\.0\.113\.66/)
      const other = await rawPeer(grid.url, workerHello('c', { token: 'join' }), { headers: { 'x-forwarded-for': '203.0.113.67' } })
      other.close()
    } finally { await grid.close() }
  })
})

describe('only valid frames count as a worker being seen', () => {
  let grid: Grid
  let client: Client
  beforeAll(async () => {
    grid = await startGrid({ workers: 0, coordinator: { leaseMs: 800, maxBadMessages: 10_000 } })
    client = await Client.connect(grid.url, { token: grid.token })
  })
  afterAll(async () => {
    await client?.close()
    await grid?.close()
  })

  it('a worker that sends only junk and refused claims lapses; one that heartbeats keeps its task', async () => {
    const junk = await rawPeer(grid.url, workerHello('junk'), { localAddress: '127.0.0.52' })
    const beat = await rawPeer(grid.url, workerHello('beat'), { localAddress: '127.0.0.53' })
    const timer = setInterval(() => {
      // malformed messages, and a claim outside what it was given: neither renews a lease
      junk.send({ type: 'heartbeat', memory: 'lots' }, { type: 'no-such-message' })
      junk.send({ type: 'stored', key: 'never-sent', nbytes: 1 })
      beat.send({ type: 'heartbeat' })
    }, 150)
    try {
      const fj = client.with({ pure: false, workers: ['junk'] }).submit(() => 'j')
      const fb = client.with({ pure: false, workers: ['beat'] }).submit(() => 'b')
      const aj = await junk.waitFor(m => m.type === 'assign', 'junk to be assigned its task')
      await beat.waitFor(m => m.type === 'assign', 'beat to be assigned its task')
      const cancel = await junk.waitFor(m => m.type === 'cancel-task', 'the junk sender to lose its task')
      expect(cancel).toMatchObject({ key: fj.key, attempt: aj.attempt })
      expect(junk.errors().some(e => /^bad-message:/.test(e))).toBe(true)
      expect(junk.errors().some(e => /^forbidden: 'stored'/.test(e))).toBe(true)
      // the heartbeating one still holds its own
      expect(beat.of('cancel-task')).toEqual([])
      expect((await client.workers()).find(w => w.name === 'beat')).toMatchObject({ processing: 1 })
      void fb
    } finally {
      clearInterval(timer)
      junk.close(); beat.close()
    }
  })
})

describe('copies have an ack deadline', () => {
  it("a hand-off copy a worker never confirms goes elsewhere after the deadline, and isn't believed held there", async () => {
    const grid = await startGrid({ workers: 0, coordinator: { deadlines: { minMs: 1_000 }, maxBadMessages: 10_000 } })
    const client = await Client.connect(grid.url, { token: grid.token })
    try {
      const leaver = await grid.addWorker(['--nprocs', '1'], 'leaver')
      const x = client.with({ pure: false }).submit(() => 'handed off')
      await until(async () => (await client.story(x.key)).some(e => e.to === 'memory'), 'x in memory')
      // the sink joins first, so it is the hand-off's first choice; it takes the bytes and never says 'stored'
      const sink = await rawPeer(grid.url, workerHello('sink'), { localAddress: '127.0.0.54' })
      const sinkId = (await sink.waitFor(m => m.type === 'welcome', 'a welcome')).id as string
      await grid.addWorker(['--nprocs', '1', '--local-address', '127.0.0.55'], 'keeper')
      leaver.kill('SIGINT')
      await sink.waitFor(m => m.type === 'put' && m.key === x.key, 'the copy to reach the sink')
      await sink.waitFor(m => m.type === 'free' && (m.keys as string[]).includes(x.key), 'the sink to be told to drop it')
      expect(await leaver.exited).toBe(0)
      expect(grid.coord.coordinator.scheduler.whoHas(x.key)).not.toContain(sinkId)
      expect(await x.result()).toBe('handed off')
      const story = (await client.story(x.key)).map(e => e.note ?? '')
      expect(story.some(n => /^hand-off copy not acknowledged in \d+ ms$/.test(n))).toBe(true)
      // a late ack is not believed
      sink.send({ type: 'stored', key: x.key, nbytes: 20 })
      await until(() => sink.errors().length, 'a refusal')
      expect(sink.errors()[0]).toMatch(/^forbidden: 'stored' for .* whose bytes this worker was never sent/)
      expect(grid.coord.coordinator.scheduler.whoHas(x.key)).not.toContain(sinkId)
      sink.close()
    } finally {
      await client.close()
      await grid.close()
    }
  })
})

/** Answers every assignment at once with `value(args)` (and its digest when asked; pushed when asked). */
function answer(w: RawPeer, value: (args: unknown[]) => unknown, forge = (): boolean => false): void {
  w.onMessage = m => {
    if (m.type === 'fetch') {
      const v = forge() ? encodeValue('forged') : served.get(m.key as string)
      if (v) w.send({ type: 'data', id: m.id, key: m.key, data: v })
      return
    }
    if (m.type !== 'assign') return
    // inputs it holds itself are its own values; the rest it makes up
    const args = decodeValue(m.args as Uint8Array, k => { const b = served.get(k); return b ? decodeValue(b) : 0 }) as unknown[]
    const bytes = encodeValue(value(args))
    served.set(m.key as string, bytes)
    const fin: Record<string, unknown> = { type: 'finished', key: m.key, attempt: m.attempt, nbytes: bytes.byteLength, ms: 1 }
    if (m.digest) fin.digest = sha256Hex(bytes)
    if (m.push) fin.data = bytes
    w.send(fin)
  }
  const served = new Map<string, Uint8Array>()
}

describe('results without redundancy are not simply believed', () => {
  it('spot checks: a liar\'s results are re-run on another volunteer, the mismatch goes to a quorum, and it is quarantined', async () => {
    const grid = await startGrid({ workers: 1, coordinator: { spotCheck: { rate: 1, floor: 1 }, maxBadMessages: 10_000 } })
    const client = await Client.connect(grid.url, { token: grid.token })
    try {
      await grid.addWorker(['--nprocs', '1', '--local-address', '127.0.0.56'], 'honest-56')
      const liar = await rawPeer(grid.url, workerHello('liar'), { localAddress: '127.0.0.57' })
      answer(liar, args => -(args[0] as number))
      await until(async () => (await client.workers()).length === 3, 'three workers')
      const fs = client.map((x: number) => x * 2, range(40).map(i => i + 1000))
      expect(await client.gather(fs)).toEqual(range(40).map(i => (i + 1000) * 2))
      expect(liar.of('assign').length).toBeGreaterThan(0)
      // every assignment asked for a digest alike (the liar could not tell a check from a first run)
      expect(liar.of('assign').every(m => m.digest === true)).toBe(true)
      await until(() => liar.closed(), 'the liar to be cut')
      expect(liar.errors().join('\n')).toMatch(/forbidden: quarantined: this worker was outvoted/)
      const notes = (await Promise.all(fs.map(f => client.story(f.key)))).flat().map(e => e.note ?? '')
      expect(notes.some(n => n.startsWith('spot check passed'))).toBe(true)
    } finally {
      await client.close()
      await grid.close()
    }
  })

  it('spotCheck: false opts a task out: a liar\'s result for it is believed (so impure tasks are opted out by default)', async () => {
    const grid = await startGrid({ workers: 1, coordinator: { spotCheck: { rate: 1, floor: 1 }, maxBadMessages: 10_000 } })
    const client = await Client.connect(grid.url, { token: grid.token })
    try {
      const liar = await rawPeer(grid.url, workerHello('liar'), { localAddress: '127.0.0.58' })
      answer(liar, () => 'forged')
      await until(async () => (await client.workers()).length === 2, 'two workers')
      const f = client.with({ workers: ['liar'], spotCheck: false }).submit((x: number) => x, 7)
      expect(await f.result()).toBe('forged')
      const g = client.with({ workers: ['liar'], pure: false }).submit((x: number) => x, 8)
      expect(await g.result()).toBe('forged')
      expect(liar.closed()).toBe(false)
    } finally {
      await client.close()
      await grid.close()
    }
  })
})

describe('quarantine re-verifies', () => {
  it('what a quarantined volunteer computed is re-run elsewhere: wrong values are replaced (future.replaced), dependents recomputed, right ones kept', async () => {
    // no spot checks: the liar's results are believed until it is caught
    const grid = await startGrid({ workers: 1, coordinator: { spotCheck: { rate: 0, floor: 0 }, maxBadMessages: 10_000 } })
    const client = await Client.connect(grid.url, { token: grid.token })
    try {
      await grid.addWorker(['--nprocs', '1', '--local-address', '127.0.0.59'], 'honest-59')
      const liar = await rawPeer(grid.url, workerHello('liar'), { localAddress: '127.0.0.60' })
      // right for even inputs, wrong for odd ones
      let forging = false
      answer(liar, args => typeof args[0] === 'number' && (args[0] as number) % 2 === 1 ? -1 : (args[0] as number) * 2, () => forging)
      await until(async () => (await client.workers()).length === 3, 'three workers')
      const xs = range(20).map(i => i + 2000)
      const fs = client.map((x: number) => x * 2, xs)
      const first = await client.gather(fs)
      const byLiar = new Set<string>()
      for (const f of fs) if ((await client.story(f.key)).some(e => e.to === 'memory' && e.worker === liar.of('welcome')[0]!.id)) byLiar.add(f.key)
      expect(byLiar.size).toBeGreaterThan(0)
      const wrong = fs.filter((f, i) => first[i] !== xs[i]! * 2)
      expect(wrong.length).toBeGreaterThan(0)
      // a dependent of each, computed from what the grid believed
      const gs = fs.map(f => client.submit((v: number) => v + 1, f))
      await client.gather(gs)
      // the liar is caught: it serves bytes that are not those of the digest it reported
      forging = true
      const held = fs.find(f => byLiar.has(f.key) && grid.coord.coordinator.scheduler.whoHas(f.key).length === 1)!
      expect(held).toBeDefined()
      await held.result()
      await until(() => liar.closed(), 'the liar to be quarantined')
      expect(liar.errors().join('\n')).toMatch(/quarantined: this worker served bytes of .* whose SHA-256/)
      // every wrong value is replaced, its future says so, and so is everything computed from it
      await until(() => wrong.every(f => f.replaced === 1), 'the wrong values to be replaced', 20_000)
      expect(await client.gather(fs)).toEqual(xs.map(x => x * 2))
      expect(await client.gather(gs)).toEqual(xs.map(x => x * 2 + 1))
      for (const [i, f] of fs.entries()) {
        if (first[i] === xs[i]! * 2) expect(f.replaced).toBe(0)
      }
      expect(gs.filter((g, i) => wrong.includes(fs[i]!)).every(g => g.replaced === 1)).toBe(true)
      const notes = (await Promise.all(fs.map(f => client.story(f.key)))).flat().map(e => e.note ?? '')
      expect(notes.some(n => n.startsWith('re-verified: the disputed value'))).toBe(true)
    } finally {
      await client.close()
      await grid.close()
    }
  })
})

describe('worker-side caches are capped per client', () => {
  it("a client's function sources on a worker stay under workerSourceBytes: the oldest are freed, and sent again when needed", async () => {
    const grid = await startGrid({ workers: 1, coordinator: { workerSourceBytes: 2_000, spotCheck: false } })
    const client = await Client.connect(grid.url, { token: grid.token })
    const raw = await rawPeer(grid.url, workerHello('raw'))
    answer(raw, () => 'ok')
    try {
      await until(async () => (await client.workers()).length === 2, 'two workers')
      // ten functions of ~600 bytes each (a long string inside), distinct by a number
      const fns = range(10).map(i => new Function(`return (x) => x + ${i} + '${'p'.repeat(560)}'.length`)() as (x: number) => number)
      for (const [i, f] of fns.entries()) expect(await client.submit(f, 1).result()).toBe(1 + i + 560)
      for (const f of fns) expect(await client.with({ workers: ['raw'] }).submit(f, 2).result()).toBe('ok')
      // the raw worker was never asked to hold more than the cap of this client's sources
      const held = new Map<string, number>()
      let peak = 0
      for (const m of raw.received) {
        if (m.type === 'function') held.set(m.hash as string, (m.source as string).length)
        if (m.type === 'free-functions') for (const h of m.hashes as string[]) held.delete(h)
        peak = Math.max(peak, [...held.values()].reduce((a, b) => a + b, 0))
      }
      expect(raw.of('free-functions').length).toBeGreaterThan(0)
      expect(peak).toBeLessThanOrEqual(2_000)
      // an evicted function is sent again when a task needs it, on the real worker too
      expect(await client.with({ pure: false }).submit(fns[0]!, 5).result()).toBe(5 + 560)
      expect(await client.with({ pure: false, workers: ['raw'] }).submit(fns[0]!, 5).result()).toBe('ok')
      const sentAgain = raw.of('function').filter(m => m.source === raw.of('function')[0]!.source)
      expect(sentAgain.length).toBe(2)
    } finally {
      raw.close()
      await client.close()
      await grid.close()
    }
  })
})

describe('checked relays stream', () => {
  it('a value checked against its digest is forwarded part by part as it is hashed; a forged one is cut before its last part and replaced', async () => {
    const grid = await startGrid({ workers: 0, coordinator: { spotCheck: { rate: 0, floor: 0 }, maxBadMessages: 10_000 } })
    const client = await Client.connect(grid.url, { token: grid.token })
    const n = 3 * LIMITS.chunkBytes - 1000
    const right = encodeValue(new Uint8Array(n).fill(7))
    const forged = encodeValue(new Uint8Array(n).fill(9))
    try {
      // two volunteers when it is assigned, so its digest is asked for and claimed
      const liar = await rawPeer(grid.url, workerHello('liar'), { localAddress: '127.0.0.61' })
      const bystander = await rawPeer(grid.url, workerHello('bystander'), { localAddress: '127.0.0.62' })
      liar.onMessage = m => {
        if (m.type === 'assign') liar.send({ type: 'finished', key: m.key, attempt: m.attempt, nbytes: right.byteLength, ms: 1, digest: sha256Hex(right) })
        if (m.type === 'fetch') {
          const parts = Math.ceil(forged.byteLength / LIMITS.chunkBytes)
          for (let i = 0; i < parts; i++) {
            liar.send({ type: 'data', id: m.id, key: m.key, data: forged.subarray(i * LIMITS.chunkBytes, (i + 1) * LIMITS.chunkBytes), part: i, parts, total: forged.byteLength })
          }
        }
      }
      await until(async () => (await client.workers()).length === 2, 'two workers')
      const big = client.with({ pure: false }).submit((k: number) => new Uint8Array(k).fill(7), n)
      await liar.waitFor(m => m.type === 'assign', 'the liar to be assigned it')
      expect(liar.of('assign')[0]!.digest).toBe(true)
      await until(async () => (await client.story(big.key)).some(e => e.to === 'memory'), 'big in memory')
      bystander.close()
      await until(() => grid.coord.coordinator.scheduler.workers().length === 1, 'the bystander to be gone')
      await grid.addWorker(['--nprocs', '1', '--local-address', '127.0.0.63'], 'honest')
      // a raw client gathers it and keeps every part it is sent
      const reader = await rawPeer(grid.url, { role: 'client', token: grid.token })
      reader.send({ type: 'gather', keys: [big.key] })
      const joiner = new PartJoiner()
      let value: Uint8Array | undefined
      reader.onMessage = m => { if (m.type === 'data' && m.key === big.key) value = joiner.add(big.key, m as never) ?? value }
      await until(() => liar.closed(), 'the liar to be quarantined')
      expect(liar.errors().join('\n')).toMatch(/quarantined: this worker served bytes of .* whose SHA-256/)
      await until(() => value, 'the value')
      // the liar's stream reached the reader as it passed, all but its last part; the value is the recomputed one
      const streams = reader.of('data').map(m => m.stream)
      const first = streams[0]
      expect(streams.filter(s => s === first)).toHaveLength(2)
      expect(streams.some(s => s !== first)).toBe(true)
      // (compared as bytes: a deep equality over 3 million elements would stall the event loop)
      const sevens = (v: unknown): boolean => v instanceof Uint8Array && v.byteLength === n && v.every(b => b === 7)
      expect(sevens(decodeValue(value!))).toBe(true)
      expect(sevens(await big.result())).toBe(true)
      reader.close()
    } finally {
      await client.close()
      await grid.close()
    }
  })
})
