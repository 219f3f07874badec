import { describe, expect, it } from 'vitest';

import { classifyError, classifyStatus, isUnhealthyFailure } from '../../src/worker/http/classify.ts';

describe('classifyStatus', () => {
  it.each([
    [400, 'ClientError'],
    [401, 'AuthenticationError'],
    [403, 'AuthenticationError'],
    [404, 'ClientError'],
    [408, 'ClientError'],
    [422, 'ClientError'],
    [429, 'RateLimitedError'],
    [500, 'ServerError'],
    [502, 'ServerError'],
    [503, 'ServerError'],
    [301, 'ClientError'],
  ])('%i → %s', (status, type) => {
    const error = classifyStatus(status, undefined);
    expect(error.type).toBe(type);
    expect(error.status).toBe(status);
  });
});

describe('classifyError', () => {
  const withCode = (code: string): Error => Object.assign(new Error(code), { code });
  it.each([
    ['ECONNREFUSED', 'NetworkError'],
    ['ECONNRESET', 'NetworkError'],
    ['ENOTFOUND', 'NetworkError'],
    ['UND_ERR_SOCKET', 'NetworkError'],
    ['UND_ERR_CONNECT_TIMEOUT', 'TimeoutError'],
    ['UND_ERR_HEADERS_TIMEOUT', 'TimeoutError'],
    ['UND_ERR_BODY_TIMEOUT', 'TimeoutError'],
    ['UND_ERR_INVALID_ARG', 'ValidationError'],
    ['ERR_TLS_CERT_ALTNAME_INVALID', 'NetworkError'],
  ])('%s → %s', (code, type) => {
    expect(classifyError(withCode(code)).type).toBe(type);
  });

  it('finds the code on a cause', () => {
    expect(classifyError(new Error('fetch failed', { cause: withCode('ECONNREFUSED') })).type).toBe(
      'NetworkError',
    );
  });
});

describe('isUnhealthyFailure: only what says the service is unhealthy opens a breaker', () => {
  it.each([
    [500, true],
    [503, true],
    [400, false],
    [401, false],
    [429, false],
  ])('status %i → %s', (status, expected) => {
    expect(isUnhealthyFailure(classifyStatus(status, undefined))).toBe(expected);
  });
});
