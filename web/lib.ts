/**
 * The package's browser entry (`import { Client } from 'tabgrid'` in a bundle, or
 * `import { Client } from 'http://HOST:8786/tabgrid-client.js'` in a `<script type="module">`):
 * the client API, with `Client.local()` backed by a pool of Web Workers in the page.
 *
 * The Web Worker's code is inlined in this one file and started from a Blob URL, so the
 * library works from any origin: a page that loads it needs `worker-src blob:` (and
 * `script-src 'unsafe-eval'`, since task functions travel as source) if it sets a CSP.
 *
 * @example
 * ```html
 * <script type="module">
 *   import { Client } from 'http://localhost:8786/tabgrid-client.js'
 *   const client = await Client.local({ workers: 2 })
 *   const x = client.submit(n => Array.from({ length: n }, (_, i) => i * i), 1000)
 *   console.log(await client.submit(a => a.length, x).result())   // 1000
 *   await client.close()
 * </script>
 * ```
 */
import { Client, setLocalClusterFactory } from '../shared/client.js'
import { startBrowserLocalCluster } from './local.js'
import { webWorkerThread } from './pool.js'
import InlineWebWorker from './thread/webworker.ts?worker&inline'

setLocalClusterFactory(opts => startBrowserLocalCluster(opts, () => webWorkerThread(new InlineWebWorker({ name: 'tabgrid-thread' }))))

export { Client }
export { Future, AsCompleted, asCompleted, fireAndForget, wait, partitionAll, type FutureStatus } from '../shared/future.js'
export {
  TabgridError, TaskError, CancelledError, LostDataError, AuthError, SerializationError, TooLargeError, TimeoutError,
  type ErrorCode, type WireError,
} from '../shared/errors.js'
export type { WorkerSummary, StoryEntry, MaybeFuture, Gathered, TaskOptions, ScatterOptions, ClientConnectOptions, LocalOptions, RequestOptions, GatherOptions, PublishOptions, AsCompletedOptions } from '../shared/client.js'
