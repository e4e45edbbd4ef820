/**
 * The dashboard (`/`): watch the grid live and drive it.
 *
 * Watch: a read-only `dashboard` connection receives the coordinator's bounded `stream`
 * updates (server/dashboard.ts) twice a second; they are applied to a model and drawn in
 * the next animation frame, in place. Drive and task stories need requests, which the
 * read-only role has none of: they go over a `client` connection the page opens when
 * first needed, with the same token.
 *
 * A token comes from `?token=T` (then dropped from the address bar) or from this tab's
 * session; when the coordinator wants one and has none or a wrong one, the page asks.
 *
 * With no worker on the grid the page says so and offers to make this very tab one
 * ("Donate this tab"): the volunteer page's runtime (volunteer.ts) runs in it, tasks in
 * its Web Workers, whose scripts carry the worker page's Content-Security-Policy. The
 * choice is kept for this tab's session, so a reload keeps donating.
 *
 * For tests and the curious, `window.tabgridDashboard` exposes the state, the model and
 * the panels.
 */
import { connectLink, type Link } from '../shared/link.js'
import { Client } from '../shared/client.js'
import { AuthError } from '../shared/errors.js'
import type { Hello, ToDashboardMessage } from '../shared/protocol.js'
import { DashboardModel, type Changed } from './dashboard/model.js'
import { TaskStreamView } from './dashboard/stream.js'
import { Charts } from './dashboard/charts.js'
import { ProgressList, WorkersTable } from './dashboard/tables.js'
import { StoryPanel } from './dashboard/story.js'
import { DrivePanel } from './dashboard/drive.js'
import { Volunteer } from './volunteer.js'
import { bytes, compact, duration, int, micros, must, num, setText } from './dashboard/format.js'

type State = 'connecting' | 'connected' | 'reconnecting' | 'token' | 'unreachable'

const TOKEN_KEY = 'tabgrid.dashboard.token'
const origin = location.origin

function readToken(): string | undefined {
  const q = new URLSearchParams(location.search)
  const t = q.get('token')
  if (t !== null) {
    q.delete('token')
    const rest = q.toString()
    history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`)
    return t || undefined
  }
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined
}

// ---------------------------------------------------------------- panels

const model = new DashboardModel()
const board = must('#board')
const stream = new TaskStreamView(
  must<HTMLCanvasElement>('#stream'), must('#tooltip'), must('#stream-empty'), must('#legend'), must('#stream-note'), model,
  bar => { void story.show(bar.key); revealStory() },
)
const charts = new Charts(must('#chart-throughput'), must('#chart-overhead'))
const workersTable = new WorkersTable(must('#workers'), must('#workers-more'), must('#workers-empty'), must('#events'))
const progress = new ProgressList(must('#groups'), must('#groups-empty'))

let token = readToken()
let clientPromise: Promise<Client> | undefined
/** The page's client connection, opened on first use (Drive, stories) with the token that let us watch. */
function getClient(): Promise<Client> {
  clientPromise ??= Client.connect(origin, { token, name: 'dashboard' }).catch((err: unknown) => {
    clientPromise = undefined
    throw err
  })
  return clientPromise
}
const story = new StoryPanel(must('#story'), getClient, model)
const drive = new DrivePanel(must('#drive'), getClient, () => model.grid?.workers)

function revealStory(): void {
  const card = must('#story')
  const r = card.getBoundingClientRect()
  if (r.top < 0 || r.bottom > innerHeight) card.scrollIntoView({ block: 'nearest', behavior: 'smooth' })
  card.classList.remove('flash')
  void card.offsetWidth
  card.classList.add('flash')
}

// ---------------------------------------------------------------- rendering

const pending = new Set<Changed>()
let frame = 0
let initialWorkers = true

function schedule(changed: Iterable<Changed>): void {
  for (const c of changed) pending.add(c)
  if (!frame) frame = requestAnimationFrame(render)
}

function render(): void {
  frame = 0
  if (pending.has('grid')) renderTotals()
  if (pending.has('tasks') || pending.has('grid')) renderTaskSize()
  if (pending.has('workers')) { workersTable.render(model, initialWorkers); initialWorkers = false }
  if (pending.has('events')) workersTable.renderEvents(model)
  if (pending.has('groups')) progress.render(model)
  if (pending.has('series')) renderSeries()
  if (pending.has('stream')) { stream.invalidate(); stream.updateLegend() }
  pending.clear()
}

function renderTotals(): void {
  const g = model.grid
  if (!g) return
  renderInvite()
  setText(must('#t-workers'), int(g.workers))
  setText(must('#t-slots'), int(g.slots))
  setText(must('#t-running'), int(g.running))
  const last = model.series.at(-1)
  setText(must('#t-rate'), last && model.serverNow() - last[0] < 5000 ? num(last[1]) : '0')
  setText(must('#t-done'), compact(g.finished))
  setText(must('#t-memory'), g.memory ? bytes(g.memory) : '–')
}

function renderSeries(): void {
  charts.update(model.series)
  const last = model.series.at(-1)
  setText(must('#rate-now'), last ? `${num(last[1])} /s` : '')
  const recent = model.series.slice(-5)
  const coord = recent.map(p => p[4]).filter((v): v is number => v !== null).at(-1)
  const sched = recent.map(p => p[3]).filter((v): v is number => v !== null).at(-1)
  setText(must('#overhead-now'), coord !== undefined && sched !== undefined ? `${micros(coord)} · scheduler ${micros(sched)}` : '')
}

function renderTaskSize(): void {
  const t = model.tasks
  const warning = must('#warning')
  const line = must('#task-size')
  if (!t || t.medianMs === null) {
    setText(line, 'Median task: no tasks in the last minute')
    warning.hidden = true
    return
  }
  const parts = [`Median task: ${duration(t.medianMs)} over ${int(t.count)} tasks in the last minute`]
  if (t.overheadUs !== null && t.worthMs !== null) parts.push(`worth distributing from ~${duration(t.worthMs)} (100 × ${micros(t.overheadUs)} overhead)`)
  setText(line, parts.join(' · '))
  line.dataset.tone = t.tooShort ? 'warn' : 'ok'
  if (t.tooShort && t.overheadUs !== null && t.worthMs !== null) {
    setText(must('#warning-text'),
      `The median task ran ${duration(t.medianMs)}, and the coordinator spends about ${micros(t.overheadUs)} of CPU on each task (scheduling, messages, relay), ` +
      `so a task should run at least ${duration(t.worthMs)} — 100 × that — to keep the overhead under 1%. ` +
      `(Dask's guide says the same with its ~1 ms overhead: tasks of ~100 ms.) ` +
      'Batch items into larger tasks: client.map(f, [...partitionAll(1000, items)]).')
    warning.hidden = false
  } else warning.hidden = true
}

// ---------------------------------------------------------------- donate this tab

const DONATING_KEY = 'tabgrid.dashboard.donating'
let volunteer: Volunteer | undefined
const donateButton = must<HTMLButtonElement>('#donate')
const cores = Math.max(1, navigator.hardwareConcurrency || 1)
/** Web Workers this tab gives: one fewer than its cores, as the worker page does, at least one */
const donatedThreads = Math.max(1, cores - 1)
setText(must('#invite-threads'), `${donatedThreads} Web Worker${donatedThreads === 1 ? '' : 's'} of this tab`)
setText(must('#invite-cli'), `npx tabgrid worker ${origin}`)

function renderInvite(): void {
  const g = model.grid
  const st = volunteer?.state.state
  const joining = st === 'starting' || st === 'connecting'
  const donating = st === 'connected' || st === 'reconnecting' || st === 'leaving'
  must('#invite').hidden = !g || g.workers > 0 || donating
  donateButton.disabled = joining
  setText(donateButton, joining ? 'Joining…' : 'Donate this tab')
  if (volunteer?.state.state === 'failed') setText(must('#invite-why'), `this tab could not join: ${volunteer.state.error}`)
  must('#donating').hidden = !donating
  if (donating) {
    const s = volunteer!.stats()
    setText(must('#donating-text'), st === 'leaving' ? 'Handing this tab’s data off…' : `Donating: ${s.threads} Web Worker${s.threads === 1 ? '' : 's'}, ${int(s.done)} done`)
  }
}

async function donate(): Promise<void> {
  volunteer ??= new Volunteer({ url: origin, workers: donatedThreads, memoryBudget: 512e6, name: 'dashboard tab', log: line => console.info(`tabgrid: ${line}`) })
  volunteer.onChange = () => renderInvite()
  sessionStorage.setItem(DONATING_KEY, '1')
  renderInvite()
  await volunteer.start()
  renderInvite()
}

donateButton.addEventListener('click', () => { void donate() })
must<HTMLButtonElement>('#donate-stop').addEventListener('click', () => {
  sessionStorage.removeItem(DONATING_KEY)
  volunteer?.leave()
})
setInterval(() => { if (volunteer) renderInvite() }, 1000)
if (sessionStorage.getItem(DONATING_KEY)) void donate()

// ---------------------------------------------------------------- connection

let state: State = 'connecting'
let link: Link<object, ToDashboardMessage> | undefined

function setState(s: State, text: string, tone: 'good' | 'warn' | 'bad' | 'idle'): void {
  state = s
  const status = must('#status')
  status.dataset.tone = tone
  setText(must('#status-text'), text)
  board.classList.toggle('stale', s !== 'connected')
  stream.freeze(s !== 'connected')
}

async function watch(): Promise<void> {
  setState('connecting', 'Connecting…', 'idle')
  const hello: Hello = { role: 'dashboard' }
  if (token) hello.token = token
  try {
    link = await connectLink<object, ToDashboardMessage>(origin, hello, { timeout: 10_000 })
  } catch (err) {
    if (err instanceof AuthError) { askForToken(token !== undefined, err.message); return }
    setState('unreachable', `Can't reach the coordinator; retrying…`, 'bad')
    setTimeout(() => { void watch() }, 2000)
    return
  }
  if (token) sessionStorage.setItem(TOKEN_KEY, token)
  must('#gate').hidden = true
  board.hidden = false
  must('#totals').hidden = false
  link.onStatus = s => {
    if (s.state === 'connected') setState('connected', 'Live', 'good')
    else if (s.state === 'disconnected') setState('reconnecting', 'Connection lost; reconnecting…', 'warn')
    else if (/token/i.test(s.reason)) askForToken(true, s.reason)
    else setState('unreachable', 'Disconnected', 'bad')
  }
  link.onMessages = msgs => {
    for (const m of msgs) {
      if (m.type === 'stream') { model.apply(m); schedule(model.changed) }
      else if (m.type === 'error') setState(state, `The coordinator says: ${m.error.message}`, 'warn')
    }
  }
  setState('connected', 'Live', 'good')
}

function askForToken(refused: boolean, message: string): void {
  setState('token', refused ? 'Token refused' : 'Needs a token', 'bad')
  sessionStorage.removeItem(TOKEN_KEY)
  board.hidden = true
  must('#totals').hidden = true
  const gate = must('#gate')
  gate.hidden = false
  setText(must('#gate-title'), refused ? 'That token was refused' : 'This grid needs a token')
  setText(must('#gate-message'), refused
    ? `The coordinator said: “${message}”. Check the token and try again: it is the one the coordinator printed when it started (its --client-token, if it was given one).`
    : 'Open the dashboard address the coordinator printed (it carries the token), or enter its client token to watch and drive it.')
  const input = must<HTMLInputElement>('#gate-token')
  input.value = ''
  input.focus()
}

must<HTMLFormElement>('#gate-form').addEventListener('submit', e => {
  e.preventDefault()
  token = must<HTMLInputElement>('#gate-token').value.trim() || undefined
  clientPromise = undefined
  void watch()
})

declare global {
  interface Window {
    tabgridDashboard: {
      readonly state: State
      model: DashboardModel
      /** bars drawn in the last frame of the task stream */
      readonly barsDrawn: number
      drive: DrivePanel
      story: StoryPanel
      /** this tab as a worker, once donated */
      readonly volunteer: Volunteer | undefined
      donate(): Promise<void>
    }
  }
}
window.tabgridDashboard = {
  get state() { return state },
  model,
  get barsDrawn() { return stream.drawn },
  drive,
  story,
  get volunteer() { return volunteer },
  donate,
}

void watch()
