/**
 * The API's OpenAPI document without running the API: the app `ferry api` builds (buildFerryApi, every route
 * module and plugin), never listening, over Redis clients that cannot reach anything (a socket path that does
 * not exist, no retries), with no services file and no real token. The document depends on neither: a
 * running API serves the same one at /docs/json (test/api/openapi.test.ts holds them equal).
 */
import { Redis } from 'ioredis';

import { TokenSet } from '../api/auth.ts';
import { readEnv } from '../core/env.ts';
import { createLogger } from '../core/logger.ts';
import { Scrubber } from '../secrets/scrub.ts';
import { buildFerryApi } from './api-server.ts';

/** An OpenAPI 3.1 document (as @fastify/swagger builds it). */
export type OpenApiDocument = Record<string, unknown> & {
  paths: Record<string, Record<string, Record<string, unknown>>>;
};

/** The document; `server` replaces its relative `servers` entry with an absolute URL. */
export async function buildOpenApiDocument(options: { server?: string } = {}): Promise<OpenApiDocument> {
  const unreachable = (): Redis => {
    const client = new Redis({
      path: '/nonexistent/ferry-openapi.sock',
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    client.on('error', () => undefined);
    return client;
  };
  const connection = unreachable();
  const eventsConnection = unreachable();
  const api = await buildFerryApi(
    {
      env: readEnv({}),
      logger: createLogger({ level: 'silent' }),
      config: { services: new Map(), schedules: new Map(), source: undefined },
      scrubber: new Scrubber(),
    },
    {
      connection,
      eventsConnection,
      // Never used: nothing listens. A random value, so no known token exists even in memory.
      tokens: TokenSet.parse([{ name: 'openapi', sha256: '0'.repeat(64), scopes: ['jobs:read'] }], 'openapi'),
      processEnv: {},
    },
  );
  try {
    await api.app.ready();
    const document = structuredClone(api.app.swagger()) as unknown as OpenApiDocument;
    if (options.server !== undefined)
      document.servers = [{ url: options.server, description: 'the Ferry API' }];
    return document;
  } finally {
    await api.close();
    // A client that gave up (status `end`) has nothing to close: disconnect() would arm ioredis's 2 s timer
    // for a socket that never opened, and hold the process that long.
    for (const client of [connection, eventsConnection]) if (client.status !== 'end') client.disconnect();
  }
}
