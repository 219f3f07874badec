/**
 * `ferry status`'s last hour (GET /v1/status `lastHour`), counted in the completed and failed sets, which BullMQ
 * scores by the time a job finished: the worker records no per-minute metrics (issue 20). The sets are filled
 * here as BullMQ's moveToFinished fills them (ZADD <finishedOn> <job id>), at chosen times.
 */
import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { HOUR, MINUTE } from '../../src/core/time.ts';
import { readStatus } from '../../src/ops/status.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const config = parseServicesConfig(
  { services: { crm: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'GET', path: '/' } } } } },
  { env: {} },
);
const NOW = 1_800_000_000_000;

async function lastHour(finished: { completed?: number[]; failed?: number[] }): Promise<unknown> {
  const prefix = uniquePrefix();
  const queue = new Queue(serviceQueueName('crm'), { connection: redis.client, prefix });
  onTestFinished(() => queue.close());
  for (const state of ['completed', 'failed'] as const)
    for (const [i, ago] of (finished[state] ?? []).entries())
      await redis.client.zadd(queue.toKey(state), NOW - ago, `${state}-${i}`);
  const [crm] = await readStatus({ connection: redis.client, prefix, config, now: () => NOW });
  return crm!.lastHour;
}

describe('status: the last hour', () => {
  it.each([
    ['no finished job kept: null, not zero', {}, null],
    [
      'jobs finished within the hour count, older ones do not',
      { completed: [0, 10 * MINUTE, HOUR - 1, HOUR + 1, 5 * HOUR], failed: [5 * MINUTE, 2 * HOUR] },
      { completed: 3, failed: 1 },
    ],
    [
      'only older jobs kept: zero, not null',
      { completed: [2 * HOUR], failed: [3 * HOUR] },
      { completed: 0, failed: 0 },
    ],
    ['only failed jobs', { failed: [MINUTE] }, { completed: 0, failed: 1 }],
  ])('%s', async (_, finished, expected) => {
    expect(await lastHour(finished)).toEqual(expected);
  });
});
