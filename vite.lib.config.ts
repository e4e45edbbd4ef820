/**
 * Builds the browser library: web/lib.ts → dist/lib/tabgrid-client.js, one self-contained
 * ES module (the Web Worker inlined) that the coordinator serves at /tabgrid-client.js
 * and that package.json points bundlers at (`exports["."].browser`). Its typings are one
 * self-contained file, tabgrid-client.d.ts (the coordinator serves it beside the module,
 * where nothing else can be fetched): the declarations tsc emitted for web/lib.ts with
 * everything they import from shared/ inlined, by dts-bundle-generator, then without what
 * is marked `@internal` (Client.fromLink, whose link types would need zod's), then bundled
 * once more so that only what the exports reach is left.
 */
import { copyFileSync, existsSync, rmSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { generateDtsBundle } from 'dts-bundle-generator'
import ts from 'typescript'
import { defineConfig, type Plugin } from 'vite'

const at = (p: string): string => fileURLToPath(new URL(p, import.meta.url))

/** `dts` (one declaration file) without its `@internal` declarations, as tsc's stripInternal emits it. */
function stripInternal(dts: string): string {
  const file = '/typings.ts'
  const options: ts.CompilerOptions = {
    // the standard library, so that `[Symbol.asyncIterator]()` members are known and kept
    declaration: true, emitDeclarationOnly: true, stripInternal: true, noCheck: true, noResolve: true,
    skipLibCheck: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, lib: ['lib.es2023.d.ts', 'lib.dom.d.ts'],
  }
  const host = ts.createCompilerHost(options)
  const { getSourceFile, fileExists } = host
  host.getSourceFile = (name, ...rest) => (name === file ? ts.createSourceFile(file, dts, ts.ScriptTarget.ES2022, true) : getSourceFile.call(host, name, ...rest))
  host.fileExists = name => name === file || fileExists.call(host, name)
  let out: string | undefined
  host.writeFile = (_name, text) => { out = text }
  ts.createProgram([file], options, host).emit()
  if (out === undefined) throw new Error('stripping @internal from the typings emitted nothing')
  return out
}

const bundle = (path: string): string => {
  const [text] = generateDtsBundle([{ filePath: path, output: { exportReferencedTypes: false, noBanner: true } }], { preferredConfigPath: at('./tsconfig.typings.json') })
  if (text === undefined) throw new Error(`bundling ${path} gave nothing`)
  return text
}

const typings: Plugin = {
  name: 'tabgrid:typings',
  apply: 'build',
  closeBundle() {
    const emitted = at('./dist/.tsbuild/web/web/lib.d.ts')
    if (!existsSync(emitted)) throw new Error(`${emitted} is missing: run tsc -b before building the library`)
    // beside the module, its imports (../shared/*.js) resolve to dist/shared/*.d.ts, as they do from web/
    const out = at('./dist/lib/tabgrid-client.d.ts')
    copyFileSync(emitted, out)
    writeFileSync(out, stripInternal(bundle(out)))
    const bundled = bundle(out)
    if (/^import /m.test(bundled)) throw new Error('tabgrid-client.d.ts must be self-contained: it imports something')
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
