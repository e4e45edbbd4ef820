import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit+integration',
          include: ['shared/**/*.test.ts', 'server/**/*.test.ts', 'core/**/*.test.ts', 'web/**/*.test.ts', 'test/**/*.test.ts'],
          testTimeout: 30_000,
          hookTimeout: 30_000,
          // test/scale.test.ts holds a million tasks' client and coordinator in one process (~3 GB)
          execArgv: ['--max-old-space-size=6144'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        // real Chromium: one file at a time, after the rest, so browsers don't compete with worker processes for cores
        test: {
          name: 'e2e',
          include: ['e2e/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
})
