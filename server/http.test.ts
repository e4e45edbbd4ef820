import { describe, it, expect, vi } from 'vitest'

// the real timingSafeEqual, watched: the test checks the comparison goes through it
const calls = vi.hoisted(() => ({ n: 0 }))
vi.mock('node:crypto', async importOriginal => {
  const real = await importOriginal<typeof import('node:crypto')>()
  return { ...real, timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => { calls.n++; return real.timingSafeEqual(a, b) } }
})

const { tokenEquals, peerAddress } = await import('./http.js')

describe('tokenEquals', () => {
  it('compares with crypto.timingSafeEqual, over digests of equal length whatever the inputs', () => {
    const cases: [string, string, boolean][] = [
      ['s3cret-token', 's3cret-token', true],
      ['s3cret-token', 's3cret-tokeN', false],
      ['', 's3cret-token', false],
      ['s3cret', 's3cret-token-much-longer-than-the-other', false],
      ['s3cret-token-much-longer-than-the-other', 's3cret', false],
      ['', '', true],
      ['ünïcode', 'ünïcode', true],
    ]
    for (const [given, expected, equal] of cases) {
      const before = calls.n
      // different lengths do not throw (timingSafeEqual would, on unequal buffers)
      expect(tokenEquals(given, expected)).toBe(equal)
      expect(calls.n).toBe(before + 1)
    }
  })
})

describe('peerAddress', () => {
  const hs = (xff?: string | string[]) => ({ address: '10.0.0.1', headers: xff === undefined ? {} : { 'x-forwarded-for': xff } })
  it('is the TCP peer unless the proxy is trusted', () => {
    expect(peerAddress(hs('203.0.113.7'), false)).toBe('10.0.0.1')
  })
  it('with a trusted proxy, is the last hop of X-Forwarded-For only (earlier entries are the peer\'s word)', () => {
    expect(peerAddress(hs('203.0.113.7'), true)).toBe('203.0.113.7')
    expect(peerAddress(hs('6.6.6.6, 203.0.113.7'), true)).toBe('203.0.113.7')
    expect(peerAddress(hs(['6.6.6.6', '203.0.113.8 ']), true)).toBe('203.0.113.8')
    expect(peerAddress(hs('2001:db8::1'), true)).toBe('2001:db8::1')
  })
  it('falls back to the TCP peer without a usable header', () => {
    expect(peerAddress(hs(), true)).toBe('10.0.0.1')
    expect(peerAddress(hs(''), true)).toBe('10.0.0.1')
    expect(peerAddress(hs('1.2.3.4, '), true)).toBe('10.0.0.1')
    expect(peerAddress(hs('x'.repeat(100)), true)).toBe('10.0.0.1')
  })
})
