/**
 * The read side of issue 16 against the real runtime (branch reactions16, merged): a real worker pool calling
 * real local HTTP servers, the reactions read from the services file. A three-step `then` chain is followed by
 * Producer.waitFor's follow and by GET over the API, and a dead letter's onFailure follow-up is shown by the
 * dead-letter API with the follow-up's origin on its job.
 */
import { describe, expect, it } from 'vitest';

import { startTestApi, TOKENS } from '../helpers/api.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

const downstream = await startDownstream((request) => {
  if (request.url === '/auth') return { status: 401, body: { error: 'who are you' } };
  if (request.url === '/step1') return { status: 201, body: { id: 'c-77' } };
  return { status: 200, body: { got: JSON.parse(request.body || 'null') as unknown } };
});

const post = (path: string): Record<string, unknown> => ({ method: 'POST', path, body: '{{ input }}' });
const service = (operations: Record<string, unknown>): Record<string, unknown> => ({
  baseUrl: downstream.url,
  timeoutMs: 5_000,
  retry: { attempts: 1 },
  operations,
});

async function setup(): Promise<Awaited<ReturnType<typeof createTestFerry>>> {
  return createTestFerry(redis, {
    services: {
      services: {
        crm: service({
          step1: {
            ...post('/step1'),
            then: {
              enqueue: {
                service: 'billing',
                operation: 'step2',
                input: { contactId: '{{ result.body.id }}' },
              },
            },
          },
          auth: {
            ...post('/auth'),
            onFailure: [
              {
                when: { errorType: ['AuthenticationError'] },
                enqueue: { service: 'ops', operation: 'alert', input: { job: '{{ job.id }}' } },
              },
            ],
          },
        }),
        billing: service({
          step2: {
            ...post('/step2'),
            then: {
              enqueue: {
                service: 'ops',
                operation: 'alert',
                input: { from: '{{ result.body.got.contactId }}' },
              },
            },
          },
        }),
        ops: service({ alert: post('/alert') }),
      },
    },
  });
}

describe('following a real chain', () => {
  it('waitFor follow and GET go from step 1 to step 3; each later step names its origin', async () => {
    const ferry = await setup();
    const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
    const { id } = await ferry.producer.enqueue({
      service: 'crm',
      operation: 'step1',
      input: {},
      tenant: 'acme',
    });

    const last = await ferry.producer.waitFor('crm', id, { follow: true, timeoutMs: 30_000 });
    expect(last).toMatchObject({
      service: 'ops',
      operation: 'alert',
      state: 'completed',
      tenant: 'acme',
      result: { status: 200, body: { got: { from: 'c-77' } } },
      origin: { kind: 'then', source: { service: 'billing', jobId: last.chain[1]!.jobId }, depth: 2 },
    });
    expect(last.chain.map((ref) => ref.service)).toEqual(['crm', 'billing', 'ops']);
    expect(last.chain[0]).toEqual({ service: 'crm', jobId: id });

    // The same chain, link by link, over the API.
    const first = await api.request('GET', `/v1/jobs/crm/${id}`, { token: TOKENS.reader });
    expect(first.body.next).toEqual(last.chain[1]);
    const second = await api.request('GET', `/v1/jobs/billing/${last.chain[1]!.jobId}`, {
      token: TOKENS.reader,
    });
    expect(second.body).toMatchObject({
      origin: { kind: 'then', source: { service: 'crm', jobId: id }, depth: 1 },
      next: last.chain[2],
    });
  }, 60_000);

  it('a dead letter names its onFailure follow-up, whose job names the dead letter as its origin', async () => {
    const ferry = await setup();
    const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
    const { id } = await ferry.producer.enqueue({ service: 'crm', operation: 'auth', input: {} });
    const dead = await ferry.producer.waitFor('crm', id, { follow: true, timeoutMs: 30_000 });
    // A dead-lettered job ends the chain: its follow-up is a reaction, not a next step.
    expect(dead).toMatchObject({ state: 'dead_lettered', chain: [{ service: 'crm', jobId: id }] });

    const shown = await api.request('GET', `/v1/dead-letters/${dead.deadLetterId!}`, {
      token: TOKENS.reader,
    });
    expect(shown.status).toBe(200);
    expect(shown.body.followUp).toMatchObject({ service: 'ops', rule: 0 });
    const followUp = shown.body.followUp as { service: string; jobId: string };
    const job = await ferry.producer.waitFor(followUp.service, followUp.jobId, { timeoutMs: 30_000 });
    expect(job).toMatchObject({
      state: 'completed',
      origin: {
        kind: 'onFailure',
        source: { service: 'crm', jobId: id },
        deadLetterId: dead.deadLetterId,
        rule: 0,
      },
    });
  }, 60_000);
});
