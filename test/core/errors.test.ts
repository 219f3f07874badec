import { readFile } from 'node:fs/promises';

import { describe, expect, it } from 'vitest';

import {
  AuthenticationError,
  CircuitOpenError,
  ClientError,
  ConfigurationError,
  EgressDeniedError,
  ERROR_TYPES,
  type FerryError,
  isFerryError,
  NetworkError,
  RateLimitedError,
  ResponseTooLargeError,
  ServerError,
  TimeoutError,
  TlsError,
  toErrorRecord,
  ValidationError,
} from '../../src/core/errors.ts';
import { formatFailedReason, parseFailedReason } from '../../src/core/failed-reason.ts';

const ALL: FerryError[] = [
  new TimeoutError('t'),
  new NetworkError('n'),
  new ServerError('s', { status: 502 }),
  new RateLimitedError('r', { status: 429, retryAfterMs: 1000 }),
  new AuthenticationError('a', { status: 401 }),
  new ClientError('c', { status: 422 }),
  new CircuitOpenError('o'),
  new ResponseTooLargeError('l'),
  new ValidationError('v', { field: 'input.email' }),
  new ConfigurationError('g'),
  new EgressDeniedError('e', { field: 'baseUrl' }),
  new TlsError('x'),
];

/** Rows of docs/errors.md's table: `| \`Type\` | yes/no | ... |`. */
async function documentedTypes(): Promise<Map<string, boolean>> {
  const text = await readFile(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const rows = new Map<string, boolean>();
  for (const match of text.matchAll(/^\|\s*`(\w+)`\s*\|\s*(yes|no)\s*\|/gm))
    rows.set(match[1]!, match[2] === 'yes');
  return rows;
}

describe('error taxonomy', () => {
  it('has one class per stable type, each with the retryability DESIGN §4 gives', () => {
    expect(ALL.map((e) => e.type)).toEqual([...ERROR_TYPES]);
    const retryable = Object.fromEntries(ALL.map((e) => [e.type, e.retryable]));
    expect(retryable).toEqual({
      TimeoutError: true,
      NetworkError: true,
      ServerError: true,
      RateLimitedError: true,
      AuthenticationError: false,
      ClientError: false,
      CircuitOpenError: true,
      ResponseTooLargeError: false,
      ValidationError: false,
      ConfigurationError: false,
      EgressDeniedError: false,
      TlsError: false,
    });
  });

  it('docs/errors.md lists exactly these types with the same retryability', async () => {
    const documented = await documentedTypes();
    expect([...documented.keys()].sort()).toEqual([...ERROR_TYPES].sort());
    for (const error of ALL) expect(documented.get(error.type), error.type).toBe(error.retryable);
  });

  it('names errors by type and recognises them by brand, not instanceof', () => {
    const error = new ValidationError('bad', { field: 'input.email' });
    expect(error.name).toBe('ValidationError');
    expect(String(error)).toBe('ValidationError: bad');
    expect(isFerryError(error)).toBe(true);
    expect(isFerryError(Object.assign(new Error('x'), { type: 'ServerError' }))).toBe(true);
    expect(isFerryError(Object.assign(new Error('x'), { type: 'SomethingElse' }))).toBe(false);
    expect(isFerryError({ type: 'ServerError', message: 'plain object' })).toBe(false);
  });

  it('turns an error into a plain record for Redis, scrubbing the message and keeping only set fields', () => {
    const record = toErrorRecord(
      new RateLimitedError('key sk_live_1 refused', {
        status: 429,
        retryAfterMs: 2000,
        cause: new Error('inner'),
      }),
      (text) => text.replace('sk_live_1', '[redacted]'),
    );
    expect(record).toEqual({
      type: 'RateLimitedError',
      message: 'key [redacted] refused',
      status: 429,
      retryAfterMs: 2000,
    });
    expect(JSON.parse(JSON.stringify(record))).toEqual(record);
    expect(toErrorRecord(new NetworkError('reset'))).toEqual({ type: 'NetworkError', message: 'reset' });
  });

  it("round-trips the type through BullMQ's failedReason", () => {
    for (const error of ALL) {
      const record = toErrorRecord(error);
      expect(parseFailedReason(formatFailedReason(record), 0)).toEqual({
        type: record.type,
        message: record.message,
      });
    }
    // Multi-line messages survive.
    expect(parseFailedReason('ServerError: line one\nline two', 0).message).toBe('line one\nline two');
  });

  it("reads BullMQ's own stall failure as TimeoutError and anything foreign as ConfigurationError", () => {
    const stalled = parseFailedReason('job stalled more than allowable limit', 5);
    expect(stalled.type).toBe('TimeoutError');
    expect(stalled.message).toContain('5 times');
    expect(parseFailedReason('Missing lock for job 7', 0).type).toBe('ConfigurationError');
    expect(parseFailedReason('NotAFerryError: x', 0).type).toBe('ConfigurationError');
    expect(parseFailedReason(undefined, 0).message).toContain('no reason recorded');
  });
});
