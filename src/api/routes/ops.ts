/**
 * Operations the `ferry` CLI also has (issue 5), through the same src/ops functions so both do the same thing:
 * per-service status, a service's retry plan, and a manual breaker open (maintenance window) and close.
 */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import { closeBreaker, openBreaker } from '../../ops/breaker-control.ts';
import type { OpsDeps } from '../../ops/deps.ts';
import { planRetries } from '../../ops/retry-plan.ts';
import { readStatus } from '../../ops/status.ts';
import { canAccessService, type Principal, principalOf, requireService } from '../auth.ts';
import type { ApiContext } from '../context.ts';
import { ForbiddenError } from '../errors.ts';
import { errorResponses, jsonSchema, serviceName, type ZodTypeProvider } from '../schemas.ts';

const breakerSchema = z.object({
  state: z.enum(['closed', 'open', 'halfOpen']),
  openedAt: z.number().optional().describe('epoch ms'),
  openUntil: z.number().optional().describe('epoch ms; after it one probe call decides'),
  manual: z
    .boolean()
    .optional()
    .describe('opened by an operator: no automatic probe closes it before openUntil'),
  reason: z.string().optional().describe("the operator's reason"),
});

const breakerViewSchema = breakerSchema.extend({
  service: z.string(),
  heldForMs: z
    .number()
    .describe("how long workers still wait before taking this service's jobs; 0 = not held"),
});

const serviceStatusSchema = z.object({
  service: z.string(),
  waiting: z.number().int().describe('ready to run (wait + prioritized)'),
  active: z.number().int(),
  delayed: z.number().int().describe('waiting for a backoff or a delayed enqueue'),
  held: z
    .object({ reason: z.enum(['breakerOpen', 'rateLimited']), untilMs: z.number() })
    .nullable()
    .describe('workers hold the whole queue until untilMs (epoch ms); null: not held'),
  lastHour: z
    .object({ completed: z.number().int(), failed: z.number().int() })
    .nullable()
    .describe(
      'completed and dead-lettered in the last hour (as far as retention keeps them); null: no finished job is kept',
    ),
  deadLetters: z.number().int(),
  breaker: breakerSchema,
  rateLimit: z.object({ max: z.number(), perMs: z.number() }).nullable(),
  paused: z.boolean(),
  workers: z.number().int().describe('worker connections on the queue'),
});

const range = z.object({ minMs: z.number(), maxMs: z.number(), expectedMs: z.number() });

const retryPlanSchema = z.object({
  service: z.string(),
  attempts: z.number().int(),
  delayMs: z.number(),
  maxDelayMs: z.number(),
  timeline: z.array(
    z.object({
      attempt: z.number().int().describe('1-based'),
      startsAfter: range.describe("counted from the first attempt's start"),
      delayAfter: range
        .extend({ capMs: z.number() })
        .nullable()
        .describe('the full-jitter wait after a retryable failure; null for the last attempt'),
    }),
  ),
  untilDeadLetter: range.describe("from the first attempt's start to the last one's"),
  callTimeMaxMs: z
    .number()
    .optional()
    .describe('longest time the calls themselves add (attempts × timeoutMs)'),
  notes: z.array(z.string()),
});

const serviceParams = z.strictObject({ service: serviceName });

const openBodySchema = z
  .strictObject({
    forMs: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe("how long it stays open, ms; default the service's retry.maxHoldMs (1 h by default)"),
    reason: z
      .string()
      .min(1)
      .max(200)
      .optional()
      .describe('shown by GET /v1/breakers and ferry breakers list'),
  })
  // No body at all means the defaults (Fastify hands the validator null then).
  .nullish();

function opsDeps(ctx: ApiContext): OpsDeps {
  return { connection: ctx.connection, prefix: ctx.prefix, config: ctx.config };
}

/**
 * An open or a close acts on every job of the service, whatever its tenant: a token limited to tenants may
 * not do it (as it may not reencrypt every secret), only one limited to the service or not at all.
 */
function requireWholeService(principal: Principal, service: string): void {
  requireService(principal, service);
  if (principal.tenants !== undefined) {
    throw new ForbiddenError(
      `token "${principal.name}" is limited to tenants; a breaker acts on every tenant of "${service}"`,
    );
  }
}

export function opsRoutes(fastify: FastifyInstance, ctx: ApiContext): void {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const deps = opsDeps(ctx);

  app.get(
    '/v1/status',
    {
      config: { scope: 'jobs:read', redis: true },
      schema: {
        summary: 'Per-service status: queue counts, hold, last hour, dead letters, breaker, workers',
        description:
          'What `ferry status` prints, for the services the token may use, in the services file order.',
        tags: ['services'],
        response: {
          200: jsonSchema(z.object({ services: z.array(serviceStatusSchema) }), { validate: false }),
          ...errorResponses(401, 403, 503),
        },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const names = [...ctx.config.services.keys()].filter((name) => canAccessService(principal, name));
      return { services: names.length === 0 ? [] : await readStatus(deps, names) };
    },
  );

  app.get(
    '/v1/services/:service/retry-plan',
    {
      config: { scope: 'jobs:read' },
      schema: {
        summary: "The attempt timeline of a service's retry policy (as `ferry retry-plan`)",
        description:
          'Delays with their full-jitter range and the time until a job failing every time is dead-lettered. ' +
          "Computed from the services file; ignores the calls' own durations and holds.",
        tags: ['services'],
        params: jsonSchema(serviceParams),
        response: {
          200: jsonSchema(retryPlanSchema, { validate: false }),
          ...errorResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => {
      const { service } = request.params;
      ctx.assertService(service);
      requireService(principalOf(request), service);
      const settings = ctx.config.services.get(service)!;
      return { service, ...planRetries(settings.retry, { timeoutMs: settings.timeoutMs }) };
    },
  );

  app.post(
    '/v1/breakers/:service/open',
    {
      config: { scope: 'admin', redis: true },
      schema: {
        summary: 'Open a breaker in every worker (a maintenance window)',
        description:
          'Within about a second no worker calls the service; its jobs are held without using attempts, for ' +
          'up to retry.maxHoldMs per job (`exceedsMaxHold` says when `forMs` is longer: pause the queue too). ' +
          'No automatic probe closes it before `forMs` has passed; then one probe call decides.',
        tags: ['services'],
        params: jsonSchema(serviceParams),
        body: jsonSchema(openBodySchema),
        response: {
          200: jsonSchema(
            breakerViewSchema.extend({
              exceedsMaxHold: z.boolean(),
              maxHoldMs: z.number(),
            }),
            { validate: false },
          ),
          ...errorResponses(400, 401, 403, 404, 503),
        },
      },
    },
    async (request) => {
      const { service } = request.params;
      const principal = principalOf(request);
      ctx.assertService(service);
      requireWholeService(principal, service);
      const body = request.body ?? {};
      const result = await openBreaker(deps, service, body);
      request.log.info(
        { service, forMs: body.forMs, reason: body.reason, tokenName: principal.name },
        'breaker opened',
      );
      return result;
    },
  );

  app.post(
    '/v1/breakers/:service/close',
    {
      config: { scope: 'admin', redis: true },
      schema: {
        summary: 'Close a breaker in every worker and end its hold',
        description:
          "Every worker takes the service's jobs again within about a second. Answers once every worker has " +
          'had time to see the close (about a second when it was open).',
        tags: ['services'],
        params: jsonSchema(serviceParams),
        response: {
          200: jsonSchema(breakerViewSchema, { validate: false }),
          ...errorResponses(400, 401, 403, 404, 503),
        },
      },
    },
    async (request) => {
      const { service } = request.params;
      const principal = principalOf(request);
      ctx.assertService(service);
      requireWholeService(principal, service);
      const view = await closeBreaker(deps, service);
      request.log.info({ service, tokenName: principal.name }, 'breaker closed');
      return view;
    },
  );
}
