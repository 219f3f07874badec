/**
 * Glossary
 * - service: an external API described in the services file; one queue each.
 * - operation: a named call on a service (`createContact`); the BullMQ job name.
 * - job: one request to run an operation with an input; delivered at least once.
 * - attempt: one call of the downstream for a job. A run a worker lost (crash, stall) is recorded as
 *   `interrupted` and does not use an attempt; neither does a hold.
 * - hold: the whole service's queue paused (breaker open, or the service said 429/503 + Retry-After).
 * - dead letter: the record of a job that will not succeed, with its whole attempt history.
 *
 * This module is the single source for the job shapes: the Producer validates with it, the worker checks
 * raw jobs with it, the API derives its JSON Schemas from it.
 */
import { z } from 'zod';

import { ERROR_TYPES, type ErrorRecord, type ErrorType } from './errors.ts';
import { MAX_IDEMPOTENCY_KEY_LENGTH, SERVICE_NAME_PATTERN } from './queue-layout.ts';
import { DAY } from './time.ts';

export const TENANT_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/**
 * The `input` of a sealed job (a `sensitive: true` operation's, core/sealed-data.ts), and what every view shows
 * for it: the real input and metadata are in the job data's `sealed` envelope, opened only by the worker.
 */
export const SEALED_PLACEHOLDER = '[sealed]';
/** A sealed job's envelope, as stored in its data's `sealed` (format: core/sealed-data.ts). */
export type SealedEnvelope = string;

// ---- size limits (docs/api.md § Limits) -------------------------------------------------------------------
/** 256 KiB: the default largest job input (JSON bytes) when the service does not set maxInputBytes. */
export const DEFAULT_MAX_INPUT_BYTES = 256 * 1024;
/** 16 KiB: the default largest `metadata` (JSON bytes); FERRY_MAX_METADATA_BYTES for the API. */
export const DEFAULT_MAX_METADATA_BYTES = 16 * 1024;
/**
 * What a job's other fields can add to its data: service (64), operation (128), idempotencyKey (200
 * characters, at most 3 UTF-8 bytes each), tenant (128), enqueueId (36), field names and punctuation. So a
 * job's whole serialized data is at most maxInputBytes + maxMetadataBytes + JOB_FIELDS_BYTES: the per-job cap.
 */
export const JOB_FIELDS_BYTES = 2 * 1024;
/** Deepest nesting of arrays and objects the API parses (a job's input is at most 62 levels under a batch). */
export const DEFAULT_MAX_JSON_DEPTH = 64;
/** Most jobs one batch may hold (POST /v1/jobs/batch, Producer.enqueueMany callers). */
export const MAX_BATCH_JOBS = 1000;
/** What one job of a batch may take on average within the default body limit (a typical job is ~300 B). */
export const BATCH_JOB_BYTES = 4 * 1024;
/**
 * The body one job at the given caps can legitimately need: its whole data, twice over for clients that
 * escape every non-ASCII character (`\u00e9`, Python's default), plus the other fields.
 */
export function jobBodyBytes(maxInputBytes: number, maxMetadataBytes: number): number {
  return 2 * (maxInputBytes + maxMetadataBytes) + JOB_FIELDS_BYTES;
}
/**
 * Default largest API request body: a full batch of BATCH_JOB_BYTES jobs plus room for one job at the default
 * caps (4,655,104 bytes, about 4.4 MiB; it was 16 MiB). Larger jobs go one per POST /v1/jobs, whose limit is
 * that of one job at the largest service's caps.
 */
export const DEFAULT_API_BODY_LIMIT_BYTES =
  MAX_BATCH_JOBS * BATCH_JOB_BYTES + jobBodyBytes(DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_METADATA_BYTES);
/** BullMQ's highest priority value (2^21). */
export const MAX_PRIORITY = 2_097_152;
/** Longest operation name of an enqueue request, in code points (zod counts string lengths in code points). */
export const MAX_OPERATION_LENGTH = 128;
/** Longest `delayMs` of an enqueue request: 365 days. */
export const MAX_DELAY_MS = 365 * DAY;

/** `must match <the pattern without its anchors>`: the message names the very rule that is checked. */
function mustMatch(pattern: RegExp): string {
  return `must match ${pattern.source.replace(/^\^|\$$/g, '')}`;
}
const tenant = z.string().regex(TENANT_PATTERN, mustMatch(TENANT_PATTERN));
/**
 * What an HTTP header value cannot hold, exactly as undici judges it (lib/core/util.js `headerCharRegex`): any
 * control character but tab, DEL, and anything above U+00FF. undici throws on such a value, and a Pool that
 * threw this way was seen to hang every later request (undici 7.30), so no header value that matches reaches
 * undici: the default `Idempotency-Key` header carries the key, so such a key is refused at enqueue, and the
 * worker checks every rendered header before a call (worker/http/call.ts).
 */
export const HEADER_VALUE_FORBIDDEN = /[^\t\x20-\x7e\x80-\xff]/;
export const IDEMPOTENCY_KEY_FORBIDDEN = HEADER_VALUE_FORBIDDEN;
const idempotencyKey = z
  .string()
  .min(1, 'must not be empty')
  .max(MAX_IDEMPOTENCY_KEY_LENGTH, `must be at most ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`)
  .refine((key) => !IDEMPOTENCY_KEY_FORBIDDEN.test(key), {
    error: 'must hold no control characters (CR, LF, NUL…) and nothing above U+00FF: it is sent in a header',
  });
const metadata = z.record(z.string(), z.unknown());

/** What a producer enqueues (HTTP body, `Producer.enqueue` argument). */
export const enqueueRequestSchema = z.strictObject({
  service: z.string().regex(SERVICE_NAME_PATTERN, mustMatch(SERVICE_NAME_PATTERN)),
  operation: z
    .string()
    .min(1, 'must not be empty')
    .max(MAX_OPERATION_LENGTH, `must be at most ${MAX_OPERATION_LENGTH} characters`),
  input: z.unknown().optional(),
  idempotencyKey: idempotencyKey.optional(),
  tenant: tenant.optional(),
  delayMs: z.number().int().min(0).max(MAX_DELAY_MS).optional(),
  priority: z.number().int().min(0).max(MAX_PRIORITY).optional(),
  metadata: metadata.optional(),
});
export type EnqueueRequest = z.infer<typeof enqueueRequestSchema>;

const SIMPLE_REQUEST_KEYS = new Set([
  'service',
  'operation',
  'input',
  'idempotencyKey',
  'tenant',
  'delayMs',
  'priority',
]);

/**
 * The common enqueue request (no metadata) checked by hand, at a fraction of zod's cost per job: a copy when it
 * certainly passes enqueueRequestSchema, undefined for "ask zod", which gives the verdict and the message. A
 * batch of 1000 jobs spent more on zod than on anything else of the API's own (bench/README.md, Enqueue).
 */
export function parseSimpleEnqueueRequest(value: unknown): EnqueueRequest | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const fields = value as Record<string, unknown>;
  for (const key in fields)
    if (!Object.hasOwn(fields, key) || !SIMPLE_REQUEST_KEYS.has(key)) return undefined;
  const { service, operation, input, idempotencyKey, tenant, delayMs, priority } = fields;
  if (typeof service !== 'string' || !SERVICE_NAME_PATTERN.test(service)) return undefined;
  if (typeof operation !== 'string' || operation.length < 1 || operation.length > MAX_OPERATION_LENGTH)
    return undefined;
  const request: EnqueueRequest = { service, operation };
  if (input !== undefined) request.input = input;
  if (idempotencyKey !== undefined) {
    if (!isIdempotencyKey(idempotencyKey)) return undefined;
    request.idempotencyKey = idempotencyKey;
  }
  if (tenant !== undefined) {
    if (!isTenant(tenant)) return undefined;
    request.tenant = tenant;
  }
  if (delayMs !== undefined) {
    if (!isCountUpTo(delayMs, MAX_DELAY_MS)) return undefined;
    request.delayMs = delayMs;
  }
  if (priority !== undefined) {
    if (!isCountUpTo(priority, MAX_PRIORITY)) return undefined;
    request.priority = priority;
  }
  return request;
}

// The fields' rules for the two hand-checked fast paths (parseSimpleEnqueueRequest, isTriviallyValidJobData),
// from the same constants as the zod schemas; test/core/job-fast-paths.test.ts proves they agree with zod.
function isIdempotencyKey(value: unknown): value is string {
  return (
    typeof value === 'string' &&
    value.length >= 1 &&
    value.length <= MAX_IDEMPOTENCY_KEY_LENGTH &&
    !IDEMPOTENCY_KEY_FORBIDDEN.test(value)
  );
}
function isTenant(value: unknown): value is string {
  return typeof value === 'string' && TENANT_PATTERN.test(value);
}
/** zod's `z.number().int().min(0).max(max)`: int() takes safe integers only. */
function isCountUpTo(value: unknown, max: number): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0 && (value as number) <= max;
}

/**
 * One run of a job. The worker records the runs that did not complete; the one that completed is added where a
 * job is read (from its result: no Redis write per job on the hot path).
 */
export interface AttemptRecord {
  /** Ferry attempt number this run used (1-based); an interrupted run repeats the number of the next attempt. */
  attempt: number;
  /**
   * `failed`: the call failed and used an attempt; `held`: the service asked everyone to wait (429/503 with
   * Retry-After), which uses no attempt; `interrupted`: the worker lost the job (crash, stall, shutdown)
   * before the run finished, which uses no attempt either; `completed`: the call that succeeded (the last run,
   * never stored in the job data: built from its result when the job is read).
   */
  outcome: 'failed' | 'held' | 'interrupted' | 'completed';
  /** Start of the run, epoch ms. */
  at: number;
  durationMs: number;
  type?: ErrorType;
  status?: number;
  message: string;
  /** Wait before the next attempt, when one was scheduled. */
  retryDelayMs?: number;
}

/** Attempts used: failed and completed runs only (held and interrupted runs use none, DESIGN §8). */
export function usedAttempts(attempts: readonly AttemptRecord[]): number {
  let used = 0;
  for (const attempt of attempts) if (attempt.outcome === 'failed' || attempt.outcome === 'completed') used++;
  return used;
}

/**
 * The run that completed a job, built from what is already stored (its result and when it finished: BullMQ's
 * `finishedOn`, or the time of its `completed` stream entry): the worker writes no history entry for it, which
 * keeps the hot path at no extra Redis write per job. The job API, the SSE `completed` event and Bull Board
 * all add it this way. None for a
 * job routed to its fallback (no call was made) or a result that is not Ferry's (the return value is anyone's
 * to write: each field is checked).
 */
export function completedAttempt(
  result: JobResult | undefined,
  finishedOn: number | undefined,
  failedAttempts: number,
): AttemptRecord | undefined {
  if (result === undefined || result === null || typeof result !== 'object') return undefined;
  if (result.routedTo !== undefined) return undefined;
  const { status, durationMs, attempts } = result as Partial<Record<keyof JobResult, unknown>>;
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 100 || status > 599)
    return undefined;
  if (typeof durationMs !== 'number' || !Number.isFinite(durationMs) || durationMs < 0) return undefined;
  if (typeof finishedOn !== 'number' || !Number.isFinite(finishedOn)) return undefined;
  // The attempt number: the result's count when it is sane, else the one after the recorded failures.
  const attempt =
    typeof attempts === 'number' && Number.isInteger(attempts) && attempts > failedAttempts
      ? attempts
      : failedAttempts + 1;
  return { attempt, outcome: 'completed', at: finishedOn - durationMs, durationMs, status, message: '' };
}

/** Ferry's own bookkeeping inside the job data; producers never set it. */
export interface DeliveryState {
  attempts: AttemptRecord[];
  /** Total time this job has been held by whole-service holds; bounded by `retry.maxHoldMs`. */
  heldMs: number;
  /** How many stalls have been recorded as interrupted runs (compared with BullMQ's stalledCounter). */
  stallsSeen: number;
  /** Set just before the dead letter is written, so a re-run after a crash writes it without calling again. */
  final?: ErrorRecord;
  /** Times Ferry itself failed to record an outcome (bounded: see delivery.ts). */
  internalErrors?: number;
  /** Set just before a job is moved to its fallback service, so a re-run after a crash finishes the move. */
  routedTo?: JobRef;
}

/**
 * One run as stored (core/stored-history.ts, version 2): `[attempt, outcome, at, durationMs, message, type,
 * status, retryDelayMs]`, trailing absent fields dropped, an absent one before a present one `null`.
 */
export type StoredAttempt = [
  attempt: number,
  outcome: AttemptRecord['outcome'],
  at: number,
  durationMs: number,
  message: string,
  type?: ErrorType | null,
  status?: number | null,
  retryDelayMs?: number | null,
];
/**
 * A history as stored: `[]`, or `[2, …runs]` (version 2, core/stored-history.ts); Ferry 0.1.0 stored the
 * AttemptRecord objects themselves (version 1), which readers still decode.
 */
export type StoredHistory = [] | [2, ...StoredAttempt[]] | AttemptRecord[];
/** DeliveryState as the worker stores it in the job data's `ferry`: its history encoded. */
export interface StoredDeliveryState extends Omit<DeliveryState, 'attempts'> {
  attempts: StoredHistory;
}

/** A Ferry error type; an enum (not a custom check) so that JSON Schema and OpenAPI list the types. */
export const errorTypeSchema = z.enum(ERROR_TYPES as [ErrorType, ...ErrorType[]], {
  error: 'must be a Ferry error type',
});
/** An ErrorRecord as read back from Redis (attempts, dead letters, job events). */
export const errorRecordSchema = z.object({
  type: errorTypeSchema,
  message: z.string(),
  status: z.number().int().optional(),
  retryAfterMs: z.number().min(0).optional(),
  field: z.string().optional(),
});
/**
 * An AttemptRecord as every view shows it (API, SSE, CLI, Bull Board) and as Ferry 0.1.0 stored it; the
 * stored form is decoded into it by core/stored-history.ts.
 */
export const attemptRecordSchema = z.object({
  attempt: z.number().int().min(1),
  outcome: z.enum(['failed', 'held', 'interrupted', 'completed']),
  at: z.number(),
  durationMs: z.number().min(0),
  type: errorTypeSchema.optional(),
  status: z.number().int().optional(),
  message: z.string(),
  retryDelayMs: z.number().min(0).optional(),
});
const count = z.number().int().min(0);

/** A job on a service queue, named from another job (a reaction's follow-up, a route, a chain's next step). */
export interface JobRef {
  service: string;
  jobId: string;
}
const jobRefSchema = z.object({ service: z.string().min(1), jobId: z.string().min(1) });

/** Why Ferry itself enqueued a job: the reaction or schedule that made it. Producers never set it. */
export const JOB_ORIGIN_KINDS = ['onFailure', 'then', 'fallback', 'schedule'] as const;
export const jobOriginSchema = z.object({
  kind: z.enum(JOB_ORIGIN_KINDS),
  /** The source job (absent for a schedule's run). */
  source: jobRefSchema.optional(),
  /** onFailure: the dead letter that fired the rule, and the rule's index. */
  deadLetterId: z.string().optional(),
  rule: count.optional(),
  /** schedule: its name in the services file. */
  schedule: z.string().optional(),
  /** Steps from the first job of the flow (a producer's job is 0): bounds onFailure/then chains. */
  depth: count,
});
export type JobOrigin = z.infer<typeof jobOriginSchema>;

/** Job data on a service queue (DESIGN §3): the contract for raw BullMQ producers. */
export const jobDataSchema = z.looseObject({
  input: z.unknown().optional(),
  tenant: tenant.optional(),
  idempotencyKey: idempotencyKey.optional(),
  metadata: metadata.optional(),
  /** Set by Ferry's producers to tell a new job from an idempotent repeat. */
  enqueueId: z.string().optional(),
  origin: jobOriginSchema.optional(),
  /** A sensitive operation's sealed input and metadata (core/sealed-data.ts); `input` is then `[sealed]`. */
  sealed: z.string().optional(),
});
export interface JobData extends z.infer<typeof jobDataSchema> {
  /** Ferry's bookkeeping as stored: read it with core/stored-history.ts's storedDeliveryStateSchema. */
  ferry?: StoredDeliveryState;
}

/**
 * True when `data` certainly passes jobDataSchema: the common shape (no metadata) checked by hand, at a
 * fraction of zod's cost per job. False means "ask zod", which gives the verdict and the error message;
 * metadata and origin always go to zod. Every field of jobDataSchema is checked here or left to zod
 * (test/core/job-fast-paths.test.ts).
 */
export function isTriviallyValidJobData(data: unknown): data is JobData {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return false;
  const { tenant, idempotencyKey, metadata, enqueueId, origin, sealed } = data as Record<string, unknown>;
  return (
    metadata === undefined &&
    origin === undefined &&
    (tenant === undefined || isTenant(tenant)) &&
    (idempotencyKey === undefined || isIdempotencyKey(idempotencyKey)) &&
    (enqueueId === undefined || typeof enqueueId === 'string') &&
    (sealed === undefined || typeof sealed === 'string')
  );
}

/** A completed job's result (DESIGN §4); BullMQ stores it compactly (core/stored-result.ts). */
export interface JobResult {
  status: number;
  /** Only allow-listed headers (content-type, location, etag, request ids, rate-limit info). */
  headers: Record<string, string>;
  /** Parsed JSON, or text; truncated to the result size cap. */
  body: unknown;
  bodyTruncated?: boolean;
  durationMs: number;
  /** Ferry attempts used, including the successful one. */
  attempts: number;
  metadata?: Record<string, unknown>;
  /** `then`: the next step's job. */
  next?: JobRef;
  /** `fallback`: the job was moved to the fallback service's queue (its breaker was open); no call was made. */
  routedTo?: JobRef;
}

/**
 * A dead letter's data as read back from `{dead-letter}`, an ordinary queue anyone with Redis access can write
 * to. Object schemas strip unknown keys: what a foreign writer added never reaches a reader. Its `attempts`
 * are the decoded AttemptRecords (the API's shape); Redis is read with core/stored-history.ts's
 * storedDeadLetterRecordSchema, which decodes the stored history first.
 */
export const deadLetterRecordSchema = z.object({
  service: z.string().min(1),
  operation: z.string().min(1),
  input: z.unknown(),
  tenant: z.string().optional(),
  idempotencyKey: z.string().optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
  sourceJobId: z.string(),
  sourceQueue: z.string(),
  attempts: z.array(attemptRecordSchema),
  finalError: errorRecordSchema,
  deadLetteredAt: z.number(),
  enqueuedAt: z.number(),
  origin: jobOriginSchema.optional(),
  followUp: jobRefSchema.extend({ rule: count }).optional(),
  followUpError: z.string().optional(),
  sealed: z.string().optional(),
});

/** A dead letter's data on `{dead-letter}`. */
export interface DeadLetterRecord {
  service: string;
  operation: string;
  input: unknown;
  tenant?: string;
  idempotencyKey?: string;
  metadata?: Record<string, unknown>;
  sourceJobId: string;
  sourceQueue: string;
  attempts: AttemptRecord[];
  finalError: ErrorRecord;
  /** Epoch ms at which the job was dead-lettered. */
  deadLetteredAt: number;
  /** Epoch ms at which the job was first enqueued. */
  enqueuedAt: number;
  /** The source job's origin, when Ferry enqueued it (a reaction, a route, a schedule). */
  origin?: JobOrigin;
  /** The onFailure follow-up this dead letter fired: its job, and the index of the rule that matched. */
  followUp?: JobRef & { rule: number };
  /** Why a matching onFailure rule made no follow-up (its input could not be rendered, the chain is too deep). */
  followUpError?: string;
  /** The source job's sealed envelope, kept as it was (`input` is then `[sealed]`): replay copies it. */
  sealed?: SealedEnvelope;
}

/** A dead letter's data as stored on `{dead-letter}`: its history encoded (core/stored-history.ts). */
export interface StoredDeadLetterRecord extends Omit<DeadLetterRecord, 'attempts'> {
  attempts: StoredHistory;
}

/** Turns a zod issue path into the dotted field name used in error messages: `input.email`, `delayMs`. */
export function issuePath(path: readonly PropertyKey[], root?: string): string {
  const parts = path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p)));
  const joined = parts.reduce(
    (acc, part) => (part.startsWith('[') || acc === '' ? acc + part : `${acc}.${part}`),
    '',
  );
  return root === undefined ? joined : joined === '' ? root : `${root}.${joined}`.replace('.[', '[');
}
