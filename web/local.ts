/**
 * `Client.local()` in a browser page: the same API with no coordinator process and no
 * sockets. The coordinator core and a worker runtime run in the page, joined by memory
 * links, and tasks run in a pool of Web Workers ("don't go distributed").
 */
import { Coordinator } from '../server/coordinator.js'
import { memoryLinkPair, type Link } from '../shared/link.js'
import { WorkerRuntime, type ThreadHandle } from '../shared/runtime.js'
import type { ClientMessage, ToClientMessage, WorkerMessage, ToWorkerMessage, Hello } from '../shared/protocol.js'

export interface BrowserLocalClusterOptions {
  /** Web Workers in the pool. Default: `navigator.hardwareConcurrency`. */
  workers?: number
  /** tasks each Web Worker runs at once. Default 1. */
  threads?: number
}

/**
 * Starts an in-page cluster over `spawn` (which makes one Web Worker thread) and returns
 * the client's side of it.
 *
 * @example
 * ```ts
 * setLocalClusterFactory(opts => startBrowserLocalCluster(opts, spawnWebWorker))
 * const client = await Client.local({ workers: 2 })
 * ```
 */
export async function startBrowserLocalCluster(
  opts: BrowserLocalClusterOptions,
  spawn: () => ThreadHandle,
): Promise<{ link: Link<ClientMessage, ToClientMessage>; shutdown(): Promise<void> }> {
  const workers = opts.workers ?? Math.max(1, navigator.hardwareConcurrency || 1)
  if (!Number.isInteger(workers) || workers < 1 || workers > 1024) throw new RangeError(`workers must be a whole number from 1 to 1024 (got ${workers})`)
  const threads = opts.threads ?? 1
  const coordinator = new Coordinator({ clientGraceMs: 0, workerGraceMs: 0 })

  const workerHello: Hello = { role: 'worker', kind: 'browser', slots: workers * threads, name: 'local' }
  const [workerSide, coordWorkerSide] = memoryLinkPair<WorkerMessage, ToWorkerMessage>(workerHello, workerHello)
  const workerId = coordinator.accept({ id: 'local-worker', send: m => coordWorkerSide.send(m as ToWorkerMessage), close: () => {} }, workerHello)
  coordWorkerSide.onMessages = msgs => coordinator.receive(workerId, msgs)
  // cancelling a running task stops its Web Worker: a browser can, so it does
  const runtime = new WorkerRuntime({ nprocs: workers, nthreads: threads, spawn, hardCancel: true })
  runtime.attach(workerSide)

  const clientHello: Hello = { role: 'client', name: 'local' }
  const [clientSide, coordClientSide] = memoryLinkPair<ClientMessage, ToClientMessage>(clientHello, clientHello)
  const clientId = coordinator.accept({ id: 'local-client', send: m => coordClientSide.send(m as ToClientMessage), close: () => {} }, clientHello)
  coordClientSide.onMessages = msgs => coordinator.receive(clientId, msgs)

  let down = false
  return {
    link: clientSide,
    shutdown: async () => {
      if (down) return
      down = true
      coordinator.close()
      await runtime.close()
    },
  }
}
