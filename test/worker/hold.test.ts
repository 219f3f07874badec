/** Whole-service holds: Retry-After and an open breaker stop every worker, and held jobs keep their attempts. */
import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import type { BreakerState } from '../../src/breakers/index.ts';
import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();
const downstream = await startDownstream();

describe('Retry-After', () => {
  it('a 429 with Retry-After holds the whole service for that long and uses no attempt', async () => {
    let n = 0;
    downstream.script(() =>
      ++n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200, body: { ok: true } },
    );
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url, { concurrency: 1 }) });
    const before = downstream.requests.length;
    const jobs = await ferry.producer.enqueueMany([
      { service: 'svc', operation: 'create', input: { n: 1 } },
      { service: 'svc', operation: 'create', input: { n: 2 } },
    ]);
    const first = await ferry.producer.waitFor('svc', jobs[0]!.id, { timeoutMs: 10_000 });
    await ferry.producer.waitFor('svc', jobs[1]!.id, { timeoutMs: 10_000 });
    const calls = downstream.requests.slice(before);
    expect(calls).toHaveLength(3);
    // Nothing was called during the wait the service asked for.
    expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(950);
    expect(first.state).toBe('completed');
    expect(first.result?.attempts).toBe(1);
    expect(first.history.map((a) => [a.outcome, a.type, a.status, a.retryDelayMs])).toEqual([
      ['held', 'RateLimitedError', 429, 1000],
      ['completed', undefined, 200, undefined],
    ]);
  });

  it('a 503 with an HTTP-date Retry-After is honoured as a hold too', async () => {
    let n = 0;
    downstream.script(() =>
      ++n === 1
        ? { status: 503, headers: { 'retry-after': new Date(Date.now() + 2_000).toUTCString() } }
        : { status: 200, body: {} },
    );
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const before = downstream.requests.length;
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    const calls = downstream.requests.slice(before);
    expect(view.state).toBe('completed');
    // HTTP-dates have one-second resolution: the wait is between 1 and 2 s.
    expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(950);
    expect(view.result?.attempts).toBe(1);
  });

  it('holds are bounded by retry.maxHoldMs: a service that always says "later" ends in the dead-letter queue', async () => {
    downstream.script(() => ({ status: 429, headers: { 'retry-after': '1' } }));
    const ferry = await createTestFerry(redis, {
      services: oneService(downstream.url, {
        retry: { attempts: 2, backoff: { delayMs: 10, maxDelayMs: 10 }, maxHoldMs: 1_000 },
      }),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 15_000 });
    expect(view.state).toBe('dead_lettered');
    expect(view.lastError?.type).toBe('RateLimitedError');
    expect(view.history.map((a) => a.outcome)).toEqual(['held', 'failed', 'failed']);
  });
});

describe('a Retry-After over retry.maxRetryAfterMs', () => {
  it('holds the whole service for the cap (5 min by default), not for what was asked, and warns once for a flood', async () => {
    downstream.script(() => ({ status: 429, headers: { 'retry-after': '99999' } }));
    const ferry = await createTestFerry(redis, {
      services: oneService(downstream.url, { concurrency: 4 }),
      start: false,
    });
    const held: number[] = [];
    ferry.pool.on('job:service:held', (event) => held.push(event.holdMs));
    const jobs = await ferry.producer.enqueueMany(
      Array.from({ length: 4 }, (_, i) => ({ service: 'svc', operation: 'create' as const, input: { i } })),
    );
    await ferry.start();
    await expect.poll(() => held.length, { timeout: 10_000 }).toBeGreaterThan(0);
    const queue = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix: ferry.prefix });
    onTestFinished(() => queue.close());
    // Asked: 99,999 s (27.8 h). Held: 5 min, for the whole queue.
    expect(held.every((ms) => ms === 300_000)).toBe(true);
    const ttl = await queue.getRateLimitTtl();
    expect(ttl).toBeGreaterThan(240_000);
    expect(ttl).toBeLessThanOrEqual(300_000);
    const views = await Promise.all(jobs.map((job) => ferry.producer.get('svc', job.id)));
    const holds = views.flatMap((v) => v!.history.filter((a) => a.outcome === 'held'));
    expect(holds.length).toBeGreaterThan(0);
    expect(holds.every((a) => a.retryDelayMs === 300_000)).toBe(true);
    const warnings = ferry.logs
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.askedMs !== undefined);
    // However many of the jobs were taken before the hold, one line, with the service and both values.
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({
      level: 40,
      service: 'svc',
      askedMs: 99_999_000,
      appliedMs: 300_000,
      maxRetryAfterMs: 300_000,
    });
  });
});

describe('circuit breaker', () => {
  it('opens after the threshold; the downstream gets no calls until the reset timeout; held jobs keep their attempts; the queue drains after recovery', async () => {
    let healthy = false;
    let served500 = 0;
    downstream.script(() => {
      if (healthy) return { status: 200, body: { ok: true } };
      served500++;
      return { status: 500, body: 'down' };
    });
    const resetTimeoutMs = 3_000;
    const ferry = await createTestFerry(redis, {
      services: oneService(downstream.url, {
        concurrency: 2,
        retry: { attempts: 20, backoff: { delayMs: 20, maxDelayMs: 50 } },
        breaker: {
          errorThresholdPercentage: 50,
          volumeThreshold: 4,
          rollingWindowMs: 10_000,
          resetTimeoutMs,
        },
      }),
      start: false,
    });
    const transitions: { to: BreakerState['state']; at: number }[] = [];
    ferry.pool.breakers.on('breaker:state:changed', (change) =>
      transitions.push({ to: change.to.state, at: Date.now() }),
    );
    const before = downstream.requests.length;
    const jobs = await ferry.producer.enqueueMany(
      Array.from({ length: 20 }, (_, i) => ({ service: 'svc', operation: 'create' as const, input: { i } })),
    );
    await ferry.start();
    await expect.poll(() => transitions.some((t) => t.to === 'open'), { timeout: 5_000 }).toBe(true);
    const openedAt = transitions.find((t) => t.to === 'open')!.at;
    const queue = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix: ferry.prefix });
    // While open: the service's queue is held (rate-limited) for every worker, from the moment a worker takes
    // the next job and finds the breaker open (a moment after the breaker opened, on a busy machine).
    await expect.poll(() => queue.getRateLimitTtl(), { timeout: 2_000, interval: 20 }).toBeGreaterThan(0);
    healthy = true;
    await Promise.all(jobs.map((job) => ferry.producer.waitFor('svc', job.id, { timeoutMs: 15_000 })));
    const calls = downstream.requests.slice(before);
    // Calls already in flight when it opened may land just after; none in the rest of the open window.
    const duringOpen = calls.filter((c) => c.at > openedAt + 100 && c.at < openedAt + resetTimeoutMs - 100);
    expect(duringOpen).toEqual([]);
    const views = await Promise.all(jobs.map((job) => ferry.producer.get('svc', job.id)));
    expect(views.every((v) => v?.state === 'completed')).toBe(true);
    // Held jobs used no attempt: every failed attempt recorded is one 500 the service really answered.
    const failedAttempts = views.flatMap((v) => v!.history.filter((a) => a.outcome === 'failed'));
    expect(failedAttempts.every((a) => a.type === 'ServerError')).toBe(true);
    expect(failedAttempts).toHaveLength(served500);
    expect(served500).toBeLessThan(20);
    expect(transitions.map((t) => t.to)).toEqual(expect.arrayContaining(['open', 'halfOpen', 'closed']));
    await queue.close();
  });

  it('4xx answers never open the breaker', async () => {
    downstream.script(() => ({ status: 422 }));
    const ferry = await createTestFerry(redis, {
      services: oneService(downstream.url, {
        breaker: {
          errorThresholdPercentage: 10,
          volumeThreshold: 2,
          rollingWindowMs: 10_000,
          resetTimeoutMs: 5_000,
        },
      }),
    });
    const jobs = await ferry.producer.enqueueMany(
      Array.from({ length: 10 }, (_, i) => ({ service: 'svc', operation: 'create' as const, input: { i } })),
    );
    await Promise.all(jobs.map((job) => ferry.producer.waitFor('svc', job.id)));
    expect(ferry.pool.breakers.list()).toEqual([{ name: 'svc', state: { state: 'closed' } }]);
  });
});
