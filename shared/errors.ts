/**
 * Errors cross the wire as plain data with a code from one closed table; inside a
 * process they are a few named Error classes with `cause`.
 */

/** The closed table of error codes that travel between coordinator, workers and clients. */
export const ERROR_CODES = {
  'task-error': 'the task threw',
  cancelled: 'the task was cancelled',
  'lost-data': 'data held nowhere any more, with no lineage to recompute it',
  auth: 'missing or wrong token',
  serialization: 'a function or value that cannot travel',
  'too-large': 'a payload over the size limit',
  'bad-message': 'a malformed or out-of-role message',
  'killed-worker': 'the task killed the workers that ran it',
  'not-found': 'no such key',
  timeout: 'no answer in time',
  disconnected: 'the connection closed',
  'redundancy-mismatch': 'redundant runs disagreed',
  forbidden: 'a claim or request outside what the coordinator gave this connection',
  internal: 'a bug in tabgrid',
} as const

export type ErrorCode = keyof typeof ERROR_CODES

/** An error as it travels on the wire. */
export interface WireError {
  code: ErrorCode
  message: string
  /** the remote error's class name, e.g. 'TypeError' */
  name?: string
  /** the remote stack, as text */
  stack?: string
  /** the key the error is about */
  key?: string
}

/** Base of every tabgrid error; `code` tells them apart across the wire. */
export class TabgridError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
  }
}

/** The task threw. `remoteStack` is the stack on the worker; `remoteName` the class of the thrown error. */
export class TaskError extends TabgridError {
  readonly key: string | undefined
  readonly remoteName: string | undefined
  readonly remoteStack: string | undefined
  constructor(message: string, opts: { key?: string; remoteName?: string; remoteStack?: string; code?: ErrorCode; cause?: unknown } = {}) {
    super(opts.code ?? 'task-error', message, { cause: opts.cause })
    this.key = opts.key
    this.remoteName = opts.remoteName
    this.remoteStack = opts.remoteStack
    if (opts.remoteStack) this.stack = `${this.name}: ${message}\n    --- on the worker ---\n${opts.remoteStack}`
  }
}
export class CancelledError extends TabgridError {
  constructor(message = 'cancelled', options?: { cause?: unknown }) { super('cancelled', message, options) }
}
export class LostDataError extends TabgridError {
  constructor(message: string, options?: { cause?: unknown }) { super('lost-data', message, options) }
}
export class AuthError extends TabgridError {
  constructor(message: string, options?: { cause?: unknown }) { super('auth', message, options) }
}
export class SerializationError extends TabgridError {
  constructor(message: string, options?: { cause?: unknown }) { super('serialization', message, options) }
}
export class TooLargeError extends TabgridError {
  constructor(message: string, options?: { cause?: unknown }) { super('too-large', message, options) }
}
/** A request got no answer in time, or its connection closed first. */
export class TimeoutError extends TabgridError {
  constructor(message: string, options?: { cause?: unknown }) { super('timeout', message, options) }
}

/**
 * Gives an error class its name on the prototype, once. Not `new.target.name`: a minifier
 * renames classes (the browser bundle's SerializationError was called "Wu").
 */
export function nameErrorClass(cls: abstract new (...args: never[]) => Error, name: string): void {
  Object.defineProperty(cls.prototype, 'name', { value: name, writable: true, configurable: true, enumerable: false })
}

for (const [cls, name] of [
  [TabgridError, 'TabgridError'], [TaskError, 'TaskError'], [CancelledError, 'CancelledError'], [LostDataError, 'LostDataError'],
  [AuthError, 'AuthError'], [SerializationError, 'SerializationError'], [TooLargeError, 'TooLargeError'], [TimeoutError, 'TimeoutError'],
] as const) nameErrorClass(cls, name)

/** Turns anything thrown into a WireError (for sending). */
export function toWireError(err: unknown, fallback: ErrorCode = 'task-error', key?: string): WireError {
  if (err instanceof TabgridError) {
    const w: WireError = { code: err.code, message: err.message, name: err.name }
    const stack = err instanceof TaskError ? err.remoteStack : err.stack
    if (stack) w.stack = stack
    if (key ?? (err instanceof TaskError ? err.key : undefined)) w.key = key ?? (err as TaskError).key
    return w
  }
  if (err instanceof Error) {
    const w: WireError = { code: fallback, message: err.message, name: err.name }
    if (err.stack) w.stack = err.stack
    if (key) w.key = key
    return w
  }
  const w: WireError = { code: fallback, message: typeof err === 'string' ? err : safeString(err) }
  if (key) w.key = key
  return w
}

/** Longest message and stack a worker reports (the wire takes 64 KB of each; these leave room). */
export const MAX_ERROR_TEXT = 16_000
const MAX_ERROR_NAME = 128

/**
 * `w` with its message and stack cut to MAX_ERROR_TEXT characters (saying so in the
 * text) and its name to 128, so a task that throws a huge message still reports.
 *
 * @example
 * ```ts
 * capWireError({ code: 'task-error', message: 'x'.repeat(70_000) }).message.length   // ≈ 16,100
 * ```
 */
export function capWireError(w: WireError): WireError {
  const cut = (text: string, what: string): string =>
    text.length <= MAX_ERROR_TEXT ? text : `${text.slice(0, MAX_ERROR_TEXT)}… (${what} truncated by the worker: ${text.length} characters in all)`
  if (w.message.length <= MAX_ERROR_TEXT && (w.stack === undefined || w.stack.length <= MAX_ERROR_TEXT) && (w.name === undefined || w.name.length <= MAX_ERROR_NAME)) return w
  const out: WireError = { ...w, message: cut(w.message, 'message') }
  if (w.stack !== undefined) out.stack = cut(w.stack, 'stack')
  if (w.name !== undefined && w.name.length > MAX_ERROR_NAME) out.name = w.name.slice(0, MAX_ERROR_NAME)
  return out
}

/** Turns a WireError back into the named class a caller can tell apart. */
export function fromWireError(w: WireError): TabgridError {
  switch (w.code) {
    case 'task-error':
    case 'killed-worker':
    case 'redundancy-mismatch':
      return new TaskError(w.message, { code: w.code, ...(w.key ? { key: w.key } : {}), ...(w.name ? { remoteName: w.name } : {}), ...(w.stack ? { remoteStack: w.stack } : {}) })
    case 'cancelled': return new CancelledError(w.message)
    case 'lost-data': return new LostDataError(w.message)
    case 'auth': return new AuthError(w.message)
    case 'serialization': return new SerializationError(w.message)
    case 'too-large': return new TooLargeError(w.message)
    case 'timeout':
    case 'disconnected': return new TimeoutError(w.message)
    case 'bad-message':
    case 'forbidden':
    case 'not-found':
    case 'internal':
      return new TabgridError(w.code, w.message)
    default: {
      const never: never = w.code
      return new TabgridError('internal', `unknown error code ${String(never)}: ${w.message}`)
    }
  }
}

function safeString(x: unknown): string {
  try { return String(x) } catch { return Object.prototype.toString.call(x) }
}
