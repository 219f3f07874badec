/**
 * The services file's `schedules:` (docs/services-file.md § Schedules): what compiles, and every refusal names
 * its path (`schedules.nightly-sync.cron: …`), together with the file's other issues.
 */
import { describe, expect, it } from 'vitest';

import { parseServicesConfig } from '../../src/core/services/load.ts';
import { servicesFileIssues } from '../helpers/services-issues.ts';

function issuesOf(doc: unknown): string[] {
  return servicesFileIssues(() => parseServicesConfig(doc, { env: {} }));
}

function file(schedules: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    services: {
      crm: {
        baseUrl: 'https://api.crm.example.com',
        maxInputBytes: 64,
        operations: { sync: { method: 'POST', path: '/sync', body: '{{ input }}' } },
      },
      status: {
        baseUrl: 'https://status.example.com',
        tenantSecrets: 'required',
        operations: { ping: { method: 'GET', path: '/ping' } },
      },
      ...extra,
    },
    schedules,
  };
}

describe('schedules: in the services file', () => {
  it('compiles cron (with tz and a seconds field) and everyMs schedules', () => {
    const config = parseServicesConfig(
      file({
        'nightly-sync': {
          cron: '0 2 * * *',
          tz: 'Europe/Berlin',
          service: 'crm',
          operation: 'sync',
          input: { full: true },
        },
        fast: { cron: '*/2 * * * * *', service: 'crm', operation: 'sync' },
        heartbeat: { everyMs: 60000, service: 'status', operation: 'ping', tenant: 'acme' },
      }),
      { env: {} },
    );
    expect([...config.schedules.keys()]).toEqual(['nightly-sync', 'fast', 'heartbeat']);
    expect(config.schedules.get('nightly-sync')).toEqual({
      name: 'nightly-sync',
      service: 'crm',
      operation: 'sync',
      input: { full: true },
      tenant: undefined,
      repeat: { kind: 'cron', cron: '0 2 * * *', tz: 'Europe/Berlin' },
    });
    expect(config.schedules.get('heartbeat')?.repeat).toEqual({ kind: 'every', everyMs: 60000 });
    expect(config.schedules.get('heartbeat')?.tenant).toBe('acme');
    expect(Object.isFrozen(config.schedules.get('nightly-sync')?.input)).toBe(true);
  });

  it('has no schedules when the key is absent', () => {
    const doc = file(undefined);
    delete doc['schedules'];
    expect(parseServicesConfig(doc, { env: {} }).schedules.size).toBe(0);
  });

  it('refuses each problem with its path', () => {
    const issues = issuesOf(
      file({
        both: { cron: '* * * * *', everyMs: 5000, service: 'crm', operation: 'sync' },
        neither: { service: 'crm', operation: 'sync' },
        'bad-cron': { cron: '61 * * * *', service: 'crm', operation: 'sync' },
        'short-cron': { cron: '* * *', service: 'crm', operation: 'sync' },
        'bad-tz': { cron: '0 2 * * *', tz: 'Mars/Olympus', service: 'crm', operation: 'sync' },
        'tz-every': { everyMs: 5000, tz: 'UTC', service: 'crm', operation: 'sync' },
        'too-fast': { everyMs: 10, service: 'crm', operation: 'sync' },
        'no-service': { everyMs: 5000, service: 'nope', operation: 'sync' },
        'no-operation': { everyMs: 5000, service: 'crm', operation: 'nope' },
        templated: { everyMs: 5000, service: 'crm', operation: 'sync', input: { id: ['{{ input.id }}'] } },
        'too-big': { everyMs: 5000, service: 'crm', operation: 'sync', input: { blob: 'x'.repeat(100) } },
        'no-tenant': { everyMs: 5000, service: 'status', operation: 'ping' },
        'bad-tenant': { everyMs: 5000, service: 'crm', operation: 'sync', tenant: 'no spaces' },
        'Bad Name': { everyMs: 5000, service: 'crm', operation: 'sync' },
        typo: { evryMs: 5000, service: 'crm', operation: 'sync' },
        'not-a-mapping': 'every day',
      }),
    );
    expect(issues).toEqual(
      expect.arrayContaining([
        'schedules.both: needs exactly one of cron or everyMs',
        'schedules.neither: needs exactly one of cron or everyMs',
        expect.stringMatching(/^schedules\.bad-cron\.cron: not a valid cron expression/),
        expect.stringMatching(/^schedules\.short-cron\.cron: must be a cron expression of 5 fields/),
        expect.stringMatching(/^schedules\.bad-tz\.tz: "Mars\/Olympus" is not an IANA time zone/),
        expect.stringMatching(/^schedules\.tz-every\.tz: only with cron/),
        expect.stringMatching(/^schedules\.too-fast\.everyMs: must be an integer >= 1000/),
        expect.stringMatching(
          /^schedules\.no-service\.service: unknown service "nope" \(services in this file: crm, status\)/,
        ),
        expect.stringMatching(
          /^schedules\.no-operation\.operation: unknown operation "nope" of service "crm"/,
        ),
        expect.stringMatching(/^schedules\.templated\.input\.id\[0\]: templates are not supported/),
        expect.stringMatching(
          /^schedules\.too-big\.input: \d+ bytes, over service "crm"'s maxInputBytes \(64\)/,
        ),
        'schedules.no-tenant.tenant: required: service "status" has tenantSecrets: required',
        expect.stringMatching(/^schedules\.bad-tenant\.tenant: must match/),
        'schedules["Bad Name"]: schedule name must match [a-z0-9][a-z0-9_-]{0,63}',
        expect.stringMatching(/^schedules\.typo\.evryMs: unknown option/),
        'schedules.not-a-mapping: must be a mapping',
      ]),
    );
    expect(issues.filter((issue) => issue.startsWith('schedules'))).toHaveLength(16);
  });

  it('refuses a schedules: that is not a mapping', () => {
    expect(issuesOf(file(['nightly']))).toEqual([
      'schedules: must be a mapping of schedule names to schedules',
    ]);
  });

  it("reports a schedule's issues together with the services' own", () => {
    const issues = issuesOf(
      file({ x: { cron: 'nope', service: 'crm', operation: 'sync' } }, { broken: { baseUrl: 'ftp://x' } }),
    );
    expect(issues.some((issue) => issue.startsWith('services.broken.'))).toBe(true);
    expect(issues.some((issue) => issue.startsWith('schedules.x.cron: '))).toBe(true);
  });
});
