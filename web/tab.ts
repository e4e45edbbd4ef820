/**
 * A volunteer tab's identity, kept in sessionStorage so that it survives a reload (and
 * only a reload: another tab, or this one reopened later, is a new worker). It names the
 * IndexedDB databases the tab's Web Workers spill to, and remembers the worker id the
 * coordinator gave it and the secret that resumes it, so a reload within the grace
 * period resumes as the same worker.
 *
 * Spill databases outlive a tab that was closed; each live tab marks itself alive in
 * localStorage, and a tab that starts deletes the databases of tabs gone for long.
 */

export interface TabIdentity {
  /** random, names this tab's spill databases */
  tab: string
  /** the coordinator's id for this tab, once welcomed */
  worker?: string
  /** the secret that resumes that identity (only this tab's connection was given it) */
  resume?: string
  /** the most Web Workers this tab has had (every one of them may have a spill database) */
  maxThreads: number
}

const KEY = 'tabgrid:tab'
const ALIVE = 'tabgrid:alive:'
/** a tab not seen for this long is gone; its spilled data with it */
const GONE_MS = 10 * 60_000

/** The spill database of Web Worker `index` of tab `tab`. */
export const spillDbName = (tab: string, index: number): string => `tabgrid-${tab}-${index}`
const SPILL_DB = /^tabgrid-([a-z0-9]+)-(\d+)$/

export function loadIdentity(): TabIdentity {
  try {
    const raw = sessionStorage.getItem(KEY)
    if (raw) {
      const v = JSON.parse(raw) as Partial<TabIdentity>
      if (typeof v.tab === 'string' && /^[a-z0-9]{6,32}$/.test(v.tab)) {
        const id: TabIdentity = { tab: v.tab, maxThreads: typeof v.maxThreads === 'number' ? v.maxThreads : 0 }
        if (typeof v.worker === 'string' && v.worker.length <= 64) id.worker = v.worker
        if (typeof v.resume === 'string' && v.resume.length <= 64) id.resume = v.resume
        return id
      }
    }
  } catch { /* storage disabled or corrupt: start afresh */ }
  return { tab: randomId(), maxThreads: 0 }
}

export function saveIdentity(id: TabIdentity): void {
  try { sessionStorage.setItem(KEY, JSON.stringify(id)) } catch { /* storage disabled: the tab just won't resume */ }
}

function randomId(): string {
  const b = crypto.getRandomValues(new Uint8Array(8))
  return Array.from(b, x => x.toString(36).padStart(2, '0')).join('').slice(0, 12)
}

/** Marks this tab alive now (call every few seconds). */
export function markAlive(tab: string): void {
  try { localStorage.setItem(ALIVE + tab, String(Date.now())) } catch { /* no storage: no cleanup either */ }
}

/** Deletes the spill databases of tab `tab` (after a graceful leave, its data was handed off). */
export async function deleteSpillDbs(tab: string, count: number): Promise<void> {
  await Promise.all(Array.from({ length: count }, (_, i) => deleteDb(spillDbName(tab, i))))
}

/** Deletes spill databases of tabs that have not been alive for a while. */
export async function collectStaleSpillDbs(self: string): Promise<number> {
  if (typeof indexedDB === 'undefined' || typeof indexedDB.databases !== 'function') return 0
  let names: string[]
  try { names = (await indexedDB.databases()).map(d => d.name ?? '') } catch { return 0 }
  const now = Date.now()
  let deleted = 0
  for (const name of names) {
    const m = SPILL_DB.exec(name)
    if (!m || m[1] === self) continue
    let seen = 0
    try { seen = Number(localStorage.getItem(ALIVE + m[1]!) ?? 0) } catch { return deleted }
    if (now - seen < GONE_MS) continue
    await deleteDb(name)
    try { localStorage.removeItem(ALIVE + m[1]!) } catch { /* ignore */ }
    deleted++
  }
  return deleted
}

function deleteDb(name: string): Promise<void> {
  return new Promise(resolve => {
    try {
      const req = indexedDB.deleteDatabase(name)
      req.onsuccess = req.onerror = req.onblocked = () => resolve()
    } catch { resolve() }
  })
}
