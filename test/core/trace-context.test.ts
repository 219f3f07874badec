/** W3C Trace Context checks of untrusted header and metadata values (core/trace-context.ts), as a table. */
import { describe, expect, it } from 'vitest';

import {
  traceContextOfHeaders,
  traceContextOfMetadata,
  validTraceparent,
  validTracestate,
  withTraceContext,
} from '../../src/core/trace-context.ts';

const ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';
const VALID = `00-${ID}-${SPAN}-01`;

describe('validTraceparent', () => {
  it.each([
    [VALID, VALID],
    [`00-${ID}-${SPAN}-00`, `00-${ID}-${SPAN}-00`],
    // A later version may append fields: read by its version-00 prefix.
    [`01-${ID}-${SPAN}-01-more`, `00-${ID}-${SPAN}-01`],
    [`00-${ID}-${SPAN}-01-more`, undefined],
    [`ff-${ID}-${SPAN}-01`, undefined],
    [`00-${ID.toUpperCase()}-${SPAN}-01`, undefined],
    [`00-${'0'.repeat(32)}-${SPAN}-01`, undefined],
    [`00-${ID}-${'0'.repeat(16)}-01`, undefined],
    [`00-${ID}-${SPAN}-1`, undefined],
    [`01-${ID}-${SPAN}-01-${'x'.repeat(600)}`, undefined],
    ['', undefined],
    [42, undefined],
    [[VALID], undefined],
    [undefined, undefined],
  ])('%j → %j', (value, expected) => {
    expect(validTraceparent(value)).toBe(expected);
  });
});

describe('validTracestate', () => {
  it.each([
    ['vendor=abc', 'vendor=abc'],
    [' a=1 , b@tenant=x y ,,', 'a=1,b@tenant=x y'],
    ['Bad=1', undefined],
    ['a=1,a=2', undefined],
    ['a=', undefined],
    ['a=x,y', undefined],
    ['a=b=c', undefined],
    [`a=${'x'.repeat(600)}`, undefined],
    [Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(','), undefined],
    ['', undefined],
    [7, undefined],
  ])('%j → %j', (value, expected) => {
    expect(validTracestate(value)).toBe(expected);
  });
});

describe('trace context of headers and metadata', () => {
  it('keeps a valid traceparent, drops a bad tracestate, refuses two traceparent headers', () => {
    expect(traceContextOfHeaders({ traceparent: VALID, tracestate: ['a=1', 'b=2'] })).toEqual({
      traceparent: VALID,
      tracestate: 'a=1,b=2',
    });
    expect(traceContextOfHeaders({ traceparent: VALID, tracestate: 'Nope' })).toEqual({ traceparent: VALID });
    expect(traceContextOfHeaders({ traceparent: [VALID, VALID] })).toBeUndefined();
    expect(traceContextOfHeaders({ traceparent: `${VALID}, ${VALID}` })).toBeUndefined();
    expect(traceContextOfHeaders({})).toBeUndefined();
    expect(traceContextOfMetadata({ traceparent: VALID, tracestate: { no: 1 } })).toEqual({
      traceparent: VALID,
    });
    expect(traceContextOfMetadata({ traceparent: 'x', tracestate: 'a=1' })).toBeUndefined();
    expect(traceContextOfMetadata(undefined)).toBeUndefined();
  });

  it("adds a context to metadata unless the metadata's own traceparent wins", () => {
    const trace = { traceparent: VALID, tracestate: 'a=1' };
    expect(withTraceContext(undefined, trace)).toEqual(trace);
    expect(withTraceContext({ order: 1 }, trace)).toEqual({ order: 1, ...trace });
    const own = { traceparent: 'mine' };
    expect(withTraceContext(own, trace)).toBe(own);
    expect(withTraceContext(own, undefined)).toBe(own);
  });
});
