/**
 * Builds the pages in web/ (the volunteer page, and the dashboard once web/index.html
 * exists) to dist/web, which the coordinator serves. Asset URLs are relative, so the
 * pages work wherever the coordinator mounts them. The library bundle has its own
 * config (vite.lib.config.ts).
 */
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'

const web = fileURLToPath(new URL('./web/', import.meta.url))
const pages = ['worker', 'index'].filter(name => existsSync(`${web}${name}.html`))

export default defineConfig({
  root: web,
  base: './',
  publicDir: false,
  logLevel: 'warn',
  build: {
    outDir: fileURLToPath(new URL('./dist/web/', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    // no maps: the package ships no TypeScript sources for them to point at, and the output is readable
    sourcemap: false,
    rollupOptions: {
      input: Object.fromEntries(pages.map(name => [name, `${web}${name}.html`])),
    },
  },
  worker: { format: 'es' },
})
