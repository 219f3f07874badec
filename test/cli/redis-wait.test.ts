/**
 * `ferry worker` started before its Redis (issue 14, item 8): by default (FERRY_REDIS_WAIT_MS unset) it logs
 * once that it is waiting and where (host:port, never REDIS_URL's password), keeps retrying, and starts work
 * when Redis comes up; SIGTERM while it waits ends it at once, cleanly. It used to be silent for 30 s, then exit.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { freePort } from '../../src/cli/redis-server.ts';
import { registerCleanup } from '../helpers/cleanup.ts';
import { startDownstream } from '../helpers/downstream.ts';
import {
  type LogEntry,
  runFerry,
  spawnFerry,
  tempDir,
  workerEnv,
  writeServicesFile,
} from '../helpers/processes.ts';
import { uniquePrefix } from '../helpers/redis.ts';

const PASSWORD = 'pw-Kx7-never-printed';

const downstream = await startDownstream(() => ({ status: 200, body: { ok: true } }));
const servicesFile = await writeServicesFile({
  services: {
    svc: { baseUrl: downstream.url, timeoutMs: 5_000, operations: { op: { method: 'POST', path: '/op' } } },
  },
});

const isWaiting =
  (port: number) =>
  (entry: LogEntry): boolean =>
    typeof entry.msg === 'string' && entry.msg.startsWith(`waiting for Redis at 127.0.0.1:${port}`);

/** A redis-server that wants PASSWORD, on `port`; stopped when the test finishes. */
async function startRedisLater(port: number): Promise<ChildProcess> {
  const dir = await tempDir('ferry-redis-later');
  // The password in a config file: on the command line it would show in `ps`.
  const config = join(dir, 'redis.conf');
  await writeFile(config, `requirepass ${PASSWORD}\n`);
  const child = spawn(
    'redis-server',
    [config, '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  registerCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  });
  return child;
}

describe('ferry worker waiting for Redis (FERRY_REDIS_WAIT_MS unset)', () => {
  it('logs once where it waits, never the password, and starts working once Redis is up', async () => {
    const port = await freePort();
    const env = workerEnv({
      redisUrl: `redis://:${PASSWORD}@127.0.0.1:${port}`,
      servicesFile,
      prefix: uniquePrefix(),
    });
    const worker = spawnFerry(['worker'], { env });
    const waiting = await worker.waitForLog(isWaiting(port), 20_000);
    expect(waiting).toMatchObject({ redis: `127.0.0.1:${port}`, level: 40 });

    const redis = await startRedisLater(port);
    await worker.waitUntilStarted(30_000);
    // It works: a job enqueued now is delivered and completed.
    const run = await runFerry(['enqueue', 'svc', 'op', '--input', '{"n":1}', '--wait', '--json'], { env });
    expect(run.code, run.process.output()).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ state: 'completed', result: { status: 200 } });
    expect(downstream.requests.length).toBeGreaterThanOrEqual(1);

    expect(worker.countLogs(isWaiting(port))).toBe(1);
    expect(worker.output()).not.toContain(PASSWORD);
    worker.terminate();
    expect((await worker.waitForExit(15_000)).code).toBe(0);
    expect(worker.stderr.filter((line) => line.trim() !== '')).toEqual([]);
    expect(redis.exitCode).toBeNull();
  }, 60_000);

  it('SIGTERM while waiting: exits at once with code 0', async () => {
    const port = await freePort();
    const worker = spawnFerry(['worker'], {
      env: workerEnv({ redisUrl: `redis://127.0.0.1:${port}`, servicesFile, prefix: uniquePrefix() }),
    });
    await worker.waitForLog(isWaiting(port), 20_000);
    worker.terminate();
    // A liveness bound: the old code ignored nothing but took 30 s to give up on Redis.
    const exit = await worker.waitForExit(10_000);
    expect(exit, worker.output()).toEqual({ code: 0, signal: null });
    await worker.waitForLog((entry) => entry.msg === 'SIGTERM while starting: stopped');
    expect(worker.stderr.filter((line) => line.trim() !== '')).toEqual([]);
  }, 30_000);
});
