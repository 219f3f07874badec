/**
 * The jobs routes over real HTTP, on a real redis-server, with a real worker pool and downstream: enqueue,
 * idempotent repeat, batch (partial and atomic), read, cancel, and every validation error with its status
 * and field.
 */
import { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';

import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { startTestApi, type TestApi, TOKENS } from '../helpers/api.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, type TestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

async function setup(options: { start?: boolean; bodyLimitBytes?: number } = {}): Promise<{
  ferry: TestFerry;
  api: TestApi;
}> {
  const downstream = await startDownstream((request) =>
    request.url.startsWith('/reject')
      ? { status: 400, body: { error: 'no' } }
      : { status: 201, body: { ok: true } },
  );
  const ferry = await createTestFerry(redis, {
    start: options.start ?? true,
    services: {
      services: {
        svc: {
          baseUrl: downstream.url,
          retry: { attempts: 2, backoff: { delayMs: 20, maxDelayMs: 50 } },
          maxInputBytes: 1024,
          operations: {
            create: { method: 'POST', path: '/things', body: '{{ input }}' },
            reject: { method: 'POST', path: '/reject' },
          },
        },
        other: { baseUrl: downstream.url, operations: { ping: { method: 'GET', path: '/ping' } } },
      },
    },
  });
  const api = await startTestApi({
    redisUrl: redis.url,
    prefix: ferry.prefix,
    config: ferry.config,
    ...(options.bodyLimitBytes === undefined ? {} : { bodyLimitBytes: options.bodyLimitBytes }),
  });
  return { ferry, api };
}

const job = (overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
  service: 'svc',
  operation: 'create',
  input: { email: 'ada@example.com' },
  ...overrides,
});

describe('POST /v1/jobs', () => {
  it('answers 202 with the id, service and status URL, and the job completes', async () => {
    const { api } = await setup();
    const response = await api.request('POST', '/v1/jobs', { token: TOKENS.writer, body: job() });
    expect(response.status).toBe(202);
    const { id } = response.body as { id: string };
    expect(response.body).toEqual({
      id,
      service: 'svc',
      operation: 'create',
      status: 'queued',
      statusUrl: `/v1/jobs/svc/${id}`,
      eventsUrl: `/v1/jobs/svc/${id}/events`,
    });
    expect(response.headers.get('location')).toBe(`/v1/jobs/svc/${id}`);
    await expect
      .poll(
        async () => (await api.request('GET', `/v1/jobs/svc/${id}`, { token: TOKENS.reader })).body?.state,
      )
      .toBe('completed');
    const view = await api.request('GET', `/v1/jobs/svc/${id}`, { token: TOKENS.reader });
    expect(view.body).toMatchObject({
      id,
      service: 'svc',
      operation: 'create',
      state: 'completed',
      attempts: 1,
      result: { status: 201, body: { ok: true }, attempts: 1 },
    });
  });

  it('answers 200 with the existing job for an idempotent repeat, and adds nothing', async () => {
    const { api, ferry } = await setup({ start: false });
    const first = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: job({ idempotencyKey: 'order-42', input: { n: 1 } }),
    });
    expect(first.status).toBe(202);
    const repeat = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: job({ idempotencyKey: 'order-42', input: { n: 2 } }),
    });
    expect(repeat.status).toBe(200);
    expect(repeat.body).toMatchObject({
      id: first.body.id,
      status: 'existing',
      job: { id: first.body.id, state: 'waiting' },
    });
    const queue = new Queue(serviceQueueName('svc'), { connection: ferry.connection, prefix: ferry.prefix });
    expect(await queue.getJobCounts('waiting')).toEqual({ waiting: 1 });
    await queue.close();
  });

  it('refuses a repeat of another tenant’s idempotency key with 409, showing nothing of that job', async () => {
    const { api } = await setup({ start: false });
    expect(
      (
        await api.request('POST', '/v1/jobs', {
          token: TOKENS.writer,
          body: job({ idempotencyKey: 'k', tenant: 'globex' }),
        })
      ).status,
    ).toBe(202);
    const repeat = await api.request('POST', '/v1/jobs', {
      token: TOKENS.acme,
      body: job({ idempotencyKey: 'k', tenant: 'acme' }),
    });
    expect(repeat.status).toBe(409);
    expect(repeat.body.error.type).toBe('ConflictError');
    expect(repeat.text).not.toContain('globex');
  });

  it.each([
    ['a missing operation', 400, 'operation', { service: 'svc' }],
    ['an unknown field', 400, 'job', job({ colour: 'red' })],
    ['a bad tenant', 400, 'tenant', job({ tenant: '../x' })],
    ['a negative delay', 400, 'delayMs', job({ delayMs: -1 })],
    [
      'an idempotency key over 200 characters',
      400,
      'idempotencyKey',
      job({ idempotencyKey: 'k'.repeat(201) }),
    ],
    ['an unknown service', 422, 'service', job({ service: 'nope' })],
    ['an unknown operation', 422, 'operation', job({ operation: 'nope' })],
    ['an input over the service’s maxInputBytes', 413, 'input', job({ input: { blob: 'x'.repeat(2000) } })],
  ])('refuses %s with %i naming %s', async (_what, status, field, body) => {
    const { api } = await setup({ start: false });
    const response = await api.request('POST', '/v1/jobs', { token: TOKENS.writer, body });
    expect(response.status).toBe(status);
    expect(response.body.error).toMatchObject({ type: 'ValidationError', field });
    expect(response.body.error.message).toContain(field === 'job' ? 'colour' : field);
  });

  it('names the unknown service in the message', async () => {
    const { api } = await setup({ start: false });
    const response = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: job({ service: 'nope' }),
    });
    expect(response.body.error.message).toContain('"nope"');
  });

  it('refuses a body that is not JSON (415), malformed JSON (400) and one over the body limit (413)', async () => {
    const { api } = await setup({ start: false, bodyLimitBytes: 4096 });
    const text = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: 'service=svc',
      headers: { 'content-type': 'text/plain' },
    });
    expect(text.status).toBe(415);
    expect(text.body.error.type).toBe('UnsupportedMediaTypeError');
    const malformed = await api.request('POST', '/v1/jobs', { token: TOKENS.writer, body: '{"service":' });
    expect(malformed.status).toBe(400);
    expect(malformed.body.error).toMatchObject({ type: 'ValidationError', field: 'body' });
    const huge = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: job({ input: { blob: 'x'.repeat(10_000) } }),
    });
    expect(huge.status).toBe(413);
    expect(huge.body.error.type).toBe('PayloadTooLargeError');
  });
});

describe('POST /v1/jobs/batch', () => {
  it('adds the valid jobs and gives each refused one its error (partial failure)', async () => {
    const { api, ferry } = await setup({ start: false });
    const response = await api.request('POST', '/v1/jobs/batch', {
      token: TOKENS.writer,
      body: {
        jobs: [job(), job({ operation: 'nope' }), job({ idempotencyKey: 'b-1' }), { service: 'svc' }, job()],
      },
    });
    expect(response.status).toBe(200);
    expect(response.body.accepted).toBe(3);
    expect(response.body.rejected).toBe(2);
    const results = response.body.results as { index: number; status: number; error?: { field?: string } }[];
    expect(results.map((r) => [r.index, r.status])).toEqual([
      [0, 202],
      [1, 422],
      [2, 202],
      [3, 400],
      [4, 202],
    ]);
    expect(results[1]!.error).toMatchObject({ field: 'jobs[1].operation' });
    expect(results[3]!.error).toMatchObject({ field: 'jobs[3].operation' });
    const queue = new Queue(serviceQueueName('svc'), { connection: ferry.connection, prefix: ferry.prefix });
    expect(await queue.getJobCounts('waiting')).toEqual({ waiting: 3 });
    await queue.close();
  });

  it('with atomic: true adds none when one is refused (422 with per-item errors)', async () => {
    const { api, ferry } = await setup({ start: false });
    const response = await api.request('POST', '/v1/jobs/batch', {
      token: TOKENS.writer,
      body: { atomic: true, jobs: [job(), job({ service: 'nope' })] },
    });
    expect(response.status).toBe(422);
    expect(response.body.error).toMatchObject({ type: 'ValidationError', field: 'jobs[1].service' });
    expect(response.body.results).toEqual([expect.objectContaining({ index: 1, status: 422 })]);
    const queue = new Queue(serviceQueueName('svc'), { connection: ferry.connection, prefix: ferry.prefix });
    expect(await queue.getJobCounts('waiting')).toEqual({ waiting: 0 });
    await queue.close();
  });

  it('reports an idempotent repeat inside a batch as 200', async () => {
    const { api } = await setup({ start: false });
    await api.request('POST', '/v1/jobs', { token: TOKENS.writer, body: job({ idempotencyKey: 'same' }) });
    const response = await api.request('POST', '/v1/jobs/batch', {
      token: TOKENS.writer,
      body: { jobs: [job({ idempotencyKey: 'same' }), job()] },
    });
    expect(response.body.results.map((r: { status: number }) => r.status)).toEqual([200, 202]);
    const first = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: job({ idempotencyKey: 'same' }),
    });
    expect(response.body.results[0].id).toBe(first.body.id);
  });

  it('refuses an empty batch, one over 1000 jobs, and a body without jobs, naming the field', async () => {
    const { api } = await setup({ start: false });
    const empty = await api.request('POST', '/v1/jobs/batch', { token: TOKENS.writer, body: { jobs: [] } });
    expect(empty.status).toBe(400);
    expect(empty.body.error.field).toBe('jobs');
    const tooMany = await api.request('POST', '/v1/jobs/batch', {
      token: TOKENS.writer,
      body: { jobs: Array.from({ length: 1001 }, () => job()) },
    });
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error).toMatchObject({ type: 'ValidationError', field: 'jobs' });
    expect(tooMany.body.error.message).toContain('1000');
    const none = await api.request('POST', '/v1/jobs/batch', { token: TOKENS.writer, body: { job: [] } });
    expect(none.status).toBe(400);
    expect(none.body.error).toMatchObject({ type: 'ValidationError', field: 'body' });
    const notArray = await api.request('POST', '/v1/jobs/batch', {
      token: TOKENS.writer,
      body: { jobs: {} },
    });
    expect(notArray.body.error).toMatchObject({ type: 'ValidationError', field: 'jobs' });
    const atomic = await api.request('POST', '/v1/jobs/batch', {
      token: TOKENS.writer,
      body: { jobs: [job()], atomic: 'yes' },
    });
    expect(atomic.body.error).toMatchObject({ type: 'ValidationError', field: 'atomic' });
    const list = await api.request('POST', '/v1/jobs/batch', { token: TOKENS.writer, body: [job()] });
    expect(list.body.error).toMatchObject({ type: 'ValidationError', field: 'body' });
  });
});

describe('GET and DELETE /v1/jobs/:service/:id', () => {
  it('shows a dead-lettered job with its last error and dead-letter reference', async () => {
    const { api } = await setup();
    const { body } = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: job({ operation: 'reject' }),
    });
    await expect
      .poll(
        async () =>
          (await api.request('GET', `/v1/jobs/svc/${body.id}`, { token: TOKENS.reader })).body?.state,
      )
      .toBe('dead_lettered');
    const view = await api.request('GET', `/v1/jobs/svc/${body.id}`, { token: TOKENS.reader });
    expect(view.body).toMatchObject({
      state: 'dead_lettered',
      attempts: 1,
      lastError: { type: 'ClientError', status: 400 },
      deadLetterId: expect.stringMatching(/^dl-svc\./),
    });
  });

  it('answers 404 for an unknown job and for an unknown service, naming it', async () => {
    const { api } = await setup({ start: false });
    const missing = await api.request('GET', '/v1/jobs/svc/nope', { token: TOKENS.reader });
    expect(missing.status).toBe(404);
    expect(missing.body.error.type).toBe('NotFoundError');
    const service = await api.request('GET', '/v1/jobs/nope/1', { token: TOKENS.reader });
    expect(service.status).toBe(404);
    expect(service.body.error.message).toContain('"nope"');
    const badId = await api.request('GET', `/v1/jobs/svc/${'x'.repeat(400)}`, { token: TOKENS.reader });
    expect(badId.status).toBe(400);
    expect(badId.body.error.field).toBe('id');
  });

  it('cancels a delayed job (204) and refuses to cancel a completed one (409)', async () => {
    const { api, ferry } = await setup();
    const delayed = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: job({ delayMs: 60_000 }),
    });
    const cancel = await api.request('DELETE', `/v1/jobs/svc/${delayed.body.id}`, { token: TOKENS.writer });
    expect(cancel.status).toBe(204);
    // The audit line names who cancelled (a field named `token` would be censored by the redact paths).
    const audit = api.logs.find((line) => line.includes('job cancelled'));
    expect(JSON.parse(audit ?? '{}')).toMatchObject({ jobId: delayed.body.id, tokenName: 'writer' });
    expect(
      (await api.request('GET', `/v1/jobs/svc/${delayed.body.id}`, { token: TOKENS.reader })).status,
    ).toBe(404);
    const queue = new Queue(serviceQueueName('svc'), { connection: ferry.connection, prefix: ferry.prefix });
    expect(await queue.getJobCounts('delayed')).toEqual({ delayed: 0 });
    await queue.close();

    const done = await api.request('POST', '/v1/jobs', { token: TOKENS.writer, body: job() });
    await expect
      .poll(
        async () =>
          (await api.request('GET', `/v1/jobs/svc/${done.body.id}`, { token: TOKENS.reader })).body?.state,
      )
      .toBe('completed');
    const refused = await api.request('DELETE', `/v1/jobs/svc/${done.body.id}`, { token: TOKENS.writer });
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({ type: 'ConflictError' });
    expect(refused.body.error.message).toContain('completed');
  });
});
