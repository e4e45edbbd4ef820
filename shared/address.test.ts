import { describe, it, expect } from 'vitest'
import { coordinatorUrl } from './address.js'

describe('coordinatorUrl', () => {
  it('takes addresses with and without http://', () => {
    expect(coordinatorUrl('http://127.0.0.1:8786')).toBe('http://127.0.0.1:8786')
    expect(coordinatorUrl('127.0.0.1:8786')).toBe('http://127.0.0.1:8786')
    expect(coordinatorUrl('localhost:9000')).toBe('http://localhost:9000')
    expect(coordinatorUrl('  grid.example.org  ')).toBe('http://grid.example.org:8786')
    expect(coordinatorUrl('[::1]:8786')).toBe('http://[::1]:8786')
    expect(coordinatorUrl('https://grid.example.org')).toBe('https://grid.example.org')
    expect(coordinatorUrl('http://h:80')).toBe('http://h:80')
    expect(coordinatorUrl('ws://127.0.0.1:8786')).toBe('http://127.0.0.1:8786')
    expect(coordinatorUrl('wss://grid.example.org:443')).toBe('https://grid.example.org:443')
  })
  it('drops a page path, query and hash (the dashboard or worker page URL works too)', () => {
    expect(coordinatorUrl('http://127.0.0.1:8786/worker?workers=2')).toBe('http://127.0.0.1:8786')
    expect(coordinatorUrl('127.0.0.1:8786/')).toBe('http://127.0.0.1:8786')
  })
  it("refuses Dask's tcp:// and other schemes, saying what to write", () => {
    expect(() => coordinatorUrl('tcp://127.0.0.1:8786')).toThrow(/speaks HTTP and WebSocket, not tcp:\/\/ \(Dask's scheme\): use http:\/\/127\.0\.0\.1:8786/)
    expect(() => coordinatorUrl('ftp://h:21')).toThrow(/not ftp:\/\//)
    expect(() => coordinatorUrl('mailto:someone')).toThrow(/not a coordinator address: write it as http:\/\/HOST:PORT/)
  })
  it('refuses what is not an address', () => {
    expect(() => coordinatorUrl('')).toThrow(TypeError)
    expect(() => coordinatorUrl('   ')).toThrow(TypeError)
    expect(() => coordinatorUrl(undefined)).toThrow(/must be a URL/)
    expect(() => coordinatorUrl('http://')).toThrow(/not a coordinator address|has no host/)
    expect(() => coordinatorUrl('http://user:pw@h:1')).toThrow(/token option/)
    expect(() => coordinatorUrl('h:notaport')).toThrow(/not a coordinator address/)
  })
})
