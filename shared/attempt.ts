/**
 * The one name of an assignment: a task's key and the attempt id the scheduler gave
 * that run. Every layer that tracks runs (scheduler, worker state machine, threads)
 * keys them by this, so a late report of an old attempt never matches a new one.
 *
 * @example
 * attemptId('inc-3f2a', 7) // 'inc-3f2a@7'
 */
export function attemptId(key: string, attempt: number): string {
  return `${key}@${attempt}`
}
