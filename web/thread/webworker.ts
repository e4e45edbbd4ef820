/**
 * Entry of one Web Worker of a browser worker (a volunteer's tab, or `Client.local` in a
 * page): an Executor exposed to the tab through comlink. Tasks run here, never on the
 * page. Modules uploaded by clients are imported from Blob URLs (the worker page's CSP
 * allows `blob:` scripts and nothing else but its own origin). Values past the thread's
 * memory budget spill to IndexedDB.
 */
import * as Comlink from 'comlink'
import { createExecutorApi } from '../../shared/executor.js'
import { IdbSpillStore } from '../spill-idb.js'
import type { ThreadSignal } from '../../shared/protocol.js'

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
  scope.postMessage({ tabgrid: 'closing' } satisfies ThreadSignal)
  closeWorker()
}

// A fetch the page's CSP blocks rejects with a bare "Failed to fetch"; say why, so the
// task's author reads it in the TaskError. (The violation event comes as its own task.)
const blocked: string[] = []
scope.addEventListener('securitypolicyviolation', e => {
  blocked.push((e as SecurityPolicyViolationEvent).blockedURI)
  if (blocked.length > 32) blocked.shift()
})
const wasBlocked = (url: URL): boolean => blocked.some(b => { try { return new URL(b).origin === url.origin } catch { return false } })
const nativeFetch = scope.fetch.bind(scope)
scope.fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
  try {
    return await nativeFetch(input, init)
  } catch (err) {
    if (!(err instanceof TypeError)) throw err
    let url: URL
    try { url = new URL(input instanceof Request ? input.url : String(input), scope.location.href) } catch { throw err }
    if (url.origin === scope.location.origin) throw err
    for (let i = 0; i < 5 && !wasBlocked(url); i++) await new Promise(r => setTimeout(r, 10))
    if (!wasBlocked(url)) throw err
    throw new TypeError(`fetch ${url.href} was blocked: a task on a volunteer's tab may connect only to the grid's coordinator (Content-Security-Policy: connect-src 'self')`, { cause: err })
  }
}

// the tab names each thread's spill database (threadInit's `spill`), so a reload reopens it
const spillStore = (name: string | undefined): IdbSpillStore => new IdbSpillStore(name ?? 'tabgrid-spill')

Comlink.expose(createExecutorApi(importSource, Comlink.transfer, spillStore), scope)

// The thread holds a Web Lock for as long as it lives: the tab asks for the same lock and
// gets it the moment this thread is gone, however it ended (the browser stopped it, or a
// task closed it behind the patch above), with no message from here. Web Locks need a
// secure context (https, or a loopback address); elsewhere the tab learns only of the
// deaths it can see.
async function holdLock(): Promise<string | undefined> {
  const locks = (scope.navigator as { locks?: LockManager }).locks
  if (!locks) return undefined
  const name = `tabgrid-thread-${crypto.randomUUID()}`
  await new Promise<void>((held, failed) => {
    locks.request(name, () => { held(); return new Promise<never>(() => {}) }).catch(failed)
  })
  return name
}
const lock = await holdLock().catch(() => undefined)
scope.postMessage((lock ? { tabgrid: 'ready', lock } : { tabgrid: 'ready' }) satisfies ThreadSignal)
