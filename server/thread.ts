/**
 * Entry of one worker_thread of a Node agent: an Executor exposed through comlink's
 * Node adapter. Modules uploaded by clients are imported from data: URLs.
 */
import { hash } from 'node:crypto'
import { parentPort } from 'node:worker_threads'
import * as Comlink from 'comlink'
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs'
import { createExecutorApi } from '../shared/executor.js'
import { DiskSpillStore } from './spill-disk.js'

if (!parentPort) throw new Error('server/thread.ts runs only as a worker_thread')

const api = createExecutorApi(
  source => import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`),
  Comlink.transfer,
  // past its memory budget, a thread spills least-recently-used values to files here
  dir => new DiskSpillStore(dir),
  // big encodings are kept in shared memory: handing them to the main side copies nothing;
  // results' digests (asked for by a journal, spot checks, redundancy) by the native SHA-256,
  // five times faster than the portable one on a small result
  { shareOver: 64 << 10, digest: bytes => hash('sha256', bytes, 'hex') },
)
Comlink.expose(api, nodeEndpoint(parentPort))
