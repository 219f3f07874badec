/** retry.maxRetryAfterMs (issue 13 item 7): the cap of a Retry-After hold is a service setting, 5 min by default. */
import { describe, expect, it } from 'vitest';

import { parseServicesConfig } from '../../src/core/services/load.ts';
import { servicesFileIssues } from '../helpers/services-issues.ts';

function serviceWith(retry: unknown, defaults?: unknown): unknown {
  return {
    ...(defaults === undefined ? {} : { defaults }),
    services: {
      crm: {
        baseUrl: 'https://crm.example.com',
        ...(retry === undefined ? {} : { retry }),
        operations: { get: { method: 'GET', path: '/x' } },
      },
    },
  };
}

function issuesOf(doc: unknown): string[] {
  return servicesFileIssues(() => parseServicesConfig(doc, { env: {} }));
}

describe('retry.maxRetryAfterMs', () => {
  it.each<[string, unknown, unknown, number]>([
    ['defaults to 5 minutes', undefined, undefined, 300_000],
    ['is set per service', { maxRetryAfterMs: 30_000 }, undefined, 30_000],
    ['comes from defaults:', undefined, { retry: { maxRetryAfterMs: 10_000 } }, 10_000],
    ['may be 0 (Retry-After ignored)', { maxRetryAfterMs: 0 }, undefined, 0],
  ])('%s', (_name, retry, defaults, expected) => {
    const config = parseServicesConfig(serviceWith(retry, defaults), { env: {} });
    expect(config.services.get('crm')?.retry.maxRetryAfterMs).toBe(expected);
  });

  it.each([
    [-1, 'services.crm.retry.maxRetryAfterMs: must be an integer >= 0'],
    ['5m', 'services.crm.retry.maxRetryAfterMs: must be an integer >= 0'],
    [1.5, 'services.crm.retry.maxRetryAfterMs: must be an integer >= 0'],
    [
      2 ** 31,
      'services.crm.retry.maxRetryAfterMs: must be at most 2147483647 (the longest timer Node.js supports, about 24.8 days)',
    ],
  ])('refuses %j, naming the path', (value, expected) => {
    expect(issuesOf(serviceWith({ maxRetryAfterMs: value }))).toEqual([expected]);
  });
});
