// The guide's first rule: leave data on the cluster. Pulling a big array to the client
// moves all of it; sending a small function to where it lives moves a few bytes.
//   node examples/shape.mjs [side]
import { connect } from './_grid.mjs'

const side = Number(process.argv[2] ?? 2000)
const { client, close } = await connect()

const x = client.submit((n, m) => {
  const data = new Float64Array(n * m)
  for (let i = 0; i < data.length; i++) data[i] = Math.random()
  return { shape: [n, m], data }
}, side, side)

let t0 = performance.now()
const whole = await x.result()                                  // slow path: pulls every byte
const pull = performance.now() - t0
t0 = performance.now()
const shape = await client.submit(a => a.shape, x).result()    // fast path: runs where x lives
const remote = performance.now() - t0

console.log(`array: ${side}×${side} Float64 = ${(whole.data.byteLength / 1e6).toFixed(0)} MB`)
console.log(`pull the array, then read .shape:  ${whole.shape.join('×')} in ${pull.toFixed(1)} ms`)
console.log(`send a => a.shape to the data:     ${shape.join('×')} in ${remote.toFixed(1)} ms`)
console.log(`sending the function was ${(pull / remote).toFixed(0)}× faster`)
await close()
