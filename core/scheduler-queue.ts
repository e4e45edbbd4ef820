/**
 * The scheduler's ready queue: a binary min-heap ordered by (−priority, fair turn,
 * sequence). Each item remembers its own index, so removing a cancelled or released
 * task is O(log n) and membership is O(1) without a side map.
 */

/** What the queue needs from an item. `heapIndex` is owned by the queue (−1 = in no queue). */
export interface Queueable {
  priority: number
  turn: number
  seq: number
  heapIndex: number
}

/** True if `a` must run before `b`: higher priority first, then the earlier fair turn, then FIFO. */
export function runsBefore(a: Queueable, b: Queueable): boolean {
  if (a.priority !== b.priority) return a.priority > b.priority
  if (a.turn !== b.turn) return a.turn < b.turn
  return a.seq < b.seq
}

/**
 * A binary heap of tasks.
 *
 * @example
 * const q = new TaskQueue<TaskState>(runsBefore)
 * q.push(t); q.peek() === t; q.pop() === t
 */
export class TaskQueue<T extends { heapIndex: number }> {
  private readonly items: T[] = []

  /** `before(a, b)`: `a` must come out first (the scheduler's is `runsBefore`). */
  constructor(private readonly before: (a: T, b: T) => boolean) {}

  get size(): number { return this.items.length }

  peek(): T | undefined { return this.items[0] }

  /** Whether `x` is in this queue (an item's index may be valid in another queue). */
  has(x: T): boolean { return x.heapIndex >= 0 && this.items[x.heapIndex] === x }

  push(x: T): void {
    if (x.heapIndex >= 0) throw new Error('task is already queued')
    x.heapIndex = this.items.length
    this.items.push(x)
    this.up(x.heapIndex)
  }

  pop(): T | undefined {
    const items = this.items
    const top = items[0]
    if (top === undefined) return undefined
    const last = items.pop() as T
    if (last !== top) {
      items[0] = last
      last.heapIndex = 0
      this.down(0)
    }
    top.heapIndex = -1
    return top
  }

  remove(x: T): void {
    if (!this.has(x)) throw new Error('task is not in this queue')
    const items = this.items
    const i = x.heapIndex
    const last = items.pop() as T
    if (last !== x) {
      items[i] = last
      last.heapIndex = i
      this.up(i)
      this.down(last.heapIndex)
    }
    x.heapIndex = -1
  }

  /** Every item, in heap (not priority) order: for validation and scans. */
  values(): readonly T[] { return this.items }

  /** Throws if the heap property or an index is broken (validate mode). */
  check(): void {
    const items = this.items
    for (let i = 0; i < items.length; i++) {
      const x = items[i] as T
      if (x.heapIndex !== i) throw new Error(`queue index broken at ${i}`)
      if (i > 0 && this.before(x, items[(i - 1) >> 1] as T)) throw new Error(`heap order broken at ${i}`)
    }
  }

  private up(i: number): void {
    const items = this.items
    const x = items[i] as T
    while (i > 0) {
      const p = (i - 1) >> 1
      const parent = items[p] as T
      if (!this.before(x, parent)) break
      items[i] = parent
      parent.heapIndex = i
      i = p
    }
    items[i] = x
    x.heapIndex = i
  }

  private down(i: number): void {
    const items = this.items
    const n = items.length
    const x = items[i] as T
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      let c = l
      if (r < n && this.before(items[r] as T, items[l] as T)) c = r
      const child = items[c] as T
      if (!this.before(child, x)) break
      items[i] = child
      child.heapIndex = i
      i = c
    }
    items[i] = x
    x.heapIndex = i
  }
}
