/**
 * /metrics while Redis is slow or gone: the scrape answers within about its timeout with what it has
 * (process metrics, Ferry's counters) and `ferry_redis_up 0`, instead of hanging. This file stops its Redis,
 * so it has one of its own; its tests run in order.
 */
import { EventEmitter } from 'node:events';

import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import type { DeliveryEventMap } from '../../src/core/delivery-events.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { createMetrics, type Metrics } from '../../src/metrics/metrics.ts';
import { oneService } from '../helpers/ferry.ts';
import { withTimeout } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { Scrape } from './support.ts';

const redis = await startRedis();
const SCRAPE_TIMEOUT_MS = 1_500;

/** A worker's kind of connection: it never gives up a command, so a read sent while Redis is away waits for it. */
async function workerConnection(): Promise<Redis> {
  const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  connection.on('error', () => undefined);
  onTestFinished(() => connection.disconnect());
  await connection.ping();
  return connection;
}

/** Metrics on `connection` that have counted one completed job. */
function metricsWithOneJob(connection: Redis): Metrics {
  const config = parseServicesConfig(oneService('http://127.0.0.1:9'), { env: {} });
  const metrics = createMetrics({ config, connection, prefix: uniquePrefix() });
  onTestFinished(() => metrics.close());
  const events = new EventEmitter();
  metrics.observeDeliveries(events);
  const completed: DeliveryEventMap['job:attempt:completed'] = {
    service: 'svc',
    operation: 'create',
    jobId: '1',
    tenant: undefined,
    attempt: 1,
    durationMs: 12,
    result: { status: 200, headers: {}, body: null, durationMs: 12, attempts: 1 },
  };
  events.emit('job:attempt:completed', completed);
  return metrics;
}

async function timedRender(metrics: Metrics): Promise<{ ms: number; scrape: Scrape }> {
  const startedAt = Date.now();
  const { body } = await metrics.render();
  return { ms: Date.now() - startedAt, scrape: new Scrape(body) };
}

/** What a scrape must still say when Redis did not answer. */
function expectAnswerWithoutRedis(scrape: Scrape): void {
  expect(scrape.value('ferry_redis_up')).toBe(0);
  expect(scrape.value('ferry_scrape_collector_success', { collector: 'queues' })).toBe(0);
  expect(scrape.samples('ferry_queue_jobs')).toEqual([]);
  expect(
    scrape.value('ferry_jobs_finished_total', { service: 'svc', operation: 'create', outcome: 'completed' }),
  ).toBe(1);
  expect(
    scrape.histogram('ferry_attempt_duration_seconds', {
      service: 'svc',
      operation: 'create',
      outcome: 'completed',
    })?.buckets['0.025'],
  ).toBe(1);
  expect(scrape.value('process_start_time_seconds')).toBeGreaterThan(0);
}

describe('a scrape while Redis does not answer', () => {
  it('Redis paused (connected, but answering nothing): within the timeout, then up again', async () => {
    const connection = await workerConnection();
    const metrics = metricsWithOneJob(connection);
    const before = await timedRender(metrics);
    expect(before.scrape.value('ferry_redis_up')).toBe(1);
    expect(before.scrape.value('ferry_queue_jobs', { service: 'svc', state: 'waiting' })).toBe(0);

    const admin = new Redis(redis.url);
    onTestFinished(() => admin.disconnect());
    await admin.call('CLIENT', 'PAUSE', '3000', 'ALL');
    const paused = await timedRender(metrics);
    expect(paused.ms).toBeGreaterThanOrEqual(SCRAPE_TIMEOUT_MS - 50);
    expect(paused.ms).toBeLessThan(2_000);
    expectAnswerWithoutRedis(paused.scrape);

    await expect
      .poll(async () => (await timedRender(metrics)).scrape.value('ferry_redis_up'), { timeout: 10_000 })
      .toBe(1);
    expect(
      (await timedRender(metrics)).scrape.value('ferry_scrape_collector_success', { collector: 'queues' }),
    ).toBe(1);
  });

  it('Redis stopped: at once, and nothing is queued for when it comes back', async () => {
    const connection = await workerConnection();
    const metrics = metricsWithOneJob(connection);
    await redis.stop();
    await expect.poll(() => connection.status).not.toBe('ready');
    for (let i = 0; i < 3; i++) {
      const stopped = await timedRender(metrics);
      expect(stopped.ms).toBeLessThan(1_000);
      expectAnswerWithoutRedis(stopped.scrape);
    }
    // ioredis's offline queue: commands a worker connection holds until it reconnects.
    expect((connection as unknown as { offlineQueue: { length: number } }).offlineQueue.length).toBe(0);
    await withTimeout(metrics.close(), 3_000, () => 'metrics.close() hung with Redis down');
  });
});
