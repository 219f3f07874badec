/**
 * The ops routes (issue 5) over real HTTP: status, retry plan, breakers open and close, with a real worker pool
 * calling a real downstream, on a private redis-server.
 */
import { describe, expect, it } from 'vitest';

import { startTestApi, type TestApi, TOKENS } from '../helpers/api.ts';
import { type Downstream, startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, type TestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

interface Harness {
  ferry: TestFerry;
  api: TestApi;
  downstream: Downstream;
}

/** Services `svc` (retry 3 × 50 ms) and `other`; the downstream answers 422 until a test scripts it otherwise. */
async function setup(): Promise<Harness> {
  const downstream = await startDownstream(() => ({ status: 422, body: { error: 'invalid' } }));
  const ferry = await createTestFerry(redis, {
    services: {
      services: {
        svc: {
          baseUrl: downstream.url,
          timeoutMs: 2_000,
          retry: { attempts: 3, backoff: { delayMs: 50, maxDelayMs: 200 } },
          operations: { create: { method: 'POST', path: '/x', body: '{{ input }}' } },
        },
        other: { baseUrl: downstream.url, operations: { ping: { method: 'GET', path: '/ping' } } },
      },
    },
  });
  const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
  return { ferry, api, downstream };
}

async function deadLetter(ferry: TestFerry, count: number): Promise<void> {
  for (let n = 0; n < count; n++) {
    const { id } = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n } });
    expect((await ferry.producer.waitFor('svc', id, { timeoutMs: 10_000 })).state).toBe('dead_lettered');
  }
}

describe('GET /v1/status', () => {
  it("answers each service's counts, dead letters, breaker and workers; a service-limited token sees its own", async () => {
    const { ferry, api } = await setup();
    await deadLetter(ferry, 2);
    const status = await api.request('GET', '/v1/status', { token: TOKENS.reader });
    expect(status.status).toBe(200);
    expect(status.body.services.map((s: { service: string }) => s.service)).toEqual(['svc', 'other']);
    expect(status.body.services[0]).toMatchObject({
      service: 'svc',
      waiting: 0,
      active: 0,
      delayed: 0,
      held: null,
      deadLetters: 2,
      breaker: { state: 'closed' },
      rateLimit: null,
      paused: false,
    });
    expect(status.body.services[0].workers).toBeGreaterThanOrEqual(1);

    const limited = await api.request('GET', '/v1/status', { token: TOKENS.otherService });
    expect(limited.body.services.map((s: { service: string }) => s.service)).toEqual(['other']);
    expect((await api.request('GET', '/v1/status', { token: TOKENS.writer })).status).toBe(403);
  });
});

describe('GET /v1/services/:service/retry-plan', () => {
  it("answers the policy's timeline; 404 for an unknown service, 403 outside the token's services", async () => {
    const { api } = await setup();
    const plan = await api.request('GET', '/v1/services/svc/retry-plan', { token: TOKENS.reader });
    expect(plan.status).toBe(200);
    expect(plan.body).toMatchObject({ service: 'svc', attempts: 3, delayMs: 50, maxDelayMs: 200 });
    expect(plan.body.timeline).toEqual([
      {
        attempt: 1,
        startsAfter: { minMs: 0, maxMs: 0, expectedMs: 0 },
        delayAfter: expect.objectContaining({ capMs: 50 }),
      },
      {
        attempt: 2,
        startsAfter: { minMs: 0, maxMs: 50, expectedMs: 25 },
        delayAfter: expect.objectContaining({ capMs: 100 }),
      },
      { attempt: 3, startsAfter: { minMs: 0, maxMs: 150, expectedMs: 75 }, delayAfter: null },
    ]);
    expect(plan.body.untilDeadLetter).toEqual({ minMs: 0, maxMs: 150, expectedMs: 75 });
    expect(plan.body.callTimeMaxMs).toBe(6_000);

    const unknown = await api.request('GET', '/v1/services/nope/retry-plan', { token: TOKENS.reader });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.message).toContain('"nope"');
    expect(
      (await api.request('GET', '/v1/services/svc/retry-plan', { token: TOKENS.otherService })).status,
    ).toBe(403);
    const bad = await api.request('GET', '/v1/services/Bad!/retry-plan', { token: TOKENS.reader });
    expect(bad.status).toBe(400);
    expect(bad.body.error.field).toBe('service');
  });
});

describe('POST /v1/breakers/:service/open and /close', () => {
  it('open: GET /v1/breakers shows it open and the worker stops calling; close: closed, and the held job is called', async () => {
    const { ferry, api, downstream } = await setup();
    downstream.script(() => ({ status: 201, body: { ok: true } }));
    const opened = await api.request('POST', '/v1/breakers/svc/open', {
      token: TOKENS.admin,
      body: { forMs: 60_000, reason: 'partner maintenance' },
    });
    expect(opened.status).toBe(200);
    expect(opened.body).toMatchObject({
      service: 'svc',
      state: 'open',
      manual: true,
      reason: 'partner maintenance',
      exceedsMaxHold: false,
    });
    expect(opened.body.openUntil - opened.body.openedAt).toBe(60_000);
    const breakers = await api.request('GET', '/v1/breakers', { token: TOKENS.reader });
    expect(breakers.body.breakers.find((b: { service: string }) => b.service === 'svc').state).toBe('open');

    // Once the worker has seen the open (it reads the shared record every 500 ms), a job is held, not called.
    await expect
      .poll(
        () => ferry.logs.some((line) => line.includes('"to":"open"') && line.includes('"service":"svc"')),
        {
          timeout: 5_000,
        },
      )
      .toBe(true);
    const { id } = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 1 } });
    await expect
      .poll(
        async () =>
          (await api.request('GET', '/v1/status', { token: TOKENS.reader })).body.services[0].held?.reason,
        { timeout: 10_000 },
      )
      .toBe('breakerOpen');
    expect(downstream.requests).toHaveLength(0);
    expect((await ferry.producer.get('svc', id))?.state).not.toBe('completed');

    const closed = await api.request('POST', '/v1/breakers/svc/close', { token: TOKENS.admin });
    expect(closed.status).toBe(200);
    expect(closed.body).toMatchObject({ service: 'svc', state: 'closed' });
    expect((await ferry.producer.waitFor('svc', id, { timeoutMs: 10_000 })).state).toBe('completed');
    expect(downstream.requests).toHaveLength(1);
    const after = await api.request('GET', '/v1/breakers', { token: TOKENS.reader });
    expect(after.body.breakers.find((b: { service: string }) => b.service === 'svc').state).toBe('closed');
  });

  it('defaults forMs to retry.maxHoldMs and says when a window exceeds it', async () => {
    const { api } = await setup();
    const opened = await api.request('POST', '/v1/breakers/other/open', { token: TOKENS.admin });
    expect(opened.status).toBe(200);
    expect(opened.body.openUntil - opened.body.openedAt).toBe(opened.body.maxHoldMs);
    expect(opened.body.exceedsMaxHold).toBe(false);
    const long = await api.request('POST', '/v1/breakers/other/open', {
      token: TOKENS.admin,
      body: { forMs: opened.body.maxHoldMs + 1 },
    });
    expect(long.body.exceedsMaxHold).toBe(true);
    // Closing a closed breaker is fine: it answers its state.
    expect((await api.request('POST', '/v1/breakers/svc/close', { token: TOKENS.admin })).body.state).toBe(
      'closed',
    );
  });

  it.each([
    [{ forMs: 0 }, 'forMs'],
    [{ forMs: 1.5 }, 'forMs'],
    [{ reason: 'x'.repeat(201) }, 'reason'],
    [{ for: 1000 }, 'body'],
  ])('refuses %j with 400 naming %s', async (body, field) => {
    const { api } = await setup();
    const refused = await api.request('POST', '/v1/breakers/svc/open', { token: TOKENS.admin, body });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ type: 'ValidationError', field });
  });

  it('404 for an unknown service; 403 for a token limited to another service or to tenants', async () => {
    const { api } = await setup();
    for (const action of ['open', 'close']) {
      expect((await api.request('POST', `/v1/breakers/nope/${action}`, { token: TOKENS.admin })).status).toBe(
        404,
      );
      const other = await api.request('POST', `/v1/breakers/svc/${action}`, {
        token: TOKENS.otherServiceAdmin,
      });
      expect(other.status).toBe(403);
      const tenant = await api.request('POST', `/v1/breakers/svc/${action}`, { token: TOKENS.acmeAdmin });
      expect(tenant.status).toBe(403);
      expect(tenant.body.error.message).toContain('limited to tenants');
    }
    // Its own service is fine for a service-limited admin.
    expect(
      (await api.request('POST', '/v1/breakers/other/close', { token: TOKENS.otherServiceAdmin })).status,
    ).toBe(200);
  });
});
