// Takes the README's dashboard screenshots on real grids, coordinators started from the
// command line (their own processes, so their overhead figures are their own) and headless
// Chromium:
//   npm run build && node docs/screenshot.mjs
// docs/dashboard-no-worker.png: a coordinator with no worker, as a newcomer first sees it;
// docs/dashboard.png: the same dashboard after "Donate this tab" and two Drive examples;
// docs/dashboard-busy.png: three worker tabs × 2 Web Workers running 10,000 tasks of 15–35 ms
// from a Node client, a task's story open. About three minutes on 2 cores.
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

function startCoordinator() {
  const coordinator = spawn(process.execPath, [BIN, 'coordinator', '--port', '0', '--log-format', 'json', '--log-level', 'info', '--no-journal'], { stdio: ['ignore', 'pipe', 'inherit'] })
  // its first record has its address and the dashboard's, which carries the client token it made
  const banner = new Promise((resolve, reject) => {
    let out = ''
    coordinator.stdout.on('data', d => {
      out += d
      const m = /"url":"([^"]+)".*"dashboard":"([^"]+)"/.exec(out)
      if (m) resolve({ url: m[1], dashboard: m[2], token: new URL(m[2]).searchParams.get('token') ?? undefined })
    })
    coordinator.once('exit', code => reject(new Error(`coordinator exited with ${code}`)))
  })
  return { coordinator, banner }
}

const browser = await chromium.launch({ executablePath: process.env.TABGRID_CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] })
const first = startCoordinator()
try {
  // a newcomer's first look: no worker yet, then this very tab donated
  const { dashboard } = await first.banner
  const page = await (await browser.newContext({ viewport: { width: 1360, height: 1010 } })).newPage()
  page.on('pageerror', err => console.error(`dashboard: ${err.message}`))
  await page.goto(dashboard)
  await until(() => page.locator('#invite').isVisible(), 'the no-worker banner')
  await page.waitForTimeout(1200)
  await page.screenshot({ path: `${here}dashboard-no-worker.png` })
  await page.locator('#donate').click()
  await until(() => page.evaluate(() => window.tabgridDashboard.volunteer?.state.state === 'connected'), 'the tab to join')
  for (const title of ['Monte Carlo π', 'Shape vs pull']) {
    const n = await page.evaluate(() => window.tabgridDashboard.drive.results.length)
    await page.getByRole('button', { name: title }).click()
    await page.locator('#run').click()
    await until(() => page.evaluate(k => window.tabgridDashboard.drive.results.length > k, n), title)
  }
  await page.waitForTimeout(1200)
  await page.screenshot({ path: `${here}dashboard.png` })
  console.log(`wrote ${here}dashboard-no-worker.png and ${here}dashboard.png`)
} finally {
  first.coordinator.kill('SIGINT')
}

const { coordinator, banner } = startCoordinator()
const { url, dashboard, token } = await banner
try {
  for (let i = 1; i <= 3; i++) {
    const tab = await (await browser.newContext()).newPage()
    await tab.goto(`${url}/worker?workers=2&name=tab-${i}`)
  }
  const page = await (await browser.newContext({ viewport: { width: 1360, height: 1010 } })).newPage()
  page.on('pageerror', err => console.error(`dashboard: ${err.message}`))
  await page.goto(dashboard)
  await until(() => page.evaluate(() => window.tabgridDashboard.model.workers.size === 3), 'three tabs')
  const client = await Client.connect(url, { token })

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
  await page.screenshot({ path: `${here}dashboard-busy.png` })
  await client.gather(futures)
  for (const f of futures) f.release()
  await client.close()
  console.log(`wrote ${here}dashboard-busy.png`)
} finally {
  await browser.close()
  coordinator.kill('SIGINT')
}
