/**
 * Every metrics endpoint Ferry serves passes `promtool check metrics` (Prometheus's own linter, Debian's
 * `prometheus` package) with no problem at all, lint warnings included: the worker's metrics server, the API's
 * token-protected /metrics and its metrics server, and `ferry dev`'s two. Each is the built CLI as a child process, scraped after a job
 * went through it, so the counters and histograms have series. prom-client's default set names three gauges
 * `*_total`, which promtool refuses: they are exported as `*_all`.
 */
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';

import { describe, expect, it, onTestFinished } from 'vitest';

import { freePort } from '../../src/cli/redis-server.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { Producer } from '../../src/index.ts';
import { createMetrics, DEFAULT_GAUGE_RENAMES } from '../../src/metrics/metrics.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { oneService } from '../helpers/ferry.ts';
import {
  ROOT,
  spawnFerry,
  startWorker,
  tempDir,
  workerEnv,
  writeServicesFile,
} from '../helpers/processes.ts';
import { promtoolCheckMetrics } from '../helpers/promtool.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { Scrape } from './support.ts';

const redis = await startRedis();
const TOKEN = 'promtool-test-token-0123456789ab';
const TOKENS_JSON = JSON.stringify([{ name: 'scraper', token: TOKEN, scopes: ['jobs:read', 'jobs:write'] }]);

/** Scrapes `url` and asserts promtool finds nothing to say about it; returns the text. */
async function expectPromtoolClean(url: string, headers: Record<string, string> = {}): Promise<string> {
  const response = await fetch(url, { headers });
  const text = await response.text();
  expect(response.status, `${url}: ${text.slice(0, 200)}`).toBe(200);
  expect(text).toMatch(/^ferry_redis_up 1$/m);
  const result = await promtoolCheckMetrics(text);
  expect({ url, ...result }).toEqual({ url, code: 0, problems: [] });
  return text;
}

/** One job through `svc.create` (a downstream answering 201), so delivery series exist. */
async function runOneJob(prefix: string): Promise<void> {
  const producer = new Producer({ connection: redis.url, prefix });
  onTestFinished(() => producer.close());
  const job = await producer.enqueue({ service: 'svc', operation: 'create', input: { n: 1 } });
  expect((await producer.waitFor('svc', job.id, { timeoutMs: 20_000 })).state).toBe('completed');
}

describe('promtool check metrics', () => {
  it("keeps the information of prom-client's *_total gauges under names promtool accepts", async () => {
    const config = parseServicesConfig(oneService('http://127.0.0.1:9'), { env: {} });
    const metrics = createMetrics({ config, connection: redis.client, prefix: uniquePrefix() });
    onTestFinished(() => metrics.close());
    const { body: text } = await metrics.render();
    const scrape = new Scrape(text);
    for (const [from, to] of Object.entries(DEFAULT_GAUGE_RENAMES)) {
      expect(scrape.families.has(from), from).toBe(false);
      expect(scrape.type(to), to).toBe('GAUGE');
      expect(scrape.value(to), to).toBeGreaterThanOrEqual(0);
    }
    // The same value and help as prom-client's own (this process holds sockets and timers: never 0).
    expect(scrape.value('nodejs_active_handles_all')).toBeGreaterThan(0);
    expect(scrape.family('nodejs_active_handles_all')?.help).toBe('Total number of active handles.');
    expect(await promtoolCheckMetrics(text)).toEqual({ code: 0, problems: [] });
  });

  it('passes on the metrics server of `ferry worker`', { timeout: 60_000 }, async () => {
    const downstream = await startDownstream(() => ({ status: 201, body: { id: 7 } }));
    const prefix = uniquePrefix();
    const port = await freePort();
    const servicesFile = await writeServicesFile(oneService(downstream.url));
    const worker = await startWorker(
      workerEnv({
        redisUrl: redis.url,
        servicesFile,
        prefix,
        extra: { FERRY_METRICS_PORT: String(port) },
      }),
    );
    await worker.waitForLog((entry) => entry.msg === `metrics on http://127.0.0.1:${port}/metrics`);
    await runOneJob(prefix);
    const text = await expectPromtoolClean(`http://127.0.0.1:${port}/metrics`);
    expect(text).toMatch(/^ferry_attempt_duration_seconds_bucket\{/m);
  });

  it(
    'passes on /metrics of `ferry api`: its port (with a token) and its metrics server',
    { timeout: 60_000 },
    async () => {
      const prefix = uniquePrefix();
      const port = await freePort();
      const servicesFile = await writeServicesFile(oneService('http://127.0.0.1:9'));
      const api = spawnFerry(['api'], {
        env: {
          REDIS_URL: redis.url,
          FERRY_SERVICES: servicesFile,
          FERRY_PREFIX: prefix,
          FERRY_API_TOKENS: TOKENS_JSON,
          FERRY_METRICS_PORT: String(port),
          PORT: '0',
          LOG_FORMAT: 'json',
        },
      });
      const line = await api.waitForLine(/Ferry API listening on/, { timeoutMs: 20_000 });
      const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)![1]!;
      await expectPromtoolClean(`${url}/metrics`, { authorization: `Bearer ${TOKEN}` });
      await api.waitForLog((entry) => entry.msg === `metrics on http://127.0.0.1:${port}/metrics`);
      await expectPromtoolClean(`http://127.0.0.1:${port}/metrics`);
    },
  );

  it('passes on /metrics of `ferry dev`, after its demo jobs', { timeout: 90_000 }, async () => {
    const port = await freePort();
    const cwd = await tempDir('ferry-dev-promtool');
    await copyFile(join(ROOT, 'ferry.services.yaml'), join(cwd, 'ferry.services.yaml'));
    const dev = spawnFerry(['dev'], {
      cwd,
      env: {
        REDIS_URL: redis.url,
        FERRY_PREFIX: uniquePrefix(),
        FERRY_API_TOKENS: TOKENS_JSON,
        FERRY_METRICS_PORT: String(port),
        PORT: '0',
      },
    });
    const line = await dev.waitForLine(/^\s+api\s+http:\/\/127\.0\.0\.1:\d+/, { timeoutMs: 30_000 });
    const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)![1]!;
    // Deliveries of every kind counted: completed, retried, dead-lettered.
    await dev.waitForLine(/demo job reject: dead_lettered/, { timeoutMs: 45_000 });
    const text = await expectPromtoolClean(`${url}/metrics`, { authorization: `Bearer ${TOKEN}` });
    expect(text).toMatch(/^ferry_jobs_finished_total\{.*outcome="dead_lettered"\} 1$/m);
    await dev.waitForLine(`metrics   http://127.0.0.1:${port}/metrics  (no token)`);
    const listener = await expectPromtoolClean(`http://127.0.0.1:${port}/metrics`);
    expect(listener).toMatch(/^ferry_jobs_finished_total\{.*outcome="dead_lettered"\} 1$/m);
  });
});
