/**
 * Where an executor puts values that do not fit its memory budget: encoded bytes by key.
 * Implementations: `MemorySpillStore` (tests), `DiskSpillStore` (server/spill-disk.ts,
 * Node agents), `IdbSpillStore` (web/spill-idb.ts, worker tabs, via idb-keyval).
 *
 * The executor serializes operations on one key (a `set` is finished before a later
 * `get`, `set` or `del` of that key starts), so a store needs no locking of its own.
 * Bytes given to `set` must be copied or written before the promise resolves; bytes
 * returned by `get` belong to the caller (it may transfer their buffer).
 *
 * Plain ES2023: no Node or DOM types.
 */
export interface SpillStore {
  set(key: string, data: Uint8Array): Promise<void>
  /** the bytes stored under key, or undefined when there are none */
  get(key: string): Promise<Uint8Array | undefined>
  /** deletes these keys; unknown keys are ignored */
  del(keys: string[]): Promise<void>
  /** every key stored (a store reopened after a reload lists what it kept) */
  keys(): Promise<string[]>
  /** deletes everything */
  clear(): Promise<void>
  /** Optional: byte length of a stored value without reading it (undefined when absent). Used by Executor.adopt(); without it adopt() reads each value once. */
  size?(key: string): Promise<number | undefined>
}

/** A SpillStore in a Map, copying on the way in and out like a real store. For tests. */
export class MemorySpillStore implements SpillStore {
  readonly data = new Map<string, Uint8Array>()
  /** operations performed, for tests: 'set k', 'get k', 'del k1,k2', 'keys', 'clear' */
  readonly log: string[] = []

  set(key: string, data: Uint8Array): Promise<void> {
    this.log.push(`set ${key}`)
    this.data.set(key, data.slice())
    return Promise.resolve()
  }

  get(key: string): Promise<Uint8Array | undefined> {
    this.log.push(`get ${key}`)
    return Promise.resolve(this.data.get(key)?.slice())
  }

  del(keys: string[]): Promise<void> {
    this.log.push(`del ${keys.join(',')}`)
    for (const k of keys) this.data.delete(k)
    return Promise.resolve()
  }

  keys(): Promise<string[]> {
    this.log.push('keys')
    return Promise.resolve([...this.data.keys()])
  }

  clear(): Promise<void> {
    this.log.push('clear')
    this.data.clear()
    return Promise.resolve()
  }

  size(key: string): Promise<number | undefined> {
    return Promise.resolve(this.data.get(key)?.byteLength)
  }
}
