/** A run's record in one round trip (record-run.ts): all of it while the run holds the lock, nothing otherwise. */
import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { recordRun, type RunRecord } from '../../src/worker/record-run.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

async function setUp(): Promise<{
  queue: Queue;
  id: string;
  record: (token: string | undefined) => RunRecord;
}> {
  const queue = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix: uniquePrefix() });
  onTestFinished(() => queue.close());
  const job = await queue.add('create', { input: { n: 1 } });
  const id = job.id!;
  const key = queue.toKey(id);
  const record = (token: string | undefined): RunRecord => ({
    keys: {
      lock: `${key}:lock`,
      stalled: queue.toKey('stalled'),
      job: key,
      logs: `${key}:logs`,
      events: queue.toKey('events'),
      meta: queue.toKey('meta'),
    },
    token,
    lockDurationMs: 30_000,
    jobId: id,
    data: JSON.stringify({
      input: { n: 1 },
      ferry: { attempts: [{ attempt: 1 }], heldMs: 0, stallsSeen: 0 },
    }),
    log: 'attempt 1 failed: ServerError: 503; retrying in 5 ms',
    keepLogs: undefined,
    event: { name: 'ferry:job:retrying', data: JSON.stringify({ operation: 'create', attempt: 1 }) },
  });
  return { queue, id, record };
}

async function lastEvent(queue: Queue): Promise<Record<string, string>> {
  const [entry] = await redis.client.xrevrange(queue.toKey('events'), '+', '-', 'COUNT', 1);
  const fields = entry![1];
  return Object.fromEntries(fields.flatMap((_, i) => (i % 2 === 0 ? [[fields[i], fields[i + 1]]] : [])));
}

describe('recordRun', () => {
  it('with the lock: extends it, writes the state, the log line and the event', async () => {
    const { queue, id, record } = await setUp();
    const key = queue.toKey(id);
    await redis.client.set(`${key}:lock`, 'token-1', 'PX', 1_000);
    await redis.client.sadd(queue.toKey('stalled'), id);
    expect(await recordRun(redis.client, record('token-1'))).toBe('written');
    expect(await redis.client.pttl(`${key}:lock`)).toBeGreaterThan(20_000);
    expect(await redis.client.sismember(queue.toKey('stalled'), id)).toBe(0);
    const job = await queue.getJob(id);
    expect(job?.data).toEqual({
      input: { n: 1 },
      ferry: { attempts: [{ attempt: 1 }], heldMs: 0, stallsSeen: 0 },
    });
    expect((await queue.getJobLogs(id)).logs).toEqual([
      'attempt 1 failed: ServerError: 503; retrying in 5 ms',
    ]);
    expect(await lastEvent(queue)).toEqual({
      event: 'ferry:job:retrying',
      jobId: id,
      data: JSON.stringify({ operation: 'create', attempt: 1 }),
    });
  });

  it('without the lock (another run owns the job): writes nothing', async () => {
    const { queue, id, record } = await setUp();
    const key = queue.toKey(id);
    await redis.client.set(`${key}:lock`, 'someone-else', 'PX', 10_000);
    const eventsBefore = await redis.client.xlen(queue.toKey('events'));
    expect(await recordRun(redis.client, record('token-1'))).toBe('lostLock');
    expect(await redis.client.get(`${key}:lock`)).toBe('someone-else');
    expect((await queue.getJob(id))?.data).toEqual({ input: { n: 1 } });
    expect((await queue.getJobLogs(id)).count).toBe(0);
    expect(await redis.client.xlen(queue.toKey('events'))).toBe(eventsBefore);
    // A lock that expired is not this run's either.
    await redis.client.del(`${key}:lock`);
    expect(await recordRun(redis.client, record('token-1'))).toBe('lostLock');
    expect((await queue.getJob(id))?.data).toEqual({ input: { n: 1 } });
  });

  it('the state alone (no log line, no event): writes only the data', async () => {
    const { queue, id, record } = await setUp();
    const key = queue.toKey(id);
    await redis.client.set(`${key}:lock`, 'token-1', 'PX', 1_000);
    const eventsBefore = await redis.client.xlen(queue.toKey('events'));
    const { log: _log, event: _event, ...stateOnly } = record('token-1');
    expect(await recordRun(redis.client, stateOnly)).toBe('written');
    expect((await queue.getJob(id))?.data).toMatchObject({ ferry: { attempts: [{ attempt: 1 }] } });
    expect((await queue.getJobLogs(id)).count).toBe(0);
    expect(await redis.client.xlen(queue.toKey('events'))).toBe(eventsBefore);
  });

  it('a job that is gone: writes nothing; keepLogs trims the log as job.log does', async () => {
    const { queue, id, record } = await setUp();
    const key = queue.toKey(id);
    await redis.client.rpush(`${key}:logs`, 'one', 'two', 'three');
    expect(await recordRun(redis.client, { ...record(undefined), keepLogs: 2 })).toBe('written');
    expect((await queue.getJobLogs(id)).logs).toEqual([
      'three',
      'attempt 1 failed: ServerError: 503; retrying in 5 ms',
    ]);
    await redis.client.del(key);
    const eventsBefore = await redis.client.xlen(queue.toKey('events'));
    expect(await recordRun(redis.client, record(undefined))).toBe('missing');
    expect(await redis.client.exists(key)).toBe(0);
    expect(await redis.client.xlen(queue.toKey('events'))).toBe(eventsBefore);
  });
});
