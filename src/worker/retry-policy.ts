/**
 * The retry half of the delivery policy, for the worker's callers: it lives in src/core/delivery-policy.ts
 * (one copy of the backoff formula, shared with `ferry retry-plan`), where `decide` uses it.
 */
export { computeBackoffMs, decideRetry, isRetryable, type RetryDecision } from '../core/delivery-policy.ts';
