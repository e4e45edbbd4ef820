/**
 * Node agents run tasks under Node's permission model: `tabgrid worker` starts itself
 * again as a child process with `--permission` (`--experimental-permission` on Node 20),
 * which may read only the code it runs, read and write only its spill folder, start
 * worker_threads but no child processes, and load no native addons. Tasks are anyone's
 * code (whoever holds the client token); `--trust-tasks` runs them without the sandbox.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { packageRoot } from './http.js'

/** Set in the child's environment: it is the sandboxed agent. */
const CHILD = 'TABGRID_SANDBOXED_AGENT'
/** Set for a worker a coordinator started (--local-workers): it quits when the coordinator's end of its stdin closes. */
export const EXIT_WITH_PARENT = 'TABGRID_EXIT_WITH_PARENT'

/** The spill folder the parent made for the sandboxed agent (the only one it may write). */
const SPILL = 'TABGRID_SANDBOX_SPILL_DIR'
export function sandboxSpillDir(): string | undefined {
  return inSandbox() ? process.env[SPILL] : undefined
}

/** Whether this process is the sandboxed agent a parent started. */
export function inSandbox(): boolean {
  return process.env[CHILD] === '1'
}

/** The node_modules folders this package's dependencies load from (its own, or the one it is installed in). */
function moduleRoots(): string[] {
  const roots = new Set<string>()
  for (const dep of ['socket.io-client', 'comlink', 'msgpackr', '@noble/hashes', 'cac']) {
    try {
      const file = fileURLToPath(import.meta.resolve(dep))
      const i = file.lastIndexOf(`${sep}node_modules${sep}`)
      if (i >= 0) roots.add(file.slice(0, i + `${sep}node_modules${sep}`.length))
    } catch { /* not resolvable from here: its folder is inside the package */ }
  }
  return [...roots]
}

/** The flags that confine the agent: read its code, read and write `spill`, threads yes, processes and addons no. */
export function permissionFlags(spill: string): string[] {
  const flag = process.allowedNodeEnvironmentFlags.has('--permission') ? '--permission' : '--experimental-permission'
  const read = [join(packageRoot, 'dist') + sep, join(packageRoot, 'bin') + sep, join(packageRoot, 'package.json'), ...moduleRoots(), spill + sep]
  return [flag, ...read.map(p => `--allow-fs-read=${p}`), `--allow-fs-write=${spill}${sep}`, '--allow-worker', '--disable-warning=ExperimentalWarning', '--disable-warning=SecurityWarning']
}

/**
 * Runs this command again, confined, and waits for it: signals are passed on (the child
 * has a process group of its own, so a terminal's Ctrl-C reaches it once), and the child
 * exits when this process dies (its stdin closes). Resolves with the child's exit code.
 */
export async function runSandboxed(args: string[]): Promise<number> {
  const spill = await mkdtemp(join(tmpdir(), 'tabgrid-spill-'))
  const bin = join(packageRoot, 'bin', 'tabgrid.js')
  const flags = permissionFlags(spill).filter(f => !f.startsWith('--disable-warning') || process.allowedNodeEnvironmentFlags.has('--disable-warning'))
  const child = spawn(process.execPath, [...flags, bin, ...args], {
    stdio: ['pipe', 'inherit', 'inherit'],
    env: { ...process.env, [CHILD]: '1', [SPILL]: spill },
    detached: true,
  })
  const forward = (sig: NodeJS.Signals): void => { child.kill(sig) }
  process.on('SIGINT', forward)
  process.on('SIGTERM', forward)
  const code = await new Promise<number>(resolve => {
    child.once('error', err => { console.error(`tabgrid worker: could not start the sandboxed agent: ${err.message}`); resolve(1) })
    child.once('exit', (c, sig) => resolve(c ?? (sig ? 128 + 2 : 1)))
  })
  process.off('SIGINT', forward)
  process.off('SIGTERM', forward)
  await rm(spill, { recursive: true, force: true }).catch(() => {})
  return code
}

/** Quit when the parent goes (its end of our stdin closes). */
let watching = false
export function exitWithParent(): void {
  if (watching) return
  watching = true
  process.stdin.on('end', () => process.exit(1))
  process.stdin.on('error', () => process.exit(1))
  process.stdin.resume()
}

