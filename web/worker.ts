/**
 * The volunteer page (`/worker`): turns this tab into a worker of the grid that served
 * it and says plainly what it is doing. The lifecycle is in volunteer.ts; this file reads
 * the page's settings, renders, and wires the controls.
 *
 * URL parameters: `?workers=N` (Web Workers; default: cores − 1), `?memory=MB` (memory
 * budget of the tab; default: a quarter of the device's memory, else 512 MB), `?name=S`,
 * `?token=T` (the coordinator's worker token).
 *
 * For tests and the curious, `window.tabgrid` exposes `status`, `stats()`, `runtime` and
 * `volunteer`.
 */
import { Volunteer, type VolunteerState, type VolunteerStats } from './volunteer.js'
import { formatBytes, parseSize } from '../shared/size.js'

interface PageSettings {
  workers: number
  maxWorkers: number
  memoryBudget: number
  name?: string
  token?: string
}

const cores = Math.max(1, navigator.hardwareConcurrency || 1)

function readSettings(query: URLSearchParams): PageSettings {
  const wanted = wholeNumber(query.get('workers'), 1, 1024)
  const workers = wanted ?? Math.max(1, cores - 1)
  const deviceGb = (navigator as Navigator & { deviceMemory?: number }).deviceMemory
  // a quarter of the device's memory, at most 2 GB (each Web Worker's heap has its own limit too);
  // ?memory= is in MB (10⁶ bytes) unless it says otherwise (?memory=1GB)
  const asked = parseSize(query.get('memory') ?? '', 'MB')
  const memoryBudget = asked >= 1e6 && asked <= 1e15 ? asked : deviceGb ? Math.min(2e9, Math.round(deviceGb * 1e9 * 0.25)) : 512e6
  const s: PageSettings = { workers, maxWorkers: Math.max(cores, workers), memoryBudget }
  const name = query.get('name')
  if (name) s.name = name.slice(0, 64)
  const token = query.get('token')
  if (token) s.token = token
  return s
}

function wholeNumber(raw: string | null, min: number, max: number): number | undefined {
  if (raw === null || raw.trim() === '') return undefined
  const n = Number(raw)
  return Number.isInteger(n) && n >= min && n <= max ? n : undefined
}

// ---------------------------------------------------------------- formatting

const integer = new Intl.NumberFormat('en')
const oneDecimal = new Intl.NumberFormat('en', { maximumFractionDigits: 1 })

const bytes = formatBytes

function duration(ms: number): string {
  const s = ms / 1000
  if (s < 10) return `${oneDecimal.format(s)} s`
  if (s < 60) return `${Math.floor(s)} s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m} min ${String(Math.floor(s % 60)).padStart(2, '0')} s`
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`
}

const plural = (n: number, one: string, many = `${one}s`): string => `${integer.format(n)} ${n === 1 ? one : many}`

// ---------------------------------------------------------------- rendering

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id)
  if (!el) throw new Error(`the worker page lacks #${id}`)
  return el as T
}

/** Sets text only when it changed, so updating twice a second never flickers or moves the caret. */
function text(el: HTMLElement, value: string): void {
  if (el.textContent !== value) el.textContent = value
}

type Rich = (string | { b: string })[]
const shown = new WeakMap<HTMLElement, string>()
/** Fills a paragraph with text and bold parts, without HTML (hosts and errors come from outside). */
function rich(el: HTMLElement, parts: Rich): void {
  const key = JSON.stringify(parts)
  if (shown.get(el) === key) return
  shown.set(el, key)
  el.replaceChildren(...parts.map(p => {
    if (typeof p === 'string') return document.createTextNode(p)
    const b = document.createElement('b')
    b.textContent = p.b
    return b
  }))
}

type Tone = 'good' | 'warn' | 'bad' | 'idle' | 'off'

interface View { tone: Tone; status: string; headline: string; lede: Rich }

function describeState(st: VolunteerState, paused: boolean, stats: VolunteerStats, pool: number, host: string): View {
  const workers = plural(pool, 'Web Worker')
  switch (st.state) {
    case 'starting':
      return { tone: 'idle', status: 'Starting', headline: 'Getting ready…', lede: [`Starting ${workers} to run tasks in, apart from this page.`] }
    case 'connecting':
      return st.error
        ? { tone: 'warn', status: 'Can’t reach the grid — retrying', headline: 'Waiting for the grid…', lede: ['The coordinator at ', { b: host }, ' isn’t answering yet. This tab keeps trying; leave it open.'] }
        : { tone: 'idle', status: `Connecting to ${host}`, headline: 'Joining the grid…', lede: ['Connecting to the coordinator at ', { b: host }, '.'] }
    case 'connected':
      if (paused) {
        return {
          tone: 'warn', status: `Paused · ${host}`, headline: 'Paused.',
          lede: [stats.running ? 'This tab finishes the tasks it has started and takes no new ones.' : 'This tab takes no new tasks.', ' It still holds its results for the grid. Resume whenever you like.'],
        }
      }
      return {
        tone: 'good', status: `Connected · ${host}`,
        headline: st.resumed ? 'Welcome back — this tab is helping again.' : 'This tab is helping compute.',
        lede: ['It runs tasks for the grid at ', { b: host }, ` in ${workers}. Thank you!`],
      }
    case 'reconnecting':
      return { tone: 'warn', status: 'Reconnecting…', headline: 'Reconnecting…', lede: ['The connection to ', { b: host }, ' dropped. Work already in this tab goes on, and the tab rejoins as the same worker.'] }
    case 'leaving':
      return { tone: 'warn', status: 'Leaving…', headline: 'Leaving the grid…', lede: ['Handing the results this tab holds to other workers before letting go.'] }
    case 'left': {
      const gave = !stats.done ? '' : stats.busyMs >= 1000
        ? `This tab did ${plural(stats.done, 'task')} and gave ${duration(stats.busyMs)} of CPU time. `
        : `This tab did ${plural(stats.done, 'task')} for the grid. `
      if (/shutting down/.test(st.reason)) {
        return { tone: 'off', status: 'Not connected', headline: 'The grid has shut down.', lede: [`${gave}Rejoin when it’s back.`] }
      }
      return { tone: 'off', status: 'Not connected', headline: 'You left the grid. Thank you!', lede: [`${gave}Its results were handed to other workers, and its stored data deleted.`] }
    }
    case 'failed': {
      const reason = st.error.replace(/\.$/, '')
      return {
        tone: 'bad', status: 'Not connected', headline: 'This tab couldn’t join the grid.',
        lede: /token/i.test(reason)
          ? [`The grid at ${host} refused it (${reason}). Ask whoever runs it for the full link, with its `, { b: '?token=' }, ' part.']
          : [`The grid at ${host} refused it (${reason}).`],
      }
    }
    default: {
      const never: never = st
      return never
    }
  }
}

/** Tasks per second and Web Worker usage over the last few seconds. */
class Rates {
  private samples: { t: number; done: number; busyMs: number; threads: number }[] = []
  add(s: VolunteerStats): { perSecond: number; busy: number } {
    const t = performance.now()
    this.samples.push({ t, done: s.done, busyMs: s.busyMs, threads: s.threads })
    while (this.samples.length > 2 && t - this.samples[0]!.t > 5_000) this.samples.shift()
    const first = this.samples[0]!
    const dt = t - first.t
    if (dt < 900) return { perSecond: 0, busy: 0 }
    const threads = Math.max(1, s.threads)
    return { perSecond: ((s.done - first.done) * 1000) / dt, busy: Math.min(1, (s.busyMs - first.busyMs) / (dt * threads)) }
  }
}

// ---------------------------------------------------------------- the page

const settings = readSettings(new URLSearchParams(location.search))
const host = location.host
const volunteer = new Volunteer({
  url: location.origin,
  workers: settings.workers,
  memoryBudget: settings.memoryBudget,
  ...(settings.name ? { name: settings.name } : {}),
  ...(settings.token ? { token: settings.token } : {}),
  log: line => console.info(`tabgrid: ${line}`),
})
const rates = new Rates()

const el = {
  status: $('status'), statusText: $('status-text'), headline: $('headline'), lede: $('lede'), stats: $('stats'),
  threads: $('threads'), threadsSub: $('threads-sub'), fewer: $<HTMLButtonElement>('fewer'), more: $<HTMLButtonElement>('more'),
  running: $('running'), runningSub: $('running-sub'), done: $('done'), doneSub: $('done-sub'),
  cpu: $('cpu'), cpuSub: $('cpu-sub'), data: $('data'), dataSub: $('data-sub'),
  pause: $<HTMLButtonElement>('pause'), leave: $<HTMLButtonElement>('leave'), rejoin: $<HTMLButtonElement>('rejoin'),
  memoryNote: $('memory-note'),
}

function render(): void {
  const st = volunteer.state
  const s = volunteer.stats()
  const { perSecond, busy } = rates.add(s)
  const pool = volunteer.poolSize
  const view = describeState(st, s.paused, s, pool, host)
  if (el.status.dataset.tone !== view.tone) el.status.dataset.tone = view.tone
  text(el.statusText, view.status)
  text(el.headline, view.headline)
  rich(el.lede, view.lede)
  const active = st.state !== 'left' && st.state !== 'failed'
  const joined = st.state === 'connected' || st.state === 'reconnecting'
  el.stats.classList.toggle('dim', !active || (st.state === 'connected' && s.paused))

  text(el.threads, String(active ? pool : 0))
  text(el.threadsSub, active ? `${s.threads < pool ? `${s.threads} started · ` : ''}this device has ${plural(cores, 'core')}` : 'stopped')
  el.fewer.disabled = !active || pool <= 1
  el.more.disabled = !active || pool >= settings.maxWorkers

  text(el.running, integer.format(s.running))
  text(el.runningSub, s.queued ? `${integer.format(s.queued)} waiting in this tab` : s.running ? 'nothing waiting' : joined && !s.paused ? 'ready for work' : '\u00a0')
  text(el.done, integer.format(s.done))
  text(el.doneSub, active && perSecond >= 0.05 ? `${perSecond >= 10 ? integer.format(Math.round(perSecond)) : oneDecimal.format(perSecond)} per second` : '\u00a0')
  text(el.cpu, duration(s.busyMs))
  text(el.cpuSub, active && busy >= 0.005 ? `Web Workers ${Math.round(busy * 100)}% busy` : '\u00a0')
  if (s.memory + s.spilled > 0) {
    text(el.data, bytes(s.memory + s.spilled))
    text(el.dataSub, `${plural(s.held, 'result')} · ${bytes(s.memory)} in memory · ${bytes(s.spilled)} on disk`)
  } else {
    // sizes not reported (yet): count the results instead
    text(el.data, s.held ? plural(s.held, 'result') : 'None')
    text(el.dataSub, s.held ? 'kept in this tab’s memory' : 'no results held')
  }

  el.pause.hidden = !joined
  text(el.pause, s.paused ? 'Resume' : 'Pause')
  el.leave.hidden = !active
  el.leave.disabled = st.state === 'leaving' || st.state === 'starting'
  text(el.leave, st.state === 'leaving' ? 'Leaving…' : 'Leave the grid')
  el.rejoin.hidden = active
  text(el.rejoin, st.state === 'failed' ? 'Try again' : 'Rejoin')
}

text(el.memoryNote, `This tab keeps up to ${bytes(settings.memoryBudget)} of results in memory; beyond that, they go to this browser’s storage, and are deleted when you leave.`)

el.fewer.addEventListener('click', () => setPool(volunteer.poolSize - 1))
el.more.addEventListener('click', () => setPool(volunteer.poolSize + 1))
el.pause.addEventListener('click', () => { volunteer.setPaused(!volunteer.isPaused); render() })
el.leave.addEventListener('click', () => { volunteer.leave(); render() })
el.rejoin.addEventListener('click', () => { volunteer.start().catch(fail); render() })

function fail(err: unknown): void {
  console.error('tabgrid: could not start the worker', err)
}

/** Resizes the pool now, and keeps the choice in the URL so a reload keeps it too. */
function setPool(n: number): void {
  if (n < 1 || n > settings.maxWorkers) return
  volunteer.resize(n)
  const url = new URL(location.href)
  url.searchParams.set('workers', String(n))
  history.replaceState(history.state, '', url)
  render()
}

volunteer.onChange = () => render()
setInterval(render, 500)
render()
volunteer.start().catch(fail)

declare global {
  interface Window {
    /** The page's state, for tests and the curious. */
    tabgrid: {
      readonly status: VolunteerState
      stats(): VolunteerStats
      readonly runtime: Volunteer['runtime']
      volunteer: Volunteer
      setPool(n: number): void
    }
  }
}

window.tabgrid = {
  get status() { return volunteer.state },
  stats: () => volunteer.stats(),
  get runtime() { return volunteer.runtime },
  volunteer,
  setPool: n => {
    // like ?workers=N, asking for more than the cores raises the control's limit
    settings.maxWorkers = Math.max(settings.maxWorkers, n)
    setPool(n)
  },
}
