/**
 * The journal's writer thread (server/journal.ts): it owns the SQLite connection once the
 * journal was read, and applies each turn's batch of changes in one transaction, so the
 * coordinator's thread spends no time in SQLite. Messages arrive in order; each batch is
 * answered `committed` once its transaction is (the next batch waits for it), `flush` and
 * `close` through a shared flag the coordinator's thread waits on.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { openDatabase, prepareWrites, type Op } from './journal-db.js'
import type { Batch } from './journal.js'

type Message =
  /** the changes recorded since the last batch, merged (server/journal.ts) */
  | Batch
  | { type: 'clear' }
  | { type: 'flush'; flag: Int32Array }
  | { type: 'close'; flag: Int32Array }

const port = parentPort!
const { path } = workerData as { path: string }
let failures = 0
const fail = (what: string, err: unknown): void => {
  if (failures++ < 5) port.postMessage({ type: 'error', message: `journal ${what} failed: ${(err as Error).message}; a restart may lose these changes` })
}

let db: ReturnType<typeof openDatabase> | undefined
let writes: ReturnType<typeof prepareWrites> | undefined
try {
  db = openDatabase(path)
  writes = prepareWrites(db)
} catch (err) { fail('open', err) }

const done = (flag: Int32Array): void => {
  Atomics.store(flag, 0, 1)
  Atomics.notify(flag, 0)
}

port.on('message', (m: Message) => {
  switch (m.type) {
    case 'batch':
      if (db && writes) {
        try {
          const [removed, ops] = JSON.parse(m.json) as [number[], Op[]]
          writes.apply({ removed, ops, args: m.args })
        } catch (err) { fail('write', err) }
      }
      // the coordinator's thread sends what it recorded meanwhile (merged) once this one is done
      port.postMessage({ type: 'committed' })
      return
    case 'clear':
      if (!db || !writes) return
      try { writes.clear() } catch (err) { fail('clear', err) }
      return
    case 'flush':
      done(m.flag)
      return
    case 'close':
      try { db?.close() } catch (err) { fail('close', err) }
      db = undefined
      done(m.flag)
      port.close()
      return
  }
})
