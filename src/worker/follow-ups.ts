/**
 * The jobs Ferry enqueues itself when a job ends (issue 16): an `onFailure` rule's follow-up when a job is
 * dead-lettered, and a `then` step's next job when one completes. Each is added to its target service's queue
 * under a job id fixed by what fired it (idempotentJobId of a derived idempotency key), so adding it again
 * after a crash is a no-op: that is what makes "exactly once" (docs/architecture.md § Reactions).
 *
 * Planning (match, render, depth check) is pure and happens before anything is written, so a dead letter
 * names its follow-up (or why there is none) in the same write. Adding is one BullMQ add on the worker's
 * connection, to a queue this worker may not serve (target-queues.ts).
 */
import { createHash } from 'node:crypto';

import type { DeliveryEventListener } from '../core/delivery-events.ts';
import { matchFailureRule } from '../core/delivery-policy.ts';
import { type FerryError, isFerryError, ValidationError } from '../core/errors.ts';
import {
  type DeadLetterRecord,
  IDEMPOTENCY_KEY_FORBIDDEN,
  type JobData,
  type JobOrigin,
  jobOriginSchema,
  type JobRef,
  type JobResult,
  TENANT_PATTERN,
} from '../core/job.ts';
import type { Logger } from '../core/logger.ts';
import { idempotentJobId, MAX_IDEMPOTENCY_KEY_LENGTH } from '../core/queue-layout.ts';
import { type Keyring, sealJobData } from '../core/sealed-data.ts';
import type {
  CompiledEnqueue,
  ServiceConfig,
  ServicesConfig,
  TemplateContext,
} from '../core/services/types.ts';
import { openSealedJob } from './sealed.ts';
import type { TargetQueues } from './target-queues.ts';

/**
 * Default longest chain of jobs Ferry enqueues from one producer's job (a producer's job has depth 0, each
 * onFailure follow-up or `then` step one more): a follow-up whose depth would pass it is not made.
 */
export const DEFAULT_MAX_CHAIN_DEPTH = 16;

/** The two reactions this module runs (fallback and schedules enqueue their own jobs). */
export type FollowUpKind = 'onFailure' | 'then';

/** Why a follow-up was not made: a fixed word (a metric label), the message says more. */
export type FollowUpRefusal = 'template' | 'depth' | 'origin';

/** A follow-up job, rendered and ready to add. */
export interface PlannedFollowUp {
  readonly kind: FollowUpKind;
  readonly service: string;
  readonly operation: string;
  readonly jobId: string;
  readonly data: JobData;
  /** For events and log lines: the job that fired it. */
  readonly source: JobRef;
}

export interface FollowUpsOptions {
  config: ServicesConfig;
  /** Where the follow-ups are added (the pool's, shared with fallback moves). */
  queues: TargetQueues;
  logger: Logger;
  /** Default DEFAULT_MAX_CHAIN_DEPTH; an enqueue's own `maxDepth` lowers it for that enqueue. */
  maxChainDepth?: number;
  /** Told of every follow-up added or refused (metrics). */
  emit?: DeliveryEventListener;
  /**
   * FERRY_SECRETS_KEY's keyring: a sealed source's input is opened to render a follow-up, and a follow-up to a
   * sensitive operation is sealed for its own job id.
   */
  keyring?: Keyring | undefined;
}

/** What planning an onFailure follow-up gave: a job to add, a refusal, or nothing (no rule matched). */
export type FailurePlan =
  | { readonly kind: 'add'; readonly job: PlannedFollowUp; readonly rule: number }
  | { readonly kind: 'refused'; readonly reason: FollowUpRefusal; readonly message: string }
  | undefined;

const NO_SECRETS: ReadonlyMap<string, string> = new Map();

export class FollowUps {
  readonly #options: FollowUpsOptions;
  readonly #maxDepth: number;

  constructor(options: FollowUpsOptions) {
    this.#options = options;
    this.#maxDepth = options.maxChainDepth ?? DEFAULT_MAX_CHAIN_DEPTH;
  }

  /**
   * Plans the onFailure follow-up of a dead letter and writes the result into `record` (`followUp`, or
   * `followUpError` saying why there is none), before the record is written. `data` is the source job's data
   * (its `origin` gives the depth). Deterministic for one dead letter: every writer (the worker, its re-run,
   * the sweep) plans the same job id.
   */
  planFailure(
    service: ServiceConfig,
    record: DeadLetterRecord,
    deadLetterId: string,
    data: JobData | undefined,
    /** The rule the delivery policy matched (Decision `deadLetter.rule`); `match`: match it here, the same way. */
    decided: number | undefined | 'match' = 'match',
  ): FailurePlan {
    const rules = service.operations.get(record.operation)?.onFailure;
    if (rules === undefined || rules.length === 0) return undefined;
    const error = record.finalError;
    const rule = decided === 'match' ? matchFailureRule(rules, error) : decided;
    const matched = rule === undefined ? undefined : rules[rule];
    if (rule === undefined || matched === undefined) return undefined;
    const enqueue = matched.enqueue;
    const source: JobRef = { service: service.name, jobId: record.sourceJobId };
    const refuse = (reason: FollowUpRefusal, message: string): FailurePlan => {
      record.followUpError = message;
      this.#refused('onFailure', reason, message, source);
      return { kind: 'refused', reason, message };
    };
    const depth = this.#depth(data, enqueue);
    if (typeof depth === 'string')
      return refuse(depth === 'origin' ? 'origin' : 'depth', this.#depthMessage(depth, enqueue));
    const key = onFailureIdempotencyKey(deadLetterId, rule);
    const input = this.#inputOf(service, data, record.operation);
    if (input instanceof Error) return refuse('template', `onFailure rule ${rule}: ${input.message}`);
    const context: TemplateContext = {
      input: input,
      secrets: NO_SECRETS,
      tenant: record.tenant,
      job: { id: record.sourceJobId, idempotencyKey: record.idempotencyKey ?? '' },
      error: { type: error.type, status: error.status, message: error.message },
      deadLetter: { id: deadLetterId },
    };
    const rendered = this.#render(enqueue, context);
    if (typeof rendered === 'string') return refuse('template', `onFailure rule ${rule}: ${rendered}`);
    const origin: JobOrigin = { kind: 'onFailure', source, deadLetterId, rule, depth };
    const job = this.#sealed(
      planned('onFailure', enqueue, key, rendered.input, record.tenant, origin, source),
    );
    record.followUp = { service: job.service, jobId: job.jobId, rule };
    return { kind: 'add', job, rule };
  }

  /**
   * Plans the `then` step of a completed job: its next job, or the ValidationError its source job is
   * dead-lettered with (a template that cannot be rendered, a chain over the depth limit): never silent.
   */
  planThen(
    service: ServiceConfig,
    enqueue: CompiledEnqueue,
    job: { id: string; idempotencyKey: string; data: JobData },
    result: JobResult,
  ): PlannedFollowUp | FerryError {
    const source: JobRef = { service: service.name, jobId: job.id };
    const depth = this.#depth(job.data, enqueue);
    if (typeof depth === 'string') {
      const message = this.#depthMessage(depth, enqueue);
      this.#refused('then', depth === 'origin' ? 'origin' : 'depth', message, source);
      return new ValidationError(`then: ${message}`, { field: depth === 'origin' ? 'origin' : 'then' });
    }
    const tenant = typeof job.data.tenant === 'string' ? job.data.tenant : undefined;
    const input = this.#inputOf(service, job.data);
    if (input instanceof Error) {
      this.#refused('then', 'template', input.message, source);
      return new ValidationError(`then: ${input.message}`, { field: 'sealed' });
    }
    const context: TemplateContext = {
      input,
      secrets: NO_SECRETS,
      tenant,
      job: { id: job.id, idempotencyKey: job.idempotencyKey },
      result: { status: result.status, headers: result.headers, body: result.body },
    };
    const rendered = this.#render(enqueue, context);
    if (typeof rendered === 'string') {
      this.#refused('then', 'template', rendered, source);
      return new ValidationError(`then: ${rendered}`, { field: 'then' });
    }
    const key = thenIdempotencyKey(service.name, job.idempotencyKey);
    const origin: JobOrigin = { kind: 'then', source, depth };
    return this.#sealed(planned('then', enqueue, key, rendered.input, tenant, origin, source));
  }

  /** The source job's input: a sealed one opened in memory, or an Error saying why it does not open. */
  #inputOf(service: ServiceConfig, data: JobData | undefined, operation?: string): unknown {
    if (data?.sealed === undefined) return data?.input;
    try {
      // A completed job's operation was checked by runAttempt; a dead letter's is checked here.
      return openSealedJob(service, this.#options.keyring, data, operation).input;
    } catch (error) {
      return new Error(isFerryError(error) ? error.message : 'sealed: does not open');
    }
  }

  /**
   * A follow-up to a sensitive operation, sealed for its own job id (the services-file check refuses one from a
   * sensitive operation to an operation that is not). Without a keyring it is left as it is: the worker pool
   * refuses to start without one when any operation is sensitive.
   */
  #sealed(job: PlannedFollowUp): PlannedFollowUp {
    const keyring = this.#options.keyring;
    const target = this.#options.config.services.get(job.service)?.operations.get(job.operation);
    if (target?.sensitive !== true || keyring === undefined) return job;
    const binding = { service: job.service, tenant: job.data.tenant, jobId: job.jobId };
    return { ...job, data: sealJobData(keyring, binding, job.data) };
  }

  /** Adds a planned follow-up; a repeat (same job id) is a no-op. */
  async add(job: PlannedFollowUp): Promise<void> {
    await this.#options.queues.of(job.service).add(job.operation, job.data, { jobId: job.jobId });
    this.#options.emit?.('job:followUp:enqueued', {
      kind: job.kind,
      service: job.source.service,
      jobId: job.source.jobId,
      target: { service: job.service, jobId: job.jobId },
    });
  }

  /** The follow-up's depth, or why there is none: `origin` (malformed) or the limit it would pass. */
  #depth(data: JobData | undefined, enqueue: CompiledEnqueue): number | 'origin' | 'limit' {
    const raw: unknown = data?.origin;
    let sourceDepth = 0;
    if (raw !== undefined) {
      // Job data is anyone's to write: an origin that does not parse cannot be trusted to bound a chain.
      const parsed = jobOriginSchema.safeParse(raw);
      if (!parsed.success) return 'origin';
      sourceDepth = parsed.data.depth;
    }
    const depth = sourceDepth + 1;
    return depth > this.#limit(enqueue) ? 'limit' : depth;
  }

  /** The runtime's limit, or the enqueue's own `maxDepth` when that is lower. */
  #limit(enqueue: CompiledEnqueue): number {
    return enqueue.maxDepth === undefined ? this.#maxDepth : Math.min(enqueue.maxDepth, this.#maxDepth);
  }

  #depthMessage(problem: 'origin' | 'limit', enqueue: CompiledEnqueue): string {
    return problem === 'origin'
      ? "the job's data.origin is malformed, so the chain's depth is unknown; no follow-up"
      : `chain depth limit ${this.#limit(enqueue)} reached; no job enqueued on ${enqueue.service}.${enqueue.operation}`;
  }

  /** The rendered input, or a message (never a value) saying why it could not be rendered. */
  #render(enqueue: CompiledEnqueue, context: TemplateContext): { input: unknown } | string {
    const target = this.#options.config.services.get(enqueue.service);
    if (target === undefined || !target.operations.has(enqueue.operation))
      return `${enqueue.service}.${enqueue.operation} is not in the services file`;
    let input: unknown;
    try {
      input = enqueue.input === undefined ? null : (enqueue.input.render(context) ?? null);
    } catch (error) {
      const message = isFerryError(error) ? error.message : 'the template could not be rendered';
      return `input for ${enqueue.service}.${enqueue.operation}: ${message}`;
    }
    const bytes = Buffer.byteLength(JSON.stringify(input) ?? 'null');
    if (bytes > target.maxInputBytes)
      return `input for ${enqueue.service}.${enqueue.operation} renders to ${bytes} bytes, over its maxInputBytes ${target.maxInputBytes}`;
    return { input };
  }

  #refused(kind: FollowUpKind, reason: FollowUpRefusal, message: string, source: JobRef): void {
    this.#options.logger.warn(
      { service: source.service, jobId: source.jobId, kind, reason, followUpError: message },
      `${kind} follow-up not enqueued`,
    );
    this.#options.emit?.('job:followUp:refused', {
      kind,
      reason,
      service: source.service,
      jobId: source.jobId,
    });
  }
}

/**
 * `ferry-onfailure-<dead letter id>-<rule>`. A dead letter's id holds its source job's id, which a raw producer
 * chose (up to 300 characters, any but `:`): when the key would be longer than an idempotency key may be, or
 * hold a character a header cannot, the id is replaced by its hash (`ferry-onfailure-h<sha256>-<rule>`).
 */
export function onFailureIdempotencyKey(deadLetterId: string, rule: number): string {
  const key = `ferry-onfailure-${deadLetterId}-${rule}`;
  if (key.length <= MAX_IDEMPOTENCY_KEY_LENGTH && !IDEMPOTENCY_KEY_FORBIDDEN.test(key)) return key;
  return `ferry-onfailure-h${createHash('sha256').update(deadLetterId).digest('base64url')}-${rule}`;
}

/** `ferry-then-` and a hash of the source service and its effective idempotency key (54 characters). */
export function thenIdempotencyKey(service: string, idempotencyKey: string): string {
  return `ferry-then-${createHash('sha256').update(`${service}\n${idempotencyKey}`).digest('base64url')}`;
}

function planned(
  kind: FollowUpKind,
  enqueue: CompiledEnqueue,
  key: string,
  input: unknown,
  tenant: string | undefined,
  origin: JobOrigin,
  source: JobRef,
): PlannedFollowUp {
  const data: JobData = { input, idempotencyKey: key, origin };
  // Job data is anyone's to write: a source's tenant that is not a valid one is not passed on.
  if (typeof tenant === 'string' && TENANT_PATTERN.test(tenant)) data.tenant = tenant;
  return {
    kind,
    service: enqueue.service,
    operation: enqueue.operation,
    jobId: idempotentJobId(key),
    data,
    source,
  };
}
