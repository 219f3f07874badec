/**
 * Job events over Server-Sent Events (issue 3): a real redis-server, a real worker pool calling a real
 * downstream, the real HTTP server with only the job-event routes, read with a real EventSource client (and
 * with plain fetch where the raw stream matters: comments, status codes).
 */
import { Writable } from 'node:stream';

import { Queue } from 'bullmq';
import { EventSource } from 'eventsource';
import Fastify from 'fastify';
import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import { authenticate, canAccessService, canAccessTenant, TokenSet } from '../../../src/api/auth.ts';
import { ForbiddenError, handleError } from '../../../src/api/errors.ts';
import { createJobEventHub, type JobEventHub } from '../../../src/api/job-events/hub.ts';
import { type JobEventsAuthorizer, jobEventsRoutes } from '../../../src/api/job-events/routes.ts';
import { serializerCompiler, validatorCompiler } from '../../../src/api/schemas.ts';
import type { SseOptions } from '../../../src/api/sse.ts';
import { closeUnusedConnectionsOnClose } from '../../../src/api/unused-connections.ts';
import { compareStreamIds, type JobEventName } from '../../../src/core/job-events.ts';
import { createLogger } from '../../../src/core/logger.ts';
import { serviceQueueName } from '../../../src/core/queue-layout.ts';
import { registerCleanup } from '../../helpers/cleanup.ts';
import { type Script, startDownstream } from '../../helpers/downstream.ts';
import { createTestFerry, oneService, type TestFerry } from '../../helpers/ferry.ts';
import { startRedis, uniquePrefix } from '../../helpers/redis.ts';

const redis = await startRedis();

const EVENT_NAMES: readonly JobEventName[] = [
  'queued',
  'active',
  'retrying',
  'held',
  'completed',
  'dead_lettered',
];
const TOKENS = { all: 'all-token-0123456789abcdefgh', acme: 'acme-token-0123456789abcdefg' };

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- event data is asserted on, shape by shape
type Data = any;
interface Received {
  id: string;
  event: string;
  data: Data;
}

interface Harness {
  ferry: TestFerry;
  hub: JobEventHub;
  url: string;
  logs: string[];
  /** Closes the HTTP server (idempotent). */
  closeServer(): Promise<void>;
}

/** The real authorizer over a TokenSet, as the API wires it (service limit throws 403, tenant limit filters). */
function tokenAuthorizer(): JobEventsAuthorizer {
  const tokens = TokenSet.parse(
    [
      { name: 'all', token: TOKENS.all, scopes: ['jobs:read'] },
      { name: 'acme', token: TOKENS.acme, scopes: ['jobs:read'], tenants: ['acme'] },
    ],
    'test tokens',
  );
  return (request, { service }) => {
    const principal = authenticate(tokens, request.headers.authorization);
    if (!canAccessService(principal, service))
      throw new ForbiddenError(`token "${principal.name}" may not use service "${service}"`);
    return (tenant) => canAccessTenant(principal, tenant);
  };
}

/**
 * A downstream scripted by `script`, a worker pool on it (retry backoff 50 ms), the hub and the routes on
 * 127.0.0.1:0. Everything closes when the test finishes.
 */
async function start(
  script: Script,
  options: { authorize?: JobEventsAuthorizer; sse?: SseOptions; service?: Record<string, unknown> } = {},
): Promise<Harness> {
  const downstream = await startDownstream(script);
  const ferry = await createTestFerry(redis, {
    services: oneService(downstream.url, {
      retry: { attempts: 3, backoff: { delayMs: 50, maxDelayMs: 50 } },
      ...options.service,
    }),
  });
  const logs: string[] = [];
  const logger = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        logs.push(chunk.toString('utf8'));
        callback();
      },
    }),
  });
  const connection = new Redis(redis.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
  const hub = createJobEventHub({
    connection,
    eventsConnection: ferry.connection,
    prefix: ferry.prefix,
    logger,
  });
  const app = Fastify();
  // As the API does (src/api/app.ts): undici's fetch opens a spare connection after an aborted request (the
  // heartbeat test's), and Node 20's close would wait 30 s for it (seen under load: the cleanup timed out).
  closeUnusedConnectionsOnClose(app);
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(handleError);
  jobEventsRoutes(app, {
    hub,
    producer: ferry.producer,
    services: ferry.config.services,
    sse: { retryMs: 50, ...options.sse },
    ...(options.authorize === undefined ? {} : { authorize: options.authorize }),
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  let closing: Promise<void> | undefined;
  const closeServer = (): Promise<void> => (closing ??= app.close());
  registerCleanup(async () => {
    await closeServer();
    await hub.close();
    connection.disconnect();
  });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  return { ferry, hub, url: `http://127.0.0.1:${address.port}`, logs, closeServer };
}

/** A real EventSource on `url`, recording every job event; closed when the test finishes. */
function follow(url: string, init: { token?: string; lastEventId?: string } = {}) {
  const received: Received[] = [];
  let errors = 0;
  const headers: Record<string, string> = {};
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  if (init.lastEventId !== undefined) headers['last-event-id'] = init.lastEventId;
  const es = new EventSource(url, {
    // The eventsource package lets a custom fetch add headers: a bearer token, a first Last-Event-ID.
    fetch: (input, fetchInit) =>
      fetch(input, { ...fetchInit, headers: { ...headers, ...fetchInit.headers } }),
  });
  for (const name of EVENT_NAMES) {
    es.addEventListener(name, (message) =>
      received.push({ id: message.lastEventId, event: name, data: JSON.parse(message.data) }),
    );
  }
  es.addEventListener('error', () => errors++);
  onTestFinished(() => es.close());
  return {
    es,
    received,
    names: () => received.map((r) => r.event),
    get errors() {
      return errors;
    },
  };
}

interface RawStream {
  status: number;
  headers: Headers;
  text(): string;
  events(): Received[];
  comments(): string[];
  /** Resolves when the server ended the body (or the read was aborted). */
  ended: Promise<void>;
  abort(): void;
}

/** The stream read with plain fetch: status, headers, the raw text with its comments. */
async function readRaw(url: string, headers: Record<string, string> = {}): Promise<RawStream> {
  const controller = new AbortController();
  onTestFinished(() => controller.abort());
  const response = await fetch(url, { headers, signal: controller.signal });
  let text = '';
  const ended = (async () => {
    if (response.body === null) return;
    const decoder = new TextDecoder();
    try {
      for await (const chunk of response.body) text += decoder.decode(chunk, { stream: true });
    } catch {
      // aborted by the test
    }
  })();
  const blocks = (): string[][] =>
    text
      .split('\n\n')
      .filter((block) => block !== '')
      .map((block) => block.split('\n'));
  return {
    status: response.status,
    headers: response.headers,
    text: () => text,
    events: () =>
      blocks()
        .filter((lines) => lines.some((line) => line.startsWith('event: ')))
        .map((lines) => {
          const field = (name: string): string =>
            lines.find((line) => line.startsWith(`${name}: `))?.slice(name.length + 2) ?? '';
          return { id: field('id'), event: field('event'), data: JSON.parse(field('data')) as Data };
        }),
    comments: () =>
      blocks().flatMap((lines) => lines.filter((l) => l.startsWith(': ')).map((l) => l.slice(2))),
    ended,
    abort: () => controller.abort(),
  };
}

/** Answers 500 twice, then 200. */
const failTwiceThenSucceed: Script = (_request, index) =>
  index < 2 ? { status: 500, body: { error: 'busy' } } : { status: 201, body: { id: 'c-1' } };

async function enqueue(harness: Harness, extra: Record<string, unknown> = {}): Promise<string> {
  const job = await harness.ferry.producer.enqueue({
    service: 'svc',
    operation: 'create',
    input: {},
    ...extra,
  });
  return job.id;
}

function jobEventsUrl(harness: Harness, id: string): string {
  return `${harness.url}/v1/jobs/svc/${id}/events`;
}

function expectIncreasingIds(received: readonly Received[]): void {
  const ids = received.map((r) => r.id.replace(/:end$/, '').split('-').map(Number) as [number, number]);
  for (let i = 1; i < ids.length; i++) {
    const [ms, seq] = ids[i]!;
    const [prevMs, prevSeq] = ids[i - 1]!;
    expect(ms > prevMs || (ms === prevMs && seq > prevSeq)).toBe(true);
  }
}

describe('GET /v1/jobs/:service/:id/events', () => {
  it('a job that fails twice with 500 then succeeds: queued, active, retrying, active, retrying, active, completed', async () => {
    const harness = await start(failTwiceThenSucceed);
    const id = await enqueue(harness, { metadata: { order: 42 } });
    const stream = follow(jobEventsUrl(harness, id));
    // The server ends the stream after the terminal event; the client's reconnect gets 204 and stops for good.
    await expect.poll(() => stream.es.readyState, { timeout: 10_000 }).toBe(stream.es.CLOSED);

    expect(stream.names()).toEqual([
      'queued',
      'active',
      'retrying',
      'active',
      'retrying',
      'active',
      'completed',
    ]);
    expectIncreasingIds(stream.received);
    const [queued, , first, , second, , completed] = stream.received;
    expect(queued!.data).toEqual({
      jobId: id,
      service: 'svc',
      operation: 'create',
      metadata: { order: 42 },
    });
    for (const [retrying, attempt] of [
      [first!, 1],
      [second!, 2],
    ] as const) {
      expect(retrying.data).toMatchObject({
        jobId: id,
        service: 'svc',
        operation: 'create',
        attempt,
        error: { type: 'ServerError', status: 500 },
      });
      expect(retrying.data.delayMs).toBeGreaterThanOrEqual(0);
      expect(retrying.data.delayMs).toBeLessThanOrEqual(50);
      // The next attempt time is the decision's time plus the delay (one clock: this machine's). The stream
      // entry is written after the decision, later by however long a loaded machine takes (53 ms was seen),
      // so the entry's time bounds it tightly from above only.
      const at = Number(retrying.id.split('-')[0]);
      expect(retrying.data.nextAttemptAt).toBeGreaterThanOrEqual(at + retrying.data.delayMs - 5_000);
      expect(retrying.data.nextAttemptAt).toBeLessThanOrEqual(at + retrying.data.delayMs + 50);
    }
    expect(completed!.data).toMatchObject({
      jobId: id,
      result: { status: 201, body: { id: 'c-1' }, attempts: 3 },
    });
    expect(completed!.id).toMatch(/^\d+-\d+:end$/);
    // One connection that ended, one reconnect answered 204: two errors, no third connection.
    expect(stream.errors).toBe(2);
    expect(harness.hub.subscriberCount()).toBe(0);
  });

  it('a job the downstream refuses with 400: queued, active, dead_lettered with its error and dead letter', async () => {
    const harness = await start(() => ({ status: 400, body: { error: 'bad email' } }));
    const id = await enqueue(harness, { tenant: 'acme' });
    const stream = follow(jobEventsUrl(harness, id));
    await expect.poll(() => stream.es.readyState, { timeout: 10_000 }).toBe(stream.es.CLOSED);

    expect(stream.names()).toEqual(['queued', 'active', 'dead_lettered']);
    const view = await harness.ferry.producer.get('svc', id);
    expect(stream.received[2]!.data).toEqual({
      jobId: id,
      service: 'svc',
      operation: 'create',
      tenant: 'acme',
      error: view!.lastError,
      deadLetterId: view!.deadLetterId,
      attempts: 1,
      // The last run, as the job's history has it.
      run: view!.history.at(-1),
    });
    expect(view!.history).toEqual([expect.objectContaining({ attempt: 1, outcome: 'failed', status: 400 })]);
    expect(view!.lastError).toMatchObject({ type: 'ClientError', status: 400 });
    expect(view!.deadLetterId).toMatch(/^dl-svc\./);
  });

  it('a 429 with Retry-After: held (rateLimited, until), then active again and completed', async () => {
    let n = 0;
    const harness = await start(() =>
      ++n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200, body: {} },
    );
    const id = await enqueue(harness);
    const stream = follow(jobEventsUrl(harness, id));
    await expect.poll(() => stream.es.readyState, { timeout: 10_000 }).toBe(stream.es.CLOSED);

    expect(stream.names()).toEqual(['queued', 'active', 'held', 'active', 'completed']);
    const held = stream.received[2]!;
    expect(held.data).toMatchObject({
      jobId: id,
      reason: 'rateLimited',
      holdMs: 1_000,
      error: { type: 'RateLimitedError', status: 429 },
    });
    // `until` is the decision's time plus the hold; the entry is written after the decision, later by however
    // long a loaded machine takes (55 ms was seen), so the entry's time bounds it tightly from above only.
    const heldAt = Number(held.id.split('-')[0]);
    expect(held.data.until).toBeLessThanOrEqual(heldAt + 1_000 + 50);
    expect(held.data.until).toBeGreaterThanOrEqual(heldAt + 1_000 - 5_000);
    // Nobody took the job again before the hold was over.
    const nextActiveAt = Number(stream.received[3]!.id.split('-')[0]);
    expect(nextActiveAt).toBeGreaterThanOrEqual(held.data.until - 50);
    expect(stream.received[4]!.data.result.attempts).toBe(1);
  });

  it('a job that already finished gets its terminal event at once, from the job when the stream no longer holds it', async () => {
    const harness = await start(() => ({ status: 200, body: { ok: true } }));
    const id = await enqueue(harness);
    const view = await harness.ferry.producer.waitFor('svc', id, { timeoutMs: 10_000 });

    // The stream still holds its history: all of it, then the end.
    const whole = await readRaw(jobEventsUrl(harness, id));
    await whole.ended;
    expect(whole.events().map((e) => e.event)).toEqual(['queued', 'active', 'completed']);

    // BullMQ trimmed it away: the terminal event is built from the job.
    await redis.client.xtrim(`${harness.ferry.prefix}:{svc}:events`, 'MAXLEN', 0);
    const trimmed = await readRaw(jobEventsUrl(harness, id));
    await trimmed.ended;
    expect(trimmed.status).toBe(200);
    expect(trimmed.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(trimmed.headers.get('cache-control')).toBe('no-cache');
    expect(trimmed.headers.get('x-accel-buffering')).toBe('no');
    expect(trimmed.events()).toEqual([
      {
        id: expect.stringMatching(/:end$/) as string,
        event: 'completed',
        data: { jobId: id, service: 'svc', operation: 'create', result: view.result, run: view.history[0] },
      },
    ]);
    expect(view.history).toEqual([
      expect.objectContaining({ attempt: 1, outcome: 'completed', status: 200 }),
    ]);
    // The stream's own completed event carries the same run (dated from its entry's time, not finishedOn).
    expect(whole.events().at(-1)!.data.run).toMatchObject({ ...view.history[0], at: expect.any(Number) });
    expect(harness.hub.subscriberCount()).toBe(0);
  });

  it('Last-Event-ID resumes with exactly the events missed; the terminal id gets 204; a trimmed past is said', async () => {
    const harness = await start(failTwiceThenSucceed);
    const id = await enqueue(harness);
    await harness.ferry.producer.waitFor('svc', id, { timeoutMs: 10_000 });
    const all = await readRaw(jobEventsUrl(harness, id));
    await all.ended;
    const events = all.events();
    expect(events.map((e) => e.event)).toEqual([
      'queued',
      'active',
      'retrying',
      'active',
      'retrying',
      'active',
      'completed',
    ]);

    // A client that saw the first retry (and lost its connection) reconnects with its id.
    const resumed = follow(jobEventsUrl(harness, id), { lastEventId: events[2]!.id });
    await expect.poll(() => resumed.es.readyState, { timeout: 10_000 }).toBe(resumed.es.CLOSED);
    expect(resumed.received).toEqual(events.slice(3));

    const done = await readRaw(jobEventsUrl(harness, id), { 'last-event-id': events[6]!.id });
    expect(done.status).toBe(204);

    // The stream lost its oldest entries: resume from what it still holds, and say so.
    const key = `${harness.ferry.prefix}:{svc}:events`;
    await redis.client.xtrim(key, 'MINID', events[4]!.id);
    const gap = await readRaw(jobEventsUrl(harness, id), { 'last-event-id': events[1]!.id });
    await gap.ended;
    expect(gap.comments().some((c) => /no longer held; resuming from/.test(c))).toBe(true);
    expect(gap.events()).toEqual(events.slice(4));

    const bad = await readRaw(jobEventsUrl(harness, id), { 'last-event-id': 'yesterday' });
    await bad.ended;
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.text())).toEqual({
      error: {
        type: 'ValidationError',
        message: expect.stringMatching(/^Last-Event-ID/) as string,
        field: 'Last-Event-ID',
      },
    });
  });

  it('a client that lost its connection mid-job resumes where it stopped: nothing missed, nothing twice', async () => {
    const harness = await start(failTwiceThenSucceed);
    const id = await enqueue(harness, { delayMs: 200 });
    const first = follow(jobEventsUrl(harness, id));
    await expect.poll(() => first.received.length).toBeGreaterThan(0);
    first.es.close();
    const seen = [...first.received];
    await harness.ferry.producer.waitFor('svc', id, { timeoutMs: 10_000 });

    const resumed = follow(jobEventsUrl(harness, id), { lastEventId: seen[seen.length - 1]!.id });
    await expect.poll(() => resumed.es.readyState, { timeout: 10_000 }).toBe(resumed.es.CLOSED);
    const whole = await readRaw(jobEventsUrl(harness, id));
    await whole.ended;
    expect(seen.length).toBeLessThan(whole.events().length);
    expect([...seen, ...resumed.received]).toEqual(whole.events());
  });

  it('heartbeat comments keep a quiet stream alive; a client that goes away releases its subscription', async () => {
    const harness = await start(() => ({ status: 200, body: {} }), { sse: { heartbeatMs: 50 } });
    // Delayed for a minute: nothing happens to it while the test watches.
    const id = await enqueue(harness, { delayMs: 60_000 });
    const raw = await readRaw(jobEventsUrl(harness, id));
    await expect.poll(() => raw.comments().filter((c) => c === 'heartbeat').length).toBeGreaterThanOrEqual(2);
    expect(raw.events().map((e) => e.event)).toEqual(['queued']);
    expect(raw.text().startsWith('retry: 50\n\n')).toBe(true);
    expect(harness.hub.subscriberCount('svc')).toBe(1);

    raw.abort();
    await expect.poll(() => harness.hub.subscriberCount('svc')).toBe(0);
  });

  it("404 for an unknown job or service, naming it; a tenant-limited token cannot see another tenant's job", async () => {
    const harness = await start(() => ({ status: 200, body: {} }), { authorize: tokenAuthorizer() });
    const id = await enqueue(harness, { tenant: 'globex', delayMs: 60_000 });
    const auth = (token: string) => ({ authorization: `Bearer ${token}` });

    const unknownJob = await readRaw(jobEventsUrl(harness, 'nope'), auth(TOKENS.all));
    await unknownJob.ended;
    expect(unknownJob.status).toBe(404);
    expect(JSON.parse(unknownJob.text())).toEqual({
      error: { type: 'NotFoundError', message: 'job "nope" of service "svc" not found' },
    });
    const unknownService = await readRaw(`${harness.url}/v1/jobs/crm/${id}/events`, auth(TOKENS.all));
    await unknownService.ended;
    expect(unknownService.status).toBe(404);
    expect(JSON.parse(unknownService.text()).error.message).toMatch(/unknown service "crm"/);

    const otherTenant = await readRaw(jobEventsUrl(harness, id), auth(TOKENS.acme));
    await otherTenant.ended;
    expect(otherTenant.status).toBe(404);
    const noToken = await readRaw(jobEventsUrl(harness, id));
    await noToken.ended;
    expect(noToken.status).toBe(401);

    const allowed = await readRaw(jobEventsUrl(harness, id), auth(TOKENS.all));
    await expect.poll(() => allowed.events().map((e) => e.event)).toEqual(['queued']);
    expect(harness.hub.subscriberCount()).toBe(1);
  });
  it("a job id that comes back (an idempotency key used again after a cancel) replays only the new job's events, even from Last-Event-ID 0-0", async () => {
    const harness = await start(() => ({ status: 200, body: {} }), { authorize: tokenAuthorizer() });
    const key = { idempotencyKey: 'order-42', delayMs: 60_000 };
    const before = await enqueue(harness, { ...key, tenant: 'globex', metadata: { of: 'globex' } });
    const queue = new Queue(serviceQueueName('svc'), {
      connection: harness.ferry.connection,
      prefix: harness.ferry.prefix,
    });
    onTestFinished(() => queue.close());
    await queue.remove(before);
    const [[removedAt]] = (await harness.ferry.connection.xrevrange(
      `${harness.ferry.prefix}:${serviceQueueName('svc')}:events`,
      '+',
      '-',
      'COUNT',
      1,
    )) as [[string, string[]]];
    const id = await enqueue(harness, { ...key, tenant: 'acme', metadata: { of: 'acme' } });
    expect(id).toBe(before);
    const auth = { authorization: `Bearer ${TOKENS.acme}`, 'last-event-id': '0-0' };

    // globex's job under the same id (its queued, its removal) is not acme's job: neither is replayed.
    const job = await readRaw(jobEventsUrl(harness, id), auth);
    await expect.poll(() => job.events().map((e) => e.event)).toEqual(['queued']);
    expect(compareStreamIds(job.events()[0]!.id, removedAt)).toBeGreaterThan(0);
    expect(job.events()[0]!.data).toMatchObject({ tenant: 'acme', metadata: { of: 'acme' } });
    expect(job.comments()).not.toContain('the job was removed');
    const service = await readRaw(`${harness.url}/v1/events?service=svc`, auth);
    await expect.poll(() => harness.hub.subscriberCount()).toBe(2);
    await expect.poll(() => service.events().map((e) => e.event)).toEqual(['queued']);
    expect(service.events()[0]!.id).toBe(job.events()[0]!.id);
  });
});

describe('GET /v1/events?service=', () => {
  it("streams every job's events of the service, live", async () => {
    const harness = await start((request) =>
      request.body.includes('"refuse"') ? { status: 400, body: {} } : { status: 200, body: {} },
    );
    const stream = follow(`${harness.url}/v1/events?service=svc`);
    await expect.poll(() => stream.es.readyState).toBe(stream.es.OPEN);
    const ok = await enqueue(harness, { input: { ok: true } });
    const refused = await enqueue(harness, { input: { refuse: true } });
    await expect
      .poll(
        () => stream.received.filter((r) => r.event === 'completed' || r.event === 'dead_lettered').length,
        {
          timeout: 10_000,
        },
      )
      .toBe(2);

    const of = (id: string) => stream.received.filter((r) => r.data.jobId === id).map((r) => r.event);
    expect(of(ok)).toEqual(['queued', 'active', 'completed']);
    expect(of(refused)).toEqual(['queued', 'active', 'dead_lettered']);
    expectIncreasingIds(stream.received);
    // A service stream never ends on its own.
    expect(stream.es.readyState).toBe(stream.es.OPEN);
    expect(harness.hub.subscriberCount('svc')).toBe(1);
  });

  it("a tenant-limited token sees its tenants' jobs only; resume after an id replays what was missed", async () => {
    const harness = await start(() => ({ status: 200, body: {} }), { authorize: tokenAuthorizer() });
    const everything = follow(`${harness.url}/v1/events?service=svc`, { token: TOKENS.all });
    const acmeOnly = follow(`${harness.url}/v1/events?service=svc`, { token: TOKENS.acme });
    await expect.poll(() => [everything.es.readyState, acmeOnly.es.readyState]).toEqual([1, 1]);
    // Stream order: every event of globex's job is dispatched before acme's job even starts.
    const globex = await enqueue(harness, { tenant: 'globex' });
    const untenanted = await enqueue(harness);
    await harness.ferry.producer.waitFor('svc', globex);
    await harness.ferry.producer.waitFor('svc', untenanted);
    const acme = await enqueue(harness, { tenant: 'acme' });
    await expect.poll(() => acmeOnly.names(), { timeout: 10_000 }).toEqual(['queued', 'active', 'completed']);
    expect(new Set(acmeOnly.received.map((r) => r.data.jobId))).toEqual(new Set([acme]));
    expect(acmeOnly.received.every((r) => r.data.tenant === 'acme')).toBe(true);
    await expect.poll(() => everything.received.length).toBe(9);

    // Resume: after globex's `queued`, the acme token gets acme's events only, the full token all but that one.
    const after = everything.received[0]!.id;
    const resumedAll = await readRaw(`${harness.url}/v1/events?service=svc`, {
      authorization: `Bearer ${TOKENS.all}`,
      'last-event-id': after,
    });
    await expect.poll(() => resumedAll.events().length).toBe(8);
    expect(resumedAll.events()).toEqual(everything.received.slice(1));
    const resumedAcme = await readRaw(`${harness.url}/v1/events?service=svc`, {
      authorization: `Bearer ${TOKENS.acme}`,
      'last-event-id': after,
    });
    await expect.poll(() => resumedAcme.events().length).toBe(3);
    expect(resumedAcme.events()).toEqual(acmeOnly.received);
  });

  it('closing the server ends the open streams instead of waiting for their clients', async () => {
    const harness = await start(() => ({ status: 200, body: {} }));
    const id = await enqueue(harness, { delayMs: 60_000 });
    const service = await readRaw(`${harness.url}/v1/events?service=svc`);
    const job = await readRaw(jobEventsUrl(harness, id));
    await expect.poll(() => harness.hub.subscriberCount()).toBe(2);
    await harness.closeServer();
    await Promise.all([service.ended, job.ended]);
    expect(harness.hub.subscriberCount()).toBe(0);
  });

  it('400 without a service, 404 for an unknown one', async () => {
    const harness = await start(() => ({ status: 200, body: {} }));
    const missing = await readRaw(`${harness.url}/v1/events`);
    await missing.ended;
    expect(missing.status).toBe(400);
    expect(JSON.parse(missing.text()).error).toMatchObject({ type: 'ValidationError', field: 'service' });
    const unknown = await readRaw(`${harness.url}/v1/events?service=crm`);
    await unknown.ended;
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.text()).error).toMatchObject({ type: 'NotFoundError' });
  });
});

describe('job event hub', () => {
  it('closed while a subscribe is starting: the subscribe fails and no QueueEvents outlives the hub', async () => {
    const connection = new Redis(redis.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
    const eventsConnection = new Redis(redis.url, { maxRetriesPerRequest: null });
    onTestFinished(() => {
      connection.disconnect();
      eventsConnection.disconnect();
    });
    await eventsConnection.ping();
    const hub = createJobEventHub({
      connection,
      eventsConnection,
      prefix: uniquePrefix(),
      logger: createLogger({ level: 'silent' }),
    });
    const subscribing = hub.subscribe({ service: 'svc', onEvent: () => undefined });
    await hub.close();
    await expect(subscribing).rejects.toThrow(/closed/);
    // A QueueEvents names its blocking connection `<prefix>:<queue>:qe`.
    const clients = (await eventsConnection.client('LIST')) as string;
    expect(clients.split('\n').filter((line) => / name=\S+:qe /.test(line))).toEqual([]);
  });
});
