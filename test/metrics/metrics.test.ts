/**
 * Ferry's /metrics as Prometheus reads it: a worker pool runs real jobs against a real downstream on a real
 * Redis, the registry is rendered, and the text is parsed by a Prometheus text-format parser.
 */
import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { createProcessMetrics, readBreakerStates, type Runtime } from '../../src/cli/runtime.ts';
import { readEnv } from '../../src/core/env.ts';
import { createLogger } from '../../src/core/logger.ts';
import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { createMetrics, type Metrics } from '../../src/metrics/metrics.ts';
import { Scrubber } from '../../src/secrets/scrub.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService, type TestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';
import { Scrape } from './support.ts';

const redis = await startRedis();

function runtimeOf(ferry: TestFerry): Runtime {
  return {
    env: readEnv({ FERRY_PREFIX: ferry.prefix }),
    logger: createLogger({ level: 'silent' }),
    config: ferry.config,
    scrubber: new Scrubber(),
  };
}

/** The metrics of a worker process (`ferry worker`'s wiring), closed when the test finishes. */
function workerMetrics(ferry: TestFerry): Metrics {
  const metrics = createProcessMetrics(runtimeOf(ferry), ferry.connection, { pool: ferry.pool });
  onTestFinished(() => metrics.close());
  return metrics;
}

async function render(metrics: Metrics): Promise<Scrape> {
  const { contentType, body } = await metrics.render();
  expect(contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
  return new Scrape(body);
}

/** A service whose operations answer as their names say: ok (201), flaky (503 twice, then 200), reject (422). */
async function scriptedService(overrides: Record<string, unknown> = {}): Promise<unknown> {
  let flakyCalls = 0;
  const downstream = await startDownstream((request) => {
    if (request.url.startsWith('/flaky')) return (flakyCalls += 1) <= 2 ? { status: 503 } : { status: 200 };
    if (request.url.startsWith('/reject')) return { status: 422, body: { error: 'no' } };
    return { status: 201, body: { id: 1 } };
  });
  return oneService(downstream.url, {
    operations: {
      ok: { method: 'POST', path: '/ok', body: '{{ input }}' },
      flaky: { method: 'POST', path: '/flaky', body: '{{ input }}' },
      reject: { method: 'POST', path: '/reject', body: '{{ input }}' },
    },
    ...overrides,
  });
}

async function runJobs(ferry: TestFerry, operations: string[]): Promise<void> {
  const jobs = await ferry.producer.enqueueMany(
    operations.map((operation, i) => ({ service: 'svc', operation, input: { i } })),
  );
  const views = await Promise.all(jobs.map((job) => ferry.producer.waitFor('svc', job.id)));
  expect(views.map((view) => view.state)).toEqual(
    operations.map((operation) => (operation === 'reject' ? 'dead_lettered' : 'completed')),
  );
}

describe('delivery series', () => {
  it('count completed, retried and dead-lettered jobs, their attempts by error type and their durations', async () => {
    const ferry = await createTestFerry(redis, { services: await scriptedService() });
    const metrics = workerMetrics(ferry);
    await runJobs(ferry, ['ok', 'ok', 'flaky', 'reject']);
    const scrape = await render(metrics);

    expect(scrape.type('ferry_jobs_finished_total')).toBe('COUNTER');
    const jobs = (operation: string, outcome: string): number | undefined =>
      scrape.value('ferry_jobs_finished_total', { service: 'svc', operation, outcome });
    expect(jobs('ok', 'completed')).toBe(2);
    expect(jobs('flaky', 'completed')).toBe(1);
    expect(jobs('reject', 'dead_lettered')).toBe(1);
    expect(jobs('ok', 'dead_lettered')).toBe(0);
    expect(jobs('reject', 'completed')).toBe(0);

    expect(scrape.type('ferry_attempts_total')).toBe('COUNTER');
    const attempts = (operation: string, errorType: string): number | undefined =>
      scrape.value('ferry_attempts_total', { service: 'svc', operation, error_type: errorType });
    expect(attempts('ok', 'none')).toBe(2);
    expect(attempts('flaky', 'none')).toBe(1);
    expect(attempts('flaky', 'ServerError')).toBe(2);
    expect(attempts('reject', 'ClientError')).toBe(1);
    expect(attempts('reject', 'none')).toBe(0);
    // An error type shows up once it happened, not before.
    expect(attempts('ok', 'TimeoutError')).toBeUndefined();

    expect(scrape.type('ferry_attempt_duration_seconds')).toBe('HISTOGRAM');
    const okDurations = scrape.histogram('ferry_attempt_duration_seconds', {
      service: 'svc',
      operation: 'ok',
      outcome: 'completed',
    });
    expect(okDurations?.count).toBe(2);
    expect(okDurations?.buckets['+Inf']).toBe(2);
    expect(okDurations?.buckets['60']).toBe(2);
    expect(Object.keys(okDurations?.buckets ?? {}).sort((a, b) => Number(a) - Number(b))).toEqual([
      ...['0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '60'],
      '+Inf',
    ]);
    expect(okDurations?.sum).toBeGreaterThan(0);
    expect(okDurations?.sum).toBeLessThan(10);
    const flakyFailures = scrape.histogram('ferry_attempt_duration_seconds', {
      service: 'svc',
      operation: 'flaky',
      outcome: 'failed',
    });
    expect(flakyFailures?.count).toBe(2);
    expect(
      scrape.histogram('ferry_attempt_duration_seconds', {
        service: 'svc',
        operation: 'flaky',
        outcome: 'completed',
      })?.count,
    ).toBe(1);
    // Buckets are cumulative.
    const counts = Object.entries(okDurations?.buckets ?? {})
      .sort(([a], [b]) => Number(a) - Number(b))
      .map(([, count]) => count);
    expect(counts).toEqual([...counts].sort((a, b) => a - b));

    expect(scrape.value('ferry_service_holds_total', { service: 'svc', reason: 'circuitOpen' })).toBe(0);
    expect(scrape.value('ferry_runs_interrupted_total', { service: 'svc', reason: 'stalled' })).toBe(0);
  });

  it('a 429 with Retry-After counts a hold and an attempt; a raw job with an unknown name is operation "_unknown"', async () => {
    let calls = 0;
    const downstream = await startDownstream(() =>
      (calls += 1) === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 },
    );
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const metrics = workerMetrics(ferry);
    const [held] = await ferry.producer.enqueueMany([{ service: 'svc', operation: 'create', input: {} }]);
    expect((await ferry.producer.waitFor('svc', held!.id)).state).toBe('completed');

    const queue = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix: ferry.prefix });
    onTestFinished(() => queue.close());
    const raw = await queue.add('noSuchOperation', { input: {} });
    expect((await ferry.producer.waitFor('svc', raw.id!)).state).toBe('dead_lettered');

    const scrape = await render(metrics);
    expect(scrape.value('ferry_service_holds_total', { service: 'svc', reason: 'rateLimited' })).toBe(1);
    const attempts = (operation: string, errorType: string): number | undefined =>
      scrape.value('ferry_attempts_total', { service: 'svc', operation, error_type: errorType });
    expect(attempts('create', 'RateLimitedError')).toBe(1);
    expect(attempts('create', 'none')).toBe(1);
    expect(attempts('_unknown', 'ValidationError')).toBe(1);
    expect(
      scrape.value('ferry_jobs_finished_total', {
        service: 'svc',
        operation: '_unknown',
        outcome: 'dead_lettered',
      }),
    ).toBe(1);
    expect(scrape.text).not.toContain('noSuchOperation');
  });
});

describe('scrape-time series', () => {
  it('queue depth by state, paused flag, Redis up, and process metrics', async () => {
    const ferry = await createTestFerry(redis, {
      services: oneService('http://127.0.0.1:9'),
      start: false,
    });
    const metrics = workerMetrics(ferry);
    await ferry.producer.enqueueMany([
      ...Array.from({ length: 3 }, () => ({ service: 'svc', operation: 'create', input: {} })),
      { service: 'svc', operation: 'create', input: {}, delayMs: 60_000 },
      { service: 'svc', operation: 'create', input: {}, delayMs: 60_000 },
      { service: 'svc', operation: 'create', input: {}, priority: 5 },
    ]);
    let scrape = await render(metrics);
    expect(scrape.type('ferry_queue_jobs')).toBe('GAUGE');
    const depth = (state: string): number | undefined =>
      scrape.value('ferry_queue_jobs', { service: 'svc', state });
    expect(depth('waiting')).toBe(3);
    expect(depth('delayed')).toBe(2);
    expect(depth('prioritized')).toBe(1);
    expect(depth('active')).toBe(0);
    expect(depth('completed')).toBe(0);
    expect(depth('failed')).toBe(0);
    expect(scrape.samples('ferry_queue_jobs')).toHaveLength(6);
    expect(scrape.value('ferry_queue_paused', { service: 'svc' })).toBe(0);
    expect(scrape.value('ferry_redis_up')).toBe(1);
    expect(scrape.value('ferry_scrape_collector_success', { collector: 'queues' })).toBe(1);
    expect(scrape.value('ferry_scrape_collector_success', { collector: 'breakers' })).toBe(1);
    // Nothing wired dead-letter counts in: neither the series nor its collector.
    expect(scrape.family('ferry_dead_letters')).toBeUndefined();
    expect(scrape.value('ferry_scrape_collector_success', { collector: 'dead_letters' })).toBeUndefined();
    // prom-client's process and Node.js metrics.
    expect(scrape.type('process_cpu_user_seconds_total')).toBe('COUNTER');
    expect(scrape.value('process_start_time_seconds')).toBeGreaterThan(0);
    expect(scrape.type('nodejs_eventloop_lag_seconds')).toBe('GAUGE');
    expect(scrape.value('nodejs_heap_size_used_bytes')).toBeGreaterThan(0);

    const queue = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix: ferry.prefix });
    onTestFinished(() => queue.close());
    await queue.pause();
    scrape = await render(metrics);
    expect(scrape.value('ferry_queue_paused', { service: 'svc' })).toBe(1);
    // BullMQ 6 keeps a paused queue's jobs where they were.
    expect(depth('waiting')).toBe(3);
  });

  it("breaker state: one series per state, 1 on the current one, from the worker's registry and from Redis", async () => {
    const ferry = await createTestFerry(redis, { services: oneService('http://127.0.0.1:9'), start: false });
    const worker = workerMetrics(ferry);
    const runtime = runtimeOf(ferry);
    // The API process has no pool: it reads the shared state from Redis.
    const api = createProcessMetrics(runtime, redis.client);
    onTestFinished(() => api.close());
    const states = async (metrics: Metrics): Promise<Record<string, number | undefined>> => {
      const scrape = await render(metrics);
      expect(scrape.type('ferry_breaker_state')).toBe('GAUGE');
      expect(scrape.samples('ferry_breaker_state')).toHaveLength(3);
      return Object.fromEntries(
        ['closed', 'open', 'halfOpen'].map((state) => [
          state,
          scrape.value('ferry_breaker_state', { service: 'svc', state }),
        ]),
      );
    };
    expect(await states(worker)).toEqual({ closed: 1, open: 0, halfOpen: 0 });
    expect(await states(api)).toEqual({ closed: 1, open: 0, halfOpen: 0 });

    const breaker = ferry.pool.breakers.get('svc', ferry.config.services.get('svc')!.breaker);
    await breaker.open(60_000);
    expect(await states(worker)).toEqual({ closed: 0, open: 1, halfOpen: 0 });
    expect(await states(api)).toEqual({ closed: 0, open: 1, halfOpen: 0 });

    await breaker.open(1);
    await expect.poll(() => states(api)).toEqual({ closed: 0, open: 0, halfOpen: 1 });
    await expect.poll(() => states(worker)).toEqual({ closed: 0, open: 0, halfOpen: 1 });

    await breaker.close();
    expect(await states(worker)).toEqual({ closed: 1, open: 0, halfOpen: 0 });
    expect(await states(api)).toEqual({ closed: 1, open: 0, halfOpen: 0 });
    expect(await readBreakerStates(redis.client, ferry.prefix, ['svc'])).toEqual(
      new Map([['svc', 'closed']]),
    );
  });

  it('dead letters per service come from the injected reader; only services of the services file become labels', async () => {
    const ferry = await createTestFerry(redis, { services: oneService('http://127.0.0.1:9'), start: false });
    let answer: () => Promise<ReadonlyMap<string, number>> = () =>
      Promise.resolve(
        new Map([
          ['svc', 3],
          ['not-configured', 9],
        ]),
      );
    const metrics = createProcessMetrics(runtimeOf(ferry), ferry.connection, {
      deadLetterCounts: () => answer(),
    });
    onTestFinished(() => metrics.close());
    let scrape = await render(metrics);
    expect(scrape.type('ferry_dead_letters')).toBe('GAUGE');
    expect(scrape.samples('ferry_dead_letters')).toEqual([{ labels: { service: 'svc' }, value: '3' }]);
    expect(scrape.value('ferry_scrape_collector_success', { collector: 'dead_letters' })).toBe(1);

    answer = () => Promise.reject(new Error('dead-letter queue unreadable'));
    scrape = await render(metrics);
    expect(scrape.samples('ferry_dead_letters')).toEqual([]);
    expect(scrape.value('ferry_scrape_collector_success', { collector: 'dead_letters' })).toBe(0);
    expect(scrape.value('ferry_redis_up')).toBe(1);
  });

  it('a reader that never answers costs one read, not one per scrape, and each scrape answers within its timeout', async () => {
    const ferry = await createTestFerry(redis, { services: oneService('http://127.0.0.1:9'), start: false });
    let reads = 0;
    const metrics = createMetrics({
      config: ferry.config,
      connection: ferry.connection,
      prefix: ferry.prefix,
      breakerStates: () => {
        reads += 1;
        return new Promise(() => undefined);
      },
      scrapeTimeoutMs: 300,
      processMetrics: false,
    });
    onTestFinished(() => metrics.close());
    await ferry.connection.ping(); // connected: the queue reads are made (they are skipped while it is not)
    for (let i = 0; i < 3; i++) {
      const startedAt = Date.now();
      const scrape = await render(metrics);
      expect(Date.now() - startedAt).toBeLessThan(1_000);
      expect(scrape.value('ferry_scrape_collector_success', { collector: 'breakers' })).toBe(0);
      expect(scrape.samples('ferry_breaker_state')).toEqual([]);
      expect(scrape.value('ferry_queue_jobs', { service: 'svc', state: 'waiting' })).toBe(0);
    }
    expect(reads).toBe(1);
    // Without processMetrics, only Ferry's own series.
    expect([...(await render(metrics)).families.keys()].every((name) => name.startsWith('ferry_'))).toBe(
      true,
    );
  });
});

describe('label values', () => {
  it('never carry a secret, tenant, input, idempotency key, metadata or job id', async () => {
    const SECRET = 'tok_live_metrics_7d1e0a55c3';
    const TENANT = 'tenant-0b7f3e';
    const INPUT = 'input-value-9a41c2';
    const KEY = 'idem-key-55e0d1';
    const downstream = await startDownstream((request, index) =>
      // Echo the credential, as some APIs do in their errors.
      index === 0
        ? { status: 500, body: { youSent: request.headers.authorization } }
        : { status: 200, body: { youSent: request.headers.authorization } },
    );
    const service = (oneService(downstream.url) as { services: { svc: object } }).services.svc;
    const ferry = await createTestFerry(redis, {
      env: { FERRY_SECRET_X: SECRET },
      services: { services: { svc: { ...service, auth: { type: 'bearer', token: '{{ secrets.x }}' } } } },
    });
    const metrics = workerMetrics(ferry);
    const job = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: { email: INPUT },
      tenant: TENANT,
      idempotencyKey: KEY,
      metadata: { note: INPUT },
    });
    expect((await ferry.producer.waitFor('svc', job.id)).state).toBe('completed');
    expect(downstream.requests.map((request) => request.headers.authorization)).toEqual([
      `Bearer ${SECRET}`,
      `Bearer ${SECRET}`,
    ]);

    const { body } = await metrics.render();
    expect(body).toContain(
      'ferry_jobs_finished_total{service="svc",operation="create",outcome="completed"} 1',
    );
    expect(body).toContain('error_type="ServerError"');
    for (const value of [SECRET, TENANT, INPUT, KEY, job.id, Buffer.from(SECRET).toString('base64')])
      expect(body).not.toContain(value);
  });
});
