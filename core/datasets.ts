/**
 * Named datasets (Dask's `publish_dataset`): a name on the coordinator that holds a key,
 * so its data outlives the client that made it and any client can pick it up by name.
 * Each dataset wants its key in the scheduler as a client of its own, `dataset:<name>`;
 * this class keeps the names and says which scheduler events a change makes.
 */
import type { SchedulerEvent } from './scheduler-types.js'
import type { WireError } from '../shared/errors.js'

/** Most datasets a coordinator keeps (each holds a key's data on the grid). */
export const MAX_DATASETS = 10_000

export class Datasets {
  private readonly byName = new Map<string, string>()

  /** The scheduler client that holds a dataset's key. */
  static holder(name: string): string {
    return `dataset:${name}`
  }

  get size(): number { return this.byName.size }

  /** The key published under `name`, if any. */
  get(name: string): string | undefined {
    return this.byName.get(name)
  }

  names(): string[] {
    return [...this.byName.keys()].sort()
  }

  /**
   * Publishes `key` under `name` (replacing what was there only with `override`).
   * Returns the scheduler events to feed, or why not.
   */
  publish(name: string, key: string, override: boolean): { events: SchedulerEvent[] } | { error: WireError } {
    const old = this.byName.get(name)
    if (old !== undefined && !override) {
      return { error: { code: 'bad-message', message: `a dataset named ${name} already exists: unpublish it first, or publish with { override: true }` } }
    }
    if (old === undefined && this.byName.size >= MAX_DATASETS) {
      return { error: { code: 'too-large', message: `the coordinator keeps at most ${MAX_DATASETS} datasets: unpublish some first` } }
    }
    this.byName.set(name, key)
    const holder = Datasets.holder(name)
    const events: SchedulerEvent[] = [{ type: 'want', client: holder, keys: [key] }]
    if (old !== undefined && old !== key) events.push({ type: 'release', client: holder, keys: [old] })
    return { events }
  }

  /** Forgets `name`; returns the events that let its key go, or undefined if there was none. */
  unpublish(name: string): SchedulerEvent[] | undefined {
    const key = this.byName.get(name)
    if (key === undefined) return undefined
    this.byName.delete(name)
    const holder = Datasets.holder(name)
    // release first, so the removal finds nothing left to scan for
    return [{ type: 'release', client: holder, keys: [key] }, { type: 'client-removed', client: holder }]
  }
}
