import { describe, expect, it } from 'vitest'
import { FreeVariableError, FunctionCache, FunctionError, freeVariables, serializeFunction } from './fn.js'
import { hashString } from './hash.js'

/** serialize on the "client", compile on the "worker" */
function roundTrip(fn: unknown, globals?: Record<string, unknown>): (...args: unknown[]) => unknown {
  const tf = serializeFunction(fn)
  return new FunctionCache(globals).compile(tf.hash, tf.source)
}

function refusal(fn: unknown): FunctionError {
  try {
    serializeFunction(fn)
  } catch (e) {
    expect(e).toBeInstanceOf(FunctionError)
    return e as FunctionError
  }
  throw new Error('expected serializeFunction to throw')
}

describe('serializeFunction refuses what cannot travel, and says how to fix it', () => {
  it('native functions', () => {
    const e = refusal(Math.random)
    expect(e.message).toContain('native')
    expect(e.message).toContain('wrap it: () => Math.random()')
    expect(refusal(Math.max).message).toContain('(...args) => Math.max(...args)')
    expect(refusal(parseInt).message).toContain('parseInt(...args)')
    expect(refusal(new Proxy(() => 1, {})).message).toContain('native')
  })

  it('bound functions', () => {
    const f = function (this: { k: number }, x: number) { return x + this.k }.bind({ k: 1 })
    const e = refusal(f)
    expect(e.message).toContain('bound')
    expect(e.message).toContain('arguments')
  })

  it('method shorthand', () => {
    const o = { inc(x: number) { return x + 1 }, async fetchIt() { return 1 }, ['a' + 'b']() { return 2 }, 'q s'() { return 3 } }
    const e = refusal(o.inc)
    expect(e.message).toContain('method shorthand')
    expect(e.message).toContain('arrow function')
    expect(e.message).toContain('function inc(')
    expect(refusal(o.fetchIt).message).toContain('method shorthand')
    expect(refusal(o.ab).message).toContain('method shorthand')
    expect(refusal(o['q s']).message).toContain('method shorthand')
    class K { m(x: number) { return x } static s() { return 1 } }
    expect(refusal(new K().m).message).toContain('method shorthand')
    expect(refusal(K.s).message).toContain('method shorthand')
  })

  it('a method named get/set/async is a method, not an accessor', () => {
    const o = { get(x: number) { return x }, set(x: number) { return x }, async(x: number) { return x } }
    for (const f of [o.get, o.set, o.async]) expect(refusal(f).message).toContain('method shorthand')
  })

  it('getters and setters', () => {
    const o = { get size() { return 1 }, set size(_v: number) {} }
    const d = Object.getOwnPropertyDescriptor(o, 'size')!
    for (const f of [d.get, d.set]) {
      const e = refusal(f)
      expect(e.message).toMatch(/getters and setters cannot be tasks/)
      expect(e.message).toContain('obj.size')
    }
  })

  it('classes', () => {
    const e = refusal(class Matrix {})
    expect(e.message).toContain('a class cannot be a task; pass a function that constructs it')
    expect(refusal(class {}).message).toContain('class')
  })

  it('generators', () => {
    const gens = [
      function* () { yield 1 },
      async function* () { yield 1 },
      { *g() { yield 1 } }.g,
      { async *g() { yield 1 } }.g,
    ]
    for (const g of gens) expect(refusal(g).message).toMatch(/generator functions cannot be tasks.*array/)
  })

  it('non-functions', () => {
    for (const v of [1, null, undefined, 'x => x', {}, [], Symbol('s'), 1n]) {
      expect(refusal(v).message).toMatch(/expected a function/)
    }
  })

  it('sources that do not compile on their own (super, private fields)', () => {
    class Base { m() { return 1 } }
    class A extends Base {
      #x = 2
      arrowSuper() { return () => super.m() }
      arrowPrivate() { return () => this.#x }
    }
    expect(refusal(new A().arrowSuper()).message).toMatch(/does not compile on its own/)
    expect(refusal(new A().arrowPrivate()).message).toMatch(/does not compile on its own/)
  })
})

describe('serializeFunction → FunctionCache.compile round trips', () => {
  it('arrows, async arrows, function expressions and declarations', async () => {
    function namedDecl(a: number, b: number) { return a * b }
    const cases: Array<[unknown, unknown[], unknown]> = [
      [(x: number) => x + 1, [41], 42],
      [(x: number, y = 10) => x + y, [1], 11],
      [({ a, b: [c, d = 3] }: { a: number; b: number[] }) => a + c! + d, [{ a: 1, b: [2] }], 6],
      [(...xs: number[]) => xs.reduce((s, v) => s + v, 0), [1, 2, 3], 6],
      [function (x: number) { return x * 2 }, [21], 42],
      [function named(n: number): number { return n <= 1 ? 1 : n * named(n - 1) }, [5], 120],
      [namedDecl, [6, 7], 42],
      [() => ({ a: [1, { b: 2 }] }), [], { a: [1, { b: 2 }] }],
      [(s: string) => `${s}-${s.length}`, ['ab'], 'ab-2'],
      [(m: Map<string, number>) => [...m.keys()], [new Map([['k', 1]])], ['k']],
    ]
    for (const [fn, args, want] of cases) expect(roundTrip(fn)(...args)).toEqual(want)

    const asyncCases: Array<[unknown, unknown[], unknown]> = [
      [async (x: number) => x + 1, [1], 2],
      [async function (x: number) { await null; return x * 3 }, [2], 6],
      [async ({ n }: { n: number }) => { await new Promise((r) => setTimeout(r, 1)); return n }, [{ n: 5 }], 5],
    ]
    for (const [fn, args, want] of asyncCases) await expect(roundTrip(fn)(...args)).resolves.toEqual(want)
  })

  it('names: function name or lambda, sanitized', () => {
    const inc = (x: number) => x + 1
    expect(serializeFunction(inc).name).toBe('inc')
    expect(serializeFunction(function weird$Name_1() {}).name).toBe('weird$Name_1')
    expect(serializeFunction([(x: number) => x][0]).name).toBe('lambda')
    const o = { 'has space': () => 1, 'a/b': () => 2 }
    expect(serializeFunction(o['has space']).name).toBe('has_space')
    expect(serializeFunction(o['a/b']).name).toBe('a_b')
    const anon = new Function('return 1')
    expect(serializeFunction(anon).name).toBe('lambda')
  })

  it('source + hash', () => {
    const f = (x: number) => x * x
    const tf = serializeFunction(f)
    expect(tf.source).toBe(Function.prototype.toString.call(f))
    expect(tf.hash).toBe(hashString(tf.source))
  })

  it('runs in strict mode', () => {
    const f = roundTrip(function (this: unknown) { return this === undefined })
    expect(f()).toBe(true)
  })

  it('globals are visible as free variables', async () => {
    const modules: Record<string, unknown> = { stats: { mean: (xs: number[]) => xs.reduce((a, b) => a + b) / xs.length } }
    const importModule = async (name: string) => modules[name]
    const task = new Function('return async (xs) => (await importModule("stats")).mean(xs) * scale')()
    const fn = roundTrip(task, { importModule, scale: 10 })
    await expect(fn([1, 2, 3])).resolves.toBe(20)
  })

  it('invalid global names are rejected', () => {
    expect(() => new FunctionCache({ 'not-ok': 1 })).toThrow(TypeError)
  })

  it('compile errors and non-functions are FunctionErrors', () => {
    const c = new FunctionCache()
    expect(() => c.compile('h1', 'x => {')).toThrow(FunctionError)
    expect(() => c.compile('h2', '42')).toThrow(/does not evaluate to a function/)
    expect(c.size).toBe(0)
  })
})

describe('caching', () => {
  it('serializeFunction caches by identity', () => {
    const f = (x: number) => x + 1
    const a = serializeFunction(f)
    expect(serializeFunction(f)).toBe(a)
    const t0 = performance.now()
    for (let i = 0; i < 10_000; i++) serializeFunction(f)
    const ms = performance.now() - t0
    expect(ms).toBeLessThan(50)
    expect(Object.isFrozen(a)).toBe(true)
  })

  it('closures with the same source share a hash', () => {
    const make = () => (x: number) => x * 2
    const a = serializeFunction(make())
    const b = serializeFunction(make())
    expect(a).not.toBe(b)
    expect(a.hash).toBe(b.hash)
  })

  it('FunctionCache compiles once per hash, and evicts least recently used', () => {
    const c = new FunctionCache({}, 2)
    const f1 = c.compile('a', 'x => x + 1')
    expect(c.compile('a', 'x => x + 1')).toBe(f1)
    expect(c.has('a')).toBe(true)
    c.compile('b', 'x => x + 2')
    c.compile('a', 'x => x + 1') // touch a: b is now the oldest
    c.compile('c', 'x => x + 3')
    expect(c.size).toBe(2)
    expect(c.has('a')).toBe(true)
    expect(c.has('b')).toBe(false)
    expect(c.has('c')).toBe(true)
    expect(c.compile('a', 'x => x + 1')).toBe(f1)
  })

  it('a cached hash with a different source is recompiled, not reused', () => {
    const c = new FunctionCache()
    const f1 = c.compile('same', 'x => x + 1')
    const f2 = c.compile('same', 'x => x + 2')
    expect(f2).not.toBe(f1)
    expect(f2(1)).toBe(3)
    expect(c.size).toBe(1)
  })

  it('default bound is about 1000', () => {
    const c = new FunctionCache()
    for (let i = 0; i < 1100; i++) c.compile(`h${i}`, `() => ${i}`)
    expect(c.size).toBe(1000)
    expect(c.has('h0')).toBe(false)
    expect(c.has('h1099')).toBe(true)
  })
})

describe('free variables at run time become FreeVariableError', () => {
  const expectFreeVar = (e: unknown, name: string): void => {
    expect(e).toBeInstanceOf(FreeVariableError)
    const fe = e as FreeVariableError
    expect(fe.variable).toBe(name)
    expect(fe.message).toBe(
      `task function uses "${name}", which is not defined on the worker: functions travel as source text, ` +
        `so pass ${name} as an argument or define it inside the function`,
    )
    expect(fe.cause).toBeInstanceOf(ReferenceError)
  }

  it('sync', () => {
    const fn = new FunctionCache().compile('s', '(x) => x + offset')
    let caught: unknown
    try {
      fn(1)
    } catch (e) {
      caught = e
    }
    expectFreeVar(caught, 'offset')
  })

  it('async: thrown after an await, and a returned rejection', async () => {
    const c = new FunctionCache()
    const a = c.compile('a', 'async (x) => { await null; return x * factor }')
    const err = await (a(2) as Promise<unknown>).catch((e: unknown) => e)
    expectFreeVar(err, 'factor')

    const b = c.compile('b', '(x) => Promise.resolve().then(() => helper(x))')
    const err2 = await (b(2) as Promise<unknown>).catch((e: unknown) => e)
    expectFreeVar(err2, 'helper')
  })

  it('assigning an undeclared name (strict mode) is reported too', () => {
    const fn = new FunctionCache().compile('w', '() => { total = 1; return total }')
    expect(() => fn()).toThrow(FreeVariableError)
  })

  it('a ReferenceError about a name the task does not mention is left alone', () => {
    const lib = () => {
      throw new ReferenceError('somethingElse is not defined')
    }
    const fn = new FunctionCache({ lib }).compile('l', '() => lib()')
    expect(() => fn()).toThrow(ReferenceError)
    expect(() => fn()).not.toThrow(FreeVariableError)
  })

  it('other errors pass through unchanged', async () => {
    const c = new FunctionCache()
    const boom = new TypeError('boom')
    const f = c.compile('t', '(e) => { throw e }')
    expect(() => f(boom)).toThrow(boom)
    const g = c.compile('r', 'async (e) => { throw e }')
    await expect(g(boom)).rejects.toBe(boom)
  })

  it('a real task with a closure over an outer variable', () => {
    const y = 5
    const tf = serializeFunction((x: number) => x + y)
    expect(freeVariables(tf.source)).toEqual(['y']) // warned at submit time...
    expect(() => new FunctionCache().compile(tf.hash, tf.source)(1)).toThrow(/uses "y"/) // ...and explained on the worker
  })
})

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
