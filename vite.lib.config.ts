/**
 * Builds the browser library: web/lib.ts → dist/lib/tabgrid-client.js, one self-contained
 * ES module (the Web Worker inlined) that the coordinator serves at /tabgrid-client.js
 * and that package.json points bundlers at (`exports["."].browser`). Its typings are the
 * declarations tsc emitted for web/lib.ts, copied beside it: they import ../shared/*.js,
 * which resolves to dist/shared/*.d.ts from dist/lib just as it does from web/.
 */
import { copyFileSync, existsSync, rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { defineConfig, type Plugin } from 'vite'

const at = (p: string): string => fileURLToPath(new URL(p, import.meta.url))

const typings: Plugin = {
  name: 'tabgrid:typings',
  apply: 'build',
  closeBundle() {
    const emitted = at('./dist/.tsbuild/web/web/lib.d.ts')
    if (!existsSync(emitted)) throw new Error(`${emitted} is missing: run tsc -b before building the library`)
    copyFileSync(emitted, at('./dist/lib/tabgrid-client.d.ts'))
    // the Web Worker is inlined; the separate copy vite also writes is never loaded
    rmSync(at('./dist/lib/assets/'), { recursive: true, force: true })
  },
}

export default defineConfig({
  publicDir: false,
  logLevel: 'warn',
  build: {
    outDir: at('./dist/lib/'),
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    lib: {
      entry: at('./web/lib.ts'),
      formats: ['es'],
      fileName: () => 'tabgrid-client.js',
    },
  },
  worker: { format: 'es' },
  plugins: [typings],
})
