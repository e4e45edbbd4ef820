import { describe, expect, it } from 'vitest'
import { hashBytes, hashString } from './hash.js'

describe('hashString', () => {
  it('is deterministic and 16 hex chars', () => {
    const h = hashString('hello world')
    expect(h).toMatch(/^[0-9a-f]{16}$/)
    expect(hashString('hello world')).toBe(h)
    expect(hashString('')).toMatch(/^[0-9a-f]{16}$/)
  })

  it('pins known values (the hash names cached functions: it must not drift)', () => {
    // If this fails the algorithm changed: every cached hash in the wild changes too.
    expect(['', 'a', 'x => x + 1'].map(hashString)).toEqual(['21c0201b53ffef96', '6b5959f6545f2249', '9cb073e29c37afd5'])
    expect(hashBytes(new Uint8Array([]))).toBe('f024c642711cb13f')
    expect(hashBytes(new Uint8Array([1, 2, 3, 4, 5]))).toBe('146eefdfa3002983')
  })

  it('separates near inputs', () => {
    const inputs = ['', 'a', 'b', 'ab', 'ba', 'aa', 'a ', ' a', 'x => x + 1', 'x => x + 2', 'x => x+1',
      '\u0000', '\u0000\u0000', 'é', 'e\u0301', '😀', '\ud83d', 'abc', 'abd', 'abcd', 'abce']
    const hashes = inputs.map(hashString)
    expect(new Set(hashes).size).toBe(inputs.length)
  })

  it('has no collisions on 200k similar strings and spreads bits', () => {
    const seen = new Set<string>()
    const ones = new Array<number>(64).fill(0)
    const N = 200_000
    for (let i = 0; i < N; i++) {
      const h = hashString(`task-${i}`)
      seen.add(h)
      if (i < 20_000) {
        for (let c = 0; c < 16; c++) {
          const nib = parseInt(h[c]!, 16)
          for (let b = 0; b < 4; b++) if (nib & (1 << b)) ones[c * 4 + b]!++
        }
      }
    }
    expect(seen.size).toBe(N)
    for (const o of ones) expect(Math.abs(o / 20_000 - 0.5)).toBeLessThan(0.03)
  })

  it('avalanches: one flipped bit changes about half the output bits', () => {
    let total = 0
    let trials = 0
    for (let i = 0; i < 200; i++) {
      const s = `some source text number ${i}`
      const a = BigInt('0x' + hashString(s))
      const j = i % s.length
      const t = s.slice(0, j) + String.fromCharCode(s.charCodeAt(j) ^ (1 << (i % 7))) + s.slice(j + 1)
      const b = BigInt('0x' + hashString(t))
      total += (a ^ b).toString(2).replace(/0/g, '').length
      trials++
    }
    const mean = total / trials
    expect(mean).toBeGreaterThan(28)
    expect(mean).toBeLessThan(36)
  })
})

describe('hashBytes', () => {
  it('is deterministic and 16 hex chars', () => {
    const b = new Uint8Array([1, 2, 3, 4, 5, 6, 7])
    expect(hashBytes(b)).toMatch(/^[0-9a-f]{16}$/)
    expect(hashBytes(b)).toBe(hashBytes(new Uint8Array([1, 2, 3, 4, 5, 6, 7])))
  })

  it('separates near inputs, including lengths and trailing zeros', () => {
    const inputs: number[][] = [[], [0], [0, 0], [0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0, 0], [1], [0, 1], [1, 0],
      [1, 2, 3, 4], [1, 2, 3, 5], [2, 2, 3, 4], [1, 2, 3, 4, 0], [255, 255, 255, 255], [128, 0, 0, 0], [0, 0, 0, 128]]
    const hashes = inputs.map((a) => hashBytes(new Uint8Array(a)))
    expect(new Set(hashes).size).toBe(inputs.length)
  })

  it('is sensitive to every byte position and bit of a larger buffer', () => {
    const base = new Uint8Array(1024)
    for (let i = 0; i < base.length; i++) base[i] = (i * 31) & 255
    const seen = new Set([hashBytes(base)])
    for (let i = 0; i < base.length; i += 37) {
      for (const bit of [0, 7]) {
        const c = base.slice()
        c[i]! ^= 1 << bit
        seen.add(hashBytes(c))
      }
    }
    // Flipping the top bit of two different words must not cancel out.
    const d = base.slice()
    d[3]! ^= 0x80
    d[7]! ^= 0x80
    seen.add(hashBytes(d))
    expect(seen.size).toBe(1 + Math.ceil(1024 / 37) * 2 + 1)
  })

  it('gives the same answer for aligned and unaligned views of the same bytes', () => {
    const data = new Uint8Array(1001)
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) & 255
    const expected = hashBytes(data)
    for (const off of [1, 2, 3, 4, 5]) {
      const buf = new Uint8Array(data.length + off)
      buf.set(data, off)
      expect(hashBytes(buf.subarray(off))).toBe(expected)
    }
  })

  it('hashes a view, not its whole buffer', () => {
    const buf = new Uint8Array(64).fill(9)
    expect(hashBytes(buf.subarray(8, 16))).toBe(hashBytes(new Uint8Array(8).fill(9)))
    expect(hashBytes(buf.subarray(8, 16))).not.toBe(hashBytes(buf))
  })

  it('is fast (prints MB/s on 16 MB)', () => {
    const mb = 16
    const data = new Uint8Array(mb * 1024 * 1024)
    for (let i = 0; i < data.length; i += 4093) data[i] = i & 255
    hashBytes(data.subarray(0, 1 << 20)) // warm up
    const t0 = performance.now()
    const rounds = 3
    for (let r = 0; r < rounds; r++) hashBytes(data)
    const ms = (performance.now() - t0) / rounds
    const t1 = performance.now()
    hashBytes(data.subarray(1))
    const msUnaligned = performance.now() - t1
    console.log(`hashBytes: ${(mb / (ms / 1000)).toFixed(0)} MB/s aligned, ${(mb / (msUnaligned / 1000)).toFixed(0)} MB/s unaligned (16 MB)`)
    const s = 'x'.repeat(1 << 22)
    const t2 = performance.now()
    hashString(s)
    console.log(`hashString: ${(4 / ((performance.now() - t2) / 1000)).toFixed(0)} M chars/s`)
  })
})
