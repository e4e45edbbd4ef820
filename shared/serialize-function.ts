/**
 * Client side of task functions: they travel as source text.
 *
 * `serializeFunction(fn)` checks that `fn`'s source is a standalone expression (arrow,
 * `function` expression/declaration, async variants) that compiles on its own, and
 * returns `{ source, hash, name }`; what cannot travel (native, bound, method shorthand,
 * getter/setter, class, generator) is refused with a `FunctionError` saying how to fix
 * it. `toTaskFunction(fn)` is what `client.submit` calls: the same, plus the
 * free-variable check (free-variables.ts), as `SerializationError`s.
 *
 * The shape of a source is read with acorn, the parser the free-variable check uses.
 *
 * Plain ES2023: no Node or DOM types.
 */
import { parse, parseExpressionAt, type Options } from 'acorn'
import { FunctionError, functionBody, snippet } from './compile-function.js'
import { SerializationError } from './errors.js'
import { freeVariables } from './free-variables.js'
import { hashString } from './hash.js'

export interface TaskFunction {
  /** source text, an expression that evaluates to the function */
  source: string
  /** hashString(source) */
  hash: string
  /** the function's name or 'lambda', sanitized to [A-Za-z0-9_$.-], used to name task keys like `inc-3f2a…` */
  name: string
}

type Refusal = 'class' | 'generator' | 'method' | 'accessor' | 'unknown'
type Shape = { ok: true } | { ok: false; kind: Refusal; parseError?: string }

/**
 * Reads the shape; what makes a source not compile on its own (`super`, an enclosing
 * class's `#field`) is left to checkCompiles, which says so.
 */
const SHAPE_OPTIONS: Options = { ecmaVersion: 'latest', allowSuperOutsideMethod: true, checkPrivateFields: false }

const CLASS_OPEN = '(class {\n'

/** Classifies Function.prototype.toString output. */
function shapeOf(source: string): Shape {
  let parseError: string | undefined
  // an arrow, a function or a class: one expression spanning the whole source
  try {
    const e = parseExpressionAt(source, 0, SHAPE_OPTIONS)
    if (e.end === source.length) {
      switch (e.type) {
        case 'ArrowFunctionExpression':
          return { ok: true }
        case 'FunctionExpression':
          return e.generator ? { ok: false, kind: 'generator' } : { ok: true }
        case 'ClassExpression':
          return { ok: false, kind: 'class' }
      }
      return { ok: false, kind: 'unknown' }
    }
  } catch (err) {
    parseError = (err as Error).message
  }
  // a method, getter or setter (of an object or a class): one member of a class body
  try {
    const program = parse(CLASS_OPEN + source + '\n})', SHAPE_OPTIONS)
    const stmt = program.body[0]
    if (program.body.length === 1 && stmt?.type === 'ExpressionStatement' && stmt.expression.type === 'ClassExpression') {
      const members = stmt.expression.body.body
      const m = members[0]
      if (members.length === 1 && m?.type === 'MethodDefinition' && m.start === CLASS_OPEN.length) {
        if (m.kind === 'get' || m.kind === 'set') return { ok: false, kind: 'accessor' }
        return { ok: false, kind: m.value.generator ? 'generator' : 'method' }
      }
    }
  } catch {
    // not a member either
  }
  return parseError === undefined ? { ok: false, kind: 'unknown' } : { ok: false, kind: 'unknown', parseError }
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
    case 'unknown':
      throw new FunctionError(
        `cannot send function "${what}": its source text is not a function expression` +
          (shape.parseError ? ` (${shape.parseError})` : '') +
          `; write it as an arrow function or a \`function\` expression`,
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
 * private `#field` of its enclosing class). Cached by function identity. Free
 * variables are not its concern: see `toTaskFunction`.
 *
 * @example
 *   serializeFunction((x) => x + 1) // { source: '(x) => x + 1', hash: '…', name: 'lambda' }
 *   serializeFunction(Math.random)  // throws: … wrap it: () => Math.random()
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
    const shape = shapeOf(source)
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

function doesNotCompile(source: string, e: Error): FunctionError {
  return new FunctionError(
    `cannot send function "${snippet(source)}": its source does not compile on its own in strict mode ` +
      `(${e.message}); functions travel as source text, so they cannot use super, private #fields of an ` +
      `enclosing class, or sloppy-mode-only syntax`,
    { cause: e },
  )
}

/**
 * Syntax check of the Function body the worker compiles: by this engine when eval is
 * allowed here, else (a CSP without 'unsafe-eval') by acorn.
 */
function checkCompiles(source: string): void {
  try {
    new Function(functionBody(source))
    return
  } catch (e) {
    if (e instanceof SyntaxError) throw doesNotCompile(source, e)
  }
  try {
    parse(functionBody(source), { ecmaVersion: 'latest', sourceType: 'commonjs' })
  } catch (e) {
    if (e instanceof SyntaxError) throw doesNotCompile(source, e)
  }
}

/** free-variable verdicts by function hash (bounded: cleared when full) */
const freeVariableCache = new Map<string, string[]>()

function checkFreeVariables(tf: TaskFunction): void {
  let names = freeVariableCache.get(tf.hash)
  if (names === undefined) {
    names = freeVariables(tf.source)
    if (freeVariableCache.size >= 1000) freeVariableCache.clear()
    freeVariableCache.set(tf.hash, names)
  }
  if (names.length === 0) return
  const list = names.map(n => `\`${n}\``)
  const uses = list.length === 1 ? list[0]! : `${list.slice(0, -1).join(', ')} and ${list[list.length - 1]!}`
  const fn = tf.name === 'lambda' ? 'task function' : `task function ${tf.name}`
  throw new SerializationError(
    `${fn} uses ${uses}, which would be undefined on the worker: functions travel as source text, so ` +
      `pass ${list.length === 1 ? 'it as an argument' : 'them as arguments'} or define ${list.length === 1 ? 'it' : 'them'} inside the function`,
  )
}

/**
 * What `client.submit` and `client.map` send: `serializeFunction(fn)`, refused with a
 * `SerializationError` (the same message) when it cannot travel, or when it uses a free
 * variable (`x => x + y`: "task function uses `y`, which would be undefined on the
 * worker: … pass it as an argument or define it inside the function").
 */
export function toTaskFunction(fn: unknown): TaskFunction {
  let tf: TaskFunction
  try {
    tf = serializeFunction(fn)
  } catch (err) {
    if (err instanceof FunctionError) throw new SerializationError(err.message, { cause: err })
    throw err
  }
  checkFreeVariables(tf)
  return tf
}
