/**
 * A coordinator's address as people write it, made into the URL a socket connects to,
 * or refused at once with a message that says what to write instead (an address that
 * can't work must not wait for a connect timeout to say so).
 */

/** The port a coordinator listens on by default (Dask's scheduler port). */
export const DEFAULT_PORT = 8786

/**
 * `http://host:port` from what a user typed: `http(s)://host:port` as it is, `host:port`
 * and `host` (port 8786) with `http://` added, `ws(s)://` as `http(s)://`. A path, query or
 * hash is dropped (any page of a coordinator leads to the same coordinator; socket.io
 * would take a path for a namespace). Throws a TypeError for other schemes (Dask's
 * `tcp://` included: a tabgrid coordinator speaks HTTP and WebSocket) and for text that
 * is not an address.
 *
 * @example
 * ```ts
 * coordinatorUrl('127.0.0.1:8786')              // 'http://127.0.0.1:8786'
 * coordinatorUrl('grid.example.org')            // 'http://grid.example.org:8786'
 * coordinatorUrl('https://grid.example.org/')   // 'https://grid.example.org'
 * coordinatorUrl('tcp://127.0.0.1:8786')        // TypeError: … use http://127.0.0.1:8786
 * ```
 */
export function coordinatorUrl(address: unknown): string {
  if (typeof address !== 'string' || address.trim() === '') {
    throw new TypeError(`the coordinator's address must be a URL like 'http://127.0.0.1:${DEFAULT_PORT}', got ${address === '' ? 'an empty string' : typeof address === 'string' ? 'blanks' : String(address)}`)
  }
  const text = address.trim()
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text)?.[1]?.toLowerCase()
  let withScheme: string
  if (scheme === undefined) {
    if (/^[a-z][a-z0-9+.-]*:(?!\d)/i.test(text) && !/^\[/.test(text)) {
      throw new TypeError(`"${text}" is not a coordinator address: write it as http://HOST:PORT, e.g. http://127.0.0.1:${DEFAULT_PORT}`)
    }
    withScheme = `http://${text}`
  } else if (scheme === 'http' || scheme === 'https') withScheme = text
  else if (scheme === 'ws' || scheme === 'wss') withScheme = `http${scheme === 'wss' ? 's' : ''}${text.slice(scheme.length)}`
  else {
    const rest = text.slice(scheme.length + 3)
    throw new TypeError(`"${text}": a tabgrid coordinator speaks HTTP and WebSocket, not ${scheme}://${scheme === 'tcp' || scheme === 'tls' ? ' (Dask\'s scheme)' : ''}: use http://${rest.replace(/\/.*$/, '') || `127.0.0.1:${DEFAULT_PORT}`}`)
  }
  let url: URL
  try { url = new URL(withScheme) } catch {
    throw new TypeError(`"${text}" is not a coordinator address: write it as http://HOST:PORT, e.g. http://127.0.0.1:${DEFAULT_PORT}`)
  }
  if (url.hostname === '') throw new TypeError(`"${text}" has no host: write it as http://HOST:PORT, e.g. http://127.0.0.1:${DEFAULT_PORT}`)
  if (url.username || url.password) throw new TypeError(`"${text}": put the token in the token option, not in the address`)
  // an address without a port means the coordinator's default one, as Dask's does (http://h:80 stays explicit)
  const explicitPort = /^[a-z]+:\/\/(\[[^\]]*\]|[^/?#:]*):\d+/i.test(withScheme)
  const port = explicitPort ? `:${url.port || (url.protocol === 'https:' ? '443' : '80')}` : scheme === undefined ? `:${DEFAULT_PORT}` : ''
  return `${url.protocol}//${url.hostname}${port}`
}
