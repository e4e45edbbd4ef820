/**
 * A SpillStore in IndexedDB (through idb-keyval), for the Web Workers of a worker tab.
 * One database per name, with one object store 'values': give each thread of a tab
 * identity its own name, so a reloaded tab reopens the same database and its executor
 * adopt()s what it had spilled. Browser only (runs inside a Web Worker).
 */
import { clear, createStore, delMany, get, keys, set, type UseStore } from 'idb-keyval'
import type { SpillStore } from '../shared/spill.js'

export class IdbSpillStore implements SpillStore {
  private readonly db: UseStore

  constructor(readonly dbName: string) {
    this.db = createStore(dbName, 'values')
  }

  set(key: string, data: Uint8Array): Promise<void> {
    // IndexedDB clones a view's whole buffer: store a view that owns its buffer exactly
    const own = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data : data.slice()
    return set(key, own, this.db)
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const v: unknown = await get(key, this.db)
    return v instanceof Uint8Array ? v : undefined
  }

  del(keys: string[]): Promise<void> {
    return keys.length === 0 ? Promise.resolve() : delMany(keys, this.db)
  }

  async keys(): Promise<string[]> {
    return (await keys(this.db)).filter((k): k is string => typeof k === 'string')
  }

  clear(): Promise<void> {
    return clear(this.db)
  }
}
