import { describe, expect, it } from 'vitest';

import { Deadline } from '../../src/core/deadline.ts';

describe('Deadline', () => {
  it('counts down on the clock it is given', () => {
    let now = 1_000;
    const deadline = new Deadline(500, { now: () => now });
    expect(deadline.at).toBe(1_500);
    expect(deadline.left()).toBe(500);
    now = 1_400;
    expect(deadline.left()).toBe(100);
    expect(deadline.passed).toBe(false);
    now = 2_000;
    expect(deadline.left()).toBe(0);
    expect(deadline.left(50)).toBe(50);
    expect(deadline.passed).toBe(true);
  });

  it('reads the system clock by default, from a start time when one is given', () => {
    const from = Date.now();
    const deadline = new Deadline(60_000);
    expect(deadline.at).toBeGreaterThanOrEqual(from + 60_000);
    expect(deadline.left()).toBeGreaterThan(0);
    expect(new Deadline(1_000, Date.now() - 2_000).passed).toBe(true);
  });
});
