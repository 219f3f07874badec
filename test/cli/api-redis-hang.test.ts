/**
 * `ferry api` over a Redis that hangs (SIGSTOP: the connection stays open, nothing answers). docs/api.md
 * promises a 503 + Retry-After within about 2 s; the producer connection's 5 s command timeout made it 5 s.
 * The real process, because the connection it makes is what is under test. Its own redis-server: the test
 * stops it.
 */
import { describe, expect, it } from 'vitest';

import { spawnFerry, writeServicesFile } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const TOKEN = 'ferry-api-hang-token-0123456789abc';

/** Well over the API's 2 s command timeout (busy machine), well under the old 5 s. */
const BOUND_MS = 4_000;

describe('ferry api while Redis hangs', () => {
  it('answers 503 + Retry-After well before 5 s, and serves again after SIGCONT', async () => {
    const api = spawnFerry(['api'], {
      env: {
        REDIS_URL: redis.url,
        FERRY_SERVICES: await writeServicesFile({
          services: {
            svc: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'GET', path: '/' } } },
          },
        }),
        FERRY_PREFIX: uniquePrefix(),
        FERRY_API_TOKENS: JSON.stringify([{ name: 'ops', token: TOKEN, scopes: ['admin'] }]),
        PORT: '0',
        LOG_FORMAT: 'json',
      },
    });
    const line = await api.waitForLine(/Ferry API listening on/, { timeoutMs: 20_000 });
    const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)![1]!;
    const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    const enqueue = (): Promise<Response> =>
      fetch(`${url}/v1/jobs`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ service: 'svc', operation: 'op' }),
      });
    const first = await enqueue();
    expect(first.status).toBe(202);
    const { id } = (await first.json()) as { id: string };
    const read = (): Promise<Response> => fetch(`${url}/v1/jobs/svc/${id}`, { headers });
    expect((await read()).status).toBe(200);

    redis.process.kill('SIGSTOP');
    try {
      for (const request of [enqueue, read]) {
        const started = Date.now();
        const response = await request();
        const tookMs = Date.now() - started;
        expect(response.status).toBe(503);
        expect(response.headers.get('retry-after')).toBe('5');
        expect(((await response.json()) as { error: { type: string } }).error.type).toBe('UnavailableError');
        expect(tookMs).toBeLessThan(BOUND_MS);
      }
    } finally {
      redis.process.kill('SIGCONT');
    }

    await expect.poll(async () => (await enqueue()).status, { timeout: 20_000, interval: 250 }).toBe(202);
    expect((await read()).status).toBe(200);
    api.terminate();
    expect((await api.waitForExit(15_000)).code).toBe(0);
  });
});
