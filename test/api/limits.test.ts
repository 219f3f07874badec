/**
 * The API's resource and input limits (issue 13): job ids that name BullMQ's own keys, idempotency keys that
 * cannot go into a header, metadata and whole-job size caps, nesting depth. Real HTTP on a real redis-server.
 */
import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import { parseServicesConfig } from '../../src/core/services/load.ts';
import { Producer } from '../../src/producer/index.ts';
import { startTestApi, type TestApi, TOKENS } from '../helpers/api.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

const config = parseServicesConfig(
  {
    services: {
      svc: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'POST', path: '/' } } },
    },
  },
  { env: {} },
);

async function setup(): Promise<{ api: TestApi; prefix: string }> {
  const prefix = uniquePrefix();
  const api = await startTestApi({ redisUrl: redis.url, prefix, config });
  return { api, prefix };
}

describe('job ids that are BullMQ keys', () => {
  it('answer 404 on GET, DELETE and events, and touch no key', async () => {
    const { api, prefix } = await setup();
    // A waiting and a delayed job: the queue's `id`, `wait`, `delayed`, `meta`, `events` and `marker` exist.
    for (const body of [{}, { delayMs: 60_000 }]) {
      const response = await api.request('POST', '/v1/jobs', {
        token: TOKENS.admin,
        body: { service: 'svc', operation: 'op', ...body },
      });
      expect(response.status).toBe(202);
    }
    const keysBefore = (await redis.client.keys(`${prefix}:*`)).sort();
    for (const name of ['events', 'id', 'marker', 'delayed', 'wait', 'meta']) {
      expect(keysBefore).toContain(`${prefix}:{svc}:${name}`);
    }
    const ids = [
      'events',
      'id',
      'marker',
      'delayed',
      'wait',
      'meta',
      'paused',
      'active',
      'completed',
      'failed',
      'prioritized',
      'stalled',
      'stalled-check',
      'limiter',
      'repeat',
      'pc',
      'de',
      'waiting-children',
      'breaker',
      '1:logs',
    ];
    for (const id of ids) {
      for (const [method, path] of [
        ['GET', `/v1/jobs/svc/${encodeURIComponent(id)}`],
        ['DELETE', `/v1/jobs/svc/${encodeURIComponent(id)}`],
        ['GET', `/v1/jobs/svc/${encodeURIComponent(id)}/events`],
      ] as const) {
        const response = await api.request(method, path, { token: TOKENS.admin });
        expect({ id, method, path, status: response.status, type: response.body?.error?.type }).toEqual({
          id,
          method,
          path,
          status: 404,
          type: 'NotFoundError',
        });
      }
    }
    expect((await redis.client.keys(`${prefix}:*`)).sort()).toEqual(keysBefore);
    // Ids Ferry makes still answer.
    const job = await api.request('GET', '/v1/jobs/svc/1', { token: TOKENS.admin });
    expect(job.status).toBe(200);
  });
});

describe('idempotency keys a header cannot carry', () => {
  const bad = ['order\r\n42', 'order\n42', 'order\u000042', 'a\u0007b', 'a\u001fb', 'a\u007fb'];

  it('are refused at enqueue with 400 naming idempotencyKey (one job and a batch)', async () => {
    const { api, prefix } = await setup();
    for (const key of bad) {
      const one = await api.request('POST', '/v1/jobs', {
        token: TOKENS.admin,
        body: { service: 'svc', operation: 'op', idempotencyKey: key },
      });
      expect({ key, status: one.status, field: one.body?.error?.field }).toEqual({
        key,
        status: 400,
        field: 'idempotencyKey',
      });
      expect(one.body.error.type).toBe('ValidationError');
      const batch = await api.request('POST', '/v1/jobs/batch', {
        token: TOKENS.admin,
        body: { jobs: [{ service: 'svc', operation: 'op', idempotencyKey: key }] },
      });
      expect(batch.status).toBe(200);
      expect(batch.body.results[0]).toMatchObject({
        status: 400,
        error: { field: 'jobs[0].idempotencyKey' },
      });
    }
    expect(await redis.client.keys(`${prefix}:{svc}:idem-*`)).toEqual([]);
    expect(await redis.client.exists(`${prefix}:{svc}:wait`)).toBe(0);
    // A tab, spaces and non-ASCII text are fine in a header value.
    const good = await api.request('POST', '/v1/jobs', {
      token: TOKENS.admin,
      body: { service: 'svc', operation: 'op', idempotencyKey: 'order 42\tcafé' },
    });
    expect(good.status).toBe(202);
  });

  it('are refused by the Producer too', async () => {
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const producer = new Producer({ connection, prefix: uniquePrefix() });
    onTestFinished(async () => {
      await producer.close();
      connection.disconnect();
    });
    for (const key of bad) {
      await expect(
        producer.enqueue({ service: 'svc', operation: 'op', idempotencyKey: key }),
      ).rejects.toMatchObject({ type: 'ValidationError', field: 'idempotencyKey' });
    }
  });
});
