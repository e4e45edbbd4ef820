import { describe, it, expect } from 'vitest'
import vm from 'node:vm'
import { encodeValue, decodeValue, collectRefs, sizeOf, describeValue, FutureRef, CodecError, viewedBytes, encodeValueLater } from './codec.js'
import { SerializationError } from './errors.js'

const rt = <T>(v: T, resolve?: (key: string) => unknown): T => decodeValue(encodeValue(v), resolve) as T

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
function randomBytes(n: number, r: () => number): Uint8Array {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256)
  return b
}
function bytesOf(v: ArrayBufferView | ArrayBuffer): Uint8Array {
  return v instanceof ArrayBuffer ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
}
function catchErr(fn: () => unknown): CodecError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(CodecError)
    return err as CodecError
  }
  throw new Error('expected a CodecError')
}

describe('primitives', () => {
  it('numbers round-trip exactly (Object.is), -0 and NaN included', () => {
    const nums = [
      0, -0, NaN, Infinity, -Infinity, 1, -1, 0.1, -0.1, 1 / 3, Math.PI, Number.MAX_VALUE, Number.MIN_VALUE, -Number.MIN_VALUE,
      Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 2 ** 53 + 2, 2 ** 31, 2 ** 31 - 1, -(2 ** 31), -(2 ** 31) - 1, 2 ** 32, 2 ** 32 - 1,
      127, 128, 255, 256, 65535, 65536, -32, -33, -128, -129, -32768, -32769, 1e300, -1e-300, 5e-324,
    ]
    for (const n of nums) expect(Object.is(rt(n), n), `number ${n}`).toBe(true)
    const back = rt(nums)
    expect(back.length).toBe(nums.length)
    nums.forEach((n, i) => expect(Object.is(back[i], n), `array item ${n}`).toBe(true))
    const obj = rt({ a: -0, b: NaN, c: [-0] })
    expect(Object.is(obj.a, -0)).toBe(true)
    expect(Number.isNaN(obj.b)).toBe(true)
    expect(Object.is(obj.c[0], -0)).toBe(true)
  })

  it('strings, including unicode and lone surrogates', () => {
    const strs = [
      '', 'a', 'hello world', 'x'.repeat(31), 'x'.repeat(32), 'y'.repeat(70), 'z'.repeat(70_000), 'héllo', '日本語テキスト', '😀 emoji 👍🏽',
      '\ud800', '\udfff', 'a\ud800b', '\udc00\ud800', '😀\ud83d', 'x'.repeat(100) + '\ud800', '\ud800'.repeat(20_000) + 'tail', '\u0000nul',
    ]
    for (const s of strs) expect(rt(s), JSON.stringify(s.slice(0, 20))).toBe(s)
    expect(rt(strs)).toEqual(strs)
    const weird = { ['k\ud800']: 1, ok: '\udfff' }
    const back = rt(weird)
    expect(Object.keys(back)).toEqual(['k\ud800', 'ok'])
    expect(back.ok).toBe('\udfff')
  })

  it('booleans, null, undefined (also as items and property values)', () => {
    expect(rt(true)).toBe(true)
    expect(rt(false)).toBe(false)
    expect(rt(null)).toBe(null)
    expect(rt(undefined)).toBe(undefined)
    const arr = rt([undefined, null, undefined])
    expect(arr).toHaveLength(3)
    expect(arr[0]).toBe(undefined)
    expect(arr[1]).toBe(null)
    const obj = rt({ a: undefined, b: null, c: { d: undefined } })
    expect(Object.hasOwn(obj, 'a')).toBe(true)
    expect(obj.a).toBe(undefined)
    expect(obj.b).toBe(null)
    expect(Object.hasOwn(obj.c, 'd')).toBe(true)
  })

  it('bigints of any size and sign', () => {
    const r = rng(7)
    const bigs = [
      0n, 1n, -1n, 5n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 63n, 2n ** 64n - 1n, 2n ** 64n, -(2n ** 63n) - 1n, -(2n ** 64n), 2n ** 200n, -(2n ** 200n) + 3n,
      2n ** 70_000n + 12345n, -(2n ** 70_000n) - 1n, 10n ** 400n,
    ]
    for (let i = 0; i < 50; i++) {
      let b = 0n
      const words = 1 + Math.floor(r() * 12)
      for (let w = 0; w < words; w++) b = (b << 32n) | BigInt(Math.floor(r() * 2 ** 32))
      bigs.push(r() < 0.5 ? -b : b)
    }
    for (const b of bigs) {
      const back = rt(b)
      expect(typeof back).toBe('bigint')
      expect(back === b, `bigint ${b.toString().slice(0, 30)}`).toBe(true)
    }
    expect(rt({ x: [1n, -1n] })).toEqual({ x: [1n, -1n] })
  })
})

describe('objects and containers', () => {
  it('Dates, including invalid, negative and extreme ones', () => {
    const times = [0, 1, -1, -1500, 999, 1000, Date.UTC(2024, 1, 29, 12, 34, 56, 789), 2 ** 32 * 1000, 2 ** 32 * 1000 + 1, 2 ** 34 * 1000 + 7, 8.64e15, -8.64e15, -62198755200001]
    for (const t of times) {
      const back = rt(new Date(t))
      expect(back).toBeInstanceOf(Date)
      expect(back.getTime(), `time ${t}`).toBe(t)
    }
    const invalid = rt(new Date(NaN))
    expect(invalid).toBeInstanceOf(Date)
    expect(Number.isNaN(invalid.getTime())).toBe(true)
    class MyDate extends Date {}
    const sub = rt(new MyDate(12345))
    expect(Object.getPrototypeOf(sub)).toBe(Date.prototype)
    expect(sub.getTime()).toBe(12345)
  })

  it('arrays: nested, empty; sparse holes come back as undefined', () => {
    expect(rt([])).toEqual([])
    expect(rt([[[]], [1, [2, [3, 'x']]]])).toEqual([[[]], [1, [2, [3, 'x']]]])
    // eslint-disable-next-line no-sparse-arrays
    const sparse = rt([1, , 3])
    expect(sparse).toHaveLength(3)
    expect(1 in sparse).toBe(true)
    expect(sparse[1]).toBe(undefined)
    const long = Array.from({ length: 100_000 }, (_, i) => i * 1.5)
    expect(rt(long)).toEqual(long)
  })

  it('plain objects, null-prototype objects, __proto__ keys, key order', () => {
    const o = { b: 1, a: { c: 'x', d: [1, { e: true }] }, 10: 'ten', 2: 'two', 'not ident': 3 }
    const back = rt(o)
    expect(back).toEqual(o)
    expect(Object.keys(back)).toEqual(Object.keys(o))
    expect(Object.getPrototypeOf(back)).toBe(Object.prototype)

    const n = Object.create(null) as Record<string, unknown>
    n.x = 1
    n.inner = Object.assign(Object.create(null) as object, { y: [2] })
    const nb = rt(n)
    expect(Object.getPrototypeOf(nb)).toBe(null)
    expect(Object.getPrototypeOf(nb.inner)).toBe(null)
    expect({ ...nb, inner: { ...(nb.inner as object) } }).toEqual({ x: 1, inner: { y: [2] } })

    const p = JSON.parse('{"__proto__": {"polluted": true}, "z": 1}') as Record<string, unknown>
    const pb = rt(p)
    expect(Object.getPrototypeOf(pb)).toBe(Object.prototype)
    expect(Object.hasOwn(pb, '__proto__')).toBe(true)
    expect(Object.getOwnPropertyDescriptor(pb, '__proto__')!.value).toEqual({ polluted: true })
    expect(({} as Record<string, unknown>).polluted).toBe(undefined)

    const big: Record<string, number> = {}
    for (let i = 0; i < 70_000; i++) big['k' + i] = i
    const bb = rt(big)
    expect(Object.keys(bb)).toHaveLength(70_000)
    expect(bb.k69999).toBe(69999)
  })

  it('Map and Set, with any keys and nesting', () => {
    const m = new Map<unknown, unknown>([
      ['a', 1],
      [2, 'two'],
      [{ obj: true }, [1, 2]],
      [null, undefined],
      [3n, new Set([1, 'x', -0.5])],
      [new Date(5), new Map([['in', new Float32Array([1.5])]])],
    ])
    const back = rt(m)
    expect(back).toBeInstanceOf(Map)
    expect(back.size).toBe(6)
    expect(back.get('a')).toBe(1)
    expect(back.get(2)).toBe('two')
    expect(back.has(null)).toBe(true)
    expect(back.get(3n)).toEqual(new Set([1, 'x', -0.5]))
    const entries = [...back.entries()]
    expect(entries[2]).toEqual([{ obj: true }, [1, 2]])
    expect(entries[5]![0]).toEqual(new Date(5))
    const inner = entries[5]![1] as Map<string, Float32Array>
    expect(inner.get('in')).toBeInstanceOf(Float32Array)
    expect([...inner.get('in')!]).toEqual([1.5])

    const s = rt(new Set<unknown>(['a', 1, [1, 2], { x: 1 }]))
    expect(s).toBeInstanceOf(Set)
    expect([...s]).toEqual(['a', 1, [1, 2], { x: 1 }])
    expect(rt(new Map())).toEqual(new Map())
    expect(rt(new Set())).toEqual(new Set())
    class MyMap extends Map<number, number> {}
    expect(Object.getPrototypeOf(rt(new MyMap([[1, 2]])))).toBe(Map.prototype)
  })

  it('RegExp and Error', () => {
    const re = rt(/a+b\s/gimsuy)
    expect(re).toBeInstanceOf(RegExp)
    expect(re.source).toBe('a+b\\s')
    expect(re.flags).toBe('gimsuy')

    const e = new TypeError('bad thing', { cause: { why: [1, 2] } }) as TypeError & { code?: string }
    e.code = 'E_BAD'
    const back = rt(e)
    expect(back).toBeInstanceOf(TypeError)
    expect(back.message).toBe('bad thing')
    expect(back.stack).toBe(e.stack)
    expect(back.cause).toEqual({ why: [1, 2] })
    expect(back.code).toBe('E_BAD')
    class MyError extends Error {
      override name = 'MyError'
    }
    const mb = rt(new MyError('mine'))
    expect(mb).toBeInstanceOf(Error)
    expect(mb.name).toBe('MyError')
    expect(mb.message).toBe('mine')
    const agg = rt(new AggregateError([new Error('one'), 2], 'many'))
    expect(agg).toBeInstanceOf(AggregateError)
    expect(agg.errors).toHaveLength(2)
    expect((agg.errors[0] as Error).message).toBe('one')
  })

  it('objects from another realm (vm context) travel like local ones', () => {
    const foreign = vm.runInNewContext(
      '({ obj: { a: 1, n: [1, 2] }, map: new Map([[1, 2]]), set: new Set([3]), date: new Date(7), f64: new Float64Array([1, 2]), ab: new ArrayBuffer(4), re: /x/g, err: new RangeError("r") })',
    ) as Record<string, unknown>
    const back = rt(foreign)
    expect(Object.getPrototypeOf(back.obj)).toBe(Object.prototype)
    expect(back.obj).toEqual({ a: 1, n: [1, 2] })
    expect(back.map).toBeInstanceOf(Map)
    expect(back.set).toBeInstanceOf(Set)
    expect(back.date).toBeInstanceOf(Date)
    expect((back.date as Date).getTime()).toBe(7)
    expect(back.f64).toBeInstanceOf(Float64Array)
    expect(back.ab).toBeInstanceOf(ArrayBuffer)
    expect(back.re).toBeInstanceOf(RegExp)
    expect(back.err).toBeInstanceOf(RangeError)
  })
})

describe('binary data', () => {
  const ctors: Array<{ new (n: number): ArrayBufferView & ArrayLike<number | bigint>; name: string; BYTES_PER_ELEMENT: number }> = [
    Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array,
  ]
  const F16 = (globalThis as Record<string, unknown>).Float16Array as (typeof ctors)[number] | undefined
  if (F16) ctors.push(F16)

  it('every TypedArray comes back as the same class with the same bytes', () => {
    const r = rng(1)
    for (const C of ctors) {
      for (const n of [0, 1, 7, 1000]) {
        const a = new C(n)
        bytesOf(a).set(randomBytes(a.byteLength, r))
        const back = rt(a)
        expect(back.constructor, C.name).toBe(C)
        expect(back).toBeInstanceOf(C)
        expect(back.length).toBe(n)
        expect(bytesOf(back)).toEqual(bytesOf(a))
      }
    }
  })

  it('ArrayBuffer, DataView, Node Buffer (as Uint8Array)', () => {
    const ab = new Uint8Array([1, 2, 3, 4, 5]).buffer
    const abb = rt(ab)
    expect(abb).toBeInstanceOf(ArrayBuffer)
    expect([...new Uint8Array(abb)]).toEqual([1, 2, 3, 4, 5])

    const dv = new DataView(new Uint8Array([9, 8, 7, 6, 5, 4]).buffer, 1, 3)
    const dvb = rt(dv)
    expect(dvb).toBeInstanceOf(DataView)
    expect(dvb.byteLength).toBe(3)
    expect([dvb.getUint8(0), dvb.getUint8(1), dvb.getUint8(2)]).toEqual([8, 7, 6])

    const buf = Buffer.from('hello buffer')
    const bb = rt(buf)
    expect(bb).toBeInstanceOf(Uint8Array)
    expect(Buffer.isBuffer(bb)).toBe(false)
    expect(new TextDecoder().decode(bb)).toBe('hello buffer')
  })

  it('a view on part of a bigger buffer sends only its own bytes', () => {
    const big = new Float64Array(1_000_000)
    for (let i = 0; i < 20; i++) big[i] = i
    const view = new Float64Array(big.buffer, 16, 4)
    const bytes = encodeValue(view)
    expect(bytes.byteLength).toBeLessThan(100)
    const back = rt(view)
    expect([...back]).toEqual([2, 3, 4, 5])
    const u8 = new Uint8Array(big.buffer, 3, 5)
    expect(encodeValue(u8).byteLength).toBeLessThan(100)
    expect([...rt(u8)]).toEqual([...u8])
  })

  it('nesting of binary data with everything else', () => {
    const v = {
      list: [new Int16Array([-1, 2]), { deep: new Map([['f', new Float64Array([0.5, -0, NaN])]]) }],
      set: new Set([new Uint8Array([1])]),
      ab: new ArrayBuffer(9),
    }
    const back = rt(v)
    expect(back.list[0]).toEqual(new Int16Array([-1, 2]))
    const f = (back.list[1] as { deep: Map<string, Float64Array> }).deep.get('f')!
    expect(f).toBeInstanceOf(Float64Array)
    expect(Object.is(f[1], -0)).toBe(true)
    expect(Number.isNaN(f[2])).toBe(true)
    expect([...back.set][0]).toEqual(new Uint8Array([1]))
    expect(back.ab.byteLength).toBe(9)
  })

  it('one array referenced twice is sent once and comes back as one object', () => {
    const a = new Float64Array(1000).fill(1)
    const bytes = encodeValue([a, a, { again: a }])
    expect(bytes.byteLength).toBeLessThan(8000 + 100)
    const back = decodeValue(bytes) as [Float64Array, Float64Array, { again: Float64Array }]
    expect(back[0]).toBe(back[1])
    expect(back[2].again).toBe(back[0])
  })

  it('decoded arrays are views into aligned input and copies of misaligned input', () => {
    const a = new Float64Array([1, 2, 3])
    const bytes = encodeValue(a)
    expect(bytes.byteOffset).toBe(0)
    expect(bytes.buffer.byteLength).toBe(bytes.byteLength)
    const view = decodeValue(bytes) as Float64Array
    expect(view.buffer).toBe(bytes.buffer)
    expect([...view]).toEqual([1, 2, 3])

    const shifted = new Uint8Array(bytes.byteLength + 1)
    shifted.set(bytes, 1)
    const odd = shifted.subarray(1)
    const copy = decodeValue(odd) as Float64Array
    expect(copy.buffer).not.toBe(shifted.buffer)
    expect([...copy]).toEqual([1, 2, 3])

    // aligned again at offset 8 of a bigger buffer: a view
    const at8 = new Uint8Array(bytes.byteLength + 8)
    at8.set(bytes, 8)
    const v8 = decodeValue(at8.subarray(8)) as Float64Array
    expect(v8.buffer).toBe(at8.buffer)
    expect([...v8]).toEqual([1, 2, 3])
    // an ArrayBuffer input is accepted too
    expect([...(decodeValue(bytes.buffer as unknown as Uint8Array) as Float64Array)]).toEqual([1, 2, 3])
  })

  it('encoded bytes own their buffer (safe to transfer), also for small values', () => {
    for (const v of [1, 'x', [1, 2], { a: 1 }, new Uint8Array(3)]) {
      const b = encodeValue(v)
      expect(b.byteOffset).toBe(0)
      expect(b.buffer.byteLength).toBe(b.byteLength)
    }
    const a = encodeValue([1, 2, 3])
    encodeValue('something else entirely')
    expect(decodeValue(a)).toEqual([1, 2, 3])
  })
})

describe('FutureRef', () => {
  it('round-trips as a FutureRef without resolve', () => {
    const back = rt({ x: new FutureRef('abc-1'), list: [new FutureRef('k2')] })
    expect(back.x).toBeInstanceOf(FutureRef)
    expect(back.x.key).toBe('abc-1')
    expect(back.list[0]).toEqual(new FutureRef('k2'))
    expect(rt(new FutureRef('top'))).toEqual(new FutureRef('top'))
  })

  it('resolve replaces every FutureRef, wherever it is', () => {
    const args = [
      new FutureRef('a'),
      { nested: [1, new FutureRef('b')], more: new Map<unknown, unknown>([[new FutureRef('c'), new FutureRef('d')]]) },
      new Set([new FutureRef('e')]),
      Object.assign(Object.create(null) as object, { n: new FutureRef('f') }),
    ]
    const seen: string[] = []
    const values: Record<string, unknown> = { a: new Float64Array([1]), b: 'B', c: 'C', d: { deep: true }, e: 5, f: [new FutureRef('not-walked')] }
    const back = rt(args, (k) => {
      seen.push(k)
      return values[k]
    }) as any
    expect(seen.sort()).toEqual(['a', 'b', 'c', 'd', 'e', 'f'])
    expect(back[0]).toBe(values.a)
    expect(back[1].nested).toEqual([1, 'B'])
    expect([...back[1].more.entries()]).toEqual([['C', { deep: true }]])
    expect([...back[2]]).toEqual([5])
    expect(back[3].n).toBe(values.f)
  })

  it('resolve errors propagate unchanged', () => {
    const boom = new Error('no such key')
    expect(() =>
      rt([new FutureRef('x')], () => {
        throw boom
      }),
    ).toThrow(boom)
  })

  it('collectRefs finds every key, cheaply skips binary and primitives', () => {
    const v = [
      new FutureRef('a'),
      { x: { y: [new FutureRef('b')] } },
      new Map<unknown, unknown>([[new FutureRef('c'), 1], ['k', new FutureRef('d')]]),
      new Set([new FutureRef('e'), new FutureRef('a')]),
      new Float64Array(10),
      'str',
      Object.assign(Object.create(null) as object, { z: new FutureRef('f') }),
      new Error('x', { cause: new FutureRef('g') }),
    ]
    expect([...collectRefs(v)].sort()).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g'])
    expect(collectRefs(5).size).toBe(0)
    expect(collectRefs(new Float64Array(1e6)).size).toBe(0)
    expect([...collectRefs(new FutureRef('only'))]).toEqual(['only'])
    const out = new Set(['pre'])
    expect(collectRefs({ a: new FutureRef('x') }, out)).toBe(out)
    expect([...out].sort()).toEqual(['pre', 'x'])
    const cyc: any = { r: new FutureRef('cy') }
    cyc.self = cyc
    expect([...collectRefs(cyc)]).toEqual(['cy'])
  })
})

describe('errors', () => {
  it('functions, symbols, class instances, Promise, weak collections name path and type', () => {
    const fn = catchErr(() => encodeValue([1, { cb: () => 1 }], 'args'))
    expect(fn.path).toBe('args[1].cb')
    expect(fn.message).toMatch(/function/)
    expect(fn.message).toMatch(/args\[1\]\.cb/)
    expect(fn.message).toMatch(/pass data instead/)
    expect(fn).toBeInstanceOf(SerializationError)
    expect(fn.name).toBe('CodecError')

    const sym = catchErr(() => encodeValue({ s: Symbol('x') }))
    expect(sym.path).toBe('value.s')
    expect(sym.message).toMatch(/symbol/)

    class Foo {
      x = 1
    }
    const cls = catchErr(() => encodeValue({ list: [0, 0, new Foo()] }, 'args'))
    expect(cls.path).toBe('args.list[2]')
    expect(cls.message).toMatch(/class Foo/)

    const pr = catchErr(() => encodeValue({ 'odd key': Promise.resolve(1) }))
    expect(pr.path).toBe('value["odd key"]')
    expect(pr.message).toMatch(/Promise/)

    expect(catchErr(() => encodeValue(new WeakMap())).message).toMatch(/WeakMap/)
    expect(catchErr(() => encodeValue([new WeakSet()])).message).toMatch(/WeakSet/)
    expect(catchErr(() => encodeValue(new Number(3))).message).toMatch(/boxed Number/)
    expect(catchErr(() => encodeValue(() => 1)).path).toBe('value')
    expect(catchErr(() => encodeValue(new Map([['k', () => 1]]))).path).toBe('value.get("k")')
    expect(catchErr(() => encodeValue(new Map([[() => 1, 1]]))).path).toBe('value.keys()[0]')
    expect(catchErr(() => encodeValue(new Set([1, Symbol.iterator]))).path).toBe('value.values()[1]')
    expect(catchErr(() => encodeValue(Object.assign(Object.create(null) as object, { f() {} }))).path).toBe('value.f')
  })

  it('a throwing getter becomes a CodecError', () => {
    const o = {
      get bad(): number {
        throw new Error('nope')
      },
    }
    expect(catchErr(() => encodeValue({ o })).message).toMatch(/nope/)
  })

  it('cycles throw "circular reference at path"; shared (acyclic) parts are fine', () => {
    const a: any = { x: { y: [] } }
    a.x.y.push(a)
    const err = catchErr(() => encodeValue(a, 'args'))
    expect(err.message).toMatch(/circular reference at args\.x\.y\[0\]/)
    expect(err.path).toBe('args.x.y[0]')
    const self: any[] = []
    self.push(self)
    expect(catchErr(() => encodeValue(self)).message).toMatch(/circular reference at value\[0\]/)
    const m = new Map<string, unknown>()
    m.set('me', m)
    expect(catchErr(() => encodeValue(m)).message).toMatch(/circular reference/)

    const shared = { s: 1 }
    expect(rt([shared, shared, { shared }])).toEqual([{ s: 1 }, { s: 1 }, { shared: { s: 1 } }])
  })

  it('too deep nesting throws a CodecError, deep but fine nesting works', () => {
    let ok: unknown = 1
    for (let i = 0; i < 400; i++) ok = [ok]
    expect(rt(ok)).toEqual(ok)
    let deep: unknown = 1
    for (let i = 0; i < 5000; i++) deep = { d: deep }
    expect(catchErr(() => encodeValue(deep)).message).toMatch(/nested more than/)
  })

  it('junk bytes throw CodecError, never hang or crash', () => {
    const r = rng(42)
    for (let i = 0; i < 2000; i++) {
      const junk = randomBytes(1 + Math.floor(r() * 200), r)
      expect(() => decodeValue(junk)).toThrow(CodecError)
    }
    // valid header, junk body
    for (let i = 0; i < 2000; i++) {
      const junk = randomBytes(2 + Math.floor(r() * 100), r)
      junk[0] = 0xc1
      junk[1] = 0x10 | Math.floor(r() * 4)
      try {
        decodeValue(junk)
      } catch (err) {
        expect(err).toBeInstanceOf(CodecError)
      }
    }
    expect(() => decodeValue(new Uint8Array(0))).toThrow(CodecError)
    expect(() => decodeValue('nope' as unknown as Uint8Array)).toThrow(CodecError)
    // msgpack nesting bomb after a valid header
    const bomb = new Uint8Array(200_000).fill(0x91)
    bomb[0] = 0xc1
    bomb[1] = 0x11
    expect(() => decodeValue(bomb)).toThrow(CodecError)
  })

  it('truncated input always throws; corrupted input throws CodecError or decodes', () => {
    const samples: unknown[] = [
      12345,
      'a string of some length',
      [1, 2, 3, { a: 'b' }],
      new Map([[1, new Set([2])]]),
      { f: new Float64Array([1, 2, 3]), g: new Uint8Array([4, 5]), n: -0 },
      [new FutureRef('x'), 2n ** 100n, new Date(5)],
    ]
    const r = rng(3)
    for (const v of samples) {
      const bytes = encodeValue(v)
      for (let len = 0; len < bytes.length; len++) {
        expect(() => decodeValue(bytes.slice(0, len)), `${describeValue(v)} cut at ${len}`).toThrow(CodecError)
      }
      for (let i = 0; i < 300; i++) {
        const c = bytes.slice()
        c[Math.floor(r() * c.length)] = Math.floor(r() * 256)
        try {
          decodeValue(c)
        } catch (err) {
          expect(err).toBeInstanceOf(CodecError)
        }
      }
    }
  })
})

describe('sizeOf and describeValue', () => {
  it('sizeOf is roughly right and cheap on huge values', () => {
    expect(sizeOf(new Float64Array(1000))).toBe(8000)
    expect(sizeOf(new ArrayBuffer(77))).toBe(77)
    expect(sizeOf('abcd')).toBe(8)
    expect(sizeOf(1)).toBe(8)
    expect(sizeOf(null)).toBe(0)
    const arr = Array.from({ length: 1_000_000 }, () => 'xxxx')
    const s = sizeOf(arr)
    expect(s).toBeGreaterThan(8_000_000)
    expect(s).toBeLessThan(40_000_000)
    const nested = { a: new Float64Array(100), b: [new Uint8Array(50), 'xx'], m: new Map([['k', new Int32Array(10)]]) }
    const ns = sizeOf(nested)
    expect(ns).toBeGreaterThan(800 + 50 + 40)
    expect(ns).toBeLessThan(2000)
    const cyc: any = { big: new Float64Array(10) }
    cyc.self = cyc
    expect(sizeOf(cyc)).toBeLessThan(500)
  })

  it('describeValue', () => {
    expect(describeValue(new Float64Array(1_000_000))).toBe('Float64Array(1000000)')
    expect(describeValue([1, 2, 3])).toBe('Array(3)')
    expect(describeValue(new Map([[1, 2], [3, 4]]))).toBe('Map(2)')
    expect(describeValue(new Set([1]))).toBe('Set(1)')
    expect(describeValue(1)).toBe('number')
    expect(describeValue(1n)).toBe('bigint')
    expect(describeValue('abc')).toBe('string(3)')
    expect(describeValue(null)).toBe('null')
    expect(describeValue(undefined)).toBe('undefined')
    expect(describeValue({ a: 1, b: 2 })).toBe('Object(2)')
    expect(describeValue(new ArrayBuffer(8))).toBe('ArrayBuffer(8)')
    expect(describeValue(new DataView(new ArrayBuffer(8)))).toBe('DataView(8)')
    expect(describeValue(new Date())).toBe('Date')
    expect(describeValue(new TypeError('x'))).toBe('TypeError')
    expect(describeValue(new FutureRef('k'))).toBe('FutureRef(k)')
    class Foo {}
    expect(describeValue(new Foo())).toBe('Foo')
    expect(describeValue(function named() {})).toBe('function named')
  })
})

describe('speed (printed, not asserted)', () => {
  it('prints timings', () => {
    const time = (fn: () => void, reps: number): number => {
      for (let i = 0; i < Math.min(reps, 1000); i++) fn() // warm up
      const t0 = performance.now()
      for (let i = 0; i < reps; i++) fn()
      return (performance.now() - t0) / reps
    }
    const big = new Float64Array(2 * 1024 * 1024) // 16 MB
    for (let i = 0; i < big.length; i++) big[i] = i * 0.5
    let enc = encodeValue(big)
    const encMs = time(() => {
      enc = encodeValue(big)
    }, 10)
    let dec: unknown
    const decMs = time(() => {
      dec = decodeValue(enc)
    }, 10)
    expect((dec as Float64Array)[12345]).toBe(12345 * 0.5)
    const misaligned = new Uint8Array(enc.byteLength + 1)
    misaligned.set(enc, 1)
    const decCopyMs = time(() => decodeValue(misaligned.subarray(1)), 10)

    const ints = Array.from({ length: 10_000 }, (_, i) => i % 1000)
    const encoded: Uint8Array[] = new Array(ints.length)
    for (let i = 0; i < 10; i++) ints.forEach((n, j) => (encoded[j] = encodeValue(n), decodeValue(encoded[j]!))) // warm up
    let t0 = performance.now()
    for (let j = 0; j < ints.length; j++) encoded[j] = encodeValue(ints[j])
    const intEncUs = ((performance.now() - t0) * 1000) / ints.length
    t0 = performance.now()
    let sum = 0
    for (let j = 0; j < ints.length; j++) sum += decodeValue(encoded[j]!) as number
    const intDecUs = ((performance.now() - t0) * 1000) / ints.length
    expect(sum).toBe(ints.reduce((a, b) => a + b, 0))

    const arrEnc = encodeValue(ints)
    const arrEncMs = time(() => encodeValue(ints), 50)
    const arrDecMs = time(() => decodeValue(arrEnc), 50)
    const small = [1, 2, 3]
    const smallUs = time(() => decodeValue(encodeValue(small)), 10_000) * 1000

    console.log(
      [
        `codec timings:`,
        `  Float64Array 16 MB: encode ${encMs.toFixed(2)} ms, decode ${decMs.toFixed(3)} ms (aligned view), ${decCopyMs.toFixed(2)} ms (misaligned copy)`,
        `  10,000 small ints one by one: encode ${intEncUs.toFixed(2)} µs/value, decode ${intDecUs.toFixed(2)} µs/value`,
        `  array of 10,000 small ints: encode ${arrEncMs.toFixed(3)} ms, decode ${arrDecMs.toFixed(3)} ms`,
        `  [1,2,3] encode+decode: ${smallUs.toFixed(2)} µs`,
      ].join('\n'),
    )
  })
})

describe('shared memory and views', () => {
  it('shareOver: an encoding that big is made in a SharedArrayBuffer; smaller ones and values without binary data are not', () => {
    const big = encodeValue({ a: new Float64Array(1024) }, 'value', { shareOver: 4096 })
    expect(big.buffer).toBeInstanceOf(SharedArrayBuffer)
    expect(big.byteOffset).toBe(0)
    expect(big.byteLength).toBe(big.buffer.byteLength)
    expect(encodeValue({ a: new Float64Array(8) }, 'value', { shareOver: 4096 }).buffer).toBeInstanceOf(ArrayBuffer)
    expect(encodeValue('x'.repeat(10_000), 'value', { shareOver: 16 }).buffer).toBeInstanceOf(ArrayBuffer)
  })

  it('decoding bytes in shared memory copies every array out: the value shares nothing', () => {
    const value = { f: Float64Array.from([1, 2, 3]), u: new Uint8Array([9, 8]), d: new DataView(new ArrayBuffer(4)), ab: new Uint8Array([5]).buffer }
    const bytes = encodeValue(value, 'value', { shareOver: 0 })
    expect(bytes.buffer).toBeInstanceOf(SharedArrayBuffer)
    const back = decodeValue(bytes) as typeof value
    expect(back).toEqual(value)
    for (const x of [back.f.buffer, back.u.buffer, back.d.buffer, back.ab]) expect(x).toBeInstanceOf(ArrayBuffer)
    // a view into a bigger shared buffer (a part of it) decodes the same
    const sab = new SharedArrayBuffer(bytes.byteLength + 16)
    const at = new Uint8Array(sab, 8, bytes.byteLength)
    at.set(bytes)
    expect(decodeValue(at)).toEqual(value)
  })

  it('viewedBytes: how much of an encoding the value decoded from it uses', () => {
    const bytes = encodeValue({ a: new Float64Array(100), b: [new Uint8Array(10), 'text'] })
    const back = decodeValue(bytes)
    expect(viewedBytes(back, bytes)).toBe(810)
    expect(viewedBytes(back, encodeValue(1))).toBe(0)
    expect(viewedBytes({ a: new Float64Array(100) }, bytes)).toBe(0) // its own memory
    expect(viewedBytes(decodeValue(encodeValue([1, 2])), encodeValue([1, 2]))).toBe(0)
  })
})

describe('encodeValueLater', () => {
  it('makes the same bytes as encodeValue, step by step, ready growing to the end', () => {
    const value = { a: new Float64Array(5000).map((_, i) => i), b: [new Uint8Array(3001).fill(7), 'x'], c: new Int16Array(10) }
    const want = encodeValue(value)
    const p = encodeValueLater(value)
    expect(p.bytes.byteLength).toBe(want.byteLength)
    const seen = [p.ready]
    while (p.ready < p.bytes.byteLength) seen.push(p.step(4096))
    expect(seen.every((r, i) => i === 0 || r > seen[i - 1]!)).toBe(true)
    expect(Buffer.from(p.bytes).equals(Buffer.from(want))).toBe(true)
    expect(p.bytes.subarray(0, seen[0]!)).toEqual(want.subarray(0, seen[0]!))
  })

  it('finish copies what is left; a value without binary data is ready at once', () => {
    const p = encodeValueLater({ big: new Uint8Array(100_000).fill(1) }, 'value', { shareOver: 0 })
    expect(p.bytes.buffer).toBeInstanceOf(SharedArrayBuffer)
    p.step(10)
    p.finish()
    expect(p.ready).toBe(p.bytes.byteLength)
    expect(decodeValue(p.bytes)).toEqual({ big: new Uint8Array(100_000).fill(1) })
    const q = encodeValueLater({ a: 1 })
    expect(q.ready).toBe(q.bytes.byteLength)
  })
})
