import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // e2e suites start real daemons and network namespaces: run files one at a time.
    fileParallelism: false,
  },
});
