import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Every test file starts its own redis-server; two cores, so keep the fan-out modest.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // A test without an assertion cannot fail.
    expect: { requireAssertions: true },
    // e2e tests spawn the built CLI.
    globalSetup: ['test/helpers/global-setup.ts'],
    // Fails a test that leaves a Redis connection (worker, queue, producer, client) open.
    setupFiles: ['test/helpers/leak-check.ts'],
  },
});
