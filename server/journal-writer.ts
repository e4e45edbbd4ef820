/**
 * The journal's writer thread (server/journal.ts): it owns the SQLite connection once the
 * journal was read, so the coordinator's thread spends no time in SQLite. Each batch is
 * committed at once, in one transaction: its task changes appended to the `log` table as
 * the JSON they came as (one row, whatever the number of tasks), the other changes written
 * into their tables. The task changes are merged here, per row, and folded into the tasks
 * table every 5 seconds (`foldMs`), or past 20,000 rows, or when the journal closes (one transaction that
 * also drops the folded batches from the log): a task submitted, run and forgotten within
 * that window never costs a row, one that stays costs one insert. A journal opened after a
 * crash folds what its log holds first (journal-db.ts `replay`). Messages arrive in order;
 * each batch is answered `committed` once its transaction is (the next batch waits for
 * it), `flush` and `close` through a shared flag the coordinator's thread waits on.
 */
import { readlinkSync } from 'node:fs'
import { setPriority } from 'node:os'
import { parentPort, workerData } from 'node:worker_threads'
import { LoggedTasks, openDatabase, prepareWrites } from './journal-db.js'
import type { Batch } from './journal.js'

type Message =
  /** the changes recorded since the last batch, merged (server/journal.ts) */
  | Batch
  | { type: 'clear' }
  | { type: 'flush'; flag: Int32Array }
  | { type: 'close'; flag: Int32Array }

/**
 * The writer thread's niceness (Linux: a thread has its own). It is background work: on a
 * machine whose cores are all busy (the coordinator, local workers) it writes in their
 * gaps rather than taking turns from them, and what is recorded meanwhile leaves merged in
 * the next batch (less to write). On 10,000 tiny tasks with 2 local workers on 2 cores it
 * cut the journal's extra time by about half (bench/journal.js); the cost is that a crash
 * while the cores are saturated may lose more of the last changes (those not committed yet).
 */
const NICE = 10

/** Lowers this thread's priority (only this thread's: its Linux thread id, from /proc/thread-self); elsewhere nothing. */
function lowerPriority(): void {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop())
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, NICE)
  } catch { /* not Linux, or not allowed: the thread keeps the process's priority */ }
}
lowerPriority()

const port = parentPort!
/** how long task changes stay merged in the log before they are folded into the tasks table, and how many rows at most (server/journal.ts) */
const { path, foldMs, foldRows } = workerData as { path: string; foldMs: number; foldRows: number }
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

const logged = new LoggedTasks()
let foldTimer: ReturnType<typeof setTimeout> | undefined
const fold = (): void => {
  if (foldTimer) { clearTimeout(foldTimer); foldTimer = undefined }
  if (!writes || logged.last === 0) return
  const upTo = logged.last
  const merged = logged.take()
  try { writes.fold(merged, upTo) } catch (err) { fail('write', err) }
}

const done = (flag: Int32Array): void => {
  Atomics.store(flag, 0, 1)
  Atomics.notify(flag, 0)
}

port.on('message', (m: Message) => {
  switch (m.type) {
    case 'batch':
      if (db && writes) {
        try {
          const seq = writes.log(m.tasks, m.args, m.others)
          if (m.tasks !== null) logged.add(m.tasks, m.args, seq, performance.now())
        } catch (err) { fail('write', err) }
        if (logged.size > foldRows || (logged.last !== 0 && performance.now() - logged.since >= foldMs)) fold()
        else if (logged.last !== 0 && !foldTimer) foldTimer = setTimeout(fold, foldMs)
      }
      // the coordinator's thread sends what it recorded meanwhile (merged) once this one is done
      port.postMessage({ type: 'committed' })
      return
    case 'clear':
      if (!db || !writes) return
      logged.take()
      try { writes.clear() } catch (err) { fail('clear', err) }
      return
    case 'flush':
      done(m.flag)
      return
    case 'close':
      fold()
      try { db?.close() } catch (err) { fail('close', err) }
      db = undefined
      done(m.flag)
      port.close()
      return
  }
})
