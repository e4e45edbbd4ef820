import { afterEach, describe, expect, it } from 'vitest'
import * as Comlink from 'comlink'
import { WorkerRuntime, type ThreadHandle } from './runtime.js'
import type { TaskPort } from '../shared/executor.js'

/**
 * A thread in this process: a real comlink endpoint (a MessageChannel) exposing just
 * what the runtime calls to start it, and the real task port the runtime hands it.
 */
function fakeThread() {
  const { port1, port2 } = new MessageChannel()
  let taskPort: TaskPort | undefined
  const exits: ((reason: string) => void)[] = []
  let terminated = 0
  Comlink.expose({
    init: () => 'ready',
    connect: (p: TaskPort) => { taskPort = p; p.start?.(); return 'connected' },
    adopt: () => [],
    memory: () => ({ inMemory: 0, spilled: 0, paused: false, limit: 0 }),
  }, port2 as unknown as Comlink.Endpoint)
  const handle: ThreadHandle = {
    endpoint: port1 as unknown as Comlink.Endpoint,
    onExit: cb => { exits.push(cb) },
    terminate: () => { terminated++; port1.close(); port2.close() },
  }
  return { handle, post: (data: unknown) => taskPort!.postMessage(data), started: () => taskPort !== undefined, terminated: () => terminated }
}

const until = async (check: () => boolean, what: string): Promise<void> => {
  for (let i = 0; i < 200; i++) { if (check()) return; await new Promise(r => setTimeout(r, 10)) }
  throw new Error(`timed out waiting for ${what}`)
}

let runtime: WorkerRuntime | undefined
afterEach(async () => { await runtime?.close(); runtime = undefined })

describe('WorkerRuntime and its threads', () => {
  it('a thread whose reports are not the thread protocol is stopped like a crash, and replaced', async () => {
    const threads: ReturnType<typeof fakeThread>[] = []
    const logs: string[] = []
    runtime = new WorkerRuntime({
      nprocs: 1, nthreads: 1, validate: true, log: line => logs.push(line),
      spawn: () => { const t = fakeThread(); threads.push(t); return t.handle },
    })
    await until(() => threads[0]?.started() === true, 'the thread to start')
    await until(() => runtime!.stats().threads === 1, 'the machine to know it started')
    // a report whose key is a number: junk, whatever sent it
    threads[0]!.post([{ type: 'finished', key: 5, attempt: 1, nbytes: 8, ms: 1 }])
    await until(() => threads[0]!.terminated() === 1, 'the thread to be stopped')
    expect(logs.some(l => /thread 0 sent a malformed report \(0\.key: .*expected string.*\): stopped/.test(l))).toBe(true)
    await until(() => threads.length === 2 && threads[1]!.started(), 'a replacement thread')
    // a well-formed report from the new thread is read (a memory note: no task needed)
    threads[1]!.post([{ type: 'memory', inMemory: 10, spilled: 0, paused: false }])
    await until(() => runtime!.stats().memory === 10, 'the memory report to count')
    expect(threads[1]!.terminated()).toBe(0)
  })
})
