/** The retry plan as tables (cockatiel style): caps, cumulative ranges, and the worker's draw below each cap. */
import { describe, expect, it } from 'vitest';

import { backoffCapMs, computeBackoffMs } from '../../src/core/delivery-policy.ts';
import { planRetries } from '../../src/ops/retry-plan.ts';

const policy = {
  attempts: 5,
  delayMs: 1_000,
  maxDelayMs: 5_000,
  maxRetryAfterMs: 3_600_000,
  maxHoldMs: 3_600_000,
  retryOn: [] as number[],
};

describe('backoffCapMs', () => {
  it.each([
    [1, 1_000],
    [2, 2_000],
    [3, 4_000],
    [4, 5_000],
    [10, 5_000],
    [1_000, 5_000],
  ])('after attempt %i the wait is capped at %i ms', (attempt, cap) => {
    expect(backoffCapMs(attempt, policy)).toBe(cap);
  });

  // One formula (core/delivery-policy.ts): what the plan prints is the range the worker draws from.
  it.each([1, 2, 3, 4, 8, 60])('bounds the worker’s draw after attempt %i: [0, cap)', (attempt) => {
    expect(computeBackoffMs(attempt, policy, () => 0)).toBe(0);
    // floor(random × cap) with random just below 1 is cap − 1: the range is [0, cap).
    expect(computeBackoffMs(attempt, policy, () => 0.999_999_999)).toBe(backoffCapMs(attempt, policy) - 1);
  });
});

describe('planRetries', () => {
  it('each attempt’s wait range and when it starts, cumulative min / max / expected', () => {
    const plan = planRetries(policy, { timeoutMs: 10_000 });
    expect(
      plan.timeline.map(({ attempt, startsAfter, delayAfter }) => [
        attempt,
        startsAfter.minMs,
        startsAfter.maxMs,
        startsAfter.expectedMs,
        delayAfter?.capMs ?? null,
      ]),
    ).toEqual([
      [1, 0, 0, 0, 1_000],
      [2, 0, 1_000, 500, 2_000],
      [3, 0, 3_000, 1_500, 4_000],
      [4, 0, 7_000, 3_500, 5_000],
      [5, 0, 12_000, 6_000, null],
    ]);
    expect(plan.untilDeadLetter).toEqual({ minMs: 0, maxMs: 12_000, expectedMs: 6_000 });
    expect(plan.callTimeMaxMs).toBe(50_000);
  });

  it.each([
    [1, 0, 0],
    [2, 1_000, 500],
    // The defaults: 8 attempts, 1 s base, 10 min cap.
    [8, 127_000, 63_500],
  ])(
    '%i attempt(s) with a 1 s base: dead-lettered at most %i ms (expected %i) after the first',
    (attempts, max, expected) => {
      const plan = planRetries({ ...policy, attempts, maxDelayMs: 600_000 });
      expect(plan.timeline).toHaveLength(attempts);
      expect(plan.untilDeadLetter).toEqual({ minMs: 0, maxMs: max, expectedMs: expected });
      expect(plan.timeline.at(-1)?.delayAfter).toBeNull();
    },
  );

  it('notes name the Retry-After clamp, holds that use no attempts up to maxHoldMs, and extra retryOn codes', () => {
    const notes = planRetries({ ...policy, retryOn: [409] }).notes.join('\n');
    expect(notes).toContain('Retry-After');
    expect(notes).toContain('maxRetryAfterMs (3600000 ms)');
    expect(notes).toContain('without using attempts, for up to retry.maxHoldMs (3600000 ms)');
    expect(notes).toContain('429, 409');
  });
});
