import { describe, expect, it } from 'vitest'
import { freeVariables } from './free-variables.js'
import { serializeFunction } from './serialize-function.js'

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
