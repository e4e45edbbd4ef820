import { describe, expect, it } from 'vitest'
import { DROP, KEEP, forEachNested, mapNested } from './nested.js'

/** A leaf the walker must find wherever it is nested (stands in for a Future or a FutureRef). */
class Mark { constructor(readonly name: string) {} }
const m = (name: string): Mark => new Mark(name)
const toName = (x: object): unknown => x instanceof Mark ? `<${x.name}>` : KEEP
const names = (v: unknown): string[] => {
  const out: string[] = []
  forEachNested(v, x => x instanceof Mark, x => out.push((x as Mark).name))
  return out
}

describe('mapNested', () => {
  it('replaces marks in arrays, plain and null-prototype objects, Map keys and values, Sets and Error causes', () => {
    const bare = Object.assign(Object.create(null) as Record<string, unknown>, { n: m('f') })
    const v = [m('a'), { nested: [1, m('b')], more: new Map<unknown, unknown>([[m('c'), m('d')], ['k', 2]]) }, new Set([m('e'), 3]), bare, new Error('x', { cause: m('g') })]
    const out = mapNested(v, toName) as unknown[]
    expect(out[0]).toBe('<a>')
    expect(out[1]).toEqual({ nested: [1, '<b>'], more: new Map<unknown, unknown>([['<c>', '<d>'], ['k', 2]]) })
    expect([...(out[2] as Set<unknown>)]).toEqual(['<e>', 3])
    expect(Object.getPrototypeOf(out[3])).toBe(null)
    expect(out[3]).toEqual(Object.assign(Object.create(null) as object, { n: '<f>' }))
    const err = out[4] as Error
    expect(err).toBeInstanceOf(Error)
    expect(err.message).toBe('x')
    expect(err.cause).toBe('<g>')
    expect(err.stack).toBe((v[4] as Error).stack)
    // the input is left as it was
    expect((v[1] as { nested: unknown[] }).nested[1]).toBeInstanceOf(Mark)
    expect((v[4] as Error).cause).toBeInstanceOf(Mark)
  })

  it('copies only on write: containers without a mark come back as they are, with the same identity', () => {
    const untouched = { deep: [1, 2, { x: 'y' }], m: new Map([[1, 2]]), s: new Set([1]) }
    expect(mapNested(untouched, toName)).toBe(untouched)
    const mixed = { clean: untouched, dirty: [m('a')] }
    const out = mapNested(mixed, toName) as typeof mixed
    expect(out).not.toBe(mixed)
    expect(out.clean).toBe(untouched)
    expect(out.dirty).toEqual(['<a>'])
    expect(mapNested(5, toName)).toBe(5)
    expect(mapNested(null, toName)).toBe(null)
    expect(mapNested(m('top'), toName)).toBe('<top>')
  })

  it('never walks into typed arrays, ArrayBuffers, Dates or class instances', () => {
    const f64 = new Float64Array(1e6)
    const buf = new ArrayBuffer(8)
    const d = new Date(5)
    const inst = new (class Box { inner = m('hidden') })()
    const visited: object[] = []
    const v = { f64, buf, d, inst, list: [f64] }
    const out = mapNested(v, x => { visited.push(x); return toName(x) })
    expect(out).toBe(v)
    const expected = [v, f64, buf, d, inst, v.list, f64]
    expect(visited.length).toBe(expected.length)
    expected.forEach((x, i) => expect(visited[i]).toBe(x))
    expect(names(inst)).toEqual([])
  })

  it('walks a cycle once, and a shared container gets one copy', () => {
    const cyc: Record<string, unknown> = { r: m('cy') }
    cyc.self = cyc
    expect(names(cyc)).toEqual(['cy'])
    const out = mapNested(cyc, toName) as Record<string, unknown>
    expect(out.r).toBe('<cy>')
    // the cycle points back at the original (the codec refuses a cycle anyway, naming it)
    expect(out.self).toBe(cyc)
    const shared = [m('s')]
    const two = mapNested({ a: shared, b: shared }, toName) as { a: unknown; b: unknown }
    expect(two.a).toEqual(['<s>'])
    expect(two.b).toBe(two.a)
    const ring = new Map<unknown, unknown>()
    ring.set('me', ring)
    expect(mapNested(ring, toName)).toBe(ring)
  })

  it('DROP leaves the place out: array items, properties, Map entries (key or value) and Set members', () => {
    const drop = (x: object): unknown => x instanceof Mark ? (x.name === 'x' ? DROP : x.name) : KEEP
    expect(mapNested([1, m('x'), 2, m('k')], drop)).toEqual([1, 2, 'k'])
    expect(mapNested({ a: m('x'), b: 1 }, drop)).toEqual({ b: 1 })
    expect(mapNested(new Map<unknown, unknown>([[m('x'), 1], [2, m('x')], [3, m('k')]]), drop)).toEqual(new Map([[3, 'k']]))
    expect(mapNested(new Set([m('x'), 1]), drop)).toEqual(new Set([1]))
    expect('cause' in (mapNested(new Error('e', { cause: m('x') }), drop) as Error)).toBe(false)
    expect(mapNested(m('x'), drop)).toBe(DROP)
  })

  it('keeps sparse holes before the first change; a visitor that throws stops the walk', () => {
    // eslint-disable-next-line no-sparse-arrays
    const sparse = [, 1, m('a')]
    const out = mapNested(sparse, toName) as unknown[]
    expect(0 in out).toBe(false)
    expect(out).toEqual([undefined, 1, '<a>'])
    expect(() => mapNested([[m('bad')]], () => { throw new TypeError('refused') })).toThrow('refused')
  })

  it('leaves values nested deeper than 512 levels as they are, without a stack overflow', () => {
    let deep: unknown = [m('bottom')]
    for (let i = 0; i < 10_000; i++) deep = [deep]
    expect(mapNested(deep, toName)).toBe(deep)
  })
})
