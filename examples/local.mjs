// The guide's last rule: don't go distributed when one machine will do. Client.local()
// gives the same API over a worker_threads pool in this process, with no coordinator.
//   node examples/local.mjs
import { Client, partitionAll } from 'tabgrid'

const client = await Client.local({ workers: 2 })
const seq = Array.from({ length: 1_000_000 }, (_, i) => i)
const parts = client.map(chunk => chunk.reduce((s, x) => s + x, 0), [...partitionAll(250_000, seq)])
const total = client.submit((...xs) => xs.reduce((a, b) => a + b, 0), ...parts)
console.log(`sum of 0..999999 on ${(await client.workers())[0].slots} local threads: ${await total.result()}`)
await client.close()
