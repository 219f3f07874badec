/** The worker's job events on a queue's events stream: BullMQ's format and trimming, and never an error. */
import { Writable } from 'node:stream';

import { QueueEvents, type QueueEventsListener } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import { RETRYING_STREAM_EVENT, type RetryingStreamPayload } from '../../src/core/job-events.ts';
import { createLogger } from '../../src/core/logger.ts';
import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { createJobEventPublisher } from '../../src/worker/job-event-publisher.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

type FerryListener = QueueEventsListener & {
  [name: string]: (args: Record<string, string>, id: string) => void;
};

const payload: RetryingStreamPayload = {
  operation: 'create',
  tenant: 'acme',
  attempt: 1,
  error: { type: 'ServerError', message: 'downstream answered 500', status: 500 },
  delayMs: 50,
  nextAttemptAt: 1_700_000_000_050,
};

function setup() {
  const prefix = uniquePrefix();
  const base = `${prefix}:${serviceQueueName('svc')}`;
  const keys = { events: `${base}:events`, meta: `${base}:meta` };
  const lines: string[] = [];
  const logger = createLogger({
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(chunk.toString('utf8'));
        callback();
      },
    }),
  });
  const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  onTestFinished(() => connection.disconnect());
  return {
    prefix,
    keys,
    lines,
    connection,
    publisher: createJobEventPublisher({ connection, keys, logger }),
  };
}

describe('createJobEventPublisher', () => {
  it('writes an entry a BullMQ QueueEvents reads like its own: event, jobId, data', async () => {
    const { prefix, publisher, connection } = setup();
    const queueEvents = new QueueEvents(serviceQueueName('svc'), { connection, prefix, lastEventId: '0-0' });
    onTestFinished(() => queueEvents.close());
    const received = new Promise<[Record<string, string>, string]>((resolve) =>
      queueEvents.on<FerryListener>(RETRYING_STREAM_EVENT, (args, id) => resolve([args, id])),
    );
    await publisher.publish(RETRYING_STREAM_EVENT, 'job-1', payload);
    const [args, id] = await received;
    expect(id).toMatch(/^\d+-\d+$/);
    expect(args).toEqual({ jobId: 'job-1', data: JSON.stringify(payload) });
  });

  it("trims the stream to the queue's maxLenEvents like BullMQ's scripts, 10,000 when unset", async () => {
    const { keys, publisher } = setup();
    await redis.client.hset(keys.meta, 'opts.maxLenEvents', '10');
    for (let i = 0; i < 300; i++) await publisher.publish(RETRYING_STREAM_EVENT, `job-${i}`, payload);
    // `MAXLEN ~` trims whole radix-tree nodes (100 entries each), so a little more than 10 stay.
    expect(await redis.client.xlen(keys.events)).toBeLessThanOrEqual(110);

    await redis.client.hdel(keys.meta, 'opts.maxLenEvents');
    for (let i = 0; i < 300; i++) await publisher.publish(RETRYING_STREAM_EVENT, `job-${i}`, payload);
    expect(await redis.client.xlen(keys.events)).toBeGreaterThanOrEqual(300);
  });

  it('never rejects: a failed publish is logged and the job goes on', async () => {
    const { keys, publisher, lines } = setup();
    // Not a stream: XADD fails with WRONGTYPE.
    await redis.client.set(keys.events, 'not a stream');
    await expect(publisher.publish(RETRYING_STREAM_EVENT, 'job-1', payload)).resolves.toBeUndefined();
    const [line] = lines.map((text) => JSON.parse(text) as Record<string, unknown>);
    expect(line).toMatchObject({
      level: 40,
      event: RETRYING_STREAM_EVENT,
      jobId: 'job-1',
      reason: expect.stringMatching(/^WRONGTYPE/) as string,
      msg: 'could not publish a job event; the job goes on without it',
    });
  });
});
