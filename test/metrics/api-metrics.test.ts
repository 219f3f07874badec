/**
 * `ferry api` (the built CLI, as a child process) opens a metrics server without a token on
 * FERRY_METRICS_HOST:FERRY_METRICS_PORT when FERRY_METRICS_PORT is set, as a worker does: /metrics, /healthz,
 * /readyz. Unset, it opens none (a worker on the same host has the default 9464), and /metrics on the API port
 * keeps needing a token either way.
 */
import { describe, expect, it } from 'vitest';

import { freePort } from '../../src/cli/redis-server.ts';
import { oneService } from '../helpers/ferry.ts';
import { spawnFerry, writeServicesFile } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { scrapeUrl } from './support.ts';

const redis = await startRedis();
const TOKEN = 'api-metrics-test-token-0123456789';

async function startApi(
  extra: Record<string, string | undefined>,
): Promise<{ url: string; api: ReturnType<typeof spawnFerry> }> {
  const api = spawnFerry(['api'], {
    env: {
      REDIS_URL: redis.url,
      FERRY_SERVICES: await writeServicesFile(oneService('http://127.0.0.1:9')),
      FERRY_PREFIX: uniquePrefix(),
      FERRY_API_TOKENS: JSON.stringify([{ name: 'reader', token: TOKEN, scopes: ['jobs:read'] }]),
      PORT: '0',
      LOG_FORMAT: 'json',
      ...extra,
    },
  });
  const line = await api.waitForLine(/Ferry API listening on/, { timeoutMs: 20_000 });
  return { url: /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)![1]!, api };
}

describe('ferry api metrics server', () => {
  it('serves /metrics, /healthz and /readyz without a token on FERRY_METRICS_PORT', async () => {
    const port = await freePort();
    const { url, api } = await startApi({ FERRY_METRICS_PORT: String(port) });
    const metricsUrl = `http://127.0.0.1:${port}`;
    const logged = await api.waitForLog((entry) => entry.msg === `metrics on ${metricsUrl}/metrics`);
    expect(logged.url).toBe(`${metricsUrl}/metrics`);

    const { status, contentType, scrape } = await scrapeUrl(`${metricsUrl}/metrics`);
    expect(status).toBe(200);
    expect(contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(scrape.value('ferry_redis_up')).toBe(1);
    expect(scrape.value('ferry_queue_jobs', { service: 'svc', state: 'waiting' })).toBe(0);
    expect(await (await fetch(`${metricsUrl}/healthz`)).text()).toBe('ok');
    const ready = await fetch(`${metricsUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.text()).toBe('ready');

    // The API port's /metrics still needs its token.
    expect((await fetch(`${url}/metrics`)).status).toBe(401);
    const scraped = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(scraped.status).toBe(200);
    expect(await scraped.text()).toMatch(/^ferry_redis_up 1$/m);

    api.terminate();
    expect((await api.waitForExit(15_000)).code, api.output()).toBe(0);
    await expect(fetch(`${metricsUrl}/healthz`)).rejects.toThrow();
  });

  it('opens no metrics server when FERRY_METRICS_PORT is unset (nor when it is 0)', async () => {
    for (const value of [undefined, '0']) {
      const { url, api } = await startApi({ FERRY_METRICS_PORT: value });
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      api.terminate();
      expect((await api.waitForExit(15_000)).code, api.output()).toBe(0);
      expect(api.countLogs((entry) => String(entry.msg).startsWith('metrics on'))).toBe(0);
    }
  });
});
