/** The worker's metrics server over real HTTP on 127.0.0.1:0: routes, content type, errors, port in use, close. */
import { createServer } from 'node:http';

import { describe, expect, it, onTestFinished } from 'vitest';

import { type MetricsServer, redisReadiness, startMetricsServer } from '../../src/cli/metrics-server.ts';
import { freePort } from '../../src/cli/redis-server.ts';
import { ConfigurationError } from '../../src/core/errors.ts';
import { createRedisConnection, waitUntilReady } from '../../src/core/redis.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { createMetrics, type MetricsResponse } from '../../src/metrics/metrics.ts';
import { oneService } from '../helpers/ferry.ts';
import { listenOnFreePort } from '../helpers/listen.ts';
import { withTimeout } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { scrapeUrl } from './support.ts';

const redis = await startRedis();
const PROMETHEUS_TEXT = 'text/plain; version=0.0.4; charset=utf-8';

async function serve(metrics: { render(): Promise<MetricsResponse> }): Promise<MetricsServer> {
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0, metrics });
  onTestFinished(() => server.close());
  return server;
}

describe('metrics server', () => {
  it('GET /metrics is the registry in the Prometheus text format; /healthz says ok; anything else 404', async () => {
    const config = parseServicesConfig(oneService('http://127.0.0.1:9'), { env: {} });
    // What is checked here is the server (routes, format), not the scrape's bound: a loaded CI machine (two busy
    // loops on two cores) once took longer than the default 1.5 s to answer the PING, and ferry_redis_up was 0.
    const metrics = createMetrics({
      config,
      connection: redis.client,
      prefix: uniquePrefix(),
      scrapeTimeoutMs: 15_000,
    });
    onTestFinished(() => metrics.close());
    const server = await serve(metrics);
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    for (const path of ['/metrics', '/metrics?name[]=ferry_redis_up']) {
      const { status, contentType, scrape } = await scrapeUrl(`${server.url}${path}`);
      expect(status).toBe(200);
      expect(contentType).toBe(PROMETHEUS_TEXT);
      expect(scrape.value('ferry_redis_up')).toBe(1);
      expect(scrape.value('ferry_queue_jobs', { service: 'svc', state: 'waiting' })).toBe(0);
      expect(scrape.type('process_cpu_seconds_total')).toBe('COUNTER');
    }

    const health = await fetch(`${server.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.text()).toBe('ok');

    const head = await fetch(`${server.url}/metrics`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe(PROMETHEUS_TEXT);
    expect(await head.text()).toBe('');

    for (const path of ['/', '/metrics/', '/favicon.ico', '/v1/jobs']) {
      const response = await fetch(`${server.url}${path}`);
      expect(response.status, path).toBe(404);
      await response.body?.cancel();
    }
    const post = await fetch(`${server.url}/metrics`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    await post.body?.cancel();
  });

  it('GET /readyz: 200 "ready", or 503 "unavailable" with Retry-After; a 404 when not asked for', async () => {
    let isReady = true;
    const metrics = { render: () => Promise.resolve({ contentType: PROMETHEUS_TEXT, body: 'up 1\n' }) };
    const server = await startMetricsServer({
      host: '127.0.0.1',
      port: 0,
      metrics,
      ready: () => Promise.resolve(isReady),
    });
    onTestFinished(() => server.close());
    const up = await fetch(`${server.url}/readyz`);
    expect(up.status).toBe(200);
    expect(up.headers.get('retry-after')).toBeNull();
    expect(await up.text()).toBe('ready');
    isReady = false;
    const down = await fetch(`${server.url}/readyz`);
    expect(down.status).toBe(503);
    expect(down.headers.get('retry-after')).toBe('5');
    expect(await down.text()).toBe('unavailable');
    expect((await fetch(`${server.url}/readyz`, { method: 'HEAD' })).status).toBe(503);

    const without = await serve(metrics);
    const missing = await fetch(`${without.url}/readyz`);
    expect(missing.status).toBe(404);
    await missing.body?.cancel();
  });

  it('redisReadiness: a PING answered in time is ready; a paused or unreachable Redis is not', async () => {
    const connection = createRedisConnection({ url: redis.url }, 'api', 'readiness-test');
    connection.on('error', () => undefined);
    onTestFinished(() => connection.disconnect());
    await waitUntilReady(connection);
    const ready = redisReadiness(connection, 300);
    expect(await ready()).toBe(true);
    // Every client's commands held for 3 s: the PING does not come back within 300 ms.
    await redis.client.call('CLIENT', 'PAUSE', '3000', 'ALL');
    const started = Date.now();
    expect(await ready()).toBe(false);
    expect(Date.now() - started).toBeLessThan(2_500);
    await expect.poll(() => ready(), { timeout: 10_000 }).toBe(true);

    const port = await freePort();
    const nowhere = createRedisConnection({ url: `redis://127.0.0.1:${port}` }, 'api', 'readiness-nowhere');
    nowhere.on('error', () => undefined);
    onTestFinished(() => nowhere.disconnect());
    expect(await redisReadiness(nowhere, 300)()).toBe(false);
  });

  it('a render that fails answers 500, and the server goes on serving', async () => {
    let fail = true;
    const server = await serve({
      render: () =>
        fail
          ? Promise.reject(new Error('registry broke'))
          : Promise.resolve({ contentType: PROMETHEUS_TEXT, body: '# TYPE up gauge\nup 1\n' }),
    });
    const failed = await fetch(`${server.url}/metrics`);
    expect(failed.status).toBe(500);
    expect(await failed.text()).not.toContain('registry broke');
    fail = false;
    const { status, scrape } = await scrapeUrl(`${server.url}/metrics`);
    expect(status).toBe(200);
    expect(scrape.value('up')).toBe(1);
  });

  it('a port in use rejects with a ConfigurationError naming FERRY_METRICS_PORT', async () => {
    const taken = await listenOnFreePort(createServer());
    const port = Number(new URL(taken.url).port);
    const starting = startMetricsServer({
      host: '127.0.0.1',
      port,
      metrics: { render: () => Promise.resolve({ contentType: 'text/plain', body: '' }) },
    });
    await expect(starting).rejects.toBeInstanceOf(ConfigurationError);
    await expect(starting).rejects.toThrow(
      `FERRY_METRICS_PORT: 127.0.0.1:${port} is already in use; set FERRY_METRICS_PORT to a free port, or to 0 to turn the worker's metrics server off`,
    );
  });

  it("close() does not wait for a scraper's idle keep-alive connection", async () => {
    const server = await serve({
      render: () => Promise.resolve({ contentType: PROMETHEUS_TEXT, body: 'up 1\n' }),
    });
    const response = await fetch(`${server.url}/metrics`);
    expect(await response.text()).toBe('up 1\n');
    await withTimeout(server.close(), 1_000, () => 'close() waited for the keep-alive connection');
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
  });
});
