/**
 * What the OpenAPI document says of every operation beyond what its route declares, derived from the same
 * route config that makes the API answer so (app.ts's hooks), so the document cannot fall behind them:
 *
 * - 401 (with `WWW-Authenticate`) on every route that needs a token; 403 on those that need a scope;
 * - 400, 408, 413 and 415 on every route that can take a body (a body is read for POST, PUT, PATCH and DELETE:
 *   not JSON, too slow, too large, not `application/json`); 400 on every route with path or query parameters;
 * - 503 with `Retry-After` on every route that needs Redis (and on any that declares a 503);
 * - 500 everywhere;
 * - an `operationId` from the method and path (`GET /v1/jobs/:service/:id` is `getJobsByServiceById`): stable
 *   as long as the route is, camelCase, unique. A route may set its own.
 *
 * Ferry has no rate limit (no 429). Used as @fastify/swagger's `transform`: routes themselves are unchanged.
 */
import type { FastifySchema, RouteOptions } from 'fastify';

import { UNAVAILABLE_RETRY_AFTER_SECONDS } from './errors.ts';
import { errorResponses } from './schemas.ts';

type Schema = Record<string, unknown>;

/** Methods whose requests Fastify reads a body for (and so can answer 400, 408, 413, 415 to). */
const BODY_METHODS: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

const RETRY_AFTER_HEADER = {
  'Retry-After': {
    type: 'integer',
    description: `Seconds to wait before retrying (${UNAVAILABLE_RETRY_AFTER_SECONDS})`,
  },
};
/** Node's own answer when a request takes longer than FERRY_API_REQUEST_TIMEOUT_MS: not the API's error body. */
const REQUEST_TIMEOUT = {
  type: 'null',
  description: 'The request was not received within FERRY_API_REQUEST_TIMEOUT_MS; the connection is closed',
};
const CHALLENGE_HEADER = {
  'WWW-Authenticate': { type: 'string', description: 'The challenge: `Bearer realm="ferry"`' },
};

/** `GET /v1/jobs/:service/:id/events` → `getJobsByServiceByIdEvents`; the `v1` segment is left out. */
export function operationIdOf(method: string, url: string): string {
  const words = url
    .split('/')
    .filter((segment) => segment !== '' && segment !== 'v1')
    .flatMap((segment) =>
      segment.startsWith(':') ? ['by', ...segment.slice(1).split(/[-_]/)] : segment.split(/[-_]/),
    );
  return [method.toLowerCase(), ...words.map((word) => word[0]!.toUpperCase() + word.slice(1))].join('');
}

/** The route's own response for `code`, or the error body, with `headers` added. */
function withHeaders(response: unknown, headers: Record<string, unknown>): Schema {
  const base = (response ?? errorResponses(500)[500]) as Schema;
  return { ...base, headers: { ...(base.headers as Schema | undefined), ...headers } };
}

/** @fastify/swagger `transform`: the route's schema with the statuses and operationId above. */
export function describeRoute({
  schema,
  url,
  route,
}: {
  schema: FastifySchema;
  url: string;
  route: RouteOptions;
}): { schema: FastifySchema; url: string } {
  // Hidden (Swagger UI's own routes, Bull Board) or undocumented (no schema): left as they are.
  if ((schema as Schema | undefined)?.hide === true || (schema as unknown) === undefined)
    return { schema, url };
  const own = schema as Schema;
  const method = [route.method].flat()[0]!;
  const config = route.config ?? {};
  const scope = config.scope ?? 'any';
  const responses: Record<string, unknown> = { ...(own.response as Schema | undefined) };
  const add = (...codes: number[]): void => {
    for (const code of codes) responses[code] ??= errorResponses(code)[code];
  };
  if (scope !== 'public') {
    responses[401] = withHeaders(responses[401], CHALLENGE_HEADER);
    if (scope !== 'any') add(403);
  }
  if (BODY_METHODS.has(method)) {
    add(400, 413, 415);
    responses[408] ??= REQUEST_TIMEOUT;
  }
  if (own.params !== undefined || own.querystring !== undefined || url.includes(':')) add(400);
  if (config.redis === true || responses[503] !== undefined)
    responses[503] = withHeaders(responses[503], RETRY_AFTER_HEADER);
  add(500);
  return {
    url,
    schema: {
      ...(own as FastifySchema),
      operationId: (own.operationId as string | undefined) ?? operationIdOf(method, url),
      response: responses,
    },
  };
}
