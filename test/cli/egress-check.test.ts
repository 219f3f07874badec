/**
 * `ferry config check` warns when an env override or a static baseUrl host points at an address the worker
 * would refuse (issue 13 item 3): the same classifier as the dial-time check, so they cannot disagree.
 */
import { describe, expect, it } from 'vitest';

import { checkEgress, type ResolveHost } from '../../src/cli/egress-check.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { runCliInProcess } from '../helpers/cli.ts';
import { writeServicesFile } from '../helpers/processes.ts';

const operations = { op: { method: 'GET', path: '/' } };

/** A resolver over a fixed table; names not in it do not resolve. */
const table =
  (entries: Record<string, string[]>): ResolveHost =>
  (hostname) =>
    hostname in entries ? Promise.resolve(entries[hostname]!) : Promise.reject(new Error('ENOTFOUND'));

const resolve = table({
  'internal.example.com': ['10.0.0.8'],
  'public.example.com': ['93.184.215.14'],
  'metadata.example.com': ['169.254.169.254'],
  localhost: ['127.0.0.1', '::1'],
});

describe('config check egress warnings', () => {
  it.each<[string, Record<string, unknown>, Record<string, string>, RegExp | undefined]>([
    [
      'an env override at loopback',
      {},
      { FERRY_SERVICE_SVC_URL: 'http://127.0.0.1:4010' },
      /FERRY_SERVICE_SVC_URL \(127\.0\.0\.1\) points at 127\.0\.0\.1 \(loopback\).*egress\.allowPrivate: true/,
    ],
    [
      'an env override in decimal',
      {},
      { FERRY_SERVICE_SVC_URL: 'http://2130706433' },
      /points at 127\.0\.0\.1 \(loopback\)/,
    ],
    [
      'an env override naming a private host',
      {},
      { FERRY_SERVICE_SVC_URL: 'https://internal.example.com/v2' },
      /internal\.example\.com\) points at 10\.0\.0\.8 \(private\)/,
    ],
    [
      'an env override at localhost',
      {},
      { FERRY_SERVICE_SVC_URL: 'http://localhost:1' },
      /points at 127\.0\.0\.1 \(loopback\)/,
    ],
    [
      'an env override with a secret path',
      {},
      { FERRY_SERVICE_SVC_URL: 'http://[::1]:1/{{ secrets.acct }}' },
      /points at ::1 \(loopback\)/,
    ],
    [
      'a literal baseUrl at a metadata host',
      { baseUrl: 'http://metadata.example.com' },
      {},
      /169\.254\.169\.254, a cloud metadata address/,
    ],
    [
      'an env override the service allows',
      { egress: { allow: ['127.0.0.1'] } },
      { FERRY_SERVICE_SVC_URL: 'http://127.0.0.1:4010' },
      undefined,
    ],
    [
      'an env override at a public host',
      {},
      { FERRY_SERVICE_SVC_URL: 'https://public.example.com' },
      undefined,
    ],
    ['a literal loopback baseUrl', { baseUrl: 'http://127.0.0.1:4010' }, {}, undefined],
    ['a host a secret fills', { baseUrl: 'http://{{ secrets.host }}' }, {}, undefined],
    ['a name that does not resolve', {}, { FERRY_SERVICE_SVC_URL: 'https://nowhere.example.com' }, undefined],
  ])('%s', async (_label, service, env, warning) => {
    const config = parseServicesConfig(
      { services: { svc: { baseUrl: 'https://public.example.com', operations, ...service } } },
      { env },
    );
    const warnings = await checkEgress(config, resolve);
    if (warning === undefined) {
      expect(warnings).toEqual([]);
    } else {
      expect(warnings).toHaveLength(1);
      expect(warnings[0]!.path).toBe('services.svc.baseUrl');
      expect(warnings[0]!.message).toMatch(warning);
    }
  });

  it('ferry config check prints the warning and still exits 0', async () => {
    const path = await writeServicesFile({
      services: { svc: { baseUrl: 'https://public.example.com', operations } },
    });
    const run = await runCliInProcess(['config', 'check', path], {
      env: { FERRY_SERVICE_SVC_URL: 'http://0x7f.1:4010' },
    });
    expect(run.code, run.output()).toBe(0);
    expect(run.stdout).toBe(`ok: ${path} (1 service(s): svc)`);
    expect(run.stderr).toMatch(
      /^warning: services\.svc\.baseUrl: FERRY_SERVICE_SVC_URL \(127\.0\.0\.1\) points at 127\.0\.0\.1 \(loopback\)/,
    );
  });
});
