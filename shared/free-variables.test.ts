import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { CAC, Command, cac } from 'cac'
import * as idb from 'idb-keyval'
import { describe, expect, it } from 'vitest'
import { freeVariables, KNOWN_GLOBALS } from './free-variables.js'
import { serializeFunction } from './serialize-function.js'

const sorted = (xs: Iterable<string>): string[] => [...xs].sort()

describe('freeVariables', () => {
  const sorted = (xs: string[]) => [...xs].sort()

  it('finds true positives', () => {
    const cases: Array<[string, string[]]> = [
      ['x => x + y', ['y']],
      ['n => n ? n * fact(n - 1) : 1', ['fact']],
      ['({a, b: [c, d = e], ...r}, f = a + g) => a + c + d + r + f', ['e', 'g']],
      ['(xs) => xs.map(x => x * factor + offset)', ['factor', 'offset']],
      ['async (url) => { const r = await fetch(url); const { data = [] } = await r.json(); return data.map(d => d * k) }', ['k']],
      ['(s) => `${prefix}:${s}`', ['prefix']],
      ['(s) => /a b/g.test(s) && s.replace(/[/]+x/, q)', ['q']],
      ['() => { try { risky() } catch ({ message }) { return message } }', ['risky']],
      ['(x) => { switch (x) { case A: return { a: 1, b }; default: return x ? { c: d } : { e } } }', ['A', 'b', 'd', 'e']],
      ['(n) => ({ f(x) { return x }, [k]: 1, "s": t, 2: u, ...v })', ['k', 't', 'u', 'v']],
      ['() => { class K extends Base { x = 1\n y = w; m() { return 1 } static { init() } } return new K() }', ['Base', 'w', 'init']],
      ['x => x ? a ? b : c : d', ['a', 'b', 'c', 'd']],
      ['(a) => a / 2 / b', ['b']],
      ['() => name', ['name']], // a browser worker's self.name would be a silent wrong answer
      ['() => process.env.HOME', ['process']],
      ['function (a) { return a + b }', ['b']],
    ]
    for (const [src, want] of cases) expect(sorted(freeVariables(src)), src).toEqual(sorted(want))
  })

  const clean = [
      // destructuring and defaults
      '({ id, tags = [], meta: { score = 0, ...restMeta } = {} }, [first, , third = first] = []) => ({ id, tags, score, restMeta, first, third })',
      '(a = 1, { b } = { b: a }, ...rest) => a + b + rest.length',
      // nested functions, closures over params, recursion
      'function outer(n) { function inner(k) { return k <= 0 ? 0 : k + inner(k - 1) } const twice = (m) => inner(m) * 2; return twice(n) }',
      '(xs) => xs.map((x, i) => (y) => x + y + i).map((f) => f(1))',
      // declarations of every kind, hoisting
      'function () { use(); function use() { return v } var v = 1; let w = 2, z = w; const [p, q] = [w, z]; return p + q }',
      // template strings with nested ${}
      'x => `a${`b${x}c`}d${{ k: 1 }.k}e${x ? `${x}` : ""}`',
      // object literals: keys, shorthand of declared names, methods, getters, computed
      '(a) => { const b = 2; return { a, b, c: a + b, "d-e": 1, 3: 4, [a]: b, m(x) { return x + a }, get g() { return b }, set g(v) {}, async n() {}, *gen() {} } }',
      // optional chaining and nullish
      '(o) => o?.a?.[o.k]?.(1) ?? o.fallback?.x ?? null',
      // class expressions inside
      '() => { const P = class Point { #x = 0; static origin = new Point(); constructor(x) { this.#x = x } get x() { return this.#x } static of(x) { return new Point(x) } toString() { return `P(${this.#x})` } }; return P.of(1) }',
      '() => { class A { f = () => this.g(); g() { return 1 } } class B extends A { constructor() { super(); this.h = 1 } } return new B() }',
      // try/catch/finally
      '(x) => { try { return JSON.parse(x) } catch (err) { return String(err) } finally { x = null } }',
      '(x) => { try { return x() } catch { return 0 } }',
      // loops and labels
      '(m) => { const out = []; outer: for (const [k, v] of m) { for (const key in v) { if (key === k) continue outer; if (!key) break outer; out.push(key) } } return out }',
      '(n) => { let s = 0; for (let i = 0, j = n; i < j; i++, j--) s += i * j; while (s > 100) s /= 2; do { s-- } while (s > 50); return s }',
      // regex literals and division
      '(s) => { const re = /[a-z]+\\/(\\d+)/gi; const m = re.exec(s); return m ? m[1] / 2 / 3 : s.split(/,\\s*/).length }',
      // comments containing identifiers
      '(a) => { // uses undefinedThing\n /* and otherThing() */ return a /* more: foo */ }',
      // globals
      '(n) => { const a = new Float64Array(n); for (let i = 0; i < n; i++) a[i] = Math.sqrt(i); return JSON.stringify(Array.from(a)) + Number.EPSILON + new Date(0).getTime() }',
      'async () => { const id = crypto.randomUUID(); await new Promise((r) => setTimeout(r, 1)); console.log(id); return structuredClone({ id, t: performance.now(), b: btoa("x") }) }',
      'async (name) => { const m = await importModule(name); return m.default ?? globalThis.undefinedButGuarded }',
      '() => [NaN, Infinity, undefined, BigInt(1), Symbol.iterator, new Map(), new Set(), new WeakMap(), Intl.NumberFormat, new Uint8Array(1), new Error("x"), new TypeError("y")]',
      // typeof guards
      '() => typeof window !== "undefined" ? window.innerWidth : 0',
      // async/await, for await, arrow params named like keywords
      'async (it) => { let n = 0; for await (const v of it) n += v; return n }',
      'async => async + 1',
      '(of, get, set) => of + get + set',
      // sequence, comma, ternaries with objects
      '(x) => x > 0 ? { sign: 1, x } : { sign: -1, x: -x }',
      '(x) => (x++, x--, x)',
      // switch with blocks
      '(k) => { switch (k) { case 1: { const y = k; return y } case "a": return k; default: break } }',
      // arrays of functions, spread
      '(...fs) => fs.reduce((acc, f) => (...a) => f(acc(...a)), (v) => v)',
      // generators defined inside (allowed inside, just not as the task itself)
      '(n) => { function* range(k) { for (let i = 0; i < k; i++) yield i } return [...range(n)] }',
      // multi-line method chains
      'x => x\n  .filter(Boolean)\n  .map(String)\n  .join(",")',
      // labels on blocks
      '() => { block: { break block } return 1 }',
      // new.target, this, arguments
      'function () { return [new.target, this, arguments.length] }',
      // object destructuring in for-of and catch
      '(rows) => { let t = 0; for (const { a, b: [c] } of rows) t += a + c; return t }',
      // assignment destructuring of declared names
      '(a, b) => { [a, b] = [b, a]; ({ a, b } = { a: b, b: a }); return a - b }',
      // numbers of every shape
      '(x) => x * 1e-3 + 0x1f + 0b1 + 0o7 + 1_000 + .5 + 5. + 10n.toString().length',
  ]

  it('has no false positives on realistic functions', () => {
    for (const src of clean) expect(freeVariables(src), src).toEqual([])
  })

  it('the clean corpus is valid strict-mode JavaScript (so the check above means something)', () => {
    for (const src of clean) expect(() => new Function('"use strict"; return (' + src + '\n)'), src).not.toThrow()
  })

  it('accepts extra known names', () => {
    expect(freeVariables('() => stats.mean(data)', ['stats'])).toEqual(['data'])
  })

  it('works on the source of real functions', () => {
    const scale = 3
    const f = (xs: number[], { offset = 0 } = {}) => xs.map((x) => x * scale + offset)
    expect(freeVariables(serializeFunction(f).source)).toEqual(['scale'])
    const g = async function fetchAll(urls: string[]) {
      const out: unknown[] = []
      for (const u of urls) out.push(await (await fetch(u)).json())
      return out
    }
    expect(freeVariables(serializeFunction(g).source)).toEqual([])
  })

  it('never throws on garbage', () => {
    for (const s of ['', '(', ')', '{{{', '`${', '/', '/*', '"', 'x => `${a', '}}}) =>', 'class {', 'function (', '...']) {
      expect(Array.isArray(freeVariables(s))).toBe(true)
    }
  })
})

describe('regex literals are not divisions (the hand-written tokenizer got these wrong)', () => {
  const cases: Array<[string, string[]]> = [
    ['s => { if (s) /a+b/.test(s); return s }', []],
    ['s => { if (s) /a+b/.test(s); return s + t }', ['t']],
    ['s => { while (!s) /c+d/.exec(s); return s }', []],
    ['s => { for (;;) /e|f/g.lastIndex = 0 }', []],
    ['s => { {} /a+b/.test(s); return s }', []],
    ['s => { function f() {} /g+h/.test(s); return f }', []],
    ['s => { if (s) { s = 1 } /i+j/.test(s) }', []],
    ['s => { do /k/.test(s); while (/l/.test(s)) }', []],
    ['s => { label: /m+n/.test(s) }', []],
    ['s => `${s}` + /o+p/.source', []],
    ['s => [s] + /q/.source + (s) / r', ['r']],
    ['(a) => (a) / b / 2', ['b']],
    ['(a) => a++ / b / c', ['b', 'c']],
    ['(a) => a / 2 /* /x+y/ */ / z', ['z']],
  ]
  for (const [src, want] of cases) {
    it(src, () => expect(freeVariables(src)).toEqual(want))
  }
})

describe('scopes are resolved as the engine resolves them', () => {
  const cases: Array<[string, string, string[]]> = [
    ['parameters, destructuring with defaults, rest', '({ a = b, c: [d = e] = f, ...g }, h = a + i, ...[j]) => a + d + g + h + j', ['b', 'e', 'f', 'i']],
    ['a default sees earlier parameters, not the body', 'function (a = b, c = a) { var b; return c }', ['b']],
    ['var is hoisted out of blocks', '() => { x = 1; { var x } return x }', []],
    ['function declarations are hoisted', '() => { return f(); function f() { return 1 } }', []],
    ['let and const are block-scoped', '() => { { let a = 1; const b = 2 } return a + b }', ['a', 'b']],
    ['a for-of const is scoped to the loop', '() => { for (const x of y) {} return x }', ['x', 'y']],
    ['a block function is block-scoped in strict mode', '() => { { function f() {} } return f }', ['f']],
    ['class declarations are block-scoped', '() => { { class K {} } return K }', ['K']],
    ['a class expression name is visible only inside it', '() => { const P = class Q { m() { return Q } }; return [P, Q] }', ['Q']],
    ['a function expression name is visible inside it', 'function fact(n) { return n < 2 ? 1 : n * fact(n - 1) }', []],
    ['catch parameters, destructured', '() => { try {} catch ({ message, stack: [s] = d }) { return message + s } return message }', ['d', 'message']],
    ['labels are not variables', '() => { x: for (;;) { y: { break y } continue x } return x }', ['x']],
    ['member access and keys', '(o) => o.a + o?.b + o[c] + ({ d: 1, [e]: 2, "f": g, h() {} }).d', ['c', 'e', 'g']],
    ['shorthand properties use the name', '() => ({ a, b })', ['a', 'b']],
    ['shorthand in a pattern declares it', '({ a } = {}) => ({ a })', []],
    ['assignment patterns write free names', '() => { ({ a, b: [c] } = {}); [d = e] = [] }', ['a', 'c', 'd', 'e']],
    ['template literals and tags', 's => tag`x${s}${t}${`${u}`}`', ['tag', 't', 'u']],
    ['async, await, for await', 'async () => { for await (const v of src) await v; return await p }', ['p', 'src']],
    ['generators inside the function', '() => { function* g() { yield x; yield* y } return [...g()] }', ['x', 'y']],
    ['arguments, this and new.target', 'function () { return [arguments[0], this, new.target] }', []],
    ['arguments in a top-level arrow is a known name', '() => arguments.length', []],
    ['import() expressions', 'async () => [(await import(spec)).default, await import("./fixed.js")]', ['spec']],
    ['optional chaining and calls', '(o) => o?.a?.[k]?.(v) ?? o?.b', ['k', 'v']],
    ['class fields, private names, static blocks', '() => class { #x = a; y = this.#x + b; static z = c; [d] = 1; #m() { return this.#x } static { e } }', ['a', 'b', 'c', 'd', 'e']],
    ['getters and setters', '() => ({ get v() { return w }, set v(n) { x = n } })', ['w', 'x']],
    ['computed keys', '() => ({ [k]: 1, [`${j}`]() {} })', ['j', 'k']],
    ['extends is evaluated outside the class', '() => class A extends B { m() { return super.m() + A } }', ['B']],
    ['switch cases share one block scope', '(k) => { switch (k) { case 1: let z = 1; break; default: return z } }', []],
    ['case tests are uses', '(k) => { switch (k) { case A: return 1; case B.c: return 2 } }', ['A', 'B']],
    ['an undeclared assignment is free (strict mode would throw)', '() => { total = 1 }', ['total']],
    ['typeof guards the name everywhere in the function', '() => typeof window === "undefined" ? 0 : window.innerWidth', []],
    ['standard globals are allowed, others are not', '() => [Math.PI, JSON, setTimeout, Uint8Array, process, Buffer, name]', ['process', 'Buffer', 'name']],
    ['names in strings and comments are not uses', '() => "a b" + /* c */ \'d\' // e\n', []],
  ]
  for (const [what, src, want] of cases) {
    it(what, () => {
      expect(() => new Function('"use strict"; return (' + src + '\n)'), 'valid strict-mode source').not.toThrow()
      expect(sorted(freeVariables(src))).toEqual(sorted(want))
    })
  }

  it('reports each name once, in the order it first appears', () => {
    expect(freeVariables('(x) => z + y + z + x + w(y)')).toEqual(['z', 'y', 'w'])
  })
})

/**
 * Real-world functions, as Function.prototype.toString gives them (which is what
 * serializeFunction sends): lodash 4 modules (each file one function whose free variables
 * are its `require`s and module-level constants), idb-keyval, and cac's classes (ES2022
 * class fields, getters, destructuring, spread). The expected sets are listed by hand
 * from reading each source, leaving out standard globals (Error, RegExp, TypeError,
 * setTimeout, Uint8Array, indexedDB, EventTarget, CustomEvent, console, …).
 */
describe('a corpus of real-world functions', () => {
  const require = createRequire(import.meta.url)
  const lodash = (module: string): { source: string; file: string } => ({
    source: String(require(`lodash/${module}.js`)),
    file: readFileSync(require.resolve(`lodash/${module}.js`), 'utf8'),
  })
  const idbFile = readFileSync(require.resolve('idb-keyval'), 'utf8')
  const cacFile = readFileSync(require.resolve('cac'), 'utf8')

  const corpus: Array<[string, { source: string; file: string }, string[]]> = [
    ['lodash debounce (nested functions, closures, hoisting)', lodash('debounce'),
      ['FUNC_ERROR_TEXT', 'isObject', 'nativeMax', 'nativeMin', 'now', 'toNumber']],
    ['lodash template (regex literals after `(`, strings of code)', lodash('template'),
      ['INVALID_TEMPL_IMPORTS_ERROR_TEXT', 'INVALID_TEMPL_VAR_ERROR_TEXT', 'arrayEach', 'assignWith', 'attempt',
        'baseValues', 'customDefaultsAssignIn', 'escapeStringChar', 'hasOwnProperty', 'isError', 'isIterateeCall',
        'keys', 'reEmptyStringLeading', 'reEmptyStringMiddle', 'reEmptyStringTrailing', 'reEsTemplate',
        'reForbiddenIdentifierChars', 'reInterpolate', 'reNoMatch', 'reUnescapedString', 'templateSettings', 'toString']],
    ['lodash toNumber (typeof, ternaries)', lodash('toNumber'),
      ['NAN', 'baseTrim', 'freeParseInt', 'isObject', 'isSymbol', 'reIsBadHex', 'reIsBinary', 'reIsOctal']],
    ['lodash words', lodash('words'), ['asciiWords', 'hasUnicodeWord', 'toString', 'unicodeWords']],
    ['lodash truncate (var in blocks, assignment in while)', lodash('truncate'),
      ['DEFAULT_TRUNC_LENGTH', 'DEFAULT_TRUNC_OMISSION', 'baseToString', 'castSlice', 'hasUnicode', 'isObject',
        'isRegExp', 'reFlags', 'stringSize', 'stringToArray', 'toInteger', 'toString']],
    ['lodash chunk', lodash('chunk'), ['baseSlice', 'isIterateeCall', 'nativeCeil', 'nativeMax', 'toInteger']],
    ['lodash memoize (its own name, arguments, this)', lodash('memoize'), ['FUNC_ERROR_TEXT', 'MapCache']],
    ['lodash isKey (`in`)', lodash('_isKey'), ['isArray', 'isSymbol', 'reIsDeepProp', 'reIsPlainProp']],
    ['lodash baseIsNative', lodash('_baseIsNative'), ['isFunction', 'isMasked', 'isObject', 'reIsHostCtor', 'reIsNative', 'toSource']],
    ['lodash parseInt (shadows a global)', lodash('parseInt'), ['nativeParseInt', 'reTrimStart', 'toString']],
    ['lodash insertWrapDetails', lodash('_insertWrapDetails'), ['reWrapComment']],
    ['lodash baseClone (30 helpers, callbacks)', lodash('_baseClone'),
      ['CLONE_DEEP_FLAG', 'CLONE_FLAT_FLAG', 'CLONE_SYMBOLS_FLAG', 'Stack', 'argsTag', 'arrayEach', 'assignValue',
        'baseAssign', 'baseAssignIn', 'cloneBuffer', 'cloneableTags', 'copyArray', 'copySymbols', 'copySymbolsIn',
        'funcTag', 'genTag', 'getAllKeys', 'getAllKeysIn', 'getTag', 'initCloneArray', 'initCloneByTag',
        'initCloneObject', 'isArray', 'isBuffer', 'isMap', 'isObject', 'isSet', 'keys', 'keysIn', 'objectTag']],
    ['lodash baseUniq (a label, continue outer)', lodash('_baseUniq'),
      ['LARGE_ARRAY_SIZE', 'SetCache', 'arrayIncludes', 'arrayIncludesWith', 'cacheHas', 'createSet', 'setToArray']],
    ['lodash equalByTag (switch with fall-through and var in cases)', lodash('_equalByTag'),
      ['COMPARE_PARTIAL_FLAG', 'COMPARE_UNORDERED_FLAG', 'arrayBufferTag', 'boolTag', 'dataViewTag', 'dateTag', 'eq',
        'equalArrays', 'errorTag', 'mapTag', 'mapToArray', 'numberTag', 'regexpTag', 'setTag', 'setToArray',
        'stringTag', 'symbolTag', 'symbolValueOf']],
    ['lodash getRawTag (try/catch, delete)', lodash('_getRawTag'), ['hasOwnProperty', 'nativeObjectToString', 'symToStringTag']],
    ['lodash createWrap (bit flags)', lodash('_createWrap'),
      ['FUNC_ERROR_TEXT', 'WRAP_BIND_FLAG', 'WRAP_BIND_KEY_FLAG', 'WRAP_CURRY_FLAG', 'WRAP_CURRY_RIGHT_FLAG',
        'WRAP_PARTIAL_FLAG', 'WRAP_PARTIAL_RIGHT_FLAG', 'baseSetData', 'createBind', 'createCurry', 'createHybrid',
        'createPartial', 'getData', 'mergeData', 'nativeMax', 'setData', 'setWrapToString', 'toInteger']],
    ['idb-keyval createStore (arrows, let, closures)', { source: String(idb.createStore), file: idbFile }, ['promisifyRequest']],
    ['idb-keyval update (default parameter, try/catch)', { source: String(idb.update), file: idbFile }, ['defaultGetStore', 'promisifyRequest']],
    ['idb-keyval entries (destructured params shadow module functions)', { source: String(idb.entries), file: idbFile },
      ['defaultGetStore', 'eachCursor', 'promisifyRequest']],
    ['idb-keyval keys', { source: String(idb.keys), file: idbFile }, ['defaultGetStore', 'eachCursor', 'promisifyRequest']],
    ['cac Command (class fields, getters, destructuring renames, nested templates)', { source: String(Command), file: cacFile },
      ['CACError', 'GlobalCommand', 'Option', 'findAllBrackets', 'findLongest', 'padRight', 'removeBrackets', 'runtimeInfo']],
    ['cac CAC (extends, defaults in destructuring, spread, computed keys)', { source: String(CAC), file: cacFile },
      ['Command', 'GlobalCommand', 'camelcaseOptionName', 'getFileName', 'getMriOptions', 'getRuntimeProcessArgs',
        'lib_default', 'setByType', 'setDotProp']],
    ['cac (an arrow with a default)', { source: String(cac), file: cacFile }, ['CAC']],
  ]

  for (const [what, { source, file }, want] of corpus) {
    it(what, () => {
      expect(sorted(freeVariables(source))).toEqual(sorted(want))
      // the hand-made list is right about the module too: each name is declared at its top level
      for (const name of want) {
        expect(file, `${name} is declared in the module`).toMatch(new RegExp(`(^|\\n)((var|let|const|function)\\s+|\\s+)${name}\\s*(=|\\()`))
        expect(KNOWN_GLOBALS.has(name), `${name} is not a standard global`).toBe(false)
      }
    })
  }
})
