/**
 * Task functions travel as source text.
 *
 * Client side: `serializeFunction(fn)` checks that `fn`'s source is a standalone
 * expression (arrow, `function` expression/declaration, async variants), and returns
 * `{ source, hash, name }`. `freeVariables(source)` is a conservative static check used
 * to warn at submit time about names the worker will not have.
 *
 * Worker side: `FunctionCache.compile(hash, source)` evaluates the source once per hash
 * in strict mode with `new Function` (the worker page's CSP allows 'unsafe-eval') and
 * wraps the function so that "X is not defined" becomes a `FreeVariableError` that
 * explains why.
 *
 * Plain ES2023: no Node or DOM types.
 */
import { hashString } from './hash.js'

export interface TaskFunction {
  /** source text, an expression that evaluates to the function */
  source: string
  /** hashString(source) */
  hash: string
  /** the function's name or 'lambda', sanitized to [A-Za-z0-9_$.-], used to name task keys like `inc-3f2a…` */
  name: string
}

/** A function that cannot travel as source text; the message says why and how to fix it. */
export class FunctionError extends Error {
  override name = 'FunctionError'
  constructor(message: string, options?: ErrorOptions) {
    super(message, options)
  }
}

/** A task function referenced a name the worker does not define (a free variable). */
export class FreeVariableError extends Error {
  override name = 'FreeVariableError'
  /** the undefined name */
  readonly variable: string
  constructor(variable: string, options?: ErrorOptions) {
    super(
      `task function uses "${variable}", which is not defined on the worker: functions travel as source text, ` +
        `so pass ${variable} as an argument or define it inside the function`,
      options,
    )
    this.variable = variable
  }
}

// ---------------------------------------------------------------------------------------
// Tokenizer (shared by serializeFunction's shape check and freeVariables)
// ---------------------------------------------------------------------------------------

type TokType = 'name' | 'priv' | 'num' | 'str' | 'tmpl' | 'regex' | 'p'
interface Tok {
  t: TokType
  /** text for names and punctuators; '' for literals */
  v: string
  /** a line break precedes this token */
  nl: boolean
}

const PUNCTS = [
  '>>>=', '...', '===', '!==', '**=', '<<=', '>>=', '>>>', '&&=', '||=', '??=',
  '=>', '==', '!=', '<=', '>=', '&&', '||', '??', '?.', '++', '--', '+=', '-=', '*=', '/=', '%=',
  '&=', '|=', '^=', '**', '<<', '>>',
]
/** keywords after which a `/` starts a regular expression */
const REGEX_AFTER = new Set([
  'return', 'typeof', 'instanceof', 'in', 'of', 'new', 'delete', 'void', 'throw', 'case', 'do', 'else',
  'yield', 'await', 'extends',
])

function isIdStart(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 36 || c === 95 || c === 92 || (c > 127 && !isSpace(c))
}
function isIdPart(c: number): boolean {
  return isIdStart(c) || (c >= 48 && c <= 57) || c === 0x200c || c === 0x200d
}
function isSpace(c: number): boolean {
  return (
    c === 32 || c === 9 || c === 11 || c === 12 || c === 0xa0 || c === 0xfeff || c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) || c === 0x202f || c === 0x205f || c === 0x3000
  )
}
function isNewline(c: number): boolean {
  return c === 10 || c === 13 || c === 0x2028 || c === 0x2029
}

/** Tokenizes JavaScript source. Never throws; malformed input gives best-effort tokens. */
function tokenize(src: string): Tok[] {
  const toks: Tok[] = []
  const stack: number[] = [] // 0: `{`, 1: `${`
  const n = src.length
  let i = 0
  let nl = false
  const push = (t: TokType, v: string): void => {
    toks.push({ t, v, nl })
    nl = false
  }
  /** scans template characters from i (just after '`' or a substitution's '}') */
  const template = (): void => {
    while (i < n) {
      const c = src.charCodeAt(i)
      if (c === 92) {
        i += 2
      } else if (c === 96) {
        i++
        push('tmpl', '')
        return
      } else if (c === 36 && src.charCodeAt(i + 1) === 123) {
        i += 2
        push('tmpl', '')
        push('p', '${')
        stack.push(1)
        return
      } else {
        i++
      }
    }
    push('tmpl', '')
  }
  const regexAllowed = (): boolean => {
    const prev = toks[toks.length - 1]
    if (!prev) return true
    if (prev.t === 'p') return !(prev.v === ')' || prev.v === ']' || prev.v === '}' || prev.v === '++' || prev.v === '--')
    if (prev.t === 'name') return REGEX_AFTER.has(prev.v)
    return false
  }
  while (i < n) {
    const c = src.charCodeAt(i)
    if (isNewline(c)) {
      nl = true
      i++
      continue
    }
    if (isSpace(c)) {
      i++
      continue
    }
    const c1 = src.charCodeAt(i + 1)
    if (c === 47 && c1 === 47) {
      // line comment
      i += 2
      while (i < n && !isNewline(src.charCodeAt(i))) i++
      continue
    }
    if (c === 47 && c1 === 42) {
      // block comment
      const end = src.indexOf('*/', i + 2)
      const stop = end < 0 ? n : end + 2
      for (let j = i; j < stop; j++) if (isNewline(src.charCodeAt(j))) nl = true
      i = stop
      continue
    }
    if (c === 39 || c === 34) {
      // string
      i++
      while (i < n) {
        const d = src.charCodeAt(i)
        if (d === 92) i += 2
        else if (d === c) {
          i++
          break
        } else if (d === 10 || d === 13) break
        else i++
      }
      push('str', '')
      continue
    }
    if (c === 96) {
      i++
      template()
      continue
    }
    if (isIdStart(c)) {
      const s = i
      while (i < n) {
        const d = src.charCodeAt(i)
        if (d === 92) {
          // \uXXXX or \u{...} escape
          if (src.charCodeAt(i + 2) === 123) {
            const close = src.indexOf('}', i)
            i = close < 0 ? n : close + 1
          } else i += 6
        } else if (isIdPart(d)) i++
        else break
      }
      push('name', src.slice(s, i))
      continue
    }
    if (c === 35 && i + 1 < n && isIdStart(c1)) {
      const s = i
      i++
      while (i < n && isIdPart(src.charCodeAt(i))) i++
      push('priv', src.slice(s, i))
      continue
    }
    if ((c >= 48 && c <= 57) || (c === 46 && c1 >= 48 && c1 <= 57)) {
      const hex = c === 48 && (c1 === 120 || c1 === 88)
      i++
      while (i < n) {
        const d = src.charCodeAt(i)
        if ((d >= 48 && d <= 57) || (d >= 97 && d <= 122) || (d >= 65 && d <= 90) || d === 95 || d === 46) {
          i++
        } else if ((d === 43 || d === 45) && !hex && (src.charCodeAt(i - 1) | 32) === 101) {
          i++ // exponent sign
        } else break
      }
      push('num', '')
      continue
    }
    if (c === 47 && regexAllowed()) {
      let j = i + 1
      let inClass = false
      let ok = false
      while (j < n) {
        const d = src.charCodeAt(j)
        if (isNewline(d)) break
        if (d === 92) {
          j += 2
          continue
        }
        if (d === 91) inClass = true
        else if (d === 93) inClass = false
        else if (d === 47 && !inClass) {
          ok = true
          j++
          break
        }
        j++
      }
      if (ok) {
        while (j < n && isIdPart(src.charCodeAt(j))) j++
        i = j
        push('regex', '')
        continue
      }
    }
    if (c === 125) {
      // `}`: closes a block/object or a template substitution
      i++
      push('p', '}')
      if (stack.pop() === 1) template()
      continue
    }
    if (c === 123) {
      stack.push(0)
      i++
      push('p', '{')
      continue
    }
    let matched = ''
    for (const p of PUNCTS) {
      if (src.startsWith(p, i)) {
        matched = p
        break
      }
    }
    if (matched === '?.' && src.charCodeAt(i + 2) >= 48 && src.charCodeAt(i + 2) <= 57) matched = '' // a?.5:1
    if (!matched) matched = src[i]!
    i += matched.length
    push('p', matched)
  }
  return toks
}

/** For each bracket token, the index of its partner (-1 when unmatched). */
function matchBrackets(toks: Tok[]): Int32Array {
  const m = new Int32Array(toks.length).fill(-1)
  const stack: number[] = []
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i]!
    if (t.t !== 'p') continue
    const v = t.v
    if (v === '(' || v === '[' || v === '{' || v === '${') stack.push(i)
    else if (v === ')' || v === ']' || v === '}') {
      const o = stack.pop()
      if (o !== undefined) {
        m[o] = i
        m[i] = o
      }
    }
  }
  return m
}

// ---------------------------------------------------------------------------------------
// serializeFunction
// ---------------------------------------------------------------------------------------

type Shape =
  | { ok: true }
  | { ok: false; kind: 'class' | 'generator' | 'method' | 'accessor' | 'unknown' }

function isP(t: Tok | undefined, v: string): boolean {
  return t !== undefined && t.t === 'p' && t.v === v
}
function isKeyStart(t: Tok | undefined): boolean {
  return t !== undefined && (t.t === 'name' || t.t === 'str' || t.t === 'num' || t.t === 'priv' || isP(t, '['))
}

/** Classifies Function.prototype.toString output by its first tokens. */
function shapeOf(toks: Tok[], m: Int32Array): Shape {
  const t0 = toks[0]
  const t1 = toks[1]
  const t2 = toks[2]
  const after = (i: number): Tok | undefined => (m[i]! >= 0 ? toks[m[i]! + 1] : undefined)
  const bad = (kind: 'class' | 'generator' | 'method' | 'accessor' | 'unknown'): Shape => ({ ok: false, kind })
  if (!t0) return bad('unknown')
  if (t0.t === 'name') {
    switch (t0.v) {
      case 'class':
        return bad('class')
      case 'function':
        return isP(t1, '*') ? bad('generator') : { ok: true }
      case 'async':
        if (t1?.t === 'name' && t1.v === 'function') return isP(t2, '*') ? bad('generator') : { ok: true }
        if (isP(t1, '=>')) return { ok: true } // async => …  (a parameter named async)
        if (isP(t1, '(')) return isP(after(1), '=>') ? { ok: true } : bad('method')
        if (isP(t1, '*')) return bad('generator')
        if (t1?.t === 'name' && isP(t2, '=>')) return { ok: true }
        if (isKeyStart(t1)) return bad('method')
        return bad('unknown')
      case 'get':
      case 'set':
        if (isP(t1, '=>')) return { ok: true }
        if (isKeyStart(t1)) return bad('accessor')
        break
    }
    if (isP(t1, '=>')) return { ok: true }
    if (isP(t1, '(')) return bad('method')
    return bad('unknown')
  }
  if (isP(t0, '(')) return isP(after(0), '=>') ? { ok: true } : bad('unknown')
  if (isP(t0, '*')) return bad('generator')
  if (isKeyStart(t0)) return bad('method')
  return bad('unknown')
}

const NAMESPACES = [
  'Math', 'JSON', 'Object', 'Array', 'Number', 'String', 'Date', 'Reflect', 'Atomics', 'Promise', 'BigInt',
  'Symbol', 'Intl', 'ArrayBuffer', 'Map', 'Set', 'console', 'crypto', 'performance',
]

/** Best guess of how user code refers to a native function, e.g. "Math.random". */
function nativePath(fn: Function): string {
  const name = fn.name
  const g = globalThis as Record<string, unknown>
  if (name && g[name] === fn) return name
  for (const ns of NAMESPACES) {
    const obj = g[ns]
    if (obj && name && (obj as Record<string, unknown>)[name] === fn) return `${ns}.${name}`
  }
  return name ? `obj.${name}` : 'f'
}

function snippet(source: string): string {
  const one = source.replace(/\s+/g, ' ').trim()
  return one.length > 60 ? one.slice(0, 57) + '…' : one
}

function refuse(fn: Function, source: string, shape: Shape): never {
  const what = snippet(source)
  if (shape.ok) throw new Error('unreachable')
  switch (shape.kind) {
    case 'class':
      throw new FunctionError(
        `cannot send class ${fn.name ? `"${fn.name}" ` : ''}as a task: a class cannot be a task; pass a function that constructs it ` +
          `(and define the class inside that function, or upload it with client.uploadModule and load it with importModule)`,
      )
    case 'generator':
      throw new FunctionError(
        `cannot send generator function "${what}": generator functions cannot be tasks; ` +
          `return an array instead (e.g. collect the values with [...gen()] inside a regular function)`,
      )
    case 'accessor':
      throw new FunctionError(
        `cannot send getter/setter "${what}": getters and setters cannot be tasks; ` +
          `pass a regular function instead, e.g. (obj) => obj.${fn.name.replace(/^(get|set) /, '') || 'prop'}`,
      )
    case 'method': {
      const name = /^[A-Za-z_$][\w$]*$/.test(fn.name) ? fn.name : 'f'
      throw new FunctionError(
        `cannot send method shorthand "${what}": its source is not an expression on its own; ` +
          `write it as an arrow function or \`function ${name}(…) {…}\``,
      )
    }
    default:
      throw new FunctionError(
        `cannot send function "${what}": its source text is not a function expression; ` +
          `write it as an arrow function or a \`function\` expression`,
      )
  }
}

const byIdentity = new WeakMap<Function, TaskFunction>()
/** validated source → hash (bounded: cleared when full) */
const bySource = new Map<string, string>()
const BY_SOURCE_MAX = 1000

function sanitizeName(name: string): string {
  const s = name.replace(/[^A-Za-z0-9_$.-]+/g, '_').slice(0, 64)
  return s === '' || s === 'anonymous' ? 'lambda' : s
}

/**
 * Turns a function into `{ source, hash, name }`.
 *
 * Throws `FunctionError` when the function cannot travel: native or bound functions,
 * method shorthand, getters/setters, classes, generators, non-functions, and sources
 * that do not compile on their own in strict mode (e.g. an arrow using `super` or a
 * private `#field` of its enclosing class). Cached by function identity.
 */
export function serializeFunction(fn: unknown): TaskFunction {
  if (typeof fn !== 'function') {
    const got = fn === null ? 'null' : Array.isArray(fn) ? 'an array' : typeof fn
    throw new FunctionError(`expected a function to run as a task, got ${got}`)
  }
  const f = fn as Function
  const cached = byIdentity.get(f)
  if (cached) return cached

  const source = Function.prototype.toString.call(f)
  let hash = bySource.get(source)
  if (hash === undefined) {
    if (/\{\s*\[native code\]\s*\}\s*$/.test(source)) {
      if (f.name.startsWith('bound ')) {
        throw new FunctionError(
          `cannot send bound function "${f.name}": bound functions have no source text; ` +
            `pass the bound values as arguments instead, or wrap it: (x) => …`,
        )
      }
      const path = nativePath(f)
      const call = f.length === 0 ? `() => ${path}()` : `(...args) => ${path}(...args)`
      throw new FunctionError(
        `cannot send native function ${path}: its source is "[native code]", which cannot travel; wrap it: ${call}`,
      )
    }
    const toks = tokenize(source)
    const shape = shapeOf(toks, matchBrackets(toks))
    if (!shape.ok) refuse(f, source, shape)
    checkCompiles(source)
    hash = hashString(source)
    if (bySource.size >= BY_SOURCE_MAX) bySource.clear()
    bySource.set(source, hash)
  }
  const out: TaskFunction = Object.freeze({ source, hash, name: sanitizeName(f.name) })
  byIdentity.set(f, out)
  return out
}

/** Syntax check in the worker's strict mode, when eval is allowed here (it may be blocked by a CSP). */
function checkCompiles(source: string): void {
  try {
    new Function('"use strict";\nreturn (' + source + '\n)')
  } catch (e) {
    if (e instanceof SyntaxError) {
      throw new FunctionError(
        `cannot send function "${snippet(source)}": its source does not compile on its own in strict mode ` +
          `(${e.message}); functions travel as source text, so they cannot use super, private #fields of an ` +
          `enclosing class, or sloppy-mode-only syntax`,
        { cause: e },
      )
    }
    // EvalError (CSP) or anything else: skip the check, the worker will report it.
  }
}

// ---------------------------------------------------------------------------------------
// FunctionCache (worker side)
// ---------------------------------------------------------------------------------------

const IDENT = /^[A-Za-z_$][\w$]*$/

function undefinedName(e: unknown): string | undefined {
  if (e === null || typeof e !== 'object') return undefined
  const err = e as { name?: unknown; message?: unknown }
  if (!(e instanceof ReferenceError) && err.name !== 'ReferenceError') return undefined
  const msg = typeof err.message === 'string' ? err.message : ''
  const m = /^(\S+) is not defined$/.exec(msg) ?? /^Can't find variable: (\S+)$/.exec(msg)
  return m?.[1]
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/**
 * Worker side: compiles task sources once per hash (bounded LRU) and wraps them so a
 * free variable becomes a `FreeVariableError`.
 *
 * Sources are evaluated as `"use strict"; return (source)` with `new Function`, so task
 * functions run in strict mode (`this` is undefined in plain calls; assigning to an
 * undeclared name throws). `globals` are extra free names visible to every task (e.g.
 * `importModule`); their values are bound at compile time.
 */
export class FunctionCache {
  private readonly names: string[]
  private readonly values: unknown[]
  private readonly max: number
  private readonly fns = new Map<string, { source: string; fn: (...args: unknown[]) => unknown }>()

  constructor(globals: Record<string, unknown> = {}, max = 1000) {
    this.names = Object.keys(globals)
    for (const k of this.names) {
      if (!IDENT.test(k)) throw new TypeError(`FunctionCache: global name ${JSON.stringify(k)} is not an identifier`)
    }
    this.values = this.names.map((k) => globals[k])
    this.max = Math.max(1, Math.floor(max))
  }

  has(hash: string): boolean {
    return this.fns.has(hash)
  }

  get size(): number {
    return this.fns.size
  }

  clear(): void {
    this.fns.clear()
  }

  /**
   * The compiled, wrapped function for `source`. Cached by `hash`; a hit whose source
   * differs from the cached one (a wrong or colliding hash) is recompiled, never reused.
   * Throws `FunctionError` when the source does not compile or is not a function.
   */
  compile(hash: string, source: string): (...args: unknown[]) => unknown {
    const hit = this.fns.get(hash)
    if (hit && hit.source === source) {
      // refresh LRU position
      this.fns.delete(hash)
      this.fns.set(hash, hit)
      return hit.fn
    }
    let fn: unknown
    try {
      const factory = new Function(...this.names, '"use strict";\nreturn (' + source + '\n)') as (
        ...a: unknown[]
      ) => unknown
      fn = factory(...this.values)
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e)
      throw new FunctionError(`task function ${hash} (${snippet(source)}) does not compile on the worker: ${msg}`, {
        cause: e,
      })
    }
    if (typeof fn !== 'function') {
      throw new FunctionError(`task function ${hash} (${snippet(source)}) does not evaluate to a function`)
    }
    const wrapped = wrap(fn as (...args: unknown[]) => unknown, source)
    this.fns.delete(hash)
    this.fns.set(hash, { source, fn: wrapped })
    while (this.fns.size > this.max) {
      const oldest = this.fns.keys().next().value as string
      this.fns.delete(oldest)
    }
    return wrapped
  }
}

function wrap(fn: (...args: unknown[]) => unknown, source: string): (...args: unknown[]) => unknown {
  const translate = (e: unknown): unknown => {
    if (e instanceof FreeVariableError) return e
    const name = undefinedName(e)
    if (name === undefined) return e
    // Only blame the task when the name appears in its own source (it may come from a module).
    if (!new RegExp(`(?<![\\w$.])${escapeRegExp(name)}(?![\\w$])`).test(source)) return e
    return new FreeVariableError(name, { cause: e })
  }
  return function (this: unknown, ...args: unknown[]): unknown {
    let r: unknown
    try {
      r = fn.apply(this, args)
    } catch (e) {
      throw translate(e)
    }
    if (r !== null && (typeof r === 'object' || typeof r === 'function') && typeof (r as PromiseLike<unknown>).then === 'function') {
      return (r as PromiseLike<unknown>).then(undefined, (e: unknown) => {
        throw translate(e)
      })
    }
    return r
  }
}

// ---------------------------------------------------------------------------------------
// freeVariables
// ---------------------------------------------------------------------------------------

/** Names that are always available to a task (ES and web-worker globals, plus importModule). */
export const KNOWN_GLOBALS: ReadonlySet<string> = new Set([
  // ES
  'globalThis', 'undefined', 'NaN', 'Infinity', 'eval', 'isFinite', 'isNaN', 'parseFloat', 'parseInt',
  'decodeURI', 'decodeURIComponent', 'encodeURI', 'encodeURIComponent', 'escape', 'unescape',
  'Object', 'Function', 'Boolean', 'Symbol', 'Error', 'AggregateError', 'EvalError', 'RangeError',
  'ReferenceError', 'SyntaxError', 'TypeError', 'URIError', 'SuppressedError', 'Number', 'BigInt', 'Math',
  'Date', 'String', 'RegExp', 'Array', 'Int8Array', 'Uint8Array', 'Uint8ClampedArray', 'Int16Array',
  'Uint16Array', 'Int32Array', 'Uint32Array', 'Float16Array', 'Float32Array', 'Float64Array',
  'BigInt64Array', 'BigUint64Array', 'Map', 'Set', 'WeakMap', 'WeakSet', 'WeakRef', 'FinalizationRegistry',
  'ArrayBuffer', 'SharedArrayBuffer', 'DataView', 'Atomics', 'JSON', 'Promise', 'Reflect', 'Proxy', 'Intl',
  'Iterator', 'AsyncIterator', 'DisposableStack', 'AsyncDisposableStack', 'WebAssembly', 'arguments',
  // web / worker / node common
  'console', 'performance', 'crypto', 'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval',
  'queueMicrotask', 'structuredClone', 'atob', 'btoa', 'TextEncoder', 'TextDecoder', 'TextEncoderStream',
  'TextDecoderStream', 'URL', 'URLSearchParams', 'Blob', 'File', 'FormData', 'fetch', 'Request', 'Response',
  'Headers', 'AbortController', 'AbortSignal', 'Event', 'EventTarget', 'CustomEvent', 'MessageChannel',
  'MessagePort', 'MessageEvent', 'BroadcastChannel', 'ReadableStream', 'WritableStream', 'TransformStream',
  'ByteLengthQueuingStrategy', 'CountQueuingStrategy', 'CompressionStream', 'DecompressionStream',
  'DOMException', 'navigator', 'self', 'location', 'origin', 'isSecureContext', 'reportError',
  'OffscreenCanvas', 'ImageData', 'ImageBitmap', 'createImageBitmap', 'indexedDB', 'caches', 'WebSocket',
  'Worker', 'FileReader', 'FileReaderSync', 'XMLHttpRequest', 'requestAnimationFrame',
  'cancelAnimationFrame', 'GPUBufferUsage', 'GPUMapMode', 'GPUShaderStage', 'GPUTextureUsage', 'CryptoKey',
  'SubtleCrypto', 'Crypto', 'Performance',
  // Deliberately absent: `name`, `close`, `postMessage`, `origin` exist on a browser worker's `self`, so a
  // captured `name` would silently read the worker's name; Node-only `process`, `Buffer`, `global`,
  // `setImmediate` do not exist in browser workers. These are reported (pass them in `extra` to allow).
  // tabgrid
  'importModule',
])

/** Reserved words and contextual keywords: never reported (conservative). */
const KEYWORDS = new Set([
  'break', 'case', 'catch', 'class', 'const', 'continue', 'debugger', 'default', 'delete', 'do', 'else',
  'enum', 'export', 'extends', 'false', 'finally', 'for', 'function', 'if', 'import', 'in', 'instanceof',
  'new', 'null', 'return', 'super', 'switch', 'this', 'throw', 'true', 'try', 'typeof', 'var', 'void',
  'while', 'with', 'yield', 'let', 'static', 'implements', 'interface', 'package', 'private', 'protected',
  'public', 'await', 'async', 'of', 'get', 'set', 'accessor', 'arguments', 'eval', 'target', 'meta',
])
/** keywords after which `{` starts an object literal (an expression is expected) */
const EXPR_KEYWORDS = new Set([
  'return', 'typeof', 'void', 'delete', 'in', 'of', 'instanceof', 'new', 'yield', 'await', 'throw', 'case',
  'extends',
])
/** keywords whose `( … ) {` is not a method definition */
const CONTROL = new Set(['if', 'for', 'while', 'switch', 'catch', 'with', 'function', 'return'])
const BINARY_KEYWORDS = new Set(['in', 'instanceof', 'of'])

class Analyzer {
  readonly declared = new Set<string>()
  /** names tested with `typeof` */
  readonly guarded = new Set<string>()
  readonly used: string[] = []
  private readonly usedSet = new Set<string>()

  constructor(
    private readonly toks: Tok[],
    private readonly m: Int32Array,
  ) {}

  /** index of the partner of the opener at i, clamped to e */
  private close(i: number, e: number): number {
    const j = this.m[i]!
    return j < 0 || j > e ? e : j
  }

  private use(name: string): void {
    if (KEYWORDS.has(name) || this.usedSet.has(name)) return
    this.usedSet.add(name)
    this.used.push(name)
  }

  private declare(name: string): void {
    this.declared.add(name)
  }

  private isOpener(t: Tok | undefined): boolean {
    return t !== undefined && t.t === 'p' && (t.v === '(' || t.v === '[' || t.v === '{' || t.v === '${')
  }

  /** first index in [s, e) at bracket depth 0 whose token satisfies pred, else e */
  private findTop(s: number, e: number, pred: (t: Tok, i: number) => boolean): number {
    for (let i = s; i < e; ) {
      const t = this.toks[i]!
      if (pred(t, i)) return i
      i = this.isOpener(t) ? this.close(i, e) + 1 : i + 1
    }
    return e
  }

  /** [start, end) ranges of [s, e) split at depth-0 commas */
  private split(s: number, e: number): Array<[number, number]> {
    const out: Array<[number, number]> = []
    let start = s
    for (let i = s; i < e; ) {
      const t = this.toks[i]!
      if (isP(t, ',')) {
        out.push([start, i])
        start = i + 1
        i++
      } else i = this.isOpener(t) ? this.close(i, e) + 1 : i + 1
    }
    out.push([start, e])
    return out
  }

  /** Statements or expressions in [s, e). exprStart: [s] is in expression position. */
  code(s: number, e: number, exprStart: boolean): void {
    const toks = this.toks
    let ternary = 0
    let ternaryColonAt = -1
    for (let i = s; i < e; ) {
      const t = toks[i]!
      const before = toks[i - 1]
      if (t.t === 'name') {
        const v = t.v
        if (isP(before, '.') || isP(before, '?.')) {
          i++
          continue
        }
        switch (v) {
          case 'var':
          case 'const':
            i = this.declarations(i + 1, e)
            continue
          case 'let': {
            const nx = toks[i + 1]
            if (nx && i + 1 < e && (nx.t === 'name' || isP(nx, '[') || isP(nx, '{'))) {
              i = this.declarations(i + 1, e)
              continue
            }
            break
          }
          case 'function':
            i = this.func(i, e)
            continue
          case 'class':
            i = this.cls(i, e)
            continue
          case 'catch':
            if (isP(toks[i + 1], '(') && i + 1 < e) {
              const c = this.close(i + 1, e)
              this.pattern(i + 2, c)
              i = c + 1
              continue
            }
            break
          case 'break':
          case 'continue': {
            const nx = toks[i + 1]
            i += nx && nx.t === 'name' && !nx.nl && !KEYWORDS.has(nx.v) ? 2 : 1
            continue
          }
          case 'typeof': {
            // `typeof x === 'undefined'` guards x: never report x (not even its other uses)
            const nx = toks[i + 1]
            if (nx && nx.t === 'name' && i + 1 < e) this.guarded.add(nx.v)
            i++
            continue
          }
        }
        const nx = toks[i + 1]
        if (isP(nx, '=>')) {
          this.declare(v) // x => …
        } else if (isP(nx, '(') && isP(toks[this.close(i + 1, e) + 1], '{') && !CONTROL.has(v)) {
          // method definition name: not a use (its parameters are handled at '(')
        } else if (isP(nx, ':') && ternary === 0 && !(before?.t === 'name' && before.v === 'case')) {
          // label or object key
        } else if (!KEYWORDS.has(v)) {
          this.use(v)
        }
        i++
        continue
      }
      if (t.t !== 'p') {
        i++
        continue
      }
      switch (t.v) {
        case '(': {
          const c = this.close(i, e)
          const after = toks[c + 1]
          if (isP(after, '=>')) {
            this.params(i + 1, c)
          } else if (isP(after, '{') && this.isMethodNameBefore(before)) {
            this.params(i + 1, c)
          } else {
            this.code(i + 1, c, true)
          }
          i = c + 1
          continue
        }
        case '[':
        case '${': {
          const c = this.close(i, e)
          this.code(i + 1, c, true)
          i = c + 1
          continue
        }
        case '{': {
          const c = this.close(i, e)
          const prev = i > s ? before : undefined
          const object = prev === undefined ? exprStart : this.objectAfter(prev, i - 1 === ternaryColonAt)
          if (object) this.object(i + 1, c)
          else this.code(i + 1, c, false)
          i = c + 1
          continue
        }
        case '?':
          ternary++
          break
        case ':':
          if (ternary > 0) {
            ternary--
            ternaryColonAt = i
          }
          break
      }
      i++
    }
  }

  private isMethodNameBefore(t: Tok | undefined): boolean {
    if (!t) return false
    if (t.t === 'name') return !CONTROL.has(t.v)
    return t.t === 'str' || t.t === 'num' || t.t === 'priv' || isP(t, ']')
  }

  /** does a `{` after token prev start an object literal? */
  private objectAfter(prev: Tok, afterTernaryColon: boolean): boolean {
    if (prev.t === 'name') return EXPR_KEYWORDS.has(prev.v)
    if (prev.t !== 'p') return false
    switch (prev.v) {
      case ':':
        return afterTernaryColon
      case ')':
      case ']':
      case '}':
      case ';':
      case '=>':
      case '++':
      case '--':
        return false
      default:
        return true // operators, '=', ',', '?', '...', …
    }
  }

  /** after `var`/`let`/`const`: declarators until the list ends; returns the next index */
  private declarations(i: number, e: number): number {
    const toks = this.toks
    for (;;) {
      const t = toks[i]
      if (!t || i >= e) return i
      let pe: number
      if (t.t === 'name') pe = i + 1
      else if (isP(t, '{') || isP(t, '[')) pe = this.close(i, e) + 1
      else return i
      this.pattern(i, Math.min(pe, e))
      i = pe
      if (i < e && isP(toks[i], '=')) {
        const xe = this.findTop(i + 1, e, (x) => isP(x, ',') || isP(x, ';'))
        this.code(i + 1, xe, true)
        i = xe
      }
      if (i < e && isP(toks[i], ',')) {
        i++
        continue
      }
      return i
    }
  }

  /** at `function`: name, parameters; returns the index of the body `{` (scanned as a block by code) */
  private func(i: number, e: number): number {
    const toks = this.toks
    let j = i + 1
    if (isP(toks[j], '*')) j++
    const nm = toks[j]
    if (nm && nm.t === 'name' && j < e) {
      this.declare(nm.v)
      j++
    }
    if (j < e && isP(toks[j], '(')) {
      const c = this.close(j, e)
      this.params(j + 1, c)
      return c + 1
    }
    return j
  }

  /** at `class`: name, heritage, body; returns the index after the body */
  private cls(i: number, e: number): number {
    const toks = this.toks
    let j = i + 1
    const nm = toks[j]
    if (nm && j < e && nm.t === 'name' && nm.v !== 'extends') {
      this.declare(nm.v)
      j++
    }
    if (j < e && toks[j]?.t === 'name' && toks[j]!.v === 'extends') {
      const k = this.findTop(j + 1, e, (x) => isP(x, '{'))
      this.code(j + 1, k, true)
      j = k
    }
    if (j < e && isP(toks[j], '{')) {
      const c = this.close(j, e)
      this.classBody(j + 1, c)
      return c + 1
    }
    return j
  }

  private classBody(s: number, e: number): void {
    const toks = this.toks
    const MODIFIERS = new Set(['static', 'get', 'set', 'async', 'accessor'])
    for (let i = s; i < e; ) {
      let t = toks[i]!
      if (isP(t, ';')) {
        i++
        continue
      }
      if (t.t === 'name' && t.v === 'static' && isP(toks[i + 1], '{')) {
        const c = this.close(i + 1, e)
        this.code(i + 2, c, false)
        i = c + 1
        continue
      }
      // modifiers
      for (;;) {
        t = toks[i]!
        const nx = toks[i + 1]
        if (i + 1 >= e || !nx) break
        const isMod =
          (t.t === 'name' && MODIFIERS.has(t.v) && (isKeyStart(nx) || isP(nx, '*')) && (!nx.nl || t.v === 'static')) ||
          isP(t, '*')
        if (!isMod) break
        i++
      }
      // key
      t = toks[i]!
      if (isP(t, '[')) {
        const c = this.close(i, e)
        this.code(i + 1, c, true)
        i = c + 1
      } else i++
      if (i >= e) break
      const nx = toks[i]!
      if (isP(nx, '(')) {
        const c = this.close(i, e)
        this.params(i + 1, c)
        i = c + 1
        if (i < e && isP(toks[i], '{')) {
          const b = this.close(i, e)
          this.code(i + 1, b, false)
          i = b + 1
        }
      } else if (isP(nx, '=')) {
        const xe = this.fieldEnd(i + 1, e)
        this.code(i + 1, xe, true)
        i = xe
      }
    }
  }

  /** end of a class field initializer starting at s: `;`, or a line break that starts a new member */
  private fieldEnd(s: number, e: number): number {
    const toks = this.toks
    for (let i = s; i < e; ) {
      const t = toks[i]!
      if (isP(t, ';')) return i
      if (i > s && t.nl) {
        const prev = toks[i - 1]!
        const startsMember =
          (t.t === 'name' && !BINARY_KEYWORDS.has(t.v)) || t.t === 'priv' || isP(t, '*')
        const prevEnds =
          prev.t !== 'p' || prev.v === ')' || prev.v === ']' || prev.v === '}' || prev.v === '++' || prev.v === '--'
        if (startsMember && prevEnds) return i
      }
      i = this.isOpener(t) ? this.close(i, e) + 1 : i + 1
    }
    return e
  }

  /** object literal contents */
  private object(s: number, e: number): void {
    const toks = this.toks
    for (const [ps, pe] of this.split(s, e)) {
      if (ps >= pe) continue
      const t = toks[ps]!
      if (isP(t, '...')) {
        this.code(ps + 1, pe, true)
        continue
      }
      const colon = this.findTop(ps, pe, (x) => isP(x, ':'))
      if (colon < pe) {
        if (isP(t, '[')) this.code(ps + 1, this.close(ps, pe), true)
        this.code(colon + 1, pe, true)
        continue
      }
      if (t.t === 'name' && pe === ps + 1) {
        this.use(t.v) // shorthand {a}
        continue
      }
      if (t.t === 'name' && isP(toks[ps + 1], '=')) {
        this.use(t.v) // {a = 1} in an assignment pattern
        this.code(ps + 2, pe, true)
        continue
      }
      const paren = this.findTop(ps, pe, (x) => isP(x, '('))
      if (paren < pe) {
        // method: [modifiers] key ( params ) { body }
        for (let k = ps; k < paren; k++) {
          if (isP(toks[k], '[')) {
            const c = this.close(k, paren)
            this.code(k + 1, c, true)
            k = c
          }
        }
        const c = this.close(paren, pe)
        this.params(paren + 1, c)
        if (c + 1 < pe && isP(toks[c + 1], '{')) this.code(c + 2, this.close(c + 1, pe), false)
        continue
      }
      this.code(ps, pe, true)
    }
  }

  /** comma-separated binding patterns (function parameters) */
  private params(s: number, e: number): void {
    for (const [ps, pe] of this.split(s, e)) this.pattern(ps, pe)
  }

  /** one binding pattern, possibly `...rest` or with `= default` */
  private pattern(s: number, e: number): void {
    const toks = this.toks
    if (s >= e) return
    if (isP(toks[s], '...')) s++
    const eq = this.findTop(s, e, (x) => isP(x, '='))
    if (eq < e) {
      this.code(eq + 1, e, true)
      e = eq
    }
    if (s >= e) return
    const t = toks[s]!
    if (t.t === 'name' && e === s + 1) {
      this.declare(t.v)
      return
    }
    if (isP(t, '{') && this.close(s, e) === e - 1) {
      for (const [ps, pe] of this.split(s + 1, e - 1)) {
        if (ps >= pe) continue
        if (isP(toks[ps], '...')) {
          this.pattern(ps + 1, pe)
          continue
        }
        const colon = this.findTop(ps, pe, (x) => isP(x, ':'))
        if (colon < pe) {
          if (isP(toks[ps], '[')) this.code(ps + 1, this.close(ps, pe), true)
          this.pattern(colon + 1, pe)
        } else this.pattern(ps, pe)
      }
      return
    }
    if (isP(t, '[') && this.close(s, e) === e - 1) {
      for (const [ps, pe] of this.split(s + 1, e - 1)) this.pattern(ps, pe)
      return
    }
    this.code(s, e, true) // e.g. a member expression as an assignment target
  }
}

/**
 * Best-effort static check at submit time: the identifiers a function's source uses that
 * are neither its parameters, declared inside it, nor well-known globals (plus `extra`).
 *
 * Deliberately conservative: declarations count for the whole function regardless of
 * block scope, keys/labels and names tested with `typeof` are never reported, and on any internal problem
 * the answer is []. False negatives are possible; false positives should not be.
 */
export function freeVariables(source: string, extra: Iterable<string> = []): string[] {
  try {
    const toks = tokenize(source)
    const a = new Analyzer(toks, matchBrackets(toks))
    a.code(0, toks.length, true)
    const skip = new Set(extra)
    return a.used.filter((n) => !a.declared.has(n) && !a.guarded.has(n) && !KNOWN_GLOBALS.has(n) && !skip.has(n))
  } catch {
    return []
  }
}
