/**
 * The stored form of a completed job's result (core/stored-result.ts, issue 20): what the worker writes and
 * every reader decodes. Round trips, the 0.1.0 object form, and hostile values (the return value is anyone's to
 * write): a wrong shape or an unknown version decodes to undefined, never throws. Pure functions: no Redis.
 */
import { describe, expect, it } from 'vitest';

import type { JobResult } from '../../src/core/job.ts';
import {
  decodeStoredResult,
  encodeStoredResult,
  resultMetadata,
  STORED_RESULT_VERSION,
} from '../../src/core/stored-result.ts';
import { routedResult } from '../../src/worker/fallback-route.ts';

const metadata = { source: 'test', n: 1 };
const data = { input: { a: 1 }, metadata };
const ok: JobResult = {
  status: 200,
  headers: { 'content-type': 'application/json', etag: '"x"' },
  body: { id: 42, items: [1, 'two', null] },
  durationMs: 12.5,
  attempts: 1,
};

/** The stored value as BullMQ reads it back: its JSON, parsed. */
function stored(result: JobResult): unknown {
  return JSON.parse(JSON.stringify(encodeStoredResult(result))) as unknown;
}

describe('encodeStoredResult', () => {
  it.each<[string, JobResult, unknown[]]>([
    ['a first-try result: six positions', ok, [2, 200, ok.headers, ok.body, 12.5, 1]],
    ['a truncated body', { ...ok, bodyTruncated: true }, [2, 200, ok.headers, ok.body, 12.5, 1, 1]],
    [
      'a then step',
      { ...ok, attempts: 3, next: { service: 'billing', jobId: 'n-1' } },
      [2, 200, ok.headers, ok.body, 12.5, 3, 0, ['billing', 'n-1']],
    ],
    [
      'a route to the fallback (no call)',
      {
        status: 0,
        headers: {},
        body: null,
        durationMs: 0,
        attempts: 0,
        routedTo: { service: 'b', jobId: 'k' },
      },
      [2, 0, {}, null, 0, 0, 0, null, ['b', 'k']],
    ],
    [
      'every rare field',
      {
        ...ok,
        bodyTruncated: true,
        next: { service: 'billing', jobId: 'n-1' },
        routedTo: { service: 'b', jobId: 'k' },
      },
      [2, 200, ok.headers, ok.body, 12.5, 1, 1, ['billing', 'n-1'], ['b', 'k']],
    ],
  ])('%s', (_label, result, expected) => {
    expect(stored(result)).toEqual(expected);
  });

  it('stores no metadata and no field names', () => {
    const text = JSON.stringify(encodeStoredResult({ ...ok, metadata }));
    expect(text).not.toContain('source');
    for (const name of ['status', 'headers', 'body', 'durationMs', 'attempts', 'metadata'])
      expect(text).not.toContain(`"${name}"`);
    // Smaller than the object form it replaces, metadata aside.
    expect(text.length).toBeLessThan(JSON.stringify(ok).length);
  });
});

describe('decodeStoredResult', () => {
  it.each<[string, JobResult]>([
    ['a first-try result', ok],
    ['a truncated body', { ...ok, bodyTruncated: true }],
    ['a then step', { ...ok, attempts: 2, next: { service: 'billing', jobId: 'n-1' } }],
    [
      'a route',
      {
        status: 0,
        headers: {},
        body: null,
        durationMs: 0,
        attempts: 0,
        routedTo: { service: 'b', jobId: 'k' },
      },
    ],
    ['a text body', { ...ok, body: 'plain text' }],
    ['a schedule tick', { status: 0, headers: {}, body: { run: 'r-1' }, durationMs: 3, attempts: 1 }],
  ])('round trip: %s, with the job data’s metadata', (_label, result) => {
    expect(decodeStoredResult(stored(result), data)).toEqual({ ...result, metadata });
    expect(decodeStoredResult(stored(result))).toEqual(result);
  });

  it('gives the fields in the order the worker’s result had them', () => {
    const decoded = decodeStoredResult(
      stored({ ...ok, bodyTruncated: true, next: { service: 's', jobId: 'j' } }),
      data,
    );
    expect(Object.keys(decoded!)).toEqual([
      'status',
      'headers',
      'body',
      'durationMs',
      'bodyTruncated',
      'metadata',
      'attempts',
      'next',
    ]);
  });

  it('gives a route’s fields in the order routedResult writes them (attempts before metadata)', () => {
    const route = { service: 'backup', jobId: 'k' };
    const written = routedResult({ input: 1, metadata }, 2, route);
    const decoded = decodeStoredResult(encodeStoredResult(written), { metadata });
    expect(JSON.stringify(decoded)).toBe(JSON.stringify(written));
  });

  it('never adds a sealed job’s metadata', () => {
    const sealed = { input: '[sealed]', sealed: 'v1.k.xxx', metadata };
    expect(decodeStoredResult(stored(ok), sealed)).toEqual(ok);
    expect(resultMetadata(sealed)).toBeUndefined();
    // Nor metadata that is not an object.
    expect(decodeStoredResult(stored(ok), { metadata: ['x'] })).toEqual(ok);
    expect(decodeStoredResult(stored(ok), 'data')).toEqual(ok);
  });

  describe('the 0.1.0 object form', () => {
    const legacy = { ...ok, metadata: { stored: 'copy' } };

    it('reads as it was written, its metadata the job data’s when given', () => {
      expect(decodeStoredResult(legacy)).toEqual(legacy);
      expect(decodeStoredResult(legacy, data)).toEqual({ ...ok, metadata });
      expect(decodeStoredResult(legacy, { input: {} })).toEqual(ok);
      expect(decodeStoredResult({ ...ok, bodyTruncated: true, next: { service: 'b', jobId: '1' } })).toEqual({
        ...ok,
        bodyTruncated: true,
        next: { service: 'b', jobId: '1' },
      });
    });

    it('leaves out unknown fields and links that cannot be followed', () => {
      expect(
        decodeStoredResult({
          ...ok,
          extra: 'x',
          next: { service: 'Not A Service', jobId: 'x' },
          routedTo: { service: 'billing', jobId: 'meta' },
        }),
      ).toEqual(ok);
    });
  });

  const v2 = [2, 200, {}, null, 5, 1];
  const hostile: [string, unknown][] = [
    ['undefined', undefined],
    ['null', null],
    ['a number', 42],
    ['a string', '[2,200,{},null,5,1]'],
    ['an empty array', []],
    ['a higher version', [3, 200, {}, null, 5, 1]],
    ['version 1 as an array (0.1.0 stored an object)', [1, 200, {}, null, 5, 1]],
    ['the version as a string', ['2', 200, {}, null, 5, 1]],
    ['too short', [2, 200, {}, null, 5]],
    ['too long', [...v2, 0, null, null, 'more']],
    ['a huge array', Array.from({ length: 100_000 }, () => 1)],
    ['a fractional status', [2, 200.5, {}, null, 5, 1]],
    ['a status above 999', [2, 1000, {}, null, 5, 1]],
    ['a negative status', [2, -1, {}, null, 5, 1]],
    ['a status as a string', [2, '200', {}, null, 5, 1]],
    ['headers as an array', [2, 200, ['a'], null, 5, 1]],
    ['headers as null', [2, 200, null, null, 5, 1]],
    ['a header that is not a string', [2, 200, { etag: 1 }, null, 5, 1]],
    [
      'more headers than any result has',
      [2, 200, Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`h${i}`, 'v'])), null, 5, 1],
    ],
    ['a negative duration', [2, 200, {}, null, -1, 1]],
    ['an infinite duration', [2, 200, {}, null, Number.POSITIVE_INFINITY, 1]],
    ['a duration as a string', [2, 200, {}, null, '5', 1]],
    ['negative attempts', [2, 200, {}, null, 5, -1]],
    ['fractional attempts', [2, 200, {}, null, 5, 1.5]],
    ['bodyTruncated as true', [...v2, true]],
    ['bodyTruncated as 2', [...v2, 2]],
    ['next as an object', [...v2, 0, { service: 'b', jobId: '1' }]],
    ['next of one string', [...v2, 0, ['b']]],
    ['next of numbers', [...v2, 0, [1, 2]]],
    ['routedTo as a string', [...v2, 0, null, 'b/1']],
    ['an object without status', { headers: {}, body: null, durationMs: 1, attempts: 1 }],
    ['an object with a string status', { ...ok, status: '200' }],
    ['an object without attempts', { status: 200, headers: {}, body: null, durationMs: 1 }],
    ['an object with bodyTruncated as 1', { ...ok, bodyTruncated: 1 }],
    ['a raw worker’s value', { ok: true }],
  ];

  it.each(hostile)('%s: undefined', (_label, value) => {
    expect(decodeStoredResult(value)).toBeUndefined();
    expect(decodeStoredResult(value, data)).toBeUndefined();
  });

  it('a link that cannot be followed is left out; the result stays', () => {
    expect(decodeStoredResult([...v2, 0, ['Not A Service', 'x'], ['b', 'meta']])).toEqual({
      status: 200,
      headers: {},
      body: null,
      durationMs: 5,
      attempts: 1,
    });
  });

  it('never throws, even on a value whose fields throw when read', () => {
    const trap = new Proxy([2, 200, {}, null, 5, 1], {
      get() {
        throw new Error('trap');
      },
    });
    expect(decodeStoredResult(trap)).toBeUndefined();
    const getter = Object.defineProperty({}, 'status', {
      get() {
        throw new Error('trap');
      },
      enumerable: true,
    });
    expect(decodeStoredResult(getter)).toBeUndefined();
  });

  it('the version is 2 (0.1.0 stored version 1, an object)', () => {
    expect(STORED_RESULT_VERSION).toBe(2);
    expect(encodeStoredResult(ok)[0]).toBe(STORED_RESULT_VERSION);
  });
});
