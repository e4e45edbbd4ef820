/**
 * `Client.local()` in a browser page: the same API with no coordinator process and no
 * sockets. The coordinator core and a worker runtime run in the page, joined by memory
 * links, and tasks run in a pool of Web Workers ("don't go distributed").
 */
import { startMemoryCluster, type MemoryCluster } from '../core/memory-cluster.js'
import type { ThreadHandle } from '../core/runtime.js'

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
): Promise<MemoryCluster> {
  // cancelling a running task stops its Web Worker: a browser can, so it does
  return startMemoryCluster({
    workers: opts.workers ?? Math.max(1, navigator.hardwareConcurrency || 1), threads: opts.threads ?? 1,
    kind: 'browser', spawn, hardCancel: true,
  })
}
