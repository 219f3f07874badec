/**
 * What happens to a job after a run: the delivery decision, as pure functions (issue 16). Nothing here touches
 * Redis, a clock or a random source of its own: `now` and `random` are parameters. The worker
 * (src/worker/delivery.ts applies a decision to BullMQ) and `ferry retry-plan` (src/ops/retry-plan.ts) import
 * the same functions, so the backoff formula exists once. test/core/delivery-policy.test.ts is the table of
 * every (outcome × state) case, the way cockatiel tests its policies.
 */
import {
  ConfigurationError,
  type ErrorRecord,
  type FerryError,
  toErrorRecord,
  ValidationError,
} from './errors.ts';
import { type DeliveryState, usedAttempts } from './job.ts';
import type {
  CompiledEnqueue,
  CompiledOperation,
  FailureRule,
  RetryPolicy,
  ServiceConfig,
} from './services/types.ts';

/** Statuses DESIGN §4 names as retryable although their class is not (408 Request Timeout, 425 Too Early). */
const ALWAYS_RETRYABLE_STATUSES: ReadonlySet<number> = new Set([408, 425]);

/**
 * Shortest hold: what another caller waits while the breaker is half-open and someone else probes, and the
 * floor of a 429/503's Retry-After hold (a `Retry-After: 0` must not spin the queue).
 */
export const MIN_HOLD_MS = 250;

/**
 * Longest single queue hold for an open breaker. The hold is tied to the breaker record (hold-release.ts ends it
 * when the breaker closes), but a worker that applied it from a stale view and died before learning of the
 * close cannot end it: this bounds such a hold. A longer open is held slice after slice, each one taking one
 * job to ask the breaker again: a few jobs moved every 10 s per worker, where a 1 s slice would move one per
 * second per worker slot for the whole open period.
 */
export const BREAKER_HOLD_SLICE_MS = 10_000;

/**
 * The backoff after Ferry itself failed to record a job's outcome (a Redis hiccup): 1 s, doubling, at most
 * 1 min, without jitter; the MAX_INTERNAL_ERRORS-th failure dead-letters the job instead of running it again
 * (an error that is not a passing hiccup, a bug, would otherwise call the downstream again and again).
 */
export const INTERNAL_ERROR_BACKOFF: Pick<RetryPolicy, 'delayMs' | 'maxDelayMs'> = Object.freeze({
  delayMs: 1_000,
  maxDelayMs: 60_000,
});
export const MAX_INTERNAL_ERRORS = 5;

/**
 * The wait of a job deferred because its tenant has `tenantConcurrency` calls in flight: a uniform draw from
 * [DEFER_MIN_MS, DEFER_MAX_MS). Short, so a tenant's next job starts soon after a lease is given back; jittered,
 * so a busy tenant's deferred jobs do not come back all at once. Uses no attempt and has no bound: a job of a
 * busy tenant waits its turn, it is never dead-lettered for waiting.
 */
export const DEFER_MIN_MS = 100;
export const DEFER_MAX_MS = 500;

/** The deferral wait for a draw `random()` in [0, 1). */
export function deferDelayMs(random: () => number): number {
  return DEFER_MIN_MS + Math.floor(random() * (DEFER_MAX_MS - DEFER_MIN_MS));
}

/**
 * The cap of the wait after attempt `attempt` (1-based): min(maxDelayMs, delayMs × 2^(attempt−1)). The one
 * copy of the formula: the worker draws below it, `ferry retry-plan` prints it.
 */
export function backoffCapMs(attempt: number, policy: Pick<RetryPolicy, 'delayMs' | 'maxDelayMs'>): number {
  // 2^52 would already overflow any sane cap; stop the exponent growing without bound.
  return Math.min(policy.maxDelayMs, policy.delayMs * 2 ** Math.min(attempt - 1, 52));
}

/**
 * Full-jitter exponential backoff, capped: a uniform draw from [0, backoffCapMs(attempt)). Full jitter spreads
 * a thundering herd of retries after an outage (AWS Architecture Blog, "Exponential Backoff And Jitter",
 * 2015). `attempt` is the attempt that just failed (1-based); `random` is injected.
 */
export function computeBackoffMs(
  attempt: number,
  policy: Pick<RetryPolicy, 'delayMs' | 'maxDelayMs'>,
  random: () => number = Math.random,
): number {
  return Math.floor(random() * backoffCapMs(attempt, policy));
}

/** Whether another attempt may succeed: the class says so, or the status is one the policy retries. */
export function isRetryable(error: FerryError, policy: Pick<RetryPolicy, 'retryOn'>): boolean {
  if (error.retryable) return true;
  if (error.status === undefined) return false;
  return ALWAYS_RETRYABLE_STATUSES.has(error.status) || policy.retryOn.includes(error.status);
}

export type RetryDecision =
  { kind: 'retry'; delayMs: number } | { kind: 'deadLetter'; reason: 'notRetryable' | 'exhausted' };

/**
 * What to do after attempt `attempt` failed with `error`, attempts alone considered. A Retry-After the
 * downstream sent replaces the backoff (it knows better than our guess), already clamped by the classifier.
 */
export function decideRetry(
  error: FerryError,
  attempt: number,
  policy: RetryPolicy,
  random: () => number = Math.random,
): RetryDecision {
  if (!isRetryable(error, policy)) return { kind: 'deadLetter', reason: 'notRetryable' };
  if (attempt >= policy.attempts) return { kind: 'deadLetter', reason: 'exhausted' };
  const delayMs = error.retryAfterMs ?? computeBackoffMs(attempt, policy, random);
  return { kind: 'retry', delayMs };
}

/**
 * The hold a failed call asks for, or undefined: a 429 or 503 with Retry-After asks the whole service to wait
 * (at least MIN_HOLD_MS). Such a failure is a hold, not a used attempt, while the job's hold budget lasts.
 */
export function requestedHoldMs(error: FerryError): number | undefined {
  if (error.retryAfterMs === undefined || (error.status !== 429 && error.status !== 503)) return undefined;
  return Math.max(error.retryAfterMs, MIN_HOLD_MS);
}

/** What a rule's `when` is matched against: the final error of a dead-lettered job. */
export interface FailureFacts {
  readonly type: string;
  readonly status?: number | undefined;
}

/**
 * The index of the first rule whose `when` matches, or undefined. A rule without `when` matches anything; a
 * `when` with both lists needs both to match; a `status` list never matches an error without a status.
 */
export function matchFailureRule(rules: readonly FailureRule[], error: FailureFacts): number | undefined {
  for (let index = 0; index < rules.length; index++) {
    const when = rules[index]?.when;
    if (when === undefined) return index;
    if (when.errorTypes !== undefined && !when.errorTypes.includes(error.type)) continue;
    if (when.statuses !== undefined && (error.status === undefined || !when.statuses.includes(error.status)))
      continue;
    return index;
  }
  return undefined;
}

/** What one operation's jobs are decided by: built once per operation (deliveryPolicyOf), never per job. */
export interface DeliveryPolicy {
  readonly retry: RetryPolicy;
  /** The operation's onFailure rules, then its service's (CompiledOperation.onFailure). */
  readonly onFailure: readonly FailureRule[];
  /** The operation's `then`. */
  readonly then: CompiledEnqueue | undefined;
  /** The service's `fallback` service, while its breaker is open. */
  readonly fallback: string | undefined;
  /** Applied to the message of every error record a decision builds (the worker's secret scrubber). */
  readonly scrub: ((text: string) => string) | undefined;
}

/**
 * The policy of `operation` of `service`. `operation` undefined: a job naming an operation the service does not
 * have (a raw producer's): retry policy only, no reactions.
 */
export function deliveryPolicyOf(
  service: ServiceConfig,
  operation: CompiledOperation | undefined,
  scrub?: (text: string) => string,
): DeliveryPolicy {
  return Object.freeze({
    retry: service.retry,
    onFailure: operation?.onFailure ?? [],
    then: operation?.then,
    fallback: service.fallback,
    scrub,
  });
}

/**
 * What the run found. The worker's AttemptOutcome (src/worker/processor.ts) is one of the first five as it
 * is; the other three are runs that made no call.
 */
export type DeliveryOutcome =
  | { readonly kind: 'completed' }
  /** The call (or its preparation) failed; a 429/503 with Retry-After is a hold while the budget lasts. */
  | { readonly kind: 'failed'; readonly error: FerryError }
  /**
   * The whole service must wait, no call made (an open breaker: error CircuitOpenError). `fallbackOpen`: the
   * state of the service's fallback breaker, when the caller looked (false: closed, the job may go there).
   */
  | {
      readonly kind: 'held';
      readonly error: FerryError;
      readonly holdMs: number;
      readonly fallbackOpen?: boolean | undefined;
    }
  /** The worker is shutting down and abandoned the call: not the job's fault, uses no attempt. */
  | { readonly kind: 'interrupted' }
  /** Not run: the job's tenant has `tenantConcurrency` calls in flight (no call made, no attempt used). */
  | { readonly kind: 'deferred'; readonly reason: 'tenantConcurrency' }
  /** Not run: the state holds a dead letter (state.final) or a route (state.routedTo) an earlier run decided. */
  | { readonly kind: 'skipped' }
  /** Not run: Ferry's state in the job data is malformed; `problem` says where (`.attempts[0]: …`). */
  | { readonly kind: 'badState'; readonly problem: string }
  /** Ferry itself failed to record the run's outcome (`message`: the reason, not yet scrubbed). */
  | { readonly kind: 'internalError'; readonly message: string };

/**
 * What to do with the job. The reactions are outcomes of this same policy: `complete.then` (the operation's
 * `then`), `deadLetter.rule` (the onFailure rule that matched the final error) and `route` (the fallback).
 */
export type Decision =
  | { readonly kind: 'complete'; readonly then: CompiledEnqueue | undefined }
  /** Run again after `delayMs` (a used attempt's backoff or Retry-After, or the internal-error backoff). */
  | { readonly kind: 'retry'; readonly delayMs: number; readonly nextAttemptAt: number }
  /**
   * Hold the whole service's queue for `queueHoldMs` (a slice of `holdMs` for an open breaker); the job uses no
   * attempt, and `queueHoldMs` counts against `retry.maxHoldMs`.
   */
  | {
      readonly kind: 'hold';
      readonly holdMs: number;
      readonly queueHoldMs: number;
      readonly reason: 'circuitOpen' | 'rateLimited';
      readonly until: number;
    }
  | { readonly kind: 'deadLetter'; readonly error: ErrorRecord; readonly rule: number | undefined }
  /** Interrupted by shutdown: back at once, no attempt used. */
  | { readonly kind: 'requeue' }
  /**
   * Its tenant is at its `tenantConcurrency`: back after a short jittered `delayMs` (deferDelayMs), no attempt
   * used, nothing recorded in the state; the job's own worker slot goes to the next job at once.
   */
  | { readonly kind: 'defer'; readonly delayMs: number }
  /**
   * The primary's breaker is open and its fallback's is not: move the job there. `jobId`: the route an earlier
   * run decided and stored (state.routedTo) but did not finish; finish it, asking no breaker.
   */
  | { readonly kind: 'route'; readonly service: string; readonly jobId?: string };

// Shared answers: a completed job without `then` (the hot path) and a requeue allocate nothing.
const COMPLETE: Decision = Object.freeze({ kind: 'complete', then: undefined });
const REQUEUE: Decision = Object.freeze({ kind: 'requeue' });

/**
 * The whole delivery decision. `state` is Ferry's state as it was before this run (the run's own attempt is
 * not in it yet: the caller records it after deciding); `now` (epoch ms) dates the retry and the hold;
 * `random` draws the backoff's jitter.
 */
export function decide(
  outcome: DeliveryOutcome,
  state: DeliveryState,
  policy: DeliveryPolicy,
  now: number,
  random: () => number,
): Decision {
  switch (outcome.kind) {
    case 'completed':
      return policy.then === undefined ? COMPLETE : { kind: 'complete', then: policy.then };
    case 'interrupted':
      return REQUEUE;
    case 'deferred':
      return { kind: 'defer', delayMs: deferDelayMs(random) };
    case 'skipped':
      // Finish the dead letter or the route an earlier run decided, without a new call (it may have died after
      // the decision). A dead letter decided after a route (its internal errors ran out) stands.
      if (state.final !== undefined) return deadLetter(state.final, policy);
      if (state.routedTo !== undefined)
        return { kind: 'route', service: state.routedTo.service, jobId: state.routedTo.jobId };
      return REQUEUE;
    case 'badState': {
      const error = new ValidationError(`bad job data: ferry${outcome.problem}`, { field: 'ferry' });
      return deadLetter(toErrorRecord(error, policy.scrub), policy);
    }
    case 'internalError': {
      const internalErrors = (state.internalErrors ?? 0) + 1;
      if (internalErrors < MAX_INTERNAL_ERRORS) {
        const delayMs = backoffCapMs(internalErrors, INTERNAL_ERROR_BACKOFF);
        return { kind: 'retry', delayMs, nextAttemptAt: now + delayMs };
      }
      // A dead letter decided before the errors stands: it is the one the record gets (from the job's data).
      if (state.final !== undefined) return deadLetter(state.final, policy);
      const error = new ConfigurationError(
        `Ferry could not record this job's outcome ${internalErrors} times; last error: ${outcome.message}`,
      );
      return deadLetter(toErrorRecord(error, policy.scrub), policy);
    }
    case 'held':
      if (
        outcome.error.type === 'CircuitOpenError' &&
        policy.fallback !== undefined &&
        outcome.fallbackOpen === false
      )
        return { kind: 'route', service: policy.fallback };
      return holdOrFail(outcome.error, outcome.holdMs, state, policy, now, random);
    case 'failed': {
      const holdMs = requestedHoldMs(outcome.error);
      return holdMs === undefined
        ? retryOrDeadLetter(outcome.error, state, policy, now, random)
        : holdOrFail(outcome.error, holdMs, state, policy, now, random);
    }
  }
}

/**
 * A hold uses no attempt while the job's held time stays within `retry.maxHoldMs`; past it, the hold counts
 * as a failed attempt, so a service that never recovers still ends in the dead-letter queue. An open breaker
 * holds the queue slice by slice (BREAKER_HOLD_SLICE_MS), each slice counted as it is applied.
 */
function holdOrFail(
  error: FerryError,
  holdMs: number,
  state: DeliveryState,
  policy: DeliveryPolicy,
  now: number,
  random: () => number,
): Decision {
  const isBreaker = error.type === 'CircuitOpenError';
  const queueHoldMs = isBreaker ? Math.min(holdMs, BREAKER_HOLD_SLICE_MS) : holdMs;
  if (state.heldMs + queueHoldMs <= policy.retry.maxHoldMs) {
    return {
      kind: 'hold',
      holdMs,
      queueHoldMs,
      reason: isBreaker ? 'circuitOpen' : 'rateLimited',
      until: now + holdMs,
    };
  }
  return retryOrDeadLetter(error, state, policy, now, random);
}

function retryOrDeadLetter(
  error: FerryError,
  state: DeliveryState,
  policy: DeliveryPolicy,
  now: number,
  random: () => number,
): Decision {
  const attempt = usedAttempts(state.attempts) + 1;
  const retry = decideRetry(error, attempt, policy.retry, random);
  if (retry.kind === 'retry') {
    return { kind: 'retry', delayMs: retry.delayMs, nextAttemptAt: now + retry.delayMs };
  }
  return deadLetter(toErrorRecord(error, policy.scrub), policy);
}

function deadLetter(error: ErrorRecord, policy: DeliveryPolicy): Decision {
  return { kind: 'deadLetter', error, rule: matchFailureRule(policy.onFailure, error) };
}
