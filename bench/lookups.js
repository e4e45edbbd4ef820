// `node bench/lookups.js`: why a task costs more when a million are queued than when 100,000
// are — the same Map lookups get slower as the tables outgrow the caches. Looks up every key of
// a Map of N task-like records once with keys freshly made from bytes (as a decoded frame's
// are), in the order they were inserted, at N = 10k, 100k and 1M; prints ns per lookup.
const nonce = 'a8f3k2'
const row = []
for (const n of [10_000, 100_000, 1_000_000]) {
  const m = new Map()
  for (let i = 0; i < n; i++) m.set(`lambda-${nonce}${i.toString(36)}`, { i, status: 'processing', holders: null, attempts: null })
  // the best of five passes, each with keys made anew (a fresh string's hash is not cached yet)
  let best = Infinity
  for (let pass = 0; pass < 5; pass++) {
    const keys = Array.from({ length: n }, (_, i) => Buffer.from(`lambda-${nonce}${i.toString(36)}`).toString('latin1'))
    let sum = 0
    const t0 = performance.now()
    for (let i = 0; i < n; i++) sum += m.get(keys[i]).i
    best = Math.min(best, ((performance.now() - t0) * 1e6) / n)
    if (sum !== (n * (n - 1)) / 2) throw new Error('wrong sum')
  }
  row.push(`${n.toLocaleString('en')}: ${best.toFixed(0)} ns`)
}
console.log(`Map lookup with a fresh key, per lookup — ${row.join(', ')}`)
