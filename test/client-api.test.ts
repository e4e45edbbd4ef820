/**
 * The small things Dask and npm users expect of a client: addresses as people write
 * them, Client.connect() from the environment, client.dashboardLink, a useful
 * String(client) / util.inspect, and progress(futures) on a terminal.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { inspect, promisify } from 'node:util'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { AuthError, Client, startCoordinator, type RunningCoordinator } from 'tabgrid'
import { startGrid, type Grid } from './grid.js'

const exec = promisify(execFile)
let grid: Grid | undefined
let coord: RunningCoordinator | undefined
const saved = { url: process.env.TABGRID_URL, token: process.env.TABGRID_TOKEN }
afterEach(async () => {
  await grid?.close()
  await coord?.close()
  grid = coord = undefined
  for (const [k, v] of [['TABGRID_URL', saved.url], ['TABGRID_TOKEN', saved.token]] as const) {
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  }
})

describe('addresses', () => {
  it('connects to host:port without http://, and has the dashboard link', async () => {
    coord = await startCoordinator({ port: 0 })
    const client = await Client.connect(coord.url.replace('http://', ''), { token: coord.clientToken })
    try {
      expect(client.connected).toBe(true)
      expect(client.dashboardLink).toBe(`${coord.url}/`)
      expect((await fetch(client.dashboardLink!)).status).toBe(200)
    } finally {
      await client.close()
    }
  })

  it("refuses tcp:// and non-addresses at once, saying what to write", async () => {
    await expect(Client.connect('tcp://127.0.0.1:8786')).rejects.toThrow(/speaks HTTP and WebSocket, not tcp:\/\/ \(Dask's scheme\): use http:\/\/127\.0\.0\.1:8786/)
    await expect(Client.connect('tcp://127.0.0.1:8786')).rejects.toBeInstanceOf(TypeError)
    await expect(Client.connect('not an address')).rejects.toThrow(/not a coordinator address|must be a URL/)
  })
})

describe('Client.connect() with no address', () => {
  it('reads TABGRID_URL and TABGRID_TOKEN', async () => {
    coord = await startCoordinator({ port: 0, clientToken: 'env-secret' })
    process.env.TABGRID_URL = coord.url
    process.env.TABGRID_TOKEN = 'env-secret'
    const client = await Client.connect()
    expect(client.dashboardLink).toBe(`${coord.url}/`)
    await client.close()
    // the same coordinator written another way still gets the environment's token
    await (await Client.connect(coord.url.replace('http://', ''))).close()
  })

  it("sends the environment's token only to the environment's coordinator", async () => {
    coord = await startCoordinator({ port: 0, clientToken: 'other' })
    process.env.TABGRID_URL = 'http://127.0.0.1:1'
    process.env.TABGRID_TOKEN = 'other'
    await expect(Client.connect(coord.url)).rejects.toBeInstanceOf(AuthError)
  })

  it('says what it needs when TABGRID_URL is not set', async () => {
    delete process.env.TABGRID_URL
    await expect(Client.connect()).rejects.toThrow("Client.connect() needs the coordinator's address, e.g. Client.connect('http://127.0.0.1:8786'), or TABGRID_URL set in the environment")
  })
})

describe('String(client) and util.inspect', () => {
  it('show the address, the workers and slots, memory and the futures held, like Dask\'s repr', async () => {
    grid = await startGrid({ workers: 2, workerArgs: ['--nworkers', '2'] })
    const client = await Client.connect(grid.url, { token: grid.token })
    try {
      expect(String(client)).toBe(`<Client: '${grid.url}' workers=2 slots=4 memory=0 B futures=0>`)
      const fs = client.map(n => new Float64Array(n), [1000, 2000])
      const slow = client.submit(() => new Promise(() => {}))
      expect(String(client)).toMatch(/futures=3 \(3 pending\)>$/)
      await client.gather(fs)
      await client.workers()
      expect(inspect(client)).toMatch(new RegExp(`^<Client: '${grid.url}' workers=2 slots=4 memory=24 kB futures=3 \\(1 pending\\)>$`))
      expect(`${client}`).toBe(inspect(client))
      slow.release()
    } finally {
      await client.close()
    }
    expect(String(client)).toMatch(/^<Client: '.*' closed workers=2/)
  })

  it('say local for Client.local', async () => {
    const client = await Client.local({ workers: 2 })
    try {
      expect(String(client)).toBe('<Client: local workers=1 slots=2 memory=0 B futures=0>')
      expect(client.dashboardLink).toBeUndefined()
    } finally {
      await client.close()
    }
  })
})

describe('progress(futures)', () => {
  const script = fileURLToPath(new URL('./fixtures/progress-script.mjs', import.meta.url))

  it('draws a bar with done/total, failures, rate and ETA on a terminal', async () => {
    // `script` runs the program on a real pseudo-terminal
    const { stdout } = await exec('script', ['-qfec', `${process.execPath} ${script}`, '/dev/null'], { timeout: 60_000 })
    const screen = stdout.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')
    expect(screen).toMatch(/squares [█░]+ 100% \| 20\/20 \| 1 failed \| [\d.]+\/s \| ETA 0s/)
    expect(screen).toMatch(/squares [█░]+ \d+% \| \d+\/20 \|/)
    expect(screen).toContain('{"total":20,"finished":19,"failed":1}')
  })

  it('writes nothing when its output is not a terminal', async () => {
    const { stdout, stderr } = await exec(process.execPath, [script], { timeout: 60_000 })
    expect(stderr).toBe('')
    expect(stdout.trim()).toBe('{"total":20,"finished":19,"failed":1}')
  })
})
