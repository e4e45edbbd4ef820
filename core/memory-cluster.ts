/**
 * A whole grid in one process, joined by memory links: the coordinator core and one
 * worker runtime over a pool of threads. `Client.local()` is this, in Node (worker_threads)
 * and in a browser page (Web Workers). Pure of Node and DOM: the host passes `spawn`.
 */
import { Coordinator } from './coordinator.js'
import { memoryLinkPair, type Link } from '../shared/link.js'
import { WorkerRuntime, type ThreadHandle } from './runtime.js'
import type { ClientMessage, ToClientMessage, WorkerMessage, ToWorkerMessage, Hello } from '../shared/protocol.js'

export interface MemoryClusterOptions {
  /** threads in the pool */
  workers: number
  /** tasks each thread runs at once */
  threads: number
  kind: 'node' | 'browser'
  spawn: () => ThreadHandle
  /** cancelling a running task stops its thread (browsers) */
  hardCancel?: boolean
  /** ms a worker with tasks may stay silent before its leases run out (the coordinator's leaseMs). Default 15 s. */
  leaseMs?: number
  /** ms between the worker's heartbeats (the runtime's heartbeatMs). Default 1 s. */
  heartbeatMs?: number
  /** the threads do not keep the host process alive (Node: a script that never closes its client still exits) */
  unref?: boolean
}

export interface MemoryCluster {
  /** the client's side */
  link: Link<ClientMessage, ToClientMessage>
  shutdown(): Promise<void>
}

export function startMemoryCluster(o: MemoryClusterOptions): MemoryCluster {
  if (!Number.isInteger(o.workers) || o.workers < 1 || o.workers > 1024) throw new RangeError(`workers must be a whole number from 1 to 1024 (got ${o.workers})`)
  if (!Number.isInteger(o.threads) || o.threads < 1 || o.threads > 1024) throw new RangeError(`threads must be a whole number from 1 to 1024 (got ${o.threads})`)
  // the worker is this process's own: no windows or deadlines for it
  const trusted = { clientGraceMs: 0, workerGraceMs: 0, trustWorkers: true }
  const coordinator = new Coordinator(o.leaseMs === undefined ? trusted : { ...trusted, leaseMs: o.leaseMs })
  const join = <Out extends object, In extends object>(hello: Hello, id: string): Link<Out, In> => {
    const [side, coordSide] = memoryLinkPair<Out, In>(hello, hello)
    const peer = coordinator.accept({ id, send: m => coordSide.send(m as In), close: () => {} }, hello)
    coordSide.onMessages = msgs => coordinator.receive(peer, msgs)
    return side
  }
  // the runtime renews the worker's leases itself, so tasks longer than a lease run to their end
  const runtime = new WorkerRuntime({ nprocs: o.workers, nthreads: o.threads, spawn: o.spawn, hardCancel: o.hardCancel ?? false, unref: o.unref ?? false, ...(o.heartbeatMs === undefined ? {} : { heartbeatMs: o.heartbeatMs }) })
  runtime.attach(join<WorkerMessage, ToWorkerMessage>({ role: 'worker', kind: o.kind, slots: o.workers * o.threads, name: 'local' }, 'local-worker'))
  const link = join<ClientMessage, ToClientMessage>({ role: 'client', name: 'local' }, 'local-client')
  let down = false
  return {
    link,
    shutdown: async () => {
      if (down) return
      down = true
      coordinator.close()
      await runtime.close()
    },
  }
}
