/** Deleting a dead letter: gone from the queue, the index and the counts, and never written again. */
import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import type { JobData } from '../../src/core/job.ts';
import { DEAD_LETTERED_FIELD, serviceQueueName } from '../../src/core/queue-layout.ts';
import { DeadLetterPurger } from '../../src/dead-letter/purge.ts';
import { DeadLetterReader } from '../../src/dead-letter/reader.ts';
import { sweepFailed } from '../../src/dead-letter/reconciler.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';
import { deadLetterKit, T } from './support.ts';

const redis = await startRedis();

describe('dead-letter delete', () => {
  it('removes the dead letter and its index entries, and says whether it existed', async () => {
    const kit = deadLetterKit(redis);
    const kept = await kit.write({ deadLetteredAt: T });
    const id = await kit.write({ service: 'mail', operation: 'send', tenant: 'acme', deadLetteredAt: T + 1 });
    expect(await kit.reader.countByService()).toEqual(
      new Map([
        ['crm', 1],
        ['mail', 1],
      ]),
    );

    expect(await kit.purger.delete(id)).toBe(true);
    expect(await kit.reader.show(id)).toBeUndefined();
    expect(await kit.raw.getJob(id)).toBeUndefined();
    expect((await kit.reader.list()).items.map((item) => item.id)).toEqual([kept]);
    expect(await kit.reader.countByService()).toEqual(new Map([['crm', 1]]));
    // Nothing of it is left in the index.
    expect(await redis.client.zscore(kit.keys.byTime, id)).toBeNull();
    expect(await redis.client.hexists(kit.keys.facets, id)).toBe(0);
    expect(await redis.client.exists(kit.keys.byService('mail'))).toBe(0);
    expect(await redis.client.smembers(kit.keys.services)).toEqual(['crm']);

    expect(await kit.purger.delete(id)).toBe(false);
    expect(await kit.purger.delete('dl-crm.never.1')).toBe(false);
  });

  it('cleans the entries of a dead letter something else removed, and reports it as not existing', async () => {
    const kit = deadLetterKit(redis);
    const id = await kit.write();
    await kit.raw.remove(id);
    expect(await redis.client.zscore(kit.keys.byTime, id)).not.toBeNull();
    expect(await kit.purger.delete(id)).toBe(false);
    expect(await redis.client.zscore(kit.keys.byTime, id)).toBeNull();
    expect(await kit.reader.countByService()).toEqual(new Map());
  });

  it.each(['meta', 'wait', 'id', 'events', 'marker', 'ferry:by-time', 'ferry:services', ''])(
    'never removes a key of the queue or the index given as an id: %j',
    async (id) => {
      const kit = deadLetterKit(redis);
      const kept = await kit.write();
      const before = (await redis.client.keys(`${kit.prefix}:*`)).sort();
      expect(await kit.purger.delete(id)).toBe(false);
      expect((await redis.client.keys(`${kit.prefix}:*`)).sort()).toEqual(before);
      expect(await kit.raw.isPaused()).toBe(true);
      expect((await kit.reader.list()).items.map((item) => item.id)).toEqual([kept]);
    },
  );
});

describe('a deleted dead letter stays deleted', () => {
  it('is not written again by the sweep, a full start-up sweep included', async () => {
    const downstream = await startDownstream(() => ({ status: 400, body: { error: 'no' } }));
    onTestFinished(() => downstream.close());
    const ferry = await createTestFerry(redis, {
      services: oneService(downstream.url),
      // Each sweep here is the test's own.
      pool: { sweepIntervalMs: 3_600_000 },
    });
    const reader = new DeadLetterReader({ connection: redis.client, prefix: ferry.prefix });
    const purger = new DeadLetterPurger({ connection: redis.client, prefix: ferry.prefix });
    onTestFinished(() => purger.close());
    const queue = new Queue<JobData>(serviceQueueName('svc'), {
      connection: redis.client,
      prefix: ferry.prefix,
    });
    onTestFinished(() => queue.close());

    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 1 } });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('dead_lettered');
    const id = view.deadLetterId!;
    expect((await reader.list()).items.map((item) => item.id)).toEqual([id]);

    expect(await purger.delete(id)).toBe(true);
    // The source job still says its dead letter was written: that is what keeps the sweep away.
    expect(await redis.client.hget(queue.toKey(job.id), DEAD_LETTERED_FIELD)).toBe(id);
    const swept = await sweepFailed('svc', queue, ferry.pool.deadLetters, 0, Date.now());
    expect(swept).toEqual({ checked: 1, written: [] });
    expect(await ferry.pool.sweep()).toBe(0);
    expect(await reader.show(id)).toBeUndefined();
    expect((await reader.list()).items).toEqual([]);
    expect(await reader.countByService()).toEqual(new Map());
  });
});
