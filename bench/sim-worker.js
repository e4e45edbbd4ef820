// One process holding many simulated workers: each is a real socket.io connection that
// speaks the worker protocol (shared/protocol.ts) and answers at once — an assign with
// `finished`, a fetch with the value's bytes, a steal with a refusal (it never queues) —
// and heartbeats as a real worker does (SIM_BEAT_MS, default 10 s: it never holds a task
// between frames, so only the idle beat applies). Used by bench/sim.js; not a worker to run.
//   node bench/sim-worker.js URL COUNT SLOTS [TOKEN]
// IPC: 'pause' / 'resume' (status accepting false / true on every socket), 'stats', 'exit'.
import { io } from 'socket.io-client'
import { encodeFrame, decodeFrame } from '../dist/shared/wire.js'
import { frameParser } from '../dist/shared/socket-parser.js'
import { encodeValue } from '../dist/shared/codec.js'
import { sha256Hex } from '../dist/shared/digest.js'

const [url, countArg, slotsArg, token] = process.argv.slice(2)
const count = Number(countArg)
const slots = Number(slotsArg ?? 1)
const BEAT_MS = Number(process.env.SIM_BEAT_MS ?? 10_000)
const VALUE = encodeValue(1)
const VALUE_DIGEST = sha256Hex(VALUE)
let joined = 0
const stats = { finished: 0, framesIn: 0, framesOut: 0, steals: 0, fetches: 0, beats: 0 }
const sockets = []

function simulate(i, tries = 0) {
  const hello = { role: 'worker', kind: 'node', slots, name: `sim-${process.pid}-${i}`, ...(token ? { token } : {}) }
  const socket = io(url, { transports: ['websocket'], reconnection: false, auth: cb => cb(hello), parser: frameParser })
  let out = []
  let queued = false
  const send = msg => {
    out.push(msg)
    if (!queued) { queued = true; queueMicrotask(() => { queued = false; const m = out; out = []; stats.framesOut++; socket.emit('frame', encodeFrame(m)) }) }
  }
  socket.on('frame', (frame, ...attachments) => {
    stats.framesIn++
    for (const m of decodeFrame(frame, attachments)) {
      switch (m.type) {
        case 'welcome': joined++; if (joined === count) process.send?.({ joined }); break
        case 'assign': {
          stats.finished++
          const r = { type: 'finished', key: m.key, attempt: m.attempt, nbytes: VALUE.byteLength, ms: 0 }
          if (m.push) r.data = VALUE
          // a digest asked for must come (the coordinator distrusts a worker that leaves it out)
          if (m.digest) r.digest = VALUE_DIGEST
          send(r)
          break
        }
        case 'fetch': stats.fetches++; send({ type: 'data', id: m.id, key: m.key, data: VALUE }); break
        case 'steal': stats.steals++; send({ type: 'steal-response', key: m.key, attempt: m.attempt, ok: false }); break
        default: break
      }
    }
  })
  // on a loaded machine a handshake can time out: try again a few times, as a worker would
  socket.on('connect_error', err => {
    socket.close()
    if (tries >= 5) { console.error(`sim worker ${i}: ${err.message}`); process.exit(1) }
    setTimeout(() => { sockets[i] = simulate(i, tries + 1) }, 1000 * (tries + 1))
  })
  return { socket, send }
}

for (let i = 0; i < count; i++) {
  sockets.push(simulate(i))
  // open connections in waves so the coordinator's accept loop is not swamped
  if (i % 200 === 199) await new Promise(r => setTimeout(r, 50))
}
// heartbeats spread over the interval, as independent workers' are
const STEP = 100
const turns = Math.max(1, Math.round(BEAT_MS / STEP))
let turn = 0
const beat = setInterval(() => {
  const t = turn++ % turns
  for (let i = t; i < sockets.length; i += turns) {
    const s = sockets[i]
    if (s.socket.connected) { stats.beats++; s.send({ type: 'heartbeat', memory: 0, spilled: 0 }) }
  }
}, STEP)
process.on('message', m => {
  if (m === 'stats') process.send?.({ stats })
  if (m === 'pause' || m === 'resume') for (const s of sockets) s.send({ type: 'status', accepting: m === 'resume' })
  if (m === 'exit') { clearInterval(beat); for (const s of sockets) s.socket.close(); process.exit(0) }
})
