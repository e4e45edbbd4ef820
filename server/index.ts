/**
 * The package's Node entry (`import { Client } from 'tabgrid'`): the client API, with
 * `Client.local()` backed by a worker_threads pool, plus the coordinator and worker for
 * programs that start their own grid.
 *
 * @example
 * import { Client } from 'tabgrid'
 * const client = await Client.connect('http://localhost:8786')
 * const x = client.submit((n) => Array.from({ length: n }, (_, i) => i), 1000)
 * console.log(await client.submit(a => a.length, x).result())   // 1000, computed where x lives
 */
import { Client, setLocalClusterFactory } from '../shared/client.js'
import { startLocalCluster } from './local.js'

setLocalClusterFactory(opts => startLocalCluster(opts))

export { Client, setLocalClusterFactory }
export type { WorkerSummary, StoryEntry, MaybeFuture, Gathered, TaskOptions, ScatterOptions, ClientConnectOptions, LocalOptions, RequestOptions, GatherOptions, PublishOptions, AsCompletedOptions } from '../shared/client.js'
export { Future, AsCompleted, asCompleted, fireAndForget, wait, partitionAll, type FutureStatus } from '../shared/future.js'
export {
  TabgridError, TaskError, CancelledError, LostDataError, AuthError, SerializationError, TooLargeError, TimeoutError,
  type ErrorCode, type WireError,
} from '../shared/errors.js'
export { startCoordinator, type StartOptions, type RunningCoordinator } from './http.js'
export { startWorker, type WorkerOptions, type RunningWorker } from './agent.js'
export { startLocalCluster, type LocalClusterOptions } from './local.js'
export { Coordinator } from '../core/coordinator.js'
export { progress, type ProgressOptions, type ProgressSummary } from './progress.js'
