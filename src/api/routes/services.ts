/** Configured services, their breakers, and their queues (counts, pause, resume). */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import { readSharedState } from '../../breakers/index.ts';
import { breakerKey } from '../../core/queue-layout.ts';
import type { ServiceConfig } from '../../core/services/types.ts';
import { canAccessService, type Principal, principalOf, requireService } from '../auth.ts';
import type { ApiContext } from '../context.ts';
import { errorResponses, jsonSchema, serviceName, type ZodTypeProvider } from '../schemas.ts';

const serviceViewSchema = z.object({
  name: z.string(),
  baseUrl: z.string().describe('as configured, templates unexpanded'),
  auth: z.object({ type: z.enum(['none', 'bearer', 'basic', 'apiKey', 'oauth2']) }),
  secretNames: z.array(z.string()).describe('names of the secrets its templates read; never values'),
  timeoutMs: z.number(),
  concurrency: z.number(),
  rateLimit: z.object({ max: z.number(), perMs: z.number() }).optional(),
  tenantConcurrency: z
    .number()
    .optional()
    .describe('calls in flight per tenant across all workers; absent: no limit'),
  retry: z.object({
    attempts: z.number(),
    delayMs: z.number(),
    maxDelayMs: z.number(),
    retryOn: z.array(z.number()),
  }),
  breaker: z.object({
    errorThresholdPercentage: z.number(),
    volumeThreshold: z.number(),
    rollingWindowMs: z.number(),
    resetTimeoutMs: z.number(),
  }),
  maxResponseBytes: z.number(),
  maxInputBytes: z.number(),
  tenantSecrets: z.enum(['fallback', 'required']),
  operations: z.array(
    z.object({ name: z.string(), method: z.string(), path: z.string(), timeoutMs: z.number() }),
  ),
});

const breakerViewSchema = z.object({
  service: z.string(),
  state: z.enum(['closed', 'open', 'halfOpen']),
  openedAt: z.number().optional().describe('epoch ms'),
  openUntil: z.number().optional().describe('epoch ms; after it one probe call decides'),
  heldForMs: z
    .number()
    .describe(
      "how long workers still wait before taking this service's jobs (breaker hold, 429/503 Retry-After or rate limit); 0 = not held",
    ),
});

const queueViewSchema = z.object({
  service: z.string(),
  paused: z.boolean(),
  counts: z.record(z.string(), z.number()),
});

const serviceParams = z.strictObject({ service: serviceName });

/**
 * Only what an operator needs to see: templates stay unexpanded (secret names, never values), and a baseUrl
 * holds no credentials (the loader refuses them: they belong in `auth`).
 */
function serviceView(service: ServiceConfig): z.infer<typeof serviceViewSchema> {
  return {
    name: service.name,
    baseUrl: service.baseUrl.source,
    auth: { type: service.auth.type },
    secretNames: [...service.secretNames],
    timeoutMs: service.timeoutMs,
    concurrency: service.concurrency,
    ...(service.rateLimit === undefined ? {} : { rateLimit: { ...service.rateLimit } }),
    ...(service.tenantConcurrency === undefined ? {} : { tenantConcurrency: service.tenantConcurrency }),
    retry: {
      attempts: service.retry.attempts,
      delayMs: service.retry.delayMs,
      maxDelayMs: service.retry.maxDelayMs,
      retryOn: [...service.retry.retryOn],
    },
    breaker: { ...service.breaker },
    maxResponseBytes: service.maxResponseBytes,
    maxInputBytes: service.maxInputBytes,
    tenantSecrets: service.tenantSecrets,
    operations: [...service.operations.values()].map((operation) => ({
      name: operation.name,
      method: operation.method,
      path: operation.path.source,
      timeoutMs: operation.timeoutMs,
    })),
  };
}

function visibleServices(ctx: ApiContext, principal: Principal): ServiceConfig[] {
  return [...ctx.config.services.values()].filter((service) => canAccessService(principal, service.name));
}

export function serviceRoutes(fastify: FastifyInstance, ctx: ApiContext): void {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  app.get(
    '/v1/services',
    {
      config: { scope: 'jobs:read' },
      schema: {
        summary: 'Configured services (no secret values)',
        tags: ['services'],
        response: {
          200: jsonSchema(z.object({ services: z.array(serviceViewSchema) }), { validate: false }),
          ...errorResponses(401, 403),
        },
      },
    },
    async (request) => ({ services: visibleServices(ctx, principalOf(request)).map(serviceView) }),
  );

  app.get(
    '/v1/breakers',
    {
      config: { scope: 'jobs:read', redis: true },
      schema: {
        summary: 'Breaker state of every service, as every worker sees it (shared through Redis)',
        tags: ['services'],
        response: {
          200: jsonSchema(z.object({ breakers: z.array(breakerViewSchema) }), { validate: false }),
          ...errorResponses(401, 403, 503),
        },
      },
    },
    async (request) => {
      const now = Date.now();
      const breakers = await Promise.all(
        visibleServices(ctx, principalOf(request)).map(async (service) => {
          const [shared, heldForMs] = await Promise.all([
            readSharedState(ctx.connection, breakerKey(ctx.prefix, service.name)),
            ctx.queue(service.name).getRateLimitTtl(),
          ]);
          const state = shared === null ? 'closed' : shared.record.untilMs > now ? 'open' : 'halfOpen';
          return {
            service: service.name,
            state,
            ...(shared === null
              ? {}
              : { openedAt: shared.record.openedAtMs, openUntil: shared.record.untilMs }),
            heldForMs: Math.max(heldForMs, 0),
          };
        }),
      );
      return { breakers };
    },
  );

  app.get(
    '/v1/queues',
    {
      config: { scope: 'jobs:read', redis: true },
      schema: {
        summary: 'Every service queue: paused or not, jobs by state',
        tags: ['queues'],
        response: {
          200: jsonSchema(z.object({ queues: z.array(queueViewSchema) }), { validate: false }),
          ...errorResponses(401, 403, 503),
        },
      },
    },
    async (request) => {
      const queues = await Promise.all(
        visibleServices(ctx, principalOf(request)).map(async (service) => {
          const queue = ctx.queue(service.name);
          const [paused, counts] = await Promise.all([queue.isPaused(), queue.getJobCounts()]);
          return { service: service.name, paused, counts };
        }),
      );
      return { queues };
    },
  );

  for (const action of ['pause', 'resume'] as const) {
    app.post(
      `/v1/queues/:service/${action}`,
      {
        config: { scope: 'admin', redis: true },
        schema: {
          summary:
            action === 'pause'
              ? 'Pause a service queue: no worker takes its jobs (in-flight calls finish)'
              : 'Resume a paused service queue',
          tags: ['queues'],
          params: jsonSchema(serviceParams),
          response: {
            200: jsonSchema(z.object({ service: z.string(), paused: z.boolean() }), { validate: false }),
            ...errorResponses(400, 401, 403, 404, 503),
          },
        },
      },
      async (request) => {
        const { service } = request.params;
        const principal = principalOf(request);
        const queue = ctx.queue(service);
        requireService(principal, service);
        if (action === 'pause') await queue.pause();
        else await queue.resume();
        request.log.info({ service, tokenName: principal.name }, `queue ${action}d`);
        return { service, paused: await queue.isPaused() };
      },
    );
  }
}
