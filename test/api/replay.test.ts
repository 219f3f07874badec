/**
 * `POST /v1/dead-letters/replay` and `/purge` (issue 5) over real HTTP: dead letters a real worker pool made
 * against a downstream answering 422, replayed by filter, by dry run, with progress read by a real EventSource,
 * interrupted by the client and run again (each replayed exactly once), within a token's scope; and purged.
 */
import { EventSource } from 'eventsource';
import { describe, expect, it, onTestFinished } from 'vitest';

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

interface Made {
  service: string;
  operation: string;
  tenant?: string;
  input: { n: number };
}

/**
 * `count` dead letters of svc.create (tenants acme, globex alternating, from n = 0) and one of other.ping (no
 * tenant, n = 1000), each a job a worker called once and dead-lettered on the downstream's 422. From then on
 * the downstream answers 201, so replayed jobs complete.
 */
async function setup(count = 4): Promise<Harness> {
  let isDown = true;
  const downstream = await startDownstream(() =>
    isDown ? { status: 422, body: { error: 'invalid' } } : { status: 201, body: { ok: true } },
  );
  const ferry = await createTestFerry(redis, {
    services: {
      services: {
        svc: {
          baseUrl: downstream.url,
          operations: { create: { method: 'POST', path: '/create', body: '{{ input }}' } },
        },
        other: {
          baseUrl: downstream.url,
          operations: { ping: { method: 'POST', path: '/ping', body: '{{ input }}' } },
        },
      },
    },
  });
  const made: Made[] = [];
  for (let n = 0; n < count; n++)
    made.push({ service: 'svc', operation: 'create', tenant: n % 2 === 0 ? 'acme' : 'globex', input: { n } });
  made.push({ service: 'other', operation: 'ping', input: { n: 1000 } });
  const jobs = await Promise.all(
    made.map((job) => ferry.producer.enqueue({ ...job, idempotencyKey: `k-${job.input.n}` })),
  );
  await Promise.all(
    jobs.map(async ({ id }, i) =>
      expect((await ferry.producer.waitFor(made[i]!.service, id, { timeoutMs: 15_000 })).state).toBe(
        'dead_lettered',
      ),
    ),
  );
  isDown = false;
  const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
  return { ferry, api, downstream };
}

async function deadLetterCount(api: TestApi): Promise<number> {
  const page = await api.request('GET', '/v1/dead-letters?limit=500', { token: TOKENS.admin });
  return page.body.items.length as number;
}

/** How many calls the downstream got for each input `n`. */
function callsByInput(downstream: Downstream): Map<number, number> {
  const calls = new Map<number, number>();
  for (const request of downstream.requests) {
    const n = (JSON.parse(request.body) as { n: number }).n;
    calls.set(n, (calls.get(n) ?? 0) + 1);
  }
  return calls;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- event data is asserted on, shape by shape
type Data = any;

/** A real EventSource POSTing `body` to the replay route, recording progress, done and failed events. */
function followReplay(api: TestApi, body: unknown, token: string = TOKENS.admin) {
  const events: { id: string; event: string; data: Data }[] = [];
  const es = new EventSource(`${api.url}/v1/dead-letters/replay`, {
    // The eventsource package lets a custom fetch choose the method, the body and the headers.
    fetch: (input, init) =>
      fetch(input, {
        ...init,
        method: 'POST',
        body: JSON.stringify(body),
        headers: { ...init.headers, authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      }),
  });
  for (const name of ['progress', 'done', 'failed'])
    es.addEventListener(name, (message) =>
      events.push({ id: message.lastEventId, event: name, data: JSON.parse(message.data) }),
    );
  onTestFinished(() => es.close());
  return { es, events, names: () => events.map((e) => e.event) };
}

describe('POST /v1/dead-letters/replay', () => {
  it('replays by a filter: back on the queue as rp-<id> with fresh attempts and the same key; the rest stay', async () => {
    const { ferry, api, downstream } = await setup();
    const acme = await api.request('GET', '/v1/dead-letters?tenant=acme', { token: TOKENS.admin });
    const acmeIds = (acme.body.items as { id: string }[]).map((d) => d.id).sort();
    expect(acmeIds).toHaveLength(2);

    const replay = await api.request('POST', '/v1/dead-letters/replay', {
      token: TOKENS.admin,
      body: { service: 'svc', tenant: 'acme', errorType: 'ClientError', status: 422, since: 0 },
    });
    expect(replay.status).toBe(200);
    expect(replay.body).toMatchObject({ dryRun: false, matched: 2, replayed: 2, skipped: 0, failed: 0 });
    expect(replay.body.interrupted).toBe(false);
    const items = replay.body.items as { id: string; outcome: string; jobId: string }[];
    expect(items.map((i) => i.id).sort()).toEqual(acmeIds);
    for (const item of items) expect(item).toMatchObject({ outcome: 'replayed', jobId: `rp-${item.id}` });

    for (const item of items) {
      const job = await ferry.producer.waitFor('svc', item.jobId, { timeoutMs: 10_000 });
      expect(job.state).toBe('completed');
      expect(job.attempts).toBe(1);
    }
    // The replayed calls carried the original idempotency keys.
    const keys = downstream.requests.slice(-2).map((r) => r.headers['idempotency-key']);
    expect(keys.sort()).toEqual(['k-0', 'k-2']);
    expect(await deadLetterCount(api)).toBe(3);
  });

  it('dry run: says which would go and changes nothing', async () => {
    const { api, downstream } = await setup();
    const before = downstream.requests.length;
    const dry = await api.request('POST', '/v1/dead-letters/replay', {
      token: TOKENS.admin,
      body: { dryRun: true, service: 'svc' },
    });
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ dryRun: true, matched: 4, replayed: 4, skipped: 0, failed: 0 });
    expect(new Set(dry.body.items.map((i: { outcome: string }) => i.outcome))).toEqual(
      new Set(['would-replay']),
    );
    expect(await deadLetterCount(api)).toBe(5);
    const queues = await api.request('GET', '/v1/queues', { token: TOKENS.admin });
    const svc = queues.body.queues.find((q: { service: string }) => q.service === 'svc');
    expect((svc.counts.waiting ?? 0) + (svc.counts.active ?? 0) + (svc.counts.completed ?? 0)).toBe(0);
    expect(downstream.requests.length).toBe(before);
  });

  it('streams progress to an EventSource and ends with done (the report); a reconnect after done is 204', async () => {
    const { api } = await setup(6);
    const stream = followReplay(api, { service: 'svc', ratePerSecond: 20 });
    await expect.poll(() => stream.names().at(-1), { timeout: 10_000 }).toBe('done');
    stream.es.close();
    const progress = stream.events.filter((e) => e.event === 'progress');
    expect(progress.length).toBeGreaterThanOrEqual(2);
    const last = progress.at(-1)!.data;
    expect(last).toMatchObject({
      done: 6,
      total: 6,
      matched: 6,
      replayed: 6,
      skipped: 0,
      failed: 0,
      etaMs: 0,
    });
    expect(last.rate).toBeGreaterThan(0);
    expect(last.rate).toBeLessThanOrEqual(25);
    for (let i = 1; i < progress.length; i++)
      expect(progress[i]!.data.done).toBeGreaterThan(progress[i - 1]!.data.done);
    expect(progress[0]!.id).toBe(String(progress[0]!.data.done));
    const done = stream.events.at(-1)!;
    expect(done.id).toBe('end');
    expect(done.data).toMatchObject({ dryRun: false, matched: 6, replayed: 6, interrupted: false });

    const reconnect = await fetch(`${api.url}/v1/dead-letters/replay`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${TOKENS.admin}`,
        accept: 'text/event-stream',
        'last-event-id': 'end',
        'content-type': 'application/json',
      },
      body: JSON.stringify({ service: 'svc' }),
    });
    expect(reconnect.status).toBe(204);
    expect(await deadLetterCount(api)).toBe(1);
  });

  it('a client that disconnects mid-replay stops it; a re-run replays the rest: each dead letter exactly once', async () => {
    const { api, downstream } = await setup(12);
    const stream = followReplay(api, { service: 'svc', ratePerSecond: 8 });
    await expect
      .poll(() => stream.events.find((e) => e.event === 'progress' && e.data.done >= 3), { timeout: 10_000 })
      .toBeDefined();
    stream.es.close();
    await expect
      .poll(() => api.logs.find((line) => line.includes('"msg":"replay finished"')), { timeout: 10_000 })
      .toBeDefined();
    const first = JSON.parse(api.logs.find((line) => line.includes('"msg":"replay finished"'))!);
    expect(first.interrupted).toBe(true);
    expect(first.replayed).toBeGreaterThanOrEqual(3);
    expect(first.replayed).toBeLessThan(12);
    expect(stream.names()).not.toContain('done');

    const rerun = await api.request('POST', '/v1/dead-letters/replay', {
      token: TOKENS.admin,
      body: { service: 'svc' },
    });
    expect(rerun.body).toMatchObject({ replayed: 12 - first.replayed, failed: 0, interrupted: false });
    expect(await deadLetterCount(api)).toBe(1);
    // Every replayed job is called once: the downstream saw each input twice (the 422, and the replay).
    await expect.poll(() => downstream.requests.length, { timeout: 15_000 }).toBe(12 + 1 + 12);
    const calls = callsByInput(downstream);
    for (let n = 0; n < 12; n++) expect(calls.get(n), `input ${n}`).toBe(2);
    expect(calls.get(1000)).toBe(1);
    // Once more: nothing is left to replay.
    const again = await api.request('POST', '/v1/dead-letters/replay', {
      token: TOKENS.admin,
      body: { service: 'svc' },
    });
    expect(again.body).toMatchObject({ matched: 0, replayed: 0 });
  });

  it('replays only within a limited token: another tenant is not walked, another service is 403', async () => {
    const { api } = await setup();
    const acme = await api.request('POST', '/v1/dead-letters/replay', { token: TOKENS.acmeAdmin, body: {} });
    expect(acme.status).toBe(200);
    expect(acme.body).toMatchObject({ matched: 2, replayed: 2 });
    // A globex dead letter named by id is outside the scope: skipped as not found, and still there.
    const globex = await api.request('GET', '/v1/dead-letters?tenant=globex', { token: TOKENS.admin });
    const globexId = globex.body.items[0].id as string;
    const byId = await api.request('POST', '/v1/dead-letters/replay', {
      token: TOKENS.acmeAdmin,
      body: { ids: [globexId] },
    });
    expect(byId.body).toMatchObject({ matched: 1, replayed: 0, skipped: 1 });
    expect(byId.body.items[0]).toMatchObject({ id: globexId, outcome: 'skipped', reason: 'not-found' });

    const other = await api.request('POST', '/v1/dead-letters/replay', {
      token: TOKENS.otherServiceAdmin,
      body: { service: 'svc' },
    });
    expect(other.status).toBe(403);
    const own = await api.request('POST', '/v1/dead-letters/replay', {
      token: TOKENS.otherServiceAdmin,
      body: { dryRun: true },
    });
    expect(own.body.items.map((i: { service: string }) => i.service)).toEqual(['other']);
    expect(await deadLetterCount(api)).toBe(3);
  });

  it('onlyWhenClosed skips the services whose breaker is open', async () => {
    const { api } = await setup();
    expect(
      (await api.request('POST', '/v1/breakers/svc/open', { token: TOKENS.admin, body: { forMs: 60_000 } }))
        .status,
    ).toBe(200);
    const replay = await api.request('POST', '/v1/dead-letters/replay', {
      token: TOKENS.admin,
      body: { onlyWhenClosed: true },
    });
    expect(replay.body).toMatchObject({ matched: 5, replayed: 1, skipped: 4 });
    const skipped = replay.body.items.filter((i: { outcome: string }) => i.outcome === 'skipped');
    expect(new Set(skipped.map((i: { reason: string }) => i.reason))).toEqual(new Set(['breaker-open']));
    expect(await deadLetterCount(api)).toBe(4);
  });

  it.each([
    [{ ratePerSecond: 0 }, 400, 'ratePerSecond'],
    [{ limit: 0 }, 400, 'limit'],
    [{ since: 'yesterday' }, 400, 'since'],
    [{ errorType: 'Oops' }, 400, 'errorType'],
    [{ ids: [] }, 400, 'ids'],
    [{ everything: true }, 400, 'body'],
    [{ service: 'nope' }, 422, 'service'],
  ])('refuses %j with %i naming %s', async (body, status, field) => {
    const { api } = await setup(0);
    const refused = await api.request('POST', '/v1/dead-letters/replay', { token: TOKENS.admin, body });
    expect(refused.status).toBe(status);
    expect(refused.body.error).toMatchObject({ type: 'ValidationError', field });
    expect(await deadLetterCount(api)).toBe(1);
  });
});

describe('POST /v1/dead-letters/purge', () => {
  it('dry run counts and deletes nothing; then deletes by filter; olderThanMs spares the recent ones', async () => {
    const { api } = await setup();
    const dry = await api.request('POST', '/v1/dead-letters/purge', {
      token: TOKENS.admin,
      body: { service: 'svc', dryRun: true },
    });
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ dryRun: true, matched: 4, deleted: 0, interrupted: false });
    expect(await deadLetterCount(api)).toBe(5);

    const old = await api.request('POST', '/v1/dead-letters/purge', {
      token: TOKENS.admin,
      body: { olderThanMs: 3_600_000 },
    });
    expect(old.body).toMatchObject({ matched: 0, deleted: 0 });

    const purged = await api.request('POST', '/v1/dead-letters/purge', {
      token: TOKENS.admin,
      body: { service: 'svc', tenant: 'globex' },
    });
    expect(purged.body).toMatchObject({ dryRun: false, matched: 2, deleted: 2 });
    expect(await deadLetterCount(api)).toBe(3);
  });

  it('within a limited token only; bad bodies are 400', async () => {
    const { api } = await setup();
    const acme = await api.request('POST', '/v1/dead-letters/purge', { token: TOKENS.acmeAdmin, body: {} });
    expect(acme.body).toMatchObject({ matched: 2, deleted: 2 });
    const other = await api.request('POST', '/v1/dead-letters/purge', {
      token: TOKENS.otherServiceAdmin,
      body: { service: 'svc' },
    });
    expect(other.status).toBe(403);
    const bad = await api.request('POST', '/v1/dead-letters/purge', {
      token: TOKENS.admin,
      body: { olderThanMs: -1 },
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error.field).toBe('olderThanMs');
    expect(await deadLetterCount(api)).toBe(3);
  });
});
