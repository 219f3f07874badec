/** validateEnqueueRequest: what it returns, and when it need not check again. */
import { describe, expect, it } from 'vitest';

import { enqueueRequestSchema, parseSimpleEnqueueRequest } from '../../src/core/job.ts';
import { type ServiceCatalog, validateEnqueueRequest } from '../../src/producer/index.ts';

const catalog: ServiceCatalog = new Map([['svc', { operations: new Map([['op', {}]]), maxInputBytes: 600 }]]);
const other: ServiceCatalog = new Map([
  ['elsewhere', { operations: new Map([['op', {}]]), maxInputBytes: 600 }],
]);

describe('validateEnqueueRequest', () => {
  it('returns a new frozen request; the same request against the same catalog passes as is', () => {
    const raw = { service: 'svc', operation: 'op', input: { a: 1 } };
    const request = validateEnqueueRequest(raw, catalog);
    expect(request).not.toBe(raw);
    expect(Object.isFrozen(request)).toBe(true);
    expect(validateEnqueueRequest(request, catalog)).toBe(request);
  });

  it('checks a validated request again against another catalog', () => {
    const request = validateEnqueueRequest({ service: 'svc', operation: 'op' }, catalog);
    expect(() => validateEnqueueRequest(request, other)).toThrow('unknown service "svc"');
  });

  it('measures the input unless the source text is too small to hold one over the limit, even re-serialized', () => {
    const input = { blob: 'x'.repeat(700) };
    expect(() => validateEnqueueRequest({ service: 'svc', operation: 'op', input }, catalog)).toThrow(
      'over the 600-byte limit',
    );
    // 101 bytes could re-serialize to 606 (an exponent spelled out): measured, refused.
    expect(() =>
      validateEnqueueRequest({ service: 'svc', operation: 'op', input }, catalog, '', { sourceBytes: 101 }),
    ).toThrow('over the 600-byte limit');
    // A source of 100 bytes cannot hold this input: the caller's figure is trusted, nothing is measured.
    expect(
      validateEnqueueRequest({ service: 'svc', operation: 'op', input }, catalog, '', { sourceBytes: 100 })
        .input,
    ).toBe(input);
  });
});

describe('parseSimpleEnqueueRequest (the hand-checked common case)', () => {
  const accepted = [
    { service: 'svc', operation: 'op' },
    { service: 'svc', operation: 'op', input: { a: [1, 'x', null] } },
    { service: 'svc', operation: 'op', input: null, idempotencyKey: 'k'.repeat(200), tenant: 'acme.eu-1_x' },
    { service: 'svc', operation: 'op', delayMs: 0, priority: 2_097_152 },
    { service: 'a-b_c9', operation: 'o'.repeat(128), delayMs: 365 * 24 * 3600 * 1000 },
  ];
  const refused = [
    null,
    [],
    'svc',
    { service: 'svc' },
    { service: 'Svc', operation: 'op' },
    { service: 'svc', operation: '' },
    { service: 'svc', operation: 'o'.repeat(129) },
    { service: 'svc', operation: 'op', idempotencyKey: '' },
    { service: 'svc', operation: 'op', idempotencyKey: 'k'.repeat(201) },
    { service: 'svc', operation: 'op', tenant: '../x' },
    { service: 'svc', operation: 'op', tenant: 7 },
    { service: 'svc', operation: 'op', delayMs: -1 },
    { service: 'svc', operation: 'op', delayMs: 1.5 },
    { service: 'svc', operation: 'op', delayMs: Number.NaN },
    { service: 'svc', operation: 'op', delayMs: 365 * 24 * 3600 * 1000 + 1 },
    { service: 'svc', operation: 'op', priority: 2_097_153 },
    { service: 'svc', operation: 'op', colour: 'red' },
    JSON.parse('{"service":"svc","operation":"op","__proto__":{"x":1}}') as unknown,
  ];

  it.each(accepted.map((value) => [JSON.stringify(value).slice(0, 60), value]))(
    'accepts %s exactly as zod does',
    (_name, value) => {
      const simple = parseSimpleEnqueueRequest(value);
      expect(simple).toBeDefined();
      expect(simple).toEqual(enqueueRequestSchema.parse(value));
    },
  );

  it.each(refused.map((value) => [JSON.stringify(value)?.slice(0, 60) ?? String(value), value]))(
    'leaves %s to zod, which refuses it',
    (_name, value) => {
      expect(parseSimpleEnqueueRequest(value)).toBeUndefined();
      expect(enqueueRequestSchema.safeParse(value).success).toBe(false);
    },
  );

  it('leaves metadata to zod (it accepts it)', () => {
    const value = { service: 'svc', operation: 'op', metadata: { order: 42 } };
    expect(parseSimpleEnqueueRequest(value)).toBeUndefined();
    expect(enqueueRequestSchema.parse(value)).toEqual(value);
  });
});
