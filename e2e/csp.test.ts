/**
 * Safety for the volunteer: the worker page and everything it loads carry a CSP under
 * which tasks reach nothing but the coordinator. Proved against a real second origin
 * that would answer if it were reached.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Browser } from 'playwright-core'
import { TaskError } from 'tabgrid'
import { launchBrowser, startBrowserGrid, type BrowserGrid } from './harness.js'

let browser: Browser
let grid: BrowserGrid | undefined
/** another origin, on this machine, that counts what reaches it */
let other: { server: Server; url: string; wsUrl: string; hits: string[] }

beforeAll(async () => {
  browser = await launchBrowser()
  const hits: string[] = []
  const server = createServer((req, res) => {
    hits.push(`${req.method} ${req.url}`)
    res.writeHead(200, { 'access-control-allow-origin': '*', 'content-type': 'text/plain' })
    res.end('reached')
  })
  server.on('upgrade', (req, socket) => { hits.push(`upgrade ${req.url}`); socket.destroy() })
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r))
  // localhost, not 127.0.0.1: a different host as well as a different port
  const port = (server.address() as AddressInfo).port
  other = { server, url: `http://localhost:${port}`, wsUrl: `ws://localhost:${port}`, hits }
})
afterAll(async () => {
  await browser?.close()
  await new Promise(r => other?.server.close(r))
})
afterEach(async () => {
  const errors = grid?.errors() ?? []
  await grid?.close()
  grid = undefined
  expect(errors, 'page errors').toEqual([])
})

describe('content security policy of the worker page', () => {
  it('is sent with the page and with every script it loads, including the Web Workers', async () => {
    grid = await startBrowserGrid(browser)
    const page = await grid.openTab()
    const seen = new Map<string, string | undefined>()
    page.page.on('response', r => { seen.set(new URL(r.url()).pathname, r.headers()['content-security-policy']) })
    await page.reload()
    await page.waitFor('connected')
    const csp = seen.get('/worker')
    expect(csp).toBeDefined()
    expect(csp).toContain("connect-src 'self'")
    expect(csp).toContain("script-src 'self' 'unsafe-eval' blob:")
    expect(csp).toContain("worker-src 'self' blob:")
    expect(csp).not.toMatch(/connect-src[^;]*\bwss?:/)
    const scripts = [...seen.keys()].filter(p => p.endsWith('.js'))
    expect(scripts.some(p => /\/assets\/webworker-/.test(p)), `Web Worker script among ${scripts.join(', ')}`).toBe(true)
    for (const p of scripts) expect(seen.get(p), p).toBe(csp)
    // and over plain HTTP, for anyone checking with curl
    const res = await fetch(`${grid.url}/worker`)
    expect(res.headers.get('content-security-policy')).toBe(csp)
  })

  it('lets a task reach the coordinator, and nothing else: fetch and WebSocket to another origin fail', async () => {
    grid = await startBrowserGrid(browser)
    const tab = await grid.openTab({ workers: 1 })
    tab.allowErrors(/Content Security Policy|Refused to connect/)
    const client = await grid.client()

    // the coordinator itself is reachable (and the tab's own socket.io websocket connected under the same policy)
    const health = client.submit(async (url: string) => (await fetch(url)).status, `${grid.url}/health`)
    expect(await health.result()).toBe(200)

    const probe = async (url: string): Promise<string> => {
      const seen: string[] = []
      self.addEventListener('securitypolicyviolation', e => { seen.push((e as SecurityPolicyViolationEvent).effectiveDirective) })
      try {
        await fetch(url)
      } catch (err) {
        await new Promise(r => setTimeout(r, 50))
        throw new Error(`fetch ${url} failed (${(err as Error).message}); CSP violations: ${seen.join(', ') || 'none'}`)
      }
      return 'reached'
    }
    const err = await client.submit(probe, other.url).result().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TaskError)
    expect((err as TaskError).message).toMatch(/CSP violations: connect-src/)

    // a task that just fetches is told why it failed
    const plain = await client.submit(async (url: string) => (await fetch(url)).status, `${other.url}/plain`).result().catch((e: unknown) => e)
    expect(plain).toBeInstanceOf(TaskError)
    expect((plain as TaskError).message).toMatch(/blocked.*Content-Security-Policy: connect-src 'self'/)

    const socket = async (url: string): Promise<string> => {
      const seen: string[] = []
      self.addEventListener('securitypolicyviolation', e => { seen.push((e as SecurityPolicyViolationEvent).effectiveDirective) })
      const outcome = await new Promise<string>(resolve => {
        try {
          const ws = new WebSocket(url)
          ws.onopen = () => resolve('open')
          ws.onerror = () => resolve('error')
        } catch (e) { resolve(`threw ${(e as Error).name}`) }
      })
      await new Promise(r => setTimeout(r, 50))
      if (outcome === 'open') return 'reached'
      throw new Error(`WebSocket to ${url}: ${outcome}; CSP violations: ${seen.join(', ') || 'none'}`)
    }
    const wsErr = await client.submit(socket, other.wsUrl).result().catch((e: unknown) => e)
    expect(wsErr).toBeInstanceOf(TaskError)
    expect((wsErr as TaskError).message).toMatch(/CSP violations: connect-src/)

    expect(other.hits, 'requests that reached the other origin').toEqual([])
  })
})

