/**
 * Bull Board at /admin/queues over real HTTP: who gets in (Basic with the admin token as password, or
 * Bearer), what they may do (read; nothing else: every queue is read-only, and actions are refused server-side with
 * Redis unchanged), and that no secret value reaches any response the board's UI reads.
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';

import { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';

import { buildApp } from '../../src/api/app.ts';
import { TokenSet } from '../../src/api/auth.ts';
import {
  createAdminAuthorizer,
  DEFAULT_BULL_BOARD_PATH,
  registerBullBoard,
} from '../../src/api/bull-board.ts';
import { createApiContext } from '../../src/api/context.ts';
import { type JobData, SEALED_PLACEHOLDER } from '../../src/core/job.ts';
import { createLogger } from '../../src/core/logger.ts';
import { DEAD_LETTER_QUEUE } from '../../src/core/queue-layout.ts';
import { sealJobData } from '../../src/core/sealed-data.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import type { ServicesConfig } from '../../src/core/services/types.ts';
import { storedDeliveryStateSchema } from '../../src/core/stored-history.ts';
import { Producer } from '../../src/producer/index.ts';
import { parseKeyring } from '../../src/secrets/crypto.ts';
import { registerCleanup } from '../helpers/cleanup.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { rawJobs } from '../helpers/raw-jobs.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

const ADMIN_TOKEN = `adm_${randomBytes(18).toString('base64url')}`;
const READER_TOKEN = `rd_${randomBytes(18).toString('base64url')}`;
const TENANT_ADMIN_TOKEN = `tad_${randomBytes(18).toString('base64url')}`;
const SERVICE_ADMIN_TOKEN = `sad_${randomBytes(18).toString('base64url')}`;
const tokens = TokenSet.parse(
  [
    { name: 'ops', token: ADMIN_TOKEN, scopes: ['admin'] },
    { name: 'reader', token: READER_TOKEN, scopes: ['jobs:read', 'jobs:write'] },
    { name: 'acme-admin', token: TENANT_ADMIN_TOKEN, scopes: ['admin'], tenants: ['acme'] },
    { name: 'crm-admin', token: SERVICE_ADMIN_TOKEN, scopes: ['admin'], services: ['crm'] },
  ],
  'FERRY_API_TOKENS',
);

const BASE = '/admin/queues';
const basic = (password: string, user = 'admin'): string =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const enc = (queueName: string): string => encodeURIComponent(queueName);

interface Board {
  url: string;
  queues: Map<string, Queue>;
  /** The API's log lines. */
  logs: string[];
}

/** A services config with one trivial service per name (what the board lists). */
function servicesConfig(names: readonly string[]): ServicesConfig {
  const operations = { create: { method: 'POST', path: '/things', body: '{{ input }}' } };
  return parseServicesConfig({
    services: Object.fromEntries(names.map((name) => [name, { baseUrl: 'http://127.0.0.1:9', operations }])),
  });
}

/**
 * The real API (buildApp) with the board mounted as cli/ mounts it: over every service queue of `config` and
 * `{dead-letter}` on `prefix`, its path exempted from the API's bearer hook. Listens on 127.0.0.1:0; closed
 * when the test finishes.
 */
async function startBoard(prefix: string, config: ServicesConfig): Promise<Board> {
  const logs: string[] = [];
  const logger = createLogger({
    level: 'info',
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(line);
        callback();
      },
    }),
  });
  const connection = new Redis(redis.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
  const producer = new Producer({ connection, prefix, services: config.services });
  const ctx = createApiContext({ config, producer, connection, prefix });
  const deadLetters = new Queue(DEAD_LETTER_QUEUE, { connection, prefix });
  const queues = new Map<string, Queue>(
    [...[...config.services.keys()].map((service) => ctx.queue(service)), deadLetters].map((queue) => [
      queue.name,
      queue,
    ]),
  );
  const started: { app?: FastifyInstance } = {};
  registerCleanup(async () => {
    await started.app?.close(); // closes ctx's service queues
    await deadLetters.close();
    await producer.close();
    connection.disconnect();
  });
  const app = await buildApp({
    ctx,
    tokens,
    logger,
    plugins: [
      (api) =>
        registerBullBoard(api, { queues: [...queues.values()], authorize: createAdminAuthorizer(tokens) }),
    ],
    selfAuthenticatedPrefixes: [DEFAULT_BULL_BOARD_PATH],
  });
  started.app = app;
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { url, queues, logs };
}

/** One service, `crm`, whose `create` POSTs its input to `baseUrl`, retried as `retry` says. */
function crmCalling(
  baseUrl: string,
  retry: { attempts: number; backoff: { delayMs: number; maxDelayMs: number } },
): Record<string, unknown> {
  return {
    services: {
      crm: {
        baseUrl,
        timeoutMs: 2_000,
        retry,
        operations: { create: { method: 'POST', path: '/things', body: '{{ input }}' } },
      },
    },
  };
}

async function send(
  board: Board,
  path: string,
  init: { method?: string; authorization?: string; body?: unknown } = {},
): Promise<Response> {
  const headers: Record<string, string> = {};
  if (init.authorization !== undefined) headers.authorization = init.authorization;
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  return fetch(`${board.url}${path}`, {
    method: init.method ?? 'GET',
    headers,
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
}

async function getJson(board: Board, path: string): Promise<unknown> {
  const response = await send(board, path, { authorization: basic(ADMIN_TOKEN) });
  expect(response.status, path).toBe(200);
  return response.json();
}

describe('Bull Board auth', () => {
  it('guards the page, its static assets and its API; admin gets in with Basic or Bearer', async () => {
    const board = await startBoard(`t${randomBytes(4).toString('hex')}`, servicesConfig(['crm', 'billing']));
    const page = await send(board, BASE, { authorization: basic(ADMIN_TOKEN) });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    // The page's own script, whatever its fingerprint: the assets are served under the base path only.
    const script = /src="(static\/js\/main\.[^"]+\.js)"/.exec(html)?.[1];
    expect(script).toBeDefined();
    expect(html).toContain(`<base href="${BASE}/"`);

    const paths: readonly [string, string][] = [
      ['GET', BASE],
      ['GET', `${BASE}/`],
      ['GET', `${BASE}/queue/${enc('{crm}')}`],
      ['HEAD', BASE],
      ['GET', `${BASE}/${script!}`],
      ['GET', `${BASE}/static/favicon-32x32.png`],
      ['GET', `${BASE}/api/queues`],
      ['GET', `${BASE}/api/redis/stats`],
      ['GET', `${BASE}/api/queues/${enc('{crm}')}/workers`],
      ['PUT', `${BASE}/api/queues/${enc('{crm}')}/pause`],
      ['PUT', `${BASE}/api/queues/pause`],
    ];
    const refused: readonly [string, string | undefined, number][] = [
      ['no credentials', undefined, 401],
      ['a wrong token (Bearer)', 'Bearer not-a-token-at-all-1234567890', 401],
      ['a wrong token (Basic)', basic('not-a-token-at-all-1234567890'), 401],
      ['an empty Basic password', basic(''), 401],
      ['an unknown scheme', `Token ${ADMIN_TOKEN}`, 401],
      [
        'the admin token as Basic user name',
        `Basic ${Buffer.from(`${ADMIN_TOKEN}:`).toString('base64')}`,
        401,
      ],
      ['a token without admin (wrong scope)', basic(READER_TOKEN), 403],
      ['an admin token limited to a tenant (other tenant)', basic(TENANT_ADMIN_TOKEN), 403],
      ['an admin token limited to a service', `Bearer ${SERVICE_ADMIN_TOKEN}`, 403],
    ];
    for (const [method, path] of paths) {
      for (const [who, authorization, status] of refused) {
        const response = await send(board, path, {
          method,
          ...(authorization === undefined ? {} : { authorization }),
        });
        expect(response.status, `${method} ${path} with ${who}`).toBe(status);
        if (method === 'HEAD') continue;
        const body = (await response.json()) as { error: { type: string; message: string } };
        expect(body.error.type).toBe(status === 401 ? 'UnauthorizedError' : 'ForbiddenError');
        expect(body.error.message).toMatch(/admin/);
        // A browser prompts for credentials only on a Basic challenge; a 403 must not invite another try.
        expect(response.headers.get('www-authenticate')).toBe(
          status === 401 ? 'Basic realm="Ferry admin", charset="UTF-8"' : null,
        );
      }
    }
    // None of those requests paused anything.
    for (const queue of board.queues.values()) expect(await queue.isPaused()).toBe(false);

    for (const authorization of [basic(ADMIN_TOKEN), basic(ADMIN_TOKEN, ''), `Bearer ${ADMIN_TOKEN}`]) {
      for (const [, path] of paths.filter(([method]) => method === 'GET')) {
        const response = await send(board, path, { authorization });
        expect(response.status, `GET ${path} as admin`).toBe(200);
        await response.arrayBuffer();
      }
    }
    const api = await send(board, `${BASE}/api/queues`, { authorization: `Bearer ${ADMIN_TOKEN}` });
    expect(api.headers.get('cache-control')).toBe('no-store');
    await api.arrayBuffer();
  });

  it("leaves the rest of the API to the API's own auth", async () => {
    const board = await startBoard(`t${randomBytes(4).toString('hex')}`, servicesConfig(['crm']));
    const health = await send(board, '/healthz');
    expect(health.status).toBe(200);
    await health.arrayBuffer();
    // Not the board's challenge: the API's bearer hook answered, and the board's guard was not in the way.
    const services = await send(board, '/v1/services');
    expect(services.status).toBe(401);
    expect(services.headers.get('www-authenticate')).not.toContain('Ferry admin');
    await services.arrayBuffer();
    const asReader = await send(board, '/v1/services', { authorization: `Bearer ${READER_TOKEN}` });
    expect(asReader.status).toBe(200);
    await asReader.arrayBuffer();
    // Bull Board's static assets exist under the base path only.
    const outside = await send(board, '/static/favicon-32x32.png', {
      authorization: `Bearer ${ADMIN_TOKEN}`,
    });
    expect(outside.status).toBe(404);
    await outside.arrayBuffer();
  });
});

describe('Bull Board queues', () => {
  it('lists every service queue and dead-letter by display name, all read-only', async () => {
    const board = await startBoard(`t${randomBytes(4).toString('hex')}`, servicesConfig(['crm', 'billing']));
    const { queues } = (await getJson(board, `${BASE}/api/queues`)) as {
      queues: { name: string; displayName: string; readOnlyMode: boolean; allowRetries: boolean }[];
    };
    expect(
      queues
        .map(({ name, displayName, readOnlyMode, allowRetries }) => ({
          name,
          displayName,
          readOnlyMode,
          allowRetries,
        }))
        .sort((a, b) => a.name.localeCompare(b.name)),
    ).toEqual([
      { name: '{billing}', displayName: 'billing', readOnlyMode: true, allowRetries: false },
      { name: '{crm}', displayName: 'crm', readOnlyMode: true, allowRetries: false },
      { name: '{dead-letter}', displayName: 'dead-letter', readOnlyMode: true, allowRetries: false },
    ]);
  });
});

describe('Bull Board job data', () => {
  it("shows the producer's fields as they are and Ferry's under ferryDelivery; Redis keeps the data", async () => {
    const downstream = await startDownstream((_request, index) =>
      index < 2 ? { status: 500, body: { error: 'down' } } : { status: 200, body: { ok: true } },
    );
    const ferry = await createTestFerry(redis, {
      services: crmCalling(downstream.url, { attempts: 3, backoff: { delayMs: 20, maxDelayMs: 50 } }),
    });
    const retried = await ferry.producer.enqueue({
      service: 'crm',
      operation: 'create',
      input: { n: 1 },
      tenant: 'acme',
      idempotencyKey: 'order-1',
      metadata: { source: 'test' },
    });
    const view = await ferry.producer.waitFor('crm', retried.id, { timeoutMs: 15_000 });
    expect(view.state).toBe('completed');

    // The downstream now answers 200: this one completes on its first run.
    const once = await ferry.producer.enqueue({ service: 'crm', operation: 'create', input: { n: 2 } });
    expect((await ferry.producer.waitFor('crm', once.id, { timeoutMs: 15_000 })).state).toBe('completed');

    const board = await startBoard(ferry.prefix, ferry.config);
    const { job } = (await getJson(board, `${BASE}/api/queues/${enc('{crm}')}/${retried.id}`)) as {
      job: { data: Record<string, unknown> };
    };
    const stored = (await board.queues.get('{crm}')!.getJob(retried.id))!.data as JobData;
    // The history ends with the run that completed the job, as the job API lists it (built from the result).
    const apiHistory = (await ferry.producer.get('crm', retried.id))!.history;
    expect(apiHistory.at(-1)).toMatchObject({ attempt: 3, outcome: 'completed', status: 200 });
    expect(job.data).toEqual({
      input: { n: 1 },
      tenant: 'acme',
      idempotencyKey: 'order-1',
      metadata: { source: 'test' },
      ferryDelivery: {
        attemptsUsed: 3,
        history: apiHistory,
        heldMs: 0,
        stalls: 0,
        enqueueId: stored.enqueueId,
      },
    });
    // The stored history holds the two failed runs with their status, and not the completed one.
    // Stored compactly (core/stored-history.ts): decoded as every reader decodes it.
    const storedHistory = storedDeliveryStateSchema.parse(stored.ferry).attempts;
    expect(storedHistory.map(({ outcome, status }) => ({ outcome, status }))).toEqual([
      { outcome: 'failed', status: 500 },
      { outcome: 'failed', status: 500 },
    ]);
    expect(stored.enqueueId).toEqual(expect.any(String));

    // A first-try job: its one run, in the job's view and in the listing's.
    const onceHistory = (await ferry.producer.get('crm', once.id))!.history;
    expect(onceHistory).toEqual([expect.objectContaining({ attempt: 1, outcome: 'completed', status: 200 })]);
    const onceJob = (await getJson(board, `${BASE}/api/queues/${enc('{crm}')}/${once.id}`)) as {
      job: { data: { ferryDelivery: unknown } };
    };
    expect(onceJob.job.data.ferryDelivery).toMatchObject({ attemptsUsed: 1, history: onceHistory });
    const listing = (await getJson(
      board,
      `${BASE}/api/queues?${new URLSearchParams({ activeQueue: '{crm}', status: 'completed', page: '1', jobsPerPage: '50' })}`,
    )) as { queues: { name: string; jobs: { id: string; data: { ferryDelivery: unknown } }[] }[] };
    const listed = listing.queues.find(({ name }) => name === '{crm}')!.jobs;
    expect(Object.fromEntries(listed.map(({ id, data }) => [id, data.ferryDelivery]))).toEqual({
      [retried.id]: expect.objectContaining({ attemptsUsed: 3, history: apiHistory }),
      [once.id]: expect.objectContaining({ attemptsUsed: 1, history: onceHistory }),
    });
    expect(stored.enqueueId).toEqual(expect.any(String));
  });

  it("shows a sealed job as sealed, without the envelope's text, and odd raw data without error", async () => {
    const prefix = uniquePrefix();
    const raw = rawJobs(redis.url, prefix);
    const keyring = parseKeyring(`k1:${randomBytes(32).toString('base64')}`);
    const sealedData = sealJobData(keyring, { service: 'crm', tenant: 'acme', jobId: 'sealed-1' }, {
      input: { card: '4111' },
      tenant: 'acme',
      enqueueId: 'e-1',
    } as JobData);
    await raw.add('crm', 'create', sealedData, 'sealed-1');
    const odd: readonly (readonly [string, unknown])[] = [
      ['string-1', 'just a string'],
      ['array-1', [1, { ferry: 2 }]],
      ['ferry-5', { input: { n: 1 }, ferry: 5 }],
      ['ferry-bad', { input: null, ferry: { attempts: 'many' }, origin: 7 }],
      ['null-1', null],
    ];
    for (const [id, data] of odd) await raw.add('crm', 'create', data as JobData, id);

    const board = await startBoard(prefix, servicesConfig(['crm']));
    const crmQ = `${BASE}/api/queues/${enc('{crm}')}`;
    const shown = async (id: string): Promise<unknown> =>
      ((await getJson(board, `${crmQ}/${id}`)) as { job: { data: unknown } }).job.data;

    const sealedShown = await shown('sealed-1');
    expect(sealedShown).toEqual({
      input: SEALED_PLACEHOLDER,
      tenant: 'acme',
      ferryDelivery: { enqueueId: 'e-1', sealed: true },
    });
    expect(JSON.stringify(sealedShown)).not.toContain(sealedData.sealed);
    // Redis keeps the envelope: the worker opens it.
    expect((await board.queues.get('{crm}')!.getJob('sealed-1'))!.data).toEqual(sealedData);

    expect(await shown('string-1')).toBe('just a string');
    expect(await shown('array-1')).toEqual([1, { ferry: 2 }]);
    expect(await shown('ferry-5')).toEqual({ input: { n: 1 }, ferry: 5 });
    expect(await shown('ferry-bad')).toEqual({
      input: null,
      ferry: { attempts: 'many' },
      ferryDelivery: { origin: 7 },
    });
    expect(await shown('null-1')).toBeNull();
    // A sealed dead letter shows `sealed: true` too, the rest of its record as stored.
    const deadLetter = await board.queues
      .get(DEAD_LETTER_QUEUE)!
      .add('dead-letter', { service: 'crm', input: SEALED_PLACEHOLDER, sealed: sealedData.sealed });
    const dlShown = (
      (await getJson(board, `${BASE}/api/queues/${enc(DEAD_LETTER_QUEUE)}/${deadLetter.id!}`)) as {
        job: { data: unknown };
      }
    ).job.data;
    expect(dlShown).toEqual({ service: 'crm', input: SEALED_PLACEHOLDER, sealed: true });
    // The listing, which formats every job of the page, answers too.
    const listing = (await getJson(
      board,
      `${BASE}/api/queues?${new URLSearchParams({ activeQueue: '{crm}', status: 'latest', page: '1', jobsPerPage: '50' })}`,
    )) as { queues: { name: string; jobs: { id: string }[] }[] };
    const crmJobs = listing.queues.find(({ name }) => name === '{crm}')!.jobs.map(({ id }) => id);
    expect(crmJobs.sort()).toEqual(['array-1', 'ferry-5', 'ferry-bad', 'null-1', 'sealed-1', 'string-1']);
  });

  it("shows a dead letter's history as the records the API shows, whichever version stored it", async () => {
    const downstream = await startDownstream(() => ({ status: 500, body: { error: 'down' } }));
    const ferry = await createTestFerry(redis, {
      services: crmCalling(downstream.url, { attempts: 2, backoff: { delayMs: 20, maxDelayMs: 50 } }),
    });
    const { id } = await ferry.producer.enqueue({ service: 'crm', operation: 'create', input: { n: 1 } });
    const view = await ferry.producer.waitFor('crm', id, { timeoutMs: 15_000 });
    expect(view.state).toBe('dead_lettered');
    const board = await startBoard(ferry.prefix, ferry.config);
    const dlQ = `${BASE}/api/queues/${enc(DEAD_LETTER_QUEUE)}`;
    const shownData = async (jobId: string): Promise<Record<string, unknown>> =>
      ((await getJson(board, `${dlQ}/${jobId}`)) as { job: { data: Record<string, unknown> } }).job.data;

    // Stored compactly (core/stored-history.ts), shown as the API's records, the rest of the record as stored.
    const stored = JSON.parse(
      (await redis.client.hget(board.queues.get(DEAD_LETTER_QUEUE)!.toKey(view.deadLetterId!), 'data'))!,
    ) as Record<string, unknown>;
    expect((stored.attempts as unknown[])[0]).toBe(2);
    const apiRecord = (await ferry.pool.deadLetters.get(view.deadLetterId!))!.data;
    expect(apiRecord.attempts.map((a) => [a.attempt, a.outcome, a.status])).toEqual([
      [1, 'failed', 500],
      [2, 'failed', 500],
    ]);
    expect(await shownData(view.deadLetterId!)).toEqual({ ...stored, attempts: apiRecord.attempts });

    // A 0.1.0 dead letter (objects) is shown as it was; a history of neither version, as stored.
    const deadLetters = board.queues.get(DEAD_LETTER_QUEUE)!;
    const legacy = await deadLetters.add('crm.create', { ...stored, attempts: apiRecord.attempts });
    expect(await shownData(legacy.id!)).toEqual({ ...stored, attempts: apiRecord.attempts });
    const odd = await deadLetters.add('crm.create', { ...stored, attempts: [7, 'x'] });
    expect(await shownData(odd.id!)).toEqual({ ...stored, attempts: [7, 'x'] });
    // The listing formats every job of the page the same way.
    const listing = (await getJson(
      board,
      `${BASE}/api/queues?${new URLSearchParams({ activeQueue: DEAD_LETTER_QUEUE, status: 'latest', page: '1', jobsPerPage: '50' })}`,
    )) as { queues: { name: string; jobs: { id: string; data: { attempts: unknown } }[] }[] };
    const listed = listing.queues.find(({ name }) => name === DEAD_LETTER_QUEUE)!.jobs;
    expect(Object.fromEntries(listed.map(({ id: jobId, data }) => [jobId, data.attempts]))).toEqual({
      [view.deadLetterId!]: apiRecord.attempts,
      [legacy.id!]: apiRecord.attempts,
      [odd.id!]: [7, 'x'],
    });
  });
});

describe('Bull Board actions', () => {
  it('refuses every action, pause/resume included, and changes nothing in Redis', async () => {
    const downstream = await startDownstream(() => ({ status: 500, body: { error: 'down' } }));
    const ferry = await createTestFerry(redis, {
      services: crmCalling(downstream.url, { attempts: 1, backoff: { delayMs: 50, maxDelayMs: 100 } }),
    });
    const failed = await ferry.producer.enqueue({ service: 'crm', operation: 'create', input: { n: 1 } });
    const view = await ferry.producer.waitFor('crm', failed.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('dead_lettered');
    const deadLetterId = view.deadLetterId!;
    const delayed = await ferry.producer.enqueue({
      service: 'crm',
      operation: 'create',
      input: { n: 2 },
      delayMs: 60_000,
    });

    const board = await startBoard(ferry.prefix, ferry.config);
    const crm = board.queues.get('{crm}')!;
    const deadLetters = board.queues.get(DEAD_LETTER_QUEUE)!;
    // A whole-service hold, as the breaker or a Retry-After sets it (DESIGN §8).
    await crm.rateLimit(60_000);

    /** What an unsafe action would change. */
    const snapshot = async (): Promise<unknown> => ({
      counts: {
        crm: await crm.getJobCounts('wait', 'delayed', 'failed', 'completed', 'active'),
        deadLetter: await deadLetters.getJobCounts('wait', 'delayed', 'failed', 'completed', 'active'),
      },
      paused: { crm: await crm.isPaused(), deadLetter: await deadLetters.isPaused() },
      states: {
        failed: await crm.getJobState(failed.id),
        delayed: await crm.getJobState(delayed.id),
        deadLetter: await deadLetters.getJobState(deadLetterId),
      },
      hold: (await crm.getRateLimitTtl()) > 0,
      rateLimit: await ferry.connection.hget(crm.toKey('meta'), 'max'),
      data: {
        failed: (await crm.getJob(failed.id))?.data,
        deadLetter: (await deadLetters.getJob(deadLetterId))?.data,
      },
    });
    const before = await snapshot();
    expect(before).toMatchObject({
      paused: { crm: false, deadLetter: true },
      states: { failed: 'failed', delayed: 'delayed', deadLetter: 'waiting' },
      hold: true,
    });

    const crmQ = `${BASE}/api/queues/${enc('{crm}')}`;
    const dlQ = `${BASE}/api/queues/${enc(DEAD_LETTER_QUEUE)}`;
    const refused: readonly [string, string, unknown?][] = [
      ['PUT', `${crmQ}/${failed.id}/retry`],
      ['PUT', `${crmQ}/retry/failed`],
      ['PUT', `${crmQ}/retry/completed`],
      ['PUT', `${crmQ}/${delayed.id}/promote`],
      ['PUT', `${crmQ}/promote`],
      ['PUT', `${crmQ}/clean/failed`],
      ['PUT', `${crmQ}/${failed.id}/clean`],
      ['PUT', `${crmQ}/empty`],
      ['PUT', `${crmQ}/obliterate`, {}],
      ['PUT', `${crmQ}/rate-limit/release`],
      ['PUT', `${crmQ}/rate-limit`, { max: 1, duration: 1000 }],
      ['PUT', `${crmQ}/concurrency`, { concurrency: 1 }],
      ['POST', `${crmQ}/add`, { name: 'create', data: { input: {} } }],
      ['PATCH', `${crmQ}/${delayed.id}/update-data`, { data: { input: { n: 3 } } }],
      ['PATCH', `${crmQ}/${delayed.id}/delay`, { delay: 0 }],
      ['PATCH', `${crmQ}/${delayed.id}/priority`, { priority: 1 }],
      // Pausing is `ferry queues pause`'s: every queue is read-only in the board, which hides its buttons.
      ['PUT', `${crmQ}/pause`],
      ['PUT', `${crmQ}/resume`],
      ['PUT', `${BASE}/api/queues/pause`],
      ['PUT', `${BASE}/api/queues/resume`],
      ['PUT', `${dlQ}/resume`],
      ['PUT', `${dlQ}/pause`],
      ['PUT', `${dlQ}/${deadLetterId}/retry`],
      ['PUT', `${dlQ}/${deadLetterId}/promote`],
      ['PUT', `${dlQ}/${deadLetterId}/clean`],
      ['PUT', `${dlQ}/clean/wait`],
      ['PUT', `${dlQ}/empty`],
    ];
    for (const [method, path, body] of refused) {
      const response = await send(board, path, { method, authorization: basic(ADMIN_TOKEN), body });
      expect(response.status, `${method} ${path}`).toBe(403);
      const answer = (await response.json()) as { error: { key: string }; message: string };
      expect(answer.error.key).toBe('ERRORS.FORBIDDEN');
      expect(answer.message.length).toBeGreaterThan(0);
      expect(await snapshot(), `${method} ${path} changed Redis`).toEqual(before);
    }

    // Operators' actions are logged, refusals too; credentials never are.
    const actions = board.logs.filter((line) => line.includes('Bull Board action'));
    expect(actions).toHaveLength(refused.length);
    expect(actions.every((line) => line.includes('"statusCode":403'))).toBe(true);
    expect(board.logs.join('\n')).not.toContain(ADMIN_TOKEN);
  });
});

describe('Bull Board and secrets', () => {
  it('shows no secret value in any response, though the downstream echoed it', async () => {
    const secret = `sk_live_${randomBytes(12).toString('hex')}`;
    const downstream = await startDownstream((request) => {
      const echo = { youSent: request.headers.authorization };
      return request.url.startsWith('/fail') ? { status: 500, body: echo } : { status: 200, body: echo };
    });
    const ferry = await createTestFerry(redis, {
      env: { FERRY_SECRET_API_KEY: secret },
      services: {
        services: {
          crm: {
            baseUrl: downstream.url,
            timeoutMs: 2_000,
            auth: { type: 'bearer', token: '{{ secrets.api_key }}' },
            retry: { attempts: 2, backoff: { delayMs: 20, maxDelayMs: 50 } },
            operations: {
              create: { method: 'POST', path: '/things', body: '{{ input }}' },
              fail: { method: 'POST', path: '/fail', body: '{{ input }}' },
            },
          },
        },
      },
    });
    const ok = await ferry.producer.enqueue({ service: 'crm', operation: 'create', input: { n: 1 } });
    const bad = await ferry.producer.enqueue({ service: 'crm', operation: 'fail', input: { n: 2 } });
    const okView = await ferry.producer.waitFor('crm', ok.id, { timeoutMs: 10_000 });
    const badView = await ferry.producer.waitFor('crm', bad.id, { timeoutMs: 10_000 });
    expect([okView.state, badView.state]).toEqual(['completed', 'dead_lettered']);
    // The secret really went out, and really came back in both bodies.
    expect(downstream.requests.map((r) => r.headers.authorization)).toEqual(
      Array.from({ length: 3 }, () => `Bearer ${secret}`),
    );

    const board = await startBoard(ferry.prefix, ferry.config);
    const crmQ = `${BASE}/api/queues/${enc('{crm}')}`;
    const dlQ = `${BASE}/api/queues/${enc(DEAD_LETTER_QUEUE)}`;
    const listing = (queueName: string, status: string): string =>
      `${BASE}/api/queues?${new URLSearchParams({ activeQueue: queueName, status, page: '1', jobsPerPage: '50' })}`;
    const paths = [
      `${BASE}/api/queues`,
      listing('{crm}', 'latest'),
      listing('{crm}', 'completed'),
      listing('{crm}', 'failed'),
      listing(DEAD_LETTER_QUEUE, 'latest'),
      listing(DEAD_LETTER_QUEUE, 'paused'),
      listing(DEAD_LETTER_QUEUE, 'waiting'),
      `${crmQ}/${ok.id}`,
      `${crmQ}/${ok.id}/logs`,
      `${crmQ}/${ok.id}/flow`,
      `${crmQ}/${bad.id}`,
      `${crmQ}/${bad.id}/logs`,
      `${dlQ}/${badView.deadLetterId!}`,
      `${dlQ}/${badView.deadLetterId!}/logs`,
      `${crmQ}/metrics`,
      `${crmQ}/default-job-options`,
      `${crmQ}/rate-limit`,
      `${crmQ}/workers`,
      `${crmQ}/job-data-schema`,
      `${BASE}/api/job-schedulers`,
      `${BASE}/api/redis/stats`,
    ];
    const responses: string[] = [];
    for (const path of paths) {
      const response = await send(board, path, { authorization: basic(ADMIN_TOKEN) });
      expect(response.status, path).toBe(200);
      responses.push(`${path}\n${await response.text()}`);
    }
    const page = await send(board, BASE, { authorization: basic(ADMIN_TOKEN) });
    responses.push(await page.text());
    const everything = responses.join('\n');

    // The responses hold the jobs, their results, errors and logs (so the check below looks at something).
    expect(everything).toContain(ok.id);
    expect(everything).toContain(badView.deadLetterId!);
    expect(everything).toContain('youSent');
    expect(everything).toContain('[redacted]');
    expect(everything).toContain('ServerError');
    for (const form of [secret, Buffer.from(secret).toString('base64'), encodeURIComponent(secret)]) {
      expect(everything).not.toContain(form);
    }
  });
});
