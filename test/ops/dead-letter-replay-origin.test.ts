/**
 * A replayed dead letter keeps its job's origin (issue 16), depth included: a follow-up stays a follow-up, so
 * its own reactions still count towards the chain's depth limit, and a replay cannot start a chain afresh.
 */
import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import type { JobData, JobOrigin } from '../../src/core/job.ts';
import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { replayDeadLetters, replayJobId } from '../../src/ops/dead-letter-replay.ts';
import { Producer } from '../../src/producer/index.ts';
import { deadLetterKit } from '../dead-letter/support.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

describe('replay and origin', () => {
  it('the replayed job carries the dead letter’s origin, and one without keeps none', async () => {
    const kit = deadLetterKit(redis);
    const origin: JobOrigin = {
      kind: 'onFailure',
      source: { service: 'billing', jobId: 'b-1' },
      deadLetterId: 'dl-billing.b-1.1700000000000',
      rule: 0,
      depth: 3,
    };
    const followUp = await kit.write({ origin });
    const plain = await kit.write();
    const report = await replayDeadLetters(
      { connection: redis.client, prefix: kit.prefix },
      { ids: [followUp, plain] },
    );
    expect(report.replayed).toBe(2);

    const queue = new Queue<JobData>(serviceQueueName('crm'), {
      connection: redis.client,
      prefix: kit.prefix,
    });
    const producer = new Producer({ connection: redis.client, prefix: kit.prefix });
    onTestFinished(async () => {
      await queue.close();
      await producer.close();
    });
    expect((await queue.getJob(replayJobId(followUp)))?.data.origin).toEqual(origin);
    expect((await producer.get('crm', replayJobId(followUp)))?.origin).toEqual(origin);
    const plainJob = await queue.getJob(replayJobId(plain));
    expect(plainJob).toBeDefined();
    expect(plainJob?.data).not.toHaveProperty('origin');
  });
});
