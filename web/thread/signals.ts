/**
 * Plain-string messages a Web Worker posts to the tab beside comlink's (comlink ignores
 * messages without an id), so the tab learns of a thread's start and end even when no
 * call is in flight.
 */

/** posted once the executor is exposed: an 'error' event before it means the thread never started */
export const READY = '__tabgrid_ready'
/** posted when a task calls `self.close()`: the thread is about to end */
export const CLOSING = '__tabgrid_closing'
