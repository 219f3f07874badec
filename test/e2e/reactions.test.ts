/**
 * onFailure rules and `then` steps end to end (issue 16 "Must show"): `ferry worker` processes (the built CLI)
 * loading them from a services file, a real redis-server and real local HTTP servers. A 401 fires the
 * AuthenticationError rule and any other error the catch-all; a worker SIGKILLed between the dead letter and
 * its follow-up still yields exactly one follow-up; a chain of three steps carries step 1's response into
 * step 3's request; no secret reaches a follow-up.
 */
import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { decodeStoredResult } from '../../src/core/stored-result.ts';
import {
  type DeadLetterRecord,
  idempotentJobId,
  type JobData,
  type JobResult,
  Producer,
  serviceQueueName,
} from '../../src/index.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { spawnFerry, startWorker, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { dumpRedis, restrictedRedisUser, startRedis, uniquePrefix } from '../helpers/redis.ts';
import { findSecretForms, secretForms } from '../helpers/secret-forms.ts';
import { until, waitUntil } from '../helpers/until.ts';

const redis = await startRedis();
const SECRET = 'crm-token-Zq8/+x=y&z 4711';

/** crm: a 401 that echoes the Authorization header it got, a 422, or a 200 with an id. */
const crm = await startDownstream((request) => {
  if (request.url === '/contacts') return { status: 401, body: { saw: request.headers.authorization } };
  if (request.url === '/reject') return { status: 422, body: { error: 'no' } };
  if (request.url === '/echo') {
    // A hostile downstream: the token it got in every encoding, and a template for the next step to expand.
    const token = String(request.headers.authorization).replace(/^Bearer /, '');
    return {
      status: 200,
      body: { ...Object.fromEntries(secretForms(token)), tmpl: '{{ secrets.crm_token }}' },
    };
  }
  return { status: 200, body: { id: 'cus-42' } };
});
/** Every follow-up's target. */
const targets = await startDownstream(() => ({ status: 200, body: { ok: true } }));

const QUIET = {
  timeoutMs: 5_000,
  retry: { attempts: 2, backoff: { delayMs: 20, maxDelayMs: 50 } },
  breaker: { errorThresholdPercentage: 100, volumeThreshold: 1_000_000 },
};
const post = (path: string) => ({ method: 'POST', path, body: '{{ input }}' });

const SERVICES = {
  services: {
    crm: {
      baseUrl: crm.url,
      ...QUIET,
      auth: { type: 'bearer', token: '{{ secrets.crm_token }}' },
      operations: {
        createContact: {
          ...post('/contacts'),
          onFailure: [
            {
              when: { errorType: ['AuthenticationError'] },
              enqueue: {
                service: 'ops',
                operation: 'rotateAlert',
                input: {
                  job: '{{ job.id }}',
                  error: '{{ error.message }}',
                  deadLetter: '{{ deadLetter.id }}',
                },
              },
            },
          ],
        },
        reject: post('/reject'),
        echo: {
          ...post('/echo'),
          then: { enqueue: { service: 'mail', operation: 'step3', input: { echoed: '{{ result.body }}' } } },
        },
        step1: {
          ...post('/step1'),
          then: {
            enqueue: {
              service: 'billing',
              operation: 'step2',
              input: { carried: '{{ result.body.id }}', email: '{{ input.email }}' },
            },
          },
        },
      },
      // The service's rules come after the operation's: the catch-all for every operation.
      onFailure: [{ enqueue: { service: 'backup', operation: 'createContact', input: '{{ input }}' } }],
    },
    ops: { baseUrl: targets.url, ...QUIET, operations: { rotateAlert: post('/alert') } },
    backup: { baseUrl: targets.url, ...QUIET, operations: { createContact: post('/backup') } },
    billing: {
      baseUrl: targets.url,
      ...QUIET,
      operations: {
        step2: {
          ...post('/step2'),
          then: {
            enqueue: { service: 'mail', operation: 'step3', input: { carried: '{{ input.carried }}' } },
          },
        },
      },
    },
    mail: { baseUrl: targets.url, ...QUIET, operations: { step3: post('/step3') } },
  },
};

async function setup(prefix = uniquePrefix()) {
  const servicesFile = await writeServicesFile(SERVICES);
  const env = (redisUrl: string) =>
    workerEnv({ redisUrl, servicesFile, prefix, extra: { FERRY_SECRET_CRM_TOKEN: SECRET } });
  const producer = new Producer({ connection: redis.url, prefix });
  onTestFinished(() => producer.close());
  const queue = (service: string): Queue<JobData, JobResult> => {
    const q = new Queue<JobData, JobResult>(serviceQueueName(service), { connection: redis.client, prefix });
    onTestFinished(() => q.close());
    return q;
  };
  const deadLetters = new Queue<DeadLetterRecord>('{dead-letter}', { connection: redis.client, prefix });
  onTestFinished(() => deadLetters.close());
  const count = async (service: string) =>
    Object.values(await queue(service).getJobCounts()).reduce((sum, n) => sum + n, 0);
  return { prefix, env, producer, queue, deadLetters, count };
}

describe('onFailure end to end', () => {
  it('a 401 fires the AuthenticationError rule, a 422 the catch-all; no secret reaches a follow-up', async () => {
    const { env, producer, queue, deadLetters, count, prefix } = await setup();
    await startWorker(env(redis.url));

    const auth = await producer.enqueue({
      service: 'crm',
      operation: 'createContact',
      input: { email: 'a@example.com' },
      tenant: 'acme',
    });
    const authView = await producer.waitFor('crm', auth.id, { timeoutMs: 20_000 });
    expect(authView.state).toBe('dead_lettered');
    const alertKey = `ferry-onfailure-${authView.deadLetterId}-0`;
    const alertId = idempotentJobId(alertKey);
    expect((await deadLetters.getJob(authView.deadLetterId!))?.data.followUp).toEqual({
      service: 'ops',
      jobId: alertId,
      rule: 0,
    });
    expect((await producer.waitFor('ops', alertId, { timeoutMs: 20_000 })).state).toBe('completed');
    const alerts = targets.requests.filter((r) => r.headers['idempotency-key'] === alertKey);
    expect(alerts).toHaveLength(1);
    const alert = JSON.parse(alerts[0]!.body) as { job: string; error: string; deadLetter: string };
    expect(alert.job).toBe(auth.id);
    expect(alert.deadLetter).toBe(authView.deadLetterId);
    // The downstream echoed the token into its 401 body: the error message the rule reads is scrubbed.
    expect(alert.error).toMatch(/^downstream answered 401: .*saw/);
    expect(alert.error).not.toContain(SECRET);
    expect((await queue('ops').getJob(alertId))?.data).toMatchObject({
      tenant: 'acme',
      origin: { kind: 'onFailure', source: { service: 'crm', jobId: auth.id }, rule: 0, depth: 1 },
    });

    const reject = await producer.enqueue({ service: 'crm', operation: 'reject', input: { n: 7 } });
    const rejectView = await producer.waitFor('crm', reject.id, { timeoutMs: 20_000 });
    // createContact has one rule of its own, reject none: the service's catch-all is rule 0 for reject.
    const backupKey = `ferry-onfailure-${rejectView.deadLetterId}-0`;
    expect((await producer.waitFor('backup', idempotentJobId(backupKey), { timeoutMs: 20_000 })).state).toBe(
      'completed',
    );
    const backups = targets.requests.filter((r) => r.headers['idempotency-key'] === backupKey);
    expect(backups.map((r) => JSON.parse(r.body) as unknown)).toEqual([{ n: 7 }]);
    expect([await count('ops'), await count('backup')]).toEqual([1, 1]);

    const hits = findSecretForms('crm_token', secretForms(SECRET), {
      redis: await dumpRedis(redis.client, `${prefix}:*`),
      'follow-up requests': [...alerts, ...backups].map((r) => r.body).join('\n'),
    });
    expect(hits).toEqual([]);
  });

  it('a worker SIGKILLed between the dead letter and the follow-up still yields exactly one follow-up', async () => {
    const prefix = uniquePrefix();
    const { env, producer, queue, deadLetters, count } = await setup(prefix);
    // This worker's Redis user may write crm's queue and the dead letters but only read ops's queue: it
    // writes the dead letter, and its follow-up's add is refused (NOPERM) every time it tries.
    const limitedUrl = await restrictedRedisUser(redis, prefix, {
      writes: ['{crm}', '{dead-letter}'],
      reads: ['{ops}:*'],
    });
    // It works on crm only (ops's queue is not its to take jobs from).
    const first = spawnFerry(['worker', '--services', 'crm'], { env: env(limitedUrl) });
    await first.waitUntilStarted(30_000);
    const job = await producer.enqueue({ service: 'crm', operation: 'createContact', input: { n: 1 } });
    const deadLetterId = await until(
      async () => (await deadLetters.getJobs(['wait']))[0]?.id,
      20_000,
      () => 'the dead letter',
    );
    await first.waitForLog((entry) => JSON.stringify(entry).includes('NOPERM'), 20_000);
    expect(await count('ops')).toBe(0);
    expect(await queue('crm').getJobState(job.id)).not.toBe('failed');
    await first.kill9();

    await startWorker(env(redis.url));
    const key = `ferry-onfailure-${deadLetterId}-0`;
    const followUpId = idempotentJobId(key);
    expect((await producer.waitFor('ops', followUpId, { timeoutMs: 30_000 })).state).toBe('completed');
    await waitUntil(
      async () => (await queue('crm').getJobState(job.id)) === 'failed',
      20_000,
      'the source job failed',
    );
    expect((await deadLetters.getJob(deadLetterId))?.data.followUp).toEqual({
      service: 'ops',
      jobId: followUpId,
      rule: 0,
    });
    expect(await count('ops')).toBe(1);
    expect(await deadLetters.getJobCountByTypes('wait')).toBe(1);
    expect(targets.requests.filter((r) => r.headers['idempotency-key'] === key)).toHaveLength(1);
  });
});

describe('then end to end', () => {
  it('a chain of three steps carries a value from step 1 response into step 3 request', async () => {
    const { env, producer, queue, count } = await setup();
    await startWorker(env(redis.url));
    const job = await producer.enqueue({
      service: 'crm',
      operation: 'step1',
      input: { email: 'b@example.com' },
      idempotencyKey: `order-${uniquePrefix()}`,
    });
    expect((await producer.waitFor('crm', job.id, { timeoutMs: 20_000 })).state).toBe('completed');
    const next2 = decodeStoredResult((await queue('crm').getJob(job.id))!.returnvalue)!.next!;
    expect(next2.service).toBe('billing');
    expect((await producer.waitFor('billing', next2.jobId, { timeoutMs: 20_000 })).state).toBe('completed');
    const next3 = decodeStoredResult((await queue('billing').getJob(next2.jobId))!.returnvalue)!.next!;
    expect((await producer.waitFor('mail', next3.jobId, { timeoutMs: 20_000 })).state).toBe('completed');
    const step3 = await queue('mail').getJob(next3.jobId);
    expect(step3?.data.origin).toEqual({ kind: 'then', source: next2, depth: 2 });
    const received = targets.requests.filter(
      (r) => r.url === '/step3' && r.headers['idempotency-key'] === step3?.data.idempotencyKey,
    );
    expect(received.map((r) => JSON.parse(r.body) as unknown)).toEqual([{ carried: 'cus-42' }]);
    expect([await count('billing'), await count('mail')]).toEqual([1, 1]);
  });

  it('a response echoing the secret in any encoding reaches the next step scrubbed, its templates inert', async () => {
    const { env, producer, queue, prefix } = await setup();
    await startWorker(env(redis.url));
    const job = await producer.enqueue({ service: 'crm', operation: 'echo', input: { n: 1 } });
    expect((await producer.waitFor('crm', job.id, { timeoutMs: 20_000 })).state).toBe('completed');
    const next = decodeStoredResult((await queue('crm').getJob(job.id))!.returnvalue)!.next!;
    expect((await producer.waitFor('mail', next.jobId, { timeoutMs: 20_000 })).state).toBe('completed');
    const step = await queue('mail').getJob(next.jobId);
    // Inserted as data, never expanded: the downstream's template reaches the next call as text.
    expect((step?.data.input as { echoed: { tmpl: string } }).echoed.tmpl).toBe('{{ secrets.crm_token }}');
    const received = targets.requests.filter(
      (r) => r.url === '/step3' && r.headers['idempotency-key'] === step?.data.idempotencyKey,
    );
    expect(received).toHaveLength(1);
    expect(received[0]!.body).toContain('{{ secrets.crm_token }}');
    const hits = findSecretForms('crm_token', secretForms(SECRET), {
      redis: await dumpRedis(redis.client, `${prefix}:*`),
      'next step request': received[0]!.body,
    });
    expect(hits).toEqual([]);
  });
});
