/**
 * REDIS_SENTINELS and its companions (issue 15, item 4): validated once in readEnv (a bounded host:port list,
 * never together with REDIS_URL or REDIS_CLUSTER_NODES, an error naming the variables), and a process that
 * cannot reach the Sentinels says where it waits (the Sentinels and the master's name) without a password.
 * The failover itself: test/e2e/sentinel-failover.test.ts.
 */
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';

import { freePort } from '../../src/cli/redis-server.ts';
import { connect, redisAddress, redisPasswords } from '../../src/cli/runtime.ts';
import { MAX_SENTINELS, parseSentinels, readEnv } from '../../src/core/env.ts';
import { SENTINEL_RECONNECT_MAX_MS } from '../../src/core/redis.ts';
import { runFerry, spawnFerry, writeServicesFile } from '../helpers/processes.ts';
import { uniquePrefix } from '../helpers/redis.ts';

const PASSWORD = 'data-pw-Qz8-never-printed';
const SENTINEL_PASSWORD = 'sentinel-pw-Wm3-never-printed';

describe('REDIS_SENTINELS in readEnv', () => {
  it('reads the Sentinels, the master name (default mymaster) and both passwords', () => {
    const env = readEnv({
      REDIS_SENTINELS: '10.0.0.5:26379, sentinel-2.internal:26380,[::1]:26381',
      REDIS_PASSWORD: PASSWORD,
      REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD,
    });
    expect(env.REDIS_SENTINEL_NAME).toBe('mymaster');
    expect(parseSentinels(env.REDIS_SENTINELS!)).toEqual([
      { host: '10.0.0.5', port: 26379 },
      { host: 'sentinel-2.internal', port: 26380 },
      { host: '::1', port: 26381 },
    ]);
    const where = redisAddress(env);
    expect(where).toBe('master mymaster via sentinels 10.0.0.5:26379,sentinel-2.internal:26380,[::1]:26381');
    expect(redisPasswords(env).sort()).toEqual([PASSWORD, SENTINEL_PASSWORD].sort());
    expect(
      readEnv({ REDIS_SENTINELS: '127.0.0.1:26379', REDIS_SENTINEL_NAME: 'orders-1' }).REDIS_SENTINEL_NAME,
    ).toBe('orders-1');
  });

  it('treats empty values as unset', () => {
    const env = readEnv({ REDIS_URL: 'redis://127.0.0.1:1', REDIS_SENTINELS: '', REDIS_PASSWORD: '' });
    expect(env.REDIS_SENTINELS).toBeUndefined();
    expect(env.REDIS_PASSWORD).toBeUndefined();
  });

  it.each([
    [
      { REDIS_SENTINELS: '127.0.0.1:26379', REDIS_URL: 'redis://127.0.0.1:6380' },
      /REDIS_SENTINELS or REDIS_URL, not both/,
    ],
    [
      { REDIS_SENTINELS: '127.0.0.1:26379', REDIS_CLUSTER_NODES: '127.0.0.1:7000' },
      /REDIS_SENTINELS or REDIS_CLUSTER_NODES/,
    ],
    [{ REDIS_SENTINELS: ',' }, /REDIS_SENTINELS: must list at least one host:port/],
    [{ REDIS_SENTINELS: '127.0.0.1' }, /REDIS_SENTINELS: "127.0.0.1" is not host:port/],
    [{ REDIS_SENTINELS: '127.0.0.1:0' }, /is not host:port/],
    [{ REDIS_SENTINELS: '127.0.0.1:70000' }, /is not host:port/],
    [{ REDIS_SENTINELS: 'redis://127.0.0.1:26379' }, /is not host:port/],
    [{ REDIS_SENTINELS: 'a b:26379' }, /is not host:port/],
    [
      { REDIS_SENTINELS: Array.from({ length: MAX_SENTINELS + 1 }, (_, i) => `h${i}:1`).join(',') },
      /at most 16/,
    ],
    [
      { REDIS_SENTINELS: '127.0.0.1:26379', REDIS_SENTINEL_NAME: 'my master' },
      /REDIS_SENTINEL_NAME: must match/,
    ],
  ])('refuses %j', (env, message) => {
    expect(() => readEnv(env)).toThrow(message);
  });
});

describe('a command that cannot reach the Sentinels', () => {
  it('ferry worker says where it waits (Sentinels, master name), never a password, and gives up as told', async () => {
    const port = await freePort();
    const services = await writeServicesFile({
      services: { svc: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'POST', path: '/' } } } },
    });
    const worker = spawnFerry(['worker'], {
      env: {
        REDIS_SENTINELS: `127.0.0.1:${port}`,
        REDIS_SENTINEL_NAME: 'orders',
        REDIS_PASSWORD: PASSWORD,
        REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD,
        FERRY_SERVICES: services,
        FERRY_PREFIX: uniquePrefix(),
        FERRY_REDIS_WAIT_MS: '1500',
        LOG_FORMAT: 'json',
      },
    });
    const where = `master orders via sentinels 127.0.0.1:${port}`;
    const waiting = await worker.waitForLog(
      (entry) => typeof entry.msg === 'string' && entry.msg.startsWith(`waiting for Redis at ${where}`),
      20_000,
    );
    expect(waiting).toMatchObject({ redis: where });
    const exit = await worker.waitForExit(20_000);
    expect(exit.code, worker.output()).toBe(1);
    expect(worker.stderr.join('\n')).toContain(`Redis at ${where} was not ready within 1500 ms`);
    expect(worker.stderr.join('\n')).toContain('fix REDIS_SENTINELS and REDIS_SENTINEL_NAME');
    expect(worker.output()).not.toContain(PASSWORD);
    expect(worker.output()).not.toContain(SENTINEL_PASSWORD);
  });

  it('a one-shot command fails at once with one line; with REDIS_URL also set it names both variables', async () => {
    const port = await freePort();
    const env = {
      REDIS_SENTINELS: `127.0.0.1:${port}`,
      REDIS_PASSWORD: PASSWORD,
      FERRY_PREFIX: uniquePrefix(),
    };
    const status = await runFerry(['status'], { env });
    expect(status.code, status.process.output()).not.toBe(0);
    expect(status.stderr).toContain(`master mymaster via sentinels 127.0.0.1:${port}`);
    expect(status.process.output()).not.toContain(PASSWORD);

    const both = await runFerry(['status'], { env: { ...env, REDIS_URL: `redis://127.0.0.1:${port}` } });
    expect(both.code).not.toBe(0);
    expect(both.stderr).toMatch(/set either REDIS_SENTINELS or REDIS_URL, not both/);
  });
});

describe('reconnecting through the Sentinels', () => {
  it('pauses at most about half a second between attempts (ioredis alone grows to 5 s)', async () => {
    const port = await freePort();
    const env = readEnv({ REDIS_SENTINELS: `127.0.0.1:${port}`, REDIS_PASSWORD: PASSWORD });
    for (const role of ['worker', 'producer', 'api'] as const) {
      const client = connect(env, role, 'reconnect-test');
      client.on('error', () => undefined);
      const { retryStrategy } = (client as Redis).options;
      client.disconnect();
      const delays = Array.from({ length: 40 }, (_, i) => retryStrategy!(i + 1));
      for (const delay of delays) expect(delay).toBeLessThanOrEqual(SENTINEL_RECONNECT_MAX_MS + 100);
      // Fast at first: a blip is retried within a moment.
      expect(delays[0]).toBeLessThan(200);
    }
  });
});
