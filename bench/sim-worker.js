// One process holding many simulated workers: each is a real socket.io connection that
// speaks the worker protocol (shared/protocol.ts) and answers at once — an assign with
// `finished`, a fetch with the value's bytes, a steal with a refusal (it never queues) —
// and heartbeats every 2 s like a real worker. Used by bench/sim.js; not a worker to run.
//   node bench/sim-worker.js URL COUNT SLOTS [TOKEN]
import { io } from 'socket.io-client'
import { encodeFrame, decodeFrame } from '../dist/shared/wire.js'
import { frameParser } from '../dist/shared/socket-parser.js'
import { encodeValue } from '../dist/shared/codec.js'

const [url, countArg, slotsArg, token] = process.argv.slice(2)
const count = Number(countArg)
const slots = Number(slotsArg ?? 1)
const VALUE = encodeValue(1)
let joined = 0
let finished = 0
const sockets = []

function simulate(i) {
  const hello = { role: 'worker', kind: 'node', slots, name: `sim-${process.pid}-${i}`, ...(token ? { token } : {}) }
  const socket = io(url, { transports: ['websocket'], reconnection: false, auth: cb => cb(hello), parser: frameParser })
  let out = []
  let queued = false
  const send = msg => {
    out.push(msg)
    if (!queued) { queued = true; queueMicrotask(() => { queued = false; const m = out; out = []; socket.emit('frame', encodeFrame(m)) }) }
  }
  socket.on('frame', (frame, ...attachments) => {
    for (const m of decodeFrame(frame, attachments)) {
      switch (m.type) {
        case 'welcome': joined++; if (joined === count) process.send?.({ joined }); break
        case 'assign': {
          finished++
          const r = { type: 'finished', key: m.key, attempt: m.attempt, nbytes: VALUE.byteLength, ms: 0 }
          if (m.push) r.data = VALUE
          send(r)
          break
        }
        case 'fetch': send({ type: 'data', id: m.id, key: m.key, data: VALUE }); break
        case 'steal': send({ type: 'steal-response', key: m.key, attempt: m.attempt, ok: false }); break
        default: break
      }
    }
  })
  socket.on('connect_error', err => { console.error(`sim worker ${i}: ${err.message}`); process.exit(1) })
  sockets.push({ socket, send })
}

for (let i = 0; i < count; i++) {
  simulate(i)
  // open connections in waves so the coordinator's accept loop is not swamped
  if (i % 200 === 199) await new Promise(r => setTimeout(r, 50))
}
const beat = setInterval(() => { for (const s of sockets) if (s.socket.connected) s.send({ type: 'heartbeat', memory: 0, spilled: 0 }) }, 2_000)
process.on('message', m => {
  if (m === 'stats') process.send?.({ finished })
  if (m === 'exit') { clearInterval(beat); for (const s of sockets) s.socket.close(); process.exit(0) }
})
