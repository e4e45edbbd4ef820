/**
 * `progress(futures)` for Node scripts, as Dask's `distributed.progress`: a terminal bar
 * with done / total, failures, rate and ETA, drawn by cli-progress while the futures run.
 * It draws only on a terminal (a TTY): piped into a file or a CI log it writes nothing, so
 * logs stay clean. Resolves when every future is done, whatever its outcome.
 */
import cliProgress from 'cli-progress'
import { Future, asCompleted } from '../shared/future.js'

export interface ProgressOptions {
  /** where the bar goes. Default process.stderr (stdout stays the script's own) */
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number }
  /** shown before the bar. Default 'tasks' */
  title?: string
  /** ms between redraws. Default 100 */
  intervalMs?: number
}

/** What `progress` saw once every future was done. */
export interface ProgressSummary {
  total: number
  finished: number
  /** failed, cancelled or lost */
  failed: number
  ms: number
}

/**
 * Draws a progress bar for `futures` until all are done.
 *
 * @example
 * ```ts
 * import { Client, progress } from 'tabgrid'
 * const futures = client.map(slowSquare, range)
 * await progress(futures)      // tasks ████████████░░░░ 75% | 750/1000 | 0 failed | 312/s | ETA 1s
 * ```
 */
export async function progress(futures: Future | Iterable<Future>, options: ProgressOptions = {}): Promise<ProgressSummary> {
  const list = futures instanceof Future ? [futures] : [...futures]
  for (const [i, f] of list.entries()) if (!(f instanceof Future)) throw new TypeError(`progress takes Futures, got ${typeof f} at [${i}]`)
  const stream = options.stream ?? process.stderr
  const started = performance.now()
  const bar = stream.isTTY
    ? new cliProgress.SingleBar({
      stream: stream as NodeJS.WritableStream,
      format: `${options.title ?? 'tasks'} {bar} {percentage}% | {value}/{total} | {failed} failed | {rate}/s | ETA {eta_formatted}`,
      barCompleteChar: '█', barIncompleteChar: '░', hideCursor: true, clearOnComplete: false, stopOnComplete: false,
      fps: Math.max(1, Math.round(1000 / (options.intervalMs ?? 100))), etaBuffer: 50, noTTYOutput: false,
    })
    : undefined
  let finished = 0
  let failed = 0
  const payload = (): { failed: number; rate: string } => {
    const s = (performance.now() - started) / 1000
    const rate = s > 0 ? (finished + failed) / s : 0
    return { failed, rate: rate >= 100 ? String(Math.round(rate)) : rate.toFixed(1) }
  }
  bar?.start(list.length, 0, payload())
  try {
    for await (const f of asCompleted(list)) {
      if (f.status === 'finished') finished++
      else failed++
      bar?.update(finished + failed, payload())
    }
  } finally {
    bar?.stop()
  }
  return { total: list.length, finished, failed, ms: performance.now() - started }
}
