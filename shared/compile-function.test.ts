import { describe, expect, it } from 'vitest'
import { FreeVariableError, FunctionCache, FunctionError, functionBody } from './compile-function.js'

describe('FunctionCache', () => {
  it('compiles the source as a strict-mode Function body', () => {
    expect(functionBody('x => x')).toBe('"use strict";\nreturn (x => x\n)')
    const f = new FunctionCache().compile('s', 'function () { return this === undefined }')
    expect(f()).toBe(true)
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

  it('globals are visible as free variables', async () => {
    const modules: Record<string, unknown> = { stats: { mean: (xs: number[]) => xs.reduce((a, b) => a + b) / xs.length } }
    const importModule = async (name: string) => modules[name]
    const task = new Function('return async (xs) => (await importModule("stats")).mean(xs) * scale')()
    const fn = new FunctionCache({ importModule, scale: 10 }).compile('g', String(task))
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
})
