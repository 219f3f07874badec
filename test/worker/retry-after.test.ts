import { describe, expect, it } from 'vitest';

import { createRetryAfterWarning, parseRetryAfter, readRetryAfter } from '../../src/worker/retry-after.ts';

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

describe('readRetryAfter', () => {
  it.each([
    ['within the cap', '120', { delayMs: 120_000, askedMs: 120_000 }],
    ['over the cap: clamped, the ask kept', '99999', { delayMs: max, askedMs: 99_999_000 }],
    ['a date a day ahead', 'Tue, 24 Nov 2026 10:00:00 GMT', { delayMs: max, askedMs: 86_400_000 }],
    ['too many digits for a number', '9'.repeat(400), { delayMs: max, askedMs: Number.MAX_SAFE_INTEGER }],
    ['garbage', 'soon', undefined],
  ])('%s', (_name, header, expected) => {
    expect(readRetryAfter(header, now, max)).toEqual(expected);
  });
});

describe('createRetryAfterWarning', () => {
  function setup() {
    const lines: { fields: Record<string, unknown>; message: string }[] = [];
    let clock = 0;
    const warn = createRetryAfterWarning({
      service: 'crm',
      maxRetryAfterMs: 300_000,
      logger: { warn: (fields, message) => lines.push({ fields, message }) },
      now: () => clock,
      intervalMs: 60_000,
    });
    return { lines, warn, advance: (ms: number) => (clock += ms) };
  }

  it('warns at once with the service, the asked and the applied wait', () => {
    const { lines, warn } = setup();
    warn(99_999_000, 300_000);
    expect(lines).toEqual([
      {
        fields: {
          service: 'crm',
          askedMs: 99_999_000,
          appliedMs: 300_000,
          maxRetryAfterMs: 300_000,
          occurrences: 1,
        },
        message: expect.stringContaining('longer than retry.maxRetryAfterMs') as unknown as string,
      },
    ]);
  });

  it('a flood writes one line per interval, which counts the ones it stands for', () => {
    const { lines, warn, advance } = setup();
    for (let i = 0; i < 1_000; i++) {
      warn(99_999_000, 300_000);
      advance(10);
    }
    // 1,000 answers over 10 s: one line.
    expect(lines).toHaveLength(1);
    advance(60_000);
    warn(7_200_000, 300_000);
    expect(lines).toHaveLength(2);
    expect(lines[1]!.fields).toMatchObject({ askedMs: 7_200_000, occurrences: 1_000 });
  });
});
