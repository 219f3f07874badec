/**
 * The services file's schedules (issue 16 § 5), through the same src/ops functions as `ferry schedules`: the
 * list with next and last run (jobs:read, like the other reads), and pause, resume and run-now (admin, like the
 * breaker and queue actions). A token limited to services sees, and acts on, their schedules only; one limited
 * to tenants, only the schedules that run as one of its tenants.
 */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import type { ScheduleConfig } from '../../core/services/types.ts';
import type { OpsDeps } from '../../ops/deps.ts';
import { listSchedules, pauseSchedule, resumeSchedule, runScheduleNow } from '../../ops/schedules.ts';
import { canAccessService, canAccessTenant, type Principal, principalOf, requireAccess } from '../auth.ts';
import type { ApiContext } from '../context.ts';
import { NotFoundError } from '../errors.ts';
import { errorResponses, jsonSchema, type ZodTypeProvider } from '../schemas.ts';

const scheduleViewSchema = z.object({
  name: z.string(),
  service: z.string(),
  operation: z.string(),
  cron: z.string().optional().describe('cron expression (5 fields, or 6 with seconds first)'),
  tz: z.string().optional().describe('IANA time zone of the cron expression'),
  everyMs: z.number().int().optional(),
  tenant: z.string().optional(),
  paused: z.boolean(),
  nextRunAt: z
    .number()
    .nullable()
    .describe('epoch ms of the next run; null while paused, or before a worker of the service started'),
  lastRun: z
    .object({
      runAt: z.number().describe('epoch ms: the run time (or the moment of run-now)'),
      service: z.string(),
      jobId: z.string().describe('the run: an ordinary job of the service (GET /v1/jobs/{service}/{id})'),
      idempotencyKey: z.string().describe('ferry-schedule-<name>-<run time ms> (-now-<ms> for run-now)'),
      trigger: z.enum(['schedule', 'runNow']),
      outcome: z
        .enum(['completed', 'deadLettered', 'running', 'unknown'])
        .describe('unknown: the job is gone (past its retention)'),
      deadLetterId: z.string().optional(),
      routedTo: z
        .object({ service: z.string(), jobId: z.string() })
        .optional()
        .describe(
          "the run was routed to its service's fallback (breaker open): the job the outcome is from, the route's last",
        ),
    })
    .nullable(),
});

const nameParams = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'must be a schedule name'),
});

function opsDeps(ctx: ApiContext): OpsDeps {
  return { connection: ctx.connection, prefix: ctx.prefix, config: ctx.config, keyring: ctx.keyring };
}

function visible(principal: Principal, schedule: ScheduleConfig): boolean {
  return canAccessService(principal, schedule.service) && canAccessTenant(principal, schedule.tenant);
}

export function scheduleRoutes(fastify: FastifyInstance, ctx: ApiContext): void {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const deps = opsDeps(ctx);

  /** The schedule, or 404; 403 when the token may not use its service or tenant. */
  const scheduleFor = (principal: Principal, name: string): ScheduleConfig => {
    const schedule = ctx.config.schedules.get(name);
    if (schedule === undefined)
      throw new NotFoundError(`unknown schedule "${name}" (not in the services file)`);
    requireAccess(principal, schedule.service, schedule.tenant);
    return schedule;
  };

  app.get(
    '/v1/schedules',
    {
      config: { scope: 'jobs:read', redis: true },
      schema: {
        summary: 'Every schedule: when it runs, its next run, and its last run with the outcome',
        description:
          'What `ferry schedules list` prints, for the schedules the token may see, in the services file order.',
        tags: ['services'],
        response: {
          200: jsonSchema(z.object({ schedules: z.array(scheduleViewSchema) }), { validate: false }),
          ...errorResponses(401, 403, 503),
        },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const names = [...ctx.config.schedules.values()]
        .filter((schedule) => visible(principal, schedule))
        .map((schedule) => schedule.name);
      return { schedules: names.length === 0 ? [] : await listSchedules(deps, names) };
    },
  );

  for (const action of ['pause', 'resume'] as const) {
    app.post(
      `/v1/schedules/:name/${action}`,
      {
        config: { scope: 'admin', redis: true },
        schema: {
          summary:
            action === 'pause'
              ? 'Pause a schedule in every worker, across their restarts'
              : 'Resume a paused schedule',
          description:
            action === 'pause'
              ? 'No run until resumed; the pause is kept in Redis, so a worker that restarts keeps it.'
              : "The schedule's scheduler is recreated from this API's services file; its next run follows it.",
          tags: ['services'],
          params: jsonSchema(nameParams),
          response: {
            200: jsonSchema(scheduleViewSchema, { validate: false }),
            ...errorResponses(400, 401, 403, 404, 503),
          },
        },
      },
      async (request) => {
        const { name } = request.params;
        const principal = principalOf(request);
        scheduleFor(principal, name);
        const view = action === 'pause' ? await pauseSchedule(deps, name) : await resumeSchedule(deps, name);
        request.log.info({ schedule: name, tokenName: principal.name }, `schedule ${action}d`);
        return view;
      },
    );
  }

  app.post(
    '/v1/schedules/:name/run-now',
    {
      config: { scope: 'admin', redis: true },
      schema: {
        summary: 'Add one run of a schedule at once',
        description:
          "An ordinary job of the schedule's service, with its own idempotency key (`ferry-schedule-<name>-now-<ms>`), " +
          'paused or not; the schedule goes on as before.',
        tags: ['services'],
        params: jsonSchema(nameParams),
        response: {
          202: jsonSchema(
            z.object({
              schedule: z.string(),
              service: z.string(),
              jobId: z.string(),
              idempotencyKey: z.string(),
              runAt: z.number().describe('epoch ms'),
            }),
            { validate: false },
          ),
          ...errorResponses(400, 401, 403, 404, 503),
        },
      },
    },
    async (request, reply) => {
      const { name } = request.params;
      const principal = principalOf(request);
      scheduleFor(principal, name);
      const run = await runScheduleNow(deps, name);
      request.log.info({ schedule: name, jobId: run.jobId, tokenName: principal.name }, 'schedule run now');
      return reply.code(202).send(run);
    },
  );
}
