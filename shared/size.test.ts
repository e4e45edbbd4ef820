import { describe, it, expect } from 'vitest'
import { formatBytes, parseSize } from './size.js'

describe('parseSize', () => {
  it('reads decimal and binary units, as Dask does', () => {
    expect(parseSize('4GB')).toBe(4e9)
    expect(parseSize('4 gb')).toBe(4e9)
    expect(parseSize('512MB')).toBe(512e6)
    expect(parseSize('1.5kB')).toBe(1500)
    expect(parseSize('2GiB')).toBe(2 ** 31)
    expect(parseSize('1MiB')).toBe(2 ** 20)
    expect(parseSize('1e9')).toBe(1e9)
    expect(parseSize(1234)).toBe(1234)
  })
  it('takes a bare number in the default unit', () => {
    expect(parseSize('512', 'MB')).toBe(512e6)
    expect(parseSize('0.5', 'GB')).toBe(5e8)
  })
  it('refuses what is not a size', () => {
    for (const bad of ['', 'lots', '4 GBs', '-1GB', '4XB', 'GB']) expect(parseSize(bad)).toBeNaN()
  })
})

describe('formatBytes', () => {
  it('writes decimal units (1 kB = 1000 B), at most one decimal', () => {
    expect(formatBytes(0)).toBe('0 B')
    expect(formatBytes(999)).toBe('999 B')
    expect(formatBytes(1000)).toBe('1 kB')
    expect(formatBytes(1536)).toBe('1.5 kB')
    expect(formatBytes(128e6)).toBe('128 MB')
    expect(formatBytes(12_345_678)).toBe('12.3 MB')
    expect(formatBytes(4e9)).toBe('4 GB')
    expect(formatBytes(999_999)).toBe('1 MB')
  })
  it('round-trips through parseSize', () => {
    for (const n of [1000, 5e6, 128e6, 4e9, 2e12]) expect(parseSize(formatBytes(n).replace(' ', ''))).toBe(n)
  })
})
