/**
 * The few host globals that both browsers and Node provide, declared here because
 * shared/ sees neither DOM nor Node typings (so it cannot lean on either by accident).
 */
declare global {
  interface Console { log(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void; info(...a: unknown[]): void }
  var console: Console
  type TimerHandle = { readonly __timer?: never } | number
  function setTimeout(fn: () => void, ms?: number): TimerHandle
  function clearTimeout(handle: TimerHandle | undefined): void
  function setInterval(fn: () => void, ms?: number): TimerHandle
  function clearInterval(handle: TimerHandle | undefined): void
  function queueMicrotask(fn: () => void): void
  var performance: { now(): number }
  class MessageChannel {
    readonly port1: import('./executor.js').TaskPort
    readonly port2: import('./executor.js').TaskPort
  }
  class TextEncoder { encode(s: string): Uint8Array }
  class TextDecoder { constructor(label?: string); decode(b: Uint8Array): string }
  class URL { constructor(url: string, base?: string); readonly protocol: string; readonly hostname: string; readonly port: string; readonly username: string; readonly password: string }
}
export {}
