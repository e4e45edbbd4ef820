/**
 * Fewer frames per worker. A map cut into frames is placed in one wave: a client's submit that says more tasks of
 * its turn follow (`more`) waits for them at the coordinator (CoordinatorOptions
 * submitHoldMs), so each worker gets its share in one frame; keys a worker is to free
 * ride with the next frame to it (or go within a second). Workers here are raw
 * connections speaking the worker protocol (they answer every assignment at once and
 * count the frames that bring them); hostile clients speak the client protocol directly.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { Client, startCoordinator, type RunningCoordinator } from 'tabgrid'
import { until } from './grid.js'
import { rawPeer, workerHello, type Msg, type RawPeer } from './hostile.js'
import { decodeFrame } from '../shared/wire.js'
import { decodeValue, encodeValue } from '../shared/codec.js'
import { sha256Hex } from '../shared/digest.js'
import { hashString } from '../shared/hash.js'

const VALUE = encodeValue(1)
const DIGEST = sha256Hex(VALUE)

interface Answering { peer: RawPeer; assignFrames: number; assigned: number; /** every frame received, as its messages */ frames: Msg[][] }

/** A raw worker that answers each assignment at once (value 1), one frame of answers per frame of assignments. */
async function answeringWorker(url: string, name: string): Promise<Answering> {
  const peer = await rawPeer(url, workerHello(name))
  const w: Answering = { peer, assignFrames: 0, assigned: 0, frames: [] }
  peer.socket.on('frame', (f: Uint8Array, ...attachments: Uint8Array[]) => {
    const out: object[] = []
    const msgs = decodeFrame(f, attachments) as Msg[]
    w.frames.push(msgs)
    for (const m of msgs) {
      if (m.type !== 'assign') continue
      w.assigned++
      out.push({ type: 'finished', key: m.key, attempt: m.attempt, nbytes: VALUE.byteLength, ms: 0, data: VALUE, ...(m.digest ? { digest: DIGEST } : {}) })
    }
    if (out.length) { w.assignFrames++; peer.send(...out) }
  })
  await peer.waitFor(m => m.type === 'welcome', 'a welcome')
  return w
}

let coord: RunningCoordinator | undefined
const peers: RawPeer[] = []
const clients: Client[] = []
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close().catch(() => {})
  for (const p of peers.splice(0)) p.close()
  await coord?.close()
  coord = undefined
})

async function grid(nworkers: number, submitHoldMs?: number): Promise<{ url: string; token: string; workers: Answering[] }> {
  coord = await startCoordinator({ port: 0, validate: true, ...(submitHoldMs === undefined ? {} : { submitHoldMs }) })
  const workers: Answering[] = []
  for (let i = 0; i < nworkers; i++) {
    const w = await answeringWorker(coord.url, `hold-${i}`)
    peers.push(w.peer)
    workers.push(w)
  }
  await until(() => coord!.coordinator.scheduler.workers().length === nworkers, 'the workers to join')
  return { url: coord.url, token: coord.clientToken as string, workers }
}

/** results a raw client was told are in memory so far */
const inMemory = (h: RawPeer): number => h.of('key-state').filter(m => m.state === 'memory').length

/** tasks assigned to the grid's workers so far, all told */
const assignedIn = (g: { workers: Answering[] }): number => g.workers.reduce((n, w) => n + w.assigned, 0)

/** 300 tasks with 20 kB of arguments each: the client cuts them into two frames (about 4 MB each). */
const mapInTwoFrames = (c: Client): Promise<unknown[]> => {
  const big = 'x'.repeat(20_000)
  return c.gather(c.with({ pure: false }).map((s: string) => s.length, Array.from({ length: 300 }, () => big)))
}

describe('a map cut into frames', () => {
  it('reaches each worker in one frame: the first frame waits for the rest', async () => {
    const g = await grid(60)
    const c = await Client.connect(g.url, { token: g.token })
    clients.push(c)
    const out = await mapInTwoFrames(c)
    expect(out).toEqual(Array.from({ length: 300 }, () => 1))
    // 300 tasks over 60 workers (each may hold 8 at first): all at once, one frame each
    expect(assignedIn(g)).toBe(300)
    expect(g.workers.map(w => w.assignFrames)).toEqual(g.workers.map(() => 1))
  })

  it('reaches them in a frame per frame of the client with submitHoldMs 0 (what the hold saves)', async () => {
    const g = await grid(60, 0)
    const c = await Client.connect(g.url, { token: g.token })
    clients.push(c)
    expect(await mapInTwoFrames(c)).toEqual(Array.from({ length: 300 }, () => 1))
    expect(assignedIn(g)).toBe(300)
    expect(g.workers.filter(w => w.assignFrames >= 2).length).toBeGreaterThan(30)
  })
})

describe('a client that says more follow and sends nothing more', () => {
  const fn = '(x) => x'
  const task = (key: string): object => ({ key, fn: hashString(fn), args: encodeValue([key]), deps: [], group: 'held' })
  /** a raw client that has sent its function (closed after the test unless `keep`: it leaves by itself) */
  const hostile = async (g: { url: string; token: string }, keep = true): Promise<RawPeer> => {
    const h = await rawPeer(g.url, { role: 'client', token: g.token, name: 'hostile' })
    if (keep) peers.push(h)
    h.send({ type: 'function', hash: hashString(fn), source: fn })
    return h
  }

  it('has its tasks placed after submitHoldMs all the same', async () => {
    const g = await grid(2, 200)
    const h = await hostile(g)
    h.send({ type: 'submit', tasks: [task('held-1'), task('held-2')], more: true })
    await until(() => assignedIn(g) === 2, 'the held tasks to be assigned')
    const states = await until(() => { const s = h.of('key-state'); return s.length === 2 ? s : undefined }, 'both results')
    expect(states.map(s => s.state)).toEqual(['memory', 'memory'])
  })

  it('has them placed before anything else it says (a gather right after is answered)', async () => {
    const g = await grid(2, 60_000)
    const h = await hostile(g)
    // two frames: the gather comes in the next, before submitHoldMs
    h.send({ type: 'submit', tasks: [task('g-1')], more: true })
    h.send({ type: 'gather', keys: ['g-1'] })
    const v = await h.waitFor(m => m.type === 'value' || (m.type === 'key-state' && m.state === 'memory'), 'the value or its state')
    expect(v.key).toBe('g-1')
    if (v.type === 'value') expect(decodeValue(v.data as Uint8Array)).toBe(1)
  })

  it("never holds another client's tasks: theirs run, and release what it holds", async () => {
    const g = await grid(2, 60_000)
    const h = await hostile(g)
    h.send({ type: 'submit', tasks: [task('o-1')], more: true })
    const honest = await Client.connect(g.url, { token: g.token })
    clients.push(honest)
    expect(await honest.submit((a: number, b: number) => a + b, 1, 2).result()).toBe(1) // the raw workers answer 1 to everything
    await until(() => coord!.coordinator.scheduler.taskStatus('o-1') === 'memory', "the hostile client's task, released by the other's submit")
  })

  it('loses nothing when it leaves while its tasks are held, and the coordinator stays consistent', async () => {
    const g = await grid(2, 60_000)
    const h = await hostile(g, false)
    h.send({ type: 'submit', tasks: [task('l-1'), task('l-2')], more: true })
    await until(() => coord!.coordinator.metrics.tasksSubmitted >= 2, 'the submit to arrive')
    h.close()
    await until(() => coord!.coordinator.scheduler.counts().queued === 0 && coord!.coordinator.scheduler.counts().processing === 0, 'nothing left queued')
    const honest = await Client.connect(g.url, { token: g.token })
    clients.push(honest)
    expect(await honest.submit((x: number) => x, 5).result()).toBe(1)
  })

  it('gets nothing odd from a frame of 5,000 one-task submits that each say more: all run, each once', async () => {
    const g = await grid(4, 60_000)
    const h = await hostile(g)
    h.send(...Array.from({ length: 5000 }, (_, i) => ({ type: 'submit', tasks: [task(`m-${i}`)], more: true })))
    // the free workers' room (4 × 8) is what it may hold: past it, they go
    await until(() => assignedIn(g) >= 32, 'the first wave')
    h.send({ type: 'submit', tasks: [] })
    await until(() => inMemory(h) === 5000, 'every result', 30_000)
    expect(assignedIn(g)).toBe(5000)
    expect(new Set(h.of('key-state').map(m => m.key)).size).toBe(5000)
  })

  it('is given submitHoldMs more by each frame that says more: frames 1.2 s apart with a 2 s hold are one wave', async () => {
    const g = await grid(4, 2_000)
    const h = await hostile(g)
    const frame = (n: number, more: boolean): void => h.send({ type: 'submit', tasks: Array.from({ length: 4 }, (_, i) => task(`s-${n}-${i}`)), ...(more ? { more: true } : {}) })
    frame(0, true)
    await new Promise(r => setTimeout(r, 1_200))
    frame(1, true)
    await new Promise(r => setTimeout(r, 1_200))
    // 2.4 s after the first frame: a hold counted from it alone would have placed the first 8 by now
    expect(assignedIn(g)).toBe(0)
    frame(2, false)
    await until(() => inMemory(h) === 12, 'every result')
    // 12 tasks on 4 workers with room for 32: one frame each
    expect(g.workers.map(w => w.assignFrames)).toEqual([1, 1, 1, 1])
    expect(g.workers.map(w => w.assigned)).toEqual([3, 3, 3, 3])
  })

  it('cannot hold its tasks past 5 × submitHoldMs by sending a task that says more every 100 ms', async () => {
    // 20 workers have room for 160 tasks: the room never ends this hold, the allowance does
    const g = await grid(20, 200)
    const h = await hostile(g)
    const t0 = performance.now()
    let n = 0
    // up to 6 s of frames that each say more: the hold ends after 1 s all the same
    while (performance.now() - t0 < 6_000 && assignedIn(g) === 0) {
      h.send({ type: 'submit', tasks: [task(`t-${n++}`)], more: true })
      await new Promise(r => setTimeout(r, 100))
    }
    const heldMs = performance.now() - t0
    expect(assignedIn(g)).toBeGreaterThan(0)
    // each frame renewed it (200 ms each, 100 ms apart): it lasted past 200 ms, and ended well before the client stopped
    expect(heldMs).toBeGreaterThan(900)
    expect(heldMs).toBeLessThan(4_000)
    expect(n).toBeLessThan(160)
    h.send({ type: 'submit', tasks: [] })
    await until(() => inMemory(h) === n, 'every result')
  })

  it('is not a coordinator option that can be anything: submitHoldMs is refused out of 0 to 60,000 ms', async () => {
    for (const bad of [-1, Number.NaN, 60_001, '200']) {
      await expect(startCoordinator({ port: 0, submitHoldMs: bad as number })).rejects.toThrow(/submitHoldMs must be a number of ms from 0 to 60000/)
    }
  })

  it('is refused a `more` that is not a boolean, and nothing is taken', async () => {
    const g = await grid(1, 60_000)
    const h = await hostile(g)
    h.send({ type: 'submit', tasks: [task('b-1')], more: 'yes' })
    await until(() => h.errors().length, 'a refusal')
    expect(h.errors()[0]).toMatch(/^bad-message: bad client message "submit"/)
    expect(coord!.coordinator.scheduler.taskStatus('b-1')).toBeUndefined()
    expect(g.workers[0]!.assigned).toBe(0)
  })
})

describe('keys a worker is to free', () => {
  it('ride with the next frame to it, before what follows (a key freed and computed there again is kept)', async () => {
    const g = await grid(1)
    const w = g.workers[0]!
    const c = await Client.connect(g.url, { token: g.token })
    clients.push(c)
    const double = (x: number): number => x * 2
    const f = c.submit(double, 21)
    expect(await f.result()).toBe(1) // the raw worker answers 1
    const before = w.frames.length
    f.release()
    await until(() => coord!.coordinator.scheduler.taskStatus(f.key) === undefined, 'the key to be forgotten')
    // the same key again, on the same (only) worker: the free goes first, in the same frame
    const again = c.submit(double, 21)
    expect(again.key).toBe(f.key)
    expect(await again.result()).toBe(1)
    const after = w.frames.slice(before)
    const withAssign = after.find(fr => fr.some(m => m.type === 'assign'))!
    expect(withAssign.map(m => m.type)).toEqual(['free', 'assign'])
    expect(withAssign[0]!.keys).toEqual([f.key])
    expect(withAssign[1]!.key).toBe(f.key)
    expect(coord!.coordinator.scheduler.whoHas(f.key)).toEqual([w.peer.received.find(m => m.type === 'welcome')!.id])
  })

  it('go on their own when nothing else goes to the worker', async () => {
    const g = await grid(1)
    const w = g.workers[0]!
    const c = await Client.connect(g.url, { token: g.token })
    clients.push(c)
    const f = c.submit((x: number) => x + 1, 1)
    await f.result()
    f.release()
    const free = await w.peer.waitFor(m => m.type === 'free', 'the free on its own', 10_000)
    expect(free.keys).toEqual([f.key])
  })
})
