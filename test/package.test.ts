/**
 * The package as npm ships it: `npm pack`, linted by publint and @arethetypeswrong/cli,
 * then installed in an empty project outside the repository and used as a user would
 * (Node ESM and require, the CLI, TypeScript in a Node and in a browser app, a Vite build).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFile } from 'node:child_process'
import { cp, mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { publint } from 'publint'
import { startCoordinator } from 'tabgrid'

const exec = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))
const bin = (name: string): string => join(root, 'node_modules', '.bin', name)
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')

let dir: string
let tarball: string
let files: string[]
let app: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tabgrid-pack-'))
  const { stdout } = await exec('npm', ['pack', '--json', '--pack-destination', dir], { cwd: root })
  const info = (JSON.parse(stdout) as { filename: string; files: { path: string }[] }[])[0]!
  tarball = join(dir, info.filename)
  files = info.files.map(f => f.path)
  // an empty project far from the repository, installing only the tarball (dependencies come from npm's cache when it has them)
  app = join(dir, 'app')
  await mkdir(app)
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }))
  // better-sqlite3 (the journal's store) compiles its addon from source where no prebuilt
  // binary can be fetched, minutes on a small machine: the install skips install scripts and
  // the addon the repository built (same Node, same machine) is copied in instead
  await exec('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel', 'error', '--ignore-scripts', tarball], { cwd: app, timeout: 120_000 })
  await cp(join(root, 'node_modules', 'better-sqlite3', 'build'), join(app, 'node_modules', 'better-sqlite3', 'build'), { recursive: true })
}, 180_000)

afterAll(async () => { if (dir) await rm(dir, { recursive: true, force: true }) })

describe('the tarball', () => {
  it('has the license, the builds and self-contained typings, and no source maps or build caches', () => {
    expect(files).toContain('LICENSE')
    expect(files).toContain('README.md')
    expect(files).toContain('dist/lib/tabgrid-client.d.ts')
    expect(files).toContain('dist/server/index.d.ts')
    expect(files.filter(f => f.endsWith('.map'))).toEqual([])
    expect(files.filter(f => f.includes('.tsbuild'))).toEqual([])
    expect(files.filter(f => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([])
  })

  it('passes publint with no message at all', async () => {
    const { messages } = await publint({ pack: { tarball: new Uint8Array(await readFile(tarball)).buffer }, strict: true, level: 'suggestion' })
    expect(messages).toEqual([])
  })

  it('passes @arethetypeswrong/cli as an ESM-only package', { timeout: 90_000 }, async () => {
    // exits non-zero on any problem; the esm-only profile accepts that require() needs Node's require(esm)
    const { stdout } = await exec(bin('attw'), [tarball, '--profile', 'esm-only', '--format', 'ascii', '--no-color'], { timeout: 60_000 })
    expect(stdout).toMatch(/node16 \(from ESM\): 🟢 \(ESM\)/)
    expect(stdout).toMatch(/bundler: 🟢/)
  })

  it('states its Node floor as where require(esm) works, and says it is ESM-only', async () => {
    const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as Record<string, any>
    expect(pkg.engines.node).toBe('^20.19.0 || >=22.12.0')
    expect(pkg.type).toBe('module')
    expect(await readFile(join(root, 'README.md'), 'utf8')).toMatch(/ESM-only[^\n]*Node 20\.19/)
  })

  it('declares what a registry page needs, and its dependencies where they belong', async () => {
    const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as Record<string, any>
    expect(pkg.license).toBe('MIT')
    expect(pkg.repository.url).toMatch(/^git\+https:/)
    expect(pkg.homepage).toMatch(/^https:/)
    expect(pkg.bugs.url).toMatch(/^https:/)
    // the entries that register Client.local (and the scripts) have side effects, nothing else
    expect(pkg.sideEffects).toEqual(expect.arrayContaining(['./dist/server/index.js', './dist/lib/tabgrid-client.js']))
    expect(pkg.optionalDependencies).toHaveProperty('bufferutil')
    expect(pkg.dependencies).not.toHaveProperty('bufferutil')
    // bundled into the browser builds, never imported at run time
    expect(pkg.dependencies).not.toHaveProperty('idb-keyval')
    expect(pkg.devDependencies).toHaveProperty('idb-keyval')
  })
})

describe('installed in an empty project', () => {
  const node = (code: string, ...flags: string[]): Promise<{ stdout: string }> =>
    exec(process.execPath, [...flags, '-e', code], { cwd: app, timeout: 60_000 })

  it('imports in Node ESM and computes with Client.local from node_modules', async () => {
    const { stdout } = await node(`
      import { Client } from 'tabgrid'
      const client = await Client.local({ workers: 1 })
      console.log(await client.submit(n => n * n, 12).result())
      await client.close()`, '--input-type=module')
    expect(stdout.trim()).toBe('144')
  })

  it('loads with require() (Node 20.19+)', async () => {
    const { stdout } = await node(`const t = require('tabgrid'); console.log(typeof t.Client.connect, typeof t.startCoordinator)`, '--input-type=commonjs')
    expect(stdout.trim()).toBe('function function')
  })

  it('runs the command', async () => {
    const { stdout } = await exec(join(app, 'node_modules', '.bin', 'tabgrid'), ['--version'], { cwd: app })
    expect(stdout).toMatch(/0\.\d+\.\d+/)
  })

  it('journals with the installed better-sqlite3: a coordinator started on a journal writes it', { timeout: 60_000 }, async () => {
    const code = `import { startCoordinator } from 'tabgrid'
const c = await startCoordinator({ port: 0, journal: 'journal.db', clientToken: '' })
console.log(c.url)
await c.close()`
    const { stdout } = await exec(process.execPath, ['--input-type=module', '-e', code], { cwd: app, timeout: 30_000 })
    expect(stdout).toMatch(/^http:\/\/127\.0\.0\.1:\d+/)
    const { stdout: check } = await exec(process.execPath, ['-e', `const D = require('better-sqlite3'); const db = new D('journal.db'); console.log(db.pragma('journal_mode', { simple: true }), db.pragma('user_version', { simple: true }))`], { cwd: app })
    expect(check.trim()).toBe('wal 3')
  })

  it('type-checks a Node program against the Node typings and a browser app against the browser ones', { timeout: 120_000 }, async () => {
    await writeFile(join(app, 'node.ts'), `import { Client, startCoordinator } from 'tabgrid'\nexport const f = async (): Promise<number> => (await Client.connect('http://127.0.0.1:8786')).submit((n: number) => n + 1, 1).result()\nexport { startCoordinator }\n`)
    await writeFile(join(app, 'tsconfig.node.json'), JSON.stringify({ compilerOptions: { target: 'es2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, noEmit: true, types: [] }, files: ['node.ts'] }))
    await exec(process.execPath, [tsc, '-p', 'tsconfig.node.json'], { cwd: app })

    const browserConfig = { compilerOptions: { target: 'es2022', module: 'esnext', moduleResolution: 'bundler', lib: ['es2022', 'dom'], strict: true, noEmit: true, types: [] } }
    await writeFile(join(app, 'web.ts'), `import { Client, partitionAll } from 'tabgrid'\nexport const c: Promise<Client> = Client.local({ workers: 2 })\nexport const p = [...partitionAll(2, [1, 2, 3])]\n`)
    await writeFile(join(app, 'tsconfig.web.json'), JSON.stringify({ ...browserConfig, files: ['web.ts'] }))
    await exec(process.execPath, [tsc, '-p', 'tsconfig.web.json'], { cwd: app })

    // the coordinator is not in the browser build: TypeScript says so before a bundler would
    await writeFile(join(app, 'web-bad.ts'), `import { startCoordinator } from 'tabgrid'\nexport { startCoordinator }\n`)
    await writeFile(join(app, 'tsconfig.web-bad.json'), JSON.stringify({ ...browserConfig, files: ['web-bad.ts'] }))
    const bad = await exec(process.execPath, [tsc, '-p', 'tsconfig.web-bad.json'], { cwd: app }).then(() => '', (err: { stdout: string }) => err.stdout)
    expect(bad).toMatch(/has no exported member 'startCoordinator'/)
  })

  it('bundles for the browser with Vite', async () => {
    await writeFile(join(app, 'index.html'), '<script type="module" src="./main.js"></script>')
    await writeFile(join(app, 'main.js'), `import { Client } from 'tabgrid'\nwindow.go = () => Client.local({ workers: 1 })\n`)
    const { build } = await import('vite')
    const out = await build({ root: app, logLevel: 'silent', configFile: false, build: { outDir: join(app, 'dist'), write: false } })
    const chunks = (Array.isArray(out) ? out : [out]).flatMap(o => ('output' in o ? o.output : []))
    const js = chunks.filter(c => c.type === 'chunk').map(c => (c as { code: string }).code).join('\n')
    expect(js).toContain('Client.local() has no local cluster')   // the browser build, not the Node one
    expect(js).not.toContain('node:worker_threads')
  })
})

describe('served typings', () => {
  it('/tabgrid-client.d.ts is one file a browser app can use with nothing else', { timeout: 90_000 }, async () => {
    const coord = await startCoordinator({ port: 0 })
    try {
      const res = await fetch(`${coord.url}/tabgrid-client.d.ts`)
      expect(res.status).toBe(200)
      const dts = await res.text()
      expect(dts).not.toMatch(/^\s*import\b/m)
      const alone = await mkdtemp(join(tmpdir(), 'tabgrid-dts-'))
      try {
        await writeFile(join(alone, 'tabgrid-client.d.ts'), dts)
        await writeFile(join(alone, 'app.ts'), `import { Client, TaskError } from './tabgrid-client.js'\nconst c = await Client.connect('http://127.0.0.1:8786')\nconst n: number = await c.submit((x: number) => x * 2, 21).result()\nexport { n, TaskError }\n`)
        await writeFile(join(alone, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'esnext', moduleResolution: 'bundler', target: 'es2022', lib: ['es2022', 'dom'], strict: true, noEmit: true, types: [] }, files: ['app.ts'] }))
        await exec(process.execPath, [tsc, '-p', alone], { cwd: alone })
      } finally {
        await rm(alone, { recursive: true, force: true })
      }
    } finally {
      await coord.close()
    }
  })
})
