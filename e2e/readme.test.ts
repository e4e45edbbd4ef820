/**
 * The README's `html` blocks, run in real Chromium: each is served as a page from another
 * origin than the coordinator (a web app embedding the client), with the README's address
 * replaced by the test coordinator's, and what it logs must match its `// N` comments.
 */
import { describe, it, expect } from 'vitest'
import { createServer } from 'node:http'
import { readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { browserSuite, until } from './harness.js'

const suite = browserSuite()
const README = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8')
const blocks = [...README.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].map(m => ({ lang: m[1]!, code: m[2]! }))

describe('README html blocks', () => {
  const html = blocks.filter(b => b.lang === 'html')
  it('has some', () => { expect(html.length).toBeGreaterThan(0) })

  html.forEach((block, i) => {
    it(`block ${i + 1} runs in a page of another origin and logs what its comments say`, async () => {
      let page = ''
      const app = createServer((_, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end(`<!doctype html><title>app</title>${page}`) })
      await new Promise<void>(r => app.listen(0, '127.0.0.1', r))
      // the app's origin is allowed to connect, as the README says to start the coordinator for it
      const grid = await suite.start({ allowOrigin: [`http://127.0.0.1:${(app.address() as AddressInfo).port}`] })
      await grid.openTab({ workers: 1 })
      page = block.code.replaceAll('127.0.0.1:8786', grid.url.replace('http://', '')).replaceAll('THE-CLIENT-TOKEN', grid.coord.clientToken ?? '')
      try {
        const context = await grid.newContext()
        const tab = await context.newPage()
        grid.watch(tab)
        const logs: string[] = []
        tab.on('console', m => { if (m.type() === 'log') logs.push(m.text()) })
        await tab.goto(`http://127.0.0.1:${(app.address() as AddressInfo).port}/`)
        const want = [...block.code.matchAll(/console\.log\(.*\)\s*\/\/ ([^,\s]+)/g)].map(m => m[1]!)
        expect(want.length).toBeGreaterThan(0)
        await until(() => logs.length >= want.length, `the page to log ${want.join(', ')}`, 30_000)
        expect(logs).toEqual(want)
        expect(grid.errors()).toEqual([])
      } finally {
        await new Promise(r => app.close(r))
      }
    })
  })
})
