/**
 * The read side of issue 16 over real HTTP on a real redis-server: GET /v1/jobs/:service/:id and the job's
 * Server-Sent Events show a completed job's `next` and `routedTo` and a job's `origin`; POST /v1/jobs and the
 * batch refuse a producer-set `origin`; the dead-letter routes show a dead letter's `followUp` and `origin`.
 * The jobs are written and completed with BullMQ directly (test/helpers/raw-jobs.ts), as the worker's
 * reactions would write them, and a malformed link is left out.
 */
import { describe, expect, it } from 'vitest';

import type { JobOrigin } from '../../src/core/job.ts';
import { DeadLetterWriter } from '../../src/dead-letter/writer.ts';
import { aRecord } from '../dead-letter/support.ts';
import { startTestApi, type TestApi, TOKENS } from '../helpers/api.ts';
import { createTestFerry, type TestFerry } from '../helpers/ferry.ts';
import { type RawJobs, rawJobs } from '../helpers/raw-jobs.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

/** Two services, no worker running: the test finishes the jobs itself. */
async function setup(): Promise<{ ferry: TestFerry; api: TestApi; raw: RawJobs }> {
  const ferry = await createTestFerry(redis, {
    start: false,
    services: {
      services: {
        crm: { baseUrl: 'http://127.0.0.1:9', operations: { create: { method: 'POST', path: '/c' } } },
        billing: { baseUrl: 'http://127.0.0.1:9', operations: { create: { method: 'POST', path: '/b' } } },
      },
    },
  });
  const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
  return { ferry, api, raw: rawJobs(redis.url, ferry.prefix) };
}

/** A completed crm job linking to billing/next-1 (then) and a billing job made by that link (origin). */
async function linkedJobs(raw: RawJobs): Promise<{ sourceId: string; nextId: string; origin: JobOrigin }> {
  const sourceId = await raw.add('crm', 'create', { input: { n: 1 } });
  const origin: JobOrigin = { kind: 'then', source: { service: 'crm', jobId: sourceId }, depth: 1 };
  const nextId = await raw.add('billing', 'create', { input: { n: 2 }, origin }, 'next-1');
  await raw.complete(await raw.take('crm'), { next: { service: 'billing', jobId: nextId } });
  return { sourceId, nextId, origin };
}

/** The events of a job's SSE stream, read to its end (it ends after the terminal event). */
async function sseEvents(api: TestApi, path: string): Promise<{ event: string; data: unknown }[]> {
  const response = await fetch(`${api.url}${path}`, {
    headers: { authorization: `Bearer ${TOKENS.reader}`, accept: 'text/event-stream' },
  });
  expect(response.status).toBe(200);
  const events: { event: string; data: unknown }[] = [];
  for (const block of (await response.text()).split('\n\n')) {
    const event = /^event: (.*)$/m.exec(block)?.[1];
    const data = /^data: (.*)$/m.exec(block)?.[1];
    if (event !== undefined && data !== undefined) events.push({ event, data: JSON.parse(data) as unknown });
  }
  return events;
}

describe('GET /v1/jobs/:service/:id', () => {
  it('shows a completed job’s next step and a follow-up’s origin in their own fields', async () => {
    const { api, raw } = await setup();
    const { sourceId, nextId, origin } = await linkedJobs(raw);

    const source = await api.request('GET', `/v1/jobs/crm/${sourceId}`, { token: TOKENS.reader });
    expect(source.status).toBe(200);
    expect(source.body).toMatchObject({ state: 'completed', next: { service: 'billing', jobId: nextId } });
    expect(source.body.result.next).toEqual({ service: 'billing', jobId: nextId });
    expect(source.body).not.toHaveProperty('origin');
    expect(source.body).not.toHaveProperty('routedTo');

    const next = await api.request('GET', `/v1/jobs/billing/${nextId}`, { token: TOKENS.reader });
    expect(next.body).toMatchObject({ state: 'waiting', origin });
    expect(next.body).not.toHaveProperty('next');
  });

  it('shows a route to the fallback service as routedTo', async () => {
    const { api, raw } = await setup();
    const id = await raw.add('crm', 'create', { input: {}, idempotencyKey: 'k-1' });
    await raw.add(
      'billing',
      'create',
      {
        input: {},
        idempotencyKey: 'k-1',
        origin: { kind: 'fallback', source: { service: 'crm', jobId: id }, depth: 0 },
      },
      'idem-k-1',
    );
    await raw.complete(await raw.take('crm'), { routedTo: { service: 'billing', jobId: 'idem-k-1' } });
    const view = await api.request('GET', `/v1/jobs/crm/${id}`, { token: TOKENS.reader });
    expect(view.body).toMatchObject({
      state: 'completed',
      routedTo: { service: 'billing', jobId: 'idem-k-1' },
    });
    const routed = await api.request('GET', `/v1/jobs/billing/idem-k-1`, { token: TOKENS.reader });
    expect(routed.body.origin).toEqual({ kind: 'fallback', source: { service: 'crm', jobId: id }, depth: 0 });
  });

  it('leaves out links and origins that are not well-formed (job data is anyone’s to write)', async () => {
    const { api, raw } = await setup();
    const id = await raw.add('crm', 'create', {
      input: {},
      // A raw producer's made-up origin: the worker refuses such data, the reader does not show it.
      origin: { kind: 'nonsense', depth: -1 } as unknown as JobOrigin,
    });
    await raw.complete(await raw.take('crm'), {
      next: { service: 'Not A Service', jobId: 'x' },
      routedTo: { service: 'billing', jobId: 'meta' },
    });
    const view = await api.request('GET', `/v1/jobs/crm/${id}`, { token: TOKENS.reader });
    expect(view.body.state).toBe('completed');
    expect(view.body).not.toHaveProperty('next');
    expect(view.body).not.toHaveProperty('routedTo');
    expect(view.body).not.toHaveProperty('origin');
  });
});

describe('Bull Board', () => {
  it('shows a job’s origin (job data) and a completed job’s next (return value) as they are', async () => {
    const { api, raw } = await setup();
    const { sourceId, nextId, origin } = await linkedJobs(raw);
    const get = async (queue: string, id: string): Promise<Record<string, unknown>> => {
      const response = await api.request(
        'GET',
        `/admin/queues/api/queues/${encodeURIComponent(queue)}/${id}`,
        {
          token: TOKENS.admin,
        },
      );
      expect(response.status).toBe(200);
      return response.body.job as Record<string, unknown>;
    };
    // Ferry's own fields show under `ferryDelivery` (docs/operations.md § Bull Board).
    expect((await get('{billing}', nextId)).data).toMatchObject({ ferryDelivery: { origin } });
    expect((await get('{crm}', sourceId)).returnValue).toMatchObject({
      next: { service: 'billing', jobId: nextId },
    });
  });
});

describe('job events (SSE)', () => {
  it('the completed event carries next, from the stream and, once the stream lost it, from the job', async () => {
    const { api, ferry, raw } = await setup();
    const { sourceId, nextId } = await linkedJobs(raw);
    const live = await sseEvents(api, `/v1/jobs/crm/${sourceId}/events`);
    const completed = live.find((e) => e.event === 'completed');
    expect(completed?.data).toMatchObject({
      jobId: sourceId,
      next: { service: 'billing', jobId: nextId },
      result: { next: { service: 'billing', jobId: nextId } },
    });

    // BullMQ trims the events stream: the terminal event is then built from the job itself.
    await redis.client.del(`${ferry.prefix}:{crm}:events`);
    const rebuilt = await sseEvents(api, `/v1/jobs/crm/${sourceId}/events`);
    expect(rebuilt.map((e) => e.event)).toEqual(['completed']);
    expect(rebuilt[0]!.data).toMatchObject({ next: { service: 'billing', jobId: nextId } });
  });
});

describe('origin is Ferry’s', () => {
  const origin = { kind: 'then', source: { service: 'crm', jobId: '1' }, depth: 0 };

  it('POST /v1/jobs refuses a producer-set origin with 400 naming the field', async () => {
    const { api } = await setup();
    const response = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: { service: 'billing', operation: 'create', input: {}, origin },
    });
    expect(response.status).toBe(400);
    expect(response.body.error).toMatchObject({ type: 'ValidationError', field: 'origin' });
    expect(response.body.error.message).toMatch(/^origin: set by Ferry only/);
  });

  it('the batch refuses the job that sets it, by index, and adds the others', async () => {
    const { api, ferry } = await setup();
    const response = await api.request('POST', '/v1/jobs/batch', {
      token: TOKENS.writer,
      body: {
        jobs: [
          { service: 'billing', operation: 'create', input: { n: 1 } },
          { service: 'billing', operation: 'create', input: { n: 2 }, origin },
        ],
      },
    });
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ accepted: 1, rejected: 1 });
    expect(response.body.results[1]).toMatchObject({
      index: 1,
      status: 400,
      error: { type: 'ValidationError', field: 'jobs[1].origin' },
    });
    const added = await ferry.producer.get('billing', response.body.results[0].id as string);
    expect(added).toBeDefined();
    expect(added?.origin).toBeUndefined();
  });
});

describe('dead letters', () => {
  it('show and list name the onFailure follow-up and the origin', async () => {
    const { api, ferry } = await setup();
    const writer = new DeadLetterWriter({ connection: redis.client, prefix: ferry.prefix });
    const origin: JobOrigin = { kind: 'then', source: { service: 'crm', jobId: 'c-1' }, depth: 2 };
    const followUp = { service: 'crm', jobId: 'idem-ferry-onfailure-x-0', rule: 0 };
    const { id } = await writer.write(
      aRecord({ service: 'billing', sourceQueue: '{billing}', origin, followUp }),
    );
    const plain = (await writer.write(aRecord({ service: 'billing', sourceQueue: '{billing}' }))).id;
    const refused = (
      await writer.write(
        aRecord({
          service: 'billing',
          sourceQueue: '{billing}',
          followUpError: 'chain depth limit 16 reached',
        }),
      )
    ).id;
    await writer.close();

    const shown = await api.request('GET', `/v1/dead-letters/${id}`, { token: TOKENS.reader });
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({ id, origin, followUp });
    const refusedShown = await api.request('GET', `/v1/dead-letters/${refused}`, { token: TOKENS.reader });
    expect(refusedShown.body).toMatchObject({ followUpError: 'chain depth limit 16 reached' });

    const list = await api.request('GET', '/v1/dead-letters?service=billing', { token: TOKENS.reader });
    expect(list.status).toBe(200);
    const items = list.body.items as { id: string }[];
    expect(items.find((item) => item.id === id)).toMatchObject({ origin, followUp });
    const other = items.find((item) => item.id === plain);
    expect(other).toBeDefined();
    expect(other).not.toHaveProperty('followUp');
    expect(other).not.toHaveProperty('origin');
  });
});
