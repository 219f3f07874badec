/**
 * Route typing (issue 19): ZodTypeProvider types a route's params, query and body from the zod schema that
 * validates them, so handlers read them without casts; principalOf gives the caller of an authenticated route,
 * and a route where no auth ran answers 500 rather than serve the request as nobody.
 *
 * The expectTypeOf and @ts-expect-error lines are checked by `npm run typecheck` (tsc reads test/); vitest
 * checks what the handlers are handed at run time. A bare Fastify with the API's compilers: no Redis needed.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { describe, expect, expectTypeOf, it, onTestFinished } from 'vitest';
import { z } from 'zod';

import { type Principal, principalOf } from '../../src/api/auth.ts';
import { handleError } from '../../src/api/errors.ts';
import {
  errorResponses,
  jsonSchema,
  serializerCompiler,
  serviceName,
  validatorCompiler,
  type ZodTypeProvider,
} from '../../src/api/schemas.ts';

const PRINCIPAL: Principal = Object.freeze({
  name: 'ops',
  scopes: new Set(['admin'] as const),
  services: undefined,
  tenants: undefined,
});

/** Fastify with the API's validator, serializer and error handler (as app.ts sets them), typed by the provider. */
function bareApp(): FastifyInstance {
  const app = Fastify();
  onTestFinished(() => app.close());
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(handleError);
  app.decorateRequest('principal', undefined);
  return app;
}

const thingParams = z.strictObject({ service: serviceName });
const thingQuery = z.strictObject({ limit: z.coerce.number().int().min(1).optional() });
const thingBody = z.strictObject({ count: z.number().int(), note: z.string().optional() }).nullish();

describe('ZodTypeProvider', () => {
  it('types params, query and body from their zod schemas, as the validator parsed them', async () => {
    const app = bareApp().withTypeProvider<ZodTypeProvider>();
    app.post(
      '/things/:service',
      {
        schema: {
          params: jsonSchema(thingParams),
          querystring: jsonSchema(thingQuery),
          body: jsonSchema(thingBody),
          response: { 201: jsonSchema(z.object({}), { validate: false }), ...errorResponses(400, 422) },
        },
      },
      async (request, reply) => {
        expectTypeOf(request.params).toEqualTypeOf<{ service: string }>();
        expectTypeOf(request.query).toEqualTypeOf<{ limit?: number | undefined }>();
        expectTypeOf(request.body).toEqualTypeOf<
          { count: number; note?: string | undefined } | null | undefined
        >();
        // A status is one the route documents: errorResponses keeps its codes in the type.
        expectTypeOf(() => reply.code(422)).toBeFunction();
        // @ts-expect-error 418 is not a status of this route
        expectTypeOf(() => reply.code(418)).toBeFunction();
        return reply.code(201).send({ params: request.params, query: request.query, body: request.body });
      },
    );

    const answer = await app.inject({
      method: 'POST',
      url: '/things/crm?limit=5',
      payload: { count: 2 },
    });

    expect(answer.statusCode).toBe(201);
    // `limit` arrives coerced to a number: the handler gets zod's output, which the type says.
    expect(answer.json()).toEqual({ params: { service: 'crm' }, query: { limit: 5 }, body: { count: 2 } });
  });

  it('refuses a request the schema refuses, naming the field, before the handler runs', async () => {
    const app = bareApp().withTypeProvider<ZodTypeProvider>();
    let calls = 0;
    app.get(
      '/things/:service',
      { schema: { params: jsonSchema(thingParams), querystring: jsonSchema(thingQuery) } },
      async () => {
        calls++;
        return {};
      },
    );

    const badQuery = await app.inject({ method: 'GET', url: '/things/crm?limit=0' });
    const unknownField = await app.inject({ method: 'GET', url: '/things/crm?limitt=1' });

    expect(badQuery.statusCode).toBe(400);
    expect(badQuery.json()).toMatchObject({ error: { type: 'ValidationError', field: 'limit' } });
    expect(badQuery.json().error.message).toMatch(/^query limit: /);
    expect(unknownField.statusCode).toBe(400);
    expect(unknownField.json()).toMatchObject({ error: { type: 'ValidationError', field: 'query' } });
    expect(unknownField.json().error.message).toContain('unknown field(s): limitt');
    expect(calls).toBe(0);
  });

  it('leaves a documentation-only part unknown and as sent: the handler validates it', async () => {
    const app = bareApp().withTypeProvider<ZodTypeProvider>();
    app.post(
      '/raw',
      { schema: { body: jsonSchema(z.strictObject({ count: z.number() }), { validate: false }) } },
      async (request) => {
        expectTypeOf(request.body).toBeUnknown();
        return { body: request.body };
      },
    );

    const answer = await app.inject({ method: 'POST', url: '/raw', payload: { count: 'x', extra: true } });

    expect(answer.json()).toEqual({ body: { count: 'x', extra: true } });
  });
});

describe('principalOf', () => {
  it('gives the principal the auth hook set', async () => {
    const app = bareApp();
    app.addHook('onRequest', async (request) => {
      request.principal = PRINCIPAL;
    });
    app.get('/me', async (request) => {
      const principal = principalOf(request);
      expectTypeOf(principal).toEqualTypeOf<Principal>();
      return { name: principal.name };
    });

    const answer = await app.inject({ method: 'GET', url: '/me' });

    expect(answer.json()).toEqual({ name: 'ops' });
  });

  it('answers 500 InternalError, telling the client nothing, when no auth ran', async () => {
    const app = bareApp();
    let served = false;
    app.get('/me/:id', async (request) => {
      const principal = principalOf(request);
      served = true;
      return { name: principal.name };
    });

    const answer = await app.inject({ method: 'GET', url: '/me/x?secret=1' });

    expect(answer.statusCode).toBe(500);
    expect(answer.json()).toEqual({ error: { type: 'InternalError', message: 'internal error' } });
    expect(served).toBe(false);
  });

  it('names the route pattern, never the URL the client sent, in its error', () => {
    const request = {
      principal: undefined,
      method: 'GET',
      url: '/me/x?secret=1',
      routeOptions: { url: '/me/:id' },
    };

    expect(() => principalOf(request)).toThrow('GET /me/:id: no principal; the auth hook did not run');
    expect(() => principalOf(request)).not.toThrow(/secret/);
  });
});
