/**
 * The API's probes need no token (load balancers and Kubernetes send none) and say nothing but up or down:
 * /healthz the process, /readyz Redis and the services file (503 + Retry-After when not ready). A valid token
 * is told why; a missing, unknown or Basic one is never refused. /metrics on the API port keeps its token.
 * A second redis-server, because a test stops it.
 */
import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import { parseServicesConfig } from '../../src/core/services/load.ts';
import { startTestApi, type TestApi, TOKENS } from '../helpers/api.ts';
import { oneService } from '../helpers/ferry.ts';
import { startRedis, type TestRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
/** Stopped by a test. */
const stoppable = await startRedis();
const ANONYMOUS: readonly (Record<string, string> | undefined)[] = [
  undefined,
  { authorization: `Bearer ${TOKENS.wrong}` },
  { authorization: 'Bearer' },
  { authorization: `Basic ${Buffer.from(`ops:${TOKENS.admin}`).toString('base64')}` },
];

async function startApi(server: TestRedis = redis): Promise<TestApi> {
  const config = parseServicesConfig(oneService('http://127.0.0.1:9'), { env: {} });
  return startTestApi({ redisUrl: server.url, prefix: uniquePrefix(), config });
}

async function get(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; text: string }> {
  const response = await fetch(url, { headers });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

describe('probes without a token', () => {
  it('/healthz and /readyz answer up with nothing but the status', async () => {
    const api = await startApi();
    for (const headers of ANONYMOUS) {
      const health = await get(`${api.url}/healthz`, headers);
      expect(health.status).toBe(200);
      expect(health.text).toBe('{"status":"ok"}');
      const ready = await get(`${api.url}/readyz`, headers);
      expect(ready.status).toBe(200);
      expect(ready.text).toBe('{"status":"ready"}');
      expect(ready.headers.get('www-authenticate')).toBeNull();
    }
    // A valid token (any scope) is told why.
    const detailed = await api.request('GET', '/readyz', { token: TOKENS.writer });
    expect(detailed.body).toEqual({ status: 'ready', redis: 'up', services: 1 });
  });

  it('/readyz answers 503 + Retry-After while Redis is down, revealing nothing else', async () => {
    const api = await startApi(stoppable);
    await stoppable.stop();
    for (const headers of ANONYMOUS) {
      const ready = await get(`${api.url}/readyz`, headers);
      expect(ready.status).toBe(503);
      expect(ready.headers.get('retry-after')).toBe('5');
      expect(ready.text).toBe('{"status":"unavailable"}');
      // Liveness is the process's: up.
      expect((await get(`${api.url}/healthz`, headers)).text).toBe('{"status":"ok"}');
    }
    const detailed = await api.request('GET', '/readyz', { token: TOKENS.reader });
    expect(detailed.status).toBe(503);
    expect(detailed.body).toEqual({ status: 'unavailable', redis: 'down', services: 1 });
    expect(detailed.text).not.toContain(String(stoppable.port));
  });

  it('/readyz probes run one at a time however many arrive together', async () => {
    const api = await startApi();
    const admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    onTestFinished(() => admin.disconnect());
    const setCalls = async (): Promise<number> =>
      Number(/cmdstat_set:calls=(\d+)/.exec(await admin.info('commandstats'))?.[1] ?? 0);
    const before = await setCalls();
    // Writes are held for 0.6 s (under the probe's 1 s limit): every probe below arrives while the first waits.
    await admin.call('CLIENT', 'PAUSE', '600', 'WRITE');
    const answers = await Promise.all(Array.from({ length: 10 }, () => get(`${api.url}/readyz`)));
    expect(answers.map((answer) => answer.status)).toEqual(Array(10).fill(200));
    // Without sharing it would be 10 probe writes; a late request may start a second one.
    expect((await setCalls()) - before).toBeLessThanOrEqual(2);
  });

  it('/metrics on the API port still needs a token with jobs:read', async () => {
    const api = await startApi();
    for (const headers of ANONYMOUS) {
      const refused = await get(`${api.url}/metrics`, headers);
      expect(refused.status).toBe(401);
      expect(refused.text).not.toContain('ferry_');
    }
    expect((await api.request('GET', '/metrics', { token: TOKENS.writer })).status).toBe(403);
    const scraped = await api.request('GET', '/metrics', { token: TOKENS.reader });
    expect(scraped.status).toBe(200);
    expect(scraped.text).toMatch(/^ferry_redis_up 1$/m);
  });
});
