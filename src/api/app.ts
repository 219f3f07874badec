/**
 * The HTTP API (DESIGN §6): builds a Fastify instance and never listens (cli/ does; tests use real listens or
 * inject()). Every route declares what it needs in its config: `scope` (a token scope, `any` valid token, or
 * `public`) and `redis` (answer 503 + Retry-After at once while Redis is down instead of waiting on it).
 */
import type { IncomingMessage } from 'node:http';

import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';

import { DEFAULT_API_BODY_LIMIT_BYTES, DEFAULT_MAX_JSON_DEPTH } from '../core/job.ts';
import type { Logger } from '../core/logger.ts';
import { waitUntilReady } from '../core/redis.ts';
import { SECOND } from '../core/time.ts';
import {
  authenticate,
  type Principal,
  requireScope,
  type Scope,
  tokenFromHeader,
  type TokenSet,
} from './auth.ts';
import type { ApiContext } from './context.ts';
import { handleError, NotFoundError, REDIS_WAIT_MS, UnavailableError } from './errors.ts';
import { registerJsonParser } from './json-body.ts';
import { describeRoute } from './openapi.ts';
import { deadLetterBulkRoutes } from './routes/dead-letter-bulk.ts';
import { deadLetterRoutes } from './routes/dead-letters.ts';
import { healthRoutes, type MetricsSource } from './routes/health.ts';
import { jobRoutes } from './routes/jobs.ts';
import { opsRoutes } from './routes/ops.ts';
import { scheduleRoutes } from './routes/schedules.ts';
import { secretRoutes } from './routes/secrets.ts';
import { serviceRoutes } from './routes/services.ts';
import { serializerCompiler, validatorCompiler } from './schemas.ts';
import { closeUnusedConnectionsOnClose } from './unused-connections.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route: a scope, `any` valid token, or `public` (no token). Default `any`. */
    scope?: Scope | 'any' | 'public';
    /** The route needs Redis: while it is down, answer 503 + Retry-After within REDIS_WAIT_MS. */
    redis?: boolean;
  }
  interface FastifyInstance {
    /** `METHOD /url` of every route registered, HEAD twins included: tests hold docs and auth rows to it. */
    readonly ferryRoutes: readonly string[];
  }
  interface FastifyRequest {
    /** The caller, set by the auth hook for every route but `public` ones. */
    principal: Principal | undefined;
  }
}

/** A route the API mounts from another module (SSE, dead letters, Bull Board): registered after the core routes. */
export type ApiPlugin = (app: FastifyInstance, ctx: ApiContext) => void | Promise<void>;

export interface ApiOptions {
  ctx: ApiContext;
  tokens: TokenSet;
  logger: Logger;
  metrics?: MetricsSource;
  /** Extra route modules (job events, dead letters, Bull Board). */
  plugins?: readonly ApiPlugin[];
  /** Paths whose routes authenticate themselves (Bull Board answers browsers with a Basic challenge). */
  selfAuthenticatedPrefixes?: readonly string[];
  /** Largest request body. Default DEFAULT_API_BODY_LIMIT_BYTES (a batch of 1000 jobs, about 4.4 MiB). */
  bodyLimitBytes?: number;
  /** Deepest nesting of arrays and objects in a JSON body (400 beyond). Default 64. */
  maxJsonDepth?: number;
  /**
   * Longest a client may take to send a whole request, headers included; it is then cut off (408, or the
   * socket closed). Default 30 s.
   */
  requestTimeoutMs?: number;
}

export const API_VERSION = '0.1.0';
/** How long a client may take to send a request (headers and body). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30 * SECOND;
/** Most of a refused body read and dropped before answering, and for how long (see the onSend hook). */
const LINGER_MAX_BYTES = 64 * 1024 * 1024;
const LINGER_MAX_MS = 5 * SECOND;
/** Where Swagger UI and the OpenAPI document are served: the API's only routes that take Basic auth. */
const DOCS_PREFIX = '/docs';

export async function buildApp(options: ApiOptions): Promise<FastifyInstance> {
  const { ctx, tokens } = options;
  const requestTimeout = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const app = Fastify({
    loggerInstance: options.logger as FastifyBaseLogger,
    // One line per request at info would cost more than the enqueue itself; errors are logged by handleError.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: options.bodyLimitBytes ?? DEFAULT_API_BODY_LIMIT_BYTES,
    // 0 would disable Node's own request timeout (DESIGN §8): a client that never finishes its body is cut off.
    requestTimeout: requestTimeout,
    http: {
      // Node's own defaults made the limit late: headers were given 60 s whatever requestTimeout said, and
      // both are only checked every connectionsCheckingInterval (30 s), so a body could drip for 90 s.
      headersTimeout: requestTimeout,
      connectionsCheckingInterval: Math.min(SECOND, requestTimeout),
    },
    // SSE streams are long-lived; the keep-alive timeout only applies between requests.
    keepAliveTimeout: 72 * SECOND,
    return503OnClosing: true,
    // Job ids are validated by the route (up to 300 characters) rather than cut off at Fastify's 100 with a 414.
    routerOptions: { maxParamLength: 512 },
  });
  // Else a client's spare connection (undici's after an aborted SSE stream) held close() for headersTimeout.
  closeUnusedConnectionsOnClose(app);
  // JSON only: Fastify's default text/plain parser would hand a string to routes that expect objects (415).
  app.removeContentTypeParser('text/plain');
  registerJsonParser(app, options.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH);
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(handleError);
  app.setNotFoundHandler((request) => {
    throw new NotFoundError(`no route ${request.method} ${request.url.split('?')[0]}`);
  });
  app.decorateRequest('principal', undefined);
  const routes: string[] = [];
  app.decorate('ferryRoutes', routes);
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) routes.push(`${method} ${route.url}`);
  });

  const selfAuthenticated = options.selfAuthenticatedPrefixes ?? [];
  app.addHook('onRequest', async (request, reply) => {
    const config = request.routeOptions.config;
    const scope = config.scope ?? 'any';
    if (scope === 'public') {
      // Probes need no token (/healthz, /readyz); a valid bearer token may be told more (why /readyz is not
      // ready). A missing or unknown one is no error here: the answer is then only up or down.
      const token = tokenFromHeader(request.headers.authorization, { basic: false });
      if (token !== undefined) request.principal = tokens.authenticate(token);
      return;
    }
    const url = request.routeOptions.url ?? request.url;
    if (selfAuthenticated.some((prefix) => url === prefix || url.startsWith(`${prefix}/`))) return;
    // Basic only where a browser needs it (/docs; Bull Board authenticates itself): a browser sends remembered
    // Basic credentials with any request to the realm, a cross-site form POST included, so a route that acts
    // (pause a queue) must take a Bearer token, which no other site can make a browser send.
    const isDocs = url === DOCS_PREFIX || url.startsWith(`${DOCS_PREFIX}/`);
    try {
      request.principal = authenticate(tokens, request.headers.authorization, { basic: isDocs });
    } catch (error) {
      // One challenge per header, Basic first: Chromium ignores a combined `Bearer …, Basic …` header (it
      // showed the JSON 401 and never asked for credentials), and takes the first scheme it can answer.
      void reply.header(
        'www-authenticate',
        isDocs ? ['Basic realm="ferry", charset="UTF-8"', 'Bearer realm="ferry"'] : 'Bearer realm="ferry"',
      );
      throw error;
    }
    if (scope !== 'any') requireScope(request.principal, scope);
  });
  // An answer given before the body was read (413, 415, 401…) is followed by Fastify closing the connection, and
  // a client still sending then gets a reset that can swallow the answer (the chaos fuzz saw it under load).
  // Read and drop the rest of the body first, within bounds, as nginx's lingering close does.
  app.addHook('onSend', async (request, _reply, payload) => {
    if (!request.raw.complete) await drainRequest(request.raw, LINGER_MAX_BYTES, LINGER_MAX_MS);
    return payload;
  });
  app.addHook('preHandler', async (request) => {
    const status = ctx.connection.status;
    if (request.routeOptions.config.redis !== true || status === 'ready') return;
    // Between attempts to reconnect (or closed for good): the last attempt failed, so answer at once. While an
    // attempt is under way, give it a moment to succeed.
    if (status === 'reconnecting' || status === 'close' || status === 'end') {
      throw new UnavailableError('Redis is unavailable; retry later');
    }
    try {
      await waitUntilReady(ctx.connection, REDIS_WAIT_MS);
    } catch {
      throw new UnavailableError('Redis is unavailable; retry later');
    }
  });
  app.addHook('onClose', async () => {
    await ctx.close();
  });

  await app.register(swagger, {
    // Every status each route can answer, and an operationId (src/api/openapi.ts).
    transform: describeRoute,
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Ferry API',
        version: API_VERSION,
        description:
          'Enqueue integration jobs, follow them, and operate Ferry. Every route but the probes /healthz and ' +
          '/readyz needs a bearer token (FERRY_API_TOKENS) with the scope it names; errors are ' +
          '`{ error: { type, message, field? } }`. Browsers may send the token as the password of Basic ' +
          'auth (any user name) to /docs and Bull Board only.',
        license: { name: 'MIT', identifier: 'MIT' },
      },
      // Relative: the API that serves this document (`ferry openapi --server <url>` prints it with another).
      servers: [{ url: '/', description: 'the Ferry API serving this document' }],
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'a token of FERRY_API_TOKENS' },
        },
      },
      security: [{ bearer: [] }],
      tags: [
        { name: 'jobs', description: 'enqueue, read and cancel jobs' },
        { name: 'events', description: 'Server-Sent Events of jobs' },
        { name: 'dead-letters', description: 'jobs that will not succeed' },
        { name: 'services', description: 'configured services and their breakers' },
        { name: 'queues', description: 'service queues' },
        { name: 'secrets', description: 'secret versions and rotation (admin; values never shown)' },
        { name: 'health', description: 'liveness, readiness, metrics' },
      ],
    },
  });
  await app.register(swaggerUi, { routePrefix: DOCS_PREFIX });

  healthRoutes(app, ctx, options.metrics);
  jobRoutes(app, ctx);
  serviceRoutes(app, ctx);
  deadLetterRoutes(app, ctx);
  deadLetterBulkRoutes(app, ctx);
  opsRoutes(app, ctx);
  scheduleRoutes(app, ctx);
  secretRoutes(app, ctx);
  for (const plugin of options.plugins ?? []) await plugin(app, ctx);
  return app;
}

/** Resolves once `raw` has ended (its data dropped), or after `maxBytes` more bytes or `maxMs`, whichever is first. */
function drainRequest(raw: IncomingMessage, maxBytes: number, maxMs: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const done = (): void => {
      clearTimeout(timer);
      raw.off('data', onData);
      raw.off('end', done);
      raw.off('close', done);
      raw.off('error', done);
      resolve();
    };
    const onData = (chunk: Buffer): void => {
      seen += chunk.length;
      if (seen > maxBytes) done();
    };
    const timer = setTimeout(done, maxMs);
    raw.on('data', onData);
    raw.once('end', done);
    raw.once('close', done);
    raw.once('error', done);
    raw.resume();
  });
}
