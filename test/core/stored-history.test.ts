/**
 * The stored attempt history (core/stored-history.ts) as tables: the exact stored form of each kind of run and
 * its round trip, the version 1 objects Ferry 0.1.0 stored (still in Redis: dead letters for weeks), a list
 * read in one version and written in the other, and hostile values, which must fail with a path and never
 * throw. Pure functions: no Redis (test/worker/stored-history.test.ts reads a real job and dead letter).
 */
import { describe, expect, it } from 'vitest';

import {
  type AttemptRecord,
  attemptRecordSchema,
  type DeadLetterRecord,
  deadLetterRecordSchema,
} from '../../src/core/job.ts';
import {
  decodeDeadLetter,
  decodeHistory,
  encodeHistory,
  STORED_HISTORY_VERSION,
  storedDeliveryStateSchema,
  toStoredDeadLetter,
  toStoredDeliveryState,
} from '../../src/core/stored-history.ts';

const AT = 1_733_400_000_000;

/** Each kind of run the worker records, and its exact stored form. */
const runs: readonly (readonly [label: string, run: AttemptRecord, stored: unknown[]])[] = [
  [
    'a failed run with a retry',
    {
      attempt: 1,
      outcome: 'failed',
      at: AT,
      durationMs: 12,
      type: 'ServerError',
      status: 503,
      message: 'downstream answered 503',
      retryDelayMs: 1500,
    },
    [1, 'failed', AT, 12, 'downstream answered 503', 'ServerError', 503, 1500],
  ],
  [
    'the failed run that dead-lettered (no retry)',
    { attempt: 3, outcome: 'failed', at: AT, durationMs: 9, type: 'ClientError', status: 422, message: 'no' },
    [3, 'failed', AT, 9, 'no', 'ClientError', 422],
  ],
  [
    'a failed run without a status',
    {
      attempt: 2,
      outcome: 'failed',
      at: AT,
      durationMs: 5000,
      type: 'TimeoutError',
      message: 'timed out',
      retryDelayMs: 0,
    },
    [2, 'failed', AT, 5000, 'timed out', 'TimeoutError', null, 0],
  ],
  [
    'a failed run with a type only',
    { attempt: 1, outcome: 'failed', at: AT, durationMs: 1, type: 'NetworkError', message: 'ECONNREFUSED' },
    [1, 'failed', AT, 1, 'ECONNREFUSED', 'NetworkError'],
  ],
  [
    'a held run (429 + Retry-After)',
    {
      attempt: 1,
      outcome: 'held',
      at: AT,
      durationMs: 3,
      type: 'RateLimitedError',
      status: 429,
      message: 'slow down',
      retryDelayMs: 60_000,
    },
    [1, 'held', AT, 3, 'slow down', 'RateLimitedError', 429, 60_000],
  ],
  [
    'an interrupted run',
    {
      attempt: 1,
      outcome: 'interrupted',
      at: AT,
      durationMs: 0,
      message: 'worker shut down during the call',
    },
    [1, 'interrupted', AT, 0, 'worker shut down during the call'],
  ],
  [
    'absent fields before present ones',
    { attempt: 1, outcome: 'failed', at: AT, durationMs: 2, status: 500, message: '' },
    [1, 'failed', AT, 2, '', null, 500],
  ],
  [
    'a wait alone',
    { attempt: 1, outcome: 'failed', at: AT, durationMs: 2, message: 'm', retryDelayMs: 7 },
    [1, 'failed', AT, 2, 'm', null, null, 7],
  ],
];

describe('stored history: version 2', () => {
  it.each(runs)('%s: stored exactly, decoded to the same record', (_label, run, stored) => {
    const encoded = encodeHistory([run]);
    expect(encoded).toEqual([STORED_HISTORY_VERSION, stored]);
    // Through JSON, as Redis keeps it.
    const decoded = decodeHistory(JSON.parse(JSON.stringify(encoded)));
    expect(decoded).toEqual({ ok: true, attempts: [run] });
    // The same JSON, key order included, as the version 1 record read through the public schema: what the
    // API serialises does not change by a byte.
    expect(JSON.stringify(decoded.ok && decoded.attempts)).toBe(
      JSON.stringify([attemptRecordSchema.parse(run)]),
    );
  });

  it('a whole history round-trips in order, the version marker first and once', () => {
    const history = runs.map(([, run]) => run);
    const encoded = encodeHistory(history);
    expect(encoded[0]).toBe(2);
    expect(encoded.filter((entry) => entry === 2)).toHaveLength(1);
    expect(encoded.slice(1)).toEqual(runs.map(([, , stored]) => stored));
    expect(decodeHistory(JSON.parse(JSON.stringify(encoded)))).toEqual({ ok: true, attempts: history });
  });

  it('an empty history is [] (as in version 1), and [2] reads as empty too', () => {
    expect(encodeHistory([])).toEqual([]);
    expect(decodeHistory([])).toEqual({ ok: true, attempts: [] });
    expect(decodeHistory([2])).toEqual({ ok: true, attempts: [] });
  });

  it('stores no field name: a retried job with three runs takes under half the bytes', () => {
    const history = runs.slice(0, 3).map(([, run]) => run);
    const legacy = JSON.stringify(history).length;
    const compact = JSON.stringify(encodeHistory(history)).length;
    expect(JSON.stringify(encodeHistory(history))).not.toMatch(/"(attempt|outcome|at|durationMs|message)"/);
    expect(compact).toBeLessThan(legacy * 0.6);
  });
});

describe('stored history: version 1 (Ferry 0.1.0) and both versions', () => {
  const legacy: AttemptRecord[] = runs.map(([, run]) => run);

  it('a list of AttemptRecord objects reads as it did, unknown keys stripped as before', () => {
    const stored = JSON.parse(JSON.stringify(legacy)) as Record<string, unknown>[];
    stored[0]!.extra = 'a foreign key';
    expect(decodeHistory(stored)).toEqual({ ok: true, attempts: legacy });
    expect(decodeHistory(stored)).toEqual({ ok: true, attempts: attemptRecordSchema.array().parse(stored) });
  });

  it('a state read in version 1 is written back in version 2, with the same runs', () => {
    const stored = { attempts: legacy, heldMs: 10, stallsSeen: 1 };
    const state = storedDeliveryStateSchema.parse(JSON.parse(JSON.stringify(stored)));
    expect(state).toEqual(stored);
    const written = toStoredDeliveryState({ ...state, attempts: [...state.attempts, legacy[0]!] });
    expect(written.attempts[0]).toBe(2);
    expect(written).toMatchObject({ heldMs: 10, stallsSeen: 1 });
    expect(storedDeliveryStateSchema.parse(JSON.parse(JSON.stringify(written)))).toEqual({
      ...stored,
      attempts: [...legacy, legacy[0]],
    });
  });

  it('a dead letter of either version reads as the same record; the public schema stays the objects', () => {
    const record: DeadLetterRecord = {
      service: 'crm',
      operation: 'create',
      input: { a: 1 },
      sourceJobId: '7',
      sourceQueue: '{crm}',
      attempts: legacy,
      finalError: { type: 'ServerError', message: 'downstream answered 503', status: 503 },
      deadLetteredAt: AT,
      enqueuedAt: AT - 1000,
    };
    const compact = JSON.parse(JSON.stringify(toStoredDeadLetter(record))) as unknown;
    expect((compact as { attempts: unknown[] }).attempts[0]).toBe(2);
    expect(decodeDeadLetter(compact)).toEqual(record);
    expect(decodeDeadLetter(JSON.parse(JSON.stringify(record)))).toEqual(record);
    // The API's (and OpenAPI's) schema describes the decoded objects only.
    expect(deadLetterRecordSchema.safeParse(compact).success).toBe(false);
    expect(deadLetterRecordSchema.safeParse(record).success).toBe(true);
  });
});

const tuple = [1, 'failed', AT, 12, 'boom', 'ServerError', 500, 100];
const object = { attempt: 1, outcome: 'failed', at: AT, durationMs: 12, message: 'boom' };

/** Hostile stored values: each fails at the given path of the stored value, and nothing throws. */
const hostile: readonly (readonly [label: string, stored: unknown, path: PropertyKey[]])[] = [
  ['not a list', { 0: 2 }, []],
  ['null', null, []],
  ['a string', '[2]', []],
  ['an unknown version', [3, tuple], [0]],
  ['version 1 marked as a number', [1, object], [0]],
  ['a fractional version', [2.5, tuple], [0]],
  ['a null run', [2, null], [1]],
  ['an object after the marker (runs of both versions)', [2, tuple, object], [2]],
  ['a tuple in a version 1 list (runs of both versions)', [object, tuple], [1]],
  ['a run too short', [2, [1, 'failed', AT, 12]], [1]],
  ['a run too long', [2, [...tuple, 0]], [1]],
  ['attempt 0', [2, [0, 'failed', AT, 12, 'boom']], [1, 0]],
  ['an unknown outcome', [2, [1, 'exploded', AT, 12, 'boom']], [1, 1]],
  ['a negative duration', [2, [1, 'failed', AT, -1, 'boom']], [1, 3]],
  ['a message that is not a string', [2, [1, 'failed', AT, 1, { deep: [[[]]] }]], [1, 4]],
  ['an unknown error type', [2, [1, 'failed', AT, 1, 'boom', 'Pwned']], [1, 5]],
  ['a status that is not an integer', [2, [1, 'failed', AT, 1, 'boom', null, '500']], [1, 6]],
  ['a negative wait', [2, [1, 'failed', AT, 1, 'boom', null, null, -5]], [1, 7]],
  ['a prototype key in a version 1 run', [JSON.parse('{"__proto__":{"polluted":1}}')], [0, 'attempt']],
];

describe('stored history: hostile values', () => {
  it.each(hostile)('%s: malformed at its path, no throw', (_label, stored, path) => {
    const decoded = decodeHistory(stored);
    expect(decoded.ok).toBe(false);
    expect(!decoded.ok && decoded.path).toEqual(path);
    expect(!decoded.ok && decoded.message).toEqual(expect.any(String));
    // In a job's state it is the worker's malformed state, its path under `attempts`.
    const state = storedDeliveryStateSchema.safeParse({ attempts: stored, heldMs: 0, stallsSeen: 0 });
    expect(state.success).toBe(false);
    expect(state.error?.issues[0]?.path).toEqual(['attempts', ...path]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('a long history decodes in time linear in its size, without throwing', () => {
    const many = [2, ...Array.from({ length: 50_000 }, () => tuple)];
    const decoded = decodeHistory(JSON.parse(JSON.stringify(many)));
    expect(decoded.ok && decoded.attempts.length).toBe(50_000);
  });
});
