/**
 * The OpenAPI document declares every status an operation can answer (Prism in validation-proxy mode found
 * /readyz and /metrics answering an undeclared 401). Each operation of the document a running API serves is
 * driven into its answers with real requests over HTTP: no token, an unknown one, each scope, bad path
 * parameters, a body that is not JSON, of the wrong type, too large or too slow, and Redis stopped. Every
 * status seen must be declared for that operation, with `Retry-After` on a 503 and `WWW-Authenticate` on a
 * 401. The document also has a stable, camelCase, unique operationId on every operation, and `ferry openapi`
 * prints the very document the API serves. (`npm run lint:openapi` runs Redocly's rules on it.)
 */
import { connect, type Socket } from 'node:net';

import { describe, expect, it } from 'vitest';

import { buildOpenApiDocument, type OpenApiDocument } from '../../src/cli/openapi-document.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { type ResponseBody, startTestApi, type TestApi, TOKENS } from '../helpers/api.ts';
import { oneService } from '../helpers/ferry.ts';
import { runFerry } from '../helpers/processes.ts';
import { startRedis, type TestRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
/** Stopped by the Redis-down test. */
const stoppable = await startRedis();

/** Body limit and request timeout of the API the bad-body test drives (413 and 408 within moments). */
const BODY_LIMIT_BYTES = 4096;
const REQUEST_TIMEOUT_MS = 1_000;

/** Every operationId, as clients generated from the document name their methods: renaming one breaks them. */
const OPERATION_IDS = [
  'getHealthz',
  'getReadyz',
  'getMetrics',
  'postJobs',
  'postJobsBatch',
  'getJobsByServiceById',
  'deleteJobsByServiceById',
  'getServices',
  'getBreakers',
  'getQueues',
  'postQueuesByServicePause',
  'postQueuesByServiceResume',
  'getDeadLetters',
  'getDeadLettersById',
  'deleteDeadLettersById',
  'postDeadLettersReplay',
  'postDeadLettersPurge',
  'getStatus',
  'getServicesByServiceRetryPlan',
  'postBreakersByServiceOpen',
  'postBreakersByServiceClose',
  'getSchedules',
  'postSchedulesByNamePause',
  'postSchedulesByNameResume',
  'postSchedulesByNameRunNow',
  'getSecrets',
  'getSecretsByKey',
  'putSecretsByKey',
  'deleteSecretsByKey',
  'postSecretsByKeyStage',
  'postSecretsByKeyTest',
  'postSecretsByKeyPromote',
  'postSecretsByKeyRollback',
  'postSecretsReencrypt',
  'getJobsByServiceByIdEvents',
  'getEvents',
];

interface Operation {
  method: string;
  /** As in the document: `/v1/jobs/{service}/{id}`. */
  path: string;
  operationId: string;
  /** Declared statuses. */
  declared: Set<string>;
  responses: Record<string, { headers?: Record<string, unknown> }>;
  hasBody: boolean;
  isStream: boolean;
}

/** Path parameter values that name something well-formed that may not exist, and ones that are malformed. */
const VALID_PARAMS: Record<string, string> = { service: 'svc', id: 'x1', key: 'svc_key' };
const BAD_PARAMS: Record<string, string> = {
  service: 'Not%20A%20Service!',
  id: 'x'.repeat(400),
  key: 'no%20such%20key!',
};
const TOKEN_CASES: readonly [string, string | undefined][] = [
  ['none', undefined],
  ['unknown', TOKENS.wrong],
  ['jobs:read', TOKENS.reader],
  ['jobs:write', TOKENS.writer],
  ['admin', TOKENS.admin],
  ['tenant-limited', TOKENS.acme],
  ['service-limited', TOKENS.otherService],
];

async function startApi(
  server: TestRedis = redis,
  options: { bodyLimitBytes?: number; requestTimeoutMs?: number } = {},
): Promise<TestApi> {
  const config = parseServicesConfig(oneService('http://127.0.0.1:9'), { env: {} });
  return startTestApi({ redisUrl: server.url, prefix: uniquePrefix(), config, ...options });
}

async function documentOf(api: TestApi): Promise<OpenApiDocument> {
  const response = await api.request('GET', '/docs/json', { token: TOKENS.reader });
  expect(response.status).toBe(200);
  return response.body as OpenApiDocument;
}

function operationsOf(document: OpenApiDocument): Operation[] {
  const operations: Operation[] = [];
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, raw] of Object.entries(item)) {
      const operation = raw as ResponseBody;
      const responses = operation.responses as Operation['responses'];
      operations.push({
        method: method.toUpperCase(),
        path,
        operationId: operation.operationId as string,
        declared: new Set(Object.keys(responses)),
        responses,
        hasBody: ['POST', 'PUT', 'PATCH', 'DELETE'].includes(method.toUpperCase()),
        isStream: Object.values(responses).some(
          (response) =>
            (response as { content?: Record<string, unknown> }).content?.['text/event-stream'] !== undefined,
        ),
      });
    }
  }
  return operations;
}

function concretePath(path: string, params: Record<string, string> = VALID_PARAMS): string {
  const filled = path.replace(/\{(\w+)\}/g, (_, name: string) => params[name] ?? 'x1');
  // Query parameters a route needs to get past validation.
  return filled === '/v1/events' ? `${filled}?service=svc` : filled;
}

/** One request; an event stream is dropped once its status is in. */
async function send(
  url: string,
  operation: Operation,
  options: { token?: string | undefined; path?: string; body?: string; contentType?: string } = {},
): Promise<{ status: number; headers: Headers }> {
  const headers: Record<string, string> = {};
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  let body = options.body;
  if (body === undefined && operation.method !== 'GET' && operation.method !== 'DELETE') body = '{}';
  if (body !== undefined) headers['content-type'] = options.contentType ?? 'application/json';
  const abort = new AbortController();
  const response = await fetch(url + (options.path ?? concretePath(operation.path)), {
    method: operation.method,
    headers,
    signal: abort.signal,
    ...(body === undefined ? {} : { body }),
  });
  if (response.headers.get('content-type')?.startsWith('text/event-stream') === true) abort.abort();
  else await response.arrayBuffer();
  return { status: response.status, headers: response.headers };
}

/** `<operationId> <case>: <status>` for each answer whose status the operation does not declare. */
function undeclared(operation: Operation, label: string, status: number): string[] {
  return operation.declared.has(String(status)) ? [] : [`${operation.operationId} ${label}: ${status}`];
}

/** Sends `head` and then nothing more: what the server answers once it gives up (or `closed`). */
function stall(url: string, head: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket: Socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1') || 'closed'));
    socket.write(head);
  });
}

describe('OpenAPI document', () => {
  it('names every operation with a stable, camelCase, unique operationId', async () => {
    const operations = operationsOf(await documentOf(await startApi()));
    const ids = operations.map((operation) => operation.operationId);
    expect(ids).toEqual(OPERATION_IDS);
    for (const id of ids) expect(id).toMatch(/^[a-z][a-zA-Z0-9]*$/);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('declares 500 on every operation, WWW-Authenticate on every 401 and Retry-After on every 503', async () => {
    const document = await documentOf(await startApi());
    expect(document.info).toMatchObject({ license: { name: 'MIT', identifier: 'MIT' } });
    expect(document.servers).toEqual([{ url: '/', description: 'the Ferry API serving this document' }]);
    for (const operation of operationsOf(document)) {
      expect(operation.declared, operation.operationId).toContain('500');
      if (operation.declared.has('401'))
        expect(Object.keys(operation.responses['401']!.headers ?? {})).toEqual(['WWW-Authenticate']);
      if (operation.declared.has('503'))
        expect(Object.keys(operation.responses['503']!.headers ?? {})).toEqual(['Retry-After']);
    }
  });

  it('declares every status answered with no token, an unknown one, each scope, or bad parameters', async () => {
    const api = await startApi();
    const operations = operationsOf(await documentOf(api));
    const problems: string[] = [];
    const seen = new Set<string>();
    for (const operation of operations) {
      for (const [label, token] of TOKEN_CASES) {
        const { status, headers } = await send(api.url, operation, { token });
        seen.add(String(status));
        problems.push(...undeclared(operation, label, status));
        if (status === 401)
          expect(headers.get('www-authenticate'), operation.operationId).toMatch(/^Bearer /);
      }
      if (operation.path.includes('{')) {
        const path = concretePath(operation.path, BAD_PARAMS);
        const { status } = await send(api.url, operation, { token: TOKENS.admin, path });
        seen.add(String(status));
        problems.push(...undeclared(operation, 'bad parameters', status));
      }
    }
    expect(problems).toEqual([]);
    // The cases reached what they aim at.
    for (const status of ['200', '400', '401', '403', '404']) expect(seen).toContain(status);
  });

  it('declares what a body that is not JSON, not JSON at all, too large or too slow gets', async () => {
    const api = await startApi(redis, {
      bodyLimitBytes: BODY_LIMIT_BYTES,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
    });
    const operations = operationsOf(await documentOf(api)).filter((operation) => operation.hasBody);
    expect(operations.length).toBeGreaterThan(10);
    const problems: string[] = [];
    const answers: Record<string, Record<string, number>> = {};
    await Promise.all(
      operations.map(async (operation) => {
        const token = TOKENS.admin;
        const seen = {
          notJson: (await send(api.url, operation, { token, body: '{"not json' })).status,
          wrongType: (await send(api.url, operation, { token, body: 'hello', contentType: 'text/plain' }))
            .status,
          tooLarge: (
            await send(api.url, operation, {
              token,
              body: JSON.stringify({ pad: 'x'.repeat(2 * BODY_LIMIT_BYTES) }),
            })
          ).status,
          tooSlow: Number(
            /^HTTP\/1\.1 (\d{3}) /.exec(
              await stall(
                api.url,
                `${operation.method} ${concretePath(operation.path)} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
                  `Authorization: Bearer ${token}\r\nContent-Type: application/json\r\n` +
                  'Content-Length: 100\r\n\r\n{"a":',
              ),
            )?.[1] ?? 0,
          ),
        };
        answers[operation.operationId] = seen;
        for (const [label, status] of Object.entries(seen))
          problems.push(...undeclared(operation, label, status));
      }),
    );
    expect(problems).toEqual([]);
    for (const [id, seen] of Object.entries(answers))
      expect({ id, ...seen }).toEqual({ id, notJson: 400, wrongType: 415, tooLarge: 413, tooSlow: 408 });
  });

  it('declares every status answered while Redis is down, with Retry-After on each 503', async () => {
    const api = await startApi(stoppable);
    const operations = operationsOf(await documentOf(api));
    await stoppable.stop();
    const problems: string[] = [];
    let unavailable = 0;
    for (const operation of operations) {
      for (const [label, token] of [
        ['none', undefined],
        ['admin', TOKENS.admin],
      ] as const) {
        const { status, headers } = await send(api.url, operation, { token });
        problems.push(...undeclared(operation, `Redis down, ${label}`, status));
        if (status === 503) {
          unavailable++;
          expect(headers.get('retry-after'), operation.operationId).toBe('5');
        }
      }
    }
    expect(problems).toEqual([]);
    expect(unavailable).toBeGreaterThan(20);
  });

  it('`ferry openapi` prints the document the API serves', async () => {
    const served = await documentOf(await startApi());
    expect(await buildOpenApiDocument()).toEqual(served);
    const printed = await runFerry(['openapi']);
    expect(printed.code, printed.stderr).toBe(0);
    expect(JSON.parse(printed.stdout)).toEqual(served);
    const withServer = await runFerry(['openapi', '--yaml', '--server', 'https://ferry.internal:8080']);
    expect(withServer.code, withServer.stderr).toBe(0);
    expect(withServer.stdout).toContain('servers:\n  - url: https://ferry.internal:8080\n');
    expect(withServer.stdout).toContain('operationId: postJobs\n');
    const bad = await runFerry(['openapi', '--server', 'not a url']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--server: not a URL');
  });
});
