/**
 * The `tabgrid` command: `tabgrid coordinator` and `tabgrid worker URL`.
 */
import { cac } from 'cac'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startCoordinator, packageRoot } from './http.js'
import { startWorker } from './agent.js'

const version = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version
const cli = cac('tabgrid')

const log = (line: string): void => { console.log(`[${new Date().toISOString().slice(11, 23)}] ${line}`) }

function int(value: unknown, name: string, min: number, max: number): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`tabgrid: ${name} must be a whole number from ${min} to ${max} (got ${String(value)})`)
    process.exit(2)
  }
  return n
}

/** "4GB", "512MB", "1e9" → bytes. */
function bytes(value: unknown, name: string): number {
  const m = /^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$/i.exec(String(value))
  const units: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 }
  const n = m ? Number(m[1]) * units[(m[2] ?? 'b').toLowerCase()]! : NaN
  if (!(n >= 1 << 20)) {
    console.error(`tabgrid: ${name} must be a size of at least 1MB, like 512MB or 4GB (got ${String(value)})`)
    process.exit(2)
  }
  return Math.floor(n)
}

cli.command('coordinator', 'Run the coordinator: schedules tasks onto browser tabs and Node workers')
  .option('--port <port>', 'port to listen on (0 picks a free one)', { default: 8786 })
  .option('--host <host>', 'address to listen on (0.0.0.0 for every interface)', { default: '127.0.0.1' })
  .option('--client-token <token>', 'token clients and the dashboard\'s code panel must present')
  .option('--worker-token <token>', 'token workers must present to join')
  .option('--quiet', 'log only errors')
  .example('tabgrid coordinator --port 8786 --client-token s3cret')
  .action(async (o: { port: unknown; host: string; clientToken?: string; workerToken?: string; quiet?: boolean }) => {
    const running = await startCoordinator({
      port: int(o.port, '--port', 0, 65535), host: String(o.host),
      clientToken: o.clientToken === undefined ? undefined : String(o.clientToken),
      workerToken: o.workerToken === undefined ? undefined : String(o.workerToken),
      log: o.quiet ? () => {} : log,
    })
    console.log(`tabgrid coordinator ${version} listening on ${running.url}`)
    console.log(`  worker page (open it in a browser tab to donate compute): ${running.workerPageUrl}`)
    console.log(`  dashboard: ${running.dashboardUrl}`)
    console.log(`  Node worker: npx tabgrid worker ${running.url}`)
    console.log(`  client: await Client.connect('${running.url}')`)
    const stop = async (sig: string): Promise<void> => {
      log(`${sig}: shutting down`)
      await running.close()
      process.exit(0)
    }
    process.once('SIGINT', () => void stop('SIGINT'))
    process.once('SIGTERM', () => void stop('SIGTERM'))
  })

cli.command('worker <url>', 'Join a coordinator as a Node worker')
  .option('--nprocs <n>', 'worker threads (Dask\'s processes); default: the number of cores')
  .option('--nthreads <n>', 'tasks each thread runs at once (Dask\'s threads)', { default: 1 })
  .option('--token <token>', 'the coordinator\'s worker token')
  .option('--name <name>', 'a name shown on the dashboard')
  .option('--memory-limit <size>', 'results kept in memory before spilling to disk, e.g. 4GB or 512MB (default: half the machine\'s memory)')
  .example('tabgrid worker http://localhost:8786 --nprocs 2 --nthreads 1')
  .action(async (url: string, o: { nprocs?: unknown; nthreads: unknown; token?: string; name?: string; memoryLimit?: unknown }) => {
    const opts: Parameters<typeof startWorker>[1] = { nthreads: int(o.nthreads, '--nthreads', 1, 1024), log }
    if (o.memoryLimit !== undefined) opts.memoryLimit = bytes(o.memoryLimit, '--memory-limit')
    if (o.nprocs !== undefined) opts.nprocs = int(o.nprocs, '--nprocs', 1, 1024)
    if (o.token !== undefined) opts.token = String(o.token)
    if (o.name !== undefined) opts.name = String(o.name)
    let worker: Awaited<ReturnType<typeof startWorker>>
    try {
      worker = await startWorker(url, opts)
    } catch (err) {
      console.error(`tabgrid worker: ${(err as Error).message}`)
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
    process.once('SIGINT', () => void stop('SIGINT'))
    process.on('SIGTERM', () => void stop('SIGTERM'))
    const why = await worker.closed
    log(`left: ${why}`)
    await worker.close()
    process.exit(0)
  })

cli.help()
cli.version(version)

try {
  cli.parse(process.argv, { run: false })
  if (cli.matchedCommand) await cli.runMatchedCommand()
  else if (cli.args.length) {
    console.error(`tabgrid: unknown command "${cli.args.join(' ')}"; try tabgrid --help`)
    process.exit(2)
  } else if (!cli.options.help && !cli.options.version) cli.outputHelp()
} catch (err) {
  console.error(`tabgrid: ${(err as Error).message}`)
  process.exit(2)
}
