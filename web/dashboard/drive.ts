/**
 * Drive: a code panel where a user writes JavaScript against a ready `client` and runs
 * it in this page. In scope: `client`, `partitionAll`, `asCompleted`, `wait`, `print`,
 * `progress(done, total)` and a `console` whose log prints here. Futures made by a run
 * are counted as they finish (progress for long runs even without `progress` calls),
 * and Stop cancels them. With no worker on the grid a run says so at once: an example
 * waits for a worker to join (and starts by itself), your own code runs and its tasks
 * wait in the queue.
 */
import type { Client } from '../../shared/client.js'
import { Future, asCompleted, partitionAll, wait } from '../../shared/future.js'
import { TaskError } from '../../shared/errors.js'
import { EXAMPLES, type Example } from './examples.js'
import { duration, el, int, must, setText } from './format.js'

const MAX_LINES = 400
const MAX_TRACKED = 200_000

type AsyncFn = (...args: unknown[]) => Promise<unknown>
const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as new (...args: string[]) => AsyncFn

interface Run {
  started: number
  futures: Future[]
  stopped: boolean
  manual: { done: number; total: number } | undefined
  /** no worker yet: the run waits for one */
  waiting?: boolean
}

export class DrivePanel {
  private readonly editor: HTMLTextAreaElement
  private readonly output: HTMLElement
  private readonly runButton: HTMLButtonElement
  private readonly stopButton: HTMLButtonElement
  private readonly clearButton: HTMLButtonElement
  private readonly progressBox: HTMLElement
  private readonly progressFill: HTMLElement
  private readonly progressText: HTMLElement
  private readonly tabs: HTMLElement
  private run: Run | undefined
  private example: Example = EXAMPLES[0]!
  private progressTimer: ReturnType<typeof setInterval> | undefined
  private progressFrame = 0
  /** finished runs (tests): 'ok' | 'error' | 'stopped' */
  readonly results: { example: string; outcome: 'ok' | 'error' | 'stopped'; ms: number }[] = []

  /**
   * @param gridWorkers workers on the grid now, as the dashboard stream says (undefined before its first update)
   */
  constructor(root: HTMLElement, private readonly getClient: () => Promise<Client>, private readonly gridWorkers: () => number | undefined = () => undefined) {
    this.editor = must<HTMLTextAreaElement>('#code', root)
    this.output = must('#output', root)
    this.runButton = must<HTMLButtonElement>('#run', root)
    this.stopButton = must<HTMLButtonElement>('#stop', root)
    this.clearButton = must<HTMLButtonElement>('#clear', root)
    this.progressBox = must('#run-progress', root)
    this.progressFill = must('#run-progress .fill', root)
    this.progressText = must('#run-progress-text', root)
    this.tabs = must('#examples', root)

    for (const ex of EXAMPLES) {
      const b = el('button', 'tab', ex.title)
      b.type = 'button'
      b.dataset.example = ex.id
      b.addEventListener('click', () => this.load(ex))
      this.tabs.append(b)
    }
    this.load(EXAMPLES[0]!)
    this.runButton.addEventListener('click', () => { void this.start() })
    this.stopButton.addEventListener('click', () => { void this.stop() })
    this.clearButton.addEventListener('click', () => this.output.replaceChildren())
    this.editor.addEventListener('keydown', e => {
      if (e.key === 'Enter' && (e.metaKey || e.ctrlKey)) { e.preventDefault(); void this.start() }
      else if (e.key === 'Tab' && !e.shiftKey) {
        e.preventDefault()
        this.editor.setRangeText('  ', this.editor.selectionStart, this.editor.selectionEnd, 'end')
      }
    })
  }

  /** Puts an example in the editor. */
  load(ex: Example): void {
    this.example = ex
    this.editor.value = ex.code
    for (const b of this.tabs.querySelectorAll<HTMLButtonElement>('button')) b.setAttribute('aria-selected', String(b.dataset.example === ex.id))
  }

  /** Loads an example by id and runs it (tests, and links like /#run=pi). */
  async runExample(id: string): Promise<void> {
    const ex = EXAMPLES.find(e => e.id === id)
    if (!ex) throw new Error(`no example ${id}`)
    this.load(ex)
    await this.start()
  }

  private async start(): Promise<void> {
    if (this.run) return
    const code = this.editor.value
    const title = this.editor.value === this.example.code ? this.example.title : 'your code'
    const run: Run = { started: performance.now(), futures: [], stopped: false, manual: undefined }
    this.run = run
    this.setRunning(true)
    this.line('head', `▶ ${title}`)
    let outcome: 'ok' | 'error' | 'stopped' = 'ok'
    try {
      const client = await this.getClient()
      const fn = compile(code)
      if (!(await this.haveWorkers(client, run, title !== 'your code'))) { outcome = 'stopped'; return }
      const print = (...values: unknown[]): void => { if (this.run === run) this.line('out', values.map(show).join(' ')) }
      const progress = (done: number, total: number): void => {
        if (this.run !== run) return
        run.manual = { done: Number(done) || 0, total: Number(total) || 0 }
        this.scheduleProgress()
      }
      const printErr = (...values: unknown[]): void => { if (this.run === run) this.line('err', values.map(show).join(' ')) }
      const con = { log: print, info: print, debug: print, warn: printErr, error: printErr, table: print }
      const value = await fn(track(client, run), partitionAll, asCompleted, wait, print, progress, con)
      if (value !== undefined) this.line('out', show(value))
      if (run.stopped) outcome = 'stopped'
    } catch (err) {
      outcome = run.stopped ? 'stopped' : 'error'
      if (!run.stopped) this.error(err)
    } finally {
      const ms = performance.now() - run.started
      const end = { ok: `✓ done in ${duration(ms)}`, stopped: `■ stopped after ${duration(ms)}`, error: `✗ failed after ${duration(ms)}` }[outcome]
      this.line(outcome === 'ok' ? 'done' : 'err', end)
      this.results.push({ example: title === 'your code' ? 'custom' : this.example.id, outcome, ms })
      this.run = undefined
      this.setRunning(false)
    }
  }

  /**
   * Says why nothing would run when no worker is there. An example then waits for one
   * (false: stopped while waiting); other code goes on, its tasks waiting in the queue.
   */
  private async haveWorkers(client: Client, run: Run, wait: boolean): Promise<boolean> {
    const count = async (): Promise<number> => this.gridWorkers() ?? (await client.workers()).length
    if ((await count()) > 0) return true
    this.line('note', 'No worker has joined the grid yet, so no task can run. Click “Donate this tab” above to make this tab a worker, ' +
      `open the worker page (${location.origin}/worker) in other tabs, or run: npx tabgrid worker ${location.origin}`)
    if (!wait) { this.line('note', 'Running anyway: the tasks wait in the queue until a worker joins.'); return true }
    run.waiting = true
    this.scheduleProgress()
    while (!run.stopped && (await count()) === 0) await new Promise(r => setTimeout(r, 250))
    run.waiting = false
    if (run.stopped) return false
    this.line('out', 'A worker joined: running.')
    run.started = performance.now()
    return true
  }

  private async stop(): Promise<void> {
    const run = this.run
    if (!run) return
    run.stopped = true
    const pending = run.futures.filter(f => !f.done())
    if (pending.length) {
      try { await (await this.getClient()).cancel(pending) } catch { /* the run's own error says enough */ }
    }
  }

  private setRunning(running: boolean): void {
    this.runButton.disabled = running
    this.stopButton.disabled = !running
    this.progressBox.hidden = !running
    if (running) {
      this.progressFill.style.width = '0%'
      setText(this.progressText, 'starting…')
      this.progressTimer = setInterval(() => this.scheduleProgress(), 250)
    } else {
      clearInterval(this.progressTimer)
      cancelAnimationFrame(this.progressFrame)
      this.progressFrame = 0
    }
  }

  /** At most one progress redraw per frame, however often `progress` is called. */
  private scheduleProgress(): void {
    if (this.progressFrame) return
    this.progressFrame = requestAnimationFrame(() => {
      this.progressFrame = 0
      const run = this.run
      if (!run) return
      let done: number, total: number, what: string
      if (run.manual) ({ done, total } = run.manual, what = '')
      else {
        total = run.futures.length
        done = 0
        for (const f of run.futures) if (f.done()) done++
        what = ' tasks'
      }
      const elapsed = duration(performance.now() - run.started)
      if (run.waiting) {
        this.progressFill.style.width = '0%'
        setText(this.progressText, `waiting for a worker to join · ${elapsed}`)
        return
      }
      this.progressFill.style.width = total ? `${Math.min(100, (done / total) * 100)}%` : '0%'
      setText(this.progressText, total ? `${int(done)} / ${int(total)}${what} · ${elapsed}` : `running · ${elapsed}`)
    })
  }

  private line(kind: 'head' | 'out' | 'err' | 'done' | 'note', text: string): void {
    const div = el('div', `line ${kind}`, text)
    this.output.append(div)
    while (this.output.childElementCount > MAX_LINES) this.output.firstElementChild!.remove()
    this.output.scrollTop = this.output.scrollHeight
  }

  private error(err: unknown): void {
    const e = err as Error & { remoteStack?: string; remoteName?: string }
    if (err instanceof TaskError) {
      this.line('err', `TaskError: ${e.message}`)
      const stack = (e.remoteStack ?? '').split('\n').slice(1, 4).join('\n')
      if (stack) this.line('err', stack)
    } else if (err instanceof SyntaxError) {
      this.line('err', `SyntaxError in your code: ${err.message}`)
    } else if (err instanceof Error) {
      this.line('err', `${err.name}: ${err.message}`)
    } else this.line('err', `thrown: ${show(err)}`)
  }
}

function compile(code: string): AsyncFn {
  return new AsyncFunction('client', 'partitionAll', 'asCompleted', 'wait', 'print', 'progress', 'console', `"use strict";\n${code}`)
}

/** The client as the user's code sees it: every future it makes is counted for progress and Stop. */
function track<T extends object>(target: T, run: Run): T {
  const record = (v: unknown): unknown => {
    if (v instanceof Future) { if (run.futures.length < MAX_TRACKED) run.futures.push(v) }
    else if (Array.isArray(v)) { for (const f of v) if (f instanceof Future && run.futures.length < MAX_TRACKED) run.futures.push(f) }
    else if (v instanceof Promise) return v.then(record)
    else if (v && typeof v === 'object' && typeof (v as { submit?: unknown }).submit === 'function') return track(v, run)
    return v
  }
  return new Proxy(target, {
    get(t, prop) {
      const v = Reflect.get(t, prop, t) as unknown
      if (typeof v !== 'function') return v
      if (prop === 'submit' || prop === 'map' || prop === 'scatter' || prop === 'with') {
        return (...args: unknown[]) => record((v as (...a: unknown[]) => unknown).apply(t, args))
      }
      return (v as (...a: unknown[]) => unknown).bind(t)
    },
  })
}

/** A value as one readable line (bounded: big arrays and objects are summarised). */
export function show(v: unknown, depth = 0): string {
  const out = showInner(v, depth)
  return out.length > 4000 ? `${out.slice(0, 4000)}… (${int(out.length)} characters)` : out
}

function showInner(v: unknown, depth: number): string {
  if (typeof v === 'string') return depth ? JSON.stringify(v) : v
  if (typeof v === 'bigint') return `${v}n`
  if (typeof v !== 'object' || v === null) return String(v)
  if (v instanceof Future) return `Future(${v.key}, ${v.status})`
  if (v instanceof Error) return `${v.name}: ${v.message}`
  if (v instanceof Date) return v.toISOString()
  if (ArrayBuffer.isView(v)) {
    const name = v.constructor.name
    const arr = v as unknown as ArrayLike<number>
    const n = (v as { length?: number }).length ?? v.byteLength
    const head = Array.from({ length: Math.min(8, n) }, (_, i) => String(arr[i]))
    return `${name}(${int(n)}) [${head.join(', ')}${n > 8 ? ', …' : ''}]`
  }
  if (depth > 3) return Array.isArray(v) ? '[…]' : '{…}'
  if (Array.isArray(v)) {
    const items = v.slice(0, 20).map(x => showInner(x, depth + 1))
    return `[${items.join(', ')}${v.length > 20 ? `, … ${int(v.length)} items` : ''}]`
  }
  if (v instanceof Map) {
    const items = [...v].slice(0, 20).map(([k, x]) => `${showInner(k, depth + 1)} => ${showInner(x, depth + 1)}`)
    return `Map(${v.size}) {${items.join(', ')}${v.size > 20 ? ', …' : ''}}`
  }
  if (v instanceof Set) {
    const items = [...v].slice(0, 20).map(x => showInner(x, depth + 1))
    return `Set(${v.size}) {${items.join(', ')}${v.size > 20 ? ', …' : ''}}`
  }
  const entries = Object.entries(v as Record<string, unknown>)
  const items = entries.slice(0, 20).map(([k, x]) => `${k}: ${showInner(x, depth + 1)}`)
  return `{ ${items.join(', ')}${entries.length > 20 ? ', …' : ''} }`
}
