import { describe, expect, it } from 'vitest'
import { ARENA_CHUNK, ARENA_ITEM, ByteArena, ownBytes } from './bytes.js'

describe('ByteArena', () => {
  it('copies small values side by side into one buffer cut to what was expected', () => {
    const values = Array.from({ length: 100 }, (_, i) => new Uint8Array([i, i + 1, i + 2]))
    const arena = new ByteArena(300)
    const kept = values.map(v => arena.copy(v))
    for (let i = 0; i < values.length; i++) expect([...kept[i]!]).toEqual([...values[i]!])
    expect(new Set(kept.map(k => k.buffer)).size).toBe(1)
    expect(kept[0]!.buffer.byteLength).toBe(300)
    // copies, not views of what was given
    values[5]![0] = 99
    expect(kept[5]![0]).toBe(5)
  })

  it('cuts pieces at ARENA_CHUNK bytes, so a value kept long keeps at most that much alive', () => {
    const n = Math.ceil((3 * ARENA_CHUNK) / ARENA_ITEM)
    const arena = new ByteArena(n * ARENA_ITEM)
    const kept = Array.from({ length: n }, (_, i) => arena.copy(new Uint8Array(ARENA_ITEM).fill(i & 255)))
    const buffers = new Set(kept.map(k => k.buffer))
    expect(buffers.size).toBe(3)
    for (const b of buffers) expect(b.byteLength).toBeLessThanOrEqual(ARENA_CHUNK)
    expect(kept.every((k, i) => k.byteLength === ARENA_ITEM && k[0] === (i & 255) && k[ARENA_ITEM - 1] === (i & 255))).toBe(true)
  })

  it('gives big and empty values buffers of their own, and copes with a wrong expectation', () => {
    const arena = new ByteArena(0)
    const big = new Uint8Array(ARENA_ITEM + 1).fill(7)
    const k = arena.copy(big)
    expect(k).toBe(ownBytes(big)) // already its own buffer: not copied
    const view = new Uint8Array(10_000).subarray(10, 10 + ARENA_ITEM + 1)
    expect(arena.copy(view).buffer.byteLength).toBe(ARENA_ITEM + 1)
    expect(arena.copy(new Uint8Array(0)).byteLength).toBe(0)
    // expected 0 bytes, given 5: a piece as big as the value
    const five = arena.copy(new Uint8Array([1, 2, 3, 4, 5]))
    expect([...five]).toEqual([1, 2, 3, 4, 5])
    expect(five.buffer.byteLength).toBe(5)
  })
})
