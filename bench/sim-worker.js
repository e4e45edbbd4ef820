// One process holding many simulated workers: each is a real socket.io connection that
// speaks the worker protocol (shared/protocol.ts) and answers at once — an assign with
// `finished` (with the value, as tiny results ride), a fetch with the value's bytes, a steal with a refusal (it never queues) —
// and heartbeats as a real worker does (SIM_BEAT_MS, default 10 s: it never holds a task
// between frames, so only the idle beat applies). Each speaks straight on a WebSocket
// (simulateWs), or through socket.io-client with SIM_CLIENT=socket.io. Used by
// bench/sim.js; not a worker to run.
//   node bench/sim-worker.js URL COUNT SLOTS [TOKEN]
// IPC: 'pause' / 'resume' (status accepting false / true on every socket), 'stats', 'exit'.
import { io } from 'socket.io-client'
import WebSocket from 'ws'
import { encodeFrame, decodeFrame } from '../dist/shared/wire.js'
import { frameParser } from '../dist/shared/socket-parser.js'
import { encodeValue } from '../dist/shared/codec.js'
import { sha256Hex } from '../dist/shared/digest.js'
import { INLINE_LIMIT } from '../dist/shared/executor.js'

const [url, countArg, slotsArg, token] = process.argv.slice(2)
const count = Number(countArg)
const slots = Number(slotsArg ?? 1)
const BEAT_MS = Number(process.env.SIM_BEAT_MS ?? 10_000)
/** SIM_DEBUG=1: count messages by type in the stats */
const DEBUG = process.env.SIM_DEBUG === '1'
const VALUE = encodeValue(1)
const VALUE_DIGEST = sha256Hex(VALUE)
let joined = 0
const stats = { finished: 0, framesIn: 0, framesOut: 0, steals: 0, fetches: 0, beats: 0, assignFrames: 0, fetchFrames: 0 }
const sockets = []

/** What a simulated worker does with a frame's messages: answer at once. */
function answer(msgs, send) {
  if (DEBUG) for (const m of msgs) stats[`in:${m.type}`] = (stats[`in:${m.type}`] ?? 0) + 1
  if (msgs.some(m => m.type === 'assign')) stats.assignFrames++
  if (msgs.some(m => m.type === 'fetch')) stats.fetchFrames++
  for (const m of msgs) {
    switch (m.type) {
      case 'welcome': joined++; if (joined === count) process.send?.({ joined }); break
      case 'assign': {
        stats.finished++
        const r = { type: 'finished', key: m.key, attempt: m.attempt, nbytes: VALUE.byteLength, ms: 0 }
        // as a real worker's executor does: a result this small rides with its report (INLINE_LIMIT)
        if (m.push || VALUE.byteLength <= INLINE_LIMIT) r.data = VALUE
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
}

/** Messages sent in one turn leave in one frame, as a real worker's do. */
function outbox(emit) {
  let out = []
  let queued = false
  return msg => {
    if (DEBUG) stats[`out:${msg.type}`] = (stats[`out:${msg.type}`] ?? 0) + 1
    out.push(msg)
    if (!queued) { queued = true; queueMicrotask(() => { queued = false; const m = out; out = []; stats.framesOut++; emit(encodeFrame(m)) }) }
  }
}

function hello(i) {
  return { role: 'worker', kind: 'node', slots, name: `sim-${process.pid}-${i}`, ...(token ? { token } : {}) }
}

/** Through socket.io-client, as a Node agent connects (SIM_CLIENT=socket.io). */
function simulateSocketIo(i, tries = 0) {
  const socket = io(url, { transports: ['websocket'], reconnection: false, auth: cb => cb(hello(i)), parser: frameParser })
  const send = outbox(bytes => socket.emit('frame', bytes))
  socket.on('frame', (frame, ...attachments) => {
    stats.framesIn++
    answer(decodeFrame(frame, attachments), send)
  })
  // on a loaded machine a handshake can time out: try again a few times, as a worker would
  socket.on('connect_error', err => {
    socket.close()
    if (tries >= 5) { console.error(`sim worker ${i}: ${err.message}`); process.exit(1) }
    setTimeout(() => { sockets[i] = simulateSocketIo(i, tries + 1) }, 1000 * (tries + 1))
  })
  return { send, connected: () => socket.connected, close: () => socket.close() }
}

/**
 * Straight on a WebSocket (the default): the same bytes on the wire as socket.io-client
 * sends — engine.io's open packet, socket.io's CONNECT with the hello as its auth, pings
 * answered with pongs, and each frame one binary message (shared/socket-parser.ts) — without
 * the client library's per-packet work, so that on one machine the simulated workers' CPU
 * leaves more of it to the coordinator being measured.
 */
function simulateWs(i, tries = 0) {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`)
  let connected = false
  const send = outbox(bytes => { if (ws.readyState === WebSocket.OPEN) ws.send(bytes) })
  const retry = why => {
    ws.terminate()
    if (tries >= 5) { console.error(`sim worker ${i}: ${why}`); process.exit(1) }
    setTimeout(() => { sockets[i] = simulateWs(i, tries + 1) }, 1000 * (tries + 1))
  }
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      stats.framesIn++
      answer(decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)), send)
      return
    }
    const text = data.toString()
    if (text === '2') ws.send('3')
    else if (text.startsWith('0')) ws.send(`40${JSON.stringify(hello(i))}`)
    else if (text.startsWith('40')) connected = true
    else if (text.startsWith('44')) retry(text.slice(2))
  })
  ws.on('error', err => { if (!connected) retry(err.message) })
  ws.on('close', () => { connected = false })
  return { send, connected: () => connected, close: () => ws.close() }
}

const simulate = process.env.SIM_CLIENT === 'socket.io' ? simulateSocketIo : simulateWs

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
    if (s.connected()) { stats.beats++; s.send({ type: 'heartbeat', memory: 0, spilled: 0 }) }
  }
}, STEP)
process.on('message', m => {
  if (m === 'stats') { const u = process.cpuUsage(); process.send?.({ stats: { ...stats, cpuUs: u.user + u.system } }) }
  if (m === 'pause' || m === 'resume') for (const s of sockets) s.send({ type: 'status', accepting: m === 'resume' })
  if (m === 'exit') { clearInterval(beat); for (const s of sockets) s.close(); process.exit(0) }
})
