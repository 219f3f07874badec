import { afterAll, onTestFinished } from 'vitest';

/**
 * Registers cleanup on the current test, or on the file when called outside a test. (An `afterAll` registered
 * from inside a running test never runs: vitest has collected the file's hooks by then.)
 */
export function registerCleanup(cleanup: () => Promise<void>): void {
  try {
    onTestFinished(cleanup);
  } catch {
    afterAll(cleanup);
  }
}
