/**
 * Sizes, one convention everywhere (the CLI, the dashboard, the worker page, logs,
 * `String(client)`): decimal SI units, as Dask parses them. `kB`/`KB`, `MB`, `GB`, `TB`
 * are powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024 and are accepted on
 * input. Shown sizes are always decimal: 1,500,000 bytes is "1.5 MB".
 */

const UNITS: Record<string, number> = {
  b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
  k: 1e3, m: 1e6, g: 1e9, t: 1e12,
}

/**
 * Bytes in a size written as a number and an optional unit: "4GB" (4·10⁹), "512 MB",
 * "1.5GiB", "1e9". A bare number is in `defaultUnit` (bytes unless told). Returns NaN
 * for anything else; callers turn that into an error that names their option.
 *
 * @example
 * ```ts
 * parseSize('4GB')                   // 4_000_000_000
 * parseSize('2GiB')                  // 2_147_483_648
 * parseSize('512', 'MB')             // 512_000_000
 * parseSize('lots')                  // NaN
 * ```
 */
export function parseSize(text: string | number, defaultUnit = 'B'): number {
  const m = /^\s*(\d+(?:\.\d+)?(?:e\d+)?|\.\d+)\s*([a-z]+)?\s*$/i.exec(String(text))
  if (!m) return NaN
  const unit = UNITS[(m[2] ?? defaultUnit).toLowerCase()]
  return unit === undefined ? NaN : Math.floor(Number(m[1]) * unit)
}

/**
 * A size for people: "0 B", "512 B", "1.5 kB", "12.3 MB", "128 MB", "4 GB".
 *
 * @example
 * ```ts
 * formatBytes(128_000_000)     // '128 MB'
 * formatBytes(1536)            // '1.5 kB'
 * ```
 */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n)
  const abs = Math.abs(n)
  if (abs < 1000) return `${Math.round(n)} B`
  const units = ['kB', 'MB', 'GB', 'TB', 'PB']
  let v = n / 1000
  let i = 0
  while (Math.abs(v) >= 999.95 && i < units.length - 1) { v /= 1000; i++ }
  const digits = Math.abs(v) >= 100 ? 0 : 1
  return `${Number(v.toFixed(digits))} ${units[i]}`
}
