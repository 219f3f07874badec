import { describe, expect, it } from 'vitest';

import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();
const downstream = await startDownstream();

describe('delivery', () => {
  it('calls the downstream once and stores the result', async () => {
    downstream.script(() => ({
      status: 201,
      body: { id: 7 },
      headers: { 'x-request-id': 'r1', 'set-cookie': 'a=b' },
    }));
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const before = downstream.requests.length;
    const job = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: { email: 'a@b.c' },
      metadata: { order: 42 },
    });
    const view = await ferry.producer.waitFor('svc', job.id);
    expect(view.state).toBe('completed');
    expect(view.result).toMatchObject({ status: 201, body: { id: 7 }, attempts: 1, metadata: { order: 42 } });
    // Allow-listed headers only: a cookie the service sets is not stored.
    expect(view.result?.headers).toMatchObject({ 'content-type': 'application/json', 'x-request-id': 'r1' });
    expect(view.result?.headers).not.toHaveProperty('set-cookie');
    const calls = downstream.requests.slice(before);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ method: 'POST', url: '/things', body: '{"email":"a@b.c"}' });
    // No idempotencyKey: the default one, from the job's random enqueue id (not its per-queue job id).
    expect(calls[0]?.headers['idempotency-key']).toMatch(/^ferry-[0-9a-f-]{36}$/);
  });

  it('retries a retryable failure and then succeeds, with the history kept', async () => {
    let n = 0;
    downstream.script(() =>
      ++n <= 2 ? { status: 500, body: { error: 'boom' } } : { status: 200, body: { ok: true } },
    );
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const job = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: {},
      idempotencyKey: 'order-1',
    });
    const view = await ferry.producer.waitFor('svc', job.id);
    expect(view.state).toBe('completed');
    expect(view.result?.attempts).toBe(3);
    expect(n).toBe(3);
    const keys = downstream.requests.slice(-3).map((r) => r.headers['idempotency-key']);
    expect(keys).toEqual(['order-1', 'order-1', 'order-1']);
  });

  it('dead-letters after the attempts run out, with every attempt recorded', async () => {
    downstream.script(() => ({ status: 503, body: 'down' }));
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const job = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: { a: 1 },
      tenant: 'acme',
    });
    const view = await ferry.producer.waitFor('svc', job.id);
    expect(view.state).toBe('dead_lettered');
    expect(view.deadLetterId).toMatch(new RegExp(`^dl-svc\\.${job.id}\\.\\d+$`));
    const dl = await ferry.pool.deadLetters.get(view.deadLetterId!);
    expect(dl?.name).toBe('svc.create');
    expect(dl?.data).toMatchObject({
      service: 'svc',
      operation: 'create',
      input: { a: 1 },
      tenant: 'acme',
      sourceJobId: job.id,
      finalError: { type: 'ServerError', status: 503 },
    });
    expect(dl?.data.attempts.map((a) => [a.attempt, a.outcome, a.type, a.status])).toEqual([
      [1, 'failed', 'ServerError', 503],
      [2, 'failed', 'ServerError', 503],
      [3, 'failed', 'ServerError', 503],
    ]);
    expect(dl?.data.attempts[0]?.retryDelayMs).toBeGreaterThanOrEqual(0);
    expect(dl?.data.attempts[2]?.retryDelayMs).toBeUndefined();
  });
});
