/**
 * The two hand-checked fast paths of core/job.ts against the zod schemas they stand in for:
 * `parseSimpleEnqueueRequest` (enqueueRequestSchema) and `isTriviallyValidJobData` (jobDataSchema).
 *
 * A fast path may only say what zod would say: what it accepts, zod accepts, with the same value. It must also
 * accept the common shape right up to every limit (else it is of no use), and it may leave to zod only what
 * zod accepts that the fast path does not handle (metadata, origin). Pure functions: no Redis.
 */
import { describe, expect, it } from 'vitest';

import {
  enqueueRequestSchema,
  isTriviallyValidJobData,
  jobDataSchema,
  MAX_DELAY_MS,
  MAX_OPERATION_LENGTH,
  MAX_PRIORITY,
  parseSimpleEnqueueRequest,
} from '../../src/core/job.ts';
import { MAX_IDEMPOTENCY_KEY_LENGTH } from '../../src/core/queue-layout.ts';

/**
 * `fast`: the fast path accepts, and zod accepts the same value. `zod`: the fast path leaves it to zod, which
 * accepts. `refused`: the fast path leaves it to zod, which refuses (with the message the caller shows).
 */
type Verdict = 'fast' | 'zod' | 'refused';
type Case = readonly [label: string, value: unknown, verdict: Verdict];
/**
 * One field's value (ABSENT leaves the field out): valid (`true`, the fast path takes it), invalid (`false`),
 * or `zod`: valid, but left to zod. zod counts a string's length in code points, the fast paths in UTF-16
 * units: a string over the limit in units only, which needs astral characters, is left to zod.
 */
type FieldCase = readonly [label: string, value: unknown, valid: boolean | 'zod'];

const ABSENT = Symbol('absent');
const KEY = MAX_IDEMPOTENCY_KEY_LENGTH;

/** Boundaries of the fields both schemas share (idempotencyKey and tenant). */
const idempotencyKeys: readonly FieldCase[] = [
  ['absent', ABSENT, true],
  ['undefined', undefined, true],
  ['one character', 'k', true],
  [`${KEY} characters (the limit)`, 'k'.repeat(KEY), true],
  [`${KEY + 1} characters`, 'k'.repeat(KEY + 1), false],
  ['empty', '', false],
  [`${KEY} × é (U+00E9, allowed: Latin-1)`, 'é'.repeat(KEY), true],
  ['U+0080 and U+00FF', '\u0080\u00ff', true],
  ['a tab and spaces', 'a\tb c', true],
  ['U+0100 (above Latin-1)', 'a\u0100', false],
  ['an emoji', '😀', false],
  ['LF', 'a\nb', false],
  ['CR', 'a\rb', false],
  ['NUL', 'a\u0000b', false],
  ['DEL', 'a\u007fb', false],
  ['a number', 42, false],
  ['null', null, false],
  ['an array', ['k'], false],
];
const tenants: readonly FieldCase[] = [
  ['absent', ABSENT, true],
  ['undefined', undefined, true],
  ['one character', 'a', true],
  ['128 characters (the limit)', 'A'.repeat(128), true],
  ['129 characters', 'a'.repeat(129), false],
  ['every allowed character', 'Az09_.-x', true],
  ['empty', '', false],
  ['starting with a dot', '.a', false],
  ['starting with _', '_a', false],
  ['a path', '../x', false],
  ['a space', 'a b', false],
  ['a trailing LF', 'acme\n', false],
  ['é', 'acmé', false],
  ['a number', 7, false],
  ['null', null, false],
];

const services: readonly FieldCase[] = [
  ['absent', ABSENT, false],
  ['one character', 'a', true],
  ['64 characters (the limit)', 'a'.repeat(64), true],
  ['65 characters', 'a'.repeat(65), false],
  ['every allowed character', 'a-b_c9', true],
  ['a digit first', '9svc', true],
  ['empty', '', false],
  ['upper case', 'Svc', false],
  ['- first', '-svc', false],
  ['a dot', 'a.b', false],
  ['a trailing LF', 'svc\n', false],
  ['a number', 7, false],
];
const operations: readonly FieldCase[] = [
  ['absent', ABSENT, false],
  ['one character', 'o', true],
  [`${MAX_OPERATION_LENGTH} characters (the limit)`, 'o'.repeat(MAX_OPERATION_LENGTH), true],
  [`${MAX_OPERATION_LENGTH + 1} characters`, 'o'.repeat(MAX_OPERATION_LENGTH + 1), false],
  [
    `${MAX_OPERATION_LENGTH / 2} emoji (${MAX_OPERATION_LENGTH} UTF-16 units)`,
    '😀'.repeat(MAX_OPERATION_LENGTH / 2),
    true,
  ],
  [
    `${MAX_OPERATION_LENGTH / 2} emoji and one more character`,
    `${'😀'.repeat(MAX_OPERATION_LENGTH / 2)}o`,
    'zod',
  ],
  [
    `${MAX_OPERATION_LENGTH} emoji (the limit in code points, as zod counts)`,
    '😀'.repeat(MAX_OPERATION_LENGTH),
    'zod',
  ],
  [`${MAX_OPERATION_LENGTH + 1} emoji`, '😀'.repeat(MAX_OPERATION_LENGTH + 1), false],
  ['any characters (no pattern)', 'créer un contact\n\u0000', true],
  ['empty', '', false],
  ['a number', 1, false],
  ['null', null, false],
];
const inputs: readonly FieldCase[] = [
  ['absent', ABSENT, true],
  ['undefined', undefined, true],
  ['null', null, true],
  ['0', 0, true],
  ['empty string', '', true],
  ['an array', [1, 'x', null], true],
  ['nested objects', { a: { b: [{ c: 'é😀' }] } }, true],
];
/** zod's `z.number().int().min(0).max(max)`. */
function counts(max: number): FieldCase[] {
  return [
    ['absent', ABSENT, true],
    ['undefined', undefined, true],
    ['0', 0, true],
    ['-0', -0, true],
    ['1', 1, true],
    [`${max} (the limit)`, max, true],
    [`${max + 1}`, max + 1, false],
    ['-1', -1, false],
    ['1.5', 1.5, false],
    [`${max} - 0.5`, max - 0.5, false],
    ['NaN', Number.NaN, false],
    ['Infinity', Number.POSITIVE_INFINITY, false],
    ['2^53', 2 ** 53, false],
    ['a numeric string', '10', false],
    ['a bigint', 10n, false],
    ['null', null, false],
    ['true', true, false],
  ];
}

/** A valid request or job data with one field set to each of its cases, the other fields valid. */
function oneFieldAtATime(
  base: Record<string, unknown>,
  fields: Record<string, readonly FieldCase[]>,
): Case[] {
  return Object.entries(fields).flatMap(([field, cases]) =>
    cases.map(([label, value, valid]): Case => {
      const object = { ...base };
      if (value === ABSENT) delete object[field];
      else object[field] = value;
      return [`${field}: ${label}`, object, valid === 'zod' ? 'zod' : valid ? 'fast' : 'refused'];
    }),
  );
}

/** Values of every type and none, for every key of a schema: what the fast path accepts, zod must. */
const ANY_VALUES: readonly unknown[] = [
  undefined,
  null,
  true,
  false,
  0,
  -1,
  1.5,
  Number.NaN,
  10n,
  '',
  'x',
  'acme',
  ' ',
  '\n',
  'é',
  '😀',
  'k'.repeat(KEY + 1),
  [],
  ['x'],
  {},
  { a: 1 },
  { kind: 'then', depth: 0 },
  new Date(0),
];

/** Asserts the case's verdict against both paths. */
function expectVerdict(
  fast: (value: unknown) => unknown,
  schema: { safeParse(value: unknown): { success: boolean; data?: unknown } },
  value: unknown,
  verdict: Verdict,
): void {
  const answer = fast(value);
  const parsed = schema.safeParse(value);
  if (verdict === 'fast') {
    expect(answer, 'the fast path accepts it').toBeDefined();
    expect(parsed.success, 'zod accepts it').toBe(true);
    expect(answer, 'the fast path gives what zod gives').toEqual(parsed.data);
  } else {
    expect(answer, 'the fast path leaves it to zod').toBeUndefined();
    expect(parsed.success, verdict === 'zod' ? 'zod accepts it' : 'zod refuses it').toBe(verdict === 'zod');
  }
}

/** The invariant of any value: when the fast path accepts it, zod accepts it with the same result. */
function expectSound(
  fast: (value: unknown) => unknown,
  schema: { safeParse(value: unknown): { success: boolean; data?: unknown } },
  value: unknown,
): void {
  const answer = fast(value);
  if (answer === undefined) return;
  const parsed = schema.safeParse(value);
  expect(parsed.success, 'zod accepts what the fast path accepts').toBe(true);
  expect(answer, 'the fast path gives what zod gives').toEqual(parsed.data);
}

describe('limits shared by the schemas and the fast paths', () => {
  it('are the documented ones (docs/api.md, DESIGN §3)', () => {
    expect(MAX_DELAY_MS).toBe(31_536_000_000); // 365 days
    expect(MAX_PRIORITY).toBe(2_097_152); // BullMQ's 2^21
    expect(MAX_OPERATION_LENGTH).toBe(128);
    expect(MAX_IDEMPOTENCY_KEY_LENGTH).toBe(200);
  });

  it('are named in zod’s messages as they are checked', () => {
    const message = (value: unknown): string | undefined =>
      enqueueRequestSchema.safeParse(value).error?.issues[0]?.message;
    expect(message({ service: 'Svc', operation: 'op' })).toBe('must match [a-z0-9][a-z0-9_-]{0,63}');
    expect(message({ service: 'svc', operation: 'op', tenant: '.a' })).toBe(
      'must match [A-Za-z0-9][A-Za-z0-9_.-]{0,127}',
    );
    expect(message({ service: 'svc', operation: 'o'.repeat(MAX_OPERATION_LENGTH + 1) })).toBe(
      'must be at most 128 characters',
    );
  });
});

describe('parseSimpleEnqueueRequest agrees with enqueueRequestSchema', () => {
  const fast = (value: unknown): unknown => parseSimpleEnqueueRequest(value);
  const base = { service: 'svc', operation: 'op' };
  const inherited = Object.assign(Object.create({ colour: 'red' }) as object, base);
  const nullPrototype = Object.assign(Object.create(null) as object, base);
  const cases: Case[] = [
    ...oneFieldAtATime(base, {
      service: services,
      operation: operations,
      input: inputs,
      idempotencyKey: idempotencyKeys,
      tenant: tenants,
      delayMs: counts(MAX_DELAY_MS),
      priority: counts(MAX_PRIORITY),
    }),
    [
      'every field at its limit',
      {
        service: 'a'.repeat(64),
        operation: 'o'.repeat(MAX_OPERATION_LENGTH),
        input: { a: 1 },
        idempotencyKey: 'k'.repeat(KEY),
        tenant: 'a'.repeat(128),
        delayMs: MAX_DELAY_MS,
        priority: MAX_PRIORITY,
      },
      'fast',
    ],
    ['metadata: empty', { ...base, metadata: {} }, 'zod'],
    ['metadata: an object', { ...base, metadata: { order: 42 } }, 'zod'],
    ['metadata: null', { ...base, metadata: null }, 'refused'],
    ['metadata: a string', { ...base, metadata: 'x' }, 'refused'],
    ['metadata: an array', { ...base, metadata: ['x'] }, 'refused'],
    ['an unknown key', { ...base, colour: 'red' }, 'refused'],
    ['an unknown key set to undefined', { ...base, colour: undefined }, 'refused'],
    ['origin (Ferry’s own)', { ...base, origin: { kind: 'then', depth: 0 } }, 'refused'],
    ['ferry (Ferry’s own)', { ...base, ferry: { attempts: [] } }, 'refused'],
    [
      'an own __proto__ key (JSON.parse)',
      JSON.parse('{"service":"svc","operation":"op","__proto__":{"x":1}}'),
      'refused',
    ],
    ['an inherited enumerable key', inherited, 'refused'],
    ['a null-prototype object', nullPrototype, 'fast'],
    ['null', null, 'refused'],
    ['undefined', undefined, 'refused'],
    ['an array', [], 'refused'],
    ['a string', 'svc', 'refused'],
    ['a number', 42, 'refused'],
  ];

  it.each(cases)('%s', (_label, value, verdict) => {
    expectVerdict(fast, enqueueRequestSchema, value, verdict);
  });

  it('accepts only what zod accepts, for any value of any key (and of unknown ones)', () => {
    const keys = [...Object.keys(enqueueRequestSchema.shape), 'origin', 'ferry', 'colour'];
    let checked = 0;
    for (const key of keys)
      for (const value of ANY_VALUES) {
        expectSound(fast, enqueueRequestSchema, { ...base, [key]: value });
        checked++;
      }
    expect(checked).toBe(keys.length * ANY_VALUES.length);
  });

  it('returns a copy, not the caller’s object', () => {
    const value = { ...base, input: { a: 1 } };
    const request = parseSimpleEnqueueRequest(value);
    expect(request).not.toBe(value);
    expect(request?.input).toBe(value.input);
  });
});

describe('isTriviallyValidJobData agrees with jobDataSchema', () => {
  const fast = (value: unknown): unknown => (isTriviallyValidJobData(value) ? value : undefined);
  const base = { input: { a: 1 }, enqueueId: 'e-1' };
  const cases: Case[] = [
    ...oneFieldAtATime(base, {
      input: inputs,
      idempotencyKey: idempotencyKeys,
      tenant: tenants,
      enqueueId: [
        ['absent', ABSENT, true],
        ['a uuid', '0d7e2c54-94a4-4f3c-9b52-5a7a1d2f0c11', true],
        ['empty (any string)', '', true],
        ['a number', 1, false],
        ['null', null, false],
      ],
      sealed: [
        ['absent', ABSENT, true],
        ['a string', 'v1.kid.abc', true],
        ['empty (any string)', '', true],
        ['a number', 42, false],
        ['null', null, false],
        ['an object', { kid: 'k' }, false],
      ],
    }),
    ['empty', {}, 'fast'],
    ['unknown keys (the schema is loose)', { ...base, colour: 'red', service: 'svc' }, 'fast'],
    ['ferry (checked on its own: deliveryStateSchema)', { ...base, ferry: { attempts: 'x' } }, 'fast'],
    ['metadata: empty', { ...base, metadata: {} }, 'zod'],
    ['metadata: an object', { ...base, metadata: { order: 42 } }, 'zod'],
    ['metadata: a string', { ...base, metadata: 'x' }, 'refused'],
    ['metadata: null', { ...base, metadata: null }, 'refused'],
    ['origin: a follow-up’s', { ...base, origin: { kind: 'then', depth: 1 } }, 'zod'],
    ['origin: an unknown kind', { ...base, origin: { kind: 'other', depth: 0 } }, 'refused'],
    ['origin: a negative depth', { ...base, origin: { kind: 'then', depth: -1 } }, 'refused'],
    ['null', null, 'refused'],
    ['undefined', undefined, 'refused'],
    ['an array', [], 'refused'],
    ['a string', 'x', 'refused'],
  ];

  it.each(cases)('%s', (_label, value, verdict) => {
    expectVerdict(fast, jobDataSchema, value, verdict);
  });

  it('accepts only what zod accepts, for any value of any key (and of unknown ones)', () => {
    const keys = [...Object.keys(jobDataSchema.shape), 'ferry', 'colour'];
    let checked = 0;
    for (const key of keys)
      for (const value of ANY_VALUES) {
        expectSound(fast, jobDataSchema, { ...base, [key]: value });
        checked++;
      }
    expect(checked).toBe(keys.length * ANY_VALUES.length);
  });
});
