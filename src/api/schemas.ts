/**
 * Route schemas. Each is a zod schema (core/job.ts is the one source of the job shapes) turned into JSON Schema
 * for Fastify's route definitions, from which @fastify/swagger builds the OpenAPI document. Validation runs
 * the zod schema itself (validatorCompiler below), so the API's messages and fields are the Producer's, and
 * ZodTypeProvider types what the handler reads from the same schema.
 */
import type { FastifySchemaCompiler, FastifyTypeProvider } from 'fastify';
import { z } from 'zod';

import { ValidationError } from '../core/errors.ts';
import {
  attemptRecordSchema,
  enqueueRequestSchema,
  errorRecordSchema,
  issuePath,
  jobOriginSchema,
  MAX_BATCH_JOBS,
} from '../core/job.ts';
import { followableJobRefSchema } from '../core/job-links.ts';
import { MAX_JOB_ID_LENGTH, SERVICE_NAME_PATTERN } from '../core/queue-layout.ts';

type JsonSchema = Record<string, unknown>;

/** Never set: a type-only mark (see ValidatedJsonSchema). */
declare const parsedType: unique symbol;

/**
 * The JSON Schema of a route part that Fastify validates with a zod schema (jsonSchema without `validate:
 * false`), marked at the type level only with what the validator hands the handler: the schema's output.
 */
export type ValidatedJsonSchema<T> = JsonSchema & { readonly [parsedType]: T };

/**
 * Fastify type provider (fastify's `FastifyTypeProvider`, as fastify-type-provider-zod does it): a route's
 * `request.params`, `query`, `body` and `headers` have the output type of the zod schema validating them, so
 * handlers read them without casts. A part without one (none, or documentation only) stays `unknown`.
 * Replies stay `unknown`: response schemas document, they are never enforced (serializerCompiler).
 *
 * Use it in a route module with `app.withTypeProvider<ZodTypeProvider>()` (the same instance, retyped).
 */
export interface ZodTypeProvider extends FastifyTypeProvider {
  readonly validator: this['schema'] extends ValidatedJsonSchema<infer T> ? T : unknown;
  readonly serializer: unknown;
}

const validators = new WeakMap<object, z.ZodType>();

/**
 * JSON Schema of a zod schema for a route definition. With `validate` (the default) the route validates with
 * the zod schema, and ZodTypeProvider types the part from it; with `validate: false`, the schema only documents
 * (the handler validates, e.g. against the services file) and the part stays `unknown`.
 */
export function jsonSchema<S extends z.ZodType>(schema: S): ValidatedJsonSchema<z.output<S>>;
/** With options: untyped (`validate: false` documents only; other options are accepted as before). */
export function jsonSchema(schema: z.ZodType, options: { validate?: boolean }): JsonSchema;
export function jsonSchema(schema: z.ZodType, options: { validate?: boolean } = {}): JsonSchema {
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
  delete json.$schema;
  if (options.validate !== false) validators.set(json, schema);
  return json;
}

/** Fastify validator: the zod schema registered for the JSON Schema, or none (documentation only). */
export const validatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) => {
  const zod = validators.get(schema as object);
  if (zod === undefined) return (data: unknown) => ({ value: data });
  const root = httpPart === 'querystring' ? 'query' : httpPart === 'params' ? 'path' : undefined;
  return (data: unknown) => {
    const parsed = zod.safeParse(data);
    if (parsed.success) return { value: parsed.data };
    const issue = parsed.error.issues[0]!;
    const path = issuePath(issue.path);
    const field = path === '' ? (root ?? 'body') : path;
    const message =
      issue.code === 'unrecognized_keys' ? `unknown field(s): ${issue.keys.join(', ')}` : issue.message;
    return {
      error: new ValidationError(`${root === undefined ? '' : `${root} `}${field}: ${message}`, { field }),
    };
  };
};

/** Responses are written with JSON.stringify: response schemas document, they never strip fields. */
export function serializerCompiler(): (data: unknown) => string {
  return (data) => JSON.stringify(data);
}

// ---- shared pieces ----------------------------------------------------------------------------------------

export const serviceName = z.string().regex(SERVICE_NAME_PATTERN, 'must be a service name');
export const jobId = z.string().min(1).max(MAX_JOB_ID_LENGTH);

export const errorBodySchema = z.object({
  error: z.object({
    type: z
      .string()
      .describe('Stable error type: a delivery type (docs/errors.md) or an API type (docs/api.md)'),
    message: z.string(),
    field: z.string().optional().describe('The request field at fault: `input.email`, `jobs[3].service`'),
  }),
});

/**
 * Response schemas of the error body for the given statuses (documentation: responses are never stripped).
 * Typed by the statuses, so that `reply.code(422)` type-checks only on a route that documents a 422.
 */
export function errorResponses<C extends number>(...codes: C[]): Record<C, JsonSchema> {
  const body = jsonSchema(errorBodySchema, { validate: false });
  return Object.fromEntries(codes.map((code) => [code, body])) as Record<C, JsonSchema>;
}

const jobResultSchema = z.object({
  status: z.number().int(),
  headers: z.record(z.string(), z.string()),
  body: z.unknown(),
  bodyTruncated: z.boolean().optional(),
  durationMs: z.number(),
  attempts: z.number().int(),
  metadata: z.record(z.string(), z.unknown()).optional(),
  next: followableJobRefSchema.optional().describe("`then`: the next step's job"),
  routedTo: followableJobRefSchema
    .optional()
    .describe(
      '`fallback`: the job was moved to this job of the fallback service (its breaker was open); no call was made',
    ),
});

// ---- jobs -------------------------------------------------------------------------------------------------

/** POST /v1/jobs: the Producer's schema; validated in the handler, against the loaded services too. */
export const enqueueBody = jsonSchema(enqueueRequestSchema, { validate: false });

export { MAX_BATCH_JOBS };
export const batchBodySchema = z.strictObject({
  jobs: z
    .array(z.unknown())
    .min(1, 'must hold at least one job')
    .max(MAX_BATCH_JOBS, `must hold at most ${MAX_BATCH_JOBS} jobs`)
    .describe('Enqueue requests, each shaped like the body of POST /v1/jobs'),
  atomic: z
    .boolean()
    .optional()
    .describe('true: add none unless every job is valid (422 with per-item errors); default false'),
});

export const jobParamsSchema = z.strictObject({ service: serviceName, id: jobId });

export const acceptedSchema = z.object({
  id: z.string(),
  service: z.string(),
  operation: z.string(),
  status: z.enum(['queued', 'existing']),
  statusUrl: z.string(),
  eventsUrl: z.string(),
});

export const jobViewSchema = z.object({
  id: z.string(),
  service: z.string(),
  operation: z.string(),
  state: z.enum(['waiting', 'active', 'delayed', 'prioritized', 'completed', 'dead_lettered', 'unknown']),
  attempts: z.number().int().describe('Ferry attempts used so far'),
  history: z.array(attemptRecordSchema),
  lastError: errorRecordSchema.optional(),
  result: jobResultSchema.optional(),
  deadLetterId: z.string().optional(),
  enqueuedAt: z.number(),
  tenant: z.string().optional(),
  idempotencyKey: z.string().optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
  next: followableJobRefSchema
    .optional()
    .describe("A completed job's next step (`then`), checked: follow it to the end of a chain"),
  routedTo: followableJobRefSchema
    .optional()
    .describe('A completed job moved to its fallback service (its breaker was open): the job to follow'),
  origin: jobOriginSchema
    .optional()
    .describe('Why Ferry itself enqueued this job: an onFailure rule, a `then` step, a route, a schedule'),
  sealed: z
    .literal(true)
    .optional()
    .describe('Input and metadata are sealed (a sensitive operation): metadata is not shown'),
});

export const batchResultSchema = z.object({
  accepted: z.number().int(),
  rejected: z.number().int(),
  results: z.array(
    z.object({
      index: z.number().int(),
      status: z.number().int().describe('202 added, 200 idempotent repeat, 4xx refused'),
      id: z
        .string()
        .optional()
        .describe('the job id when added or repeated; its status is at /v1/jobs/{service}/{id}'),
      error: errorBodySchema.shape.error.optional(),
    }),
  ),
});

export { enqueueRequestSchema };
