/**
 * Auth: the token list's validation, and the matrix (no token, wrong token, wrong scope, other tenant, other
 * service, admin) on every route the API serves, over real HTTP. The matrix is checked against the routes the
 * app actually registered, so a new route without a row fails here.
 */
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { describe, expect, it, onTestFinished } from 'vitest';

import { loadTokenSet, tokenFromHeader, TokenSet } from '../../src/api/auth.ts';
import { DeadLetterWriter } from '../../src/dead-letter/writer.ts';
import { startTestApi, type TestApi, TOKENS } from '../helpers/api.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { tempDir } from '../helpers/processes.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();
/** FERRY_SECRETS_KEY of the matrix's API (32 bytes, hex). */
const SECRETS_KEY = 'ab'.repeat(32);

describe('token list', () => {
  it.each([
    [[], 'FERRY_API_TOKENS: must list at least one token'],
    [[{ name: 'a', scopes: ['admin'] }], 'FERRY_API_TOKENS[0].token: give exactly one of token or sha256'],
    [[{ name: 'a', token: 'short', scopes: ['admin'] }], 'FERRY_API_TOKENS[0].token: must be at least 22'],
    [[{ name: 'a', token: 'x'.repeat(30), scopes: ['root'] }], 'FERRY_API_TOKENS[0].scopes[0]'],
    [
      [{ name: 'a', sha256: 'abc', scopes: ['admin'] }],
      'FERRY_API_TOKENS[0].sha256: must be the hex SHA-256',
    ],
    [
      [{ name: 'a', token: 'x'.repeat(30), scopes: ['admin'], tenants: ['a b'] }],
      'FERRY_API_TOKENS[0].tenants[0]: must be a tenant name',
    ],
    [
      [
        { name: 'a', token: 'x'.repeat(30), scopes: ['admin'] },
        { name: 'a', token: 'y'.repeat(30), scopes: ['admin'] },
      ],
      'FERRY_API_TOKENS[1].name: "a" is used twice',
    ],
  ])('refuses %j naming the entry and field', (value, message) => {
    expect(() => TokenSet.parse(value, 'FERRY_API_TOKENS')).toThrow(message);
  });

  it('accepts a token by its sha256, so plain tokens stay out of config', () => {
    const token = 'a-token-kept-in-a-vault-1234';
    const tokens = TokenSet.parse(
      [
        {
          name: 'ci',
          sha256: createHash('sha256').update(token).digest('hex').toUpperCase(),
          scopes: ['jobs:read'],
        },
      ],
      'x',
    );
    expect(tokens.authenticate(token)?.name).toBe('ci');
    expect(tokens.authenticate(`${token}x`)).toBeUndefined();
  });

  it('reads the same shape from FERRY_API_TOKENS (JSON) and FERRY_API_TOKENS_FILE (YAML), and says which is wrong', async () => {
    const dir = await tempDir('ferry-tokens');
    const file = join(dir, 'tokens.yaml');
    await writeFile(file, `- name: ops\n  token: ${'t'.repeat(30)}\n  scopes: [admin]\n`);
    expect((await loadTokenSet({ FERRY_API_TOKENS_FILE: file }))?.authenticate('t'.repeat(30))?.name).toBe(
      'ops',
    );
    expect(
      (
        await loadTokenSet({
          FERRY_API_TOKENS: JSON.stringify([{ name: 'j', token: 'j'.repeat(30), scopes: ['admin'] }]),
        })
      )?.authenticate('j'.repeat(30))?.name,
    ).toBe('j');
    expect(await loadTokenSet({})).toBeUndefined();
    await expect(loadTokenSet({ FERRY_API_TOKENS: '[{' })).rejects.toThrow(
      'FERRY_API_TOKENS: not valid JSON',
    );
    await expect(loadTokenSet({ FERRY_API_TOKENS_FILE: join(dir, 'missing.yaml') })).rejects.toThrow(
      'FERRY_API_TOKENS_FILE: cannot read',
    );
    await writeFile(file, '- name: ops\n  scopes: [admin]\n');
    await expect(loadTokenSet({ FERRY_API_TOKENS_FILE: file })).rejects.toThrow(`${file}[0].token`);
  });

  it('takes the token from Bearer, or from Basic as the password', () => {
    expect(tokenFromHeader('Bearer abc')).toBe('abc');
    expect(tokenFromHeader('bearer  abc ')).toBe('abc');
    expect(tokenFromHeader(`Basic ${Buffer.from('anyone:s3cret:with:colons').toString('base64')}`)).toBe(
      's3cret:with:colons',
    );
    expect(tokenFromHeader(`Basic ${Buffer.from('user-only').toString('base64')}`)).toBeUndefined();
    expect(tokenFromHeader('Token abc')).toBeUndefined();
    expect(tokenFromHeader('Bearer')).toBeUndefined();
    expect(tokenFromHeader(undefined)).toBeUndefined();
  });
});

type Role = 'none' | 'wrong' | 'wrongScope' | 'otherTenant' | 'otherService' | 'admin';

interface Row {
  method: string;
  /** The route as registered (`:params`). */
  route: string;
  /** A concrete request to it. */
  path: (ids: Ids) => string;
  body?: (ids: Ids) => unknown;
  /** Token with a valid but insufficient scope, when the route needs more than any token. */
  wrongScope?: string;
  /** What a valid token of another tenant / service gets, when the route is tenant- or service-scoped. */
  otherTenant?: { token: string; status: number };
  otherService?: { status: number };
  /** Status for the admin token. */
  ok: number;
  /** Public: no token needed. */
  isPublic?: boolean;
  /** Server-Sent Events: only the status is read, then the stream is dropped. */
  isStream?: boolean;
}

interface Ids {
  /** A waiting job of tenant globex on `svc`. */
  globexJob: string;
  /** A delayed job of tenant globex, cancelled by the admin row. */
  delayedJob: string;
  /** A dead letter of tenant globex on `svc`, deleted by the admin row. */
  deadLetter: string;
}

const job = { service: 'svc', operation: 'create', input: { a: 1 }, tenant: 'globex' };

/** One row per route; `covers every registered route` keeps it complete. */
const ROWS: Row[] = [
  { method: 'GET', route: '/healthz', path: () => '/healthz', ok: 200, isPublic: true },
  { method: 'GET', route: '/readyz', path: () => '/readyz', ok: 200, isPublic: true },
  { method: 'GET', route: '/docs', path: () => '/docs', ok: 200 },
  { method: 'GET', route: '/docs/json', path: () => '/docs/json', ok: 200 },
  { method: 'GET', route: '/docs/yaml', path: () => '/docs/yaml', ok: 200 },
  { method: 'GET', route: '/docs/static/*', path: () => '/docs/static/index.html', ok: 200 },
  { method: 'GET', route: '/docs/static/index.html', path: () => '/docs/static/index.html', ok: 200 },
  {
    method: 'GET',
    route: '/docs/static/swagger-initializer.js',
    path: () => '/docs/static/swagger-initializer.js',
    ok: 200,
  },
  {
    method: 'POST',
    route: '/v1/jobs',
    path: () => '/v1/jobs',
    body: () => job,
    wrongScope: TOKENS.reader,
    otherTenant: { token: TOKENS.acme, status: 403 },
    otherService: { status: 403 },
    ok: 202,
  },
  {
    method: 'POST',
    route: '/v1/jobs/batch',
    path: () => '/v1/jobs/batch',
    body: () => ({ jobs: [job], atomic: true }),
    wrongScope: TOKENS.reader,
    otherTenant: { token: TOKENS.acme, status: 422 },
    otherService: { status: 422 },
    ok: 200,
  },
  {
    method: 'GET',
    route: '/v1/jobs/:service/:id',
    path: (ids) => `/v1/jobs/svc/${ids.globexJob}`,
    wrongScope: TOKENS.writer,
    otherTenant: { token: TOKENS.acme, status: 404 },
    otherService: { status: 403 },
    ok: 200,
  },
  {
    method: 'DELETE',
    route: '/v1/jobs/:service/:id',
    path: (ids) => `/v1/jobs/svc/${ids.delayedJob}`,
    wrongScope: TOKENS.reader,
    otherTenant: { token: TOKENS.acme, status: 404 },
    otherService: { status: 403 },
    ok: 204,
  },
  { method: 'GET', route: '/v1/services', path: () => '/v1/services', wrongScope: TOKENS.writer, ok: 200 },
  { method: 'GET', route: '/v1/breakers', path: () => '/v1/breakers', wrongScope: TOKENS.writer, ok: 200 },
  { method: 'GET', route: '/v1/queues', path: () => '/v1/queues', wrongScope: TOKENS.writer, ok: 200 },
  {
    method: 'POST',
    route: '/v1/queues/:service/pause',
    path: () => '/v1/queues/svc/pause',
    wrongScope: TOKENS.writer,
    ok: 200,
  },
  {
    method: 'POST',
    route: '/v1/queues/:service/resume',
    path: () => '/v1/queues/svc/resume',
    wrongScope: TOKENS.writer,
    ok: 200,
  },
  { method: 'GET', route: '/metrics', path: () => '/metrics', wrongScope: TOKENS.writer, ok: 200 },
  {
    method: 'GET',
    route: '/v1/status',
    path: () => '/v1/status',
    wrongScope: TOKENS.writer,
    // Filtered to the token's services, not refused; a tenant-limited token sees the services' counts.
    otherTenant: { token: TOKENS.acme, status: 200 },
    otherService: { status: 200 },
    ok: 200,
  },
  {
    method: 'GET',
    route: '/v1/services/:service/retry-plan',
    path: () => '/v1/services/svc/retry-plan',
    wrongScope: TOKENS.writer,
    otherService: { status: 403 },
    ok: 200,
  },
  {
    method: 'POST',
    route: '/v1/breakers/:service/open',
    path: () => '/v1/breakers/svc/open',
    body: () => ({ forMs: 60_000, reason: 'matrix' }),
    wrongScope: TOKENS.reader,
    // A breaker acts on every tenant's jobs: an admin limited to tenants may not.
    otherTenant: { token: TOKENS.acmeAdmin, status: 403 },
    otherService: { status: 403 },
    ok: 200,
  },
  {
    method: 'POST',
    route: '/v1/breakers/:service/close',
    path: () => '/v1/breakers/svc/close',
    wrongScope: TOKENS.reader,
    otherTenant: { token: TOKENS.acmeAdmin, status: 403 },
    otherService: { status: 403 },
    ok: 200,
  },
  {
    method: 'GET',
    route: '/v1/schedules',
    path: () => '/v1/schedules',
    wrongScope: TOKENS.writer,
    // Filtered to the schedules of the token's services and tenants, not refused.
    otherTenant: { token: TOKENS.acme, status: 200 },
    otherService: { status: 200 },
    ok: 200,
  },
  ...(['pause', 'resume', 'run-now'] as const).map((action) => ({
    method: 'POST',
    route: `/v1/schedules/:name/${action}`,
    path: () => `/v1/schedules/nightly/${action}`,
    wrongScope: TOKENS.reader,
    // The schedule runs as tenant globex.
    otherTenant: { token: TOKENS.acmeAdmin, status: 403 },
    otherService: { status: 403 },
    ok: action === 'run-now' ? 202 : 200,
  })),
  {
    method: 'GET',
    route: '/v1/jobs/:service/:id/events',
    path: (ids) => `/v1/jobs/svc/${ids.globexJob}/events`,
    wrongScope: TOKENS.writer,
    otherTenant: { token: TOKENS.acme, status: 404 },
    otherService: { status: 403 },
    ok: 200,
    isStream: true,
  },
  {
    method: 'GET',
    route: '/v1/events',
    path: () => '/v1/events?service=svc',
    wrongScope: TOKENS.writer,
    // The service-wide stream is filtered to the token's tenants, not refused.
    otherTenant: { token: TOKENS.acme, status: 200 },
    otherService: { status: 403 },
    ok: 200,
    isStream: true,
  },
  {
    method: 'GET',
    route: '/v1/dead-letters',
    path: () => '/v1/dead-letters',
    wrongScope: TOKENS.writer,
    // A list is filtered to what the token may see, not refused.
    otherTenant: { token: TOKENS.acme, status: 200 },
    otherService: { status: 200 },
    ok: 200,
  },
  {
    method: 'GET',
    route: '/v1/dead-letters/:id',
    path: (ids) => `/v1/dead-letters/${ids.deadLetter}`,
    wrongScope: TOKENS.writer,
    otherTenant: { token: TOKENS.acme, status: 404 },
    otherService: { status: 403 },
    ok: 200,
  },
  {
    method: 'DELETE',
    route: '/v1/dead-letters/:id',
    path: (ids) => `/v1/dead-letters/${ids.deadLetter}`,
    wrongScope: TOKENS.writer,
    otherTenant: { token: TOKENS.acme, status: 403 },
    otherService: { status: 403 },
    ok: 204,
  },
  {
    method: 'POST',
    route: '/v1/dead-letters/replay',
    path: () => '/v1/dead-letters/replay',
    body: (ids) => ({ ids: [ids.deadLetter] }),
    wrongScope: TOKENS.writer,
    // Replayed within the token's scope, not refused: another tenant's dead letter is skipped as not found.
    otherTenant: { token: TOKENS.acmeAdmin, status: 200 },
    otherService: { status: 403 },
    ok: 200,
  },
  {
    method: 'POST',
    route: '/v1/dead-letters/purge',
    path: () => '/v1/dead-letters/purge',
    body: () => ({ service: 'svc' }),
    wrongScope: TOKENS.writer,
    otherTenant: { token: TOKENS.acmeAdmin, status: 200 },
    otherService: { status: 403 },
    ok: 200,
  },
  {
    method: 'GET',
    route: '/v1/secrets',
    path: () => '/v1/secrets',
    wrongScope: TOKENS.writer,
    // Listed for a tenant-limited admin too, filtered to its tenants' keys.
    otherTenant: { token: TOKENS.acmeAdmin, status: 200 },
    ok: 200,
  },
  {
    method: 'GET',
    route: '/v1/secrets/:key',
    path: () => '/v1/secrets/matrix_key',
    wrongScope: TOKENS.reader,
    otherTenant: { token: TOKENS.acmeAdmin, status: 403 },
    ok: 200,
  },
  {
    method: 'PUT',
    route: '/v1/secrets/:key',
    path: () => '/v1/secrets/matrix_key',
    body: () => ({ value: 'matrix-value-put' }),
    wrongScope: TOKENS.reader,
    otherTenant: { token: TOKENS.acmeAdmin, status: 403 },
    ok: 201,
  },
  {
    method: 'POST',
    route: '/v1/secrets/:key/stage',
    path: () => '/v1/secrets/matrix_key/stage',
    body: () => ({ value: 'matrix-value-stage' }),
    wrongScope: TOKENS.reader,
    otherTenant: { token: TOKENS.acmeAdmin, status: 403 },
    ok: 201,
  },
  {
    method: 'POST',
    route: '/v1/secrets/:key/test',
    path: () => '/v1/secrets/matrix_key/test',
    body: () => ({ service: 'keyed', operation: 'ping' }),
    wrongScope: TOKENS.reader,
    otherTenant: { token: TOKENS.acmeAdmin, status: 403 },
    ok: 200,
  },
  {
    method: 'POST',
    route: '/v1/secrets/:key/promote',
    path: () => '/v1/secrets/matrix_key/promote',
    wrongScope: TOKENS.reader,
    otherTenant: { token: TOKENS.acmeAdmin, status: 403 },
    ok: 200,
  },
  {
    method: 'POST',
    route: '/v1/secrets/:key/rollback',
    path: () => '/v1/secrets/matrix_key/rollback',
    wrongScope: TOKENS.reader,
    otherTenant: { token: TOKENS.acmeAdmin, status: 403 },
    ok: 200,
  },
  {
    method: 'DELETE',
    route: '/v1/secrets/:key',
    path: () => '/v1/secrets/matrix_key',
    wrongScope: TOKENS.reader,
    otherTenant: { token: TOKENS.acmeAdmin, status: 403 },
    ok: 204,
  },
  {
    method: 'POST',
    route: '/v1/secrets/reencrypt',
    path: () => '/v1/secrets/reencrypt',
    wrongScope: TOKENS.reader,
    otherTenant: { token: TOKENS.acmeAdmin, status: 403 },
    ok: 200,
  },
];

const BOARD = '/admin/queues';

/**
 * Bull Board's routes (page, assets, its API) all sit behind one admin check: no or a wrong token is 401 with a
 * Basic challenge, any token that is not an unrestricted admin is 403, and the admin gets through (a GET is
 * served; an action may still be refused by the board's action policy, which bull-board.test.ts covers).
 */
function boardRequestPath(route: string): string {
  return route
    .replace(':queueName', 'svc')
    .replace(':jobId', 'no-such-job')
    .replace(':queueStatus', 'failed')
    .replace(':schedulerId', 'no-such-scheduler')
    .replace('*', 'no-such-asset.js');
}

/** Routes as Fastify registered them: `METHOD /path` (HEAD twins of GET routes left out). */
function registeredRoutes(api: TestApi): string[] {
  return api.routes.filter((route) => !route.startsWith('HEAD '));
}

async function setup(): Promise<{ api: TestApi; ids: Ids }> {
  const downstream = await startDownstream();
  const ferry = await createTestFerry(redis, {
    start: false,
    services: {
      services: {
        svc: {
          baseUrl: downstream.url,
          operations: { create: { method: 'POST', path: '/x', body: '{{ input }}' } },
        },
        other: { baseUrl: downstream.url, operations: { ping: { method: 'GET', path: '/ping' } } },
        // Reads matrix_key: the secrets rows test it.
        keyed: {
          baseUrl: downstream.url,
          headers: { 'x-api-key': '{{ secrets.matrix_key }}' },
          operations: { ping: { method: 'GET', path: '/ping' } },
        },
      },
      schedules: {
        nightly: {
          cron: '0 2 * * *',
          service: 'svc',
          operation: 'create',
          input: { a: 1 },
          tenant: 'globex',
        },
      },
    },
  });
  const api = await startTestApi({
    redisUrl: redis.url,
    prefix: ferry.prefix,
    config: ferry.config,
    secretsKey: SECRETS_KEY,
  });
  // matrix_key with a previous, a current and a staged version: every secrets row's admin request succeeds.
  for (const [method, path] of [
    ['PUT', '/v1/secrets/matrix_key'],
    ['PUT', '/v1/secrets/matrix_key'],
    ['POST', '/v1/secrets/matrix_key/stage'],
  ] as const) {
    const seeded = await api.request(method, path, {
      token: TOKENS.admin,
      body: { value: 'matrix-seed-value' },
    });
    expect(seeded.status).toBe(201);
  }
  const globexJob = (await ferry.producer.enqueue({ ...job })).id;
  const delayedJob = (await ferry.producer.enqueue({ ...job, delayMs: 60_000 })).id;
  const writer = new DeadLetterWriter({ connection: ferry.connection, prefix: ferry.prefix });
  onTestFinished(() => writer.close());
  const { id: deadLetter } = await writer.write({
    service: 'svc',
    operation: 'create',
    input: { a: 1 },
    tenant: 'globex',
    sourceJobId: 'gone-1',
    sourceQueue: '{svc}',
    attempts: [],
    finalError: { type: 'ClientError', message: 'refused', status: 400 },
    deadLetteredAt: Date.now(),
    enqueuedAt: Date.now(),
  });
  return { api, ids: { globexJob, delayedJob, deadLetter } };
}

describe('auth matrix', () => {
  it('has a row for every route the API registered', async () => {
    const { api } = await setup();
    const rows = new Set(ROWS.map((row) => `${row.method} ${row.route}`));
    const registered = registeredRoutes(api).filter((route) => !route.includes(` ${BOARD}`));
    expect(registered.filter((route) => !rows.has(route))).toEqual([]);
    expect([...rows].filter((route) => !registered.includes(route))).toEqual([]);
  });

  it.each(ROWS.map((row) => [`${row.method} ${row.route}`, row] as const))('%s', async (_name, row) => {
    const { api, ids } = await setup();
    const send = async (token: string | undefined): ReturnType<TestApi['request']> => {
      if (row.isStream !== true) {
        return api.request(row.method, row.path(ids), {
          token,
          ...(row.body === undefined ? {} : { body: row.body(ids) }),
        });
      }
      // An event stream stays open: read the status and the head, then hang up.
      const controller = new AbortController();
      const response = await fetch(api.url + row.path(ids), {
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
        signal: controller.signal,
      });
      const isEventStream = response.headers.get('content-type')?.startsWith('text/event-stream') === true;
      const text = isEventStream ? '' : await response.text();
      controller.abort();
      return {
        status: response.status,
        headers: response.headers,
        body: text === '' ? undefined : (JSON.parse(text) as unknown),
        text,
      };
    };
    const seen: Partial<Record<Role, number>> = {};
    const expected: Partial<Record<Role, number>> = {};

    const none = await send(undefined);
    seen.none = none.status;
    expected.none = row.isPublic === true ? row.ok : 401;
    if (row.isPublic !== true) {
      expect(none.headers.get('www-authenticate')).toContain('Bearer');
      seen.wrong = (await send(TOKENS.wrong)).status;
      expected.wrong = 401;
    }
    if (row.wrongScope !== undefined) {
      const denied = await send(row.wrongScope);
      seen.wrongScope = denied.status;
      expected.wrongScope = 403;
      expect(denied.body?.error?.type).toBe('ForbiddenError');
    }
    if (row.otherTenant !== undefined) {
      seen.otherTenant = (await send(row.otherTenant.token)).status;
      expected.otherTenant = row.otherTenant.status;
    }
    if (row.otherService !== undefined) {
      seen.otherService = (await send(TOKENS.otherService)).status;
      expected.otherService = row.otherService.status;
    }
    seen.admin = (await send(TOKENS.admin)).status;
    expected.admin = row.ok;
    expect(seen).toEqual(expected);
  });

  it('takes Basic only on /docs: a remembered Basic password cannot act on /v1 (cross-site form POST)', async () => {
    const { api } = await setup();
    const basic = { authorization: `Basic ${Buffer.from(`ops:${TOKENS.admin}`).toString('base64')}` };
    // What a form on another site makes a browser send: a POST without a body, with the realm's credentials.
    const pause = await api.request('POST', '/v1/queues/svc/pause', { headers: basic });
    expect(pause.status).toBe(401);
    expect(pause.headers.get('www-authenticate')).toBe('Bearer realm="ferry"');
    const queues = await api.request('GET', '/v1/queues', { token: TOKENS.admin });
    expect(queues.body.queues.find((q: { service: string }) => q.service === 'svc').paused).toBe(false);
    expect((await api.request('GET', '/metrics', { headers: basic })).status).toBe(401);
    const docs = await api.request('GET', '/docs/json', { headers: basic });
    expect(docs.status).toBe(200);
    const challenge = await api.request('GET', '/docs/json');
    expect(challenge.headers.get('www-authenticate')).toContain('Basic');
  });

  it('guards every Bull Board route: 401 with a Basic challenge, 403 for all but an unrestricted admin', async () => {
    const { api } = await setup();
    const routes = registeredRoutes(api).filter((route) => route.includes(` ${BOARD}`));
    expect(routes.length).toBeGreaterThan(20);
    const seen: Record<string, Record<string, number>> = {};
    const expected: Record<string, Record<string, number | string>> = {};
    for (const route of routes) {
      const [method, path] = route.split(' ') as [string, string];
      const send = async (token: string | undefined): Promise<Response> =>
        fetch(api.url + boardRequestPath(path), {
          method,
          headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
        });
      const none = await send(undefined);
      expect(none.headers.get('www-authenticate'), route).toContain('Basic');
      const admin = (await send(TOKENS.admin)).status;
      seen[route] = {
        none: none.status,
        wrong: (await send(TOKENS.wrong)).status,
        reader: (await send(TOKENS.reader)).status,
        acmeTenant: (await send(TOKENS.acme)).status,
        otherService: (await send(TOKENS.otherService)).status,
        adminDenied: admin === 401 || (method === 'GET' && admin === 403) ? admin : 0,
      };
      expected[route] = {
        none: 401,
        wrong: 401,
        reader: 403,
        acmeTenant: 403,
        otherService: 403,
        adminDenied: 0,
      };
    }
    expect(seen).toEqual(expected);
  });
});
