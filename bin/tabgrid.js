#!/usr/bin/env node
// The tabgrid command. The TypeScript sources are compiled by `npm run build`.
import { existsSync } from 'node:fs'
const cli = new URL('../dist/server/cli.js', import.meta.url)
if (!existsSync(cli)) {
  console.error('tabgrid: not built yet — run `npm run build` (or `npm start`, which builds first)')
  process.exit(1)
}
await import(cli.href)
