/**
 * Sealed jobs moved by the worker (issue 17 item 5): a fallback move opens the envelope and seals it again for
 * the fallback's service and job id (a verbatim copy would not open there), and an onFailure follow-up of a
 * sealed job is rendered from the opened input and sealed for its own job.
 */
import { randomBytes } from 'node:crypto';

import { afterAll, describe, expect, it } from 'vitest';

import type { DeadLetterRecord } from '../../src/core/job.ts';
import { SEALED_PLACEHOLDER } from '../../src/core/job.ts';
import { createLogger } from '../../src/core/logger.ts';
import { maxSealedLength, openJobContent, sealJobData } from '../../src/core/sealed-data.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { parseKeyring } from '../../src/secrets/crypto.ts';
import { createFallbackRouter } from '../../src/worker/fallback-route.ts';
import { FollowUps } from '../../src/worker/follow-ups.ts';
import { TargetQueues } from '../../src/worker/target-queues.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const keyring = parseKeyring(`k1:${randomBytes(32).toString('base64')}`);
const LIMIT = maxSealedLength(256 * 1024);
const config = parseServicesConfig(
  {
    services: {
      primary: {
        baseUrl: 'http://127.0.0.1:1',
        sensitive: true,
        fallback: { service: 'backup' },
        operations: {
          send: {
            method: 'POST',
            path: '/send',
            onFailure: [
              { enqueue: { service: 'backup', operation: 'alert', input: { who: '{{ input.email }}' } } },
            ],
          },
        },
      },
      backup: {
        baseUrl: 'http://127.0.0.1:2',
        sensitive: true,
        operations: { send: { method: 'POST', path: '/send' }, alert: { method: 'POST', path: '/alert' } },
      },
    },
  },
  { env: {} },
);
const primary = config.services.get('primary')!;
const prefix = uniquePrefix();
const queues = new TargetQueues({ connection: redis.client, prefix });
afterAll(() => queues.close());
const input = { email: `ada-${randomBytes(4).toString('hex')}@example.com` };
const sealed = sealJobData(
  keyring,
  { service: 'primary', tenant: 'acme', jobId: 'j1' },
  {
    input,
    metadata: { ref: 'm' },
    tenant: 'acme',
    enqueueId: '00000000-0000-4000-8000-000000000001',
  },
);

async function storedData(service: string, jobId: string): Promise<Record<string, unknown>> {
  return JSON.parse((await redis.client.hget(`${prefix}:{${service}}:${jobId}`, 'data'))!) as Record<
    string,
    unknown
  >;
}

describe('sealed jobs moved by the worker', () => {
  it('a fallback move seals the job again for the fallback service and its job id there', async () => {
    const router = createFallbackRouter({ config, queues, breakerOf: () => undefined, keyring });
    const job = { id: 'j1', name: 'send', data: sealed, createdAt: 1_700_000_000_000, priority: 0 };
    const routedTo = router.plan(primary, 'backup', job);
    await router.move(primary, job, routedTo);
    const data = await storedData('backup', routedTo.jobId);
    expect(data).toMatchObject({ input: SEALED_PLACEHOLDER, tenant: 'acme' });
    expect(data).not.toHaveProperty('metadata');
    expect(data.sealed).not.toBe(sealed.sealed);
    expect(JSON.stringify(data)).not.toContain(input.email);
    expect(openJobContent(keyring, { service: 'backup', tenant: 'acme' }, data.sealed, LIMIT)).toEqual({
      input,
      metadata: { ref: 'm' },
    });
    // The source's envelope itself would not have opened there.
    expect(() =>
      openJobContent(keyring, { service: 'backup', tenant: 'acme' }, sealed.sealed, LIMIT),
    ).toThrow(/does not open for service "backup"/);
  });

  it('an onFailure follow-up renders the opened input and is sealed for its own job', async () => {
    const followUps = new FollowUps({ config, queues, logger: createLogger({ level: 'silent' }), keyring });
    const record: DeadLetterRecord = {
      service: 'primary',
      operation: 'send',
      input: SEALED_PLACEHOLDER,
      tenant: 'acme',
      sourceJobId: 'j1',
      sourceQueue: '{primary}',
      attempts: [],
      finalError: { type: 'ServerError', message: 'down', status: 503 },
      deadLetteredAt: 1,
      enqueuedAt: 1,
      sealed: sealed.sealed,
    };
    const plan = followUps.planFailure(primary, record, 'dl-primary.j1.1', sealed);
    expect(plan?.kind).toBe('add');
    if (plan?.kind !== 'add') return;
    await followUps.add(plan.job);
    const data = await storedData('backup', plan.job.jobId);
    expect(data).toMatchObject({ input: SEALED_PLACEHOLDER, tenant: 'acme' });
    expect(JSON.stringify(data)).not.toContain(input.email);
    expect(openJobContent(keyring, { service: 'backup', tenant: 'acme' }, data.sealed, LIMIT)).toEqual({
      input: { who: input.email },
    });
  });
});
