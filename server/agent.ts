/**
 * The Node worker agent (`tabgrid worker URL`): a pool of worker_threads driven by the
 * shared worker runtime. `--nprocs` threads, each running up to `--nthreads` tasks at once.
 */
import { Worker } from 'node:worker_threads'
import { availableParallelism, hostname, tmpdir, totalmem } from 'node:os'
import { mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs'
import type * as Comlink from 'comlink'
import { connectLink, type Link } from '../shared/link.js'
import { WorkerRuntime, type ThreadHandle } from '../core/runtime.js'
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
  /** ms to wait for the coordinator. Default 10 s. */
  timeout?: number
  log?: (line: string) => void
}

/** Makes one worker_thread running an Executor. Works from the build and from sources (via tsx). */
export function spawnThread(): ThreadHandle {
  const fromSource = import.meta.url.endsWith('.ts')
  const url = new URL(fromSource ? './thread.ts' : './thread.js', import.meta.url)
  // a thread inherits the process's flags, and `--input-type` (of `node -e`) makes it refuse its own entry file
  const inherited = process.execArgv.filter(a => !a.startsWith('--input-type'))
  const worker = new Worker(url, { execArgv: fromSource ? [...inherited, '--import', 'tsx'] : inherited })
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
export async function startWorker(url: string, options: WorkerOptions = {}): Promise<RunningWorker> {
  const nprocs = positive(options.nprocs ?? availableParallelism(), '--nprocs')
  const nthreads = positive(options.nthreads ?? 1, '--nthreads')
  const hello: Hello = { role: 'worker', kind: 'node', slots: nprocs * nthreads, name: options.name ?? `${hostname()}-${process.pid}` }
  if (options.token) hello.token = options.token
  const memoryLimit = options.memoryLimit ?? Math.floor(totalmem() / 2)
  if (!(memoryLimit > 0)) throw new RangeError(`memoryLimit must be a positive number of bytes (got ${memoryLimit})`)
  const spillDir = await mkdtemp(join(tmpdir(), 'tabgrid-spill-'))
  const runtime = new WorkerRuntime({
    nprocs, nthreads, spawn: spawnThread, log: options.log ?? (() => {}),
    threadInit: i => ({ memoryLimit: Math.floor(memoryLimit / nprocs), spill: join(spillDir, `thread-${i}`) }),
  })
  const cleanup = (): Promise<void> => rm(spillDir, { recursive: true, force: true })
  let link: Link<WorkerMessage, ToWorkerMessage>
  try {
    link = await connectLink(url, hello, { timeout: options.timeout ?? 10_000 })
  } catch (err) {
    await runtime.close()
    await cleanup()
    throw err
  }
  // the runtime renews this worker's leases itself (heartbeats on its own timer)
  runtime.attach(link)
  let resolveClosed!: (why: string) => void
  const closed = new Promise<string>(r => { resolveClosed = r })
  runtime.onStatusChange = s => {
    if (s.state === 'goodbye' || s.state === 'closed') resolveClosed(s.reason)
    if (s.state === 'disconnected') options.log?.(`lost the coordinator (${s.reason}); reconnecting`)
    if (s.state === 'welcome') options.log?.(`${s.resumed ? 'rejoined' : 'joined'} ${url} as ${s.id} (${nprocs} threads × ${nthreads} tasks)`)
  }
  return {
    runtime,
    closed,
    retire: async (timeoutMs = 30_000) => {
      runtime.retire()
      await Promise.race([closed, new Promise(r => setTimeout(r, timeoutMs))])
      await runtime.close()
      await cleanup()
    },
    close: async () => { await runtime.close(); await cleanup(); resolveClosed('closed') },
  }
}

function positive(n: number, name: string): number {
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new RangeError(`${name} must be a whole number from 1 to 1024 (got ${n})`)
  return n
}
