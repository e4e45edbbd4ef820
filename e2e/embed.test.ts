/**
 * The client embedded in a plain web app: the coordinator serves the ESM bundle at
 * /tabgrid-client.js (with its typings beside it, and CORS so any origin may import it),
 * and examples/embed.html — a page with nothing but a `<script type="module">` — computes
 * on the grid's worker tabs.
 */
import { describe, it, expect } from 'vitest'
import { browserSuite, screenshot, until, untilText, type BrowserGrid } from './harness.js'

const suite = browserSuite()
let grid: BrowserGrid | undefined

describe('the client embedded in a web app', () => {
  it('is served as an ES module with its typings, to any origin', async () => {
    grid = await suite.start()
    const js = await fetch(`${grid.url}/tabgrid-client.js`, { headers: { origin: 'https://example.org' } })
    expect(js.status).toBe(200)
    expect(js.headers.get('content-type')).toMatch(/javascript/)
    expect(js.headers.get('access-control-allow-origin')).toBe('*')
    expect(await js.text()).toMatch(/export\s*\{[^}]*\bClient\b/)
    const dts = await fetch(`${grid.url}/tabgrid-client.d.ts`)
    expect(dts.status).toBe(200)
    expect(await dts.text()).toMatch(/export declare class Client\b/)
    // the example page is served, and only pages from examples/ (not the scripts beside them)
    expect((await fetch(`${grid.url}/examples/embed.html`)).status).toBe(200)
    expect((await fetch(`${grid.url}/examples/_grid.mjs`)).status).toBe(404)
    expect((await fetch(`${grid.url}/examples/..%2Fpackage.json`)).status).toBe(404)
  })

  it('examples/embed.html computes on the grid', async () => {
    grid = await suite.start()
    await grid.openTab({ workers: 2, name: 'tab-a' })
    await grid.openTab({ workers: 1, name: 'tab-b' })
    const context = await grid.newContext()
    const page = await context.newPage()
    grid.watch(page)
    await page.goto(`${grid.url}/examples/embed.html?token=${encodeURIComponent(grid.coord.clientToken ?? '')}`)
    await untilText(page, '#log', /connected; 2 workers on the grid/)
    await until(() => page.locator('#count').isEnabled(), 'the button')
    await page.locator('#count').click()
    await untilText(page, '#answer', /148,933 primes below 2,000,000/, 30_000)
    expect(await page.locator('#answer').getAttribute('data-total')).toBe('148933')
    await untilText(page, '#log', /20 tasks in \d+ ms/)
    // the work ran on the tabs, not in the page
    const done = grid.coord.coordinator.workerSummaries().reduce((n, w) => n + (w.done as number), 0)
    expect(done).toBe(20)
    await screenshot(page, 'embed')
  })
})
