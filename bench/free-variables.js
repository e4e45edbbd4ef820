// `node bench/free-variables.js` (after `npm run build`): what the submit-time checks on a
// task function cost. They run once per distinct function source (results are cached by
// hash), so this is the price of the first submit of each function, not of each task.
//
//   freeVariables(source)   acorn parse + eslint-scope analysis
//   toTaskFunction(fn)      everything client.submit does to a new function: source,
//                           shape parse, strict-mode compile check, hash, freeVariables
import { createRequire } from 'node:module'
import { freeVariables } from '../dist/shared/free-variables.js'
import { toTaskFunction } from '../dist/shared/serialize-function.js'

const require = createRequire(import.meta.url)
const lodash = name => String(require(`lodash/${name}.js`))

const sources = [
  ['one-liner', String((x, y) => x * y + 1)],
  ['10 lines', String(async function fetchAll(urls, { retries = 2 } = {}) {
    const out = []
    for (const u of urls) {
      for (let i = 0; i <= retries; i++) {
        try { out.push(await (await fetch(u)).json()); break } catch (e) { if (i === retries) throw e }
      }
    }
    return out.map((v, i) => ({ v, i, s: `${i}:${JSON.stringify(v)}` }))
  })],
  ['lodash debounce', lodash('debounce')],
  ['lodash template', lodash('template')],
]

/** µs per call: the median of 7 rounds of `count` calls each, after a warm-up round (the machine may be busy) */
function perCall(fn, count) {
  const rounds = []
  let i = 0
  for (let r = 0; r < 8; r++) {
    const t0 = performance.now()
    for (let k = 0; k < count; k++) fn(i++)
    if (r > 0) rounds.push(((performance.now() - t0) * 1000) / count)
  }
  return rounds.sort((a, b) => a - b)[3]
}

const count = src => Math.max(20, Math.round(200_000 / (src.length + 100)))

console.log('freeVariables, per call (µs):')
for (const [name, src] of sources) {
  console.log(`  ${name.padEnd(16)} ${String(src.length).padStart(6)} chars  ${perCall(() => freeVariables(src), count(src)).toFixed(1).padStart(8)} µs`)
}

console.log('toTaskFunction on a function never seen before (µs):')
for (const [name, src] of sources) {
  // a fresh source for every call (a comment in the parameter list), so no cache answers
  const n = count(src)
  const fns = Array.from({ length: 8 * n }, (_, i) => new Function(`return (${src.replace('(', `(/* ${i} */`)}\n)`)())
  const us = perCall(i => {
    try { toTaskFunction(fns[i]) } catch { /* lodash's functions use free variables: refused, as they should be */ }
  }, n)
  console.log(`  ${name.padEnd(16)} ${String(src.length).padStart(6)} chars  ${us.toFixed(1).padStart(8)} µs`)
}
