import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createServer, type Server as HttpServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Server } from 'socket.io'
import { io, type Socket } from 'socket.io-client'
import { Encoder as StdEncoder, PacketType, type Packet } from 'socket.io-parser'
import { Decoder, Encoder, frameParser } from './socket-parser.js'
import { LIMITS } from './protocol.js'

function decodeAll(chunks: unknown[]): Packet[] {
  const d = new Decoder()
  const out: Packet[] = []
  d.on('decoded', (p: Packet) => out.push(p))
  for (const c of chunks) d.add(c)
  return out
}

describe('frame parser: packets', () => {
  const frame = new Uint8Array([0x91, 0x80])

  it('a frame is one binary message, its bytes as they are', () => {
    const out = new Encoder().encode({ type: PacketType.EVENT, nsp: '/', data: ['frame', frame] })
    expect(out).toEqual([frame])
    expect(out[0]).toBe(frame)
    expect(decodeAll(out)).toEqual([{ type: PacketType.EVENT, nsp: '/', data: ['frame', frame] }])
  })

  it('a frame with attachments is a header and then the frame and each attachment, uncopied', () => {
    const a = new Uint8Array(70_000).fill(1)
    const b = new Uint8Array(80_000).fill(2)
    const out = new Encoder().encode({ type: PacketType.EVENT, nsp: '/', data: ['frame', frame, a, b] })
    expect(out).toHaveLength(4)
    expect(out[0]).toBe('F2')
    expect(out[2]).toBe(a)
    expect(out[3]).toBe(b)
    const [p] = decodeAll(out)
    expect(p!.data[0]).toBe('frame')
    expect(p!.data.slice(1)).toHaveLength(3)
    for (const [i, x] of [frame, a, b].entries()) expect(p!.data[i + 1]).toBe(x)
  })

  it('every other packet is socket.io text, both ways', () => {
    const packets: Packet[] = [
      { type: PacketType.CONNECT, nsp: '/', data: { sid: 'x' } },
      { type: PacketType.EVENT, nsp: '/', data: ['frame', 'a string, not a frame'] },
      { type: PacketType.EVENT, nsp: '/', data: ['other', { x: 1 }] },
      { type: PacketType.DISCONNECT, nsp: '/' },
    ]
    for (const p of packets) {
      const out = new Encoder().encode(p)
      expect(out).toEqual(new StdEncoder().encode(p))
      expect(decodeAll(out)).toEqual([p])
    }
  })

  it('binary socket.io events, bad headers and text inside a frame are refused (socket.io then closes the connection)', () => {
    const std = new StdEncoder().encode({ type: PacketType.EVENT, nsp: '/', data: ['frame', new Uint8Array(3)] })
    expect(() => decodeAll(std)).toThrow(/binary socket.io events/)
    expect(() => decodeAll(['F0'])).toThrow(/bad frame header/)
    expect(() => decodeAll([`F${LIMITS.attachmentsPerFrame + 1}`])).toThrow(/bad frame header/)
    expect(() => decodeAll(['Fx'])).toThrow(/bad frame header/)
    expect(() => decodeAll(['F1', new Uint8Array(1), '2["frame"]'])).toThrow(/middle of a frame/)
  })

  it('ArrayBuffers and Node Buffers are binary too', () => {
    const [p] = decodeAll([new Uint8Array([1, 2]).buffer])
    expect(new Uint8Array(p!.data[1] as ArrayBuffer)).toEqual(new Uint8Array([1, 2]))
    const [q] = decodeAll([Buffer.from([3])])
    expect(q!.data[1]).toEqual(Buffer.from([3]))
  })
})

describe('frame parser: over real socket.io', () => {
  let http: HttpServer
  let server: Server
  let client: Socket
  /** WebSocket messages the server received */
  let messages = 0

  beforeAll(async () => {
    http = createServer()
    server = new Server(http, { parser: frameParser, transports: ['websocket'], maxHttpBufferSize: LIMITS.frameBytes })
    server.engine.on('connection', (conn: { on(e: string, f: () => void): void }) => conn.on('data', () => { messages++ }))
    server.on('connection', s => s.on('frame', (...args: unknown[]) => s.emit('frame', ...args)))
    await new Promise<void>(r => http.listen(0, '127.0.0.1', r))
    client = io(`http://127.0.0.1:${(http.address() as AddressInfo).port}`, { transports: ['websocket'], parser: frameParser })
    await new Promise<void>(r => client.on('connect', r))
  })
  afterAll(async () => {
    client.close()
    await server.close()
  })

  const echo = (...args: Uint8Array[]): Promise<unknown[]> => new Promise(resolve => {
    client.once('frame', (...back: unknown[]) => resolve(back))
    client.emit('frame', ...args)
  })

  it('a frame travels as one WebSocket message and comes back whole', async () => {
    const before = messages
    const back = await echo(new Uint8Array([0x91, 0xc0]))
    expect(messages - before).toBe(1)
    expect(new Uint8Array(back[0] as Uint8Array)).toEqual(new Uint8Array([0x91, 0xc0]))
  })

  it('a frame with two attachments is four messages, and the bytes come back exactly', async () => {
    const a = new Uint8Array(100_000).map((_, i) => i * 7)
    const b = new Uint8Array(LIMITS.chunkBytes).map((_, i) => i * 13)
    const before = messages
    const back = await echo(new Uint8Array([0x90]), a, b)
    expect(messages - before).toBe(4)
    expect(back).toHaveLength(3)
    expect(Buffer.compare(Buffer.from(back[1] as Uint8Array), Buffer.from(a))).toBe(0)
    expect(Buffer.compare(Buffer.from(back[2] as Uint8Array), Buffer.from(b))).toBe(0)
  })
})
