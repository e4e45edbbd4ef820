// The browser path of `npm run bench`: the same tiny-task and chain workloads on 2 headless
// Chromium tabs × 1 Web Worker each (Debian's /usr/bin/chromium, or TABGRID_CHROMIUM),
// so the figures for tabs are measured, not assumed.
import { existsSync } from 'node:fs'
import { Client, startCoordinator } from 'tabgrid'

const CHROMIUM = process.env.TABGRID_CHROMIUM ?? '/usr/bin/chromium'

/** Rows [name, unit, µs, Dask µs] for 2 tabs, or null when no Chromium is there. */
export async function benchTabs({ tabs = 2, dask = null, anchor = {} } = {}) {
  if (!existsSync(CHROMIUM)) { console.log(`  (no Chromium at ${CHROMIUM}: browser rows skipped)`); return null }
  const { chromium } = await import('playwright-core')
  const coord = await startCoordinator({ port: 0 })
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  })
  const rows = []
  try {
    for (let i = 0; i < tabs; i++) {
      const page = await (await browser.newContext()).newPage()
      await page.goto(`${coord.url}/worker?workers=1&name=bench-tab-${i}`)
    }
    const t0 = Date.now()
    while (coord.coordinator.scheduler.workers().length < tabs) {
      if (Date.now() - t0 > 30_000) throw new Error('tabs did not join')
      await new Promise(r => setTimeout(r, 20))
    }
    const client = await Client.connect(coord.url, { token: coord.clientToken })
    const c = client.with({ pure: false })
    const inc = x => x + 1
    await client.gather(c.map(inc, Array.from({ length: 2000 }, (_, i) => i))) // warm-up
    {
      const n = 10_000
      const t = performance.now()
      const out = await client.gather(c.map(inc, Array.from({ length: n }, (_, i) => i)))
      const ms = performance.now() - t
      if (out[n - 1] !== n) throw new Error('wrong answer from the tabs')
      rows.push([`tabs: ${n.toLocaleString('en')} no-op tasks`, 'µs/task', (ms * 1000) / n, dask?.tiny_tasks_10000?.us_per_task ?? anchor.tiny ?? null])
    }
    {
      const n = 500
      const t = performance.now()
      let f = c.submit(inc, 0)
      for (let i = 0; i < n - 1; i++) f = c.submit(inc, f)
      const v = await f.result()
      const ms = performance.now() - t
      if (v !== n) throw new Error('wrong chain answer from the tabs')
      rows.push(['tabs: chain of 500 dependent tasks', 'µs/hop', (ms * 1000) / n, dask?.dependent_chain?.us_per_task ?? anchor.chain ?? null])
    }
    await client.close()
  } finally {
    await browser.close()
    await coord.close()
  }
  return rows
}
