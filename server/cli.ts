/**
 * The `tabgrid` command: `tabgrid coordinator` and `tabgrid worker URL`.
 */
import { cac } from 'cac'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Level, Logger } from 'pino'
import { startCoordinator, packageRoot } from './http.js'
import { startWorker, type RunningWorker, type WorkerOptions } from './agent.js'
import { makeLogger, lineLogger, LOG_FORMATS, LOG_LEVELS, type LogFormat } from './log.js'
import { machineMemory, parseDuration, parseMemoryLimit } from './flags.js'
import { coordinatorUrl } from '../shared/address.js'

const version = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version
const cli = cac('tabgrid')

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
  .option('--client-token <token>', 'token clients and the dashboard\'s code panel must present')
  .option('--worker-token <token>', 'token workers must present to join')
  .option('--local-workers <n>', 'also start n Node workers (one thread each) in this process, so the grid computes at once', { default: 0 }))
  .example('tabgrid coordinator --port 8786 --client-token s3cret')
  .example('tabgrid coordinator --local-workers 2')
  .action(async (o: { port: unknown; host: string; clientToken?: string; workerToken?: string; localWorkers: unknown } & LogFlags) => {
    const { log, format } = logger('coordinator', o)
    const local = int(o.localWorkers, '--local-workers', 0, 64)
    const port = int(o.port, '--port', 0, 65535)
    const running = await startCoordinator({
      port, host: String(o.host),
      clientToken: o.clientToken === undefined ? undefined : String(o.clientToken),
      workerToken: o.workerToken === undefined ? undefined : String(o.workerToken),
      log: lineLogger(log),
    }).catch((err: Error & { code?: string }) => {
      log.error(err.code === 'EADDRINUSE' ? `port ${port} is in use: stop what listens there, or pick another with --port` : `cannot start: ${err.message}`)
      process.exit(1)
    })
    const banner = {
      url: running.url, workerPage: running.workerPageUrl, dashboard: running.dashboardUrl,
    }
    if (format === 'json') log.info(banner, `tabgrid coordinator ${version} listening on ${running.url}`)
    else if (!o.quiet) {
      console.log(`tabgrid coordinator ${version} listening on ${running.url}`)
      console.log(`  dashboard: ${running.dashboardUrl}`)
      console.log(`  worker page (open it in a browser tab to donate compute): ${running.workerPageUrl}`)
      console.log(`  Node worker: npx tabgrid worker ${running.url}`)
      console.log(`  client: await Client.connect('${running.url}')`)
    }
    const agents: RunningWorker[] = []
    for (let i = 1; i <= local; i++) {
      const name = `local-${i}`
      agents.push(await startWorker(running.url, {
        nprocs: 1, nthreads: 1, name, memoryLimit: Math.floor(machineMemory() / 2 / local),
        ...(o.workerToken === undefined ? {} : { token: String(o.workerToken) }),
        log: lineLogger(log.child({ name })),
      }))
    }
    let stopping = false
    const stop = async (sig: string): Promise<void> => {
      if (stopping) process.exit(1)
      stopping = true
      log.info(`${sig}: shutting down`)
      // the coordinator says goodbye to its workers, the local ones included, then they close
      await running.close()
      await Promise.all(agents.map(a => a.close()))
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
  .option('--lifetime <duration>', 'retire gracefully after this long: hand data off, then leave, e.g. 1h'))
  .example('tabgrid worker http://localhost:8786 --nworkers 2 --nthreads 1')
  .example('tabgrid worker 127.0.0.1:8786 --memory-limit 4GB --lifetime 1h')
  .action(async (address: string | undefined, o: { nworkers?: unknown; nthreads: unknown; token?: string; name?: string; memoryLimit?: unknown; deathTimeout?: unknown; lifetime?: unknown } & LogFlags) => {
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
