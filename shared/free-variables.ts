/**
 * The static check behind "functions travel as source text": which names a task
 * function uses that the worker will not have.
 *
 * The source is parsed with acorn exactly as the worker compiles it (the Function body
 * of compile-function.ts, in strict mode) and its scopes are resolved with eslint-scope,
 * ESLint's scope analyzer (the one behind `no-undef`): parameters and destructuring
 * defaults, var/let/const/function/class with hoisting and block scope, catch
 * parameters, labels, property keys, class fields and private names, `arguments`,
 * `this`, `new.target`, `import()`. What is left unresolved, less the standard globals,
 * is free.
 *
 * Plain ES2023: no Node or DOM types (acorn, acorn-walk and eslint-scope are plain
 * JavaScript and run in browsers).
 */
import { parse, type Node as AcornNode } from 'acorn'
import { simple } from 'acorn-walk'
import { analyze } from 'eslint-scope'
import { functionBody } from './compile-function.js'

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
  // Deliberately absent: `name`, `close`, `postMessage` exist on a browser worker's `self`, so a
  // captured `name` would silently read the worker's name; Node-only `process`, `Buffer`, `global`,
  // `setImmediate` do not exist in browser workers. These are reported (pass them in `extra` to allow).
  // tabgrid
  'importModule',
])

/**
 * eslint-scope only asks whether this is at least ES2015 (block scopes, classes,
 * modules); the parser decides which syntax is accepted.
 */
const SCOPE_ECMA_VERSION = 2022

/**
 * The free variables of a task function's source: the names it uses that are neither
 * its parameters, declared inside it, nor standard globals (`KNOWN_GLOBALS`, plus
 * `extra`), in the order they first appear.
 *
 * A name tested with `typeof` anywhere in the function (`typeof window !== 'undefined'
 * ? window.innerWidth : 0`) is never reported: the function guards its use. Source that
 * does not parse gives [] (serializeFunction refuses it, and the worker would say why);
 * so does a failure of the analysis itself: the check may miss a name, never invent one.
 *
 * The client runs it once per function hash (serialize-function.ts caches the verdict):
 * tens of µs for a one-liner, about half a millisecond for lodash's debounce (3.3 KB),
 * on a busy 2-core machine (`node bench/free-variables.js`).
 *
 * @example
 *   freeVariables('(x) => x * scale + offset')          // ['scale', 'offset']
 *   freeVariables('s => { if (s) /a+b/.test(s); return s }') // []
 *   freeVariables('() => stats.mean(data)', ['stats'])  // ['data']
 */
export function freeVariables(source: string, extra: Iterable<string> = []): string[] {
  let program: AcornNode
  try {
    // commonjs: the top level is a function body, as in `new Function` (return, new.target, arguments)
    program = parse(functionBody(source), { ecmaVersion: 'latest', sourceType: 'commonjs', ranges: true })
  } catch {
    return []
  }
  try {
    const guarded = new Set<AcornNode>()
    simple(program, {
      UnaryExpression(node) {
        if (node.operator === 'typeof' && node.argument.type === 'Identifier') guarded.add(node.argument)
      },
    })
    // eslint-scope reads acorn's tree as the ESTree it is (ranges on, as it needs them)
    const scopes = analyze(program as unknown as Parameters<typeof analyze>[0], {
      ecmaVersion: SCOPE_ECMA_VERSION,
      sourceType: 'commonjs',
    })
    const skip = new Set(extra)
    const guardedNames = new Set<string>()
    const first = new Map<string, number>()
    for (const ref of scopes.globalScope!.through) {
      const id = ref.identifier
      if (guarded.has(id as unknown as AcornNode)) guardedNames.add(id.name)
      const at = id.range?.[0] ?? 0
      const seen = first.get(id.name)
      if (seen === undefined || at < seen) first.set(id.name, at)
    }
    return [...first]
      .filter(([n]) => !KNOWN_GLOBALS.has(n) && !skip.has(n) && !guardedNames.has(n))
      .sort((a, b) => a[1] - b[1])
      .map(([n]) => n)
  } catch {
    return []
  }
}
