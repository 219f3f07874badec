/**
 * The real HTTP API on 127.0.0.1:0 over a TestFerry's prefix, with a fixed set of tokens, closed when the test
 * (or file) finishes. Requests go over real HTTP (undici's fetch), not inject().
 */
import { Writable } from 'node:stream';

import { Redis } from 'ioredis';

import { TokenSet } from '../../src/api/auth.ts';
import type { SseOptions } from '../../src/api/sse.ts';
import { buildFerryApi } from '../../src/cli/api-server.ts';
import { readEnv } from '../../src/core/env.ts';
import { createLogger } from '../../src/core/logger.ts';
import { createRedisConnection, waitUntilReady } from '../../src/core/redis.ts';
import type { ServicesConfig } from '../../src/core/services/types.ts';
import { Scrubber } from '../../src/secrets/scrub.ts';
import { registerCleanup } from './cleanup.ts';

/** One token per role the auth matrix needs. */
export const TOKENS = {
  admin: 'admin-token-0123456789abcdef',
  writer: 'writer-token-0123456789abcdef',
  reader: 'reader-token-0123456789abcdef',
  /** jobs:write + jobs:read, tenant acme only. */
  acme: 'acme-token-0123456789abcdefgh',
  /** jobs:write + jobs:read, service `other` only. */
  otherService: 'other-svc-token-0123456789abc',
  wrong: 'wrong-token-0123456789abcdefgh',
  /** admin, tenant acme only. */
  acmeAdmin: 'acme-admin-token-0123456789abc',
  /** admin, service `other` only. */
  otherServiceAdmin: 'other-admin-token-0123456789ab',
} as const;

export const TOKEN_CONFIG = [
  { name: 'admin', token: TOKENS.admin, scopes: ['admin'] },
  { name: 'writer', token: TOKENS.writer, scopes: ['jobs:write'] },
  { name: 'reader', token: TOKENS.reader, scopes: ['jobs:read'] },
  { name: 'acme', token: TOKENS.acme, scopes: ['jobs:write', 'jobs:read'], tenants: ['acme'] },
  { name: 'other', token: TOKENS.otherService, scopes: ['jobs:write', 'jobs:read'], services: ['other'] },
  { name: 'acme-admin', token: TOKENS.acmeAdmin, scopes: ['admin'], tenants: ['acme'] },
  { name: 'other-admin', token: TOKENS.otherServiceAdmin, scopes: ['admin'], services: ['other'] },
];

/** A parsed JSON response body: tests assert on its shape, so it is deliberately untyped. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above
export type ResponseBody = any;

export interface TestApi {
  url: string;
  /** Producer-role connection the API uses (fails fast while Redis is down). */
  connection: Redis;
  logs: string[];
  /** `METHOD /url` of every route the app registered. */
  routes: readonly string[];
  /** The process Scrubber the API was given (not applied to `logs`, so a test sees what was really logged). */
  scrubber: Scrubber;
  /** A request over HTTP; `token` sets `Authorization: Bearer`. */
  request(
    method: string,
    path: string,
    options?: { token?: string | undefined; body?: unknown; headers?: Record<string, string> },
  ): Promise<{ status: number; headers: Headers; body: ResponseBody; text: string }>;
  close(): Promise<void>;
}

export async function startTestApi(options: {
  redisUrl: string;
  prefix: string;
  config: ServicesConfig;
  bodyLimitBytes?: number;
  /** FERRY_API_REQUEST_TIMEOUT_MS (default 30 s). */
  requestTimeoutMs?: number;
  /** FERRY_MAX_METADATA_BYTES (default 16 KiB). */
  maxMetadataBytes?: number;
  /** Server-Sent Events settings (a short heartbeat). */
  sse?: SseOptions;
  /** FERRY_SECRETS_KEY of the API process (the secrets routes can then seal and open values). */
  secretsKey?: string;
  /** FERRY_SECRET_<NAME> values the API's env source reads (default none, not the test process's env). */
  processEnv?: NodeJS.ProcessEnv;
  /** More variables for readEnv (e.g. FERRY_ENQUEUE_MIN_REPLICAS). */
  env?: Record<string, string>;
}): Promise<TestApi> {
  const logs: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(line);
      callback();
    },
  });
  const logger = createLogger({ level: 'debug', destination });
  // The connection `ferry api` makes (role `api`: no offline queue, its command timeout).
  const connection = createRedisConnection({ url: options.redisUrl }, 'api', 'ferry-test-api') as Redis;
  connection.on('error', () => undefined);
  // As `ferry api` does at start-up (connectRedis): without an offline queue, a command sent before the
  // connection is ready fails at once.
  await waitUntilReady(connection);
  const eventsConnection = new Redis(options.redisUrl, { maxRetriesPerRequest: null });
  eventsConnection.on('error', () => undefined);
  const env = readEnv({
    ...options.env,
    FERRY_PREFIX: options.prefix,
    ...(options.bodyLimitBytes === undefined
      ? {}
      : { FERRY_API_BODY_LIMIT_BYTES: String(options.bodyLimitBytes) }),
    ...(options.secretsKey === undefined ? {} : { FERRY_SECRETS_KEY: options.secretsKey }),
    ...(options.requestTimeoutMs === undefined
      ? {}
      : { FERRY_API_REQUEST_TIMEOUT_MS: String(options.requestTimeoutMs) }),
    ...(options.maxMetadataBytes === undefined
      ? {}
      : { FERRY_MAX_METADATA_BYTES: String(options.maxMetadataBytes) }),
  });
  const scrubber = new Scrubber();
  // The API as `ferry api` builds it (buildFerryApi), only not listening on PORT.
  const api = await buildFerryApi(
    { env, logger, config: options.config, scrubber },
    {
      connection,
      eventsConnection,
      tokens: TokenSet.parse(TOKEN_CONFIG, 'test tokens'),
      ...(options.sse === undefined ? {} : { sse: options.sse }),
      processEnv: options.processEnv ?? {},
    },
  );
  const { app } = api;
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  const url = `http://127.0.0.1:${address.port}`;
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      await api.close();
      connection.disconnect();
      eventsConnection.disconnect();
    })();
    return closed;
  };
  registerCleanup(close);
  return {
    url,
    connection,
    logs,
    routes: app.ferryRoutes,
    scrubber,
    close,
    async request(method, path, requestOptions = {}) {
      const headers: Record<string, string> = { ...requestOptions.headers };
      if (requestOptions.token !== undefined) headers.authorization = `Bearer ${requestOptions.token}`;
      let body: string | undefined;
      if (requestOptions.body !== undefined) {
        body =
          typeof requestOptions.body === 'string' ? requestOptions.body : JSON.stringify(requestOptions.body);
        headers['content-type'] ??= 'application/json';
      }
      const response = await fetch(url + path, { method, headers, ...(body === undefined ? {} : { body }) });
      const text = await response.text();
      let parsed: unknown;
      try {
        parsed = text === '' ? undefined : JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      return { status: response.status, headers: response.headers, body: parsed as ResponseBody, text };
    },
  };
}
