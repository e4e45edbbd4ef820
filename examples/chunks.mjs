// The guide's second rule: use larger tasks. One task per item pays the scheduler's
// overhead per item; partitionAll batches items into chunks that each pay it once.
//   node examples/chunks.mjs [items] [chunk]
import { partitionAll } from 'tabgrid'
import { connect } from './_grid.mjs'

const n = Number(process.argv[2] ?? 100_000)
const size = Number(process.argv[3] ?? 10_000)
const { client, close } = await connect()
const seq = Array.from({ length: n }, (_, i) => i)

let t0 = performance.now()
const one = await client.gather(client.map(x => x * x, seq.slice(0, 10_000)))
const perItem = (performance.now() - t0) / 10_000

t0 = performance.now()
const chunks = client.map(chunk => chunk.map(x => x * x), [...partitionAll(size, seq)])
const out = (await client.gather(chunks)).flat()
const chunked = (performance.now() - t0) / n

console.log(`one task per item:         ${(perItem * 1000).toFixed(1)} µs per item (${one.length} items)`)
console.log(`chunks of ${size}:        ${(chunked * 1000).toFixed(2)} µs per item (${out.length} items, ${chunks.length} tasks)`)
console.log(`sum of squares: ${out.reduce((s, v) => s + v, 0)}`)
await close()
