import { describe, expect, it, vi } from 'vitest'
import { FreeVariableError, FunctionCache, FunctionError } from './compile-function.js'
import { SerializationError } from './errors.js'
import { freeVariables } from './free-variables.js'
import { hashString } from './hash.js'
import { serializeFunction, toTaskFunction } from './serialize-function.js'

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

  it('when a CSP forbids eval here, the strict-mode compile check is done by the parser instead', () => {
    class Base { m() { return 1 } }
    class A extends Base {
      #x = 2
      arrowSuper() { return () => super.m() }
      arrowPrivate() { return () => this.#x }
    }
    // what `new Function` does in a page whose Content-Security-Policy has no 'unsafe-eval'
    const blocked = function () { throw new EvalError('Code generation from strings disallowed for this context') }
    blocked.prototype = Function.prototype
    vi.stubGlobal('Function', blocked)
    try {
      expect(refusal(new A().arrowSuper()).message).toMatch(/does not compile on its own in strict mode \('super' keyword outside a method/)
      expect(refusal(new A().arrowPrivate()).message).toMatch(/does not compile on its own in strict mode \(Private field '#x' must be declared/)
      expect(serializeFunction((x: number) => x + 1).source).toBe('(x) => x + 1')
    } finally {
      vi.unstubAllGlobals()
    }
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
  it('serializeFunction caches by identity: the source is read once', () => {
    const f = (x: number) => x + 1
    const a = serializeFunction(f)
    const toString = vi.spyOn(Function.prototype, 'toString')
    try {
      for (let i = 0; i < 1000; i++) expect(serializeFunction(f)).toBe(a)
      expect(toString).not.toHaveBeenCalled()
    } finally {
      toString.mockRestore()
    }
    expect(Object.isFrozen(a)).toBe(true)
  })

  it('closures with the same source share a hash', () => {
    const make = () => (x: number) => x * 2
    const a = serializeFunction(make())
    const b = serializeFunction(make())
    expect(a).not.toBe(b)
    expect(a.hash).toBe(b.hash)
  })
})

describe('toTaskFunction: what client.submit sends', () => {
  const refusedWith = (fn: unknown): SerializationError => {
    try {
      toTaskFunction(fn)
    } catch (e) {
      expect(e).toBeInstanceOf(SerializationError)
      return e as SerializationError
    }
    throw new Error('expected toTaskFunction to throw')
  }

  it('refuses what serializeFunction refuses, as a SerializationError with the same message and the cause', () => {
    const e = refusedWith(Math.random)
    expect(e.code).toBe('serialization')
    expect(e.message).toContain('wrap it: () => Math.random()')
    expect(e.cause).toBeInstanceOf(FunctionError)
  })

  it('refuses free variables, naming them in the order they appear', () => {
    const y = 5
    const scale = 2
    const offset = 1
    expect(refusedWith((x: number) => x + y).message).toBe(
      'task function uses `y`, which would be undefined on the worker: functions travel as source text, so ' +
        'pass it as an argument or define it inside the function',
    )
    const named = function affine(x: number) { return x * scale + offset }
    expect(refusedWith(named).message).toBe(
      'task function affine uses `scale` and `offset`, which would be undefined on the worker: functions travel as ' +
        'source text, so pass them as arguments or define them inside the function',
    )
  })

  it('accepts what the old tokenizer refused: a regex literal after `)`, `}` or a block', () => {
    const fns = [
      (s: string) => { if (s) /a+b/.test(s); return s },
      (s: string) => { while (!s) /c+d/.exec(s); return s },
      (s: string) => { {} /e+f/.test(s); return s },
    ]
    for (const f of fns) expect(toTaskFunction(f).source).toBe(Function.prototype.toString.call(f))
  })

  it('a closure over an outer variable: refused at submit time, explained on the worker', () => {
    const y = 5
    const tf = serializeFunction((x: number) => x + y)
    expect(freeVariables(tf.source)).toEqual(['y'])
    expect(() => toTaskFunction((x: number) => x + y)).toThrow(/uses `y`/)
    let caught: unknown
    try {
      new FunctionCache().compile(tf.hash, tf.source)(1)
    } catch (e) {
      caught = e
    }
    expect(caught).toBeInstanceOf(FreeVariableError)
    expect((caught as Error).message).toMatch(/uses "y"/)
  })
})
