/**
 * `ferry worker` (the built CLI, as a child process) serves its metrics on FERRY_METRICS_HOST:FERRY_METRICS_PORT,
 * fails start-up with one clear line when the port is taken, and serves none with FERRY_METRICS_PORT=0.
 */
import { createServer } from 'node:http';

import { describe, expect, it, onTestFinished } from 'vitest';

import { freePort } from '../../src/cli/redis-server.ts';
import { Producer } from '../../src/index.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { oneService } from '../helpers/ferry.ts';
import { listenOnFreePort } from '../helpers/listen.ts';
import { runFerry, startWorker, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { scrapeUrl } from './support.ts';

const redis = await startRedis();

async function setup(
  extra: Record<string, string>,
): Promise<{ env: Record<string, string | undefined>; prefix: string }> {
  const downstream = await startDownstream(() => ({ status: 201, body: { id: 7 } }));
  const prefix = uniquePrefix();
  const servicesFile = await writeServicesFile(oneService(downstream.url));
  return { env: workerEnv({ redisUrl: redis.url, servicesFile, prefix, extra }), prefix };
}

describe('ferry worker metrics server', () => {
  it('serves the series of the jobs it ran on FERRY_METRICS_PORT, until SIGTERM', async () => {
    const port = await freePort();
    const { env, prefix } = await setup({ FERRY_METRICS_PORT: String(port) });
    const worker = await startWorker(env);
    const url = `http://127.0.0.1:${port}`;
    const started = await worker.waitForLog((entry) => entry.msg === `metrics on ${url}/metrics`);
    expect(started.url).toBe(`${url}/metrics`);

    const producer = new Producer({ connection: redis.url, prefix });
    onTestFinished(() => producer.close());
    const job = await producer.enqueue({ service: 'svc', operation: 'create', input: { n: 1 } });
    expect((await producer.waitFor('svc', job.id)).state).toBe('completed');

    const { status, contentType, scrape } = await scrapeUrl(`${url}/metrics`);
    expect(status).toBe(200);
    expect(contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(
      scrape.value('ferry_jobs_finished_total', {
        service: 'svc',
        operation: 'create',
        outcome: 'completed',
      }),
    ).toBe(1);
    expect(
      scrape.value('ferry_attempts_total', { service: 'svc', operation: 'create', error_type: 'none' }),
    ).toBe(1);
    expect(
      scrape.histogram('ferry_attempt_duration_seconds', {
        service: 'svc',
        operation: 'create',
        outcome: 'completed',
      })?.count,
    ).toBe(1);
    expect(scrape.value('ferry_breaker_state', { service: 'svc', state: 'closed' })).toBe(1);
    expect(scrape.value('ferry_queue_jobs', { service: 'svc', state: 'completed' })).toBe(1);
    expect(scrape.value('ferry_redis_up')).toBe(1);
    expect(scrape.value('process_start_time_seconds')).toBeGreaterThan(0);
    const health = await fetch(`${url}/healthz`);
    expect(await health.text()).toBe('ok');
    // Readiness for a Kubernetes worker Deployment: Redis answers.
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.text()).toBe('ready');

    worker.terminate();
    expect((await worker.waitForExit()).code, worker.output()).toBe(0);
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  });

  it('a port in use fails start-up: exit 1, one line naming FERRY_METRICS_PORT, no job taken', async () => {
    const taken = await listenOnFreePort(createServer());
    const port = new URL(taken.url).port;
    const { env } = await setup({ FERRY_METRICS_PORT: port });
    const run = await runFerry(['worker'], { env });
    expect(run.code, run.process.output()).toBe(1);
    expect(run.stderr).toBe(
      `ConfigurationError: FERRY_METRICS_PORT: 127.0.0.1:${port} is already in use; set FERRY_METRICS_PORT to a free port, or to 0 to turn the worker's metrics server off`,
    );
    expect(run.process.countLogs((entry) => entry.msg === 'worker pool started')).toBe(0);
  });

  it('FERRY_METRICS_PORT=0 (the test default): no metrics server', async () => {
    const { env } = await setup({});
    expect(env.FERRY_METRICS_PORT).toBeUndefined();
    const worker = await startWorker(env);
    worker.terminate();
    expect((await worker.waitForExit()).code, worker.output()).toBe(0);
    expect(worker.countLogs((entry) => String(entry.msg).startsWith('metrics on'))).toBe(0);
  });
});
