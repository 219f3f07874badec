/** validateEnqueueRequest: what it returns, and when it need not check again. */
import { describe, expect, it } from 'vitest';

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
