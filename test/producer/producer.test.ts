import { describe, expect, it } from 'vitest';

import {
  Producer,
  ProducerClosedError,
  ValidationError,
  WaitTimeoutError,
} from '../../src/producer/index.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

describe('Producer validation', () => {
  it.each([
    ['unknown service', { service: 'nope', operation: 'create' }, 'service'],
    ['unknown operation', { service: 'svc', operation: 'nope' }, 'operation'],
    ['bad service name', { service: 'Bad Name', operation: 'create' }, 'service'],
    [
      'idempotency key too long',
      { service: 'svc', operation: 'create', idempotencyKey: 'k'.repeat(201) },
      'idempotencyKey',
    ],
    ['empty idempotency key', { service: 'svc', operation: 'create', idempotencyKey: '' }, 'idempotencyKey'],
    ['negative delay', { service: 'svc', operation: 'create', delayMs: -1 }, 'delayMs'],
    ['unknown field', { service: 'svc', operation: 'create', extra: 1 }, 'job'],
    [
      'input too large',
      { service: 'svc', operation: 'create', input: { blob: 'x'.repeat(300 * 1024) } },
      'input',
    ],
  ])('%s → ValidationError naming %s', async (_name, request, field) => {
    const ferry = await createTestFerry(redis, { services: oneService('http://127.0.0.1:9'), start: false });
    const error = await ferry.producer.enqueue(request as never).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe(field);
  });

  it('enqueueMany adds nothing when any item is bad, and names the item', async () => {
    const ferry = await createTestFerry(redis, { services: oneService('http://127.0.0.1:9'), start: false });
    const error = await ferry.producer
      .enqueueMany([
        { service: 'svc', operation: 'create', input: {} },
        { service: 'svc', operation: 'nope', input: {} },
      ])
      .catch((e: unknown) => e);
    expect((error as ValidationError).field).toBe('[1].operation');
    // Nothing on the service's queue. (The worker pool's dead-letter writer may have set up `{dead-letter}`, and
    // the running worker writes the queue's `meta` and `events` whenever its start reaches Redis (CI saw `meta`):
    // neither has anything to do with what the producer added.)
    const keys = await redis.client.keys(`${ferry.prefix}:{svc}*`);
    expect(keys.filter((key) => !/:(meta|events)$/.test(key))).toEqual([]);
  });
});

describe('idempotency', () => {
  it('a repeat with the same key returns the first job and adds nothing', async () => {
    const ferry = await createTestFerry(redis, { services: oneService('http://127.0.0.1:9'), start: false });
    const first = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: { v: 1 },
      idempotencyKey: 'order-42',
    });
    const second = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: { v: 2 },
      idempotencyKey: 'order-42',
    });
    const other = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: { v: 3 },
      idempotencyKey: 'order-43',
    });
    expect(first.created).toBe(true);
    expect(second).toEqual({ ...first, created: false });
    expect(other.id).not.toBe(first.id);
    const view = await ferry.producer.get('svc', first.id);
    expect(view?.state).toBe('waiting');
  });

  it('a batch with a repeated key reports the repeat per item', async () => {
    const ferry = await createTestFerry(redis, { services: oneService('http://127.0.0.1:9'), start: false });
    await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {}, idempotencyKey: 'a' });
    const results = await ferry.producer.enqueueMany([
      { service: 'svc', operation: 'create', input: {}, idempotencyKey: 'a' },
      { service: 'svc', operation: 'create', input: {}, idempotencyKey: 'b' },
    ]);
    expect(results.map((r) => r.created)).toEqual([false, true]);
  });
});

describe('Producer without a services catalog (a client service that has no services file)', () => {
  it('checks the shape only and enqueues', async () => {
    const producer = new Producer({ connection: redis.url, prefix: uniquePrefix() });
    try {
      const result = await producer.enqueue({ service: 'anything', operation: 'op', input: 1 });
      expect(result.created).toBe(true);
      expect((await producer.get('anything', result.id))?.operation).toBe('op');
    } finally {
      await producer.close();
    }
  });
});

describe('Producer errors a caller can branch on', () => {
  it('waitFor gives up with WaitTimeoutError carrying the last view of the job', async () => {
    const ferry = await createTestFerry(redis, { services: oneService('http://127.0.0.1:9'), start: false });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const error = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WaitTimeoutError);
    expect((error as WaitTimeoutError).type).toBe('WaitTimeoutError');
    expect((error as WaitTimeoutError).job?.state).toBe('waiting');
    expect((error as Error).message).toContain(`svc/${job.id}`);
  });

  it('a closed producer refuses work with ProducerClosedError', async () => {
    const producer = new Producer({ connection: redis.url, prefix: uniquePrefix() });
    await producer.close();
    const error = await producer.enqueue({ service: 'svc', operation: 'create' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProducerClosedError);
    expect((error as ProducerClosedError).type).toBe('ProducerClosedError');
  });
});
