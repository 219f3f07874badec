/**
 * A service without `rateLimit` carries BullMQ's rate-limit maximum only while a hold may run (queue-hold.ts):
 * jobs taken otherwise pay no limiter bookkeeping, and a hold still stops the workers of every process.
 */
import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { holdQueue, releaseUnusedMaximum, UNLIMITED_RATE } from '../../src/worker/queue-hold.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { waitUntil } from '../helpers/until.ts';

const redis = await startRedis();
const downstream = await startDownstream();
const HOLD_MARK = String(Number.MAX_SAFE_INTEGER);

function queueOf(prefix: string, service = 'svc'): Queue {
  const queue = new Queue(serviceQueueName(service), { connection: redis.client, prefix });
  onTestFinished(() => queue.close());
  return queue;
}

describe('the rate-limit maximum of a service without rateLimit', () => {
  it('is absent while nothing holds the queue, and a hold one process applies stops the workers of another', async () => {
    let n = 0;
    downstream.script(() =>
      ++n === 1 ? { status: 429, headers: { 'retry-after': '2' } } : { status: 200, body: { ok: true } },
    );
    const first = await createTestFerry(redis, { services: oneService(downstream.url, { concurrency: 1 }) });
    const queue = queueOf(first.prefix);
    // Nothing holds the queue: no maximum, so BullMQ's scripts skip the limiter for every job taken.
    expect(await redis.client.hget(queue.toKey('meta'), 'max')).toBeNull();

    const before = downstream.requests.length;
    const held = await first.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 1 } });
    await waitUntil(
      async () => (await redis.client.get(queue.toKey('limiter'))) === HOLD_MARK,
      10_000,
      'the 429 holds the queue',
    );
    // The hold came with the maximum, in the same script: no process can see one without the other.
    expect(await redis.client.hget(queue.toKey('meta'), 'max')).toBe(String(UNLIMITED_RATE.max));

    // A second process, started while the hold runs: it must not call before the hold ends either.
    const second = await createTestFerry(redis, {
      services: oneService(downstream.url, { concurrency: 1 }),
      prefix: first.prefix,
    });
    const other = await second.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 2 } });
    await first.producer.waitFor('svc', held.id, { timeoutMs: 15_000 });
    await first.producer.waitFor('svc', other.id, { timeoutMs: 15_000 });
    const calls = downstream.requests.slice(before);
    expect(calls).toHaveLength(3);
    // The 429 asked for 2 s: nothing was called meanwhile, by either process.
    expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(1_950);
    expect(calls[2]!.at - calls[0]!.at).toBeGreaterThanOrEqual(1_950);
  });
});

describe('releaseUnusedMaximum', () => {
  it('removes the unlimited maximum and the limiter counter once no hold runs, never a running hold', async () => {
    const queue = queueOf(uniquePrefix());
    await holdQueue(redis.client, queue, 60_000);
    expect(await redis.client.hget(queue.toKey('meta'), 'max')).toBe(String(UNLIMITED_RATE.max));
    expect(await releaseUnusedMaximum(redis.client, queue)).toBe(false);
    expect(await redis.client.hget(queue.toKey('meta'), 'max')).toBe(String(UNLIMITED_RATE.max));
    expect(await queue.getRateLimitTtl()).toBeGreaterThan(50_000);

    // The hold ended (closed breaker, expiry); BullMQ's counter under the maximum is left.
    await redis.client.set(queue.toKey('limiter'), '7', 'PX', 60_000);
    expect(await releaseUnusedMaximum(redis.client, queue)).toBe(true);
    expect(await redis.client.hmget(queue.toKey('meta'), 'max', 'duration')).toEqual([null, null]);
    expect(await redis.client.exists(queue.toKey('limiter'))).toBe(0);
    // Without a maximum, BullMQ reads a live limiter key as a hold: none is left to misread.
    expect(await queue.getRateLimitTtl()).toBeLessThanOrEqual(0);
  });

  it("keeps a maximum that is not Ferry's unlimited one (a real rateLimit)", async () => {
    const queue = queueOf(uniquePrefix());
    await queue.setGlobalRateLimit(10, 1_000);
    expect(await releaseUnusedMaximum(redis.client, queue)).toBe(false);
    expect(await redis.client.hget(queue.toKey('meta'), 'max')).toBe('10');
    // And a hold on it keeps that maximum as it is.
    await holdQueue(redis.client, queue, 5_000);
    expect(await redis.client.hget(queue.toKey('meta'), 'max')).toBe('10');
    expect(await queue.getRateLimitTtl()).toBeGreaterThan(0);
  });

  it('a worker pool keeps the rateLimit of a service that has one, and drops a leftover unlimited maximum', async () => {
    const prefix = uniquePrefix();
    const unlimited = queueOf(prefix, 'svc');
    // As an earlier version of the worker left it.
    await unlimited.setGlobalRateLimit(UNLIMITED_RATE.max, UNLIMITED_RATE.perMs);
    await createTestFerry(redis, {
      prefix,
      services: {
        services: {
          ...(oneService(downstream.url) as { services: Record<string, unknown> }).services,
          limited: {
            baseUrl: downstream.url,
            rateLimit: { max: 5, perMs: 1_000 },
            operations: { create: { method: 'POST', path: '/things' } },
          },
        },
      },
    });
    expect(await redis.client.hget(unlimited.toKey('meta'), 'max')).toBeNull();
    expect(await redis.client.hmget(queueOf(prefix, 'limited').toKey('meta'), 'max', 'duration')).toEqual([
      '5',
      '1000',
    ]);
  });
});
