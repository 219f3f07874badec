/**
 * `ferry schedules run-now` of a `sensitive: true` operation's schedule, through the built CLI (issue 17): it
 * needs FERRY_SECRETS_KEY like the worker (without it: one line, exit 1, nothing added), and with it the run
 * is stored sealed for its own job id, no plaintext of the input in Redis. No worker runs: the run stays
 * queued, as the command left it.
 */
import { randomBytes } from 'node:crypto';

import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { type JobData, SEALED_PLACEHOLDER } from '../../src/core/job.ts';
import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { runFerry, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { dumpRedis, startRedis, uniquePrefix } from '../helpers/redis.ts';
import { findSecretForms, secretForms } from '../helpers/secret-forms.ts';

const redis = await startRedis();

describe('ferry schedules run-now of a sensitive operation', () => {
  it('refuses without FERRY_SECRETS_KEY and seals the run with it', async () => {
    const email = `ada-${randomBytes(6).toString('hex')}@example.com`;
    const prefix = uniquePrefix();
    const file = await writeServicesFile({
      services: {
        vault: {
          baseUrl: 'http://127.0.0.1:9',
          operations: { store: { method: 'POST', path: '/store', body: '{{ input }}', sensitive: true } },
        },
      },
      schedules: { nightly: { cron: '0 2 * * *', service: 'vault', operation: 'store', input: { email } } },
    });
    const queue = new Queue(serviceQueueName('vault'), { connection: redis.client, prefix });
    onTestFinished(() => queue.close());
    const base = workerEnv({ redisUrl: redis.url, servicesFile: file, prefix });

    const refused = await runFerry(['schedules', 'run-now', 'nightly'], {
      env: { ...base, FERRY_SECRETS_KEY: undefined, FERRY_SECRETS_KEY_FILE: undefined },
    });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/vault\.store is sensitive.*FERRY_SECRETS_KEY/);
    expect(await queue.count()).toBe(0);

    const key = `k1:${randomBytes(32).toString('base64')}`;
    const ran = await runFerry(['schedules', 'run-now', 'nightly', '--json'], {
      env: { ...base, FERRY_SECRETS_KEY: key },
    });
    expect(ran.code).toBe(0);
    const { jobId } = JSON.parse(ran.stdout) as { jobId: string };
    const data = (await queue.getJob(jobId))!.data as JobData;
    expect(data.input).toBe(SEALED_PLACEHOLDER);
    expect(data.sealed).toMatch(/^fs1\.k1\./);
    const stored = await dumpRedis(redis.client, `${prefix}:*`);
    expect(stored).toContain(jobId);
    expect(findSecretForms('email', secretForms(email), { redis: stored })).toEqual([]);
  });
});
