import { describe, expect, it } from 'vitest'
import { encodedStringBytes, packFrames, splitMessage } from './frames.js'
import { decodeFrame, packFrame } from './wire.js'
import { LIMITS } from './protocol.js'
import { TooLargeError } from './errors.js'

/** keys of 8 ASCII characters: 9 bytes each in msgpack (a fixstr header and the characters) */
const keys = (n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => `k${String(from + i).padStart(7, '0')}`)
/** the exact size of a frame holding one `{ type, keys }` message of n such keys */
const keysFrameBytes = (type: string, n: number): number =>
  1 /* the frame's array */ + 1 /* map of 2 */ + 5 /* "type" */ + 1 + type.length + 5 /* "keys" */ + (n < 16 ? 1 : n < 65536 ? 3 : 5) + 9 * n

const decodeAll = (frames: ReturnType<typeof packFrames>): object[] => frames.flatMap(f => decodeFrame(f.frame, f.attachments) as object[])

describe('packFrames', () => {
  it('packs a batch that fits into one frame, byte for byte what packFrame makes', () => {
    const msgs = [{ type: 'release', keys: keys(100) }, { type: 'gather', keys: keys(3) }]
    const frames = packFrames(msgs)
    expect(frames).toHaveLength(1)
    expect(Buffer.from(frames[0]!.frame).equals(Buffer.from(packFrame(msgs).frame))).toBe(true)
    expect(frames[0]!.frame.byteLength).toBe(packFrame([msgs[0]!]).frame.byteLength + keysFrameBytes('gather', 3) - 1)
  })

  it('measures the real encoded size: a frame of n keys is exactly the bytes msgpack writes', () => {
    for (const n of [1, 15, 16, 1000, 65_535, 65_536]) {
      expect(packFrames([{ type: 'release', keys: keys(n) }])[0]!.frame.byteLength).toBe(keysFrameBytes('release', n))
    }
  })

  it('cuts a batch over the cap into frames each under it, in order, nothing lost', () => {
    // 1,000 messages of 1,000 keys: 9 MB, cut at 1 MB
    const msgs = Array.from({ length: 1000 }, (_, i) => ({ type: 'gather', keys: keys(1000, i * 1000) }))
    const cap = 1 << 20
    const frames = packFrames(msgs, { cap })
    const sizes = frames.map(f => f.frame.byteLength)
    expect(Math.max(...sizes)).toBeLessThanOrEqual(cap)
    // each message is 9,012 bytes; the frames are not cut needlessly small
    expect(frames.length).toBeLessThanOrEqual(Math.ceil(1000 * 9012 / (cap * 0.75)) + 1)
    expect(decodeAll(frames)).toEqual(msgs)
  })

  it('splits one message over the cap along its list, into messages of the same kind, each frame under the cap', () => {
    const all = keys(300_000)
    const msg = { type: 'release', keys: all }
    expect(packFrame([msg]).frame.byteLength).toBe(keysFrameBytes('release', 300_000)) // 2.7 MB
    const cap = 1 << 20
    const frames = packFrames([msg], { cap })
    for (const f of frames) expect(f.frame.byteLength).toBeLessThanOrEqual(cap)
    const out = decodeAll(frames) as { type: string; keys: string[] }[]
    expect(out.every(m => m.type === 'release')).toBe(true)
    expect(out.flatMap(m => m.keys)).toEqual(all)
    // each piece is exactly the frame its keys make
    for (let i = 0; i < frames.length; i++) expect(frames[i]!.frame.byteLength).toBe(keysFrameBytes('release', out[i]!.keys.length))
  })

  it('splits a submit along its tasks, keeping their order (a dependent stays after its input)', () => {
    const tasks = Array.from({ length: 5000 }, (_, i) => ({ key: `t${i}`, fn: 'f', args: new Uint8Array(200), deps: i ? [`t${i - 1}`] : [] }))
    const frames = packFrames([{ type: 'submit', tasks }], { cap: 100_000 })
    expect(frames.length).toBeGreaterThan(10)
    for (const f of frames) expect(f.frame.byteLength).toBeLessThanOrEqual(100_000)
    const out = decodeAll(frames) as { type: string; tasks: { key: string }[] }[]
    expect(out.flatMap(m => m.tasks.map(t => t.key))).toEqual(tasks.map(t => t.key))
  })

  it('splits a list longer than the receiver accepts (LIMITS.keys) even when it fits in bytes', () => {
    const frames = packFrames([{ type: 'free', keys: keys(LIMITS.keys + 1) }, { type: 'gather', keys: ['x'] }])
    const out = decodeAll(frames) as { type: string; keys: string[] }[]
    expect(out.map(m => [m.type, m.keys.length])).toEqual([['free', 100_001], ['free', 100_000], ['gather', 1]])
  })

  it('keeps to the message count limit', () => {
    const msgs = Array.from({ length: 25 }, (_, i) => ({ type: 'key-state', key: `k${i}`, state: 'memory' }))
    const frames = packFrames(msgs, { maxMessages: 10 })
    expect(frames.map(f => (decodeFrame(f.frame) as unknown[]).length)).toEqual([10, 10, 5])
  })

  it('sends what tooLarge says instead of a message with nothing to split, or throws a TooLargeError', () => {
    const reply = { type: 'reply', id: 7, ok: true, value: 'x'.repeat(5000) }
    expect(() => packFrames([reply], { cap: 1000 })).toThrow(TooLargeError)
    const seen: number[] = []
    const frames = packFrames([{ type: 'key-state', key: 'a', state: 'memory' }, reply], {
      cap: 1000,
      tooLarge: (m, bytes) => { seen.push(bytes); return { type: 'reply', id: (m as { id: number }).id, ok: false, error: { code: 'too-large', message: 'too big' } } },
    })
    expect(seen).toEqual([packFrame([reply]).frame.byteLength])
    expect(decodeAll(frames)).toEqual([
      { type: 'key-state', key: 'a', state: 'memory' },
      { type: 'reply', id: 7, ok: false, error: { code: 'too-large', message: 'too big' } },
    ])
    // nothing instead: the message is dropped, the others go
    expect(decodeAll(packFrames([reply, { type: 'gather', keys: ['b'] }], { cap: 1000, tooLarge: () => undefined }))).toEqual([{ type: 'gather', keys: ['b'] }])
  })

  it('leaves big binary data beside its frame (attachments are not counted in the frame)', () => {
    const data = new Uint8Array(LIMITS.attachBytes)
    const frames = packFrames([{ type: 'data', key: 'a', data }])
    expect(frames).toHaveLength(1)
    expect(frames[0]!.attachments).toHaveLength(1)
    expect(frames[0]!.frame.byteLength).toBeLessThan(40)
  })
})

describe('splitMessage', () => {
  it('splits along the list into nearly equal pieces, or says it cannot', () => {
    expect(splitMessage({ type: 'release', keys: ['a', 'b', 'c'] }, 2)).toEqual([{ type: 'release', keys: ['a', 'b'] }, { type: 'release', keys: ['c'] }])
    expect(splitMessage({ type: 'release', keys: ['a'] }, 2)).toBeUndefined()
    expect(splitMessage({ type: 'reply', id: 1, ok: true, value: [1, 2] }, 2)).toBeUndefined()
  })
})

describe('encodedStringBytes', () => {
  it('is exactly what msgpack writes for a string, headers and UTF-8 included', () => {
    for (const str of ['', 'a', 'x'.repeat(31), 'x'.repeat(32), 'x'.repeat(255), 'x'.repeat(256), 'x'.repeat(70_000), 'é', '€uro', '😀', 'a😀b', 'é'.repeat(20)]) {
      expect(encodedStringBytes(str)).toBe(packFrame([str as unknown as object]).frame.byteLength - 1)
    }
  })
})
