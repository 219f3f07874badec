import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Every test file starts its own redis-server, and most of a file's time is spent waiting (on Redis, a
    // downstream, a child process), so four files at a time on two cores. A quiet suite on Node 22: 218 s with
    // three (65% of both cores busy), 191 s with four (77%), 181 s with six (86%, and one Sentinel timing
    // failure); CONTRIBUTING.md has the loaded figures.
    maxWorkers: 4,
    // Test files share a worker's module cache (src, node_modules): importing them once per worker instead of
    // once per file took the suite's import time from ~375 s to ~100 s. Each test file still runs on its own
    // (its top level, its redis-server); nothing in src/ keeps module-level state a test depends on, and the
    // leak check runs per file.
    isolate: false,
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // A test without an assertion cannot fail.
    // expect.poll waits for a condition: 1 s (vitest's default) is too short on a loaded 2-core machine.
    expect: { requireAssertions: true, poll: { timeout: 10_000 } },
    // e2e tests spawn the built CLI.
    globalSetup: ['test/helpers/global-setup.ts'],
    // Fails a test that leaves a Redis connection (worker, queue, producer, client) open.
    setupFiles: ['test/helpers/leak-check.ts'],
  },
});
