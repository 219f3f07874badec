/**
 * `ferry worker` started before its Redis (issue 14, item 8): by default (FERRY_REDIS_WAIT_MS unset) it logs
 * once that it is waiting and where (host:port, never REDIS_URL's password), keeps retrying, and starts work
 * when Redis comes up; SIGTERM while it waits ends it at once, cleanly. It used to be silent for 30 s, then exit.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';

import { freePort } from '../../src/cli/redis-server.ts';
import { serviceQueueName } from '../../src/core/queue-layout.ts';
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
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { until } from '../helpers/until.ts';

const PASSWORD = 'pw-Kx7-never-printed';

const downstream = await startDownstream(() => ({ status: 200, body: { ok: true } }));
const servicesFile = await writeServicesFile({
  services: {
    svc: { baseUrl: downstream.url, timeoutMs: 5_000, operations: { op: { method: 'POST', path: '/op' } } },
  },
});

// This file's own server, for the test that pauses it (CLIENT PAUSE would stall every test of a shared one).
const redis = await startRedis();

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

  it('SIGTERM after Redis answered, while the pool starts: shuts down cleanly, takes no job', async () => {
    const prefix = uniquePrefix();
    const queue = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix });
    await queue.add('op', { input: { n: 1 } });
    await queue.close();
    const calls = downstream.requests.length;
    // Reads answer, writes wait: the worker connects, then its start-up blocks on its first write.
    await redis.client.call('CLIENT', 'PAUSE', '30000', 'WRITE');
    const worker = spawnFerry(['worker'], {
      env: workerEnv({ redisUrl: redis.url, servicesFile, prefix }),
    });
    try {
      await until(
        async () => ((await redis.client.call('CLIENT', 'LIST')) as string).match(/ flags=b /) ?? undefined,
        20_000,
        () => `a worker command waiting on the pause\n${worker.output()}`,
      );
      worker.terminate();
      await worker.waitForLog((entry) => entry.msg === 'shutting down: finishing in-flight work', 10_000);
    } finally {
      await redis.client.call('CLIENT', 'UNPAUSE');
    }
    // It used to be killed by the signal (143, nothing logged) before its handler was installed, or to shut
    // down and then exit 1 with "Connection is closed." from the start it had closed under.
    const exit = await worker.waitForExit(15_000);
    expect(exit, worker.output()).toEqual({ code: 0, signal: null });
    await worker.waitForLog((entry) => entry.msg === 'shut down cleanly');
    expect(worker.output()).not.toContain('worker pool started');
    expect(worker.stderr.filter((line) => line.trim() !== '')).toEqual([]);
    const check = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix });
    const counts = await check.getJobCounts('wait', 'active', 'completed');
    await check.close();
    expect(counts).toEqual({ wait: 1, active: 0, completed: 0 });
    expect(downstream.requests.length).toBe(calls);
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
