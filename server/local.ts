/**
 * `Client.local()` in Node: the same API with no coordinator process and no sockets.
 * The coordinator core and a worker runtime run in this process, joined by memory
 * links, and tasks run in a worker_threads pool ("don't go distributed").
 */
import { availableParallelism } from 'node:os'
import { spawnThread } from './agent.js'
import { startMemoryCluster, type MemoryCluster, type MemoryClusterOptions } from '../core/memory-cluster.js'

export interface LocalClusterOptions {
  /** threads in the pool. Default: the machine's cores. */
  workers?: number
  /** tasks each thread runs at once. Default 1. */
  threads?: number
  /** ms the worker may stay silent before its leases run out. Default 15 s. */
  leaseMs?: number
  /** ms between the worker's heartbeats. Default 1 s. */
  heartbeatMs?: number
}

export async function startLocalCluster(opts: LocalClusterOptions = {}): Promise<MemoryCluster> {
  const o: MemoryClusterOptions = { workers: opts.workers ?? availableParallelism(), threads: opts.threads ?? 1, kind: 'node', spawn: spawnThread, unref: true }
  if (opts.leaseMs !== undefined) o.leaseMs = opts.leaseMs
  if (opts.heartbeatMs !== undefined) o.heartbeatMs = opts.heartbeatMs
  return startMemoryCluster(o)
}
