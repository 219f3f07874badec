/**
 * authz-matrix: every route of the OpenAPI document the running `ferry api` serves (/docs/json), plus the
 * documented routes it does not list (/docs/json itself, Bull Board), called with a plausible request by eight
 * kinds of caller: no token, a malformed header, an unknown token, `jobs:read`, `jobs:write`, `admin`, `admin`
 * limited to another service, and `jobs:write` limited to another tenant. Each answer is held to the scope
 * rules of docs/api.md: 401 without a valid token, 403 for a missing scope or another service or tenant (404
 * where the docs hide another tenant's job), never 2xx where not allowed, never 5xx; an allowed caller is
 * never refused (401/403). A route the table below does not know is itself a violation: a new route must
 * say who may call it.
 */
import { generateMasterKey } from '../../src/secrets/crypto.ts';
import { answering, startDownstream } from '../downstream.ts';
import { type ApiToken, startApi, startWorker, stopProcess, workerEnv, writeServicesFile } from '../ferry.ts';
import { jsonRequest, type RawAnswer, rawRequest } from '../http.ts';
import { waitForValue, withLab } from '../lab.ts';
import { startRedisServer } from '../redis.ts';
import { scenarioRow } from '../rows.ts';
import type { Scenario, ScenarioOptions, ScenarioRow } from '../scenario.ts';

/** The service every request names, and the one the limited admin is limited to. */
const SERVICE = 'alpha';
const OTHER_SERVICE = 'beta';
const TENANT = 'acme';
const OTHER_TENANT = 'globex';
const SECRET_KEY = 'alpha_token';
/** A schedule of SERVICE, for the schedule routes. */
const SCHEDULE = 'alpha-yearly';

export const TOKEN_KINDS = [
  'none',
  'malformed',
  'unknown',
  'jobsRead',
  'jobsWrite',
  'admin',
  'adminOtherService',
  'writerOtherTenant',
] as const;
export type TokenKind = (typeof TOKEN_KINDS)[number];

const TOKENS = {
  jobsRead: `authz-reader-${'r'.repeat(20)}`,
  jobsWrite: `authz-writer-${'w'.repeat(20)}`,
  admin: `authz-admin-${'a'.repeat(20)}`,
  adminOtherService: `authz-admin-beta-${'b'.repeat(20)}`,
  writerOtherTenant: `authz-writer-globex-${'g'.repeat(20)}`,
};
const TOKEN_CONFIG: ApiToken[] = [
  { name: 'reader', token: TOKENS.jobsRead, scopes: ['jobs:read'] },
  { name: 'writer', token: TOKENS.jobsWrite, scopes: ['jobs:write'] },
  { name: 'admin', token: TOKENS.admin, scopes: ['admin'] },
  { name: 'admin-beta', token: TOKENS.adminOtherService, scopes: ['admin'], services: [OTHER_SERVICE] },
  { name: 'writer-globex', token: TOKENS.writerOtherTenant, scopes: ['jobs:write'], tenants: [OTHER_TENANT] },
];
/** Malformed Authorization headers, one per route in turn. */
const MALFORMED = [
  'Bearer',
  'Bearer ',
  'Token abc',
  'Basic !!!not-base64',
  `Bearer ${TOKENS.admin} extra`,
  `bearer  ${'x'.repeat(5000)}`,
  `Basic ${Buffer.from(`user:${TOKENS.admin}`).toString('base64')}`,
  TOKENS.admin,
];

type Scope = 'public' | 'any' | 'jobs:read' | 'jobs:write' | 'admin';

/** Who may call a route, as docs/api.md says, and a plausible request. */
interface RouteRule {
  scope: Scope;
  /** The request names SERVICE: a token limited to another service gets 403. */
  namesService: boolean;
  /** A token limited to tenants gets 403 even with the scope (it acts on every tenant). */
  wholeService?: boolean;
  /** A token limited to another tenant may get 404 (the docs hide another tenant's job) instead of 403. */
  tenantHidden?: boolean;
  /** Only an admin token without limits (Bull Board). */
  unlimitedAdmin?: boolean;
  /** Basic auth with the token as password is accepted (/docs). */
  acceptsBasic?: boolean;
  /** Lists: a token limited to another service must not see SERVICE in the answer. */
  filtersService?: boolean;
  /** A batch answers 200 with per-item refusals: refused means nothing accepted. */
  batch?: boolean;
  request(fixture: Fixture): Promise<Call> | Call;
}

interface Call {
  method: string;
  path: string;
  body?: unknown;
  headers?: Record<string, string>;
  /** An event stream: read the headers (and a moment of the body), then hang up. */
  stream?: boolean;
}

interface Fixture {
  /** A completed job of SERVICE, tenant TENANT. */
  completedJobId: string;
  /** A fresh waiting job that no worker takes (delayed an hour), for each cancel. */
  delayedJob(): Promise<string>;
  /** A dead letter of SERVICE, tenant TENANT, made once. */
  deadLetter(): Promise<string>;
  /** A new dead letter of SERVICE, tenant TENANT, for each delete. */
  freshDeadLetter(): Promise<string>;
}

const job = { service: SERVICE, operation: 'op', tenant: TENANT, input: { from: 'authz' } };

export const ROUTES: Record<string, RouteRule> = {
  'GET /healthz': {
    scope: 'public',
    namesService: false,
    request: () => ({ method: 'GET', path: '/healthz' }),
  },
  'GET /readyz': {
    scope: 'public',
    namesService: false,
    request: () => ({ method: 'GET', path: '/readyz' }),
  },
  'GET /metrics': {
    scope: 'jobs:read',
    namesService: false,
    request: () => ({ method: 'GET', path: '/metrics' }),
  },
  'POST /v1/jobs': {
    scope: 'jobs:write',
    namesService: true,
    request: () => ({ method: 'POST', path: '/v1/jobs', body: job }),
  },
  'POST /v1/jobs/batch': {
    scope: 'jobs:write',
    namesService: true,
    batch: true,
    request: () => ({ method: 'POST', path: '/v1/jobs/batch', body: { jobs: [job, job] } }),
  },
  'GET /v1/jobs/{service}/{id}': {
    scope: 'jobs:read',
    namesService: true,
    tenantHidden: true,
    request: (f) => ({ method: 'GET', path: `/v1/jobs/${SERVICE}/${f.completedJobId}` }),
  },
  'DELETE /v1/jobs/{service}/{id}': {
    scope: 'jobs:write',
    namesService: true,
    tenantHidden: true,
    request: async (f) => ({ method: 'DELETE', path: `/v1/jobs/${SERVICE}/${await f.delayedJob()}` }),
  },
  'GET /v1/jobs/{service}/{id}/events': {
    scope: 'jobs:read',
    namesService: true,
    tenantHidden: true,
    request: (f) => ({ method: 'GET', path: `/v1/jobs/${SERVICE}/${f.completedJobId}/events`, stream: true }),
  },
  'GET /v1/events': {
    scope: 'jobs:read',
    namesService: true,
    request: () => ({ method: 'GET', path: `/v1/events?service=${SERVICE}`, stream: true }),
  },
  'GET /v1/services': {
    scope: 'jobs:read',
    namesService: false,
    filtersService: true,
    request: () => ({ method: 'GET', path: '/v1/services' }),
  },
  'GET /v1/breakers': {
    scope: 'jobs:read',
    namesService: false,
    filtersService: true,
    request: () => ({ method: 'GET', path: '/v1/breakers' }),
  },
  'GET /v1/queues': {
    scope: 'jobs:read',
    namesService: false,
    filtersService: true,
    request: () => ({ method: 'GET', path: '/v1/queues' }),
  },
  'GET /v1/status': {
    scope: 'jobs:read',
    namesService: false,
    filtersService: true,
    request: () => ({ method: 'GET', path: '/v1/status' }),
  },
  'POST /v1/queues/{service}/pause': {
    scope: 'admin',
    namesService: true,
    request: () => ({ method: 'POST', path: `/v1/queues/${SERVICE}/pause` }),
  },
  'POST /v1/queues/{service}/resume': {
    scope: 'admin',
    namesService: true,
    request: () => ({ method: 'POST', path: `/v1/queues/${SERVICE}/resume` }),
  },
  'GET /v1/dead-letters': {
    scope: 'jobs:read',
    namesService: false,
    filtersService: true,
    request: () => ({ method: 'GET', path: '/v1/dead-letters?includeInput=true' }),
  },
  'GET /v1/dead-letters/{id}': {
    scope: 'jobs:read',
    namesService: true,
    tenantHidden: true,
    request: async (f) => ({ method: 'GET', path: `/v1/dead-letters/${await f.deadLetter()}` }),
  },
  'DELETE /v1/dead-letters/{id}': {
    scope: 'admin',
    namesService: true,
    tenantHidden: true,
    request: async (f) => ({ method: 'DELETE', path: `/v1/dead-letters/${await f.freshDeadLetter()}` }),
  },
  'POST /v1/dead-letters/replay': {
    scope: 'admin',
    namesService: true,
    request: () => ({
      method: 'POST',
      path: '/v1/dead-letters/replay',
      body: { service: SERVICE, dryRun: true },
    }),
  },
  'POST /v1/dead-letters/purge': {
    scope: 'admin',
    namesService: true,
    request: () => ({
      method: 'POST',
      path: '/v1/dead-letters/purge',
      body: { service: SERVICE, dryRun: true },
    }),
  },
  // Schedules (docs/api.md § Schedules): the list is filtered to the token's services; an action names the
  // schedule, whose service is SERVICE, so a token limited to another service is refused.
  'GET /v1/schedules': {
    scope: 'jobs:read',
    namesService: false,
    filtersService: true,
    request: () => ({ method: 'GET', path: '/v1/schedules' }),
  },
  'POST /v1/schedules/{name}/pause': {
    scope: 'admin',
    namesService: true,
    request: () => ({ method: 'POST', path: `/v1/schedules/${SCHEDULE}/pause` }),
  },
  'POST /v1/schedules/{name}/resume': {
    scope: 'admin',
    namesService: true,
    request: () => ({ method: 'POST', path: `/v1/schedules/${SCHEDULE}/resume` }),
  },
  'POST /v1/schedules/{name}/run-now': {
    scope: 'admin',
    namesService: true,
    request: () => ({ method: 'POST', path: `/v1/schedules/${SCHEDULE}/run-now` }),
  },
  'GET /v1/services/{service}/retry-plan': {
    scope: 'jobs:read',
    namesService: true,
    request: () => ({ method: 'GET', path: `/v1/services/${SERVICE}/retry-plan` }),
  },
  'POST /v1/breakers/{service}/open': {
    scope: 'admin',
    namesService: true,
    wholeService: true,
    request: () => ({ method: 'POST', path: `/v1/breakers/${SERVICE}/open`, body: { forMs: 1_000 } }),
  },
  'POST /v1/breakers/{service}/close': {
    scope: 'admin',
    namesService: true,
    wholeService: true,
    request: () => ({ method: 'POST', path: `/v1/breakers/${SERVICE}/close` }),
  },
  // Secrets: docs/api.md limits a service-limited admin only for `test` (which calls a service).
  'GET /v1/secrets': {
    scope: 'admin',
    namesService: false,
    request: () => ({ method: 'GET', path: '/v1/secrets' }),
  },
  'GET /v1/secrets/{key}': {
    scope: 'admin',
    namesService: false,
    request: () => ({ method: 'GET', path: `/v1/secrets/${SECRET_KEY}` }),
  },
  'PUT /v1/secrets/{key}': {
    scope: 'admin',
    namesService: false,
    request: () => ({
      method: 'PUT',
      path: `/v1/secrets/${SECRET_KEY}`,
      body: { value: 'authz-value-0123456789' },
    }),
  },
  'DELETE /v1/secrets/{key}': {
    scope: 'admin',
    namesService: false,
    // A version that does not exist: the route's checks run, nothing is deleted.
    request: () => ({ method: 'DELETE', path: `/v1/secrets/${SECRET_KEY}?version=9999` }),
  },
  'POST /v1/secrets/{key}/stage': {
    scope: 'admin',
    namesService: false,
    request: () => ({
      method: 'POST',
      path: `/v1/secrets/${SECRET_KEY}/stage`,
      body: { value: 'authz-staged-0123456789' },
    }),
  },
  'POST /v1/secrets/{key}/test': {
    scope: 'admin',
    namesService: true,
    request: () => ({
      method: 'POST',
      path: `/v1/secrets/${SECRET_KEY}/test`,
      body: { service: SERVICE, operation: 'op', tenant: TENANT },
    }),
  },
  'POST /v1/secrets/{key}/promote': {
    scope: 'admin',
    namesService: false,
    request: () => ({ method: 'POST', path: `/v1/secrets/${SECRET_KEY}/promote` }),
  },
  'POST /v1/secrets/{key}/rollback': {
    scope: 'admin',
    namesService: false,
    request: () => ({ method: 'POST', path: `/v1/secrets/${SECRET_KEY}/rollback` }),
  },
  'POST /v1/secrets/reencrypt': {
    scope: 'admin',
    namesService: false,
    request: () => ({ method: 'POST', path: '/v1/secrets/reencrypt' }),
  },
  // Documented routes the OpenAPI document does not list.
  'GET /docs/json': {
    scope: 'any',
    namesService: false,
    acceptsBasic: true,
    request: () => ({ method: 'GET', path: '/docs/json' }),
  },
  'GET /admin/queues/api/queues': {
    scope: 'admin',
    namesService: false,
    unlimitedAdmin: true,
    acceptsBasic: true,
    request: () => ({ method: 'GET', path: '/admin/queues/api/queues' }),
  },
};
const EXTRA_ROUTES = ['GET /docs/json', 'GET /admin/queues/api/queues'];

const SCOPES_OF: Record<TokenKind, readonly string[]> = {
  none: [],
  malformed: [],
  unknown: [],
  jobsRead: ['jobs:read'],
  jobsWrite: ['jobs:write'],
  admin: ['admin'],
  adminOtherService: ['admin'],
  writerOtherTenant: ['jobs:write'],
};

/** Whether `kind` may call the route: the rules of docs/api.md. */
export function isAllowed(rule: RouteRule, kind: TokenKind): boolean {
  if (rule.scope === 'public') return true;
  if (kind === 'none' || kind === 'unknown') return false;
  if (kind === 'malformed') return false;
  const scopes = SCOPES_OF[kind];
  const hasScope = rule.scope === 'any' || scopes.includes('admin') || scopes.includes(rule.scope as string);
  if (!hasScope) return false;
  if (rule.unlimitedAdmin === true && kind !== 'admin') return false;
  if (rule.namesService && kind === 'adminOtherService') return false;
  if (kind === 'writerOtherTenant' && (rule.namesService || rule.wholeService === true)) return false;
  return true;
}

export interface Violation {
  route: string;
  kind: TokenKind;
  status: number;
  why: string;
}

export interface AuthzReport {
  routes: string[];
  calls: number;
  serverErrors: number;
  violations: Violation[];
  /** Routes served that the table does not classify. */
  unknownRoutes: string[];
}

function headerFor(kind: TokenKind, index: number, rule: RouteRule): Record<string, string> {
  switch (kind) {
    case 'none':
      return {};
    case 'malformed': {
      let header = MALFORMED[index % MALFORMED.length]!;
      // Basic with a valid token as password is a valid credential where Basic is accepted: not malformed.
      if (rule.acceptsBasic === true && header.startsWith('Basic ') && header.length > 20)
        header = 'Basic Og==';
      return { authorization: header };
    }
    case 'unknown':
      return { authorization: `Bearer unknown-${index}-${'u'.repeat(30)}` };
    default:
      return { authorization: `Bearer ${TOKENS[kind]}` };
  }
}

function judge(rule: RouteRule, kind: TokenKind, answer: RawAnswer): string | undefined {
  const { status } = answer;
  if (status === 0) return `no answer (${answer.error ?? 'reset'})`;
  if (status >= 500) return `server error ${status}`;
  if (isAllowed(rule, kind)) {
    if (status === 401 || status === 403) return `allowed caller refused with ${status}`;
    if (rule.filtersService === true && kind === 'adminOtherService' && answer.text.includes(`"${SERVICE}"`))
      return `answer names service "${SERVICE}" to a token limited to "${OTHER_SERVICE}"`;
    return undefined;
  }
  if (kind === 'none' || kind === 'malformed' || kind === 'unknown') {
    return status === 401 ? undefined : `expected 401, got ${status}`;
  }
  if (status === 403) return undefined;
  if (status === 404 && rule.tenantHidden === true && kind === 'writerOtherTenant') return undefined;
  if (rule.batch === true && status === 200) {
    const accepted = (JSON.parse(answer.text) as { accepted?: number }).accepted;
    return accepted === 0 ? undefined : `batch accepted ${String(accepted)} jobs`;
  }
  return `expected 403, got ${status}`;
}

export async function runAuthzMatrix(options: ScenarioOptions): Promise<AuthzReport> {
  options.log('authz-matrix: starting');
  return withLab('authz-matrix', options.log, async (lab) => {
    const redis = await startRedisServer(lab);
    // `bad` answers 400: a ClientError, dead-lettered at once.
    const downstream = await startDownstream(
      lab,
      answering((request) =>
        request.url.startsWith('/bad')
          ? { status: 400, body: '{"error":"bad"}' }
          : { status: 200, body: '{"ok":true}' },
      ),
    );
    const service = {
      baseUrl: downstream.url,
      timeoutMs: 5_000,
      retry: { attempts: 1, backoff: { delayMs: 50, maxDelayMs: 100 } },
      auth: { type: 'bearer', token: `{{ secrets.${SECRET_KEY} }}` },
      operations: {
        op: { method: 'POST', path: '/ok', body: '{{ input }}' },
        bad: { method: 'POST', path: '/bad', body: '{{ input }}' },
      },
    };
    const servicesFile = await writeServicesFile(lab, {
      services: { [SERVICE]: service, [OTHER_SERVICE]: service },
      // Yearly: no run during the scenario (a run before the secret is set would fail and cache its absence).
      schedules: { [SCHEDULE]: { cron: '0 0 1 1 *', service: SERVICE, operation: 'op' } },
    });
    const prefix = `authz${options.seed}`;
    const secretsKey = generateMasterKey();
    const env = { FERRY_SECRETS_KEY: secretsKey };
    const api = await startApi(lab, {
      redisUrl: redis.url,
      servicesFile,
      prefix,
      tokens: TOKEN_CONFIG,
      extra: env,
    });
    const worker = await startWorker(
      lab,
      workerEnv({ redisUrl: redis.url, servicesFile, prefix, extra: env }),
    );
    const admin = (method: string, path: string, body?: unknown): ReturnType<typeof jsonRequest> =>
      jsonRequest(api.port, method, path, TOKENS.admin, body);

    const set = await admin('PUT', `/v1/secrets/${SECRET_KEY}`, { value: `authz-${'s'.repeat(24)}` });
    if (set.status !== 201) throw new Error(`setting the secret answered ${set.status}: ${set.text}`);
    const enqueue = async (body: unknown): Promise<string> => {
      const answer = await admin('POST', '/v1/jobs', body);
      if (answer.status !== 202) throw new Error(`enqueue answered ${answer.status}: ${answer.text}`);
      return (answer.json as { id: string }).id;
    };
    const completedJobId = await enqueue(job);
    await waitForValue(
      'the fixture job to complete',
      async () =>
        ((await admin('GET', `/v1/jobs/${SERVICE}/${completedJobId}`)).json as { state?: string }).state ===
        'completed'
          ? true
          : undefined,
      20_000,
    );
    const deadLetter = async (): Promise<string> => {
      const id = await enqueue({ ...job, operation: 'bad' });
      return waitForValue(
        'a dead letter',
        async () => {
          const view = (await admin('GET', `/v1/jobs/${SERVICE}/${id}`)).json as { deadLetterId?: string };
          return view.deadLetterId ?? undefined;
        },
        20_000,
      );
    };
    let shared: Promise<string> | undefined;
    const fixture: Fixture = {
      completedJobId,
      delayedJob: () => enqueue({ ...job, delayMs: 3_600_000 }),
      deadLetter: () => (shared ??= deadLetter()),
      freshDeadLetter: deadLetter,
    };

    const docs = await admin('GET', '/docs/json');
    const paths = (docs.json as { paths?: Record<string, Record<string, unknown>> } | undefined)?.paths;
    if (docs.status !== 200 || paths === undefined) throw new Error(`/docs/json answered ${docs.status}`);
    const served: string[] = [];
    for (const [path, methods] of Object.entries(paths)) {
      for (const method of Object.keys(methods)) {
        if (['get', 'post', 'put', 'patch', 'delete'].includes(method))
          served.push(`${method.toUpperCase()} ${path}`);
      }
    }
    const unknownRoutes = served.filter((route) => ROUTES[route] === undefined);
    const routes = [...served.filter((route) => ROUTES[route] !== undefined), ...EXTRA_ROUTES];

    const violations: Violation[] = [];
    let serverErrors = 0;
    let calls = 0;
    // Admin last: its calls delete and change what the others' calls need.
    const order: TokenKind[] = [...TOKEN_KINDS.filter((kind) => kind !== 'admin'), 'admin'];
    for (const route of routes) {
      const rule = ROUTES[route]!;
      for (const kind of order) {
        const call = await rule.request(fixture);
        const headers: Record<string, string> = { ...headerFor(kind, calls, rule), ...call.headers };
        if (call.body !== undefined) headers['content-type'] = 'application/json';
        const answer = await rawRequest(api.port, {
          method: call.method,
          path: call.path,
          headers,
          ...(call.body === undefined ? {} : { body: JSON.stringify(call.body) }),
          ...(call.stream === true ? { streamMs: 300 } : {}),
          timeoutMs: 20_000,
        });
        calls++;
        if (answer.status >= 500) serverErrors++;
        const why = judge(rule, kind, answer);
        if (why !== undefined) violations.push({ route, kind, status: answer.status, why });
      }
    }
    options.log(`authz-matrix: ${calls} calls over ${routes.length} routes, ${violations.length} violations`);
    await stopProcess(worker);
    await stopProcess(api.process);
    return { routes, calls, serverErrors, violations, unknownRoutes };
  });
}

export function authzRow(report: AuthzReport): ScenarioRow {
  const listed = report.violations.map((v) => `${v.route} as ${v.kind}: ${v.why}`);
  const notes = [
    `${report.calls} calls, ${report.routes.length} routes x ${TOKEN_KINDS.length} token kinds`,
    ...(report.unknownRoutes.length > 0 ? [`routes with no rule: ${report.unknownRoutes.join(', ')}`] : []),
    ...(listed.length > 0 ? [`violations: ${listed.join('; ')}`] : []),
  ];
  return scenarioRow({
    scenario: 'authz-matrix',
    serverErrors: report.serverErrors,
    notes: notes.join('; '),
    ok: report.serverErrors === 0 && report.violations.length === 0 && report.unknownRoutes.length === 0,
  });
}

const scenario: Scenario = {
  name: 'authz-matrix',
  async run(options) {
    return authzRow(await runAuthzMatrix(options));
  },
};

export default scenario;
