/**
 * Redis stopped under a running API: every route that needs Redis (Bull Board's API and the event streams
 * included) answers 503 with Retry-After within a bounded time (never a hang), readiness says so, liveness and
 * metrics still answer; once Redis is back, the API serves again.
 * Its own redis-server, because the test stops it.
 */
import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import { startPrivateRedis } from '../../src/cli/redis-server.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { startTestApi, TOKENS } from '../helpers/api.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

/** The longest a request may take while Redis is down: the API's own 2 s wait plus slack for a busy machine. */
const BOUND_MS = 4_000;

describe('Redis down', () => {
  it('answers 503 + Retry-After within a bounded time, and serves again when Redis is back', async () => {
    const config = parseServicesConfig(
      {
        services: {
          svc: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'GET', path: '/' } } },
        },
      },
      { env: {} },
    );
    const api = await startTestApi({ redisUrl: redis.url, prefix: uniquePrefix(), config });
    const enqueue = (): ReturnType<typeof api.request> =>
      api.request('POST', '/v1/jobs', { token: TOKENS.admin, body: { service: 'svc', operation: 'op' } });
    expect((await enqueue()).status).toBe(202);
    expect((await api.request('GET', '/readyz', { token: TOKENS.admin })).status).toBe(200);

    await redis.stop();

    for (const [method, path, body] of [
      ['POST', '/v1/jobs', { service: 'svc', operation: 'op' }],
      ['POST', '/v1/jobs/batch', { jobs: [{ service: 'svc', operation: 'op' }] }],
      ['GET', '/v1/jobs/svc/1', undefined],
      ['DELETE', '/v1/jobs/svc/1', undefined],
      ['GET', '/v1/breakers', undefined],
      ['GET', '/v1/queues', undefined],
      ['POST', '/v1/queues/svc/pause', undefined],
      ['POST', '/v1/queues/svc/resume', undefined],
      ['GET', '/v1/dead-letters', undefined],
      ['GET', '/v1/dead-letters/dl-svc.1.1', undefined],
      ['DELETE', '/v1/dead-letters/dl-svc.1.1', undefined],
      ['GET', '/v1/jobs/svc/1/events', undefined],
      ['GET', '/v1/events?service=svc', undefined],
      ['GET', '/admin/queues/api/queues', undefined],
    ] as const) {
      const started = Date.now();
      const response = await api.request(method, path, { token: TOKENS.admin, body });
      const tookMs = Date.now() - started;
      expect({ path, status: response.status, type: response.body?.error?.type }).toEqual({
        path,
        status: 503,
        type: 'UnavailableError',
      });
      expect(response.headers.get('retry-after')).toBe('5');
      expect(tookMs).toBeLessThan(BOUND_MS);
    }
    const ready = await api.request('GET', '/readyz', { token: TOKENS.admin });
    expect(ready.status).toBe(503);
    expect(ready.headers.get('retry-after')).toBe('5');
    expect(ready.body).toMatchObject({ status: 'unavailable', redis: 'down' });
    // Liveness, what needs no Redis, and metrics (bounded: it says Redis is down) still answer.
    expect((await api.request('GET', '/healthz')).status).toBe(200);
    const metrics = await api.request('GET', '/metrics', { token: TOKENS.admin });
    expect(metrics.status).toBe(200);
    expect(metrics.text).toMatch(/^ferry_redis_up 0$/m);
    expect((await api.request('GET', '/v1/services', { token: TOKENS.admin })).status).toBe(200);

    // The same port and data directory, as a restarted Redis would be.
    const again = await startPrivateRedis({ dir: redis.dir, port: redis.port, appendfsync: 'no' });
    onTestFinished(() => again.stop());
    await expect.poll(async () => (await enqueue()).status, { timeout: 20_000, interval: 250 }).toBe(202);
    expect((await api.request('GET', '/readyz', { token: TOKENS.admin })).status).toBe(200);
  });
});

describe('error logs', () => {
  it('log a failed request’s error without the Redis command’s arguments (the job data)', async () => {
    const config = parseServicesConfig(
      {
        services: {
          svc: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'GET', path: '/' } } },
        },
      },
      { env: {} },
    );
    const prefix = uniquePrefix();
    const again = await startPrivateRedis({ dir: `${redis.dir}-logs`, appendfsync: 'no' });
    onTestFinished(() => again.stop());
    const api = await startTestApi({ redisUrl: again.url, prefix, config });
    // Every write fails with a reply error (ioredis puts the command's arguments on it). Set on a client of
    // its own: the API's connection has no offline queue, so a command sent before it is ready fails at once.
    const admin = new Redis(again.url);
    await admin.config('SET', 'min-replicas-to-write', '1');
    await admin.quit();
    const response = await api.request('POST', '/v1/jobs', {
      token: TOKENS.admin,
      body: { service: 'svc', operation: 'op', input: { email: 'private-person@example.com' } },
    });
    // A write refusal is a 503 to retry (issue 13), logged with the reply's code.
    expect(response.status).toBe(503);
    expect(response.body.error.type).toBe('UnavailableError');
    const failed = api.logs.filter((line) => line.includes('Redis refuses writes'));
    expect(failed).toHaveLength(1);
    expect(failed[0]).toContain('NOREPLICAS');
    expect(api.logs.join('\n')).not.toContain('private-person@example.com');
  });
});
