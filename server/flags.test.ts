import { describe, it, expect } from 'vitest'
import { parseDuration, parseMemoryLimit } from './flags.js'

describe('--memory-limit', () => {
  const total = 16e9
  it('takes auto, a fraction, or a size (decimal units, binary with i)', () => {
    expect(parseMemoryLimit('auto', total)).toBe(16e9)
    expect(parseMemoryLimit('AUTO', total)).toBe(16e9)
    expect(parseMemoryLimit('0.5', total)).toBe(8e9)
    expect(parseMemoryLimit('.25', total)).toBe(4e9)
    expect(parseMemoryLimit('1', total)).toBe(16e9)
    expect(parseMemoryLimit('4GB', total)).toBe(4e9)
    expect(parseMemoryLimit('4GiB', total)).toBe(4 * 2 ** 30)
    expect(parseMemoryLimit('512 MB', total)).toBe(512e6)
    expect(parseMemoryLimit('2000000000', total)).toBe(2e9)
  })
  it('refuses the rest, naming the flag', () => {
    for (const bad of ['', 'lots', '0', '-1GB', '1.5', '100kB', '4 XB']) expect(() => parseMemoryLimit(bad, total)).toThrow(/--memory-limit must be auto, a fraction/)
  })
})

describe('--death-timeout and --lifetime', () => {
  it('reads seconds, or a number with a unit', () => {
    expect(parseDuration('60', '--lifetime')).toBe(60_000)
    expect(parseDuration('1.5', '--lifetime')).toBe(1500)
    expect(parseDuration('90s', '--lifetime')).toBe(90_000)
    expect(parseDuration('5m', '--lifetime')).toBe(300_000)
    expect(parseDuration('1h', '--lifetime')).toBe(3_600_000)
    expect(parseDuration('1 hour', '--lifetime')).toBe(3_600_000)
    expect(parseDuration('500ms', '--death-timeout')).toBe(500)
  })
  it('refuses the rest, naming the flag', () => {
    for (const bad of ['', 'soon', '-5', '0', '1 fortnight', '100 days']) expect(() => parseDuration(bad, '--death-timeout')).toThrow(/--death-timeout must be a duration/)
  })
})
