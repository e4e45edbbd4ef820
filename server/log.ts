/**
 * The command's logs, through pino: levels, one record per line. `text` (the default) is
 * pino-pretty's `[12:00:01.234] INFO (coordinator): worker w1 (w-…) joined`, coloured on a
 * terminal; `json` is pino's own records (`{"level":30,"time":…,"name":"coordinator","msg":…}`)
 * for log collectors. Both write synchronously, so nothing is lost when the process exits.
 */
import { pino, type Logger, type Level } from 'pino'
import pretty from 'pino-pretty'

export type LogFormat = 'text' | 'json'
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json']
export const LOG_LEVELS: readonly Level[] = ['debug', 'info', 'warn', 'error']

export interface LogOptions {
  /** what the records are about: 'coordinator', 'worker' */
  name: string
  format?: LogFormat
  /** the lowest level written. Default 'info' */
  level?: Level | 'silent'
  /** file descriptor to write to. Default 1 (stdout) */
  fd?: number
}

/**
 * A logger for the command.
 *
 * @example
 * ```ts
 * const log = makeLogger({ name: 'coordinator', format: 'json' })
 * log.info({ client: 'c-1' }, 'client c-1 connected')
 * ```
 */
export function makeLogger(o: LogOptions): Logger {
  const opts = { name: o.name, level: o.level ?? 'info', base: { pid: process.pid } }
  if ((o.format ?? 'text') === 'json') return pino(opts, pino.destination({ fd: o.fd ?? 1, sync: true }))
  const fd = o.fd ?? 1
  const colorize = fd === 1 ? process.stdout.isTTY === true : fd === 2 ? process.stderr.isTTY === true : false
  return pino(opts, pretty({ sync: true, destination: fd, colorize, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }))
}

/** The `(line, level)` callback the coordinator and the agent log through, onto a logger. */
export function lineLogger(logger: Logger): (line: string, level?: 'info' | 'warn' | 'error') => void {
  return (line, level = 'info') => { logger[level](line) }
}
