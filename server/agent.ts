/**
 * The Node worker agent (`tabgrid worker URL`): a pool of worker_threads driven by the
 * shared worker runtime. `--nworkers` threads, each running up to `--nthreads` tasks at once.
 */
import { Worker } from 'node:worker_threads'
import { availableParallelism, hostname, tmpdir, totalmem } from 'node:os'
import { mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs'
import type * as Comlink from 'comlink'
import { connectLink, type Link } from '../shared/link.js'
import { WorkerRuntime, type ThreadHandle } from '../core/runtime.js'
import { coordinatorUrl } from '../shared/address.js'
import { formatBytes } from '../shared/size.js'
import type { ToWorkerMessage, WorkerMessage, Hello } from '../shared/protocol.js'

export interface WorkerOptions {
  /** threads (processes in Dask's words). Default: the machine's cores. */
  nprocs?: number
  /** tasks each thread runs at once. Default 1. */
  nthreads?: number
  token?: string
  name?: string
  /**
   * Bytes of results the agent keeps in memory (split between its threads); past 60% of
   * it values spill to disk, past 85% the agent takes no new tasks. Default: half the
   * machine's memory.
   */
  memoryLimit?: number
  /** ms to wait for the coordinator at first. Default 10 s, or `deathTimeout` when set. */
  timeout?: number
  /**
   * ms the coordinator may be gone (unreachable, after a lost connection) before the
   * agent gives up and closes, as Dask's `--death-timeout`. Default: keep trying.
   */
  deathTimeout?: number
  /** ms after joining when the agent retires gracefully (hands its data off, then leaves), as Dask's `--lifetime`. */
  lifetime?: number
  /** folder to spill to (kept: its owner removes it). Default: a new temporary folder, removed when the agent closes */
  spillDir?: string
  /** the local address to connect from, on a machine with several (each address is a volunteer of its own) */
  localAddress?: string
  log?: (line: string, level?: 'info' | 'warn' | 'error') => void
}

/**
 * A worker_thread on `url` with the process's flags. Left to itself a thread inherits them,
 * and Node drops those a thread cannot take; given explicitly (to add tsx, or to leave out
 * `--input-type`, which makes a thread of `node -e` refuse its own entry file), V8 and
 * per-process flags such as `--max-old-space-size` make the constructor throw
 * ERR_WORKER_INVALID_EXEC_ARGV: those it names are left out and the thread made again.
 */
function newThread(url: URL, fromSource: boolean): Worker {
  const inherited = process.execArgv.filter(a => !a.startsWith('--input-type'))
  if (!fromSource && inherited.length === process.execArgv.length) return new Worker(url)
  const execArgv = fromSource ? [...inherited, '--import', 'tsx'] : inherited
  try {
    return new Worker(url, { execArgv })
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw err
    // "Initiated Worker with invalid execArgv flags: --max-old-space-size=6144, --expose-gc"
    const message = (err as Error).message
    const named = new Set(message.slice(message.indexOf(': ') + 2).split(', '))
    const kept = execArgv.filter(a => !named.has(a))
    if (kept.length === execArgv.length) throw err
    return new Worker(url, { execArgv: kept })
  }
}

/** Makes one worker_thread running an Executor. Works from the build and from sources (via tsx). */
export function spawnThread(): ThreadHandle {
  const fromSource = import.meta.url.endsWith('.ts')
  const url = new URL(fromSource ? './thread.ts' : './thread.js', import.meta.url)
  const worker = newThread(url, fromSource)
  let exited = false
  const exitCbs: ((reason: string) => void)[] = []
  const fire = (reason: string): void => {
    if (exited) return
    exited = true
    for (const cb of exitCbs) cb(reason)
  }
  worker.on('error', (err: Error) => fire(`error: ${err.message}`))
  worker.on('exit', code => fire(`exited with code ${code}`))
  return {
    endpoint: nodeEndpoint(worker) as Comlink.Endpoint,
    onExit: cb => { exitCbs.push(cb) },
    terminate: () => worker.terminate(),
    unref: () => worker.unref(),
  }
}

export interface RunningWorker {
  runtime: WorkerRuntime
  /** resolves when the coordinator says goodbye or the agent is closed */
  closed: Promise<string>
  /** graceful: hand data off, then leave (resolves when done or after `timeoutMs`) */
  retire(timeoutMs?: number): Promise<void>
  close(): Promise<void>
}

/** Joins a coordinator as a Node worker. */
export async function startWorker(address: string, options: WorkerOptions = {}): Promise<RunningWorker> {
  const url = coordinatorUrl(address)
  const nprocs = positive(options.nprocs ?? availableParallelism(), '--nworkers')
  const nthreads = positive(options.nthreads ?? 1, '--nthreads')
  const hello: Hello = { role: 'worker', kind: 'node', slots: nprocs * nthreads, name: options.name ?? `${hostname()}-${process.pid}` }
  if (options.token) hello.token = options.token
  const memoryLimit = options.memoryLimit ?? Math.floor(totalmem() / 2)
  if (!(memoryLimit > 0)) throw new RangeError(`memoryLimit must be a positive number of bytes (got ${memoryLimit})`)
  for (const [k, v] of [['deathTimeout', options.deathTimeout], ['lifetime', options.lifetime]] as const) {
    if (v !== undefined && !(Number.isFinite(v) && v > 0 && v <= 2 ** 31 - 1)) throw new RangeError(`${k} must be a positive number of ms (got ${v})`)
  }
  const log = options.log ?? (() => {})
  const spillDir = options.spillDir ?? await mkdtemp(join(tmpdir(), 'tabgrid-spill-'))
  const runtime = new WorkerRuntime({
    nprocs, nthreads, spawn: spawnThread, log: line => log(line),
    threadInit: i => ({ memoryLimit: Math.floor(memoryLimit / nprocs), spill: join(spillDir, `thread-${i}`) }),
  })
  const cleanup = (): Promise<void> => options.spillDir !== undefined ? Promise.resolve() : rm(spillDir, { recursive: true, force: true })
  let link: Link<WorkerMessage, ToWorkerMessage>
  try {
    link = await connectLink(url, hello, { timeout: options.timeout ?? options.deathTimeout ?? 10_000, ...(options.localAddress ? { localAddress: options.localAddress } : {}) })
  } catch (err) {
    await runtime.close()
    await cleanup()
    throw err
  }
  let resolveClosed!: (why: string) => void
  let ending: string | undefined
  const closed = new Promise<string>(r => { resolveClosed = why => r(ending ?? why) })
  let deathTimer: ReturnType<typeof setTimeout> | undefined
  let lifetimeTimer: ReturnType<typeof setTimeout> | undefined
  const timers = (): void => { clearTimeout(deathTimer); clearTimeout(lifetimeTimer) }
  // set before attach: the welcome can come with the connect, in the same turn
  runtime.onStatusChange = s => {
    if (s.state === 'goodbye' || s.state === 'closed') { timers(); resolveClosed(s.reason) }
    if (s.state === 'disconnected') {
      log(`lost the coordinator (${s.reason}); reconnecting${options.deathTimeout ? ` for up to ${seconds(options.deathTimeout)} (--death-timeout)` : ''}`, 'warn')
      if (options.deathTimeout && deathTimer === undefined) {
        deathTimer = setTimeout(() => {
          ending = `the coordinator was gone for ${seconds(options.deathTimeout!)} (--death-timeout)`
          log(`${ending}: giving up`, 'error')
          void running.close()
        }, options.deathTimeout)
      }
    }
    if (s.state === 'welcome') {
      clearTimeout(deathTimer)
      deathTimer = undefined
      log(`${s.resumed ? 'rejoined' : 'joined'} ${url} as ${hello.name} (${s.id}): ${nprocs} thread${nprocs === 1 ? '' : 's'} × ${nthreads} task${nthreads === 1 ? '' : 's'}, ${formatBytes(memoryLimit)} memory limit`)
      if (options.lifetime && lifetimeTimer === undefined) {
        lifetimeTimer = setTimeout(() => {
          ending = `its lifetime of ${seconds(options.lifetime!)} ran out (--lifetime)`
          log(`${ending}: handing data off and leaving`)
          void running.retire()
        }, options.lifetime)
      }
    }
  }
  runtime.attach(link)
  // the runtime renews this worker's leases itself (heartbeats on its own timer)
  let closing: Promise<void> | undefined
  const running: RunningWorker = {
    runtime,
    closed,
    retire: async (timeoutMs = 30_000) => {
      runtime.retire()
      await Promise.race([closed, new Promise(r => setTimeout(r, timeoutMs))])
      await running.close()
    },
    close: () => closing ??= (async () => { timers(); await runtime.close(); await cleanup(); resolveClosed('closed') })(),
  }
  return running
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`
}

function positive(n: number, name: string): number {
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new RangeError(`${name} must be a whole number from 1 to 1024 (got ${n})`)
  return n
}
