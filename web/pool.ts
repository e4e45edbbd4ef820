/**
 * Threads of a browser worker: Web Workers running web/thread/webworker.ts, wrapped as the
 * runtime's ThreadHandle. A Web Worker has no 'exit' event, so a thread's end is pieced
 * together from what the tab can see: the worker's own "closing" note (a task called
 * `self.close()`), an 'error' event before it said it was ready (its script failed to
 * load or run), `terminate()` (a hang, a hard cancel, a shrinking pool), and a Web Lock
 * the thread holds while it lives (protocol.ts ThreadSignal): a Web Worker that dies
 * silently once started (the browser stopped it, a task closed it behind the entry's
 * back) releases it, and the tab, waiting for that lock, treats it as the thread exiting,
 * so its tasks fail over as after a crash. One that dies silently before it started is
 * replaced when the runtime's start deadline passes. Without Web Locks (a page that is
 * not a secure context) a silent death after the start is not noticed.
 */
import type { ThreadHandle } from '../core/runtime.js'
import { threadSignal } from '../shared/protocol.js'

/** What the tab does with errors a running thread did not catch (a task's stray timer, say). */
export type StrayErrorSink = (message: string) => void

/**
 * Wraps a Web Worker that runs the executor entry as a ThreadHandle.
 *
 * @example
 * ```ts
 * const handle = webWorkerThread(new Worker(url, { type: 'module' }))
 * handle.onExit(reason => console.log('thread ended:', reason))
 * ```
 */
export function webWorkerThread(worker: Worker, onStrayError: StrayErrorSink = () => {}): ThreadHandle {
  let ready = false
  let exited = false
  const exitCbs: ((reason: string) => void)[] = []
  const fire = (reason: string): void => {
    if (exited) return
    exited = true
    for (const cb of exitCbs) cb(reason)
  }
  worker.addEventListener('message', (ev: MessageEvent) => {
    // comlink's own messages are not signals
    const d: unknown = ev.data
    if (typeof d !== 'object' || d === null || !('tabgrid' in d)) return
    const signal = threadSignal.safeParse(d)
    if (!signal.success) return
    const s = signal.data
    if (s.tabgrid === 'ready') {
      ready = true
      const locks = (globalThis.navigator as { locks?: LockManager } | undefined)?.locks
      if (s.lock && locks) {
        // granted once the thread no longer holds it: it is gone (if we ended it, fire is a no-op)
        locks.request(s.lock, () => {
          fire('its Web Worker ended without a word (the browser stopped it, or a task closed it)')
          worker.terminate()
        }).catch(() => {})
      }
    } else {
      fire('a task closed its Web Worker')
      worker.terminate()
    }
  })
  worker.addEventListener('error', (ev: ErrorEvent) => {
    // handled here: the browser would otherwise print it as an uncaught page error
    ev.preventDefault()
    if (!ready) {
      fire(`failed to start: ${ev.message || 'the Web Worker could not start (its script failed to load)'}`)
      worker.terminate()
    } else {
      // an error after the start is a task's stray one; if the thread died of it, its Web Lock says so
      onStrayError(ev.message || 'an error without a message')
    }
  })
  worker.addEventListener('messageerror', () => onStrayError('a message from a Web Worker could not be read'))
  return {
    endpoint: worker,
    onExit: cb => { if (exited) cb('exited'); else exitCbs.push(cb) },
    terminate: () => {
      worker.terminate()
      fire('terminated')
    },
  }
}

/**
 * Makes one thread for the volunteer page: a module Web Worker loaded from this origin,
 * so it runs under the Content-Security-Policy of its own script response.
 *
 * @example
 * ```ts
 * const runtime = new WorkerRuntime({ nprocs: 3, nthreads: 1, spawn: () => spawnWebWorker(), hardCancel: true })
 * ```
 */
export function spawnWebWorker(onStrayError?: StrayErrorSink): ThreadHandle {
  const worker = new Worker(new URL('./thread/webworker.ts', import.meta.url), { type: 'module', name: 'tabgrid-thread' })
  return webWorkerThread(worker, onStrayError)
}
