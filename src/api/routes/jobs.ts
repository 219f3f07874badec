/** Jobs: enqueue (one or a batch), read, cancel. */
import type { FastifyInstance } from 'fastify';

import { isFerryError, ValidationError } from '../../core/errors.ts';
import { type EnqueueRequest, jobBodyBytes } from '../../core/job.ts';
import { traceContextOfHeaders } from '../../core/trace-context.ts';
import type { EnqueueResult, JobView } from '../../producer/producer.ts';
import { validateEnqueueRequest } from '../../producer/validate.ts';
import { canAccessTenant, type Principal, principalOf, requireAccess, requireService } from '../auth.ts';
import type { ApiContext } from '../context.ts';
import { ConflictError, type ErrorBody, ForbiddenError, NotFoundError, toErrorResponse } from '../errors.ts';
import {
  acceptedSchema,
  batchBodySchema,
  batchResultSchema,
  enqueueBody,
  errorResponses,
  jobParamsSchema,
  jobViewSchema,
  jsonSchema,
  MAX_BATCH_JOBS,
  type ZodTypeProvider,
} from '../schemas.ts';

/**
 * W3C Trace Context request headers (docs/api.md, Tracing). Declared for the OpenAPI document only: no
 * constraint, so a malformed value is ignored (never a 4xx for a trace header), as core/trace-context.ts does.
 */
const traceHeaders = {
  type: 'object',
  properties: {
    traceparent: {
      type: 'string',
      description:
        'W3C traceparent (`00-<trace-id>-<parent-id>-<flags>`): the job continues this trace. Stored in the ' +
        "job's metadata.traceparent unless the body's metadata has one; a malformed value is ignored.",
    },
    tracestate: {
      type: 'string',
      description:
        'W3C tracestate, kept with a valid traceparent: at most 512 characters and 32 members, else ignored.',
    },
  },
} as const;

function accepted(result: EnqueueResult): {
  id: string;
  service: string;
  operation: string;
  status: 'queued' | 'existing';
  statusUrl: string;
  eventsUrl: string;
} {
  const statusUrl = `/v1/jobs/${result.service}/${encodeURIComponent(result.id)}`;
  return {
    id: result.id,
    service: result.service,
    operation: result.operation,
    status: result.created ? 'queued' : 'existing',
    statusUrl,
    eventsUrl: `${statusUrl}/events`,
  };
}

export function jobRoutes(fastify: FastifyInstance, ctx: ApiContext): void {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const catalog = ctx.config.services;
  // One job needs at most one job's body at the largest service's input cap: the rest of the body limit is
  // for batches.
  let largestInput = 0;
  for (const service of catalog.values()) largestInput = Math.max(largestInput, service.maxInputBytes);
  const oneJobBodyLimit = Math.min(
    app.initialConfig.bodyLimit ?? Number.POSITIVE_INFINITY,
    jobBodyBytes(largestInput, ctx.producer.maxMetadataBytes),
  );

  /** The job a token may read, or 404 (another tenant's job does not exist for a tenant-limited token). */
  async function readableJob(principal: Principal, service: string, id: string): Promise<JobView> {
    ctx.assertService(service);
    requireService(principal, service);
    const view = await ctx.producer.get(service, id);
    if (view === undefined || !canAccessTenant(principal, view.tenant)) {
      throw new NotFoundError(`job "${id}" of service "${service}" not found`);
    }
    return view;
  }

  /**
   * An idempotent repeat returns the existing job, unless that job belongs to a tenant the token may not see:
   * idempotency keys are per service, so another tenant's key is a conflict, and nothing about it is shown.
   */
  async function existingOrConflict(
    principal: Principal,
    result: EnqueueResult,
  ): Promise<{ view: JobView | undefined }> {
    const view = await ctx.producer.get(result.service, result.id);
    if (view !== undefined && !canAccessTenant(principal, view.tenant)) {
      throw new ConflictError('idempotencyKey is already used by another job');
    }
    return { view };
  }

  app.post(
    '/v1/jobs',
    {
      config: { scope: 'jobs:write', redis: true },
      bodyLimit: oneJobBodyLimit,
      schema: {
        summary: 'Enqueue one job',
        description:
          '202 with the new job; 200 with the existing job when idempotencyKey matches one enqueued before.',
        tags: ['jobs'],
        headers: traceHeaders,
        body: enqueueBody,
        response: {
          202: jsonSchema(acceptedSchema, { validate: false }),
          200: jsonSchema(acceptedSchema.extend({ job: jobViewSchema }), { validate: false }),
          ...errorResponses(400, 401, 403, 409, 413, 415, 422, 503),
        },
      },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const length = Number(request.headers['content-length']);
      const job = validateEnqueueRequest(request.body, catalog, '', {
        maxMetadataBytes: ctx.producer.maxMetadataBytes,
        ...(Number.isSafeInteger(length) ? { sourceBytes: length } : {}),
      });
      requireAccess(principal, job.service, job.tenant);
      const result = await ctx.producer.enqueue(job, { trace: traceContextOfHeaders(request.headers) });
      const body = accepted(result);
      if (result.created) return reply.code(202).header('location', body.statusUrl).send(body);
      const { view } = await existingOrConflict(principal, result);
      return reply
        .code(200)
        .header('location', body.statusUrl)
        .send({ ...body, job: view });
    },
  );

  app.post(
    '/v1/jobs/batch',
    {
      config: { scope: 'jobs:write', redis: true },
      schema: {
        summary: 'Enqueue up to 1000 jobs',
        description:
          'Every job is validated before any is added. Valid jobs are added and refused ones get their error ' +
          '(per-item results); with atomic: true, one refused job means none is added (422).',
        tags: ['jobs'],
        headers: traceHeaders,
        // Checked by parseBatchBody: zod would copy the array of up to 1000 jobs only to hand it back.
        body: jsonSchema(batchBodySchema, { validate: false }),
        response: {
          200: jsonSchema(batchResultSchema, { validate: false }),
          ...errorResponses(400, 401, 403, 413, 415, 422, 503),
        },
      },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const body = parseBatchBody(request.body);
      type Item = { index: number; status: number; id?: string; error?: ErrorBody['error'] };
      const items: Item[] = new Array<Item>(body.jobs.length);
      const valid: { index: number; job: EnqueueRequest }[] = [];
      body.jobs.forEach((raw, index) => {
        try {
          const job = validateEnqueueRequest(raw, catalog, `jobs[${index}].`, {
            maxMetadataBytes: ctx.producer.maxMetadataBytes,
          });
          requireAccess(principal, job.service, job.tenant);
          valid.push({ index, job });
        } catch (error) {
          if (!isFerryError(error) && !(error instanceof ForbiddenError)) throw error;
          const mapped = toErrorResponse(error);
          items[index] = { index, status: mapped.statusCode, error: mapped.body.error };
        }
      });
      const rejected = body.jobs.length - valid.length;
      if (body.atomic && rejected > 0) {
        const first = items.find((item) => item !== undefined)!;
        return reply.code(422).send({
          error: {
            type: 'ValidationError',
            message: `${rejected} of ${body.jobs.length} jobs refused; none added (atomic). First: ${first.error?.message ?? ''}`,
            field: first.error?.field ?? `jobs[${first.index}]`,
          },
          results: items.filter((item) => item !== undefined),
        });
      }
      const results =
        valid.length === 0
          ? []
          : await ctx.producer.enqueueMany(
              valid.map((v) => v.job),
              { trace: traceContextOfHeaders(request.headers) },
            );
      await Promise.all(
        results.map(async (result, i) => {
          const index = valid[i]!.index;
          if (result.created) {
            items[index] = { index, status: 202, id: result.id };
            return;
          }
          try {
            await existingOrConflict(principal, result);
            items[index] = { index, status: 200, id: result.id };
          } catch (error) {
            const mapped = toErrorResponse(error);
            items[index] = { index, status: mapped.statusCode, error: mapped.body.error };
          }
        }),
      );
      const acceptedCount = items.filter((item) => item.status < 300).length;
      return reply.code(200).send({
        accepted: acceptedCount,
        rejected: items.length - acceptedCount,
        results: items,
      });
    },
  );

  app.get(
    '/v1/jobs/:service/:id',
    {
      config: { scope: 'jobs:read', redis: true },
      schema: {
        summary: 'A job: state, attempts, last error, result, dead-letter reference',
        tags: ['jobs'],
        params: jsonSchema(jobParamsSchema),
        response: {
          200: jsonSchema(jobViewSchema, { validate: false }),
          ...errorResponses(400, 401, 403, 404, 503),
        },
      },
    },
    async (request) => {
      const { service, id } = request.params;
      return readableJob(principalOf(request), service, id);
    },
  );

  app.delete(
    '/v1/jobs/:service/:id',
    {
      config: { scope: 'jobs:write', redis: true },
      schema: {
        summary: 'Cancel a job that is waiting or delayed',
        description: '204 when removed; 409 when it is active, completed or dead-lettered.',
        tags: ['jobs'],
        params: jsonSchema(jobParamsSchema),
        response: {
          204: { type: 'null', description: 'cancelled' },
          ...errorResponses(400, 401, 403, 404, 409, 503),
        },
      },
    },
    async (request, reply) => {
      const { service, id } = request.params;
      const principal = principalOf(request);
      const view = await readableJob(principal, service, id);
      const outcome = await ctx.producer.cancel(service, id);
      if (outcome === 'missing') throw new NotFoundError(`job "${id}" of service "${service}" not found`);
      if (outcome === 'notCancellable') {
        const waiting = view.state === 'waiting' || view.state === 'delayed' || view.state === 'prioritized';
        throw new ConflictError(
          waiting
            ? `job "${id}" was just taken by a worker; it can no longer be cancelled`
            : `job "${id}" is ${view.state}; only waiting or delayed jobs can be cancelled`,
        );
      }
      request.log.info({ service, jobId: id, tokenName: principal.name }, 'job cancelled');
      return reply.code(204).send();
    },
  );
}

/** The batch envelope, checked by hand (the jobs themselves are validated one by one, as for POST /v1/jobs). */
function parseBatchBody(body: unknown): { jobs: readonly unknown[]; atomic: boolean } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ValidationError('body: must be an object { jobs: [...] }', { field: 'body' });
  }
  const { jobs, atomic, ...rest } = body as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) {
    throw new ValidationError(`body: unknown field(s): ${unknown.join(', ')}`, { field: 'body' });
  }
  if (!Array.isArray(jobs)) throw new ValidationError('jobs: must be an array of jobs', { field: 'jobs' });
  if (jobs.length === 0) throw new ValidationError('jobs: must hold at least one job', { field: 'jobs' });
  if (jobs.length > MAX_BATCH_JOBS) {
    throw new ValidationError(`jobs: must hold at most ${MAX_BATCH_JOBS} jobs`, { field: 'jobs' });
  }
  if (atomic !== undefined && typeof atomic !== 'boolean') {
    throw new ValidationError('atomic: must be true or false', { field: 'atomic' });
  }
  return { jobs, atomic: atomic === true };
}
