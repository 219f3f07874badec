/**
 * The default Idempotency-Key (issue 13 item 11): a job enqueued without an idempotencyKey was sent BullMQ's
 * per-queue job id, so five services all sent `Idempotency-Key: 1`, and a Redis reset started the numbers
 * again. The default key is unique across services and Redis lifetimes, and the same on every attempt, stall
 * re-run and replay of the job.
 */
import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { defaultIdempotencyKey, serviceQueueName } from '../../src/core/queue-layout.ts';
import { replayDeadLetters, replayJobId } from '../../src/ops/dead-letter-replay.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

const SERVICES = ['crm', 'billing', 'mailer', 'search', 'ledger'];

function keyOf(request: { headers: Record<string, string | string[] | undefined> }): string {
  return String(request.headers['idempotency-key']);
}

describe('default Idempotency-Key', () => {
  it('five services’ jobs without keys send five distinct, non-numeric keys', async () => {
    const downstream = await startDownstream();
    onTestFinished(() => downstream.close());
    const services = Object.fromEntries(
      SERVICES.map((name) => [
        name,
        {
          baseUrl: downstream.url,
          timeoutMs: 2_000,
          operations: { create: { method: 'POST', path: `/${name}`, body: '{{ input }}' } },
        },
      ]),
    );
    const ferry = await createTestFerry(redis, { services: { services } });
    const jobs = await Promise.all(
      SERVICES.map((service) => ferry.producer.enqueue({ service, operation: 'create', input: {} })),
    );
    // Each the first job of its queue: the same BullMQ id everywhere.
    expect(new Set(jobs.map((job) => job.id))).toEqual(new Set(['1']));
    await Promise.all(jobs.map((job, i) => ferry.producer.waitFor(SERVICES[i]!, job.id)));
    const keys = downstream.requests.map(keyOf);
    expect(keys).toHaveLength(5);
    expect(new Set(keys).size).toBe(5);
    for (const key of keys) expect(key).toMatch(/^ferry-[0-9a-f-]{36}$/);
  });

  it('a flushed Redis, which numbers jobs from 1 again, does not reuse a key', async () => {
    const downstream = await startDownstream();
    onTestFinished(() => downstream.close());
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const first = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    await ferry.producer.waitFor('svc', first.id);
    await redis.client.flushall();
    const second = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    await ferry.producer.waitFor('svc', second.id, { timeoutMs: 10_000 });
    expect([first.id, second.id]).toEqual(['1', '1']);
    const keys = downstream.requests.map(keyOf);
    expect(keys).toHaveLength(2);
    expect(keys[0]).not.toBe(keys[1]);
  });

  it('a retried job and its replayed dead letter send the key of the first attempt, templates see it too', async () => {
    let healthy = false;
    const downstream = await startDownstream(() =>
      healthy ? { status: 200, body: { ok: true } } : { status: 500, body: 'down' },
    );
    onTestFinished(() => downstream.close());
    const ferry = await createTestFerry(redis, {
      services: oneService(downstream.url, {
        headers: { 'X-Job-Key': '{{ job.idempotencyKey }}' },
        retry: { attempts: 3, backoff: { delayMs: 10, maxDelayMs: 20 } },
        breaker: { volumeThreshold: 1_000_000 },
      }),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 1 } });
    const dead = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(dead.state).toBe('dead_lettered');
    healthy = true;
    const report = await replayDeadLetters({ connection: redis.client, prefix: ferry.prefix });
    expect(report.replayed).toBe(1);
    const replayed = await ferry.producer.waitFor('svc', replayJobId(dead.deadLetterId!), {
      timeoutMs: 10_000,
    });
    expect(replayed.state).toBe('completed');
    const keys = downstream.requests.map(keyOf);
    // Three attempts, then the replay's call.
    expect(keys).toHaveLength(4);
    expect(new Set(keys).size).toBe(1);
    expect(keys[0]).toMatch(/^ferry-/);
    expect(downstream.requests.map((r) => r.headers['x-job-key'])).toEqual(keys);
  });

  it('a raw BullMQ job without an enqueue id gets a stable, non-numeric key', async () => {
    let calls = 0;
    const downstream = await startDownstream(() =>
      ++calls === 1 ? { status: 500, body: 'once' } : { status: 200, body: {} },
    );
    onTestFinished(() => downstream.close());
    const ferry = await createTestFerry(redis, {
      services: oneService(downstream.url, {
        retry: { attempts: 3, backoff: { delayMs: 10, maxDelayMs: 20 } },
      }),
    });
    const queue = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix: ferry.prefix });
    onTestFinished(() => queue.close());
    const raw = await queue.add('create', { input: { raw: true } });
    const view = await ferry.producer.waitFor('svc', raw.id!, { timeoutMs: 10_000 });
    expect(view.state).toBe('completed');
    const keys = downstream.requests.map(keyOf);
    expect(keys).toHaveLength(2);
    expect(keys[1]).toBe(keys[0]);
    expect(keys[0]).not.toMatch(/^\d+$/);
    expect(keys[0]).toBe(defaultIdempotencyKey('svc', raw.id!, raw.timestamp, undefined));
  });
});

describe('defaultIdempotencyKey', () => {
  const uuid = '0b6f3c1e-52a4-4a8e-9d0c-7f1e2a3b4c5d';
  it.each<[string, Parameters<typeof defaultIdempotencyKey>, string | RegExp]>([
    ['a producer’s enqueue id', ['crm', '1', 1, uuid], `ferry-${uuid}`],
    ['an upper-case one, normalised', ['crm', '1', 1, uuid.toUpperCase()], `ferry-${uuid}`],
    ['no enqueue id: a hash', ['crm', '1', 1, undefined], /^ferry-[A-Za-z0-9_-]{32}$/],
    ['an enqueue id that is not a UUID: a hash', ['crm', '1', 1, '1'], /^ferry-[A-Za-z0-9_-]{32}$/],
  ])('%s', (_name, args, expected) => {
    const key = defaultIdempotencyKey(...args);
    if (typeof expected === 'string') expect(key).toBe(expected);
    else expect(key).toMatch(expected);
  });

  it('differs by service, job id and creation time; is the same for the same job', () => {
    const base = defaultIdempotencyKey('crm', '1', 1_000, undefined);
    expect(defaultIdempotencyKey('crm', '1', 1_000, undefined)).toBe(base);
    expect(
      new Set([
        base,
        defaultIdempotencyKey('billing', '1', 1_000, undefined),
        defaultIdempotencyKey('crm', '2', 1_000, undefined),
        defaultIdempotencyKey('crm', '1', 1_001, undefined),
        defaultIdempotencyKey('billing', '1', 1_000, '1'),
        defaultIdempotencyKey('crm', '1', 1_000, '1'),
      ]).size,
    ).toBe(6);
  });
});
