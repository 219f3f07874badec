/**
 * Dead letters: list (filters, cursor pagination), show, delete. Replay and purge, in bulk, are in
 * dead-letter-bulk.ts.
 */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import { errorTypeSchema } from '../../core/job.ts';
import { DeadLetterPurger } from '../../dead-letter/purge.ts';
import {
  deadLetterDetailSchema,
  type DeadLetterListOptions,
  DeadLetterReader,
  deadLetterViewSchema,
  MAX_LIST_LIMIT,
} from '../../dead-letter/reader.ts';
import { canAccessTenant, type Principal, principalOf, requireService } from '../auth.ts';
import type { ApiContext } from '../context.ts';
import { NotFoundError } from '../errors.ts';
import { errorResponses, jsonSchema, serviceName, type ZodTypeProvider } from '../schemas.ts';

/** Epoch ms, or an ISO 8601 time (`2026-11-23T09:00:00Z`): what an operator types. */
const instant = z
  .string()
  .transform((text, ctx) => {
    const ms = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
    if (!Number.isSafeInteger(ms) || ms < 0) {
      ctx.addIssue({ code: 'custom', message: 'must be epoch milliseconds or an ISO 8601 time' });
      return z.NEVER;
    }
    return ms;
  })
  .describe('epoch ms or ISO 8601');

const listQuerySchema = z.strictObject({
  service: serviceName.optional(),
  operation: z.string().min(1).max(128).optional(),
  tenant: z.string().min(1).max(128).optional(),
  errorType: errorTypeSchema.optional(),
  status: z.coerce.number().int().min(100).max(599).optional().describe('HTTP status of the final error'),
  since: instant.optional(),
  until: instant.optional(),
  cursor: z.string().min(1).max(1000).optional().describe('nextCursor of the previous page'),
  limit: z.coerce.number().int().min(1).max(MAX_LIST_LIMIT).optional().describe('default 50'),
  includeInput: z.enum(['true', 'false']).optional().describe('include each input (default false)'),
});

const idParams = z.strictObject({ id: z.string().min(1).max(400) });

const pageSchema = z.object({
  items: z.array(deadLetterViewSchema),
  nextCursor: z
    .string()
    .nullable()
    .describe('pass it back as `cursor` for the next page; null at the end. A short page may still have one'),
  examined: z.number().int(),
});

function scopeOf(principal: Principal): DeadLetterListOptions['scope'] {
  if (principal.services === undefined && principal.tenants === undefined) return undefined;
  return {
    ...(principal.services === undefined ? {} : { services: [...principal.services] }),
    ...(principal.tenants === undefined ? {} : { tenants: [...principal.tenants] }),
  };
}

export function deadLetterRoutes(fastify: FastifyInstance, ctx: ApiContext): void {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const reader = new DeadLetterReader({ connection: ctx.connection, prefix: ctx.prefix });
  const purger = new DeadLetterPurger({ connection: ctx.connection, prefix: ctx.prefix });
  app.addHook('onClose', async () => {
    await purger.close();
  });

  /** The dead letter if the token may see it: another service is 403, another tenant's is "not found". */
  async function visible(principal: Principal, id: string): Promise<z.infer<typeof deadLetterDetailSchema>> {
    const detail = await reader.show(id);
    if (detail !== undefined) requireService(principal, detail.service);
    if (detail === undefined || !canAccessTenant(principal, detail.tenant)) {
      throw new NotFoundError(`dead letter "${id}" not found`);
    }
    return detail;
  }

  app.get(
    '/v1/dead-letters',
    {
      config: { scope: 'jobs:read', redis: true },
      schema: {
        summary: 'List dead letters, newest first',
        description:
          'Filters combine (all must match). Each call examines at most 5000 dead letters: with a rare filter a ' +
          'page can be short, even empty, and still carry a nextCursor; only nextCursor: null means the end. ' +
          'Dead letters added or deleted between pages neither repeat nor skip others.',
        tags: ['dead-letters'],
        querystring: jsonSchema(listQuerySchema),
        response: { 200: jsonSchema(pageSchema, { validate: false }), ...errorResponses(400, 401, 403, 503) },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const query = request.query;
      if (query.service !== undefined) {
        ctx.assertService(query.service);
        requireService(principal, query.service);
      }
      const { includeInput, ...filters } = query;
      const scope = scopeOf(principal);
      return reader.list({
        ...filters,
        ...(includeInput === undefined ? {} : { includeInput: includeInput === 'true' }),
        ...(scope === undefined ? {} : { scope }),
      });
    },
  );

  app.get(
    '/v1/dead-letters/:id',
    {
      config: { scope: 'jobs:read', redis: true },
      schema: {
        summary: 'One dead letter: its job, every attempt and the final error',
        tags: ['dead-letters'],
        params: jsonSchema(idParams),
        response: {
          200: jsonSchema(deadLetterDetailSchema, { validate: false }),
          ...errorResponses(400, 401, 403, 404, 503),
        },
      },
    },
    async (request) => visible(principalOf(request), request.params.id),
  );

  app.delete(
    '/v1/dead-letters/:id',
    {
      config: { scope: 'admin', redis: true },
      schema: {
        summary: 'Delete a dead letter (it is not written again by the sweep)',
        tags: ['dead-letters'],
        params: jsonSchema(idParams),
        response: {
          204: { type: 'null', description: 'deleted' },
          ...errorResponses(400, 401, 403, 404, 503),
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const principal = principalOf(request);
      const detail = await visible(principal, id);
      if (!(await purger.delete(id))) throw new NotFoundError(`dead letter "${id}" not found`);
      request.log.info(
        { deadLetterId: id, service: detail.service, tokenName: principal.name },
        'dead letter deleted',
      );
      return reply.code(204).send();
    },
  );
}
