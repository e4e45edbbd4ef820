/**
 * Issue 8, what was left: a volunteer's word proves nothing unless it can be checked.
 * Hostile peers speak the wire protocol themselves (test/hostile.ts) against a real
 * coordinator; loopback addresses stand for volunteers.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { Client } from 'tabgrid'
import { startGrid, until, type Grid } from './grid.js'
import { rawPeer, workerHello } from './hostile.js'

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
