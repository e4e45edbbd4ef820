/**
 * `Client.local()` in a browser page: the library served at /tabgrid-client.js, imported
 * by a web app on another origin, runs the same API over Web Workers in that page, with
 * no coordinator involved.
 */
import { describe, it, expect } from 'vitest'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

import { browserSuite, until, type BrowserGrid } from './harness.js'

const suite = browserSuite()
let grid: BrowserGrid | undefined

/**
 * Serves the app on another origin than the coordinator's (another port), on loopback
 * like the coordinator: Chromium lets no page from a more public address load from it.
 */
async function serveApp(html: string): Promise<{ url: string; server: Server }> {
  const server = createServer((_req, res) => { res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }); res.end(html) })
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/app.html`, server }
}

/** A web app page that imports the library from the coordinator and runs the seed's examples locally. */
const appPage = (libUrl: string): string => `<!doctype html>
<meta charset="utf-8"><title>an app embedding tabgrid</title>
<script type="module">
  import { Client, partitionAll, SerializationError, TaskError } from ${JSON.stringify(libUrl)}
  try {
    const client = await Client.local({ workers: 2 })
    const x = client.submit((n, m) => ({ shape: [n, m], data: new Float64Array(n * m).fill(1) }), 300, 200)
    const shape = await client.submit(a => a.shape, x).result()
    const pulled = (await x.result()).data.length
    const seq = Array.from({ length: 50 }, (_, i) => i)
    const squares = (await client.gather(client.map(c => c.map(v => v * v), [...partitionAll(10, seq)]))).flat()
    let f = client.submit(v => v + 1, 0)
    for (let i = 1; i < 20; i++) f = client.submit(v => v + 1, f)
    const chain = await f.result()
    const thrown = await client.submit(() => { throw new RangeError('boom') }).result().catch(e => e)
    // the submit-time free-variable check (acorn + eslint-scope) runs in the page too
    const regex = await client.submit(s => { if (s) /a+b/.test(s); return s }, 'aab').result()
    const limit = 3
    let refused = null
    try { client.submit(xs => xs.filter(x => x < limit), [1]) } catch (e) { refused = { isSerializationError: e instanceof SerializationError, name: e.name, code: e.code, message: e.message } }
    const workers = await client.workers()
    await client.close()
    window.result = { shape, pulled, squares, chain, error: { isTaskError: thrown instanceof TaskError, message: thrown.message }, regex, refused, workers }
  } catch (e) {
    window.result = { failed: String(e && e.stack || e) }
  }
</script>`

describe('Client.local in a browser page', () => {
  it('computes in Web Workers of a page on another origin that imports /tabgrid-client.js', async () => {
    grid = await suite.start()
    const app = await serveApp(appPage(`${grid.url}/tabgrid-client.js`))
    const context = await grid.newContext()
    const page = await context.newPage()
    grid.watch(page)
    await page.goto(app.url)
    const result = await until(() => page.evaluate(() => (window as unknown as { result?: Record<string, unknown> }).result), 'the app to finish')
    expect(result.failed).toBeUndefined()
    expect(result).toMatchObject({
      shape: [300, 200],
      pulled: 60_000,
      squares: Array.from({ length: 50 }, (_, i) => i * i),
      chain: 20,
      error: { isTaskError: true, message: expect.stringMatching(/boom/) },
      regex: 'aab',
      refused: { isSerializationError: true, name: 'SerializationError', code: 'serialization', message: expect.stringMatching(/^task function uses `limit`, which would be undefined on the worker/) },
    })
    expect(result.workers).toEqual([expect.objectContaining({ kind: 'browser', slots: 2 })])
    // nothing reached the coordinator: the cluster lived in the page
    expect(grid.coord.coordinator.scheduler.workers()).toHaveLength(0)
    app.server.closeAllConnections()
    await new Promise(r => app.server.close(r))
  })

  it('serves the library with CORS and its typings beside it', async () => {
    grid = await suite.start()
    const js = await fetch(`${grid.url}/tabgrid-client.js`)
    expect(js.status).toBe(200)
    expect(js.headers.get('content-type')).toMatch(/javascript/)
    expect(js.headers.get('access-control-allow-origin')).toBe('*')
    const dts = await fetch(`${grid.url}/tabgrid-client.d.ts`)
    expect(dts.status).toBe(200)
    expect(await dts.text()).toMatch(/export declare class Client\b/)
  })
})
