/**
 * A SpillStore on disk, for Node agents: one file per key in a directory (by default a
 * fresh `os.tmpdir()/tabgrid-spill-XXXXXX`, made on first use).
 *
 * A key's file is named by the SHA-256 of the key (any key makes a safe, short name, and
 * a client cannot pick a key that collides with another), with suffix `.spill`. The file
 * holds `u32 LE byte length of the key | the key in UTF-16LE (exact, lone surrogates
 * included) | the value's bytes`, so `keys()`
 * can list the keys of a directory reopened after a restart, and `get` checks that the
 * file is the key's. Writes go to a temporary file renamed into place, so a crash never
 * leaves a half-written value under a key. `clear()` removes the directory (the next
 * write makes it again).
 */
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, open, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { SpillStore } from '../shared/spill.js'

const SUFFIX = '.spill'
/** longest key header read when listing (keys are capped at 256 UTF-16 units on the wire) */
const MAX_KEY_BYTES = 4096
/** files opened at once when listing */
const LIST_CONCURRENCY = 32

let tmpCounter = 0

/** A key's exact bytes (UTF-16LE keeps lone surrogates, which UTF-8 would replace). */
function keyBytes(key: string): Buffer {
  return Buffer.from(key, 'utf16le')
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT'
}

export class DiskSpillStore implements SpillStore {
  private dirPromise: Promise<string> | undefined

  /** `dir`: the directory to use (made if missing, kept if it has files: a restarted agent finds its data). Default: a fresh temporary directory. */
  constructor(private readonly dir?: string) {}

  /** The directory in use (made on first call). */
  directory(): Promise<string> {
    if (!this.dirPromise) {
      const p = this.dir !== undefined
        ? mkdir(this.dir, { recursive: true }).then(() => this.dir!)
        : mkdtemp(join(tmpdir(), 'tabgrid-spill-'))
      this.dirPromise = p
      p.catch(() => { if (this.dirPromise === p) this.dirPromise = undefined })
    }
    return this.dirPromise
  }

  private fileName(key: string): string {
    return createHash('sha256').update(keyBytes(key)).digest('hex') + SUFFIX
  }

  async set(key: string, data: Uint8Array): Promise<void> {
    const dir = await this.directory()
    const kb = keyBytes(key)
    const header = Buffer.allocUnsafe(4)
    header.writeUInt32LE(kb.length, 0)
    const final = join(dir, this.fileName(key))
    const tmp = `${final}.${process.pid}.${++tmpCounter}.tmp`
    try {
      await writeFile(tmp, [header, kb, data])
      await rename(tmp, final)
    } catch (err) {
      await unlink(tmp).catch(() => {})
      throw err
    }
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const dir = await this.directory()
    const kb = keyBytes(key)
    let fh
    try {
      fh = await open(join(dir, this.fileName(key)), 'r')
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
    try {
      const { size } = await fh.stat()
      const headerLen = 4 + kb.length
      if (size < headerLen) return undefined
      const header = Buffer.alloc(headerLen)
      await readFully(fh, header, 0)
      if (header.readUInt32LE(0) !== kb.length || !header.subarray(4).equals(kb)) return undefined
      // an exactly sized buffer of its own, so the caller can transfer it
      const out = new Uint8Array(size - headerLen)
      await readFully(fh, out, headerLen)
      return out
    } finally {
      await fh.close()
    }
  }

  async del(keys: string[]): Promise<void> {
    if (keys.length === 0) return
    const dir = await this.directory()
    await Promise.all(keys.map(k => unlink(join(dir, this.fileName(k))).catch(err => { if (!isMissing(err)) throw err })))
  }

  async keys(): Promise<string[]> {
    const dir = await this.directory()
    let names: string[]
    try {
      names = (await readdir(dir)).filter(n => n.endsWith(SUFFIX))
    } catch (err) {
      if (isMissing(err)) return []
      throw err
    }
    const out: string[] = []
    for (let i = 0; i < names.length; i += LIST_CONCURRENCY) {
      const found = await Promise.all(names.slice(i, i + LIST_CONCURRENCY).map(n => this.keyOf(join(dir, n), n)))
      for (const k of found) if (k !== undefined) out.push(k)
    }
    return out
  }

  async size(key: string): Promise<number | undefined> {
    const dir = await this.directory()
    try {
      const st = await stat(join(dir, this.fileName(key)))
      const n = st.size - 4 - 2 * key.length
      return n >= 0 ? n : undefined
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
  }

  async clear(): Promise<void> {
    const p = this.dirPromise
    if (!p) {
      if (this.dir !== undefined) await rm(this.dir, { recursive: true, force: true })
      return
    }
    this.dirPromise = undefined
    let dir: string
    try { dir = await p } catch { return }
    await rm(dir, { recursive: true, force: true })
  }

  /** The key a file holds, read from its header (undefined for a file that is not one of ours). */
  private async keyOf(path: string, name: string): Promise<string | undefined> {
    let fh
    try {
      fh = await open(path, 'r')
    } catch {
      return undefined
    }
    try {
      const len = Buffer.alloc(4)
      if ((await fh.read(len, 0, 4, 0)).bytesRead !== 4) return undefined
      const n = len.readUInt32LE(0)
      if (n > MAX_KEY_BYTES || n % 2 !== 0) return undefined
      const kb = Buffer.alloc(n)
      if ((await fh.read(kb, 0, n, 4)).bytesRead !== n) return undefined
      const key = kb.toString('utf16le')
      return this.fileName(key) === name ? key : undefined
    } catch {
      return undefined
    } finally {
      await fh.close()
    }
  }
}

async function readFully(fh: import('node:fs/promises').FileHandle, into: Uint8Array, position: number): Promise<void> {
  let done = 0
  while (done < into.byteLength) {
    const { bytesRead } = await fh.read(into, done, Math.min(into.byteLength - done, 1 << 30), position + done)
    if (bytesRead === 0) throw new Error('spill file ended early')
    done += bytesRead
  }
}
