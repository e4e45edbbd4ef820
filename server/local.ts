/**
 * `Client.local()` in Node: the same API with no coordinator process and no sockets.
 * The coordinator core and a worker runtime run in this process, joined by memory
 * links, and tasks run in a worker_threads pool ("don't go distributed").
 */
import { availableParallelism } from 'node:os'
import { spawnThread } from './agent.js'
import { startMemoryCluster, type MemoryCluster } from '../core/memory-cluster.js'

export interface LocalClusterOptions {
  /** threads in the pool. Default: the machine's cores. */
  workers?: number
  /** tasks each thread runs at once. Default 1. */
  threads?: number
}

export async function startLocalCluster(opts: LocalClusterOptions = {}): Promise<MemoryCluster> {
  return startMemoryCluster({ workers: opts.workers ?? availableParallelism(), threads: opts.threads ?? 1, kind: 'node', spawn: spawnThread })
}
