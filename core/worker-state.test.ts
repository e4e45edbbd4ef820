import { describe, expect, it } from 'vitest'
import { WorkerState, type Instruction, type WorkerEvent, type WorkerStateOptions } from './worker-state.js'
import type { ExecTask } from '../shared/executor.js'

type Body = WorkerEvent extends infer E ? E extends WorkerEvent ? Omit<E, 'now'> : never : never

const args = new Uint8Array([0x90])

/** A worker state that checks its invariants after every event, fed with a clock the test moves. */
class Harness {
  readonly ws: WorkerState
  now = 0
  constructor(o: Partial<WorkerStateOptions> = {}) {
    this.ws = new WorkerState({ nprocs: 1, nthreads: 1, validate: true, ...o })
  }
  on(e: Body, now = this.now): Instruction[] {
    this.now = now
    return this.ws.handle({ ...e, now } as WorkerEvent)
  }
  many(es: Body[]): Instruction[] { return this.ws.handleMany(es.map(e => ({ ...e, now: this.now }) as WorkerEvent)) }
}

const assign = (key: string, attempt = 1, o: Record<string, unknown> = {}): Body =>
  ({ type: 'assign', key, attempt, fn: 'f', args, deps: [], push: false, ...o }) as Body
const exec = (key: string, attempt = 1, o: Partial<ExecTask> = {}): ExecTask => ({ key, attempt, fn: 'f', args, deps: [], push: false, digest: false, ...o })
const run = (thread: number, tasks: ExecTask[], fns?: [string, string][]): Instruction =>
  ({ type: 'run', thread, batch: fns ? { fns, tasks } : { tasks } })
const send = (msg: object): Instruction => ({ type: 'send', msg }) as Instruction
const finished = (thread: number, key: string, attempt = 1, o: Record<string, unknown> = {}): Body =>
  ({ type: 'task-finished', thread, key, attempt, nbytes: 8, ms: 50, ...o }) as Body
const finishedMsg = (key: string, attempt = 1, o: Record<string, unknown> = {}): Instruction => send({ type: 'finished', key, attempt, nbytes: 8, ms: 50, ...o })
/** the function definition that travels with a thread's first batch */
const F: [string, string][] = [['f', '(x) => x']]
const dep = (key: string, nbytes = 8) => ({ key, nbytes })
const missing = (key: string, attempt: number, ...m: [string, string][]): Instruction =>
  send({ type: 'missing', key, attempt, missing: m.map(([k, holder]) => ({ key: k, holder })) })

/** Started, threads alive, welcomed as w1, function f known; heartbeats an hour apart unless asked, so wake-ups are about deadlines. */
function boot(o: Partial<WorkerStateOptions> = {}): Harness {
  const h = new Harness({ heartbeatMs: 3_600_000, idleHeartbeatMs: 3_600_000, ...o })
  h.on({ type: 'start' })
  for (let i = 1; i <= (o.nprocs ?? 1); i++) h.on({ type: 'thread-started', thread: i })
  h.on({ type: 'welcome', id: 'w1', resumed: false })
  h.on({ type: 'function', hash: 'f', source: '(x) => x' })
  return h
}

/** Teaches the machine that `f` is short (ms per run), so threads get a lookahead of f tasks. */
function learnShort(h: Harness, thread: number, ms = 0.5): void {
  h.on(assign('warm'))
  h.on(finished(thread, 'warm', 1, { ms }))
}

describe('WorkerState: the happy path', () => {
  it('spawns its threads, runs an assignment with its function, reports it, and remembers the report', () => {
    const h = new Harness({ nprocs: 2 })
    expect(h.on({ type: 'start' })).toEqual([
      { type: 'spawn-thread', thread: 1, slot: 0 },
      { type: 'spawn-thread', thread: 2, slot: 1 },
      { type: 'wake-at', at: 60_000 },
    ])
    expect(h.on({ type: 'thread-started', thread: 1 }, 10)).toEqual([])
    // a fresh identity: nothing to say (accepting, as the coordinator assumes) until the first (idle) heartbeat
    expect(h.on({ type: 'welcome', id: 'w1', resumed: false }, 20)).toEqual([{ type: 'wake-at', at: 10_020 }])
    expect(h.on({ type: 'function', hash: 'f', source: '(x) => x' })).toEqual([])
    // thread 2 has not started: the task goes to thread 1, with its function; holding it, a beat is due in 1 s
    expect(h.on(assign('a', 1, { push: true }))).toEqual([run(1, [exec('a', 1, { push: true })], [['f', '(x) => x']]), { type: 'wake-at', at: 1_020 }])
    expect(h.ws.taskStatus('a', 1)).toBe('executing')
    expect(h.on(finished(1, 'a', 1, { data: new Uint8Array([7]), digest: 'd1' }))).toEqual([
      finishedMsg('a', 1, { digest: 'd1', data: new Uint8Array([7]) }),
      { type: 'wake-at', at: 10_020 },
    ])
    expect(h.ws.taskStatus('a', 1)).toBeUndefined()
    expect(h.ws.holders('a')).toEqual([1])
    expect(h.ws.stats()).toMatchObject({ done: 1, busyMs: 50, held: 1, running: 0, threads: 2 })
    // the same assignment again (a resend after a reconnect): the report, not a second run
    expect(h.on(assign('a', 1, { push: true }))).toEqual([finishedMsg('a', 1, { digest: 'd1' })])
    expect(h.ws.story('a').map(e => `${e.from}>${e.to}`)).toEqual(['new>waiting', 'waiting>ready', 'ready>executing', 'executing>memory'])
  })

  it('sends a function once per thread and a new module version with the next batch', () => {
    const h = boot({ nprocs: 1, nthreads: 2 })
    h.on({ type: 'module', name: 'stats', source: 'export const v = 1' })
    expect(h.on(assign('a'))).toEqual([{ type: 'run', thread: 1, batch: { fns: [['f', '(x) => x']], modules: [['stats', 'export const v = 1']], tasks: [exec('a')] } }])
    expect(h.on(assign('b'))).toEqual([run(1, [exec('b')])])
    h.on({ type: 'module', name: 'stats', source: 'export const v = 2' })
    h.on(finished(1, 'a'))
    expect(h.on(assign('c'))).toEqual([{ type: 'run', thread: 1, batch: { modules: [['stats', 'export const v = 2']], tasks: [exec('c')] } }])
  })

  it('hands a thread only what it can start now until it knows the function is short', () => {
    const h = boot({ nthreads: 1 })
    expect(h.many([assign('a'), assign('b'), assign('c')])).toEqual([run(1, [exec('a')], F)])
    expect(h.ws.stats()).toMatchObject({ running: 1, queued: 2 })
    // 0.5 ms a run, 2 ms of lookahead: the thread may hold 4 more beyond the one it runs
    expect(h.on(finished(1, 'a', 1, { ms: 0.5 }))).toEqual([finishedMsg('a', 1, { ms: 0.5 }), run(1, [exec('b'), exec('c')])])
    expect(h.many(['d', 'e', 'f', 'g', 'h'].map(k => assign(k)))).toEqual([run(1, [exec('d'), exec('e'), exec('f')])])
  })
})

describe('WorkerState: priorities', () => {
  it('a high-priority task assigned after low-priority ones runs first when a slot frees', () => {
    const h = boot()
    expect(h.on(assign('low-1'))).toEqual([run(1, [exec('low-1')], F)])
    expect(h.on(assign('low-2'))).toEqual([])
    expect(h.on(assign('low-3'))).toEqual([])
    expect(h.on(assign('high', 1, { priority: 10 }))).toEqual([])
    expect(h.on(finished(1, 'low-1'))).toEqual([finishedMsg('low-1'), run(1, [exec('high')])])
    expect(h.on(finished(1, 'high'))).toEqual([finishedMsg('high'), run(1, [exec('low-2')])])
    expect(h.on(finished(1, 'low-2'))).toEqual([finishedMsg('low-2'), run(1, [exec('low-3')])])
  })

  it('orders equal priorities by submission order (seq), and a frame of assignments by priority', () => {
    const h = boot()
    expect(h.many([
      assign('b', 1, { seq: 2 }), assign('a', 1, { seq: 1 }), assign('c', 1, { seq: 3, priority: 5 }),
    ])).toEqual([run(1, [exec('c')], F)])
    expect(h.on(finished(1, 'c'))).toEqual([finishedMsg('c'), run(1, [exec('a')])])
    expect(h.on(finished(1, 'a'))).toEqual([finishedMsg('a'), run(1, [exec('b')])])
  })

  it('priority holds among queued tasks after a thread crash requeues them', () => {
    const h = boot()
    learnShort(h, 1, 0.5)
    expect(h.many([assign('x'), assign('y'), assign('z')])).toEqual([run(1, [exec('x'), exec('y'), exec('z')])])
    h.on(assign('top', 1, { priority: 3 }))
    // x was running; y and z go back to the queue behind top
    const out = h.on({ type: 'thread-died', thread: 1, reason: 'exited with code 1' })
    expect(out).toContainEqual({ type: 'spawn-thread', thread: 2, slot: 0 })
    h.on({ type: 'thread-started', thread: 2 })
    // a fresh thread knows f is short: top, then y and z in order
    expect(h.on({ type: 'tick' })).toEqual([])
    expect(h.ws.threadList()[0]!.tasks).toEqual(['top@1', 'y@1', 'z@1'])
  })
})

describe('WorkerState: dependencies', () => {
  it('fetches an input held elsewhere through the coordinator, puts it in a thread, then runs the task', () => {
    const h = boot()
    expect(h.on(assign('y', 1, { deps: [dep('x', 100)] }))).toEqual([{ type: 'fetch-remote', key: 'x' }])
    expect(h.ws.taskStatus('y', 1)).toBe('waiting')
    // a second task needing x waits for the same fetch
    expect(h.on(assign('y2', 1, { deps: [dep('x', 100)] }))).toEqual([])
    const data = new Uint8Array(100)
    expect(h.on({ type: 'fetched', key: 'x', data })).toEqual([{ type: 'put-into-thread', thread: 1, key: 'x', data }])
    // the copy is kept, and said so: the scheduler counts this worker as a holder of x (as Dask does)
    expect(h.on({ type: 'put-done', thread: 1, key: 'x', nbytes: 100 })).toEqual([
      { type: 'send', msg: { type: 'stored', key: 'x', nbytes: 100 } },
      run(1, [exec('y', 1, { deps: ['x'] })], F),
    ])
    expect(h.on(finished(1, 'y'))).toEqual([finishedMsg('y'), run(1, [exec('y2', 1, { deps: ['x'] })])])
  })

  it('a failed fetch makes the waiting tasks report their input missing', () => {
    const h = boot()
    h.on(assign('y', 1, { deps: [dep('x')] }))
    expect(h.on({ type: 'fetch-failed', key: 'x', error: { code: 'lost-data', message: 'no worker holds x', key: 'x' } })).toEqual([missing('y', 1, ['x', ''])])
    expect(h.ws.taskStatus('y', 1)).toBeUndefined()
  })

  it('dependents sent ahead wait for their input computed here and run the moment it lands, without a fetch', () => {
    const h = boot()
    expect(h.on(assign('x'))).toEqual([run(1, [exec('x')], F)])
    // y and z depend on x, which runs here: no fetch
    expect(h.many([assign('y', 1, { deps: [dep('x', 0)] }), assign('z', 1, { deps: [dep('y', 0)] })])).toEqual([])
    expect(h.ws.taskStatus('y', 1)).toBe('waiting')
    expect(h.on(finished(1, 'x'))).toEqual([finishedMsg('x'), run(1, [exec('y', 1, { deps: ['x'] })])])
    expect(h.on(finished(1, 'y'))).toEqual([finishedMsg('y'), run(1, [exec('z', 1, { deps: ['y'] })])])
  })

  it('a short dependent sent ahead queues on the thread computing its input, right behind it (one task at a time per thread)', () => {
    const h = boot()
    learnShort(h, 1)
    expect(h.on(assign('x'))).toEqual([run(1, [exec('x')])])
    // y waits only for x, which thread 1 computes: it goes there now and starts when x ends, inside the thread
    expect(h.many([assign('y', 1, { deps: [dep('x', 0)] }), assign('z', 1, { deps: [dep('y', 0)] })])).toEqual([
      run(1, [exec('y', 1, { deps: ['x'] }), exec('z', 1, { deps: ['y'] })]),
    ])
    expect(h.ws.threadList()[0]!.tasks).toEqual(['x@1', 'y@1', 'z@1'])
    expect(h.many([finished(1, 'x', 1, { ms: 0.5 }), finished(1, 'y', 1, { ms: 0.5 }), finished(1, 'z', 1, { ms: 0.5 })])).toEqual([
      finishedMsg('x', 1, { ms: 0.5 }), finishedMsg('y', 1, { ms: 0.5 }), finishedMsg('z', 1, { ms: 0.5 }),
    ])
    expect(h.ws.holders('z')).toEqual([1])
  })

  it('a dependent queued behind an input that errs reports the input missing when its thread says so', () => {
    const h = boot()
    learnShort(h, 1)
    h.many([assign('x'), assign('y', 1, { deps: [dep('x', 0)] })])
    expect(h.on({ type: 'task-erred', thread: 1, key: 'x', attempt: 1, error: { code: 'task-error', message: 'boom' } })).toEqual([
      send({ type: 'erred', key: 'x', attempt: 1, error: { code: 'task-error', message: 'boom' } }),
    ])
    expect(h.on({ type: 'task-erred', thread: 1, key: 'y', attempt: 1, error: { code: 'lost-data', message: 'dependencies not held here: x' }, missing: ['x'] }))
      .toEqual([missing('y', 1, ['x', 'w1'])])
  })

  it('a dependent queued behind its input on a thread that dies reports the input missing; the input fails as crashed', () => {
    const h = boot()
    learnShort(h, 1)
    h.many([assign('x'), assign('y', 1, { deps: [dep('x', 0)] })])
    expect(h.on({ type: 'thread-died', thread: 1, reason: 'killed' })).toEqual([
      send({ type: 'erred', key: 'x', attempt: 1, crashed: true, error: { code: 'task-error', message: 'the thread running x died: killed', key: 'x' } }),
      send({ type: 'released', keys: ['warm'] }),
      missing('y', 1, ['x', 'w1']),
      { type: 'log', line: 'thread 0 died: killed' },
      { type: 'spawn-thread', thread: 2, slot: 0 },
      { type: 'wake-at', at: 60_000 },
    ])
  })

  it('with several tasks at once per thread, a dependent waits for its input to land instead (the thread might start it first)', () => {
    const h = boot({ nthreads: 2 })
    learnShort(h, 1)
    h.on(assign('x'))
    expect(h.on(assign('y', 1, { deps: [dep('x', 0)] }))).toEqual([])
    expect(h.on(finished(1, 'x', 1, { ms: 0.5 }))).toEqual([finishedMsg('x', 1, { ms: 0.5 }), run(1, [exec('y', 1, { deps: ['x'] })])])
  })

  it('a dependent sent ahead waits for an input queued here behind other work too', () => {
    const h = boot()
    h.on(assign('busy'))
    expect(h.many([assign('x'), assign('y', 1, { deps: [dep('x', 0)] })])).toEqual([])
    expect(h.on(finished(1, 'busy'))).toEqual([finishedMsg('busy'), run(1, [exec('x')])])
    expect(h.on(finished(1, 'x'))).toEqual([finishedMsg('x'), run(1, [exec('y', 1, { deps: ['x'] })])])
  })

  it('when the local input is cancelled, stolen or errs, its dependents sent ahead report it missing (and theirs in turn)', () => {
    const h = boot()
    h.on(assign('busy'))
    h.many([assign('x'), assign('y', 1, { deps: [dep('x', 0)] }), assign('z', 1, { deps: [dep('y', 0)] })])
    expect(h.on({ type: 'cancel-task', key: 'x', attempt: 1 })).toEqual([missing('y', 1, ['x', 'w1']), missing('z', 1, ['y', 'w1'])])

    h.many([assign('x', 2), assign('y', 2, { deps: [dep('x', 0)] })])
    expect(h.on({ type: 'steal', key: 'x', attempt: 2 })).toEqual([
      send({ type: 'steal-response', key: 'x', attempt: 2, ok: true }),
      missing('y', 2, ['x', 'w1']),
    ])

    h.many([assign('x', 3), assign('y', 3, { deps: [dep('x', 0)] })])
    h.on(finished(1, 'busy'))
    expect(h.on({ type: 'task-erred', thread: 1, key: 'x', attempt: 3, error: { code: 'task-error', message: 'boom' } })).toEqual([
      send({ type: 'erred', key: 'x', attempt: 3, error: { code: 'task-error', message: 'boom' } }),
      missing('y', 3, ['x', 'w1']),
    ])
  })

  it('a cancelled running input does not fail dependents that another local attempt still computes', () => {
    const h = boot({ nthreads: 2 })
    h.many([assign('x', 1), assign('x', 2), assign('y', 1, { deps: [dep('x', 0)] })])
    expect(h.on({ type: 'cancel-task', key: 'x', attempt: 1 })).toEqual([])
    expect(h.on(finished(1, 'x', 2))).toEqual([finishedMsg('x', 2), run(1, [exec('y', 1, { deps: ['x'] })])])
  })

  it('copies an input from a sibling thread to a free one, then runs the task there', () => {
    const h = boot({ nprocs: 2 })
    h.on(assign('x'))
    h.on(finished(1, 'x'))
    h.on(assign('busy'))
    expect(h.ws.threadList().map(t => t.tasks)).toEqual([['busy@1'], []])
    // thread 1 holds x but is busy; thread 2 is free: copy x there
    expect(h.on(assign('y', 1, { deps: [dep('x')] }))).toEqual([{ type: 'copy-from-thread', key: 'x', from: 1, to: 2 }])
    expect(h.ws.taskStatus('y', 1)).toBe('copying')
    expect(h.on({ type: 'put-done', thread: 2, key: 'x', nbytes: 8 })).toEqual([run(2, [exec('y', 1, { deps: ['x'] })], [['f', '(x) => x']])])
    expect(h.ws.holders('x')).toEqual([1, 2])
  })

  it('a thread that says it lacks an input makes its task report it missing, naming this worker as the holder', () => {
    const h = boot()
    h.on(assign('x'))
    h.on(finished(1, 'x'))
    h.on(assign('y', 1, { deps: [dep('x')] }))
    expect(h.on({ type: 'task-erred', thread: 1, key: 'y', attempt: 1, error: { code: 'lost-data', message: 'dependencies not held here: x' }, missing: ['x'] }))
      .toEqual([missing('y', 1, ['x', 'w1'])])
    expect(h.ws.holders('x')).toEqual([])
  })
})

describe('WorkerState: faults', () => {
  it('a thread crash fails only the tasks it was running; its queued tasks go to another thread; data only it held is reported released', () => {
    const h = boot({ nprocs: 2 })
    learnShort(h, 1) // warm is held on thread 1
    expect(h.many([assign('k1'), assign('k2')])).toEqual([run(1, [exec('k1')]), run(2, [exec('k2')], F)])
    h.many([finished(1, 'k1', 1, { ms: 0.5 }), finished(2, 'k2', 1, { ms: 0.5 })])
    expect(h.many([assign('a'), assign('b'), assign('c'), assign('d')])).toEqual([run(1, [exec('a'), exec('c')]), run(2, [exec('b'), exec('d')])])
    expect(h.on({ type: 'thread-died', thread: 1, reason: 'exited with code 3' })).toEqual([
      send({ type: 'erred', key: 'a', attempt: 1, crashed: true, error: { code: 'task-error', message: 'the thread running a died: exited with code 3', key: 'a' } }),
      send({ type: 'released', keys: ['warm', 'k1'] }),
      { type: 'log', line: 'thread 0 died: exited with code 3' },
      { type: 'spawn-thread', thread: 3, slot: 0 },
      run(2, [exec('c')]),
      { type: 'wake-at', at: 60_000 },
    ])
    expect(h.ws.holders('k2')).toEqual([2])
    expect(h.ws.threadList().map(t => t.tasks)).toEqual([[], ['b@1', 'd@1', 'c@1']])
    // a late event of the dead thread changes nothing
    expect(h.on(finished(1, 'c'))).toEqual([])
    expect(h.on({ type: 'thread-died', thread: 1, reason: 'again' })).toEqual([])
  })

  it('tasks that needed data only the dead thread held report it missing', () => {
    const h = boot({ nprocs: 2 })
    h.on(assign('x'))
    h.on(finished(1, 'x'))
    h.on(assign('busy'))
    h.on(assign('busy2'))
    // both threads busy: y waits in the ready queue for a slot, with x on thread 1 only
    expect(h.on(assign('y', 1, { deps: [dep('x')] }))).toEqual([])
    expect(h.on({ type: 'thread-died', thread: 1, reason: 'killed' })).toEqual([
      send({ type: 'erred', key: 'busy', attempt: 1, crashed: true, error: { code: 'task-error', message: 'the thread running busy died: killed', key: 'busy' } }),
      send({ type: 'released', keys: ['x'] }),
      missing('y', 1, ['x', 'w1']),
      { type: 'log', line: 'thread 0 died: killed' },
      { type: 'spawn-thread', thread: 3, slot: 0 },
      { type: 'wake-at', at: 60_000 },
    ])
  })

  it('a copy whose source thread dies is taken from another holder, or its task reports the input missing', () => {
    const h = boot({ nprocs: 3 })
    h.on(assign('x'))
    h.on(finished(1, 'x'))
    h.on({ type: 'thread-adopted', thread: 2, held: [{ key: 'x', nbytes: 8 }] })
    h.on(assign('busy1'))
    h.on(assign('busy2'))
    expect(h.ws.threadList().map(t => t.tasks)).toEqual([['busy1@1'], ['busy2@1'], []])
    expect(h.on(assign('y', 1, { deps: [dep('x')] }))).toEqual([{ type: 'copy-from-thread', key: 'x', from: 1, to: 3 }])
    // a put that lands where no copy was asked for is freed there
    expect(h.on({ type: 'put-done', thread: 4, key: 'x', nbytes: 8 })).toEqual([])
    expect(h.on({ type: 'thread-died', thread: 1, reason: 'killed' })).toEqual([
      send({ type: 'erred', key: 'busy1', attempt: 1, crashed: true, error: { code: 'task-error', message: 'the thread running busy1 died: killed', key: 'busy1' } }),
      { type: 'copy-from-thread', key: 'x', from: 2, to: 3 },
      { type: 'log', line: 'thread 0 died: killed' },
      { type: 'spawn-thread', thread: 4, slot: 0 },
      { type: 'wake-at', at: 60_000 },
    ])
    expect(h.on({ type: 'thread-died', thread: 2, reason: 'killed' })).toEqual([
      send({ type: 'erred', key: 'busy2', attempt: 1, crashed: true, error: { code: 'task-error', message: 'the thread running busy2 died: killed', key: 'busy2' } }),
      send({ type: 'released', keys: ['x'] }),
      missing('y', 1, ['x', 'w1']),
      { type: 'log', line: 'thread 1 died: killed' },
      { type: 'spawn-thread', thread: 5, slot: 1 },
    ])
    // a copy that lands after its task gave up is freed there
    expect(h.on({ type: 'put-done', thread: 3, key: 'x', nbytes: 8 })).toEqual([{ type: 'free-in-thread', thread: 3, keys: ['x'] }])
  })

  it('a task past its time limit stops its thread: it fails alone, the others run elsewhere, a fresh thread takes its place', () => {
    const h = boot({ nprocs: 2 })
    learnShort(h, 1)
    h.now = 1_000
    expect(h.many([assign('slow', 1, { timeout: 500 }), assign('b'), assign('c')])).toEqual([
      run(1, [exec('slow', 1, { timeout: 500 }), exec('c')]), run(2, [exec('b')], F),
      { type: 'wake-at', at: 1_500 },
    ])
    expect(h.on({ type: 'tick' }, 1_499)).toEqual([])
    expect(h.on({ type: 'tick' }, 1_500)).toEqual([
      { type: 'stop-thread', thread: 1, why: 'timeout' },
      send({ type: 'erred', key: 'slow', attempt: 1, error: { code: 'task-error', name: 'TimeoutError', message: 'slow ran past its time limit of 500 ms; its thread was stopped', key: 'slow' } }),
      send({ type: 'released', keys: ['warm'] }),
      { type: 'spawn-thread', thread: 3, slot: 0 },
      run(2, [exec('c')]),
      { type: 'wake-at', at: 61_500 },
    ])
  })

  it('a time limit starts when the task reaches the running window, not when it is queued on the thread', () => {
    const h = boot()
    learnShort(h, 1)
    h.now = 100
    h.many([assign('a'), assign('t', 1, { timeout: 300 })])
    expect(h.ws.threadList()[0]!.tasks).toEqual(['a@1', 't@1'])
    expect(h.on(finished(1, 'a', 1, { ms: 0.5 }), 1_000)).toEqual([finishedMsg('a', 1, { ms: 0.5 }), { type: 'wake-at', at: 1_300 }])
    expect(h.on(finished(1, 't', 1, { ms: 0.5 }), 1_200)).toEqual([finishedMsg('t', 1, { ms: 0.5 }), { type: 'wake-at', at: 3_600_000 }])
  })

  it('hard cancel stops the thread running the task; the thread\'s other tasks run on', () => {
    const h = boot({ hardCancel: true })
    learnShort(h, 1)
    h.many([assign('spin'), assign('next')])
    expect(h.on({ type: 'cancel-task', key: 'spin', attempt: 1 })).toEqual([
      { type: 'stop-thread', thread: 1, why: 'cancel' },
      send({ type: 'released', keys: ['warm'] }),
      { type: 'spawn-thread', thread: 2, slot: 0 },
      { type: 'wake-at', at: 60_000 },
    ])
    expect(h.ws.taskStatus('next', 1)).toBe('ready')
    expect(h.on({ type: 'thread-started', thread: 2 })).toEqual([run(2, [exec('next')], F), { type: 'wake-at', at: 3_600_000 }])
  })

  it('without hard cancel a running task is left to end, and its result is dropped', () => {
    const h = boot()
    h.on(assign('a'))
    expect(h.on({ type: 'cancel-task', key: 'a', attempt: 1 })).toEqual([])
    expect(h.ws.taskStatus('a', 1)).toBe('cancelled')
    expect(h.on(assign('b'))).toEqual([])
    expect(h.on(finished(1, 'a'))).toEqual([run(1, [exec('b')]), { type: 'free-in-thread', thread: 1, keys: ['a'] }])
    expect(h.ws.holders('a')).toEqual([])
  })

  it('a cancelled task queued on its thread is asked back; the thread says whether it dropped it', () => {
    const h = boot()
    learnShort(h, 1)
    h.many([assign('a'), assign('b'), assign('c')])
    expect(h.on({ type: 'cancel-task', key: 'b', attempt: 1 })).toEqual([{ type: 'cancel-in-thread', thread: 1, key: 'b', attempt: 1 }])
    expect(h.on({ type: 'thread-cancel-answer', thread: 1, key: 'b', attempt: 1, dropped: true })).toEqual([])
    expect(h.ws.threadList()[0]!.tasks).toEqual(['a@1', 'c@1'])
    expect(h.on({ type: 'cancel-task', key: 'c', attempt: 1 })).toEqual([{ type: 'cancel-in-thread', thread: 1, key: 'c', attempt: 1 }])
    // too late: it started; it is dropped when it ends
    h.on(finished(1, 'a', 1, { ms: 0.5 }))
    expect(h.on({ type: 'thread-cancel-answer', thread: 1, key: 'c', attempt: 1, dropped: false })).toEqual([])
    expect(h.on(finished(1, 'c', 1, { ms: 0.5 }))).toEqual([{ type: 'free-in-thread', thread: 1, keys: ['c'] }])
  })

  it('steal: a queued task is given up, a running one is not, one queued on its thread is asked back first', () => {
    const h = boot()
    learnShort(h, 1, 1)
    // 1 ms a run, 2 ms of lookahead: a, b, c on the thread (a runs), d in the ready queue
    h.many([assign('a'), assign('b'), assign('c'), assign('d')])
    expect(h.ws.threadList()[0]!.tasks).toEqual(['a@1', 'b@1', 'c@1'])
    expect(h.on({ type: 'steal', key: 'd', attempt: 1 })).toEqual([send({ type: 'steal-response', key: 'd', attempt: 1, ok: true })])
    expect(h.on({ type: 'steal', key: 'a', attempt: 1 })).toEqual([send({ type: 'steal-response', key: 'a', attempt: 1, ok: false })])
    expect(h.on({ type: 'steal', key: 'nope', attempt: 1 })).toEqual([send({ type: 'steal-response', key: 'nope', attempt: 1, ok: false })])
    expect(h.on({ type: 'steal', key: 'c', attempt: 1 })).toEqual([{ type: 'cancel-in-thread', thread: 1, key: 'c', attempt: 1 }])
    expect(h.on({ type: 'thread-cancel-answer', thread: 1, key: 'c', attempt: 1, dropped: true })).toEqual([send({ type: 'steal-response', key: 'c', attempt: 1, ok: true })])
    expect(h.on({ type: 'steal', key: 'b', attempt: 1 })).toEqual([{ type: 'cancel-in-thread', thread: 1, key: 'b', attempt: 1 }])
    expect(h.on({ type: 'thread-cancel-answer', thread: 1, key: 'b', attempt: 1, dropped: false })).toEqual([send({ type: 'steal-response', key: 'b', attempt: 1, ok: false })])
    expect(h.ws.taskStatus('b', 1)).toBe('executing')
  })

  it('no respawn loop: threads that keep dying at start wait before the next one', () => {
    const h = new Harness({ nprocs: 1 })
    h.on({ type: 'start' })
    // 3 per slot + 3 deaths in 10 s are replaced at once
    for (let i = 1; i <= 6; i++) {
      expect(h.on({ type: 'thread-died', thread: i, reason: 'failed to start' }, i * 100)).toEqual([
        { type: 'log', line: 'thread 0 died: failed to start' },
        { type: 'spawn-thread', thread: i + 1, slot: 0 },
        { type: 'wake-at', at: i * 100 + 60_000 },
      ])
    }
    expect(h.on({ type: 'thread-died', thread: 7, reason: 'failed to start' }, 700)).toEqual([
      { type: 'log', line: 'thread 0 died: failed to start' },
      { type: 'log', line: 'threads keep dying; thread 0 is replaced in 5000 ms' },
      { type: 'wake-at', at: 5_700 },
    ])
    expect(h.ws.stats().threads).toBe(0)
    expect(h.on({ type: 'tick' }, 5_699)).toEqual([])
    expect(h.on({ type: 'tick' }, 5_700)).toEqual([{ type: 'spawn-thread', thread: 8, slot: 0 }, { type: 'wake-at', at: 65_700 }])
  })

  it('a thread that does not start in time is replaced', () => {
    const h = new Harness({ startTimeoutMs: 1_000 })
    h.on({ type: 'start' })
    expect(h.on({ type: 'tick' }, 1_000)).toEqual([
      { type: 'log', line: 'thread 0 did not start in 1000 ms; replacing it' },
      { type: 'stop-thread', thread: 1, why: 'start-timeout' },
      { type: 'spawn-thread', thread: 2, slot: 0 },
      { type: 'wake-at', at: 2_000 },
    ])
  })
})

describe('WorkerState: leases and reconnection', () => {
  it('heartbeats renew the leases on ticks while connected, with the threads\' memory figures', () => {
    const h = new Harness({ heartbeatMs: 1_000, idleHeartbeatMs: 1_000 })
    h.on({ type: 'start' })
    h.on({ type: 'thread-started', thread: 1 })
    expect(h.on({ type: 'welcome', id: 'w1', resumed: false }, 100)).toEqual([{ type: 'wake-at', at: 1_100 }])
    expect(h.on({ type: 'tick' }, 900)).toEqual([])
    expect(h.on({ type: 'tick' }, 1_100)).toEqual([
      send({ type: 'heartbeat', memory: 0, spilled: 0 }),
      { type: 'query-memory', thread: 1 },
      { type: 'wake-at', at: 2_100 },
    ])
    h.on({ type: 'thread-memory', thread: 1, inMemory: 4096, spilled: 10 })
    expect(h.on({ type: 'tick' }, 2_150)).toEqual([
      send({ type: 'heartbeat', memory: 4096, spilled: 10 }),
      { type: 'query-memory', thread: 1 },
      { type: 'wake-at', at: 3_150 },
    ])
    // no connection, no heartbeat (and no tick to ask for)
    expect(h.on({ type: 'disconnected' })).toEqual([{ type: 'wake-at', at: null }])
    expect(h.on({ type: 'tick' }, 5_000)).toEqual([])
  })

  it('its results are its heartbeats: holding tasks, it beats only after heartbeatMs of saying nothing; idle, every idleHeartbeatMs', () => {
    const h = new Harness({ heartbeatMs: 1_000, idleHeartbeatMs: 10_000 })
    h.on({ type: 'start' })
    h.on({ type: 'thread-started', thread: 1 })
    expect(h.on({ type: 'welcome', id: 'w1', resumed: false }, 100)).toEqual([{ type: 'wake-at', at: 10_100 }])
    h.on({ type: 'function', hash: 'f', source: '(x) => x' }, 100)
    // given tasks at 5 s after a quiet while: the first beat is due 1 s later, not at once
    h.now = 5_000
    expect(h.many([assign('a'), assign('b'), assign('c')])).toEqual([run(1, [exec('a')], F), { type: 'wake-at', at: 6_000 }])
    expect(h.on({ type: 'tick' }, 5_400)).toEqual([])
    // a result goes out at 5.5 s: it renews the leases, so the beat moves to 6.5 s
    expect(h.on(finished(1, 'a'), 5_500)).toEqual([finishedMsg('a'), run(1, [exec('b')]), { type: 'wake-at', at: 6_500 }])
    expect(h.on({ type: 'tick' }, 6_000)).toEqual([])
    expect(h.on({ type: 'tick' }, 6_500)).toEqual([
      send({ type: 'heartbeat', memory: 0, spilled: 0 }),
      { type: 'query-memory', thread: 1 },
      { type: 'wake-at', at: 7_500 },
    ])
    // nothing left in hand: back to the idle beat, 10 s after the last one
    h.on(finished(1, 'b'), 6_600)
    expect(h.on(finished(1, 'c'), 6_700)).toEqual([finishedMsg('c'), { type: 'wake-at', at: 16_500 }])
  })

  it('a lost lease cancels the attempt: its late result is dropped, the next attempt runs', () => {
    const h = boot()
    h.on(assign('a', 1))
    // the coordinator's lease ran out: it cancels attempt 1 and, once we speak again, may send attempt 2
    expect(h.on({ type: 'cancel-task', key: 'a', attempt: 1 })).toEqual([])
    expect(h.on(assign('a', 2))).toEqual([])
    expect(h.on(finished(1, 'a', 1))).toEqual([run(1, [exec('a', 2)]), { type: 'free-in-thread', thread: 1, keys: ['a'] }])
    expect(h.on(finished(1, 'a', 2))).toEqual([finishedMsg('a', 2)])
  })

  it('welcomed back as the same worker: resends its reports and asks again for fetches the lost connection dropped', () => {
    const h = boot()
    h.on(assign('a'))
    h.on(finished(1, 'a'))
    h.on(assign('b'))
    h.on({ type: 'task-erred', thread: 1, key: 'b', attempt: 1, error: { code: 'task-error', message: 'no' } })
    h.on(assign('y', 1, { deps: [dep('x')] }))
    h.on({ type: 'disconnected' })
    // the runtime fails every request of the lost connection: not a real failure
    expect(h.on({ type: 'fetch-failed', key: 'x', error: { code: 'timeout', message: 'connection lost' } })).toEqual([])
    expect(h.on({ type: 'welcome', id: 'w1', resumed: true })).toEqual([
      finishedMsg('a'),
      send({ type: 'erred', key: 'b', attempt: 1, error: { code: 'task-error', message: 'no' } }),
      { type: 'fetch-remote', key: 'x' },
      // and what it is (a coordinator that restarted knows only what its journal kept)
      send({ type: 'status', accepting: true, memory: 0, spilled: 0, slots: 1 }),
      { type: 'wake-at', at: 3_600_000 },
    ])
    expect(h.ws.taskStatus('y', 1)).toBe('waiting')
  })

  it('a fetch needed while disconnected is asked once welcomed back', () => {
    const h = boot()
    h.on({ type: 'disconnected' })
    expect(h.on(assign('y', 1, { deps: [dep('x')] }))).toEqual([])
    expect(h.on({ type: 'welcome', id: 'w1', resumed: true })).toEqual([
      { type: 'fetch-remote', key: 'x' }, send({ type: 'status', accepting: true, memory: 0, spilled: 0, slots: 1 }), { type: 'wake-at', at: 3_600_000 },
    ])
  })

  it('welcomed as a fresh worker after an old identity: drops the old tasks, reports and data', () => {
    const h = boot({ nthreads: 1 })
    h.on(assign('a'))
    h.on(finished(1, 'a'))
    h.on(assign('running'))
    h.on(assign('queued'))
    h.on({ type: 'set-accepting', accepting: false })
    h.on({ type: 'disconnected' })
    expect(h.on({ type: 'welcome', id: 'w2', resumed: false })).toEqual([
      send({ type: 'status', accepting: false, memory: 0, spilled: 0 }),
      { type: 'free-in-thread', thread: 1, keys: ['a'] },
      { type: 'wake-at', at: 3_600_000 },
    ])
    expect(h.ws.taskStatus('queued', 1)).toBeUndefined()
    expect(h.ws.taskStatus('running', 1)).toBe('cancelled')
    expect(h.ws.stats().held).toBe(0)
    // nothing of the old identity is resent
    expect(h.on(assign('a'))).toEqual([])
    expect(h.on(finished(1, 'running'))).toEqual([run(1, [exec('a')]), { type: 'free-in-thread', thread: 1, keys: ['running'] }])
  })

  it('the first welcome keeps what the threads adopted from before a reload', () => {
    const h = new Harness()
    h.on({ type: 'start' })
    h.on({ type: 'thread-started', thread: 1 })
    h.on({ type: 'thread-adopted', thread: 1, held: [{ key: 'old', nbytes: 99 }] })
    h.on({ type: 'welcome', id: 'w1', resumed: true })
    expect(h.ws.holders('old')).toEqual([1])
    expect(h.on({ type: 'fetch', id: 5, key: 'old' })).toEqual([{ type: 'serve', thread: 1, id: 5, key: 'old' }])
  })
})

describe('WorkerState: memory, pause, data', () => {
  it('a thread past its memory mark pauses the worker; the volunteer\'s pause holds until both are lifted', () => {
    const h = boot({ nprocs: 2 })
    expect(h.on({ type: 'thread-memory', thread: 1, inMemory: 900, spilled: 0, paused: true })).toEqual([
      send({ type: 'status', accepting: false, memory: 900, spilled: 0 }),
    ])
    expect(h.on({ type: 'set-accepting', accepting: false })).toEqual([])
    expect(h.on({ type: 'thread-memory', thread: 1, inMemory: 500, spilled: 400, paused: false })).toEqual([])
    expect(h.on({ type: 'set-accepting', accepting: true })).toEqual([send({ type: 'status', accepting: true, memory: 500, spilled: 400 })])
    // assigned tasks still run while paused: only new ones stop coming
    h.on({ type: 'thread-memory', thread: 2, inMemory: 1, spilled: 0, paused: true })
    expect(h.on(assign('a'))).toEqual([run(1, [exec('a')], [['f', '(x) => x']])])
    // a paused thread that dies does not pause the worker any more
    expect(h.on({ type: 'thread-died', thread: 2, reason: 'killed' })).toEqual([
      send({ type: 'status', accepting: true, memory: 500, spilled: 400 }),
      { type: 'log', line: 'thread 1 died: killed' },
      { type: 'spawn-thread', thread: 3, slot: 1 },
      { type: 'wake-at', at: 60_000 },
    ])
  })

  it('stores a put in the least loaded thread and says stored; one that arrives before any thread started waits for one', () => {
    const h = new Harness({ nprocs: 2 })
    h.on({ type: 'start' })
    const data = new Uint8Array(3)
    expect(h.on({ type: 'put', key: 's', data })).toEqual([])
    expect(h.on({ type: 'thread-started', thread: 2 })).toEqual([{ type: 'put-into-thread', thread: 2, key: 's', data }])
    expect(h.on({ type: 'put-done', thread: 2, key: 's', nbytes: 3 })).toEqual([send({ type: 'stored', key: 's', nbytes: 3 })])
    expect(h.on({ type: 'put', key: 's', data })).toEqual([send({ type: 'stored', key: 's', nbytes: 3 })])
  })

  it('a put into a thread that dies before storing it goes to another thread', () => {
    const h = boot({ nprocs: 2 })
    const data = new Uint8Array(3)
    expect(h.on({ type: 'put', key: 's', data })).toEqual([{ type: 'put-into-thread', thread: 1, key: 's', data }])
    expect(h.on({ type: 'thread-died', thread: 1, reason: 'killed' })).toEqual([
      { type: 'put-into-thread', thread: 2, key: 's', data },
      { type: 'log', line: 'thread 0 died: killed' },
      { type: 'spawn-thread', thread: 3, slot: 0 },
      { type: 'wake-at', at: 60_000 },
    ])
  })

  it('serves the coordinator\'s fetch from a holding thread, or says it is not held', () => {
    const h = boot()
    h.on(assign('a'))
    h.on(finished(1, 'a'))
    expect(h.on({ type: 'fetch', id: 7, key: 'a' })).toEqual([{ type: 'serve', thread: 1, id: 7, key: 'a' }])
    expect(h.on({ type: 'fetch', id: 8, key: 'b' })).toEqual([
      send({ type: 'data-error', id: 8, key: 'b', error: { code: 'lost-data', message: 'b is not held by this worker', key: 'b' } }),
    ])
  })

  it('free drops keys in every thread holding them, in one call per thread', () => {
    const h = boot({ nprocs: 2 })
    h.on(assign('a'))
    h.on(assign('b'))
    h.on(finished(1, 'a'))
    h.on(finished(2, 'b'))
    h.on(assign('y', 1, { deps: [dep('a')] }))
    h.on(finished(1, 'y'))
    expect(h.on({ type: 'free', keys: ['a', 'b', 'y', 'unknown'] })).toEqual([
      { type: 'free-in-thread', thread: 1, keys: ['a', 'y'] },
      { type: 'free-in-thread', thread: 2, keys: ['b'] },
    ])
    expect(h.ws.stats().held).toBe(0)
  })

  it('resize: a new thread joins; a removed one gives back its tasks and releases its data', () => {
    const h = boot({ nprocs: 1 })
    expect(h.on({ type: 'resize', nprocs: 2 })).toEqual([
      { type: 'spawn-thread', thread: 2, slot: 1 },
      send({ type: 'status', accepting: true, memory: 0, spilled: 0, slots: 2 }),
      { type: 'wake-at', at: 60_000 },
    ])
    h.on({ type: 'thread-started', thread: 2 })
    h.on(assign('a'))
    h.on(finished(1, 'a'))
    h.on(assign('b'))
    h.on(assign('c'))
    expect(h.ws.threadList().map(t => t.tasks)).toEqual([['b@1'], ['c@1']])
    expect(h.on({ type: 'resize', nprocs: 1 })).toEqual([
      { type: 'stop-thread', thread: 2, why: 'resize' },
      send({ type: 'status', accepting: true, memory: 0, spilled: 0, slots: 1 }),
    ])
    expect(h.ws.taskStatus('c', 1)).toBe('ready')
    expect(h.on(finished(1, 'b'))).toEqual([finishedMsg('b'), run(1, [exec('c')])])
  })

  it('close stops every thread and ignores what comes after', () => {
    const h = boot({ nprocs: 2 })
    expect(h.on({ type: 'close' })).toEqual([
      { type: 'stop-thread', thread: 1, why: 'close' },
      { type: 'stop-thread', thread: 2, why: 'close' },
      { type: 'wake-at', at: null },
    ])
    expect(h.on(assign('a'))).toEqual([])
  })
})

describe('WorkerState: checks', () => {
  it('rejects bad options by name', () => {
    expect(() => new WorkerState({ nprocs: 0, nthreads: 1 })).toThrow(/WorkerStateOptions.nprocs/)
    expect(() => new WorkerState({ nprocs: 1, nthreads: 1, heartbeatMs: -1 })).toThrow(/WorkerStateOptions.heartbeatMs/)
  })

  it('an impossible transition throws with the story', () => {
    const h = boot()
    h.on(assign('a'))
    const internals = h.ws as unknown as { tasks: Map<string, unknown>; transition(t: unknown, to: string): void }
    expect(() => internals.transition(internals.tasks.get('a@1'), 'waiting')).toThrow(/impossible transition executing → waiting for a@1[\s\S]*story of a[\s\S]*ready → executing/)
  })

  it('validate() finds a corrupted state', () => {
    const h = boot()
    h.on(assign('a'))
    ;(h.ws as unknown as { tasks: Map<string, { status: string }> }).tasks.get('a@1')!.status = 'ready'
    expect(() => h.ws.validate()).toThrow(/ready, not in the ready queue/)
  })
})

describe('WorkerState: bounded caches of sources', () => {
  it('forgets sources the coordinator frees (not one a task here still needs), in the threads too with their next batch', () => {
    const h = boot()
    h.on({ type: 'function', hash: 'g', source: '(x) => x + 1' })
    expect(h.on(assign('a'))).toContainEqual(run(1, [exec('a')], F))
    expect(h.on(assign('b', 1, { fn: 'g' }))).toEqual([])
    // f has run and is done with; g is queued behind a: only f goes
    h.on(finished(1, 'a'))
    h.on({ type: 'free-functions', hashes: ['f', 'g'] })
    h.on(finished(1, 'b'))
    // f comes back (the coordinator sends it again before a task needs it): the thread forgets the old, then learns it again
    h.on({ type: 'function', hash: 'f', source: '(x) => x' })
    const out = h.on(assign('c'))
    expect(out).toContainEqual({ type: 'run', thread: 1, batch: { forgetFns: ['f'], fns: F, tasks: [exec('c')] } })
  })

  it("forgets a departed client's modules", () => {
    const h = boot()
    h.on({ type: 'module', name: 'ns1/stats', source: 'export const x = 1' })
    h.on({ type: 'module', name: 'ns2/stats', source: 'export const x = 2' })
    expect(h.on(assign('a'))).toContainEqual({ type: 'run', thread: 1, batch: { fns: F, modules: [['ns1/stats', 'export const x = 1'], ['ns2/stats', 'export const x = 2']], tasks: [exec('a')] } })
    h.on(finished(1, 'a'))
    h.on({ type: 'free-modules', ns: 'ns1' })
    expect(h.on(assign('b'))).toContainEqual({ type: 'run', thread: 1, batch: { forgetModules: ['ns1/stats'], tasks: [exec('b')] } })
  })
})
