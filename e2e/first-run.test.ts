/**
 * A newcomer's first run, in real Chromium: `npm start` and the dashboard run every Drive
 * example to a result without reading anything; on a grid with no worker the dashboard
 * says so, a Drive run says why it waits, one click donates the very tab, and a stopped
 * run leaves no empty rows. Screenshots go to e2e/screenshots/ (docs/screenshot.mjs makes the README's).
 */
import { describe, it, expect, afterEach } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Page } from 'playwright-core'
import { Client } from 'tabgrid'
import { browserSuite, screenshot, until, untilText, type BrowserGrid } from './harness.js'

const suite = browserSuite()
const root = fileURLToPath(new URL('..', import.meta.url))
let started: ChildProcess | undefined
afterEach(async () => {
  if (started && started.exitCode === null) {
    // npm, its shell and the coordinator: Ctrl-C reaches the whole process group, as in a terminal
    const exited = new Promise(r => started!.once('exit', r))
    process.kill(-started.pid!, 'SIGINT')
    await exited
  }
  started = undefined
})

/** web/dashboard.ts's window.tabgridDashboard, as far as this file reads it (read inside the page) */
interface Dashboard {
  model: { grid: { workers: number } | undefined; groups: Map<string, { name: string; done: number; running: number; queued: number; failed: number }> }
  drive: { results: { example: string; outcome: 'ok' | 'error' | 'stopped'; ms: number }[] }
  volunteer: { state: { state: string } } | undefined
}

async function openDashboard(g: BrowserGrid | undefined, url: string): Promise<Page> {
  const context = await (g ? g.newContext() : suite.browser().newContext())
  const page = await context.newPage()
  await page.setViewportSize({ width: 1440, height: 1000 })
  g?.watch(page)
  if (!g) page.on('pageerror', err => { throw err })
  await page.goto(url)
  await until(() => page.evaluate(() => (window as unknown as { tabgridDashboard: Dashboard }).tabgridDashboard.model.grid !== undefined), 'the first dashboard update')
  return page
}

const results = (page: Page): Promise<{ example: string; outcome: string }[]> => page.evaluate(() => (window as unknown as { tabgridDashboard: Dashboard }).tabgridDashboard.drive.results.map(r => ({ example: r.example, outcome: r.outcome })))

async function runExample(page: Page, title: string, done: RegExp, timeoutMs = 90_000): Promise<void> {
  const before = (await results(page)).length
  await page.getByRole('button', { name: title }).click()
  await page.locator('#run').click()
  await until(async () => (await results(page)).length > before, `${title} to end`, timeoutMs)
  const out = (await page.locator('#output').textContent())!
  expect((await results(page)).at(-1), out).toMatchObject({ outcome: 'ok' })
  expect(out).toMatch(done)
}

describe('first run', () => {
  it('npm start: the dashboard runs every Drive example to a result', { timeout: 300_000 }, async () => {
    // as the README says, plus a free port and JSON logs for the test to read
    // (its journal in a temporary folder: the test leaves nothing in the repository)
    started = spawn('npm', ['start', '--', '--port', '0', '--log-format', 'json', '--journal', join(mkdtempSync(join(tmpdir(), 'tabgrid-first-run-')), 'journal.db')], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    let out = ''
    started.stdout!.on('data', d => { out += String(d) })
    started.stderr!.on('data', d => { out += String(d) })
    // the address it prints for the dashboard carries the client token it made
    const dashboard = await until(() => /"dashboard":"(http:\/\/[^"]+)"/.exec(out)?.[1], 'npm start to listen', 240_000)
    expect(dashboard).toMatch(/\/\?token=[0-9a-f]{32}$/)
    await until(() => (out.match(/"msg":"joined /g) ?? []).length === 2, 'the two local workers')
    const page = await openDashboard(undefined, dashboard)
    await until(() => page.evaluate(() => (window as unknown as { tabgridDashboard: Dashboard }).tabgridDashboard.model.grid?.workers === 2), 'two workers on the dashboard')
    expect(await page.locator('#invite').isHidden()).toBe(true)
    await runExample(page, 'Shape vs pull', /send a => a\.shape to the data: +1000×1000/)
    await runExample(page, 'Map vs chunks', /sum of squares: 333283335000, the same both ways: true/)
    await runExample(page, 'Monte Carlo π', /π ≈ 3\.1\d+ .*\n?.*ran on 2 of 2 workers/s)
    await runExample(page, '10,000 tasks', /10000 tasks done, 5000 of them odd/, 180_000)
    await page.context().close()
  })

  it('with no worker: says so, a run says why it waits, one click donates this tab, and a stopped run leaves no empty row', { timeout: 180_000 }, async () => {
    const grid = await suite.start()
    const page = await openDashboard(grid, grid.coord.dashboardUrl)
    await until(() => page.locator('#invite').isVisible(), 'the no-worker banner')
    expect(await page.locator('#invite').textContent()).toMatch(/No worker has joined yet, so tasks wait in the queue\..*Web Worker.* of this tab.*npx tabgrid worker http:\/\/127\.0\.0\.1:\d+/s)
    await screenshot(page, 'dashboard-no-worker')

    // your own code runs anyway, and says why nothing happens; Stop leaves no 0 / 0 row behind
    await page.locator('#code').fill('print(await client.gather(client.map(x => x + 1, [1, 2, 3])))')
    await page.locator('#run').click()
    await untilText(page, '#output', /No worker has joined the grid yet, so no task can run\. Click “Donate this tab” above/)
    await untilText(page, '#output', /Running anyway: the tasks wait in the queue until a worker joins\./)
    await until(() => page.evaluate(() => [...(window as unknown as { tabgridDashboard: Dashboard }).tabgridDashboard.model.groups.values()].some(g => g.queued === 3)), 'the queued group')
    await page.locator('#stop').click()
    await untilText(page, '#output', /■ stopped after/)
    await until(() => page.evaluate(() => (window as unknown as { tabgridDashboard: Dashboard }).tabgridDashboard.model.groups.size === 0), 'the stopped group to go')
    await until(async () => (await page.locator('#groups .group').count()) === 0, 'its row to go from the page')
    expect(await page.locator('#groups-empty').isVisible()).toBe(true)

    // an example waits for a worker, and starts by itself once one joins: this very tab
    await page.getByRole('button', { name: 'Monte Carlo π' }).click()
    await page.locator('#run').click()
    await untilText(page, '#run-progress-text', /waiting for a worker to join/)
    await page.locator('#donate').click()
    await until(() => page.evaluate(() => (window as unknown as { tabgridDashboard: Dashboard }).tabgridDashboard.volunteer?.state.state === 'connected'), 'this tab to join')
    await untilText(page, '#output', /A worker joined: running\./)
    await untilText(page, '#output', /π ≈ 3\.1\d+ from \d+ million darts/, 90_000)
    await untilText(page, '#output', /ran on 1 of 1 workers: dashboard tab/)
    expect(await page.locator('#invite').isHidden()).toBe(true)
    await untilText(page, '#donating', /Donating: \d+ Web Workers?, [\d,]+ done/)
    const client: Client = await grid.client()
    expect((await client.workers()).map(w => `${w.name} ${w.kind}`)).toEqual(['dashboard tab browser'])

    await runExample(page, 'Shape vs pull', /send a => a\.shape to the data: +1000×1000/)
    await page.evaluate(() => window.scrollTo(0, 0))
    await screenshot(page, 'dashboard-one-worker')

    // Stop donating: the tab hands its data off and leaves
    await page.locator('#donate-stop').click()
    await until(async () => (await client.workers()).length === 0, 'the tab to leave')
    await until(() => page.locator('#invite').isVisible(), 'the banner again')
    expect(grid.errors()).toEqual([])
  })
})
