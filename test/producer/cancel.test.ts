/**
 * Producer.cancel: takes a job out of the list or set it waits in atomically, then removes it; a job a worker
 * holds or finished is never removed.
 */
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { Producer } from '../../src/producer/index.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

async function setup(): Promise<{ producer: Producer; queue: Queue; prefix: string; connection: Redis }> {
  const prefix = uniquePrefix();
  const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  const producer = new Producer({ connection, prefix });
  const queue = new Queue(serviceQueueName('svc'), { connection, prefix });
  onTestFinished(async () => {
    await queue.close();
    await producer.close();
    connection.disconnect();
  });
  return { producer, queue, prefix, connection };
}

describe('Producer.cancel', () => {
  it.each([
    ['waiting', {}],
    ['delayed', { delayMs: 60_000 }],
    ['prioritized', { priority: 5 }],
  ])('cancels a %s job: gone from Redis', async (state, options) => {
    const { producer, queue } = await setup();
    const { id } = await producer.enqueue({ service: 'svc', operation: 'op', input: {}, ...options });
    expect(await queue.getJobState(id)).toBe(state);
    expect(await producer.cancel('svc', id)).toBe('cancelled');
    expect(await queue.getJob(id)).toBeUndefined();
    expect(await queue.getJobCounts('waiting', 'delayed', 'prioritized')).toEqual({
      waiting: 0,
      delayed: 0,
      prioritized: 0,
    });
  });

  it('refuses a job a worker holds, and one that completed, leaving both as they are', async () => {
    const { producer, queue, prefix, connection } = await setup();
    const { id } = await producer.enqueue({ service: 'svc', operation: 'op', input: {} });
    const worker = new Worker(serviceQueueName('svc'), null, { connection, prefix, autorun: false });
    onTestFinished(() => worker.close());
    const token = 'cancel-test-token';
    const job = await worker.getNextJob(token);
    expect(job?.id).toBe(id);
    expect(await producer.cancel('svc', id)).toBe('notCancellable');
    expect(await queue.getJobState(id)).toBe('active');
    await job!.moveToCompleted({ ok: true }, token, false);
    expect(await producer.cancel('svc', id)).toBe('notCancellable');
    expect(await queue.getJobState(id)).toBe('completed');
    expect((await queue.getJob(id))?.returnvalue).toEqual({ ok: true });
  });

  it('says missing for a job that does not exist', async () => {
    const { producer } = await setup();
    expect(await producer.cancel('svc', 'nope')).toBe('missing');
  });
});
