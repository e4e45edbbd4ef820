/**
 * Entry of one Web Worker of a browser worker (a volunteer's tab, or `Client.local` in a
 * page): an Executor exposed to the tab through comlink. Tasks run here, never on the
 * page. Modules uploaded by clients are imported from Blob URLs (the worker page's CSP
 * allows `blob:` scripts and nothing else but its own origin).
 */
import * as Comlink from 'comlink'
import { createExecutorApi } from '../../shared/executor.js'
import { CLOSING, READY } from './signals.js'

const scope = self as unknown as DedicatedWorkerGlobalScope

async function importSource(source: string): Promise<unknown> {
  const url = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }))
  try {
    return await import(/* @vite-ignore */ url)
  } finally {
    URL.revokeObjectURL(url)
  }
}

// A task that closes its own Web Worker would otherwise leave the tab waiting on a thread
// that can no longer answer: say so first, and the tab treats it as the thread exiting.
const closeWorker = scope.close.bind(scope)
scope.close = () => {
  scope.postMessage(CLOSING)
  closeWorker()
}

Comlink.expose(createExecutorApi(importSource, Comlink.transfer), scope)
scope.postMessage(READY)
