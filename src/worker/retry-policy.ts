import type { FerryError } from '../core/errors.ts';
import type { RetryPolicy } from '../core/services/types.ts';

/** Statuses DESIGN §4 names as retryable although their class is not (408 Request Timeout, 425 Too Early). */
const ALWAYS_RETRYABLE_STATUSES: ReadonlySet<number> = new Set([408, 425]);

/**
 * Full-jitter exponential backoff, capped: a uniform draw from [0, min(maxDelayMs, delayMs * 2^(attempt-1))).
 * Full jitter spreads a thundering herd of retries after an outage (AWS Architecture Blog, "Exponential
 * Backoff And Jitter", 2015). `attempt` is the attempt that just failed (1-based); `random` is injected.
 */
export function computeBackoffMs(
  attempt: number,
  policy: Pick<RetryPolicy, 'delayMs' | 'maxDelayMs'>,
  random: () => number = Math.random,
): number {
  // 2^52 would already overflow any sane cap; stop the exponent growing without bound.
  const ceiling = Math.min(policy.maxDelayMs, policy.delayMs * 2 ** Math.min(attempt - 1, 52));
  return Math.floor(random() * ceiling);
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
 * What to do after attempt `attempt` failed with `error`. A Retry-After the downstream sent replaces the
 * backoff (it knows better than our guess), already clamped by the classifier.
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
