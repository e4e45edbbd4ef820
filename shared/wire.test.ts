import { describe, expect, it } from 'vitest'
import { Outbox, PartJoiner, decodeFrame, encodeFrame, packFrame, splitParts, streamParts } from './wire.js'
import { LIMITS } from './protocol.js'
import { TabgridError, TooLargeError } from './errors.js'

const CHUNK = LIMITS.chunkBytes

/** n bytes of a pattern that tells every position apart (so a misplaced part shows) */
function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n)
  let x = seed
  for (let i = 0; i < n; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 24 }
  return b
}

const same = (a: Uint8Array, b: Uint8Array): boolean => a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))

describe('frames with attachments', () => {
  it('big binary data travels beside the frame, the very same bytes; small data stays inside; the messages are not changed', () => {
    const big = pattern(LIMITS.attachBytes)
    const small = pattern(100)
    const msgs = [
      { type: 'data', id: 1, key: 'a', data: big },
      { type: 'finished', key: 'b', attempt: 1, nbytes: 3, ms: 1, data: small },
      { type: 'heartbeat' },
    ]
    const { frame, attachments } = packFrame(msgs)
    expect(attachments).toHaveLength(1)
    expect(attachments[0]).toBe(big) // not copied
    expect(frame.byteLength).toBeLessThan(300)
    expect(msgs[0]!.data).toBe(big)
    const back = decodeFrame(frame, attachments) as typeof msgs
    expect(back[0]!.data).toBe(big)
    expect(same(back[1]!.data as Uint8Array, small)).toBe(true)
    expect(back[2]).toEqual({ type: 'heartbeat' })
  })

  it('a frame without attachments is the plain msgpack frame', () => {
    const msgs = [{ type: 'fetch', id: 3, key: 'k' }]
    const { frame, attachments } = packFrame(msgs)
    expect(attachments).toEqual([])
    expect(same(frame, encodeFrame(msgs))).toBe(true)
    expect(decodeFrame(frame)).toEqual(msgs)
  })

  it('attachments may arrive as ArrayBuffers (browsers)', () => {
    const big = pattern(LIMITS.attachBytes + 8)
    const { frame, attachments } = packFrame([{ type: 'data', key: 'a', data: big }])
    const back = decodeFrame(new Uint8Array(frame).buffer, attachments.map(a => new Uint8Array(a).buffer)) as { data: Uint8Array }[]
    expect(same(back[0]!.data, big)).toBe(true)
  })

  it('refuses too many attachments, one over the chunk size, and non-binary ones; a bad index is left for validation to refuse', () => {
    const { frame } = packFrame([{ type: 'data', key: 'a', data: 0 }])
    expect(() => decodeFrame(frame, Array.from({ length: LIMITS.attachmentsPerFrame + 1 }, () => new Uint8Array(1)))).toThrow(TooLargeError)
    expect(() => decodeFrame(frame, [new Uint8Array(CHUNK + 1)])).toThrow(TooLargeError)
    expect(() => decodeFrame(frame, ['text'])).toThrow(/binary/)
    const out = decodeFrame(encodeFrame([{ type: 'data', key: 'a', data: 5 }]), [new Uint8Array(1)]) as { data: unknown }[]
    expect(out[0]!.data).toBe(5)
  })
})

describe('PartJoiner', () => {
  const parts = (data: Uint8Array, extra: object = {}) => splitParts({ type: 'data', key: 'k', data, ...extra })

  it('joins parts in order into the exact bytes', () => {
    const data = pattern(3 * CHUNK + 123)
    const j = new PartJoiner()
    const ps = parts(data)
    expect(ps).toHaveLength(4)
    for (const p of ps.slice(0, -1)) expect(j.add('k', p)).toBeUndefined()
    expect(same(j.add('k', ps.at(-1)!)!, data)).toBe(true)
    expect(j.size).toBe(0)
    expect(j.bytes).toBe(0)
  })

  it('joins parts out of order', () => {
    const data = pattern(5 * CHUNK + 7, 2)
    const ps = parts(data)
    const j = new PartJoiner()
    let out: Uint8Array | undefined
    for (const i of [4, 1, 5, 0, 3, 2]) out = j.add('k', ps[i]!) ?? out
    expect(same(out!, data)).toBe(true)
  })

  it('a single part is the data itself', () => {
    const data = pattern(10)
    expect(new PartJoiner().add('k', { data })).toBe(data)
  })

  it('an announced total reserves nothing: the whole is allocated once half of it has arrived', () => {
    const j = new PartJoiner()
    const total = 64 * CHUNK
    const part = (i: number) => ({ data: new Uint8Array(CHUNK), part: i, parts: 64, total })
    const before = process.memoryUsage().arrayBuffers
    j.add('k', part(0))
    expect(j.bytes).toBe(CHUNK)
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(8 * CHUNK)
    for (let i = 1; i < 31; i++) j.add('k', part(i))
    expect(j.bytes).toBe(31 * CHUNK)
    j.add('k', part(31))
    expect(j.bytes).toBe(total) // half arrived: now the whole is made
    j.clear()
    expect(j.bytes).toBe(0)
  })

  it('the largest announced total reserves nothing either', () => {
    const j = new PartJoiner()
    const total = LIMITS.valueBytes
    const parts = Math.ceil(total / CHUNK)
    const before = process.memoryUsage().arrayBuffers
    expect(j.add('k', { data: new Uint8Array(CHUNK), part: 0, parts, total })).toBeUndefined()
    expect(j.bytes).toBe(CHUNK)
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(8 * CHUNK)
  })

  it('a total over the cap is refused with a clear error before anything is kept; the rest of that payload is ignored; the next one joins', () => {
    const j = new PartJoiner()
    const total = LIMITS.valueBytes + 1
    const parts = Math.ceil(total / CHUNK)
    expect(() => j.add('k', { data: new Uint8Array(CHUNK), part: 0, parts, total })).toThrow(TooLargeError)
    expect(() => j.add('k', { data: new Uint8Array(CHUNK), part: 0, parts, total })).not.toThrow() // the same payload's parts: heard once
    expect(j.add('k', { data: new Uint8Array(CHUNK), part: 1, parts, total })).toBeUndefined()
    expect(j.size).toBe(0)
    expect(j.bytes).toBe(0)
    j.add('k', { data: new Uint8Array(1), part: parts - 1, parts, total }) // its last part: done with it
    const data = pattern(2 * CHUNK)
    const ps = splitParts({ data })
    j.add('k', ps[0]!)
    expect(same(j.add('k', ps[1]!)!, data)).toBe(true)
  })

  it('a duplicated part is refused and what was half joined is forgotten', () => {
    const ps = parts(pattern(3 * CHUNK))
    const j = new PartJoiner()
    j.add('k', ps[0]!)
    expect(() => j.add('k', ps[0]!)).toThrow(/twice/)
    expect(j.size).toBe(0)
    expect(j.bytes).toBe(0)
  })

  it('a part whose announced total lies is refused: totals that disagree, counts that cannot make the total, sizes that do not fit', () => {
    const data = pattern(3 * CHUNK)
    const ps = parts(data)
    let j = new PartJoiner()
    j.add('k', ps[0]!)
    expect(() => j.add('k', { ...ps[1]!, total: 3 * CHUNK - 10 })).toThrow(TabgridError)
    expect(j.size).toBe(0)
    j = new PartJoiner()
    expect(() => j.add('k', { ...ps[0]!, parts: 5 })).toThrow(/parts cannot make/)
    j = new PartJoiner()
    expect(() => j.add('k', { ...ps[2]!, data: ps[2]!.data.subarray(1) })).toThrow(/bytes, not/)
    expect(() => j.add('k', { ...ps[0]!, part: 7 })).toThrow(/bad part/)
    expect(() => j.add('k', { ...ps[0]!, total: -1 })).toThrow(/bad part/)
    expect(j.size).toBe(0)
    expect(j.bytes).toBe(0)
  })

  it('a part of another stream replaces what an earlier stream left half joined', () => {
    const old = parts(pattern(3 * CHUNK, 1), { stream: 1 })
    const data = pattern(3 * CHUNK, 9)
    const now = parts(data, { stream: 2 })
    const j = new PartJoiner()
    j.add('k', old[0]!)
    j.add('k', old[1]!)
    expect(j.add('k', now[0]!)).toBeUndefined()
    expect(j.bytes).toBe(CHUNK)
    j.add('k', now[2]!)
    expect(same(j.add('k', now[1]!)!, data)).toBe(true)
  })

  it('clear (the connection closed) leaves nothing allocated', () => {
    const j = new PartJoiner()
    for (const id of ['a', 'b', 'c']) for (const p of parts(pattern(4 * CHUNK)).slice(0, 3)) j.add(id, p)
    expect(j.size).toBe(3)
    expect(j.bytes).toBe(3 * 4 * CHUNK)
    j.clear()
    expect(j.size).toBe(0)
    expect(j.bytes).toBe(0)
  })

  it('caps how many payloads may be half joined at once', () => {
    const j = new PartJoiner(2)
    const p = parts(pattern(2 * CHUNK))[0]!
    j.add('a', p)
    j.add('b', p)
    expect(() => j.add('c', p)).toThrow(TooLargeError)
  })
})

describe('Outbox', () => {
  it('splits a big value into chunk-sized parts (views, not copies), one part per frame', async () => {
    const frames: { data?: Uint8Array }[][] = []
    const out = new Outbox<{ type: string; key: string; data: Uint8Array }>(m => frames.push(m))
    const data = pattern(3 * CHUNK + 5)
    out.push({ type: 'data', key: 'k', data })
    await Promise.resolve()
    expect(frames).toHaveLength(4)
    for (const f of frames) expect(f).toHaveLength(1)
    expect(frames[0]![0]!.data!.buffer).toBe(data.buffer)
  })

  it('cuts a frame at the attachment limit', async () => {
    const frames: object[][] = []
    const out = new Outbox<object>(m => frames.push(m))
    for (let i = 0; i < LIMITS.attachmentsPerFrame + 1; i++) out.push({ type: 'finished', key: `k${i}`, data: new Uint8Array(LIMITS.attachBytes) })
    await Promise.resolve()
    expect(frames.map(f => f.length)).toEqual([LIMITS.attachmentsPerFrame, 1])
  })

  it('without splitting (in memory), a whole value goes as it is', async () => {
    const frames: { data?: Uint8Array }[][] = []
    const out = new Outbox<{ type: string; data: Uint8Array }>(m => frames.push(m), false)
    const data = new Uint8Array(3 * CHUNK)
    out.push({ type: 'data', data })
    await Promise.resolve()
    expect(frames[0]![0]!.data).toBe(data)
  })
})

describe('streamParts', () => {
  it('sends each part once the bytes up to its end are ready, in order, then resolves', async () => {
    const bytes = new Uint8Array(new SharedArrayBuffer(3 * CHUNK + 10))
    const ready = new Int32Array(new SharedArrayBuffer(4))
    const got: { part: number; parts: number; total: number; data: Uint8Array }[] = []
    const done = streamParts({ bytes, ready }, p => got.push(p))
    await Promise.resolve()
    expect(got).toEqual([])
    Atomics.store(ready, 0, CHUNK + 5)
    Atomics.notify(ready, 0)
    await new Promise(r => setTimeout(r, 10))
    expect(got.map(p => p.part)).toEqual([0])
    Atomics.store(ready, 0, bytes.byteLength)
    Atomics.notify(ready, 0)
    await done
    expect(got.map(p => [p.part, p.parts, p.total, p.data.byteLength])).toEqual([[0, 4, bytes.byteLength, CHUNK], [1, 4, bytes.byteLength, CHUNK], [2, 4, bytes.byteLength, CHUNK], [3, 4, bytes.byteLength, 10]])
    expect(got[1]!.data.buffer).toBe(bytes.buffer) // views, not copies
  })

  it('rejects when the bytes stop coming (the thread filling them died), never hangs', async () => {
    const bytes = new Uint8Array(new SharedArrayBuffer(2 * CHUNK))
    const ready = new Int32Array(new SharedArrayBuffer(4))
    let alive = true
    const done = streamParts({ bytes, ready }, () => {}, () => alive)
    alive = false
    await expect(done).rejects.toThrow(/stopped arriving after 0 of 2 parts/)
    await expect(streamParts({ bytes, ready }, () => {}, () => true, 50)).rejects.toThrow(/stopped arriving/)
  })
})
