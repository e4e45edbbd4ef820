/**
 * A Web Worker that only ticks. Browsers throttle a background tab's timers (to once a
 * minute, or freeze them), but not a dedicated Web Worker's, nor the messages it posts:
 * the volunteer page feeds these ticks to its worker runtime, so a tab in the background
 * keeps renewing its leases at the coordinator (and keeps its tasks' time limits).
 */
const scope = self as unknown as DedicatedWorkerGlobalScope
const everyMs = 1_000
setInterval(() => scope.postMessage('tick'), everyMs)
