/**
 * One attempt of one job: validate → resolve secrets → render → breaker → call → classify. Returns an
 * Outcome and never throws; it knows nothing of BullMQ (delivery.ts applies the outcome to the queue).
 */
import { type BreakerOpenError, isBreakerOpenError, type ServiceBreaker } from '../breakers/index.ts';
import { CircuitOpenError, type FerryError, isFerryError, ValidationError } from '../core/errors.ts';
import {
  issuePath,
  isTriviallyValidJobData,
  type JobData,
  jobDataSchema,
  type JobResult,
} from '../core/job.ts';
import type { ServiceConfig, TemplateContext } from '../core/services/types.ts';
import type { Clock } from '../core/time.ts';
import { resolveSecrets, type SecretResolver } from '../secrets/resolver.ts';
import type { Scrubber } from '../secrets/scrub.ts';
import { callDownstream } from './http/call.ts';
import { classifyError, isUnhealthyFailure } from './http/classify.ts';
import type { PoolSet } from './http/pools.ts';
import { buildRequest } from './http/request.ts';
import { allowListedHeaders, parseBody } from './http/response.ts';

export type AttemptOutcome =
  | { kind: 'completed'; result: Omit<JobResult, 'attempts'>; durationMs: number }
  /** The call (or its preparation) failed; delivery.ts decides between retry and dead letter. */
  | { kind: 'failed'; error: FerryError; durationMs: number }
  /** The whole service must wait: breaker open, or it answered 429/503 with Retry-After. */
  | { kind: 'held'; error: FerryError; holdMs: number; durationMs: number }
  /** The worker is shutting down and abandoned the call: not the job's fault, uses no attempt. */
  | { kind: 'interrupted'; durationMs: number };

export interface AttemptJob {
  id: string;
  /** BullMQ job name = operation. */
  name: string;
  data: JobData;
}

export interface ProcessorDeps {
  service: ServiceConfig;
  breaker: ServiceBreaker | undefined;
  secrets: SecretResolver;
  scrubber: Scrubber;
  pools: PoolSet;
  clock: Clock;
}

/** How long another caller waits when the breaker is half-open and someone else is probing. */
const MIN_HOLD_MS = 250;

export async function runAttempt(
  job: AttemptJob,
  deps: ProcessorDeps,
  signal: AbortSignal | undefined,
): Promise<AttemptOutcome> {
  const startedAt = deps.clock.now();
  const elapsed = (): number => deps.clock.now() - startedAt;
  try {
    const { service } = deps;
    const operation = service.operations.get(job.name);
    if (operation === undefined) {
      throw new ValidationError(`unknown operation "${job.name}" for service "${service.name}"`, {
        field: 'operation',
      });
    }
    const data = isTriviallyValidJobData(job.data) ? job.data : parseJobData(job.data);
    if (service.tenantSecrets === 'required' && data.tenant === undefined) {
      // A raw producer's job (the API and Producer refuse it at enqueue): without a tenant it would read the
      // global values, the very fall-back the service refuses.
      throw new ValidationError(`tenant: required by service "${service.name}" (tenantSecrets: required)`, {
        field: 'tenant',
      });
    }
    const resolved = resolveSecrets(
      deps.secrets,
      service.secretNames,
      data.tenant,
      deps.scrubber,
      service.tenantSecrets,
    );
    const secrets = resolved instanceof Promise ? await resolved : resolved;
    const context: TemplateContext = {
      input: data.input,
      secrets,
      tenant: data.tenant,
      job: { id: job.id, idempotencyKey: data.idempotencyKey ?? job.id },
    };
    const request = buildRequest(service, operation, context);
    const call = (): ReturnType<typeof callDownstream> =>
      callDownstream(deps.pools, request, {
        timeoutMs: operation.timeoutMs,
        maxResponseBytes: service.maxResponseBytes,
        maxRetryAfterMs: service.retry.maxRetryAfterMs,
        signal,
        now: deps.clock.now,
      });
    // A call this worker aborted for shutdown says nothing about the service's health: never count it.
    const response =
      deps.breaker === undefined
        ? await call()
        : await deps.breaker.execute(call, (error) => isUnhealthyFailure(error) && signal?.aborted !== true);
    const { body, truncated } = parseBody(response.raw, headerString(response.headers['content-type']));
    const result: Omit<JobResult, 'attempts'> = {
      status: response.status,
      // A Location or request-id header can echo a query-string API key back.
      headers: deps.scrubber.scrubValue(allowListedHeaders(response.headers)),
      body: deps.scrubber.scrubValue(body),
      durationMs: elapsed(),
    };
    if (truncated) result.bodyTruncated = true;
    if (data.metadata !== undefined) result.metadata = data.metadata;
    return { kind: 'completed', result, durationMs: result.durationMs };
  } catch (thrown) {
    const durationMs = elapsed();
    if (signal?.aborted === true) return { kind: 'interrupted', durationMs };
    if (isBreakerOpenError(thrown)) return breakerHold(thrown, durationMs);
    const error = isFerryError(thrown) ? thrown : classifyError(thrown);
    error.message = deps.scrubber.scrub(error.message);
    if (error.retryAfterMs !== undefined && (error.status === 429 || error.status === 503)) {
      return { kind: 'held', error, holdMs: Math.max(error.retryAfterMs, MIN_HOLD_MS), durationMs };
    }
    return { kind: 'failed', error, durationMs };
  }
}

/** Job data through the schema; a ValidationError naming the first bad field. */
function parseJobData(raw: unknown): JobData {
  const parsed = jobDataSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue === undefined ? 'data' : issuePath(issue.path, 'data');
    throw new ValidationError(`bad job data: ${field}: ${issue?.message ?? 'invalid'}`, { field });
  }
  return parsed.data;
}

function breakerHold(error: BreakerOpenError, durationMs: number): AttemptOutcome {
  const holdMs = Math.max(error.retryAfterMs, MIN_HOLD_MS);
  return {
    kind: 'held',
    error: new CircuitOpenError(`circuit breaker for "${error.breaker}" is open`, {
      retryAfterMs: holdMs,
      cause: error,
    }),
    holdMs,
    durationMs,
  };
}

function headerString(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
