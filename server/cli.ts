/**
 * The `tabgrid` command: `tabgrid coordinator` and `tabgrid worker URL`.
 */
import { cac } from 'cac'
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join, resolve as resolvePath } from 'node:path'
import type { Level, Logger } from 'pino'
import { startCoordinator, packageRoot } from './http.js'
import { startWorker, type RunningWorker, type WorkerOptions } from './agent.js'
import { makeLogger, lineLogger, LOG_FORMATS, LOG_LEVELS, type LogFormat } from './log.js'
import { machineMemory, parseDuration, parseMemoryLimit } from './flags.js'
import { coordinatorUrl } from '../shared/address.js'
import { runSandboxed, inSandbox, exitWithParent, sandboxSpillDir, EXIT_WITH_PARENT } from './sandbox.js'

const version = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version
const cli = cac('tabgrid')
/** where `tabgrid coordinator` journals unless told otherwise: the working folder */
const DEFAULT_JOURNAL = 'tabgrid-journal.db'

/** A flag's value was wrong: say which and how, and exit 2 (nothing has started yet). */
function usage(message: string): never {
  console.error(`tabgrid: ${message}`)
  process.exit(2)
}

function int(value: unknown, name: string, min: number, max: number): number {
  const n = Number(value)
  if (value === true || !Number.isInteger(n) || n < min || n > max) usage(`${name} must be a whole number from ${min} to ${max} (got ${String(value)})`)
  return n
}

function flag<T>(parse: () => T): T {
  try { return parse() } catch (err) { usage((err as Error).message) }
}

interface LogFlags { logFormat?: unknown; logLevel?: unknown; quiet?: boolean }

function logger(name: string, o: LogFlags): { log: Logger; format: LogFormat } {
  const format = String(o.logFormat ?? 'text') as LogFormat
  if (!LOG_FORMATS.includes(format)) usage(`--log-format must be ${LOG_FORMATS.join(' or ')} (got ${format})`)
  const level = String(o.logLevel ?? (o.quiet ? 'warn' : 'info')) as Level
  if (!LOG_LEVELS.includes(level)) usage(`--log-level must be one of ${LOG_LEVELS.join(', ')} (got ${level})`)
  return { log: makeLogger({ name, format, level }), format }
}

const logOptions = <T extends ReturnType<typeof cli.command>>(c: T): T => c
  .option('--log-format <format>', 'text (for people) or json (one pino record a line, for log collectors)', { default: 'text' })
  .option('--log-level <level>', 'lowest level logged: debug, info, warn or error (default: info)')
  .option('--quiet', 'log only warnings and errors')

logOptions(cli.command('coordinator', 'Run the coordinator: schedules tasks onto browser tabs and Node workers')
  .option('--port <port>', 'port to listen on (0 picks a free one)', { default: 8786 })
  .option('--host <host>', 'address to listen on (0.0.0.0 for every interface)', { default: '127.0.0.1' })
  .option('--client-token <token>', 'token clients and the dashboard must present (default: one made for this run, printed below)')
  .option('--worker-token <token>', 'token workers must present to join')
  .option('--allow-origin <origin>', 'a web app\'s origin (https://app.example.org) whose pages may connect; repeat for more, \'*\' for any')
  .option('--spot-check <rate>', 'how often a new worker\'s results are re-run on another volunteer to check them, 0 to 1 (default 0.5, falling as it earns trust; 0 turns spot checks off)')
  .option('--trust-proxy', 'behind a reverse proxy: each connection\'s address is the last entry of its X-Forwarded-For header')
  .option('--local-workers <n>', 'also start n Node workers (one thread each) in this process, so the grid computes at once', { default: 0 })
  .option('--journal [path]', `SQLite file where the coordinator journals what a restart must not lose (default: ./${DEFAULT_JOURNAL})`)
  .option('--no-journal', 'keep no journal: a restart forgets every client, task and result'))
  .example('tabgrid coordinator --port 8786 --client-token s3cret')
  .example('tabgrid coordinator --local-workers 2')
  .action(async (o: { port: unknown; host: string; clientToken?: string; workerToken?: string; allowOrigin?: unknown; trustProxy?: boolean; spotCheck?: unknown; localWorkers: unknown; journal?: unknown } & LogFlags) => {
    const { log, format } = logger('coordinator', o)
    if (Array.isArray(o.journal)) usage('--journal is given more than once')
    if (o.journal === '') usage('--journal needs a file name (or --no-journal for none)')
    const journal = o.journal === false ? false : resolvePath(typeof o.journal === 'string' ? o.journal : DEFAULT_JOURNAL)
    const local = int(o.localWorkers, '--local-workers', 0, 64)
    const port = int(o.port, '--port', 0, 65535)
    const spot = o.spotCheck === undefined ? undefined : Number(o.spotCheck)
    if (spot !== undefined && !(spot >= 0 && spot <= 1)) usage(`--spot-check must be a rate from 0 to 1 (got ${String(o.spotCheck)})`)
    const allowOrigin = (o.allowOrigin === undefined ? [] : Array.isArray(o.allowOrigin) ? o.allowOrigin : [o.allowOrigin]).map(String)
    const running = await startCoordinator({
      port, host: String(o.host),
      clientToken: o.clientToken === undefined ? undefined : String(o.clientToken),
      workerToken: o.workerToken === undefined ? undefined : String(o.workerToken),
      allowOrigin, journal,
      trustProxy: o.trustProxy === true,
      ...(spot === undefined ? {} : { spotCheck: spot === 0 ? false as const : { rate: spot, floor: Math.min(0.02, spot) } }),
      log: lineLogger(log),
    }).catch((err: Error & { code?: string }) => {
      log.error(err.code === 'EADDRINUSE' ? `port ${port} is in use: stop what listens there, or pick another with --port` : `cannot start: ${err.message}`)
      process.exit(1)
    })
    // the dashboard's address carries the client token (as Jupyter prints its URL)
    const workerPage = o.workerToken === undefined ? running.workerPageUrl : `${running.workerPageUrl}?token=${encodeURIComponent(String(o.workerToken))}`
    const banner = {
      url: running.url, workerPage, dashboard: running.dashboardUrl,
    }
    if (format === 'json') log.info(banner, `tabgrid coordinator ${version} listening on ${running.url}`)
    else if (!o.quiet) {
      console.log(`tabgrid coordinator ${version} listening on ${running.url}`)
      console.log(`  dashboard: ${running.dashboardUrl}`)
      console.log(`  worker page (open it in a browser tab to donate compute): ${workerPage}`)
      console.log(`  journal: ${journal === false ? 'none (--no-journal): a restart forgets everything' : journal}`)
      console.log(`  Node worker: npx tabgrid worker ${running.url}${o.workerToken === undefined ? '' : ` --token ${String(o.workerToken)}`}`)
      console.log(running.clientToken
        ? `  client: TABGRID_URL=${running.url} TABGRID_TOKEN=${running.clientToken}, then await Client.connect()`
        : `  client: await Client.connect('${running.url}')`)
    }
    // local workers are Node agents like any other, in processes of their own: their
    // tasks are clients' code, so they run under Node's permission model too
    const agents: ChildProcess[] = []
    for (let i = 1; i <= local; i++) {
      const args = [
        join(packageRoot, 'bin', 'tabgrid.js'), 'worker', running.url, '--nworkers', '1', '--nthreads', '1', '--name', `local-${i}`,
        '--memory-limit', String(Math.floor(machineMemory() / 2 / local)), '--log-format', format,
        ...(o.logLevel !== undefined ? ['--log-level', String(o.logLevel)] : o.quiet ? ['--quiet'] : []),
        ...(o.workerToken === undefined ? [] : ['--token', String(o.workerToken)]),
      ]
      agents.push(spawn(process.execPath, args, { stdio: ['pipe', 'inherit', 'inherit'], env: { ...process.env, [EXIT_WITH_PARENT]: '1' } }))
    }
    let stopping = false
    const stop = async (sig: string): Promise<void> => {
      if (stopping) process.exit(1)
      stopping = true
      log.info(`${sig}: shutting down`)
      // the coordinator says goodbye to its workers, the local ones included, then they close
      await running.close()
      await Promise.all(agents.map(a => a.exitCode !== null ? undefined : new Promise(r => { a.once('exit', r); setTimeout(() => { a.kill('SIGKILL'); r(undefined) }, 5_000).unref() })))
      process.exit(0)
    }
    process.on('SIGINT', () => void stop('SIGINT'))
    process.on('SIGTERM', () => void stop('SIGTERM'))
  })

logOptions(cli.command('worker [url]', 'Join a coordinator as a Node worker (URL: its address; default TABGRID_URL)')
  .option('--nworkers, --nprocs <n>', 'worker threads (Dask\'s worker processes); default: the number of cores')
  .option('--nthreads <n>', 'tasks each thread runs at once (Dask\'s threads)', { default: 1 })
  .option('--token <token>', 'the coordinator\'s worker token')
  .option('--name <name>', 'a name shown on the dashboard')
  .option('--memory-limit <limit>', 'results kept in memory before spilling to disk: auto (the machine\'s memory), a fraction like 0.5, or a size like 4GB (default: 0.5)')
  .option('--death-timeout <duration>', 'give up when the coordinator has been gone this long, e.g. 60 (seconds), 5m (default: keep trying)')
  .option('--lifetime <duration>', 'retire gracefully after this long: hand data off, then leave, e.g. 1h')
  .option('--trust-tasks', 'run tasks without Node\'s permission model (they may then read files and start processes)')
  .option('--local-address <address>', 'the local address to connect from, on a machine with several'))
  .example('tabgrid worker http://localhost:8786 --nworkers 2 --nthreads 1')
  .example('tabgrid worker 127.0.0.1:8786 --memory-limit 4GB --lifetime 1h')
  .action(async (address: string | undefined, o: { nworkers?: unknown; nthreads: unknown; token?: string; name?: string; memoryLimit?: unknown; deathTimeout?: unknown; lifetime?: unknown; trustTasks?: boolean; localAddress?: unknown } & LogFlags) => {
    // started by a coordinator's --local-workers: go when it goes
    if (process.env[EXIT_WITH_PARENT] === '1') exitWithParent()
    if (!o.trustTasks && !inSandbox()) {
      // tasks are other people's code: run the agent again under Node's permission model
      process.exit(await runSandboxed(process.argv.slice(2)))
    }
    if (inSandbox()) exitWithParent()
    const { log: logger_ } = logger('worker', o)
    const log = lineLogger(logger_)
    const given = address ?? process.env.TABGRID_URL
    if (given === undefined) usage('worker needs the coordinator\'s address: tabgrid worker http://HOST:8786 (or TABGRID_URL set)')
    let url: string
    try { url = coordinatorUrl(given) } catch (err) { usage((err as Error).message) }
    const opts: WorkerOptions = { nthreads: int(o.nthreads, '--nthreads', 1, 1024), log }
    opts.memoryLimit = o.memoryLimit === undefined ? Math.floor(machineMemory() / 2) : flag(() => parseMemoryLimit(o.memoryLimit))
    if (o.nworkers !== undefined) opts.nprocs = int(o.nworkers, '--nworkers', 1, 1024)
    if (o.token !== undefined) opts.token = String(o.token)
    if (o.name !== undefined) opts.name = String(o.name)
    if (o.deathTimeout !== undefined) opts.deathTimeout = flag(() => parseDuration(o.deathTimeout, '--death-timeout'))
    if (o.lifetime !== undefined) opts.lifetime = flag(() => parseDuration(o.lifetime, '--lifetime'))
    const spill = sandboxSpillDir()
    if (spill !== undefined) opts.spillDir = spill
    if (o.localAddress !== undefined) opts.localAddress = String(o.localAddress)
    let worker: RunningWorker
    try {
      worker = await startWorker(url, opts)
    } catch (err) {
      log(`${(err as Error).message}`, 'error')
      process.exit(1)
    }
    let stopping = false
    const stop = async (sig: string): Promise<void> => {
      if (stopping) { log('exiting now'); process.exit(1) }
      stopping = true
      log(`${sig}: handing data off and leaving (press again to quit at once)`)
      await worker.retire(10_000)
      process.exit(0)
    }
    process.on('SIGINT', () => void stop('SIGINT'))
    process.on('SIGTERM', () => void stop('SIGTERM'))
    const why = await worker.closed
    const gaveUp = why.includes('--death-timeout')
    log(`left: ${why}`, gaveUp ? 'error' : 'info')
    await worker.close()
    process.exit(gaveUp ? 1 : 0)
  })

cli.help()
cli.version(version)

try {
  cli.parse(process.argv, { run: false })
  if (cli.matchedCommand) await cli.runMatchedCommand()
  else if (cli.args.length) usage(`unknown command "${cli.args.join(' ')}"; try tabgrid --help`)
  else if (!cli.options.help && !cli.options.version) cli.outputHelp()
} catch (err) {
  usage((err as Error).message)
}
