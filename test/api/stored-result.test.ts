/**
 * What Redis keeps of a completed job's result (issue 20, core/stored-result.ts), read raw: the job hash's
 * `returnvalue` and the events stream's `completed` entry hold the compact form, without field names and
 * without the metadata the job data already holds; the job API and its events still show the whole result,
 * metadata included. A real worker pool, downstream, API and redis-server.
 */
import { describe, expect, it } from 'vitest';

import { startTestApi, TOKENS } from '../helpers/api.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

/** A marker that would show wherever the metadata was copied. */
const metadata = { marker: 'metadata-marker-6f1c', order: 7 };

describe('the stored result', () => {
  it('is the compact form in the job hash and the completed entry; GET and SSE show it whole', async () => {
    const downstream = await startDownstream(() => ({
      status: 201,
      headers: { 'content-type': 'application/json', etag: '"v1"' },
      body: { ok: true },
    }));
    const ferry = await createTestFerry(redis, {
      services: {
        services: {
          svc: { baseUrl: downstream.url, operations: { create: { method: 'POST', path: '/things' } } },
        },
      },
    });
    const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
    const accepted = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: { service: 'svc', operation: 'create', input: { n: 1 }, metadata },
    });
    expect(accepted.status).toBe(202);
    const id = (accepted.body as { id: string }).id;
    await expect
      .poll(
        async () => (await api.request('GET', `/v1/jobs/svc/${id}`, { token: TOKENS.reader })).body?.state,
        { timeout: 15_000 },
      )
      .toBe('completed');

    // The job hash: [version, status, headers, body, durationMs, attempts], nothing else.
    const stored = await redis.client.hget(`${ferry.prefix}:{svc}:${id}`, 'returnvalue');
    expect(stored).not.toBeNull();
    const value = JSON.parse(stored!) as unknown[];
    expect(value).toEqual([
      2,
      201,
      { 'content-type': 'application/json', etag: '"v1"' },
      { ok: true },
      expect.any(Number),
      1,
    ]);
    expect(stored).not.toContain('metadata-marker');
    expect(stored).not.toContain('"status"');
    // The same text in the events stream's completed entry.
    const entries = await redis.client.xrange(`${ferry.prefix}:{svc}:events`, '-', '+');
    const completed = entries
      .map(([, fields]) => fields)
      .find((fields) => fields[1] === 'completed' && fields.includes(id));
    expect(completed).toBeDefined();
    const streamed = completed![completed!.indexOf('returnvalue') + 1];
    expect(streamed).toBe(stored);
    // The metadata is stored once, in the job data.
    expect(await redis.client.hget(`${ferry.prefix}:{svc}:${id}`, 'data')).toContain('metadata-marker');

    const result = {
      status: 201,
      headers: { 'content-type': 'application/json', etag: '"v1"' },
      body: { ok: true },
      durationMs: value[4],
      metadata,
      attempts: 1,
    };
    const view = await api.request('GET', `/v1/jobs/svc/${id}`, { token: TOKENS.reader });
    expect(view.body).toMatchObject({ state: 'completed', attempts: 1, metadata });
    expect(view.body.result).toEqual(result);
    const waited = await ferry.producer.waitFor('svc', id, { timeoutMs: 5_000 });
    expect(waited.result).toEqual(result);

    // SSE: the completed event, from the stream entry, carries the whole result too.
    const response = await fetch(`${api.url}/v1/jobs/svc/${id}/events`, {
      headers: { authorization: `Bearer ${TOKENS.reader}`, accept: 'text/event-stream' },
    });
    expect(response.status).toBe(200);
    const block = (await response.text()).split('\n\n').find((b) => b.includes('event: completed'));
    const data = JSON.parse(/^data: (.*)$/m.exec(block ?? '')?.[1] ?? 'null') as { result?: unknown };
    expect(data.result).toEqual(result);

    // Bull Board's Result tab: the fields, not the array; the completed run in the history, built from them.
    const board = await api.request('GET', `/admin/queues/api/queues/${encodeURIComponent('{svc}')}/${id}`, {
      token: TOKENS.admin,
    });
    expect(board.status).toBe(200);
    const shown = board.body.job as {
      returnValue: unknown;
      data: { ferryDelivery?: { history?: unknown[] } };
    };
    expect(shown.returnValue).toEqual(result);
    expect(shown.data.ferryDelivery?.history).toEqual([
      expect.objectContaining({ attempt: 1, outcome: 'completed', status: 201 }),
    ]);
  });
});
