import { describe, expect, it } from 'vitest';

import { parseRetryAfter } from '../../src/worker/retry-after.ts';

const now = Date.parse('2026-11-23T10:00:00Z');
const max = 3_600_000;

describe('parseRetryAfter (RFC 9110 §10.2.3)', () => {
  it.each([
    ['delay-seconds', '120', 120_000],
    ['zero', '0', 0],
    ['padded', ' 5 ', 5_000],
    ['HTTP-date in the future', 'Mon, 23 Nov 2026 10:00:30 GMT', 30_000],
    ['HTTP-date in the past', 'Mon, 23 Nov 2026 09:00:00 GMT', 0],
    ['clamped to the maximum', '999999', max],
    ['absent', undefined, undefined],
    ['empty', '', undefined],
    ['garbage', 'soon', undefined],
    ['negative number', '-5', undefined],
    ['array takes the first', ['3', '9'], 3_000],
  ])('%s', (_name, header, expected) => {
    expect(parseRetryAfter(header, now, max)).toBe(expected);
  });
});
