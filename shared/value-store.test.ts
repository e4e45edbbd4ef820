import { describe, expect, it } from 'vitest'
import { STREAM_OVER, ValueStore, type ExecMemoryEvent, type StreamingBytes, type ValueStoreOptions } from './value-store.js'
import { MemorySpillStore, type SpillStore } from './spill.js'
import { decodeValue, encodeValue, sizeOf } from './codec.js'

/** A store with its events recorded; `audit` checks every counter after each step of a test. */
function setup(options: ValueStoreOptions = {}): { vs: ValueStore; events: ExecMemoryEvent[]; rooms: number[] } {
  const events: ExecMemoryEvent[] = []
  const rooms: number[] = []
  const vs = new ValueStore({ memory: ev => events.push(ev), room: () => rooms.push(1) }, options)
  return { vs, events, rooms }
}

/** A spill store whose writes wait until their gate is opened (gates in write order); seen holds the bytes each write was given. */
function gatedStore(): { store: SpillStore; gates: (() => void)[]; seen: Uint8Array[] } {
  const inner = new MemorySpillStore()
  const gates: (() => void)[] = []
  const seen: Uint8Array[] = []
  const store: SpillStore = {
    set: (k, d) => { seen.push(d); return new Promise<void>(r => gates.push(r)).then(() => inner.set(k, d)) },
    get: k => inner.get(k), del: ks => inner.del(ks), keys: () => inner.keys(), clear: () => inner.clear(),
  }
  return { store, gates, seen }
}

const tick = (ms = 0): Promise<void> => new Promise(r => setTimeout(r, ms))

/** A Float64Array whose encoding is exactly n bytes (n a multiple of 8, at least 32). */
function blob(n: number, fill = 1): Float64Array {
  for (const header of [24, 32]) {
    const a = new Float64Array((n - header) / 8).fill(fill)
    if (encodeValue(a).byteLength === n) return a
  }
  throw new Error(`no Float64Array encodes to exactly ${n} bytes`)
}

/** A spill store that records the very byte arrays it was given. */
class RecordingStore extends MemorySpillStore {
  readonly given: Uint8Array[] = []
  override set(key: string, data: Uint8Array): Promise<void> {
    this.given.push(data)
    return super.set(key, data)
  }
}

describe('ValueStore: each value is encoded once', () => {
  it('get encodes a task result once and keeps the bytes', () => {
    const { vs } = setup()
    const value = { shape: [2, 3], data: new Float64Array(6).fill(7) }
    vs.keep('x', value)
    const first = vs.get('x') as Uint8Array
    const again = vs.get('x') as Uint8Array
    expect(again).toBe(first) // the same bytes, not a second encoding
    expect(vs.kept('x', first)).toBe(true)
    expect(decodeValue(first)).toEqual(value)
  })

  it('an encoding made with the result (push, digest) is the one get returns', () => {
    const { vs } = setup()
    const enc = vs.encode('hello')
    vs.keep('x', 'hello', enc)
    expect(vs.get('x')).toBe(enc)
  })

  it('put keeps the bytes it was given as the encoding; the value views them', () => {
    const { vs } = setup()
    const bytes = encodeValue({ data: new Float64Array(1000).fill(3) })
    const size = vs.put('x', bytes)
    expect(size).toBe(sizeOf({ data: new Float64Array(1000) }))
    expect(vs.get('x')).toBe(bytes)
    const v = vs.value('x') as { data: Float64Array }
    expect(v.data.buffer).toBe(bytes.buffer) // a view: the bytes are not held twice
  })

  it('a new value for a key replaces the kept encoding', () => {
    const { vs } = setup()
    vs.keep('x', 1)
    const one = vs.get('x') as Uint8Array
    vs.keep('x', 2)
    const two = vs.get('x') as Uint8Array
    expect(two).not.toBe(one)
    expect(decodeValue(two)).toBe(2)
  })

  it('a value that cannot be encoded: get throws, nothing is kept', () => {
    const { vs } = setup({ memoryLimit: 1 << 20 })
    vs.keep('f', { run: () => 1 })
    expect(() => vs.get('f')).toThrow(/function/)
    expect(vs.audit().encodings).toBe(0)
  })

  it('with shareOver, big encodings are in shared memory, small ones not; decoding them gives private memory', () => {
    const { vs } = setup({ shareOver: 64 << 10 })
    vs.keep('big', new Float64Array(16 << 10).fill(2))
    vs.keep('small', new Float64Array(8).fill(2))
    const big = vs.get('big') as Uint8Array
    const small = vs.get('small') as Uint8Array
    expect(big.buffer).toBeInstanceOf(SharedArrayBuffer)
    expect(small.buffer).toBeInstanceOf(ArrayBuffer)
    const back = decodeValue(big) as Float64Array
    expect(back.buffer).toBeInstanceOf(ArrayBuffer)
    expect(back[100]).toBe(2)
  })

  it('put of bytes in shared memory decodes into private memory and counts the bytes it keeps', () => {
    const { vs } = setup({ memoryLimit: 1 << 30 })
    const sab = encodeValue(new Float64Array(16 << 10).fill(5), 'value', { shareOver: 0 })
    expect(sab.buffer).toBeInstanceOf(SharedArrayBuffer)
    vs.put('x', sab)
    const v = vs.value('x') as Float64Array
    expect(v.buffer).toBeInstanceOf(ArrayBuffer)
    // the value's own 128 KB, and the shared bytes it keeps (nothing views them)
    expect(vs.audit()).toMatchObject({ values: 128 << 10, encodings: sab.byteLength })
  })
})

describe('ValueStore: memory accounting', () => {
  it('a kept encoding of a task result counts all its bytes; free returns to zero', () => {
    const { vs } = setup({ memoryLimit: 1 << 30 })
    const value = new Float64Array(1000)
    vs.keep('x', value)
    expect(vs.memory().inMemory).toBe(8000)
    const enc = vs.get('x') as Uint8Array
    expect(vs.memory().inMemory).toBe(8000 + enc.byteLength)
    expect(vs.audit()).toEqual({ values: 8000, encodings: enc.byteLength, inMemory: 8000 + enc.byteLength, spilled: 0 })
    vs.free(['x'])
    expect(vs.memory().inMemory).toBe(0)
    expect(vs.audit()).toEqual({ values: 0, encodings: 0, inMemory: 0, spilled: 0 })
  })

  it('a value stored from bytes counts them once: its arrays, and the header and skeleton around them', () => {
    const { vs } = setup({ memoryLimit: 1 << 30 })
    vs.put('x', encodeValue(blob(4000)))
    expect(vs.memory().inMemory).toBe(4000)
    expect(vs.audit().encodings).toBe(24)
  })

  it('bytes without binary data count their length on top of the decoded value', () => {
    const { vs } = setup({ memoryLimit: 1 << 30 })
    const value = Array.from({ length: 100 }, (_, i) => `item ${i}`)
    const bytes = encodeValue(value)
    vs.put('x', bytes)
    expect(vs.audit()).toMatchObject({ values: sizeOf(value), encodings: bytes.byteLength })
  })

  it('without a store, kept encodings are dropped past the spill mark, before pausing; the values stay', () => {
    const { vs, events } = setup({ memoryLimit: 100_000 }) // spill mark 60,000, pause mark 85,000
    for (const k of ['a', 'b', 'c']) vs.keep(k, new Float64Array(2500)) // 20,000 each
    expect(vs.memory().inMemory).toBe(60_000)
    const a = vs.get('a') as Uint8Array // +20,024: past the mark, so it is dropped again (the caller still has it)
    expect(decodeValue(a)).toEqual(new Float64Array(2500))
    expect(vs.memory().inMemory).toBe(60_000)
    expect(vs.kept('a', a)).toBe(false)
    expect(events).toEqual([])
    vs.free(['b', 'c'])
    vs.get('a') // now there is room to keep it
    expect(vs.memory().inMemory).toBe(20_000 + a.byteLength)
    expect(vs.audit().encodings).toBe(a.byteLength)
    // values themselves are never dropped: past pauseAt the store pauses
    vs.keep('d', new Float64Array(8750)) // 70,000: a's encoding goes, and 90,000 is past the pause mark
    expect(vs.memory().inMemory).toBe(90_000)
    expect(vs.kept('a', a)).toBe(false)
    expect(events.map(e => e.paused)).toEqual([true])
    for (const k of ['a', 'd']) expect(vs.has(k)).toBe(true)
  })

  it('without a budget, nothing is ever dropped', () => {
    const { vs } = setup()
    for (let i = 0; i < 20; i++) vs.keep(`k${i}`, new Float64Array(1000))
    for (let i = 0; i < 20; i++) vs.get(`k${i}`)
    expect(vs.audit().encodings).toBe(20 * (8000 + 24))
  })
})

describe('ValueStore: encodings and spilling', () => {
  const LIMIT = 10_000 // spill mark 6,000, pause mark 8,500

  it('a value with a kept encoding spills those very bytes (no second encode)', async () => {
    const store = new RecordingStore()
    const { vs } = setup({ memoryLimit: LIMIT, spill: store })
    vs.keep('a', new Float64Array(250)) // 2,000
    const enc = vs.get('a') as Uint8Array // 4,024
    vs.keep('b', new Float64Array(250)) // 6,024: past the mark, a is the least recently used... but was touched by get
    vs.keep('c', new Float64Array(250))
    await vs.settle()
    expect(store.given).toContain(enc)
    expect(vs.has('a')).toBe(true)
    expect(vs.inMemory('a')).toBe(false)
    // spilled, it counts its copy in the store
    expect(vs.memory().spilled).toBe(enc.byteLength)
    expect(vs.audit().spilled).toBe(enc.byteLength)
  })

  it('a value loaded back keeps the loaded bytes as its encoding, counted once', async () => {
    const store = new MemorySpillStore()
    const { vs } = setup({ memoryLimit: LIMIT, spill: store })
    for (const k of ['v1', 'v2', 'v3', 'v4']) { vs.put(k, encodeValue(blob(2000, +k[1]!))); await vs.settle() }
    expect(vs.inMemory('v1')).toBe(false)
    vs.pin(['v1'])
    await vs.loadAll(['v1'])
    const bytes = vs.get('v1') as Uint8Array
    expect((vs.value('v1') as Float64Array).buffer).toBe(bytes.buffer)
    expect(decodeValue(bytes)).toEqual(blob(2000, 1))
    const gets = store.log.filter(l => l === 'get v1').length
    vs.get('v1')
    expect(store.log.filter(l => l === 'get v1').length).toBe(gets) // from memory now
    vs.unpin(['v1'])
    await vs.settle()
    vs.audit()
    // loaded back and spilled again: its copy is still in the store, not written twice
    expect(store.log.filter(l => l === 'set v1')).toHaveLength(1)
  })

  it('get while a value is being written returns the bytes being written, which are not to be transferred', async () => {
    const { store, gates, seen } = gatedStore()
    const { vs } = setup({ memoryLimit: LIMIT, spill: store })
    for (const k of ['a', 'b', 'c', 'd']) vs.keep(k, new Float64Array(250).fill(k.charCodeAt(0)))
    await tick()
    expect(gates).toHaveLength(1) // a is being written
    const during = vs.get('a') as Uint8Array
    expect(during).toBe(seen[0])
    expect(vs.kept('a', during)).toBe(true)
    vs.audit()
    gates.shift()!()
    await vs.settle()
    expect(vs.inMemory('a')).toBe(false)
    expect(decodeValue(await vs.get('a'))).toEqual(new Float64Array(250).fill(97))
  })

  it('a pinned value written meanwhile stays in memory with the written bytes as its encoding', async () => {
    const { store, gates, seen } = gatedStore()
    const { vs } = setup({ memoryLimit: LIMIT, spill: store })
    for (const k of ['a', 'b', 'c', 'd']) vs.keep(k, new Float64Array(250))
    await tick()
    vs.pin(['a']) // a task needs it now
    gates.shift()!()
    await tick()
    expect(vs.inMemory('a')).toBe(true)
    expect(vs.get('a')).toBe(seen[0])
    expect(vs.audit().encodings).toBe(seen[0]!.byteLength)
  })

  it('values a task needs cannot spill, but their kept encodings can go', async () => {
    const store = new MemorySpillStore()
    const { vs } = setup({ memoryLimit: LIMIT, spill: store })
    vs.keep('a', new Float64Array(250))
    vs.keep('b', new Float64Array(250))
    vs.pin(['a', 'b'])
    vs.get('a'); vs.get('b') // 4,000 + 2 × 2,024
    vs.keep('c', new Float64Array(125)) // 9,048 in all
    vs.pin(['c'])
    await vs.settle()
    expect(store.data.size).toBe(0)
    expect(vs.memory().inMemory).toBeLessThanOrEqual(6_000)
    expect(vs.audit().values).toBe(5_000)
  })

  it.each([1, 2, 3, 12345])('random keeps, gets, puts, frees, pins and loads keep every counter right (seed %i)', async seed => {
    let x = seed * 2654435761 >>> 0
    const rand = (): number => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32 }
    const store = new MemorySpillStore()
    const { vs } = setup({ memoryLimit: 50_000, spill: store, shareOver: 4096 })
    const values = new Map<string, number>()
    for (let step = 0; step < 2000; step++) {
      const r = rand()
      const keys = [...values.keys()]
      const k = keys.length && r > 0.35 ? keys[Math.floor(rand() * keys.length)]! : `k${step}`
      const n = 1 + Math.floor(rand() * 800)
      if (r < 0.2) { vs.keep(k, new Float64Array(n).fill(step)); values.set(k, step) }
      else if (r < 0.35) { vs.put(k, encodeValue(new Float64Array(n).fill(step))); values.set(k, step) }
      else if (r < 0.6 && values.has(k)) { const b = await vs.get(k); expect((decodeValue(b) as Float64Array)[0]).toBe(values.get(k)) }
      else if (r < 0.7) { vs.free([k]); values.delete(k) }
      else if (r < 0.8 && values.has(k)) { vs.pin([k]); await vs.loadAll([k]); expect(vs.inMemory(k)).toBe(true); vs.unpin([k]) }
      else await tick()
      vs.audit()
    }
    await vs.settle()
    const a = vs.audit()
    expect(a.inMemory).toBeLessThanOrEqual(30_000)
    expect(vs.count).toBe(values.size)
    for (const [k, v] of values) expect((decodeValue(await vs.get(k)) as Float64Array)[0]).toBe(v)
  })
})

describe('ValueStore: streaming a big value while it is encoded', () => {
  const big = (fill: number): { data: Float64Array } => ({ data: new Float64Array((STREAM_OVER / 8) + 1000).fill(fill) })

  it('read answers at once with shared bytes and a ready counter, then fills them in a step at a time', async () => {
    const { vs } = setup({ shareOver: 64 << 10 })
    const value = big(3)
    vs.keep('x', value)
    const r = vs.read('x') as StreamingBytes
    expect(r.bytes.buffer).toBeInstanceOf(SharedArrayBuffer)
    const first = Atomics.load(r.ready, 0)
    expect(first).toBeLessThan(r.bytes.byteLength)
    // a second reader meanwhile gets the same stream
    expect((vs.read('x') as StreamingBytes).bytes).toBe(r.bytes)
    await new Promise(res => setTimeout(res, 0))
    expect(Atomics.load(r.ready, 0)).toBe(r.bytes.byteLength)
    expect(Buffer.from(r.bytes).equals(Buffer.from(encodeValue(value)))).toBe(true)
    // now it is the kept encoding
    expect(vs.read('x')).toBe(r.bytes)
    expect(vs.get('x')).toBe(r.bytes)
    vs.audit()
  })

  it('get while it is being filled finishes it first', () => {
    const { vs } = setup({ shareOver: 64 << 10 })
    vs.keep('x', big(4))
    const r = vs.read('x') as StreamingBytes
    const whole = vs.get('x') as Uint8Array
    expect(whole).toBe(r.bytes)
    expect(Atomics.load(r.ready, 0)).toBe(whole.byteLength)
    expect((decodeValue(whole) as { data: Float64Array }).data[5]).toBe(4)
  })

  it('small values, and stores without shared memory, answer whole bytes', () => {
    const { vs } = setup({ shareOver: 64 << 10 })
    vs.keep('s', new Float64Array(10))
    expect(vs.read('s')).toBeInstanceOf(Uint8Array)
    const plain = setup().vs
    plain.keep('x', big(1))
    expect(plain.read('x')).toBeInstanceOf(Uint8Array)
  })

  it('a value spilled while it is being filled spills whole bytes', async () => {
    const store = new RecordingStore()
    const { vs } = setup({ memoryLimit: 3 * STREAM_OVER, spill: store, shareOver: 64 << 10 })
    vs.keep('x', big(5))
    const r = vs.read('x') as StreamingBytes // value and encoding: past the spill mark
    await vs.settle()
    expect(store.given[0]).toBe(r.bytes)
    expect(Atomics.load(r.ready, 0)).toBe(r.bytes.byteLength)
    expect((decodeValue(store.data.get('x')!) as { data: Float64Array }).data.at(-1)).toBe(5)
  })
})
