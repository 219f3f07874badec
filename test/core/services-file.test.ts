import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import {
  checkServicesFile,
  loadServicesFile,
  parseServicesConfig,
  parseServicesYaml,
  ServicesFileError,
  serviceUrlEnvName,
} from '../../src/core/services/load.ts';
import { SERVICE_DEFAULTS } from '../../src/core/services/schema.ts';
import type { ServiceConfig, TemplateContext } from '../../src/core/services/types.ts';
import { servicesFileIssues } from '../helpers/services-issues.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/services/', import.meta.url));
const VALID = join(FIXTURES, 'valid.yaml');
const INVALID = readdirSync(FIXTURES)
  .filter((file) => file.startsWith('invalid-') && file.endsWith('.yaml'))
  .sort();

/** The `# expect: <line>` comments a fixture starts with; `{file}` stands for its path. */
function expectedIssues(path: string): string[] {
  const lines = readFileSync(path, 'utf8').split('\n');
  const expected: string[] = [];
  for (const line of lines) {
    if (!line.startsWith('# expect: ')) break;
    expected.push(line.slice('# expect: '.length).replaceAll('{file}', path));
  }
  return expected;
}

const issuesOf = servicesFileIssues;

function context(input: unknown = {}, secrets: Record<string, string> = {}): TemplateContext {
  return {
    input,
    secrets: new Map(Object.entries(secrets)),
    tenant: 'acme',
    job: { id: 'j1', idempotencyKey: 'k1' },
  };
}

function minimal(service: Record<string, unknown> = {}): { services: Record<string, unknown> } {
  return {
    services: {
      crm: {
        baseUrl: 'https://api.crm.example.com',
        operations: { get: { method: 'GET', path: '/x' } },
        ...service,
      },
    },
  };
}

describe('valid.yaml', () => {
  async function load(): Promise<{ crm: ServiceConfig; mailer: ServiceConfig }> {
    const config = await loadServicesFile(VALID, {});
    expect(config.source).toBe(VALID);
    expect([...config.services.keys()]).toEqual(['crm', 'mailer']);
    return {
      crm: config.services.get('crm') as ServiceConfig,
      mailer: config.services.get('mailer') as ServiceConfig,
    };
  }

  it('merges defaults under each service, the service winning', async () => {
    const { crm, mailer } = await load();
    expect(crm.timeoutMs).toBe(5000);
    expect(mailer.timeoutMs).toBe(SERVICE_DEFAULTS.timeoutMs); // `timeoutMs:` left empty drops the default
    expect(crm.concurrency).toBe(20);
    expect(mailer.concurrency).toBe(SERVICE_DEFAULTS.concurrency);
    expect(crm.retry).toEqual({
      attempts: 5,
      delayMs: 500,
      maxDelayMs: 60_000,
      retryOn: [400, 409],
      maxRetryAfterMs: SERVICE_DEFAULTS.retry.maxRetryAfterMs,
      maxHoldMs: SERVICE_DEFAULTS.retry.maxHoldMs,
    });
    expect(mailer.retry.attempts).toBe(5);
    expect(mailer.retry.delayMs).toBe(SERVICE_DEFAULTS.retry.delayMs);
    expect(crm.breaker).toEqual({ ...SERVICE_DEFAULTS.breaker, volumeThreshold: 20 });
    expect(crm.rateLimit).toEqual({ max: 50, perMs: 1000 });
    expect(mailer.rateLimit).toBeUndefined();
    expect(crm.maxResponseBytes).toBe(2 * 1024 * 1024);
    expect(mailer.maxInputBytes).toBe(256 * 1024);
    expect([...crm.headers.keys()]).toEqual(['x-client', 'X-Tenant']);
    expect(crm.headers.get('x-client')?.render(context())).toBe('ferry-crm');
    expect(mailer.headers.get('X-Client')?.render(context())).toBe('ferry');
  });

  it('compiles auth, operations and templates', async () => {
    const { crm, mailer } = await load();
    expect(crm.baseUrl.render(context())).toBe('https://api.crm.example.com/v2');
    expect(crm.auth.type).toBe('bearer');
    expect(mailer.auth).toMatchObject({ type: 'apiKey', header: undefined, query: 'api_key' });
    expect(mailer.baseUrl.render(context({}, { mail_domain: 'mail.example.com' }))).toBe(
      'https://mail.example.com/api',
    );
    expect(crm.secretNames).toEqual(['crm_api_key', 'crm_region']);
    expect(mailer.secretNames).toEqual(['mail_domain', 'mail_key']);

    const get = crm.operations.get('getContact');
    expect(get?.method).toBe('GET');
    expect(get?.timeoutMs).toBe(2000);
    expect(get?.path.render(context({ id: 'a/b' }))).toBe('/contacts/a%2Fb');
    expect(crm.operations.get('createContact')?.timeoutMs).toBe(5000);

    const subscribe = crm.operations.get('subscribe');
    expect(subscribe?.body?.render(context({ email: 'a@b.c', tag: 'vip' }))).toEqual({
      email: 'a@b.c',
      source: 'ferry',
      tags: ['vip', 1],
    });
    expect(subscribe?.query.get('double_opt_in')?.render(context())).toBe(true);
    expect(subscribe?.query.get('region')?.render(context({}, { crm_region: 'eu' }))).toBe('eu');
  });

  it('is deep-frozen', async () => {
    const config = await loadServicesFile(VALID, {});
    const crm = config.services.get('crm') as ServiceConfig;
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(crm)).toBe(true);
    expect(Object.isFrozen(crm.retry)).toBe(true);
    expect(Object.isFrozen(crm.retry.retryOn)).toBe(true);
    expect(Object.isFrozen(crm.operations.get('getContact'))).toBe(true);
    expect(Object.isFrozen(crm.secretNames)).toBe(true);
    expect(() => (config.services as Map<string, ServiceConfig>).set('x', crm)).toThrow(TypeError);
    expect(() => (crm.operations as Map<string, unknown>).delete('getContact')).toThrow(TypeError);
    expect(() => (crm.headers as Map<string, unknown>).clear()).toThrow(TypeError);
    expect(() => {
      (crm as { timeoutMs: number }).timeoutMs = 1;
    }).toThrow(TypeError);
  });

  it('passes ferry config check', async () => {
    await expect(checkServicesFile(VALID, {})).resolves.toEqual({ ok: true, services: ['crm', 'mailer'] });
  });
});

describe('FERRY_SERVICE_<NAME>_URL', () => {
  it.each([
    ['crm', 'FERRY_SERVICE_CRM_URL'],
    ['crm-eu', 'FERRY_SERVICE_CRM_EU_URL'],
    ['a_b-2', 'FERRY_SERVICE_A_B_2_URL'],
  ])('%s → %s', (service, env) => {
    expect(serviceUrlEnvName(service)).toBe(env);
  });

  it('overrides baseUrl', async () => {
    const config = await loadServicesFile(VALID, { FERRY_SERVICE_CRM_URL: 'http://localhost:9999/sandbox/' });
    expect(config.services.get('crm')?.baseUrl.render(context())).toBe('http://localhost:9999/sandbox');
    expect(config.services.get('mailer')?.baseUrl.source).toBe('https://{{ secrets.mail_domain }}/api');
  });

  it('overrides a service with a dash, and ignores an empty value', () => {
    const doc = { services: { 'crm-eu': minimal().services['crm'] } };
    const env = { FERRY_SERVICE_CRM_EU_URL: 'https://sandbox.example.com' };
    expect(parseServicesConfig(doc, { env }).services.get('crm-eu')?.baseUrl.source).toBe(
      'https://sandbox.example.com',
    );
    const unset = parseServicesConfig(doc, { env: { FERRY_SERVICE_CRM_EU_URL: '' } });
    expect(unset.services.get('crm-eu')?.baseUrl.source).toBe('https://api.crm.example.com');
  });

  it('is validated like baseUrl, and the issue names the variable', () => {
    expect(
      issuesOf(() => parseServicesConfig(minimal(), { env: { FERRY_SERVICE_CRM_URL: 'ftp://x' } })),
    ).toEqual(['services.crm.baseUrl: must be an http(s) URL (value from FERRY_SERVICE_CRM_URL)']);
  });

  it('supplies a baseUrl the file leaves out', () => {
    const doc = { services: { crm: { operations: { get: { method: 'GET', path: '/x' } } } } };
    expect(issuesOf(() => parseServicesConfig(doc, {}))).toEqual([
      'services.crm.baseUrl: required (an http(s) URL)',
    ]);
    const config = parseServicesConfig(doc, { env: { FERRY_SERVICE_CRM_URL: 'https://env.example.com' } });
    expect(config.services.get('crm')?.baseUrl.source).toBe('https://env.example.com');
  });
});

describe('invalid services files', () => {
  it('has a fixture for every kind of mistake', () => {
    expect(INVALID.length).toBeGreaterThanOrEqual(8);
  });

  it.each(INVALID)('%s fails with exactly the issues its first lines name', async (file) => {
    const path = join(FIXTURES, file);
    const expected = expectedIssues(path);
    expect(expected.length).toBeGreaterThan(0);
    const result = await checkServicesFile(path, {});
    expect(result.ok).toBe(false);
    const actual = result.ok ? [] : result.issues.map((issue) => `${issue.path}: ${issue.message}`);
    expect([...actual].sort()).toEqual([...expected].sort());
  });

  it('throws one ServicesFileError whose message has one line per issue', async () => {
    const path = join(FIXTURES, 'invalid-many.yaml');
    const error: unknown = await loadServicesFile(path, {}).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ServicesFileError);
    const { issues, message } = error as ServicesFileError;
    expect(message.split('\n')).toEqual(issues.map((issue) => `${issue.path}: ${issue.message}`));
    expect(issues.length).toBe(expectedIssues(path).length);
  });

  it('names a missing file', async () => {
    const path = join(FIXTURES, 'does-not-exist.yaml');
    await expect(checkServicesFile(path, {})).resolves.toEqual({
      ok: false,
      issues: [{ path, message: 'services file not found' }],
    });
  });

  it.each([
    [null, '(root): must be a mapping with a services: key'],
    [[], '(root): must be a mapping with a services: key'],
    [{}, 'services: required (a mapping of service names to services)'],
    [{ services: [] }, 'services: must be a mapping of service names to services'],
    [{ services: {} }, 'services: must define at least one service'],
    [{ services: { crm: null } }, 'services.crm: must be a mapping'],
    [{ defaults: 5, ...minimal() }, 'defaults: must be a mapping'],
  ])('refuses the document %j', (doc, expected) => {
    expect(issuesOf(() => parseServicesConfig(doc, {}))).toEqual([expected]);
  });
});

describe('unknown options suggest the right one', () => {
  it.each([
    ['timeoutMS', 'timeoutMs'],
    ['timeout', 'timeoutMs'],
    ['baseURL', 'baseUrl'],
    ['url', 'baseUrl'],
    ['concurency', 'concurrency'],
    ['retries', 'retry.attempts'],
    ['maxResponseBytez', 'maxResponseBytes'],
    ['operation', 'operations'],
  ])('%s → %s', (key, suggestion) => {
    expect(issuesOf(() => parseServicesConfig(minimal({ [key]: 1 }), {}))).toContain(
      `services.crm.${key}: unknown option (did you mean ${suggestion}?)`,
    );
  });

  it('inside operations, retry and auth too', () => {
    const doc = minimal({
      retry: { attempt: 3 },
      auth: { type: 'bearer', tokn: 'x' },
      operations: { get: { methd: 'GET', path: '/x' } },
    });
    expect(issuesOf(() => parseServicesConfig(doc, {})).sort()).toEqual(
      [
        'services.crm.retry.attempt: unknown option (did you mean attempts?)',
        'services.crm.auth.tokn: unknown option (did you mean token?)',
        'services.crm.auth.token: required (a string)',
        'services.crm.operations.get.methd: unknown option (did you mean method?)',
        'services.crm.operations.get.method: required (one of GET, POST, PUT, PATCH, DELETE, HEAD)',
      ].sort(),
    );
  });

  it('lists the known options when nothing is close', () => {
    expect(
      issuesOf(() => parseServicesConfig(minimal({ rateLimit: { max: 1, perMs: 1, xyzzy: 1 } }), {})),
    ).toEqual(['services.crm.rateLimit.xyzzy: unknown option (expected one of max, perMs)']);
  });

  it('refuses the one service name whose queue would be the dead-letter queue', () => {
    const services = {
      'dead-letter': { baseUrl: 'https://a.example.com', operations: { x: { method: 'GET', path: '/' } } },
    };
    expect(issuesOf(() => parseServicesConfig({ services }, {}))).toEqual([
      'services.dead-letter: "dead-letter" is reserved: its queue would be the dead-letter queue',
    ]);
  });

  it('does not let a __proto__ key pollute anything', () => {
    const text = 'services:\n  crm:\n    baseUrl: https://a.example.com\n    __proto__: { polluted: true }\n';
    expect(issuesOf(() => parseServicesYaml(text)).sort()).toEqual([
      'services.crm.__proto__: unknown option (expected one of baseUrl, timeoutMs, concurrency, ' +
        'tenantConcurrency, rateLimit, auth, ' +
        'headers, retry, breaker, maxResponseBytes, maxInputBytes, tenantSecrets, egress, onFailure, fallback, ' +
        'signing, proxy, tls, sensitive, operations)',
      'services.crm.operations: required (at least one operation)',
    ]);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });
});

describe('producers never choose where a call goes', () => {
  it.each<[string, Record<string, unknown>, string]>([
    ['baseUrl', { baseUrl: 'https://{{ input.host }}' }, 'baseUrl'],
    ['bearer token', { auth: { type: 'bearer', token: '{{ input.t }}' } }, 'auth.token'],
    [
      'basic username',
      { auth: { type: 'basic', username: '{{ input.u }}', password: 'p' } },
      'auth.username',
    ],
    ['apiKey value', { auth: { type: 'apiKey', header: 'X-Key', value: 'k{{ input.k }}' } }, 'auth.value'],
    [
      'oauth2 client secret',
      {
        auth: {
          type: 'oauth2',
          tokenUrl: 'https://id.example.com/token',
          clientId: 'c',
          clientSecret: '{{ input.s }}',
        },
      },
      'auth.clientSecret',
    ],
  ])('%s may not read input', (_, service, field) => {
    const [issue] = issuesOf(() => parseServicesConfig(minimal(service), {}));
    expect(issue).toMatch(
      new RegExp(
        `^services\\.crm\\.${field.replace('.', '\\.')}: ".*" reads input, which is not allowed here`,
      ),
    );
  });

  it('neither may an env override', () => {
    expect(
      issuesOf(() =>
        parseServicesConfig(minimal(), { env: { FERRY_SERVICE_CRM_URL: 'https://{{ input.host }}' } }),
      ),
    ).toEqual([
      'services.crm.baseUrl: "https://{{ input.host }}" reads input, which is not allowed here (producers never choose ' +
        'where a call goes) (value from FERRY_SERVICE_CRM_URL)',
    ]);
  });

  it.each([
    ['//evil.example.com/x', 'must not start with "//" (it would name another host)'],
    ['x/{{ input.id }}', 'must start with "/"'],
  ])('an operation path %s is refused', (path, message) => {
    const doc = minimal({ operations: { get: { method: 'GET', path } } });
    expect(issuesOf(() => parseServicesConfig(doc, {}))).toEqual([
      `services.crm.operations.get.path: ${message}`,
    ]);
  });

  it('a secret may choose the host', () => {
    const config = parseServicesConfig(minimal({ baseUrl: '{{ secrets.crm_url }}' }), {});
    expect(config.services.get('crm')?.secretNames).toEqual(['crm_url']);
  });
});

describe('YAML', () => {
  it('supports anchors in x- extension keys and << merge keys, and keeps dates as strings', () => {
    const text = [
      'x-operation: &op { method: GET, path: /x }',
      'services:',
      '  crm:',
      '    baseUrl: https://api.crm.example.com',
      '    headers: { X-Since: 2024-01-01 }',
      '    operations:',
      '      get: { <<: *op, timeoutMs: 100 }',
    ].join('\n');
    const crm = parseServicesYaml(text).services.get('crm');
    expect(crm?.operations.get('get')).toMatchObject({ method: 'GET', timeoutMs: 100 });
    expect(crm?.headers.get('X-Since')?.render(context())).toBe('2024-01-01');
  });

  it('reports other unknown top-level keys', () => {
    expect(issuesOf(() => parseServicesConfig({ ...minimal(), servce: {} }, {}))).toEqual([
      'servce: unknown option (did you mean services?)',
    ]);
  });
});

describe('oauth2 auth', () => {
  const oauth2 = (extra: Record<string, unknown> = {}) =>
    minimal({
      auth: {
        type: 'oauth2',
        tokenUrl: 'https://id.example.com/oauth/token',
        clientId: '{{ secrets.crm_client_id }}',
        clientSecret: '{{ secrets.crm_client_secret }}',
        ...extra,
      },
    });

  it('compiles params and clientAuth, with Basic client auth by default', () => {
    const crm = parseServicesConfig(oauth2({ scope: 'a b', params: { resource: 'urn:crm' } })).services.get(
      'crm',
    )!;
    expect(crm.auth).toMatchObject({
      type: 'oauth2',
      scope: 'a b',
      audience: undefined,
      clientAuth: 'basic',
    });
    expect(crm.auth.type === 'oauth2' && [...crm.auth.params]).toEqual([['resource', 'urn:crm']]);
    expect(crm.secretNames).toEqual(['crm_client_id', 'crm_client_secret']);
    const body = parseServicesConfig(oauth2({ clientAuth: 'body' })).services.get('crm')!;
    expect(body.auth).toMatchObject({ clientAuth: 'body' });
    expect(body.auth.type === 'oauth2' && body.auth.params.size).toBe(0);
  });

  it.each<[string, Record<string, unknown>, string[]]>([
    [
      'an unknown clientAuth',
      { clientAuth: 'post' },
      ['services.crm.auth.clientAuth: must be one of basic, body'],
    ],
    [
      'params Ferry sets itself',
      { params: { grant_type: 'password', client_secret: 'x', scope: 'y' } },
      [
        'services.crm.auth.params.client_secret: is set by Ferry (use clientSecret)',
        'services.crm.auth.params.grant_type: is set by Ferry (always client_credentials)',
        'services.crm.auth.params.scope: is set by Ferry (use scope)',
      ],
    ],
    [
      'a template in params',
      { params: { resource: '{{ secrets.x }}' } },
      ['services.crm.auth.params.resource: must be plain text (templates are not supported here)'],
    ],
    ['a number in params', { params: { ttl: 60 } }, ['services.crm.auth.params.ttl: must be a string']],
    [
      'params not a mapping',
      { params: ['a'] },
      ['services.crm.auth.params: must be a mapping of form field names to strings'],
    ],
    [
      'a templated tokenUrl',
      { tokenUrl: 'https://{{ secrets.idp }}/token' },
      ['services.crm.auth.tokenUrl: must be a static URL (templates are not supported here)'],
    ],
    [
      'a typo',
      { clientAuht: 'body' },
      ['services.crm.auth.clientAuht: unknown option (did you mean clientAuth?)'],
    ],
  ])('refuses %s, naming the path', (_, extra, expected) => {
    expect(issuesOf(() => parseServicesConfig(oauth2(extra), {})).sort()).toEqual(expected);
  });
});

describe('egress (issue 13)', () => {
  it('reads egress.allowPrivate and egress.allow, merged from defaults', () => {
    const config = parseServicesConfig({
      defaults: { egress: { allow: ['10.1.2.0/24'] } },
      services: {
        crm: {
          baseUrl: 'https://{{ secrets.crm_host }}',
          egress: { allowPrivate: true, allow: ['api.internal', 'fd00::/8'] },
          operations: { get: { method: 'GET', path: '/x' } },
        },
        mail: {
          baseUrl: 'https://{{ secrets.mail_host }}',
          operations: { get: { method: 'GET', path: '/x' } },
        },
        plain: { baseUrl: 'https://plain.example.com', operations: { get: { method: 'GET', path: '/x' } } },
      },
    });
    const crm = config.services.get('crm')!;
    expect(crm.egress.allowPrivate).toBe(true);
    expect(crm.egress.allow.map((entry) => [entry.kind, entry.source])).toEqual([
      ['host', 'api.internal'],
      ['cidr', 'fd00::/8'],
    ]);
    const mail = config.services.get('mail')!;
    expect(mail.egress.allowPrivate).toBe(false);
    expect(mail.egress.allow.map((entry) => entry.source)).toEqual(['10.1.2.0/24']);
  });

  it('has no allowances by default', () => {
    const crm = parseServicesConfig(minimal(), {}).services.get('crm')!;
    expect(crm.egress).toEqual({ allowPrivate: false, allow: [] });
  });

  it('names the path of every bad egress value', () => {
    const issues = issuesOf(() =>
      parseServicesConfig(
        minimal({
          egress: { allowPrivate: 'yes', allow: ['10.1.2.0/33', 'api.internal', 'http://x', 7], deny: [] },
        }),
        {},
      ),
    );
    expect(issues.sort()).toEqual([
      'services.crm.egress.allowPrivate: must be true or false',
      'services.crm.egress.allow[0]: not a CIDR or host name',
      'services.crm.egress.allow[2]: not a CIDR or host name',
      'services.crm.egress.allow[3]: must be a CIDR or host name',
      'services.crm.egress.deny: unknown option (expected one of allowPrivate, allow)',
    ]);
    expect(issuesOf(() => parseServicesConfig(minimal({ egress: { allow: 'x' } }), {}))).toEqual([
      'services.crm.egress.allow: must be a list of CIDRs and host names',
    ]);
  });

  it.each([
    ['http://127.0.0.1:4010', 'http://127.0.0.1:4010'],
    ['https://api.example.com/v2/', 'https://api.example.com'],
    ['https://api.example.com/{{ secrets.account }}', 'https://api.example.com'],
    ['https://{{ secrets.host }}/v2', undefined],
    ['https://{{ secrets.host }}.example.com', undefined],
    ['http://127.0.0.1:{{ secrets.port }}', undefined],
    ['{{ secrets.url }}', undefined],
  ])('baseUrl %s has the literal origin %s', (baseUrl, origin) => {
    const crm = parseServicesConfig(minimal({ baseUrl }), {}).services.get('crm')!;
    expect(crm.literalOrigin).toBe(origin);
    expect(crm.baseUrlFrom).toBe('file');
  });

  it('a FERRY_SERVICE_<NAME>_URL override is never a literal origin', () => {
    const env = { FERRY_SERVICE_CRM_URL: 'http://127.0.0.1:9999' };
    const crm = parseServicesConfig(minimal(), { env }).services.get('crm')!;
    expect(crm.baseUrlFrom).toBe('env');
    expect(crm.literalOrigin).toBeUndefined();
  });

  it('refuses userinfo in an env override, naming the variable', () => {
    const env = { FERRY_SERVICE_CRM_URL: 'http://user:pw@127.0.0.1:9999' };
    expect(issuesOf(() => parseServicesConfig(minimal(), { env }))).toEqual([
      'services.crm.baseUrl: must not contain credentials (use auth) (value from FERRY_SERVICE_CRM_URL)',
    ]);
  });
});

describe('tenantConcurrency (issue 17)', () => {
  it('is read per service, from defaults too, and unset by default', () => {
    const config = parseServicesConfig({
      defaults: { tenantConcurrency: 4 },
      services: {
        crm: { ...minimal().services.crm!, tenantConcurrency: 2 } as object,
        mail: minimal().services.crm,
      },
    });
    expect(config.services.get('crm')!.tenantConcurrency).toBe(2);
    expect(config.services.get('mail')!.tenantConcurrency).toBe(4);
    expect(parseServicesConfig(minimal(), {}).services.get('crm')!.tenantConcurrency).toBeUndefined();
  });

  it('must be a whole number of at least 1', () => {
    for (const bad of [0, 1.5, -1, 'two']) {
      const issues = issuesOf(() => parseServicesConfig(minimal({ tenantConcurrency: bad }), {}));
      expect(issues.length, String(bad)).toBe(1);
      expect(issues[0]).toMatch(/^services\.crm\.tenantConcurrency: /);
    }
  });
});
