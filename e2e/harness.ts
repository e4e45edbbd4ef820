/**
 * e2e harness: a real coordinator on port 0 (from the built package) and real headless
 * Chromium tabs on its worker page. Every page's console errors and uncaught errors are
 * collected, and a test fails on any it did not expect. Waiting is always polling.
 *
 * Chromium is Debian's (`apt-get install chromium`, done by .ci/run); playwright-core
 * only drives it, so `npx playwright install` is never needed.
 */
import { mkdirSync } from 'node:fs'
import { afterAll, afterEach, beforeAll, expect } from 'vitest'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import { Client, startCoordinator, type RunningCoordinator, type StartOptions } from 'tabgrid'

export const CHROMIUM = process.env.TABGRID_CHROMIUM ?? '/usr/bin/chromium'
export const SCREENSHOTS = fileURLToPath(new URL('./screenshots/', import.meta.url))

export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  })
}

/** Polls `check` until it returns something truthy; never a fixed sleep. */
export async function until<T>(check: () => T | Promise<T>, what: string, timeoutMs = 20_000): Promise<NonNullable<T>> {
  const t0 = Date.now()
  let last: unknown
  for (;;) {
    try {
      const v = await check()
      if (v) return v as NonNullable<T>
    } catch (err) { last = err }
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`)
    await new Promise(r => setTimeout(r, 50))
  }
}

/** What window.tabgrid.status says (web/volunteer.ts VolunteerState). */
export interface TabStatus { state: string; id?: string; resumed?: boolean; reason?: string; error?: string }
/** What window.tabgrid.stats() says (web/volunteer.ts VolunteerStats). */
export interface TabStats { threads: number; running: number; queued: number; done: number; busyMs: number; held: number; memory: number; spilled: number; paused: boolean }

/** Errors every page may log: none so far. Tests add their own with `allowErrors`. */
const ALWAYS_ALLOWED: RegExp[] = []

export interface WorkerTab {
  page: Page
  context: BrowserContext
  name: string
  status(): Promise<TabStatus>
  stats(): Promise<TabStats>
  /** the coordinator's id for this tab, once connected */
  workerId(): Promise<string>
  /** polls until the page says it is in `state` */
  waitFor(state: string, timeoutMs?: number): Promise<TabStatus>
  reload(): Promise<void>
  /** closes the tab (as a volunteer would), or its whole context */
  close(): Promise<void>
  allowErrors(...patterns: RegExp[]): void
}

export interface TabOptions {
  workers?: number
  /** memory budget in MB (small values force spilling) */
  memory?: number
  name?: string
  /** more query parameters */
  query?: Record<string, string>
  /** open in this context (shares sessionStorage origin data, IndexedDB) instead of a fresh one */
  context?: BrowserContext
  /** wait until the coordinator lists the tab (default true) */
  join?: boolean
}

export interface BrowserGrid {
  coord: RunningCoordinator
  url: string
  tabs: WorkerTab[]
  /** opens a worker tab and waits until the coordinator lists it */
  openTab(opts?: TabOptions): Promise<WorkerTab>
  /** a Node client of this grid, closed with it */
  client(): Promise<Client>
  /** a fresh browser context, closed with the grid */
  newContext(): Promise<BrowserContext>
  /** a page on this origin or another, watched for errors like the tabs */
  watch(page: Page, allowed?: RegExp[]): void
  /** unexpected page errors so far */
  errors(): string[]
  /** forgets the errors so far (for tests that cause them on purpose) */
  clearErrors(): void
  close(): Promise<void>
}

let tabCount = 0

export async function startBrowserGrid(browser: Browser, coordinator: StartOptions = {}): Promise<BrowserGrid> {
  const coord = await startCoordinator({ port: 0, validate: true, workerGraceMs: 300, clientGraceMs: 500, ...coordinator })
  const errors: string[] = []
  const contexts = new Set<BrowserContext>()
  const clients: Client[] = []

  const watch = (page: Page, allowed: RegExp[] = []): void => {
    const label = (): string => { try { return new URL(page.url()).pathname + new URL(page.url()).search } catch { return page.url() } }
    const report = (what: string): void => {
      if ([...ALWAYS_ALLOWED, ...allowed].some(re => re.test(what))) return
      errors.push(`${label()}: ${what}`)
    }
    page.on('console', msg => { if (msg.type() === 'error') report(`console.error: ${msg.text()}`) })
    // the page's Web Workers (where tasks run) log on their own
    page.on('worker', worker => worker.on('console', msg => { if (msg.type() === 'error') report(`console.error in a Web Worker: ${msg.text()}`) }))
    page.on('pageerror', err => report(`uncaught: ${err.stack ?? err.message}`))
    page.on('crash', () => report('the page crashed'))
  }

  const grid: BrowserGrid = {
    coord,
    url: coord.url,
    tabs: [],
    watch,
    errors: () => [...errors],
    clearErrors: () => { errors.length = 0 },
    async newContext() {
      const context = await browser.newContext()
      contexts.add(context)
      return context
    },
    async openTab(opts = {}) {
      const name = opts.name ?? `tab-${++tabCount}`
      const context = opts.context ?? await browser.newContext()
      contexts.add(context)
      const page = await context.newPage()
      const allowed: RegExp[] = []
      watch(page, allowed)
      const q = new URLSearchParams({ workers: String(opts.workers ?? 2), name, ...opts.query })
      if (opts.memory !== undefined) q.set('memory', String(opts.memory))
      const tab: WorkerTab = {
        page, context, name,
        status: () => page.evaluate(() => JSON.parse(JSON.stringify(window.tabgrid.status)) as TabStatus),
        stats: () => page.evaluate(() => window.tabgrid.stats()),
        async workerId() {
          const s = await tab.waitFor('connected')
          return s.id!
        },
        waitFor: (state, timeoutMs) => until(async () => {
          const s = await tab.status().catch(() => undefined)
          return s?.state === state ? s : undefined
        }, `${name} to be ${state}`, timeoutMs),
        async reload() {
          await page.reload()
        },
        async close() {
          if (!page.isClosed()) await page.close()
          grid.tabs.splice(grid.tabs.indexOf(tab), 1)
        },
        allowErrors: (...patterns) => { allowed.push(...patterns) },
      }
      grid.tabs.push(tab)
      await page.goto(`${coord.url}/worker?${q}`)
      if (opts.join !== false) await until(() => coord.coordinator.workerSummaries().some(w => w.name === name && w.connected), `${name} to join the coordinator`)
      return tab
    },
    async client() {
      const c = await Client.connect(coord.url, { token: coord.clientToken })
      clients.push(c)
      return c
    },
    async close() {
      for (const c of clients) await c.close().catch(() => {})
      // tabs go first, so none of them sees its coordinator vanish
      for (const ctx of contexts) await ctx.close().catch(() => {})
      await coord.close()
    },
  }
  return grid
}

/** Saves a screenshot of `page` to e2e/screenshots/<name>.png; returns the path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOTS, { recursive: true })
  const path = `${SCREENSHOTS}${name}.png`
  await page.screenshot({ path, fullPage: true })
  return path
}

/** The coordinator's name for worker `id` (workers are named after their tab). */
export async function nameOf(client: Client, id: string): Promise<string | undefined> {
  return (await client.workers()).find(w => w.id === id)?.name
}

declare global {
  interface Window {
    tabgrid: { readonly status: TabStatus; stats(): TabStats; setPool(n: number): void }
  }
}

/** Polls until the text of `selector` on `page` matches `re`; returns it. */
export function untilText(page: Page, selector: string, re: RegExp, timeoutMs?: number): Promise<string> {
  return until(async () => {
    const t = (await page.locator(selector).textContent()) ?? ''
    return re.test(t) ? t : undefined
  }, `${selector} to read ${re}`, timeoutMs)
}

/**
 * The lifecycle every e2e file shares: one Chromium for the file, and the grid a test
 * starts (`start`) is closed after it — failing that test on any page error.
 */
export function browserSuite(): { start(coordinator?: StartOptions): Promise<BrowserGrid>; browser(): Browser } {
  let browser: Browser | undefined
  let grid: BrowserGrid | undefined
  beforeAll(async () => { browser = await launchBrowser() })
  afterAll(async () => { await browser?.close() })
  afterEach(async () => {
    const errors = grid?.errors() ?? []
    await grid?.close()
    grid = undefined
    expect(errors, 'page errors').toEqual([])
  })
  return {
    start: async (coordinator = {}) => (grid = await startBrowserGrid(browser!, coordinator)),
    browser: () => browser!,
  }
}
