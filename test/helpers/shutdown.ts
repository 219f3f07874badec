/** Shutdown tests: a Redis to kill or pause, and the time from SIGTERM to exit. */
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { expect } from 'vitest';

import { type PrivateRedis, startPrivateRedis } from '../../src/cli/redis-server.ts';
import { registerCleanup } from './cleanup.ts';
import type { FerryProcess } from './processes.ts';

/** The promise (docs/operations.md § Shutdown): signal to exit, whatever Redis does. */
export const EXIT_BOUND_MS = 10_000;

export type RedisState = 'up' | 'SIGKILLed' | 'SIGSTOPped';

/**
 * A redis-server a test may really kill (SIGKILL) or pause (SIGSTOP) and bring back on the same port, with AOF
 * `always`: a killed Redis keeps every acknowledged job, as in production. Stopped (and resumed first) when the
 * test (or file) finishes.
 */
export async function killableRedis(): Promise<{
  readonly url: string;
  put(state: RedisState): Promise<void>;
  recover(): Promise<void>;
}> {
  const dir = join(tmpdir(), `ferry-test-redis-${randomUUID()}`);
  let server: PrivateRedis = await startPrivateRedis({ dir, appendfsync: 'always' });
  let state: RedisState = 'up';
  registerCleanup(async () => {
    server.process.kill('SIGCONT');
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });
  return {
    url: server.url,
    async put(next) {
      state = next;
      if (next === 'SIGKILLed') await server.kill();
      if (next === 'SIGSTOPped') server.process.kill('SIGSTOP');
    },
    async recover() {
      if (state === 'SIGSTOPped') server.process.kill('SIGCONT');
      if (state === 'SIGKILLed')
        server = await startPrivateRedis({ dir, port: server.port, appendfsync: 'always' });
      state = 'up';
    },
  };
}

/**
 * SIGTERM, then the time to exit (ms, measured from the signal) and the exit code. Fails (leaving the process to
 * cleanup) past twice the bound, and when the process died of a signal instead of exiting.
 */
export async function terminateAndTime(ferry: FerryProcess): Promise<{ ms: number; code: number | null }> {
  const signalledAt = Date.now();
  ferry.terminate();
  const exit = await ferry.waitForExit(2 * EXIT_BOUND_MS);
  const ms = Date.now() - signalledAt;
  expect(exit.signal, ferry.output()).toBeNull();
  return { ms, code: exit.code };
}
