/** `proxy:` and `tls:` in the services file (issue 17 items 1 and 2), and the scrubbing of what they render. */
import { describe, expect, it } from 'vitest';

import { ConfigurationError } from '../../src/core/errors.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { Scrubber } from '../../src/secrets/scrub.ts';
import {
  checkTlsMaterial,
  observePem,
  observeProxyUrl,
  renderTransport,
} from '../../src/worker/http/transport.ts';
import { servicesFileIssues } from '../helpers/services-issues.ts';
import { makeTestCertificates } from '../helpers/tls-certs.ts';

function withService(extra: Record<string, unknown>): unknown {
  return {
    services: {
      crm: {
        baseUrl: 'https://api.example.com',
        operations: { get: { method: 'GET', path: '/x' } },
        ...extra,
      },
    },
  };
}

const context = (secrets: Record<string, string>) => ({
  input: {},
  secrets: new Map(Object.entries(secrets)),
  tenant: undefined,
  job: { id: '1', idempotencyKey: 'k' },
});

describe('proxy: and tls: in the services file', () => {
  it('compiles proxy: none, a secret proxy URL and tls templates, and resolves their secrets per job', () => {
    const config = parseServicesConfig(
      withService({
        proxy: '{{ secrets.corp_proxy }}',
        tls: {
          ca: '{{ secrets.ca }}',
          cert: '{{ secrets.cert }}',
          key: '{{ secrets.key }}',
          minVersion: 'TLSv1.3',
        },
      }),
    );
    const crm = config.services.get('crm')!;
    expect(crm.proxy?.kind).toBe('url');
    expect(crm.secretNames).toEqual(['ca', 'cert', 'corp_proxy', 'key']);
    const none = parseServicesConfig(withService({ proxy: 'none' })).services.get('crm')!;
    expect(none.proxy).toEqual({ kind: 'none' });
    expect(parseServicesConfig(withService({})).services.get('crm')!.proxy).toEqual({ kind: 'env' });
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['a proxy from input', { proxy: '{{ input.proxy }}' }, 'services.crm.proxy'],
    [
      'a proxy from the tenant',
      { proxy: 'http://{{ tenant }}.proxy.example:3128' },
      'services.crm.proxy: may not read the tenant',
    ],
    [
      'a socks proxy',
      { proxy: 'socks5://proxy.example:1080' },
      'services.crm.proxy: must be an http:// or https:// proxy URL',
    ],
    [
      'a proxy with a path',
      { proxy: 'http://proxy.example:3128/x' },
      'services.crm.proxy: must not have a path',
    ],
    ['a key from input', { tls: { cert: 'c', key: '{{ input.k }}' } }, 'services.crm.tls.key'],
    [
      'a cert without its key',
      { tls: { cert: '{{ secrets.c }}' } },
      'services.crm.tls: cert and key go together',
    ],
    [
      'an unknown minVersion',
      { tls: { minVersion: 'TLSv1.1' } },
      'services.crm.tls.minVersion: must be one of TLSv1.2, TLSv1.3',
    ],
    ['an unknown tls key', { tls: { ciphers: 'x' } }, 'services.crm.tls.ciphers: unknown option'],
  ])('refuses %s', (_label, extra, expected) => {
    const issues = servicesFileIssues(() => parseServicesConfig(withService(extra)));
    expect(
      issues.some((issue) => issue.startsWith(expected)),
      issues.join('\n'),
    ).toBe(true);
  });

  it('refuses a rendered proxy URL that is not one, without echoing it', () => {
    const crm = parseServicesConfig(withService({ proxy: '{{ secrets.corp_proxy }}' })).services.get('crm')!;
    expect(() => renderTransport(crm, context({ corp_proxy: 'ftp://u:hunter2hunter2@p' }))).toThrow(
      /proxy: the rendered URL must be an http/,
    );
    expect(() => renderTransport(crm, context({ corp_proxy: 'ftp://u:hunter2hunter2@p' }))).not.toThrow(
      /hunter2/,
    );
  });

  it('keys a transport by a hash of what it rendered, which changes when a secret rotates', () => {
    const crm = parseServicesConfig(
      withService({ tls: { cert: '{{ secrets.cert }}', key: '{{ secrets.key }}' } }),
    ).services.get('crm')!;
    const first = renderTransport(crm, context({ cert: 'CERT-1', key: 'KEY-1' }));
    expect(renderTransport(crm, context({ cert: 'CERT-1', key: 'KEY-1' })).key).toBe(first.key);
    const rotated = renderTransport(crm, context({ cert: 'CERT-2', key: 'KEY-2' }));
    expect(rotated.key).not.toBe(first.key);
    expect(rotated.key).not.toContain('KEY');
    expect(rotated.tls).toEqual({ cert: 'CERT-2', key: 'KEY-2' });
  });
});

describe('checking TLS material before a pool is made', () => {
  it('names the field at fault and never a line of the PEM', async () => {
    const certs = await makeTestCertificates();
    const fails = (tls: Parameters<typeof checkTlsMaterial>[0]): ConfigurationError => {
      try {
        checkTlsMaterial(tls);
      } catch (error) {
        if (error instanceof ConfigurationError) return error;
        throw error;
      }
      throw new Error('accepted');
    };
    expect(() =>
      checkTlsMaterial({ ca: certs.ca, cert: certs.clientA.cert, key: certs.clientA.key }),
    ).not.toThrow();
    const mismatch = fails({ cert: certs.clientA.cert, key: certs.intruder.key });
    expect([mismatch.field, mismatch.message]).toEqual([
      'tls.key',
      expect.stringMatching(/not the key of tls\.cert/),
    ]);
    const passphrase = fails({ cert: certs.clientB.cert, key: certs.clientB.key, passphrase: 'wrong-one' });
    expect(passphrase.field).toBe('tls.passphrase');
    expect(fails({ ca: 'garbage' }).field).toBe('tls.ca');
    for (const error of [mismatch, passphrase])
      for (const line of certs.intruder.key.split('\n').filter((l) => l.length > 16))
        expect(error.message).not.toContain(line);
  });
});

describe('scrubbing transport secrets', () => {
  it('redacts any single line of a PEM key, not only the whole key', () => {
    const lines = Array.from(
      { length: 4 },
      (_, i) => `MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg${i}abc`,
    );
    const pem = `-----BEGIN PRIVATE KEY-----\n${lines.join('\n')}\n-----END PRIVATE KEY-----\n`;
    const scrubber = new Scrubber();
    observePem(pem, scrubber);
    for (const line of lines) expect(scrubber.scrub(`bad key near ${line} here`)).not.toContain(line);
    expect(scrubber.scrub('-----BEGIN PRIVATE KEY-----')).toBe('-----BEGIN PRIVATE KEY-----');
  });

  it("redacts a proxy URL's password, user:password and the Proxy-Authorization value", () => {
    const scrubber = new Scrubber();
    observeProxyUrl('http://corp%40user:p%40ss-w0rd-77@proxy.example:3128', scrubber);
    const basic = Buffer.from('corp@user:p@ss-w0rd-77').toString('base64');
    for (const text of ['p@ss-w0rd-77', 'p%40ss-w0rd-77', `Proxy-Authorization: Basic ${basic}`]) {
      expect(scrubber.scrub(text)).toContain('[redacted]');
      expect(scrubber.scrub(text)).not.toContain('w0rd');
    }
  });
});
