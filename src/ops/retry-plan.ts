/**
 * A service's retry policy as a timeline, for operators to reason about before an outage (`ferry retry-plan`).
 * Pure: the worker's own backoff cap (backoffCapMs of src/core/delivery-policy.ts, the one copy of the formula),
 * no randomness, no clock.
 *
 * Times ignore the calls' own durations (up to the service's timeoutMs each) and holds (which use no attempt).
 */
import { backoffCapMs } from '../core/delivery-policy.ts';
import type { RetryPolicy } from '../core/services/types.ts';

/** A range of ms: a full-jitter wait is uniform on [minMs, maxMs), so its expected value is the middle. */
export interface MsRange {
  minMs: number;
  maxMs: number;
  expectedMs: number;
}

export interface PlannedAttempt {
  /** 1-based. */
  attempt: number;
  /** When this attempt starts, counted from the first one's start. */
  startsAfter: MsRange;
  /**
   * The wait after this attempt fails with a retryable error before the next one: uniform on [0, capMs)
   * (full jitter). null for the last attempt (its failure dead-letters the job).
   */
  delayAfter: (MsRange & { capMs: number }) | null;
}

export interface RetryPlan {
  attempts: number;
  delayMs: number;
  maxDelayMs: number;
  timeline: PlannedAttempt[];
  /** From the first attempt's start to the last attempt's start: when a job failing every time is dead-lettered. */
  untilDeadLetter: MsRange;
  /** Longest time the calls themselves add (attempts × timeoutMs), when given. */
  callTimeMaxMs?: number;
  notes: string[];
}

export function planRetries(
  policy: Pick<
    RetryPolicy,
    'attempts' | 'delayMs' | 'maxDelayMs' | 'maxRetryAfterMs' | 'maxHoldMs' | 'retryOn'
  >,
  options: { timeoutMs?: number } = {},
): RetryPlan {
  const timeline: PlannedAttempt[] = [];
  let before: MsRange = { minMs: 0, maxMs: 0, expectedMs: 0 };
  for (let attempt = 1; attempt <= policy.attempts; attempt++) {
    const last = attempt === policy.attempts;
    const capMs = backoffCapMs(attempt, policy);
    const delayAfter = last ? null : { minMs: 0, maxMs: capMs, expectedMs: capMs / 2, capMs };
    timeline.push({ attempt, startsAfter: before, delayAfter });
    if (delayAfter !== null) {
      before = {
        minMs: before.minMs,
        maxMs: before.maxMs + delayAfter.maxMs,
        expectedMs: before.expectedMs + delayAfter.expectedMs,
      };
    }
  }
  const plan: RetryPlan = {
    attempts: policy.attempts,
    delayMs: policy.delayMs,
    maxDelayMs: policy.maxDelayMs,
    timeline,
    untilDeadLetter: before,
    notes: [
      'Each wait is drawn uniformly from 0 up to its cap (full jitter), so retries after an outage spread out.',
      `A Retry-After header (429, 503) replaces the wait, clamped to retry.maxRetryAfterMs (${policy.maxRetryAfterMs} ms).`,
      `While the breaker is open, or after a 429/503 with Retry-After, jobs are held without using attempts, for up to retry.maxHoldMs (${policy.maxHoldMs} ms) per job; past that, each hold uses an attempt.`,
      `Not retried (dead-lettered at once): 4xx other than 408, 425, 429${policy.retryOn.length > 0 ? `, ${policy.retryOn.join(', ')}` : ''}; authentication after its one refresh; validation, configuration, response too large.`,
    ],
  };
  if (options.timeoutMs !== undefined) plan.callTimeMaxMs = policy.attempts * options.timeoutMs;
  return plan;
}
