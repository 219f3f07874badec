/**
 * Fallback routing survives a SIGKILL between the persisted route and the move (issue 16 §3), with the built
 * CLI. Made deterministic without a hook in src: the first `ferry worker` logs in as a Redis ACL user that may
 * write `sms-primary`'s keys (and the dead-letter queue) and only read `sms-backup`'s breaker, so it decides and
 * persists each route but cannot add the job to the backup's queue. Once every job holds its route it is
 * SIGKILLed; the backup's breaker is opened too (a run that asked again would hold), and a normal worker must
 * finish every move: exactly one backup job, and exactly one backup request, per job.
 */

import { Job, Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import type { JobData, JobResult, StoredDeliveryState } from '../../src/core/job.ts';
import { idempotentJobId, serviceQueueName } from '../../src/core/queue-layout.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { decodeStoredResult } from '../../src/core/stored-result.ts';
import { closeBreaker, openBreaker } from '../../src/ops/breaker-control.ts';
import { Producer } from '../../src/producer/index.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { spawnFerry, startWorker, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { restrictedRedisUser, startRedis, uniquePrefix } from '../helpers/redis.ts';
import { waitUntil } from '../helpers/until.ts';

const redis = await startRedis();
const primary = await startDownstream();
const backup = await startDownstream();

const PRIMARY = 'sms-primary';
const BACKUP = 'sms-backup';
const N = 6;

function service(baseUrl: string, fallback?: string): Record<string, unknown> {
  return {
    baseUrl,
    timeoutMs: 5_000,
    concurrency: 3,
    retry: { attempts: 3, backoff: { delayMs: 50, maxDelayMs: 200 } },
    ...(fallback === undefined ? {} : { fallback: { service: fallback } }),
    operations: { send: { method: 'POST', path: '/messages', body: '{{ input }}' } },
  };
}

describe('fallback routing and SIGKILL', () => {
  it('a worker killed between the persisted route and the move still yields exactly one backup job per job', async () => {
    const prefix = uniquePrefix();
    const doc = { services: { [PRIMARY]: service(primary.url, BACKUP), [BACKUP]: service(backup.url) } };
    const servicesFile = await writeServicesFile(doc);
    const config = parseServicesConfig(doc, { env: {} });
    const ops = { connection: redis.client, prefix, config };
    const primaryQueue = new Queue<JobData, JobResult>(serviceQueueName(PRIMARY), {
      connection: redis.client,
      prefix,
    });
    const backupQueue = new Queue<JobData, JobResult>(serviceQueueName(BACKUP), {
      connection: redis.client,
      prefix,
    });
    const producer = new Producer({ connection: redis.url, prefix });
    onTestFinished(async () => {
      await producer.close();
      await primaryQueue.close();
      await backupQueue.close();
    });

    // May do anything to sms-primary's queue and the dead-letter queue; may only read sms-backup's breaker.
    const limitedUrl = await restrictedRedisUser(redis, prefix, {
      writes: [`{${PRIMARY}}`, '{dead-letter}'],
      reads: [`{${BACKUP}}:breaker`],
    });

    await openBreaker(ops, PRIMARY, { forMs: 120_000, reason: 'provider outage' });
    const keys = Array.from({ length: N }, (_, i) => `kill-${i}`);
    const accepted = await producer.enqueueMany(
      keys.map((key, i) => ({ service: PRIMARY, operation: 'send', input: { n: i }, idempotencyKey: key })),
    );
    const primaryBefore = primary.requests.length;
    const backupBefore = backup.requests.length;

    const stateOf = async (id: string): Promise<StoredDeliveryState | undefined> => {
      const raw = await redis.client.hget(primaryQueue.toKey(id), 'data');
      return raw === null ? undefined : (JSON.parse(raw) as JobData).ferry;
    };
    const limited = spawnFerry(['worker', '--services', PRIMARY], {
      env: workerEnv({ redisUrl: limitedUrl, servicesFile, prefix }),
    });
    onTestFinished(async () => {
      await limited.kill9();
    });
    await limited.waitUntilStarted(30_000);
    await waitUntil(
      async () => {
        const states = await Promise.all(accepted.map((job) => stateOf(job.id)));
        return states.every((state) => state?.routedTo !== undefined);
      },
      30_000,
      `every job's route persisted:\n${limited.output()}`,
    );
    await limited.kill9();
    // The limited worker could not move any job.
    expect(await backupQueue.count()).toBe(0);
    for (const job of accepted) expect(await primaryQueue.getJobState(job.id)).not.toBe('completed');

    // A run that asked the breakers now would hold the jobs: both are open.
    await openBreaker(ops, BACKUP, { forMs: 120_000 });
    const normal = await startWorker(workerEnv({ redisUrl: redis.url, servicesFile, prefix }));
    onTestFinished(async () => {
      await normal.kill9();
    });
    const views = await Promise.all(
      accepted.map((job) => producer.waitFor(PRIMARY, job.id, { timeoutMs: 30_000 })),
    );
    for (const [i, view] of views.entries()) {
      expect(view.state, `job ${i}`).toBe('completed');
      const source = await Job.fromId<JobData, JobResult>(primaryQueue, accepted[i]!.id);
      expect(decodeStoredResult(source?.returnvalue)?.routedTo).toEqual({
        service: BACKUP,
        jobId: idempotentJobId(keys[i]!),
      });
    }
    expect(await backupQueue.count()).toBe(N);

    // The backup recovers: each routed job reaches it exactly once, with the primary's key; the primary got none.
    await closeBreaker(ops, BACKUP);
    await waitUntil(
      async () => (await backupQueue.getJobCounts('completed')).completed === N,
      30_000,
      `every backup job completed:\n${normal.output()}`,
    );
    const seen = new Map<string, number>();
    for (const request of backup.requests.slice(backupBefore)) {
      const key = String(request.headers['idempotency-key']);
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
    expect(Object.fromEntries(seen)).toEqual(Object.fromEntries(keys.map((key) => [key, 1])));
    expect(primary.requests.length - primaryBefore).toBe(0);
    normal.terminate();
    expect((await normal.waitForExit(20_000)).code).toBe(0);
  });
});
