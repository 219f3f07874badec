import { describe, expect, it } from 'vitest';

import { computeBackoffMs, decideRetry, isRetryable } from '../../src/core/delivery-policy.ts';
import {
  ClientError,
  NetworkError,
  RateLimitedError,
  ServerError,
  ValidationError,
} from '../../src/core/errors.ts';
import type { RetryPolicy } from '../../src/core/services/types.ts';

const policy: RetryPolicy = {
  attempts: 5,
  delayMs: 1000,
  maxDelayMs: 10_000,
  retryOn: [409],
  maxRetryAfterMs: 60_000,
  maxHoldMs: 60_000,
};

describe('computeBackoffMs: exponential, full jitter, capped', () => {
  it.each([
    // attempt, random, expected
    [1, 0.999999, 999],
    [2, 0.999999, 1999],
    [3, 0.999999, 3999],
    [4, 0.999999, 7999],
    [5, 0.999999, 9999], // capped at maxDelayMs
    [60, 0.999999, 9999], // no overflow for huge attempts
    [3, 0, 0], // full jitter reaches zero
    [3, 0.5, 2000],
  ])('attempt %i with random %f waits %i ms', (attempt, random, expected) => {
    expect(computeBackoffMs(attempt, policy, () => random)).toBe(expected);
  });
});

describe('isRetryable (DESIGN §4)', () => {
  it.each([
    ['ServerError 503', new ServerError('x', { status: 503 }), true],
    ['NetworkError', new NetworkError('x'), true],
    ['RateLimitedError', new RateLimitedError('x', { status: 429 }), true],
    ['ClientError 400', new ClientError('x', { status: 400 }), false],
    ['ClientError 408', new ClientError('x', { status: 408 }), true],
    ['ClientError 425', new ClientError('x', { status: 425 }), true],
    ['ClientError 409 via retryOn', new ClientError('x', { status: 409 }), true],
    ['ValidationError', new ValidationError('x'), false],
  ])('%s → %s', (_name, error, expected) => {
    expect(isRetryable(error, policy)).toBe(expected);
  });
});

describe('decideRetry', () => {
  it('retries a retryable error with backoff while attempts remain', () => {
    expect(decideRetry(new ServerError('x', { status: 500 }), 1, policy, () => 0.5)).toEqual({
      kind: 'retry',
      delayMs: 500,
    });
  });
  it('honours Retry-After instead of the backoff', () => {
    expect(
      decideRetry(new ServerError('x', { status: 503, retryAfterMs: 7000 }), 1, policy, () => 0.5),
    ).toEqual({ kind: 'retry', delayMs: 7000 });
  });
  it('dead-letters when attempts are used up', () => {
    expect(decideRetry(new ServerError('x'), 5, policy)).toEqual({ kind: 'deadLetter', reason: 'exhausted' });
  });
  it('dead-letters a non-retryable error at once', () => {
    expect(decideRetry(new ClientError('x', { status: 422 }), 1, policy)).toEqual({
      kind: 'deadLetter',
      reason: 'notRetryable',
    });
  });
});
