/**
 * Builds the browser library: web/lib.ts → dist/lib/tabgrid-client.js, one self-contained
 * ES module (the Web Worker inlined) that the coordinator serves at /tabgrid-client.js
 * and that package.json points bundlers at (`exports["."].browser`). Its typings are one
 * self-contained file, tabgrid-client.d.ts (the coordinator serves it beside the module,
 * where nothing else can be fetched): the declarations tsc emitted for web/lib.ts with
 * everything they import from shared/ inlined, by dts-bundle-generator.
 */
import { copyFileSync, existsSync, rmSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { generateDtsBundle } from 'dts-bundle-generator'
import { defineConfig, type Plugin } from 'vite'

const at = (p: string): string => fileURLToPath(new URL(p, import.meta.url))

const typings: Plugin = {
  name: 'tabgrid:typings',
  apply: 'build',
  closeBundle() {
    const emitted = at('./dist/.tsbuild/web/web/lib.d.ts')
    if (!existsSync(emitted)) throw new Error(`${emitted} is missing: run tsc -b before building the library`)
    // beside the module, its imports (../shared/*.js) resolve to dist/shared/*.d.ts, as they do from web/
    const out = at('./dist/lib/tabgrid-client.d.ts')
    copyFileSync(emitted, out)
    const [bundled] = generateDtsBundle([{ filePath: out, output: { exportReferencedTypes: false, noBanner: true } }], { preferredConfigPath: at('./tsconfig.typings.json') })
    if (!bundled || /^import /m.test(bundled)) throw new Error('tabgrid-client.d.ts must be self-contained: it imports something')
    writeFileSync(out, bundled)
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
    // no maps: the package ships no TypeScript sources for them to point at, and the output is readable
    sourcemap: false,
    lib: {
      entry: at('./web/lib.ts'),
      formats: ['es'],
      fileName: () => 'tabgrid-client.js',
    },
  },
  worker: { format: 'es' },
  plugins: [typings],
})
