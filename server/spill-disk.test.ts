import { afterEach, describe, expect, it } from 'vitest'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DiskSpillStore } from './spill-disk.js'

const stores: DiskSpillStore[] = []
const make = (dir?: string): DiskSpillStore => {
  const s = new DiskSpillStore(dir)
  stores.push(s)
  return s
}
afterEach(async () => {
  for (const s of stores.splice(0)) await s.clear()
})

describe('DiskSpillStore', () => {
  it('makes a fresh temporary directory on first use and removes it on clear', async () => {
    const s = make()
    const dir = await s.directory()
    expect(dir.startsWith(join(tmpdir(), 'tabgrid-spill-'))).toBe(true)
    expect(existsSync(dir)).toBe(true)
    await s.set('a', new Uint8Array([1]))
    await s.clear()
    expect(existsSync(dir)).toBe(false)
    // usable again: a new directory
    await s.set('b', new Uint8Array([2]))
    expect(await s.keys()).toEqual(['b'])
    expect(await s.directory()).not.toBe(dir)
  })

  it('sets, gets, lists, sizes and deletes', async () => {
    const s = make()
    const big = new Uint8Array(3 << 20).map((_, i) => i * 7)
    await s.set('x', new Uint8Array([1, 2, 3]))
    await s.set('big', big)
    expect(await s.get('x')).toEqual(new Uint8Array([1, 2, 3]))
    const got = (await s.get('big'))!
    expect(got.byteLength).toBe(big.byteLength)
    expect(got.byteOffset).toBe(0)
    expect(got.buffer.byteLength).toBe(big.byteLength) // owns its buffer: transferable without a copy
    expect(Buffer.from(got).equals(Buffer.from(big))).toBe(true)
    expect(await s.size('big')).toBe(big.byteLength)
    expect(await s.size('nope')).toBeUndefined()
    expect(await s.get('nope')).toBeUndefined()
    expect((await s.keys()).sort()).toEqual(['big', 'x'])
    await s.del(['x', 'nope'])
    expect(await s.get('x')).toBeUndefined()
    expect(await s.keys()).toEqual(['big'])
    await s.del([])
  })

  it('overwrites a key, stores an empty value, writes only the view it is given', async () => {
    const s = make()
    await s.set('k', new Uint8Array([1, 2, 3]))
    await s.set('k', new Uint8Array([9]))
    expect(await s.get('k')).toEqual(new Uint8Array([9]))
    await s.set('empty', new Uint8Array(0))
    expect(await s.get('empty')).toEqual(new Uint8Array(0))
    const backing = new Uint8Array([0, 0, 5, 6, 7, 0])
    await s.set('view', backing.subarray(2, 5))
    expect(await s.get('view')).toEqual(new Uint8Array([5, 6, 7]))
  })

  it('takes any key: slashes, dots, unicode, 256 characters', async () => {
    const s = make()
    const keys = ['../../etc/passwd', '.', '..', 'a/b\\c:d*e?f"g<h>i|j', 'ключ-🔑-\u0000', 'x'.repeat(256), '\ud800lone']
    for (const [i, k] of keys.entries()) await s.set(k, new Uint8Array([i]))
    const dir = await s.directory()
    expect((await readdir(dir)).length).toBe(keys.length) // nothing written outside it
    for (const [i, k] of keys.entries()) expect(await s.get(k)).toEqual(new Uint8Array([i]))
    expect((await s.keys()).sort()).toEqual([...keys].sort())
    // a lone surrogate is kept exactly: its look-alike is another key
    expect(await s.get('\ufffdlone')).toBeUndefined()
  })

  it('a store reopened on the same directory finds what was there', async () => {
    const a = make()
    const dir = await a.directory()
    await a.set('kept', new Uint8Array([4, 2]))
    const b = new DiskSpillStore(dir)
    expect(await b.keys()).toEqual(['kept'])
    expect(await b.get('kept')).toEqual(new Uint8Array([4, 2]))
  })

  it('ignores files that are not its own and leftovers of interrupted writes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tabgrid-spill-test-'))
    const s = make(dir)
    await s.set('real', new Uint8Array([1]))
    await writeFile(join(dir, 'junk.spill'), 'hello world, not a spill file')
    await writeFile(join(dir, 'abc.spill.123.1.tmp'), new Uint8Array([1, 0, 0, 0, 65]))
    await writeFile(join(dir, 'README'), 'x')
    expect(await s.keys()).toEqual(['real'])
  })

  it('concurrent writes of different keys and of one key', async () => {
    const s = make()
    await Promise.all(Array.from({ length: 50 }, (_, i) => s.set(`k${i}`, new Uint8Array([i]))))
    expect((await s.keys()).length).toBe(50)
    await Promise.all(Array.from({ length: 10 }, (_, i) => s.set('same', new Uint8Array(100).fill(i))))
    const v = (await s.get('same'))!
    expect(v.length).toBe(100)
    expect(new Set(v).size).toBe(1) // one whole write won, never a mix
  })

  it('clear of a given directory removes it; keys of a missing directory is empty', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'tabgrid-spill-test-'))
    const dir = join(parent, 'sub')
    const s = make(dir)
    expect(await s.keys()).toEqual([])
    await s.set('a', new Uint8Array([1]))
    expect(existsSync(dir)).toBe(true)
    await s.clear()
    expect(existsSync(dir)).toBe(false)
    await rm(parent, { recursive: true, force: true })
  })
})
