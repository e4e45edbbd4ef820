/**
 * The README's code blocks, executed, so the README cannot rot. Every fenced block is
 * handled, in order, or the test fails naming it:
 *
 * - `sh`: each command runs as written (`npx tabgrid X` as `node bin/tabgrid.js X`, from
 *   this checkout; a coordinator gets `--port 0` when it names no port, and the address it
 *   prints replaces 127.0.0.1:8786 in everything after it), except the few this suite
 *   cannot run inside itself, each checked to be run elsewhere (see COVERED);
 * - `js`: an ES module run with Node against that coordinator (with TABGRID_URL and the
 *   TABGRID_TOKEN it printed in the environment, as the README says to set them);
 * - `ts`: type-checked with strict tsc against the package's typings (an expected error is
 *   marked `// @ts-expect-error`), then run with tsx;
 * - `text`: the command-line synopsis, compared flag for flag with `tabgrid --help`;
 * - `html`: run in Chromium by e2e/readme.test.ts.
 *
 * In `js` and `ts` blocks, `// prints: X` after a line says its output contains X; each
 * must appear in the program's output, in order.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { BIN, scratchDir, until } from './grid.js'

const exec = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))
const scratch = join(root, 'test', '.readme')
const README = readFileSync(join(root, 'README.md'), 'utf8')

interface Block { lang: string; code: string; line: number }
export function readmeBlocks(text: string): Block[] {
  const out: Block[] = []
  const re = /^```(\w*)\n([\s\S]*?)^```$/gm
  for (let m = re.exec(text); m; m = re.exec(text)) out.push({ lang: m[1]!, code: m[2]!, line: text.slice(0, m.index).split('\n').length })
  return out
}

/** Commands this suite can't run inside itself, and where each is run instead. */
const COVERED: { re: RegExp; by: string; proof: string }[] = [
  { re: /^npm ci$/, by: '.ci/run (the suite runs after it)', proof: '.ci/run' },
  { re: /^npm test$/, by: 'this very suite', proof: 'package.json' },
  { re: /^npm start$/, by: 'e2e/first-run.test.ts', proof: 'e2e/first-run.test.ts' },
]
const proofText: Record<string, RegExp> = {
  '.ci/run': /^npm ci\b/m,
  'package.json': /"test": "npm run build && vitest run"/,
  'e2e/first-run.test.ts': /spawn\('npm', \['start'/,
}

const procs: ChildProcess[] = []
afterAll(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) { p.kill('SIGKILL'); await new Promise(r => p.once('exit', r)) }
})

/** What earlier blocks set up: the address of the coordinator they started, and the client token it printed. */
let address: string | undefined
let token: string | undefined
const env = (): NodeJS.ProcessEnv => ({ ...process.env, TABGRID_URL: `http://${address}`, ...(token ? { TABGRID_TOKEN: token } : {}) })
const substitute = (code: string): string => (address ? code.replaceAll('127.0.0.1:8786', address) : code)

function expectPrints(code: string, output: string, where: string): void {
  let from = 0
  for (const m of code.matchAll(/\/\/ prints: (.+)$/gm)) {
    const want = m[1]!.trim()
    const at = output.indexOf(want, from)
    expect(at, `${where}: "${want}" in the output, after what came before:\n${output}`).toBeGreaterThanOrEqual(0)
    from = at + want.length
  }
}

function shellWords(line: string): string[] {
  return line.split(/\s+/).filter(Boolean)
}

async function runSh(block: Block): Promise<void> {
  for (const raw of block.code.split('\n')) {
    const line = raw.replace(/\s+#.*$/, '').trim()
    if (!line) continue
    const covered = COVERED.find(c => c.re.test(line))
    if (covered) {
      const proof = readFileSync(join(root, covered.proof), 'utf8')
      expect(proof, `README line ${block.line}: \`${line}\` is said to be run by ${covered.by}`).toMatch(proofText[covered.proof]!)
      continue
    }
    const words = shellWords(substitute(line))
    // leading NAME=value words set the command's environment, as a shell does
    const vars: Record<string, string> = {}
    while (words.length > 0 && /^[A-Z_][A-Z0-9_]*=/.test(words[0]!)) {
      const w = words.shift()!
      vars[w.slice(0, w.indexOf('='))] = w.slice(w.indexOf('=') + 1)
    }
    const withVars = { ...process.env, ...vars }
    if (words[0] !== 'npx' || words[1] !== 'tabgrid') throw new Error(`README line ${block.line}: no test runs \`${line}\`: teach test/readme.test.ts to run it`)
    const args = words.slice(2)
    if (args[0] === 'coordinator') {
      if (!args.includes('--port')) args.push('--port', '0')
      const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: scratchDir(), env: withVars })
      procs.push(p)
      let out = ''
      p.stdout!.on('data', d => { out += String(d) })
      p.stderr!.on('data', d => { out += String(d) })
      // the banner's lines arrive in as many writes: the token is on its last (none with --quiet or JSON logs)
      const banner = !args.includes('--quiet') && !args.some(a => a === 'json' || a === '--log-format=json')
      const url = await until(() => (banner && !out.includes('  client: ') ? undefined : /listening on (http:\/\/\S+)/.exec(out)?.[1]) ?? (p.exitCode !== null ? `exited: ${out}` : undefined), `\`${line}\` to listen`)
      expect(url).toMatch(/^http:/)
      address = url.replace('http://', '')
      token = /TABGRID_TOKEN=([0-9a-f]+)/.exec(out)?.[1]
    } else if (args[0] === 'worker') {
      const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: scratchDir(), env: withVars })
      procs.push(p)
      let out = ''
      p.stdout!.on('data', d => { out += String(d) })
      p.stderr!.on('data', d => { out += String(d) })
      const joined = await until(() => /joined (http:\/\/\S+) as .*: (\d+) threads?/.exec(out) ?? (p.exitCode !== null ? undefined : undefined), `\`${line}\` to join`)
      if (args.includes('--nworkers')) expect(joined[2]).toBe(args[args.indexOf('--nworkers') + 1])
    } else {
      const { stdout } = await exec(process.execPath, [BIN, ...args], { env: withVars })
      expect(stdout.length).toBeGreaterThan(0)
    }
  }
}

async function runJs(block: Block, index: number): Promise<void> {
  if (!address) throw new Error(`README line ${block.line}: a js block needs a coordinator started by an sh block before it`)
  mkdirSync(scratch, { recursive: true })
  const code = substitute(block.code)
  const file = join(scratch, `block-${index}.mjs`)
  writeFileSync(file, code)
  const { stdout } = await exec(process.execPath, [file], { cwd: root, timeout: 120_000, env: env() })
  expectPrints(code, stdout, `README line ${block.line}`)
}

async function runTs(block: Block, index: number): Promise<void> {
  if (!address) throw new Error(`README line ${block.line}: a ts block needs a coordinator started by an sh block before it`)
  mkdirSync(scratch, { recursive: true })
  const code = substitute(block.code)
  const file = join(scratch, `block-${index}.ts`)
  writeFileSync(file, code)
  writeFileSync(join(scratch, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'es2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, noEmit: true, skipLibCheck: true, types: ['node'], lib: ['es2023'] },
    files: [`block-${index}.ts`],
  }))
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  const typed = await exec(process.execPath, [tsc, '-p', scratch]).then(() => '', (err: { stdout: string }) => err.stdout)
  expect(typed, `README line ${block.line} type-checks`).toBe('')
  const { stdout } = await exec(process.execPath, ['--import', 'tsx', file], { cwd: root, timeout: 120_000, env: env() })
  expectPrints(code, stdout, `README line ${block.line}`)
}

/** Flags (`--x`) of each command in the synopsis, and in `tabgrid CMD --help`. */
async function checkSynopsis(block: Block): Promise<void> {
  const synopsis = new Map<string, Set<string>>()
  let current = ''
  for (const line of block.code.split('\n')) {
    const cmd = /^tabgrid (\w+)/.exec(line)?.[1]
    if (cmd) current = cmd
    if (!current) continue
    const set = synopsis.get(current) ?? new Set<string>()
    for (const m of line.matchAll(/\[(--[\w-]+)/g)) set.add(m[1]!)
    synopsis.set(current, set)
  }
  expect([...synopsis.keys()]).toEqual(expect.arrayContaining(['coordinator', 'worker']))
  for (const [cmd, flags] of synopsis) {
    if (cmd !== 'coordinator' && cmd !== 'worker') continue
    const { stdout } = await exec(process.execPath, [BIN, cmd, '--help'])
    const help = new Set([...stdout.matchAll(/^\s+(--[\w-]+)/gm)].map(m => m[1]!))
    help.delete('--help')
    expect([...flags].sort(), `README's synopsis of tabgrid ${cmd}`).toEqual([...help].sort())
  }
}

/** A layout block (`folder/  text naming files.ts …`): every file it names is in that folder. */
async function checkTree(block: Block): Promise<void> {
  const { readdirSync, statSync } = await import('node:fs')
  const files = (dir: string): string[] => readdirSync(dir).flatMap(n => {
    const p = join(dir, n)
    return statSync(p).isDirectory() ? (n === 'node_modules' ? [] : files(p)) : [n]
  })
  let folder = ''
  let named = 0
  for (const line of block.code.split('\n')) {
    const f = /^([\w-]+)\/\s/.exec(line)?.[1]
    if (f) { folder = f; expect(existsSync(join(root, folder)), `README line ${block.line}: ${folder}/`).toBe(true) }
    if (!folder) continue
    const here = new Set(files(join(root, folder)))
    for (const m of line.matchAll(/\b([\w-]+\.(?:ts|html|mjs|js))\b/g)) {
      named++
      expect(here.has(m[1]!), `README line ${block.line}: ${folder}/ has ${m[1]}`).toBe(true)
    }
  }
  expect(named).toBeGreaterThan(5)
}

describe('README', () => {
  const blocks = readmeBlocks(README)

  it('has only blocks this suite knows how to run', () => {
    expect(blocks.length).toBeGreaterThan(4)
    for (const b of blocks) expect(['sh', 'js', 'ts', 'text', 'html'], `README line ${b.line}: a block needs a language this test runs`).toContain(b.lang)
  })

  blocks.forEach((block, i) => {
    const title = `line ${block.line}: ${block.lang} block ${block.code.split('\n')[0]!.slice(0, 60)}`
    if (block.lang === 'html') {
      it(`${title} (run in Chromium by e2e/readme.test.ts)`, () => {
        expect(existsSync(join(root, 'e2e', 'readme.test.ts'))).toBe(true)
        expect(readFileSync(join(root, 'e2e', 'readme.test.ts'), 'utf8')).toMatch(/lang === 'html'/)
      })
      return
    }
    it(title, { timeout: 180_000 }, async () => {
      if (block.lang === 'sh') await runSh(block)
      else if (block.lang === 'js') await runJs(block, i)
      else if (block.lang === 'ts') await runTs(block, i)
      else if (block.lang === 'text') await (block.code.startsWith('tabgrid ') ? checkSynopsis(block) : checkTree(block))
    })
  })

  it('shows images that exist, by paths that a registry page resolves against the repository', () => {
    const images = [...README.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)].map(m => m[1]!)
    expect(images.length).toBeGreaterThan(0)
    for (const src of images) {
      expect(src).not.toMatch(/^\//)
      expect(existsSync(join(root, src)), src).toBe(true)
    }
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { repository?: { url?: string } }
    expect(pkg.repository?.url).toBeTruthy()
  })

  it('makes only claims that hold: the README no longer says tsc flags `await future`, or that free variables fail on the worker', () => {
    expect(README).not.toMatch(/`await future` is a mistake TypeScript will flag/)
    expect(README).not.toMatch(/cannot see fails on the worker/)
  })
})
