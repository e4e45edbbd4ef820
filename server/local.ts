/**
 * `Client.local()` in Node: the same API with no coordinator process and no sockets.
 * The coordinator core and a worker runtime run in this process, joined by memory
 * links, and tasks run in a worker_threads pool ("don't go distributed").
 */
import { availableParallelism } from 'node:os'
import { Coordinator } from './coordinator.js'
import { spawnThread } from './agent.js'
import { memoryLinkPair, type Link } from '../shared/link.js'
import { WorkerRuntime } from '../shared/runtime.js'
import type { ClientMessage, ToClientMessage, WorkerMessage, ToWorkerMessage, Hello } from '../shared/protocol.js'

export interface LocalClusterOptions {
  /** threads in the pool. Default: the machine's cores. */
  workers?: number
  /** tasks each thread runs at once. Default 1. */
  threads?: number
}

export async function startLocalCluster(opts: LocalClusterOptions = {}): Promise<{ link: Link<ClientMessage, ToClientMessage>; shutdown(): Promise<void> }> {
  const workers = opts.workers ?? availableParallelism()
  if (!Number.isInteger(workers) || workers < 1 || workers > 1024) throw new RangeError(`workers must be a whole number from 1 to 1024 (got ${workers})`)
  const threads = opts.threads ?? 1
  const coordinator = new Coordinator({ clientGraceMs: 0, workerGraceMs: 0 })

  const workerHello: Hello = { role: 'worker', kind: 'node', slots: workers * threads, name: 'local' }
  const [workerSide, coordWorkerSide] = memoryLinkPair<WorkerMessage, ToWorkerMessage>(workerHello, workerHello)
  const workerId = coordinator.accept({ id: 'local-worker', send: m => coordWorkerSide.send(m as ToWorkerMessage), close: () => {} }, workerHello)
  coordWorkerSide.onMessages = msgs => coordinator.receive(workerId, msgs)
  const runtime = new WorkerRuntime({ nprocs: workers, nthreads: threads, spawn: spawnThread })
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
