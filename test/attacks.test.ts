/**
 * Issue 8: volunteers are untrusted, and clients are tenants. Every attack the issue lists
 * is scripted here by a hostile worker or client speaking the wire protocol itself
 * (test/hostile.ts), against a real coordinator with real `tabgrid worker` processes; each
 * gets a clear refusal, and the honest client beside it sees right values, no hang, no loss.
 *
 * Loopback addresses stand for volunteers: 127.0.0.1 and .2 and .6 are honest machines,
 * every other address an attacker's.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { Client, TimeoutError, TabgridError, TaskError, startCoordinator, type RunningCoordinator } from 'tabgrid'
import { startGrid, spawnWorker, until, type Grid } from './grid.js'
import { rawPeer, workerHello, type RawPeer, type Msg } from './hostile.js'
import { decodeValue, encodeValue } from '../shared/codec.js'
import { sha256Hex } from '../shared/digest.js'
import { hashString } from '../shared/hash.js'

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i)
const status = (g: Grid): Record<string, unknown> => g.coord.coordinator.status()

/** A hostile worker that heartbeats (so its leases never run out) and answers nothing else. */
async function staller(g: Grid, name: string, address: string, slots: number): Promise<RawPeer & { stop(): void }> {
  const w = await rawPeer(g.url, workerHello(name, { slots }), { localAddress: address })
  const beat = setInterval(() => w.send({ type: 'heartbeat' }), 300)
  return Object.assign(w, { stop: () => { clearInterval(beat); w.close() } })
}

/** Answers every assignment at once with `result(args)`; reports `digest(args)` when asked for one. */
function answer(w: RawPeer, result: (args: unknown[]) => Uint8Array, digest: (args: unknown[]) => string, push: (args: unknown[]) => Uint8Array | undefined): void {
  w.onMessage = m => {
    if (m.type !== 'assign') return
    const args = decodeValue(m.args as Uint8Array) as unknown[]
    const bytes = result(args)
    const fin: Record<string, unknown> = { type: 'finished', key: m.key, attempt: m.attempt, nbytes: bytes.byteLength, ms: 1 }
    if (m.digest) fin.digest = digest(args)
    const pushed = m.push ? push(args) : undefined
    if (pushed) fin.data = pushed
    w.send(fin)
  }
}

describe('hostile volunteers', () => {
  let grid: Grid
  let client: Client

  beforeAll(async () => {
    grid = await startGrid({
      workers: 1,
      coordinator: {
        // short enough for a test; the defaults are a lease (15 s) and 5 s
        deadlines: { minMs: 1_200 }, stealTimeoutMs: 1_000, redundancyWaitMs: 2_000, maxBadMessages: 10_000,
      },
    })
    await grid.addWorker(['--nprocs', '1', '--local-address', '127.0.0.2'], 'honest-2')
    await grid.addWorker(['--nprocs', '1', '--local-address', '127.0.0.6'], 'honest-6')
    client = await Client.connect(grid.url, { token: grid.token })
  })
  afterAll(async () => {
    await client?.close()
    await grid?.close()
  })

  it('stall the grid: 4,096 claimed slots and heartbeats get a small window, and its tasks are taken back past their deadline', async () => {
    const w = await staller(grid, 'staller', '127.0.0.10', 4096)
    try {
      const out = await client.gather(client.with({ pure: false }).map((x: number) => x + 1, range(300)))
      expect(out).toEqual(range(300).map(x => x + 1))
      // it was given its window, not 4,096 tasks, and every task it held went back
      const got = w.of('assign')
      expect(got.length).toBeGreaterThan(0)
      expect(got.length).toBeLessThanOrEqual(16)
      await until(() => w.of('cancel-task').length >= got.length, 'the staller to lose what it held')
      expect(grid.coord.coordinator.metrics.deadlinesMissed).toBeGreaterThanOrEqual(got.length)
      const me = (await client.workers()).find(x => x.name === 'staller')!
      expect(me.processing).toBe(0)
    } finally { w.stop() }
  })

  it('stall the grid: a victim that ignores steal-requests loses the tasks anyway', async () => {
    const w = await staller(grid, 'deaf', '127.0.0.11', 1)
    try {
      // slow enough that idle honest workers ask to steal what the deaf one queued
      const out = await client.gather(client.with({ pure: false }).map(async (x: number) => { await new Promise(r => setTimeout(r, 20)); return x * 3 }, range(40)))
      expect(out).toEqual(range(40).map(x => x * 3))
      expect(w.of('assign').length).toBeGreaterThan(0)
      expect(w.of('cancel-task').length).toBeGreaterThanOrEqual(w.of('assign').length)
    } finally { w.stop() }
  })

  it('hoard scattered data: a put the worker never acknowledges goes to another worker', async () => {
    const w = await rawPeer(grid.url, workerHello('hoarder'), { localAddress: '127.0.0.16' })
    try {
      // one copy on every worker, so the hoarder is surely sent one, whatever the others hold
      await until(async () => (await client.workers()).some(x => x.name === 'hoarder'), 'the hoarder to join')
      const s = await client.scatter({ hoarded: 'no' }, { replicas: (await client.workers()).length })
      await w.waitFor(m => m.type === 'put', 'the put')
      expect(await s.result()).toEqual({ hoarded: 'no' })
      expect(grid.coord.coordinator.scheduler.whoHas(s.key)).not.toContain(w.of('welcome')[0]!.id)
      await w.waitFor(m => m.type === 'free' && (m.keys as string[]).includes(s.key), 'the hoarder to be told to drop it')
    } finally { w.close() }
  })

  it("take over an identity: a worker's public id resumes nothing", async () => {
    const victim = (await client.workers()).find(x => x.name === 'honest-2')!
    const w = await rawPeer(grid.url, workerHello('impostor', { resume: victim.id }), { localAddress: '127.0.0.12' })
    try {
      const welcome = await w.waitFor(m => m.type === 'welcome', 'a welcome')
      expect(welcome).toMatchObject({ resumed: false })
      expect(welcome.id).not.toBe(victim.id)
      expect(welcome.resume).toMatch(/^[0-9a-f]{48}$/)
      expect((await client.workers()).find(x => x.id === victim.id)).toMatchObject({ name: 'honest-2', connected: true })
    } finally { w.close() }
  })

  it('claim data it never computed: a new worker\'s held keys are not believed', async () => {
    const xs = client.with({ pure: false }).map((x: number) => `value-${x}`, range(20))
    await client.gather(xs)
    const keys = xs.map(f => f.key)
    const w = await rawPeer(grid.url, workerHello('claimer', { held: keys.map(key => ({ key, nbytes: 16 })) }), { localAddress: '127.0.0.13' })
    w.onMessage = m => { if (m.type === 'fetch') w.send({ type: 'data', id: m.id, key: m.key, data: encodeValue('forged') }) }
    try {
      // it is told to drop what it announced, and is never asked for those keys
      const free = await w.waitFor(m => m.type === 'free', 'a free')
      expect(free.keys).toEqual(keys)
      const me = (await client.workers()).find(x => x.name === 'claimer')!
      for (const k of keys) expect(grid.coord.coordinator.scheduler.whoHas(k)).not.toContain(me.id)
      // nor is a 'stored' for bytes it was never sent (a fetched copy, a put, a hand-off)
      w.send({ type: 'stored', key: keys[0], nbytes: 16 })
      await until(() => w.errors().length, 'a refusal')
      expect(w.errors()[0]).toMatch(/^forbidden: 'stored' for .* whose bytes this worker was never sent/)
      for (const k of keys) expect(grid.coord.coordinator.scheduler.whoHas(k)).not.toContain(me.id)
      for (let i = 0; i < 20; i++) expect(await xs[i]!.result()).toBe(`value-${i}`)
      expect(w.of('fetch')).toEqual([])
    } finally { w.close() }
  })

  it("evict honest holders: 'missing' naming other workers is refused and evicts nothing", async () => {
    const s = await client.scatter({ scattered: [1, 2, 3] })
    const c = client.with({ pure: false }).submit(() => 'computed')
    await c.result()
    await s.result()
    const holdersS = grid.coord.coordinator.scheduler.whoHas(s.key)
    const holdersC = grid.coord.coordinator.scheduler.whoHas(c.key)
    const w = await rawPeer(grid.url, workerHello('evictor'), { localAddress: '127.0.0.14' })
    let once = false
    w.onMessage = m => {
      if (m.type !== 'assign' || once) return
      once = true
      const deps = m.deps as { key: string }[]
      w.send({ type: 'missing', key: m.key, attempt: m.attempt, missing: deps.map(d => ({ key: d.key, holder: grid.coord.coordinator.scheduler.whoHas(d.key)[0] ?? 'x' })) })
    }
    try {
      const g = client.with({ pure: false, workers: ['evictor'] }).submit((a: unknown, b: unknown) => [a, b], s, c)
      await until(() => w.errors().length, 'a refusal')
      expect(w.errors()[0]).toMatch(/^forbidden: 'missing' names other workers/)
      expect(grid.coord.coordinator.scheduler.whoHas(s.key)).toEqual(holdersS)
      expect(grid.coord.coordinator.scheduler.whoHas(c.key)).toEqual(holdersC)
      expect(await s.result()).toEqual({ scattered: [1, 2, 3] })
      expect((await client.story(c.key) as { to: string }[]).filter(e => e.to === 'processing')).toHaveLength(1)
      await client.cancel([g])
    } finally { w.close() }
  })

  it('read anything: a worker fetches only inputs of tasks it was given', async () => {
    const secret = client.with({ pure: false }).submit(() => 'not for volunteers')
    await secret.result()
    const w = await rawPeer(grid.url, workerHello('reader'), { localAddress: '127.0.0.15' })
    try {
      w.send({ type: 'fetch', id: 1, key: secret.key })
      const err = await w.waitFor(m => m.type === 'data-error', 'a data-error')
      expect(err).toMatchObject({ id: 1, key: secret.key, error: { code: 'forbidden' } })
      expect((err.error as { message: string }).message).toMatch(/not an input of a task assigned to this worker/)
      expect(w.of('data')).toEqual([])
    } finally { w.close() }
  })

  it('defeat redundancy with two connections: one attacker is one volunteer, is outvoted, and is quarantined', async () => {
    const wrong = (args: unknown[]): Uint8Array => encodeValue(-(args[0] as number))
    const x1 = await rawPeer(grid.url, workerHello('twin-1'), { localAddress: '127.0.0.3' })
    const x2 = await rawPeer(grid.url, workerHello('twin-2'), { localAddress: '127.0.0.3' })
    for (const x of [x1, x2]) answer(x, wrong, a => sha256Hex(wrong(a)), wrong)
    const twins = await Promise.all([x1, x2].map(async x => (await x.waitFor(m => m.type === 'welcome', 'a welcome')).id as string))
    const fs = client.with({ redundancy: 2, pure: false }).map((x: number) => x * 2, range(30))
    expect(await client.gather(fs)).toEqual(range(30).map(x => x * 2))
    // no task had both twins' votes; outvoted, both connections were cut and the address is barred
    expect(x1.of('assign').length + x2.of('assign').length).toBeGreaterThan(0)
    for (const f of fs) {
      const ran = (await client.story(f.key) as { worker?: string; note?: string }[]).filter(e => /^attempt \d+$/.test(e.note ?? '')).map(e => e.worker)
      expect(ran.filter(id => twins.includes(id!)).length).toBeLessThanOrEqual(1)
    }
    await until(() => x1.closed() && x2.closed(), 'the twins to be cut')
    expect([...x1.errors(), ...x2.errors()].join('\n')).toMatch(/forbidden: quarantined: this worker was outvoted/)
    await expect(rawPeer(grid.url, workerHello('twin-3'), { localAddress: '127.0.0.3' })).rejects.toThrow(/quarantined/)
    expect(grid.coord.coordinator.metrics.quarantined).toBeGreaterThanOrEqual(1)
  })

  for (const [k, pushes] of [[2, true], [3, false]] as const) {
    it(`defeat redundancy with the agreed digest but other bytes (k=${k}, ${pushes ? 'pushed with its report' : 'served when fetched'}): the coordinator checks the bytes`, async () => {
      const right = (args: unknown[]): Uint8Array => encodeValue((args[0] as number) * 2)
      const forged = (args: unknown[]): Uint8Array => encodeValue(-(args[0] as number))
      const liar = await rawPeer(grid.url, workerHello(`liar-${k}`), { localAddress: `127.0.0.${20 + k}` })
      // it reports the honest digest, and pushes forged bytes with its report, or serves them when fetched
      answer(liar, right, a => sha256Hex(right(a)), a => (pushes ? forged(a) : undefined))
      liar.onMessage = (h => (m: Msg) => {
        if (m.type === 'fetch') liar.send({ type: 'data', id: m.id, key: m.key, data: encodeValue('forged') })
        else h(m)
      })(liar.onMessage)
      try {
        const fs = client.with({ redundancy: k, pure: false }).map((x: number) => x * 2, range(30))
        expect(await client.gather(fs)).toEqual(range(30).map(x => x * 2))
        if (!pushes && !liar.closed()) {
          // keep the honest holders busy, so the least busy holder a gather reads from is the liar
          const honest = (await client.workers()).filter(w => w.name !== `liar-${k}`).map(w => w.name)
          const busy = honest.map(name => client.with({ pure: false, workers: [name] }).submit(async (ms: number) => { await new Promise(r => setTimeout(r, ms)); return ms }, 3000))
          await until(async () => (await client.workers()).filter(w => honest.includes(w.name)).every(w => (w.processing as number) > 0), 'the honest workers to be busy')
          expect(await client.gather(fs)).toEqual(range(30).map(x => x * 2))
          await client.gather(busy)
        }
        await until(() => liar.closed(), 'the liar to be cut')
        if (!pushes) expect(liar.of('fetch').length).toBeGreaterThan(0)
        expect(liar.errors().join('\n')).toMatch(pushes
          ? /forbidden: quarantined: this worker pushed bytes of .* that are not what its digest says/
          : /forbidden: quarantined: this worker served bytes of .* whose SHA-256 \(\w+…\) is not the one agreed/)
      } finally { liar.close() }
    })
  }

  it('redundancy that cannot be met fails with a clear error after a deadline instead of hanging', async () => {
    // three honest volunteers are left (once the attackers' connections are gone): four agreeing runs can't happen
    await until(() => grid.coord.coordinator.scheduler.workers().length === 3, 'only the honest workers')
    const f = client.with({ redundancy: 4, pure: false }).submit((x: number) => x + 1, 1)
    const err = await f.result().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TimeoutError)
    expect((err as Error).message).toMatch(/needs 4 agreeing runs on distinct volunteers; 3 volunteers ran it \(3 agreeing\) and no other was available for 2000 ms/)
    // and the grid goes on
    expect(await client.submit((x: number) => x + 1, 41).result()).toBe(42)
  })
})

describe('identities resume only with their secret', () => {
  let grid: Grid
  let client: Client
  beforeAll(async () => {
    grid = await startGrid({ workers: 0, coordinator: { workerGraceMs: 2_500, clientGraceMs: 5_000, maxBadMessages: 10_000, deadlines: { minMs: 1_200 } } })
    await grid.addWorker(['--nprocs', '1'], 'victim')
    client = await Client.connect(grid.url, { token: grid.token })
  })
  afterAll(async () => {
    await client?.close()
    await grid?.close()
  })

  it("an impostor with a gone worker's id gets a fresh identity, and none of its data", async () => {
    const xs = client.with({ pure: false }).map((x: number) => x * 10, range(20))
    expect(await client.gather(xs)).toEqual(range(20).map(x => x * 10))
    // the values are held by the victim; the keeper will recompute them
    await grid.addWorker(['--nprocs', '1'], 'keeper')
    const victimId = (await client.workers()).find(w => w.name === 'victim')!.id
    expect(victimId).toMatch(/^w-[0-9a-f]{12}$/)
    const victim = grid.workers.find(w => w.name === 'victim')!
    victim.kill('SIGKILL')
    await until(async () => (await client.workers()).find(w => w.id === victimId)?.connected === false, 'the victim to be in its grace period')
    // the impostor serves forged values to anyone who asks
    const w = await rawPeer(grid.url, workerHello('victim', { resume: victimId }), { localAddress: '127.0.0.30' })
    w.onMessage = m => { if (m.type === 'fetch') w.send({ type: 'data', id: m.id, key: m.key, data: encodeValue(-1) }) }
    try {
      const welcome = await w.waitFor(m => m.type === 'welcome', 'a welcome')
      expect(welcome).toMatchObject({ resumed: false })
      expect(welcome.id).not.toBe(victimId)
      // the values are recomputed on the keeper once the victim's grace ends: none comes from the impostor
      expect(await client.gather(xs)).toEqual(range(20).map(x => x * 10))
      expect(w.of('fetch')).toEqual([])
    } finally { w.close() }
  })

  it("a client's public id resumes nothing; its secret does, once", async () => {
    const a = await rawPeer(grid.url, { role: 'client', token: grid.token })
    const welcome = await a.waitFor(m => m.type === 'welcome', 'a welcome')
    const id = welcome.id as string
    const secret = welcome.resume as string
    expect(id).toMatch(/^c-[0-9a-f]{12}$/)
    a.close()
    await until(() => a.closed(), 'a to close')
    const impostor = await rawPeer(grid.url, { role: 'client', token: grid.token, resume: id })
    const w2 = await impostor.waitFor(m => m.type === 'welcome', 'a welcome')
    expect(w2).toMatchObject({ resumed: false })
    expect(w2.id).not.toBe(id)
    impostor.close()
    // the owner comes back with its secret, and is given a new one
    const back = await rawPeer(grid.url, { role: 'client', token: grid.token, resume: secret })
    const w3 = await back.waitFor(m => m.type === 'welcome', 'a welcome')
    expect(w3).toMatchObject({ id, resumed: true })
    expect(w3.resume).not.toBe(secret)
    back.close()
    await until(() => back.closed(), 'back to close')
    // the old secret resumes nothing any more
    const again = await rawPeer(grid.url, { role: 'client', token: grid.token, resume: secret })
    expect(await again.waitFor(m => m.type === 'welcome', 'a welcome')).toMatchObject({ resumed: false })
    again.close()
  })
})

describe('hostile clients', () => {
  let grid: Grid
  let honest: Client
  beforeAll(async () => {
    grid = await startGrid({
      workers: 1,
      coordinator: { maxBadMessages: 10_000, outputCapBytes: 4 << 20, stallMs: 1_500, clientLimits: { tasks: 500, bytes: 256 << 20, sources: 512 << 10 } },
    })
    honest = await Client.connect(grid.url, { token: grid.token })
  })
  afterAll(async () => {
    await honest?.close()
    await grid?.close()
  })

  const hostileClient = (): Promise<RawPeer> => rawPeer(grid.url, { role: 'client', token: grid.token, name: 'hostile' })

  it("replace another client's code: a hash must be its source's, and a key names one computation", async () => {
    const double = (x: number): number => x * 2
    const f = honest.submit(double, 21)
    expect(await f.result()).toBe(42)
    const h = await hostileClient()
    try {
      const evil = '(x) => -1'
      // the honest hash with other source: refused
      h.send({ type: 'function', hash: hashString(double.toString()), source: evil })
      await until(() => h.errors().length, 'a refusal')
      expect(h.errors()[0]).toMatch(/^bad-message: function hash .* is not the hash of the source/)
      // its own function under the honest key: refused, and the honest value stands
      h.send({ type: 'function', hash: hashString(evil), source: evil })
      h.send({ type: 'submit', tasks: [{ key: f.key, fn: hashString(evil), args: encodeValue([21]), deps: [], group: 'double' }] })
      const st = await h.waitFor(m => m.type === 'key-state', 'a key-state')
      expect(st).toMatchObject({ key: f.key, state: 'erred', error: { code: 'forbidden' } })
      expect((st.error as { message: string }).message).toMatch(/already names another computation/)
      expect(await f.result()).toBe(42)
      expect(await honest.submit(double, 21).result()).toBe(42)
      // a key squatted first: the honest client gets a clear error, never the squatter's value
      const squat = honest.submit((x: number) => x * 5, 3)
      squat.release()
      await until(() => grid.coord.coordinator.scheduler.taskStatus(squat.key) === undefined, 'the key to be forgotten')
      h.send({ type: 'submit', tasks: [{ key: squat.key, fn: hashString(evil), args: encodeValue([3]), deps: [], group: 'g' }] })
      await until(() => grid.coord.coordinator.scheduler.taskStatus(squat.key) !== undefined, 'the squat')
      const err = await honest.submit((x: number) => x * 5, 3).result().catch((e: unknown) => e)
      expect(err).toBeInstanceOf(TabgridError)
      expect((err as TabgridError).code).toBe('forbidden')
    } finally { h.close() }
  })

  it("replace another client's modules: each client imports its own", async () => {
    await honest.uploadModule('stats', 'export const mean = xs => xs.reduce((a, b) => a + b, 0) / xs.length')
    const other = await Client.connect(grid.url, { token: grid.token })
    try {
      await other.uploadModule('stats', 'export const mean = () => 666')
      const mean = async (xs: number[]): Promise<number> => ((await importModule('stats')) as { mean: (x: number[]) => number }).mean(xs)
      expect(await honest.with({ pure: false }).submit(mean, [1, 2, 3]).result()).toBe(2)
      expect(await other.with({ pure: false }).submit(mean, [1, 2, 3]).result()).toBe(666)
      // a client without the module has none
      const third = await Client.connect(grid.url, { token: grid.token })
      const err = await third.with({ pure: false }).submit(mean, [1]).result().catch((e: unknown) => e)
      expect(err).toBeInstanceOf(TaskError)
      expect((err as Error).message).toMatch(/no module named "stats" was uploaded by this task's client/)
      await third.close()
    } finally { await other.close() }
  })

  it("cancel anybody's work: a cancel drops only the caller's interest", async () => {
    const slow = async (ms: number): Promise<string> => { await new Promise(r => setTimeout(r, ms)); return `slept ${ms}` }
    const mine = honest.submit(slow, 400)
    const other = await Client.connect(grid.url, { token: grid.token })
    try {
      const theirs = other.submit(slow, 400)
      expect(theirs.key).toBe(mine.key)
      await other.cancel([theirs])
      expect(theirs.status).toBe('cancelled')
      expect(await mine.result()).toBe('slept 400')
      // and after it finished
      const again = other.submit(slow, 400)
      await other.cancel([again])
      expect(await mine.result()).toBe('slept 400')
      expect(mine.status).toBe('finished')
      // a raw cancel from a client that never wanted it changes nothing
      const h = await hostileClient()
      h.send({ type: 'cancel', keys: [mine.key] })
      await new Promise(r => setTimeout(r, 100))
      expect(await mine.result()).toBe('slept 400')
      h.close()
    } finally { await other.close() }
  })

  it('exhaust memory: gathers of a big value for a client that reads nothing are paused, then cut', async () => {
    const big = honest.with({ pure: false }).submit(() => new Uint8Array(24 << 20).fill(7))
    expect(await honest.submit((a: Uint8Array) => a.byteLength, big).result()).toBe(24 << 20)
    const h = await hostileClient()
    const clients = status(grid).clients as number
    h.stopReading()
    h.send(...range(5).map(() => ({ type: 'gather', keys: [big.key] })))
    const m = grid.coord.coordinator.metrics
    await until(() => m.connectionsCut >= 1, 'the client that reads nothing to be cut')
    expect(status(grid).clients).toBe(clients - 1)
    // 120 MB asked for; what waited at the coordinator stayed near the 4 MB cap
    expect(m.peakOutputBytes).toBeLessThan(16 << 20)
    // the holder goes on serving honest clients
    const v = await big.result() as Uint8Array
    expect(v.byteLength).toBe(24 << 20)
    expect(v[12345]).toBe(7)
  })

  it('exhaust memory: tasks past a client\'s limit are refused with TooLargeError; finished ones free their place', async () => {
    const gate = honest.with({ pure: false }).submit(async () => { await new Promise(r => setTimeout(r, 1500)); return 1 })
    const fs = honest.with({ pure: false }).map((g: number, x: number) => g + x, range(600).map(() => gate), range(600))
    const settled = await Promise.all(fs.map(f => f.result().then(v => ({ v }), (e: Error) => ({ e }))))
    const refused = settled.filter(s => 'e' in s)
    expect(refused.length).toBeGreaterThanOrEqual(100)
    expect(refused[0]).toMatchObject({ e: { code: 'too-large', message: expect.stringMatching(/this client has \d+ tasks at the coordinator, its limit/) } })
    expect(settled.filter(s => 'v' in s).length).toBeGreaterThanOrEqual(400)
    for (const f of fs) f.release()
    gate.release()
    await until(() => (grid.coord.coordinator.scheduler.counts().memory ?? 0) < 50, 'the results to be released')
    expect(await honest.gather(honest.with({ pure: false }).map((x: number) => x, range(400)))).toEqual(range(400))
  })

  it('exhaust memory: function sources are capped per client, and freed when no task uses them', async () => {
    const before = status(grid).functions as number
    const h = await hostileClient()
    for (let i = 0; i < 40; i++) {
      const source = `() => ${JSON.stringify(`${i}`.padEnd(100_000, 'x'))}.length`
      h.send({ type: 'function', hash: hashString(source), source })
    }
    h.send({ type: 'request', id: 1, op: { op: 'workers' } })
    await h.waitFor(m => m.type === 'reply', 'the reply')
    // 4 MB sent, 512 KB kept: the oldest unused ones made room
    expect(status(grid).functions as number).toBeLessThanOrEqual(before + 6)
    h.close()
    await until(() => (status(grid).functions as number) <= before, 'its sources to be freed once it is gone', 10_000)
  })

  it('exhaust memory: parts are held as they arrive, not as their header claims', async () => {
    const h = await hostileClient()
    const arrayBuffers = (): number => process.memoryUsage().arrayBuffers
    const base = arrayBuffers()
    // 30 values that each claim 1 GB, 1 MB of each sent
    for (let i = 0; i < 30; i++) h.send({ type: 'scatter', key: `claims-a-gigabyte-${i}`, data: new Uint8Array(1 << 20), part: 0, parts: 1024, total: 1 << 30 })
    h.send({ type: 'request', id: 1, op: { op: 'workers' } })
    await h.waitFor(m => m.type === 'reply', 'the reply')
    expect(arrayBuffers() - base).toBeLessThan(256 << 20)
    h.close()
    expect(await honest.submit((x: number) => x + 1, 1).result()).toBe(2)
  })
})

describe('safe defaults', () => {
  let coord: RunningCoordinator
  beforeAll(async () => { coord = await startCoordinator({ port: 0, maxAuthFailures: 5 }) })
  afterAll(async () => { await coord?.close() })

  it('with no client token, the coordinator makes one and its dashboard URL carries it', async () => {
    expect(coord.clientToken).toMatch(/^[0-9a-f]{32}$/)
    expect(coord.dashboardUrl).toBe(`${coord.url}/?token=${coord.clientToken}`)
    await expect(rawPeer(coord.url, { role: 'client' })).rejects.toThrow(/wrong or missing client token/)
    await expect(rawPeer(coord.url, { role: 'dashboard' })).rejects.toThrow(/needs a token/)
    const ok = await rawPeer(coord.url, { role: 'client', token: coord.clientToken })
    ok.close()
  })

  it('a page on another origin cannot connect, unless allowed', async () => {
    await expect(rawPeer(coord.url, { role: 'client', token: coord.clientToken }, { origin: 'http://evil.example' })).rejects.toThrow()
    const same = await rawPeer(coord.url, { role: 'client', token: coord.clientToken }, { origin: coord.url })
    same.close()
    const allowing = await startCoordinator({ port: 0, allowOrigin: ['https://app.example.org'] })
    try {
      const app = await rawPeer(allowing.url, { role: 'client', token: allowing.clientToken }, { origin: 'https://app.example.org' })
      app.close()
      await expect(rawPeer(allowing.url, { role: 'client', token: allowing.clientToken }, { origin: 'https://evil.example' })).rejects.toThrow()
    } finally { await allowing.close() }
  })

  it('guessing tokens: each refused connection is cut, and an address that keeps failing is refused', async () => {
    for (let i = 0; i < 5; i++) {
      await expect(rawPeer(coord.url, { role: 'client', token: `guess-${i}` }, { localAddress: '127.0.0.40' })).rejects.toThrow(/wrong or missing/)
    }
    await expect(rawPeer(coord.url, { role: 'client', token: coord.clientToken }, { localAddress: '127.0.0.40' })).rejects.toThrow(/too many failed token checks from .*127\.0\.0\.40/)
    // another address is not affected
    const other = await rawPeer(coord.url, { role: 'client', token: coord.clientToken }, { localAddress: '127.0.0.41' })
    other.close()
  })

  it('the dashboard page gets a CSP that lets no other site frame it', async () => {
    const res = await fetch(`${coord.url}/`)
    expect(res.headers.get('content-security-policy')).toMatch(/frame-ancestors 'none'/)
    expect(res.headers.get('content-security-policy')).toMatch(/connect-src 'self'/)
    expect(res.headers.get('x-frame-options')).toBe('DENY')
    expect(res.headers.get('referrer-policy')).toBe('no-referrer')
  })

  it("a Node agent runs tasks under Node's permission model: no files beyond its spill folder, no processes", async () => {
    const w = spawnWorker(coord.url, ['--nprocs', '1'], 'sandboxed')
    const client = await Client.connect(coord.url, { token: coord.clientToken })
    try {
      await until(() => coord.coordinator.scheduler.workers().length > 0, 'the agent to join')
      // built from text: the test runner rewrites import() in this file's own functions
      const task = (body: string): (() => Promise<string>) => new Function(`return async () => ${body}`)() as () => Promise<string>
      const read = await client.with({ pure: false }).submit(task("(await import('node:fs')).readFileSync('/etc/passwd', 'utf8')")).result().catch((e: unknown) => e)
      expect(read).toBeInstanceOf(TaskError)
      expect((read as Error).message).toMatch(/Access to this API has been restricted/)
      const spawned = await client.with({ pure: false }).submit(task("(await import('node:child_process')).execSync('id').toString()")).result().catch((e: unknown) => e)
      expect(spawned).toBeInstanceOf(TaskError)
      expect(await client.submit((x: number) => x + 1, 1).result()).toBe(2)
    } finally {
      await client.close()
      w.kill('SIGKILL')
      await w.exited
    }
  })
})

declare global { function importModule(name: string): Promise<unknown> }
