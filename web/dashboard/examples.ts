/**
 * The code panel's examples: the seed's (shape vs pull, map vs chunks), a Monte Carlo π
 * spread over every tab, and 10,000 small tasks to watch. Each runs as written against
 * the page's ready `client`; `print` and `progress` are the panel's.
 */
export interface Example { id: string; title: string; code: string }

export const EXAMPLES: Example[] = [
  {
    id: 'shape',
    title: 'Shape vs pull',
    code: `// The guide's first rule: leave data on the grid.
// Make a 1000 × 1000 array on a worker, then read its shape two ways.
const x = client.submit((n, m) => {
  const data = new Float64Array(n * m)
  for (let i = 0; i < data.length; i++) data[i] = Math.random()
  return { shape: [n, m], data }
}, 1000, 1000)
await wait([x])

let t0 = performance.now()
const whole = await x.result()              // pulls all 8 MB to this page
const pull = performance.now() - t0

t0 = performance.now()
const shape = await client.submit(a => a.shape, x).result() // runs where x lives
const remote = performance.now() - t0

print(\`pull the array, then read .shape:  \${whole.shape.join('×')} in \${pull.toFixed(1)} ms\`)
print(\`send a => a.shape to the data:     \${shape.join('×')} in \${remote.toFixed(1)} ms\`)
print(\`the function moved a few bytes; the pull moved \${(whole.data.byteLength / 1e6).toFixed(0)} MB\`)
`,
  },
  {
    id: 'chunks',
    title: 'Map vs chunks',
    code: `// The guide's second rule: use larger tasks. One task per item pays the grid's
// overhead for every item; partitionAll batches items so each chunk pays it once.
// Watch the dashboard warn about the first half.
const items = Array.from({ length: 10_000 }, (_, i) => i)
const square = x => x * x                    // tasks are grouped by function name
const squareAll = batch => batch.map(x => x * x)

let t0 = performance.now()
const one = client.map(square, items)        // 10,000 tiny tasks
const squares = await client.gather(one)
const perItem = (performance.now() - t0) * 1000 / items.length

t0 = performance.now()
const batches = [...partitionAll(1000, items)]
const chunks = client.map(squareAll, batches)  // 10 tasks of 1,000 items
const chunked = (await client.gather(chunks)).flat()
const perChunked = (performance.now() - t0) * 1000 / items.length

const sum = xs => xs.reduce((s, v) => s + v, 0)
print(\`one task per item:  \${perItem.toFixed(1)} µs per item (\${one.length} tasks)\`)
print(\`chunks of 1,000:    \${perChunked.toFixed(2)} µs per item (\${chunks.length} tasks)\`)
print(\`sum of squares: \${sum(chunked)}, the same both ways: \${sum(squares) === sum(chunked)}\`)
`,
  },
  {
    id: 'pi',
    title: 'Monte Carlo π',
    code: `// Monte Carlo π, spread over every tab: each task throws darts at the unit square
// and counts those inside the quarter circle. Four tasks per slot of every worker.
const workers = await client.workers()
if (!workers.length) throw new Error('no workers yet: open the worker page in a few tabs')
const slots = workers.reduce((s, w) => s + w.slots, 0)
const darts = 2_000_000
const throwDarts = n => {
  let inside = 0
  for (let i = 0; i < n; i++) {
    const x = Math.random(), y = Math.random()
    if (x * x + y * y <= 1) inside++
  }
  return inside
}
const before = new Map(workers.map(w => [w.id, w.done]))
// pure: false, since each run differs (a pure task with the same arguments runs once)
const futures = Array.from({ length: slots * 4 }, () => client.with({ pure: false }).submit(throwDarts, darts))

let inside = 0, done = 0
for await (const f of asCompleted(futures)) {
  inside += await f.result()
  progress(++done, futures.length)
}
const pi = 4 * inside / (darts * futures.length)
const ran = (await client.workers()).filter(w => w.done > (before.get(w.id) ?? 0))
print(\`π ≈ \${pi.toFixed(5)} from \${(darts * futures.length / 1e6).toFixed(0)} million darts\`)
print(\`off by \${Math.abs(pi - Math.PI).toExponential(1)}; ran on \${ran.length} of \${workers.length} workers: \${ran.map(w => w.name).join(', ')}\`)
`,
  },
  {
    id: 'many',
    title: '10,000 tasks',
    code: `// 10,000 tasks of a few milliseconds each, counted as they finish: watch the
// task stream fill every slot, and the progress bar below.
const work = i => {
  const end = performance.now() + 2 + (i % 5)
  let x = 0
  while (performance.now() < end) x += Math.sqrt(i)
  return i % 2
}
const futures = client.map(work, Array.from({ length: 10_000 }, (_, i) => i))
let done = 0
for await (const f of asCompleted(futures)) progress(++done, futures.length)
const odd = (await client.gather(futures)).reduce((s, v) => s + v, 0)
print(\`\${done} tasks done, \${odd} of them odd\`)
`,
  },
]
