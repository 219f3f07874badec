/**
 * The admin secrets routes over real HTTP with a real redis-server: every route's answers and refusals, keys
 * of tenants as one URL-encoded segment, the API without FERRY_SECRETS_KEY, tenant- and service-limited admin
 * tokens, the test route's live call with the staged value (current unchanged), and no value in any answer
 * or log line.
 */
import { randomBytes } from 'node:crypto';

import { describe, expect, it, onTestFinished } from 'vitest';

import { startPrivateRedis } from '../../src/cli/redis-server.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import type { ServicesConfig } from '../../src/core/services/types.ts';
import { parseKeyring } from '../../src/secrets/crypto.ts';
import { SecretStore } from '../../src/secrets/redis-store.ts';
import { type ResponseBody, startTestApi, type TestApi, TOKENS } from '../helpers/api.ts';
import { type Downstream, startDownstream } from '../helpers/downstream.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

const KEY = randomBytes(32).toString('hex');
/** Every value a test sends: none may come back in an answer or a log line. */
const VALUES = {
  current: 'sk_live_current_value_0001',
  staged: 'sk_live_staged_candidate_0002',
  third: 'sk_live_third_value_0003',
  acme: 'sk_live_acme_own_value_0004',
  other: 'sk_live_other_service_value_0005',
  quoted: 'pa"ss\\word with spaces 0006',
} as const;

interface Setup {
  api: TestApi;
  downstream: Downstream;
  prefix: string;
  config: ServicesConfig;
  /** Every answer's text so far, for the leak check. */
  texts: string[];
  call(
    method: string,
    path: string,
    options?: { token?: string; body?: unknown; headers?: Record<string, string> },
  ): Promise<{ status: number; headers: Headers; body: ResponseBody; text: string }>;
}

function servicesConfig(url: string): ServicesConfig {
  return parseServicesConfig(
    {
      services: {
        crm: {
          baseUrl: url,
          timeoutMs: 2_000,
          auth: { type: 'bearer', token: '{{ secrets.crm_key }}' },
          retry: { attempts: 1 },
          operations: {
            whoami: { method: 'GET', path: '/whoami' },
            create: { method: 'POST', path: '/contacts', body: '{{ input }}' },
          },
        },
        other: {
          baseUrl: url,
          headers: { 'x-api-key': '{{ secrets.other_key }}' },
          operations: { ping: { method: 'GET', path: '/ping' } },
        },
      },
    },
    { env: {} },
  );
}

/** The API over a fresh prefix; the downstream echoes nothing unless a test scripts it to. */
async function setup(
  options: {
    secretsKey?: string | undefined;
    prefix?: string;
    processEnv?: NodeJS.ProcessEnv;
    config?: (url: string) => ServicesConfig;
  } = {},
): Promise<Setup> {
  const downstream = await startDownstream();
  onTestFinished(() => downstream.close());
  const prefix = options.prefix ?? uniquePrefix();
  const config = (options.config ?? servicesConfig)(downstream.url);
  const api = await startTestApi({
    redisUrl: redis.url,
    prefix,
    config,
    ...('secretsKey' in options
      ? options.secretsKey === undefined
        ? {}
        : { secretsKey: options.secretsKey }
      : { secretsKey: KEY }),
    ...(options.processEnv === undefined ? {} : { processEnv: options.processEnv }),
  });
  const texts: string[] = [];
  return {
    api,
    downstream,
    prefix,
    config,
    texts,
    async call(method, path, callOptions = {}) {
      const response = await api.request(method, path, { token: TOKENS.admin, ...callOptions });
      texts.push(`${method} ${path} ${response.status} ${[...response.headers].join(' ')}\n${response.text}`);
      return response;
    },
  };
}

/** No value in any answer or log line, and the process Scrubber knows each one that reached the API. */
function expectNoValueLeaked(s: Setup, values: readonly string[]): void {
  const seen = [...s.texts, ...s.api.logs].join('\n');
  for (const value of values) {
    expect(seen).not.toContain(value);
    expect(seen).not.toContain(JSON.stringify(value).slice(1, -1));
    expect(seen).not.toContain(Buffer.from(value).toString('base64'));
  }
}

const enc = encodeURIComponent;

describe('secret keys in the path', () => {
  it('takes a tenant key as one URL-encoded segment (find-my-way decodes %2F in a parameter)', async () => {
    const s = await setup();
    const put = await s.call('PUT', `/v1/secrets/${enc('tenant/acme/crm_key')}`, {
      body: { value: VALUES.acme },
    });
    expect(put.status).toBe(201);
    expect(put.body).toEqual({ key: 'tenant/acme/crm_key', version: 1, state: 'current' });
    // Lower-case escapes too, as some clients write them.
    const shown = await s.call('GET', '/v1/secrets/tenant%2facme%2fcrm_key');
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({
      key: 'tenant/acme/crm_key',
      name: 'crm_key',
      tenant: 'acme',
      usedBy: ['crm'],
      definedIn: ['store'],
      current: { version: 1 },
      previous: [],
    });
    // Unencoded, the slashes are path separators: no such route.
    const unencoded = await s.call('GET', '/v1/secrets/tenant/acme/crm_key');
    expect(unencoded.status).toBe(404);
    expect(unencoded.body.error.type).toBe('NotFoundError');
    expectNoValueLeaked(s, [VALUES.acme]);
  });

  it.each([
    ['Bad!Key', 'secret name "Bad!Key"'],
    [enc('tenant/a b/crm_key'), 'tenant: "a b"'],
    [enc('tenant/acme'), 'tenant/<tenant>/<name>'],
    [enc('tenant/acme/x/y'), 'tenant/<tenant>/<name>'],
    ['x'.repeat(200), 'secret name'],
  ])('refuses the key %s with 400 naming key', async (key, message) => {
    const s = await setup();
    for (const [method, path, body] of [
      ['GET', `/v1/secrets/${key}`, undefined],
      ['PUT', `/v1/secrets/${key}`, { value: VALUES.current }],
      ['POST', `/v1/secrets/${key}/stage`, { value: VALUES.current }],
      ['POST', `/v1/secrets/${key}/test`, { service: 'crm', operation: 'whoami' }],
      ['POST', `/v1/secrets/${key}/promote`, undefined],
      ['POST', `/v1/secrets/${key}/rollback`, undefined],
      ['DELETE', `/v1/secrets/${key}`, undefined],
    ] as const) {
      const response = await s.call(method, path, body === undefined ? {} : { body });
      expect({
        method,
        path: path.slice(0, 40),
        status: response.status,
        field: response.body.error.field,
      }).toEqual({ method, path: path.slice(0, 40), status: 400, field: 'key' });
      expect(response.body.error.type).toBe('ValidationError');
      expect(response.body.error.message).toContain(message);
    }
    expectNoValueLeaked(s, [VALUES.current]);
  });
});

describe('set, stage, test, promote, rollback, delete', () => {
  it('runs the rotation recipe: the test call uses the staged value while current is unchanged', async () => {
    const s = await setup();
    const store = new SecretStore({
      connection: s.api.connection,
      prefix: s.prefix,
      keyring: parseKeyring(KEY),
    });
    s.downstream.script(() => ({ status: 200, body: { ok: true } }));

    const set = await s.call('PUT', '/v1/secrets/crm_key', { body: { value: VALUES.current } });
    expect(set).toMatchObject({ status: 201, body: { key: 'crm_key', version: 1, state: 'current' } });
    const staged = await s.call('POST', '/v1/secrets/crm_key/stage', { body: { value: VALUES.staged } });
    expect(staged).toMatchObject({ status: 201, body: { key: 'crm_key', version: 2, state: 'staged' } });

    const shown = await s.call('GET', '/v1/secrets/crm_key');
    expect(shown.body).toMatchObject({
      key: 'crm_key',
      usedBy: ['crm'],
      definedIn: ['store'],
      current: { version: 1, keyId: expect.any(String), createdAt: expect.any(Number) },
      staged: { version: 2 },
      previous: [],
    });
    expect(shown.body.tenant).toBeUndefined();

    const tested = await s.call('POST', '/v1/secrets/crm_key/test', {
      body: { service: 'crm', operation: 'create', input: { email: 'ada@example.com' } },
    });
    expect(tested.status).toBe(200);
    expect(tested.body).toMatchObject({ outcome: 'completed', status: 200, body: { ok: true } });
    expect(tested.body.durationMs).toEqual(expect.any(Number));
    expect(s.downstream.requests).toHaveLength(1);
    expect(s.downstream.requests[0]).toMatchObject({ method: 'POST', url: '/contacts' });
    expect(s.downstream.requests[0]!.headers.authorization).toBe(`Bearer ${VALUES.staged}`);
    expect(JSON.parse(s.downstream.requests[0]!.body)).toEqual({ email: 'ada@example.com' });
    // The test changed nothing: current is still version 1 with its value, the candidate still staged.
    expect(await store.read('crm_key')).toBe(VALUES.current);
    expect((await store.info('crm_key'))?.staged?.version).toBe(2);
    // The API learnt both values for its log lines' scrubbing.
    expect(s.api.scrubber.scrub(`x ${VALUES.current} ${VALUES.staged}`)).toBe('x [redacted] [redacted]');

    const promoted = await s.call('POST', '/v1/secrets/crm_key/promote');
    expect(promoted).toMatchObject({ status: 200, body: { key: 'crm_key', version: 2 } });
    expect(await store.read('crm_key')).toBe(VALUES.staged);
    const again = await s.call('POST', '/v1/secrets/crm_key/promote');
    expect(again.status).toBe(409);
    expect(again.body.error).toMatchObject({
      type: 'ConflictError',
      message: expect.stringContaining('no staged version'),
    });
    const untestable = await s.call('POST', '/v1/secrets/crm_key/test', {
      body: { service: 'crm', operation: 'whoami' },
    });
    expect(untestable.status).toBe(409);
    expect(untestable.body.error.message).toContain('no staged version to test');

    const rolledBack = await s.call('POST', '/v1/secrets/crm_key/rollback');
    expect(rolledBack).toMatchObject({ status: 200, body: { key: 'crm_key', version: 1 } });
    expect(await store.read('crm_key')).toBe(VALUES.current);
    const noPrevious = await s.call('POST', '/v1/secrets/crm_key/rollback');
    expect(noPrevious.status).toBe(409);
    expect(noPrevious.body.error.message).toContain('no previous version');

    // One version: not the current one, not one that does not exist; a staged one goes.
    const isCurrent = await s.call('DELETE', '/v1/secrets/crm_key?version=1');
    expect(isCurrent.status).toBe(409);
    expect(isCurrent.body.error.message).toContain('that version is current');
    expect((await s.call('DELETE', '/v1/secrets/crm_key?version=99')).status).toBe(404);
    const third = await s.call('POST', '/v1/secrets/crm_key/stage', { body: { value: VALUES.third } });
    expect(third.body.version).toBe(3);
    const deletedVersion = await s.call('DELETE', '/v1/secrets/crm_key?version=3');
    expect(deletedVersion.status).toBe(204);
    expect(deletedVersion.text).toBe('');
    expect((await s.call('GET', '/v1/secrets/crm_key')).body.staged).toBeUndefined();
    const badVersion = await s.call('DELETE', '/v1/secrets/crm_key?version=latest');
    expect(badVersion.status).toBe(400);
    expect(badVersion.body.error.field).toBe('version');

    expect((await s.call('DELETE', '/v1/secrets/crm_key')).status).toBe(204);
    expect(await store.info('crm_key')).toBeUndefined();
    // Still referenced by crm: shown as defined nowhere, so an operator sees jobs will fail.
    const referenced = await s.call('GET', '/v1/secrets/crm_key');
    expect(referenced.status).toBe(200);
    expect(referenced.body).toMatchObject({ key: 'crm_key', usedBy: ['crm'], definedIn: [], previous: [] });
    expect(referenced.body.current).toBeUndefined();
    for (const [method, path] of [
      ['DELETE', '/v1/secrets/crm_key'],
      ['POST', '/v1/secrets/crm_key/promote'],
      ['POST', '/v1/secrets/crm_key/rollback'],
      ['GET', '/v1/secrets/nobody_uses_it'],
    ] as const) {
      const missing = await s.call(method, path);
      expect({ path, status: missing.status, type: missing.body.error.type }).toEqual({
        path,
        status: 404,
        type: 'NotFoundError',
      });
    }
    expectNoValueLeaked(s, [VALUES.current, VALUES.staged, VALUES.third]);
  });

  it('lists every stored and referenced secret with where it is defined, never a value', async () => {
    const s = await setup({ processEnv: { FERRY_SECRET_OTHER_KEY: VALUES.other } });
    await s.call('PUT', '/v1/secrets/crm_key', { body: { value: VALUES.current } });
    await s.call('PUT', `/v1/secrets/${enc('tenant/acme/crm_key')}`, { body: { value: VALUES.acme } });
    await s.call('POST', '/v1/secrets/unused.key/stage', { body: { value: VALUES.third } });
    const list = await s.call('GET', '/v1/secrets');
    expect(list.status).toBe(200);
    const byKey = Object.fromEntries(
      (list.body.secrets as { key: string }[]).map((secret) => [secret.key, secret]),
    );
    expect(Object.keys(byKey)).toEqual(['crm_key', 'other_key', 'tenant/acme/crm_key', 'unused.key']);
    expect(byKey['crm_key']).toMatchObject({
      usedBy: ['crm'],
      definedIn: ['store'],
      current: { version: 1 },
    });
    expect(byKey['other_key']).toMatchObject({ usedBy: ['other'], definedIn: ['env'], previous: [] });
    expect(byKey['tenant/acme/crm_key']).toMatchObject({ tenant: 'acme', usedBy: ['crm'] });
    expect(byKey['unused.key']).toMatchObject({ usedBy: [], definedIn: [], staged: { version: 1 } });
    expectNoValueLeaked(s, [VALUES.current, VALUES.acme, VALUES.third, VALUES.other]);
  });

  it('reports a failed call as the outcome, and scrubs a value the service echoes', async () => {
    const s = await setup();
    await s.call('PUT', '/v1/secrets/crm_key', { body: { value: VALUES.current } });
    await s.call('POST', '/v1/secrets/crm_key/stage', { body: { value: VALUES.staged } });
    // A service that echoes the Authorization header, and refuses the candidate.
    s.downstream.script((request) =>
      request.url === '/whoami'
        ? { status: 200, body: { seen: request.headers.authorization } }
        : { status: 401, body: { error: `bad token ${request.headers.authorization ?? ''}` } },
    );
    const echoed = await s.call('POST', '/v1/secrets/crm_key/test', {
      body: { service: 'crm', operation: 'whoami' },
    });
    expect(echoed.body).toMatchObject({
      outcome: 'completed',
      status: 200,
      body: { seen: 'Bearer [redacted]' },
    });
    const refused = await s.call('POST', '/v1/secrets/crm_key/test', {
      body: { service: 'crm', operation: 'create', input: {} },
    });
    expect(refused.status).toBe(200);
    expect(refused.body).toMatchObject({ outcome: 'failed', error: { status: 401 } });
    expect(refused.body.error.type).toMatch(/Error$/);
    expectNoValueLeaked(s, [VALUES.current, VALUES.staged]);
  });

  it('refuses a malformed body or test request naming the field, without echoing the value', async () => {
    const s = await setup();
    await s.call('POST', '/v1/secrets/crm_key/stage', { body: { value: VALUES.staged } });
    for (const [path, body, field] of [
      ['/v1/secrets/crm_key', {}, 'value'],
      ['/v1/secrets/crm_key', { value: '' }, 'value'],
      ['/v1/secrets/crm_key', { value: 42 }, 'value'],
      ['/v1/secrets/crm_key', { value: 'x'.repeat(64 * 1024 + 1) }, 'value'],
      ['/v1/secrets/crm_key', { value: VALUES.current, extra: 1 }, 'body'],
      ['/v1/secrets/crm_key/stage', {}, 'value'],
      // Not JSON, the value unquoted: V8's message would quote it.
      ['/v1/secrets/crm_key', `{"value": ${VALUES.current}}`, 'body'],
      ['/v1/secrets/crm_key/stage', `{"value": "${VALUES.quoted}`, 'body'],
      ['/v1/secrets/crm_key/test', { operation: 'whoami' }, 'service'],
      ['/v1/secrets/crm_key/test', { service: 'crm' }, 'operation'],
      ['/v1/secrets/crm_key/test', { service: 'crm', operation: 'whoami', tenant: 'a b' }, 'tenant'],
    ] as const) {
      const method = path.endsWith('/stage') || path.endsWith('/test') ? 'POST' : 'PUT';
      const response = await s.call(method, path, { body });
      expect({ path, status: response.status, field: response.body.error.field }).toEqual({
        path,
        status: 400,
        field,
      });
      expect(response.body.error.type).toBe('ValidationError');
    }
    for (const [body, field] of [
      [{ service: 'nope', operation: 'whoami' }, 'service'],
      [{ service: 'crm', operation: 'nope' }, 'operation'],
      [{ service: 'other', operation: 'ping' }, 'key'],
    ] as const) {
      const response = await s.call('POST', '/v1/secrets/crm_key/test', { body });
      expect({ body, status: response.status, field: response.body.error.field }).toEqual({
        body,
        status: 422,
        field,
      });
    }
    expect(s.downstream.requests).toHaveLength(0);
    expectNoValueLeaked(s, [VALUES.current, VALUES.staged, VALUES.quoted]);
  });
});

describe('without FERRY_SECRETS_KEY', () => {
  it('lists, promotes, rolls back and deletes; set, stage, test and reencrypt answer 409 naming it', async () => {
    const keyed = await setup();
    await keyed.call('PUT', '/v1/secrets/crm_key', { body: { value: VALUES.current } });
    await keyed.call('POST', '/v1/secrets/crm_key/stage', { body: { value: VALUES.staged } });
    const s = await setup({ secretsKey: undefined, prefix: keyed.prefix });

    const list = await s.call('GET', '/v1/secrets');
    expect(list.status).toBe(200);
    expect(list.body.secrets.find((secret: { key: string }) => secret.key === 'crm_key')).toMatchObject({
      definedIn: ['store'],
      current: { version: 1 },
      staged: { version: 2 },
    });
    for (const [method, path, body] of [
      ['PUT', '/v1/secrets/crm_key', { value: VALUES.third }],
      ['POST', '/v1/secrets/crm_key/stage', { value: VALUES.third }],
      ['POST', '/v1/secrets/crm_key/test', { service: 'crm', operation: 'whoami' }],
      ['POST', '/v1/secrets/reencrypt', undefined],
    ] as const) {
      const response = await s.call(method, path, body === undefined ? {} : { body });
      expect({ path, status: response.status, type: response.body.error.type }).toEqual({
        path,
        status: 409,
        type: 'ConflictError',
      });
      expect(response.body.error.message).toContain('FERRY_SECRETS_KEY');
    }
    expect((await s.call('POST', '/v1/secrets/crm_key/promote')).body).toEqual({
      key: 'crm_key',
      version: 2,
    });
    expect((await s.call('POST', '/v1/secrets/crm_key/rollback')).body).toEqual({
      key: 'crm_key',
      version: 1,
    });
    expect((await s.call('DELETE', '/v1/secrets/crm_key')).status).toBe(204);
    expect(s.downstream.requests).toHaveLength(0);
    expectNoValueLeaked(s, [VALUES.current, VALUES.staged, VALUES.third]);
    expectNoValueLeaked(keyed, [VALUES.current, VALUES.staged]);
  });
});

describe('reencrypt', () => {
  it('seals every version under the new first master key, and reports it', async () => {
    const oldKey = `old:${randomBytes(32).toString('hex')}`;
    const newKey = `new:${randomBytes(32).toString('hex')}`;
    const before = await setup({ secretsKey: oldKey });
    await before.call('PUT', '/v1/secrets/crm_key', { body: { value: VALUES.current } });
    await before.call('POST', '/v1/secrets/crm_key/stage', { body: { value: VALUES.staged } });
    const s = await setup({ secretsKey: `${newKey},${oldKey}`, prefix: before.prefix });
    const report = await s.call('POST', '/v1/secrets/reencrypt');
    expect(report).toMatchObject({ status: 200, body: { resealed: 2, current: 0, failed: [] } });
    expect((await s.call('POST', '/v1/secrets/reencrypt')).body).toEqual({
      resealed: 0,
      current: 2,
      failed: [],
    });
    const shown = await s.call('GET', '/v1/secrets/crm_key');
    expect(shown.body).toMatchObject({ current: { keyId: 'new' }, staged: { keyId: 'new' } });
    const store = new SecretStore({
      connection: s.api.connection,
      prefix: s.prefix,
      keyring: parseKeyring(newKey),
    });
    expect(await store.read('crm_key')).toBe(VALUES.current);
    expectNoValueLeaked(s, [VALUES.current, VALUES.staged]);
  });
});

describe('limited admin tokens', () => {
  it('a tenant-limited admin may not set a secret a baseUrl reads: only an unrestricted admin says where calls go', async () => {
    const s = await setup({
      config: (url) =>
        parseServicesConfig(
          {
            services: {
              regional: {
                baseUrl: '{{ secrets.region_url }}',
                auth: { type: 'bearer', token: '{{ secrets.crm_key }}' },
                operations: { ping: { method: 'GET', path: `/ping?from=${encodeURIComponent(url)}` } },
              },
            },
          },
          { env: {} },
        ),
    });
    const redirect = await s.call('PUT', `/v1/secrets/${enc('tenant/acme/region_url')}`, {
      token: TOKENS.acmeAdmin,
      body: { value: 'https://attacker.example' },
    });
    expect(redirect.status).toBe(403);
    expect(redirect.body.error.message).toContain('read by service "regional"\'s baseUrl');
    const staged = await s.call('POST', `/v1/secrets/${enc('tenant/acme/region_url')}/stage`, {
      token: TOKENS.acmeAdmin,
      body: { value: 'https://attacker.example' },
    });
    expect(staged.status).toBe(403);
    // Its own credential is still its own to set; an unrestricted admin sets the URL.
    const own = await s.call('PUT', `/v1/secrets/${enc('tenant/acme/crm_key')}`, {
      token: TOKENS.acmeAdmin,
      body: { value: VALUES.acme },
    });
    expect(own.status).toBe(201);
    const admin = await s.call('PUT', `/v1/secrets/${enc('tenant/acme/region_url')}`, {
      body: { value: 'https://acme.api.example' },
    });
    expect(admin.status).toBe(201);
  });

  it('a tenant-limited admin may not set a secret a proxy: or tls.ca/servername reads: it would choose who sees the calls', async () => {
    const s = await setup({
      config: () =>
        parseServicesConfig(
          {
            services: {
              bank: {
                baseUrl: 'https://bank.example',
                auth: { type: 'bearer', token: '{{ secrets.crm_key }}' },
                proxy: '{{ secrets.egress_proxy }}',
                tls: {
                  ca: '{{ secrets.bank_ca }}',
                  servername: '{{ secrets.bank_sni }}',
                  cert: '{{ secrets.bank_client }}',
                  key: '{{ secrets.bank_client }}',
                },
                operations: { ping: { method: 'GET', path: '/ping' } },
              },
            },
          },
          { env: {} },
        ),
    });
    // A tenant's own proxy would see (and, with its own CA, read) every call of the tenant, the global
    // credentials they carry included, and the proxy's address is not under the egress policy.
    for (const [name, part] of [
      ['egress_proxy', 'proxy'],
      ['bank_ca', 'tls.ca'],
      ['bank_sni', 'tls.servername'],
    ] as const) {
      for (const path of [
        `/v1/secrets/${enc(`tenant/acme/${name}`)}`,
        `/v1/secrets/${enc(`tenant/acme/${name}`)}/stage`,
      ]) {
        const refused = await s.call(path.endsWith('/stage') ? 'POST' : 'PUT', path, {
          token: TOKENS.acmeAdmin,
          body: { value: 'http://attacker.example:3128' },
        });
        expect({ path, status: refused.status }).toEqual({ path, status: 403 });
        expect(refused.body.error.message).toContain(`read by service "bank"'s ${part}`);
      }
    }
    // Its own client certificate is its own to set.
    const own = await s.call('PUT', `/v1/secrets/${enc('tenant/acme/bank_client')}`, {
      token: TOKENS.acmeAdmin,
      body: { value: VALUES.acme },
    });
    expect(own.status).toBe(201);
  });

  it('a tenant-limited admin touches only its tenants’ keys, and lists only those', async () => {
    const s = await setup();
    await s.call('PUT', '/v1/secrets/crm_key', { body: { value: VALUES.current } });
    await s.call('PUT', `/v1/secrets/${enc('tenant/globex/crm_key')}`, { body: { value: VALUES.third } });
    const acme = (method: string, path: string, body?: unknown): ReturnType<Setup['call']> =>
      s.call(method, path, { token: TOKENS.acmeAdmin, ...(body === undefined ? {} : { body }) });

    const own = enc('tenant/acme/crm_key');
    expect((await acme('PUT', `/v1/secrets/${own}`, { value: VALUES.acme })).status).toBe(201);
    expect((await acme('POST', `/v1/secrets/${own}/stage`, { value: VALUES.staged })).status).toBe(201);
    s.downstream.script(() => ({ status: 204 }));
    const tested = await acme('POST', `/v1/secrets/${own}/test`, { service: 'crm', operation: 'whoami' });
    expect(tested.body).toMatchObject({ outcome: 'completed', status: 204 });
    expect(s.downstream.requests.at(-1)?.headers.authorization).toBe(`Bearer ${VALUES.staged}`);
    expect((await acme('POST', `/v1/secrets/${own}/promote`)).status).toBe(200);
    expect((await acme('POST', `/v1/secrets/${own}/rollback`)).status).toBe(200);
    expect((await acme('GET', `/v1/secrets/${own}`)).status).toBe(200);

    const list = await acme('GET', '/v1/secrets');
    expect(list.body.secrets.map((secret: { key: string }) => secret.key)).toEqual(['tenant/acme/crm_key']);

    for (const [method, path, body] of [
      ['GET', '/v1/secrets/crm_key', undefined],
      ['PUT', '/v1/secrets/crm_key', { value: VALUES.third }],
      ['POST', '/v1/secrets/crm_key/stage', { value: VALUES.third }],
      ['POST', '/v1/secrets/crm_key/test', { service: 'crm', operation: 'whoami' }],
      ['POST', '/v1/secrets/crm_key/promote', undefined],
      ['POST', '/v1/secrets/crm_key/rollback', undefined],
      ['DELETE', '/v1/secrets/crm_key', undefined],
      ['GET', `/v1/secrets/${enc('tenant/globex/crm_key')}`, undefined],
      ['DELETE', `/v1/secrets/${enc('tenant/globex/crm_key')}`, undefined],
      ['POST', `/v1/secrets/${own}/test`, { service: 'crm', operation: 'whoami', tenant: 'globex' }],
      ['POST', '/v1/secrets/reencrypt', undefined],
    ] as const) {
      const response = await acme(method, path, body);
      expect({ method, path, status: response.status, type: response.body.error.type }).toEqual({
        method,
        path,
        status: 403,
        type: 'ForbiddenError',
      });
    }
    expect((await acme('DELETE', `/v1/secrets/${own}`)).status).toBe(204);
    // The others' secrets are as they were.
    expect((await s.call('GET', '/v1/secrets/crm_key')).body.current.version).toBe(1);
    expect((await s.call('GET', `/v1/secrets/${enc('tenant/globex/crm_key')}`)).status).toBe(200);
    expectNoValueLeaked(s, [VALUES.current, VALUES.third, VALUES.acme, VALUES.staged]);
  });

  it('a service-limited admin tests only with its services', async () => {
    const s = await setup();
    await s.call('POST', '/v1/secrets/other_key/stage', { body: { value: VALUES.other } });
    await s.call('POST', '/v1/secrets/crm_key/stage', { body: { value: VALUES.staged } });
    const denied = await s.call('POST', '/v1/secrets/crm_key/test', {
      token: TOKENS.otherServiceAdmin,
      body: { service: 'crm', operation: 'whoami' },
    });
    expect(denied.status).toBe(403);
    expect(denied.body.error.message).toContain('may not use service "crm"');
    const allowed = await s.call('POST', '/v1/secrets/other_key/test', {
      token: TOKENS.otherServiceAdmin,
      body: { service: 'other', operation: 'ping' },
    });
    expect(allowed.body).toMatchObject({ outcome: 'completed', status: 200 });
    expect(s.downstream.requests).toHaveLength(1);
    expect(s.downstream.requests[0]!.headers['x-api-key']).toBe(VALUES.other);
    expectNoValueLeaked(s, [VALUES.other, VALUES.staged]);
  });
});

describe('Redis down', () => {
  it('answers 503 + Retry-After on every secrets route', async () => {
    const server = await startPrivateRedis({ dir: `${redis.dir}-secrets-down`, appendfsync: 'no' });
    onTestFinished(() => server.stop());
    const api = await startTestApi({
      redisUrl: server.url,
      prefix: uniquePrefix(),
      config: servicesConfig('http://127.0.0.1:9'),
      secretsKey: KEY,
    });
    expect((await api.request('GET', '/v1/secrets', { token: TOKENS.admin })).status).toBe(200);
    await server.stop();
    for (const [method, path, body] of [
      ['GET', '/v1/secrets', undefined],
      ['GET', '/v1/secrets/crm_key', undefined],
      ['PUT', '/v1/secrets/crm_key', { value: VALUES.current }],
      ['POST', '/v1/secrets/crm_key/stage', { value: VALUES.current }],
      ['POST', '/v1/secrets/crm_key/test', { service: 'crm', operation: 'whoami' }],
      ['POST', '/v1/secrets/crm_key/promote', undefined],
      ['POST', '/v1/secrets/crm_key/rollback', undefined],
      ['DELETE', '/v1/secrets/crm_key', undefined],
      ['POST', '/v1/secrets/reencrypt', undefined],
    ] as const) {
      const response = await api.request(method, path, { token: TOKENS.admin, body });
      expect({ path, status: response.status, type: response.body?.error?.type }).toEqual({
        path,
        status: 503,
        type: 'UnavailableError',
      });
      expect(response.headers.get('retry-after')).toBe('5');
    }
    expect(api.logs.join('\n')).not.toContain(VALUES.current);
  });
});
