/**
 * The worker's size and duration flags, in Dask's spellings. Each throws a RangeError
 * that names the flag and shows what to write; the CLI prints it and exits 2.
 */
import { totalmem } from 'node:os'
import ms from 'ms'
import { parseSize } from '../shared/size.js'

/** The memory this machine (or the cgroup it runs in) gives the process. */
export function machineMemory(): number {
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.() ?? 0
  return constrained > 0 ? Math.min(constrained, totalmem()) : totalmem()
}

/**
 * `--memory-limit`: `auto` (the machine's memory), a fraction of it (`0.5`), or a size
 * (`4GB` = 4·10⁹ bytes, `4GiB` = 4·2³⁰, a bare number is bytes).
 *
 * @example
 * ```ts
 * parseMemoryLimit('4GB')          // 4_000_000_000
 * parseMemoryLimit('0.5', 16e9)    // 8_000_000_000
 * parseMemoryLimit('auto', 16e9)   // 16_000_000_000
 * ```
 */
export function parseMemoryLimit(value: unknown, total = machineMemory()): number {
  const text = String(value).trim()
  let n: number
  if (text.toLowerCase() === 'auto') n = total
  else if (/^(0?\.\d+|1(\.0*)?)$/.test(text)) n = Number(text) * total
  else n = parseSize(text)
  if (!(n >= 1e6)) throw new RangeError(`--memory-limit must be auto, a fraction of the machine's memory like 0.5, or a size of at least 1MB like 512MB or 4GB (got ${text || 'nothing'})`)
  return Math.floor(n)
}

/**
 * `--death-timeout`, `--lifetime`: seconds (`60`, as Dask reads a bare number), or a
 * number with a unit (`90s`, `5m`, `1h`, `1 hour`, `500ms`). Returns ms.
 *
 * @example
 * ```ts
 * parseDuration('60', '--lifetime')       // 60_000
 * parseDuration('1 hour', '--lifetime')   // 3_600_000
 * ```
 */
export function parseDuration(value: unknown, flag: string): number {
  const text = String(value).trim()
  const n = /^\d+(\.\d+)?$/.test(text) ? Number(text) * 1000 : text === '' || text.length > 100 ? undefined : (ms as unknown as (s: string) => number | undefined)(text)
  if (n === undefined || !Number.isFinite(n) || n < 1 || n > 2 ** 31 - 1) throw new RangeError(`${flag} must be a duration like 60 (seconds), 90s, 5m or 1h (got ${text || 'nothing'})`)
  return Math.round(n)
}
