/** Dead letters are written once per failed job: never missing, never duplicated, never brought back. */
import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import type { JobData } from '../../src/core/job.ts';
import { DEAD_LETTERED_FIELD, serviceQueueName } from '../../src/core/queue-layout.ts';
import { sweepFailed } from '../../src/dead-letter/reconciler.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService, type TestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';
import { waitUntil } from '../helpers/until.ts';

const redis = await startRedis();
const downstream = await startDownstream(() => ({ status: 422, body: { error: 'no' } }));

/** A Ferry whose own periodic sweep stays out of the way: each test sweeps when it means to. */
function ferryWithoutBackgroundSweep(): Promise<TestFerry> {
  return createTestFerry(redis, {
    services: oneService(downstream.url),
    pool: { sweepIntervalMs: 3_600_000 },
  });
}

/** The service's queue on the test's prefix, closed when the test ends (passed or not). */
function serviceQueue(ferry: TestFerry): Queue<JobData> {
  const queue = new Queue<JobData>(serviceQueueName('svc'), {
    connection: redis.client,
    prefix: ferry.prefix,
  });
  onTestFinished(() => queue.close());
  return queue;
}

describe('dead-letter sweep', () => {
  it('never writes again a dead letter an operator purged, not even from a full start-up sweep', async () => {
    const ferry = await ferryWithoutBackgroundSweep();
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 1 } });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('dead_lettered');
    const queue = serviceQueue(ferry);
    // The source job records that its dead letter was written.
    expect(await redis.client.hget(queue.toKey(job.id), DEAD_LETTERED_FIELD)).toBe(view.deadLetterId);

    await ferry.pool.deadLetters.queue.remove(view.deadLetterId!);
    expect(await ferry.pool.deadLetters.exists(view.deadLetterId!)).toBe(false);
    // What a restarting worker does first: sweep the whole failed set.
    const swept = await sweepFailed('svc', queue, ferry.pool.deadLetters, 0, Date.now());
    expect(swept.checked).toBe(1);
    expect(swept.written).toEqual([]);
    expect(await ferry.pool.sweep()).toBe(0);
    expect(await ferry.pool.deadLetters.exists(view.deadLetterId!)).toBe(false);
  });

  it('writes the missing dead letter of a failed job exactly once, however often it sweeps', async () => {
    const ferry = await ferryWithoutBackgroundSweep();
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 2 } });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    const queue = serviceQueue(ferry);
    // As if the worker was killed after the job failed but before its dead letter was written.
    await ferry.pool.deadLetters.queue.remove(view.deadLetterId!);
    await redis.client.hdel(queue.toKey(job.id), DEAD_LETTERED_FIELD);

    const first = await sweepFailed('svc', queue, ferry.pool.deadLetters, 0, Date.now());
    const second = await sweepFailed('svc', queue, ferry.pool.deadLetters, 0, Date.now());
    expect(first.written).toEqual([job.id]);
    expect(second.written).toEqual([]);
    const dead = await ferry.pool.deadLetters.get(view.deadLetterId!);
    expect(dead?.data).toMatchObject({
      sourceJobId: job.id,
      input: { n: 2 },
      finalError: { type: 'ClientError' },
    });
    expect(await ferry.pool.deadLetters.queue.getJobCountByTypes('wait')).toBe(1);
  });

  it('gives a job id that comes back (idempotency key reused after removal) a dead letter of its own', async () => {
    const ferry = await ferryWithoutBackgroundSweep();
    const request = { service: 'svc', operation: 'create', idempotencyKey: 'order-42' } as const;
    const first = await ferry.producer.enqueue({ ...request, input: { n: 1 } });
    const firstView = await ferry.producer.waitFor('svc', first.id, { timeoutMs: 10_000 });
    const queue = serviceQueue(ferry);
    const createdAt = (await queue.getJob(first.id))!.timestamp;
    // Failed jobs are removed after a retention period; the dead letter stays.
    await queue.remove(first.id);
    // The job that comes back must have a creation time of its own, as days later: the clock has moved on.
    await waitUntil(() => Date.now() > createdAt, 5_000, 'the clock past the first job creation time');

    const second = await ferry.producer.enqueue({ ...request, input: { n: 2 } });
    expect(second).toMatchObject({ id: first.id, created: true });
    const secondView = await ferry.producer.waitFor('svc', second.id, { timeoutMs: 10_000 });
    expect(secondView.state).toBe('dead_lettered');
    expect(secondView.deadLetterId).not.toBe(firstView.deadLetterId);
    expect((await ferry.pool.deadLetters.get(firstView.deadLetterId!))?.data.input).toEqual({ n: 1 });
    expect((await ferry.pool.deadLetters.get(secondView.deadLetterId!))?.data.input).toEqual({ n: 2 });
  });
});
