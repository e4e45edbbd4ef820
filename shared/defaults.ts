/**
 * The one way options are resolved: every field of `defaults` is taken from `given`
 * unless `given` leaves it out or sets it to `undefined`. (`{ ...defaults, ...given }`
 * would let `{ leaseMs: undefined }` replace a default with `undefined`.)
 *
 * @example
 * withDefaults({ leaseMs: 15_000, log: () => {} }, { leaseMs: undefined }) // { leaseMs: 15000, log }
 */
export function withDefaults<D extends object>(defaults: D, given: { [K in keyof D]?: D[K] | undefined } | undefined): D {
  const out = { ...defaults }
  if (given === undefined) return out
  for (const k of Object.keys(defaults) as (keyof D)[]) {
    const v = given[k]
    if (v !== undefined) out[k] = v as D[keyof D]
  }
  return out
}
