// Takes the README's dashboard screenshots on a real grid: a coordinator started from the
// command line (its own process, so its overhead figures are its own), three headless
// Chromium worker tabs × 2 Web Workers, and 10,000 tasks from a Node client.
//   npm run build && node docs/screenshot.mjs
// Writes docs/dashboard.png (watching a run of 15–35 ms tasks) and docs/dashboard-drive.png
// (the code panel's map vs chunks, and its warning). About two minutes on 2 cores.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { Client } from 'tabgrid'

const here = fileURLToPath(new URL('.', import.meta.url))
const BIN = fileURLToPath(new URL('../bin/tabgrid.js', import.meta.url))
const until = async (check, what, ms = 120_000) => {
  const t0 = Date.now()
  for (;;) {
    const v = await check().catch(() => undefined)
    if (v) return v
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 100))
  }
}

const coordinator = spawn(process.execPath, [BIN, 'coordinator', '--port', '0', '--quiet'], { stdio: ['ignore', 'pipe', 'inherit'] })
const url = await new Promise((resolve, reject) => {
  let out = ''
  coordinator.stdout.on('data', d => { out += d; const m = /listening on (\S+)/.exec(out); if (m) resolve(m[1]) })
  coordinator.once('exit', code => reject(new Error(`coordinator exited with ${code}`)))
})
const browser = await chromium.launch({ executablePath: process.env.TABGRID_CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] })
try {
  for (let i = 1; i <= 3; i++) {
    const tab = await (await browser.newContext()).newPage()
    await tab.goto(`${url}/worker?workers=2&name=tab-${i}`)
  }
  const page = await (await browser.newContext({ viewport: { width: 1360, height: 1010 } })).newPage()
  page.on('pageerror', err => console.error(`dashboard: ${err.message}`))
  await page.goto(url)
  await until(() => page.evaluate(() => window.tabgridDashboard.model.workers.size === 3), 'three tabs')
  const client = await Client.connect(url)

  const spin = i => {
    const end = performance.now() + 15 + (i % 21)
    let x = 0
    while (performance.now() < end) x += Math.sqrt(i)
    return x > 0 ? i : -1
  }
  const blend = i => {
    const end = performance.now() + 24
    let x = i
    while (performance.now() < end) x = (x * 1103515245 + 12345) % 2147483648
    return x
  }
  const futures = []
  for (let c = 0; c < 10; c++) {
    futures.push(...client.map(spin, Array.from({ length: 700 }, (_, i) => c * 700 + i)))
    futures.push(...client.map(blend, Array.from({ length: 300 }, (_, i) => c * 300 + i)))
  }
  await until(() => page.evaluate(() => [...window.tabgridDashboard.model.groups.values()].reduce((n, g) => n + g.done, 0) > 1200), 'the first tasks', 300_000)
  // hover a recent bar and click it: its tooltip and its story
  const bar = await page.evaluate(() => {
    const c = document.querySelector('#stream')
    const r = c.getBoundingClientRect()
    const ratio = c.width / c.clientWidth
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data
    for (let x = c.width - 1 - Math.round(60 * ratio); x >= 0; x -= 2) {
      for (let y = Math.round(20 * ratio); y < c.height; y += 2) {
        const i = (y * c.width + x) * 4
        if (d[i + 3] > 200 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) return { x: r.left + x / ratio - 1, y: r.top + y / ratio + 1 }
      }
    }
    return undefined
  })
  if (bar) {
    await page.mouse.move(bar.x, bar.y)
    await page.mouse.click(bar.x, bar.y)
    await until(() => page.evaluate(() => /ran on/.test(document.querySelector('#story-summary').textContent)), 'the story')
  }
  await page.screenshot({ path: `${here}dashboard.png` })
  await client.gather(futures)
  for (const f of futures) f.release()

  // the code panel: map vs chunks, and the warning tiny tasks bring
  await page.mouse.move(0, 0)
  await page.getByRole('button', { name: 'Map vs chunks' }).click()
  await page.locator('#run').click()
  await until(() => page.evaluate(() => /✓ done/.test(document.querySelector('#output').textContent)), 'the example')
  await until(() => page.locator('#warning').isVisible(), 'the warning')
  // the progress bars are an update (≤ 500 ms) behind the code's own output
  await until(() => page.evaluate(() => [...window.tabgridDashboard.model.groups.values()].every(g => g.running + g.queued === 0)), 'the bars to finish')
  await page.waitForTimeout(600)
  await page.setViewportSize({ width: 1360, height: 1600 })
  const box = await page.locator('#drive').boundingBox()
  await page.screenshot({ path: `${here}dashboard-drive.png`, clip: { x: 0, y: 0, width: 1360, height: Math.round(box.y + box.height + 16) } })
  await client.close()
  console.log(`wrote ${here}dashboard.png and ${here}dashboard-drive.png`)
} finally {
  await browser.close()
  coordinator.kill('SIGINT')
}
