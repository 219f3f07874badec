/**
 * Dead letters over real HTTP: jobs a real worker dead-lettered, listed with filters and cursor pages, shown,
 * deleted (and not written again by the sweep), and scoped to what a token may see.
 */
import { describe, expect, it } from 'vitest';

import { startTestApi, type TestApi, TOKENS } from '../helpers/api.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, type TestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

interface Listed {
  id: string;
  service: string;
  operation: string;
  tenant?: string;
  input?: unknown;
  finalError: { type: string; status?: number };
}

/** Six dead letters: svc.create 400 (acme ×2, globex ×2), svc.auth 401 (acme), other.ping 400 (no tenant). */
async function setup(): Promise<{ ferry: TestFerry; api: TestApi }> {
  const downstream = await startDownstream((request) =>
    request.url.startsWith('/auth') ? { status: 401, body: {} } : { status: 400, body: { error: 'bad' } },
  );
  const ferry = await createTestFerry(redis, {
    services: {
      services: {
        svc: {
          baseUrl: downstream.url,
          operations: {
            create: { method: 'POST', path: '/x', body: '{{ input }}' },
            auth: { method: 'POST', path: '/auth' },
          },
        },
        other: { baseUrl: downstream.url, operations: { ping: { method: 'GET', path: '/ping' } } },
      },
    },
  });
  const jobs = [
    { service: 'svc', operation: 'create', tenant: 'acme', input: { n: 1 } },
    { service: 'svc', operation: 'create', tenant: 'globex', input: { n: 2 } },
    { service: 'svc', operation: 'create', tenant: 'acme', input: { n: 3 } },
    { service: 'svc', operation: 'create', tenant: 'globex', input: { n: 4 } },
    { service: 'svc', operation: 'auth', tenant: 'acme', input: { n: 5 } },
    { service: 'other', operation: 'ping', input: { n: 6 } },
  ];
  for (const job of jobs) {
    const { id } = await ferry.producer.enqueue(job);
    await ferry.producer.waitFor(job.service, id, { timeoutMs: 10_000 });
  }
  const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
  return { ferry, api };
}

describe('dead letters', () => {
  it('lists newest first with filters, pages with the cursor, and leaves inputs out unless asked', async () => {
    const { api } = await setup();
    const all = await api.request('GET', '/v1/dead-letters', { token: TOKENS.reader });
    expect(all.status).toBe(200);
    const items = all.body.items as Listed[];
    expect(items.map((d) => `${d.service}.${d.operation}`)).toEqual([
      'other.ping',
      'svc.auth',
      'svc.create',
      'svc.create',
      'svc.create',
      'svc.create',
    ]);
    expect(all.body.nextCursor).toBeNull();
    expect(items[0]!.input).toBeUndefined();

    const filtered = await api.request(
      'GET',
      '/v1/dead-letters?service=svc&operation=create&tenant=acme&errorType=ClientError&status=400&includeInput=true',
      { token: TOKENS.reader },
    );
    expect((filtered.body.items as Listed[]).map((d) => d.input)).toEqual([{ n: 3 }, { n: 1 }]);
    const auth = await api.request('GET', '/v1/dead-letters?errorType=AuthenticationError', {
      token: TOKENS.reader,
    });
    expect((auth.body.items as Listed[]).map((d) => d.operation)).toEqual(['auth']);
    const future = await api.request(
      'GET',
      `/v1/dead-letters?since=${new Date(Date.now() + 60_000).toISOString()}`,
      {
        token: TOKENS.reader,
      },
    );
    expect(future.body.items).toEqual([]);

    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page = await api.request(
        'GET',
        `/v1/dead-letters?limit=2${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`,
        { token: TOKENS.reader },
      );
      expect(page.body.items.length).toBeLessThanOrEqual(2);
      seen.push(...(page.body.items as Listed[]).map((d) => d.id));
      cursor = page.body.nextCursor as string | null;
    } while (cursor !== null);
    expect(seen).toEqual(items.map((d) => d.id));
  });

  it.each([
    ['limit=0', 'limit'],
    ['limit=501', 'limit'],
    ['errorType=Oops', 'errorType'],
    ['since=yesterday', 'since'],
    ['colour=red', 'query'],
    ['cursor=not-a-cursor', 'cursor'],
  ])('refuses ?%s naming %s', async (query, field) => {
    const { api } = await setup();
    const response = await api.request('GET', `/v1/dead-letters?${query}`, { token: TOKENS.reader });
    expect(response.status).toBe(400);
    expect(response.body.error).toMatchObject({ type: 'ValidationError', field });
  });

  it('shows one with its attempts and final error, and deletes it for good (admin)', async () => {
    const { api, ferry } = await setup();
    const [first] = (await api.request('GET', '/v1/dead-letters?service=other', { token: TOKENS.reader }))
      .body.items as Listed[];
    const shown = await api.request('GET', `/v1/dead-letters/${first!.id}`, { token: TOKENS.reader });
    expect(shown.body).toMatchObject({
      id: first!.id,
      service: 'other',
      operation: 'ping',
      input: { n: 6 },
      attempts: [expect.objectContaining({ outcome: 'failed', status: 400, type: 'ClientError' })],
      finalError: { type: 'ClientError', status: 400 },
    });
    expect(
      (await api.request('DELETE', `/v1/dead-letters/${first!.id}`, { token: TOKENS.writer })).status,
    ).toBe(403);
    expect(
      (await api.request('DELETE', `/v1/dead-letters/${first!.id}`, { token: TOKENS.admin })).status,
    ).toBe(204);
    expect((await api.request('GET', `/v1/dead-letters/${first!.id}`, { token: TOKENS.reader })).status).toBe(
      404,
    );
    expect(
      (await api.request('DELETE', `/v1/dead-letters/${first!.id}`, { token: TOKENS.admin })).status,
    ).toBe(404);
    // The sweep does not write it again: the source job keeps its dead-letter mark.
    await ferry.pool.sweep();
    const after = await api.request('GET', '/v1/dead-letters?service=other', { token: TOKENS.reader });
    expect(after.body.items).toEqual([]);
  });

  it('shows a tenant-limited token only its tenant’s dead letters, and a service-limited one only its services', async () => {
    const { api } = await setup();
    const acme = await api.request('GET', '/v1/dead-letters', { token: TOKENS.acme });
    expect((acme.body.items as Listed[]).map((d) => d.tenant)).toEqual(['acme', 'acme', 'acme']);
    const all = (await api.request('GET', '/v1/dead-letters?tenant=globex', { token: TOKENS.reader })).body
      .items as Listed[];
    expect(all).toHaveLength(2);
    expect((await api.request('GET', `/v1/dead-letters/${all[0]!.id}`, { token: TOKENS.acme })).status).toBe(
      404,
    );
    const other = await api.request('GET', '/v1/dead-letters', { token: TOKENS.otherService });
    expect((other.body.items as Listed[]).map((d) => d.service)).toEqual(['other']);
    expect(
      (await api.request('GET', '/v1/dead-letters?service=svc', { token: TOKENS.otherService })).status,
    ).toBe(403);
    expect(
      (await api.request('GET', `/v1/dead-letters/${all[0]!.id}`, { token: TOKENS.otherService })).status,
    ).toBe(403);
    expect((await api.request('GET', '/v1/dead-letters?service=nope', { token: TOKENS.reader })).status).toBe(
      404,
    );
  });
});
