/**
 * A schedule of a `sensitive: true` operation (issue 17): its static input reaches the downstream intact, and
 * its plaintext is in no Redis key (every key SCANned, read and DUMPed) and no AOF file: not in the BullMQ job
 * scheduler's template, nor its ticks, nor a run (scheduled or run-now), which is added sealed for its own job
 * id rather than sealed in place by the worker afterwards. A run-now without FERRY_SECRETS_KEY is refused and
 * adds nothing. Real redis-server with appendonly, real HTTP downstream, the in-process worker pool.
 */
import { randomBytes } from 'node:crypto';

import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { type JobData, SEALED_PLACEHOLDER } from '../../src/core/job.ts';
import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { readLastRuns, schedulerId, upsertScheduler } from '../../src/core/schedule-layout.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import type { OpsDeps } from '../../src/ops/deps.ts';
import { runScheduleNow } from '../../src/ops/schedules.ts';
import { parseKeyring } from '../../src/secrets/crypto.ts';
import { startTestApi, TOKENS } from '../helpers/api.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { dumpRedis, redisAtRest, startRedis, uniquePrefix } from '../helpers/redis.ts';
import { findSecretForms, secretForms } from '../helpers/secret-forms.ts';
import { waitUntil } from '../helpers/until.ts';

const redis = await startRedis({ appendonly: true });
const SECRETS_KEY = `k1:${randomBytes(32).toString('base64')}`;
const keyring = parseKeyring(SECRETS_KEY);

describe('a schedule of a sensitive operation', () => {
  it('delivers its input intact and stores no plaintext of it: template, ticks, runs, run-now', async () => {
    const email = `ada-${randomBytes(6).toString('hex')}@example.com`;
    const account = `acct ${randomBytes(6).toString('hex')} "quoted" & spaced`;
    const input = { email, account, batch: 7 };
    const server = await startDownstream(() => ({ status: 200, body: { ok: true } }));
    onTestFinished(() => server.close());
    const ferry = await createTestFerry(redis, {
      services: {
        services: {
          vault: {
            baseUrl: server.url,
            retry: { attempts: 1 },
            operations: {
              store: { method: 'POST', path: '/store', body: '{{ input }}', sensitive: true },
            },
          },
        },
        schedules: {
          nightly: { everyMs: 1000, service: 'vault', operation: 'store', input, tenant: 'acme' },
        },
      },
      pool: { keyring },
    });
    const queue = new Queue(serviceQueueName('vault'), { connection: redis.client, prefix: ferry.prefix });
    onTestFinished(() => queue.close());
    const ops: OpsDeps = { connection: redis.client, prefix: ferry.prefix, config: ferry.config, keyring };

    // A scheduled run reaches the downstream with the plaintext input.
    await waitUntil(() => server.requests.length >= 1, 30_000, 'a scheduled run');
    expect(JSON.parse(server.requests[0]!.body)).toEqual(input);
    expect(String(server.requests[0]!.headers['idempotency-key'])).toMatch(/^ferry-schedule-nightly-\d+$/);

    // Run-now without a keyring is refused and adds nothing; with one, its run is sealed and delivered.
    const before = await queue.getJobCounts();
    await expect(runScheduleNow({ ...ops, keyring: undefined }, 'nightly')).rejects.toMatchObject({
      type: 'ConfigurationError',
      message: expect.stringMatching(/vault\.store is sensitive.*FERRY_SECRETS_KEY/),
    });
    expect((await readLastRuns(redis.client, ferry.prefix)).get('nightly')?.trigger).toBe('schedule');
    const now = await runScheduleNow(ops, 'nightly');
    // The API's run-now (its process's FERRY_SECRETS_KEY) seals too.
    const api = await startTestApi({
      redisUrl: redis.url,
      prefix: ferry.prefix,
      config: ferry.config,
      secretsKey: SECRETS_KEY,
    });
    const viaApi = await api.request('POST', '/v1/schedules/nightly/run-now', { token: TOKENS.admin });
    expect(viaApi.status).toBe(202);
    const apiJobId = (viaApi.body as { jobId: string }).jobId;
    await waitUntil(
      async () => (await queue.getJobState(apiJobId)) === 'completed',
      30_000,
      "the API's run-now run completed",
    );
    await waitUntil(
      async () => (await queue.getJobState(now.jobId)) === 'completed',
      30_000,
      'the run-now run completed',
    );
    const nowRequest = server.requests.find(
      (request) => request.headers['idempotency-key'] === now.idempotencyKey,
    );
    expect(JSON.parse(nowRequest!.body)).toEqual(input);
    expect((await queue.getJobCounts()).failed).toBe(before.failed);

    // A scheduled run completed too (not merely taken).
    await waitUntil(
      async () => {
        const last = (await readLastRuns(redis.client, ferry.prefix)).get('nightly');
        return last?.trigger === 'schedule' && (await queue.getJobState(last.jobId)) === 'completed';
      },
      30_000,
      'a completed scheduled run',
    );
    const last = (await readLastRuns(redis.client, ferry.prefix)).get('nightly')!;
    for (const jobId of [last.jobId, now.jobId, apiJobId]) {
      const data = (await queue.getJob(jobId))!.data as JobData;
      expect(data.input).toBe(SEALED_PLACEHOLDER);
      expect(data.sealed).toMatch(/^fs1\.k1\./);
      expect(data.tenant).toBe('acme');
    }
    const scheduler = await queue.getJobScheduler(schedulerId('nightly'));
    expect((scheduler?.template?.data as JobData | undefined)?.input).toBe(SEALED_PLACEHOLDER);

    const places = await redisAtRest(redis);
    const hits = [
      ...findSecretForms('email', secretForms(email), places),
      ...findSecretForms('account', secretForms(account), places),
    ];
    expect(hits).toEqual([]);
  });

  it('a worker that starts rewrites a plaintext template, and its pending tick, with [sealed]', async () => {
    const email = `bob-${randomBytes(6).toString('hex')}@example.com`;
    const services = {
      services: {
        vault: {
          baseUrl: 'http://127.0.0.1:9',
          operations: { store: { method: 'POST', path: '/store', body: '{{ input }}', sensitive: true } },
        },
      },
      schedules: { hourly: { cron: '0 0 1 1 *', service: 'vault', operation: 'store', input: { email } } },
    };
    const prefix = uniquePrefix();
    const queue = new Queue(serviceQueueName('vault'), { connection: redis.client, prefix });
    onTestFinished(() => queue.close());
    // As an older Ferry stored it: the input in the template and in the pending tick.
    await upsertScheduler(queue, parseServicesConfig(services, { env: {} }).schedules.get('hourly')!);
    const tickData = async (): Promise<unknown[]> =>
      (await queue.getDelayed())
        .filter((job) => job.id?.startsWith('repeat:'))
        .map((job) => job.data as unknown);
    expect(await tickData()).toEqual([expect.objectContaining({ input: { email } })]);

    await createTestFerry(redis, { services, prefix, pool: { keyring } });
    const scheduler = await queue.getJobScheduler(schedulerId('hourly'));
    expect((scheduler?.template?.data as JobData | undefined)?.input).toBe(SEALED_PLACEHOLDER);
    expect(await tickData()).toEqual([expect.objectContaining({ input: SEALED_PLACEHOLDER })]);
    const values = await dumpRedis(redis.client, `${prefix}:*`);
    expect(values).toContain(SEALED_PLACEHOLDER);
    expect(values).not.toContain(email);
  });
});
