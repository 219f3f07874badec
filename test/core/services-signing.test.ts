/** `signing:` in the services file (issue 17 item 3): presets, overrides, and every mistake with its path. */
import { describe, expect, it } from 'vitest';

import { parseServicesConfig } from '../../src/core/services/load.ts';
import type { ServicesConfig } from '../../src/core/services/types.ts';
import { servicesFileIssues } from '../helpers/services-issues.ts';

function serviceWith(signing: unknown, more: { defaults?: unknown; operation?: unknown } = {}): unknown {
  return {
    ...(more.defaults === undefined ? {} : { defaults: more.defaults }),
    services: {
      crm: {
        baseUrl: 'https://crm.example.com',
        ...(signing === undefined ? {} : { signing }),
        operations: {
          send: { method: 'POST', path: '/hooks', body: '{{ input }}', ...(more.operation as object) },
          plain: { method: 'GET', path: '/x' },
        },
      },
    },
  };
}

function load(doc: unknown): ServicesConfig {
  return parseServicesConfig(doc, { env: {} });
}

function issuesOf(doc: unknown): string[] {
  return servicesFileIssues(() => load(doc));
}

const KEYS = ['{{ secrets.wh_new }}', '{{ secrets.wh_old }}'];

describe('signing: compiled', () => {
  it('is off unless written (a service without it pays nothing)', () => {
    const service = load(serviceWith(undefined)).services.get('crm')!;
    expect(service.operations.get('send')!.signing).toBeUndefined();
  });

  it('defaults to Standard Webhooks; its key secrets are resolved per job like any other', () => {
    const service = load(serviceWith({ keys: KEYS })).services.get('crm')!;
    const signing = service.operations.get('plain')!.signing!;
    expect(signing.scheme).toBe('standard-webhooks');
    expect(signing.format).toMatchObject({ algorithm: 'sha256', encoding: 'base64', keyFormat: 'whsec' });
    expect(signing.format.headers.map(([name]) => name)).toEqual([
      'webhook-id',
      'webhook-timestamp',
      'webhook-signature',
    ]);
    expect(signing.keys.map((key) => key.source)).toEqual(KEYS);
    expect(service.secretNames).toEqual(['wh_new', 'wh_old']);
  });

  it('stripe: one Stripe-Signature header, hex, the secret as text', () => {
    const signing = load(serviceWith({ scheme: 'stripe', keys: ['{{ secrets.s }}'] }))
      .services.get('crm')!
      .operations.get('send')!.signing!;
    expect(signing.format).toMatchObject({ encoding: 'hex', keyFormat: 'utf8', separator: ',' });
    expect(signing.format.headers.map(([name]) => name)).toEqual(['stripe-signature']);
  });

  it('an operation may replace the block or turn it off with false', () => {
    const doc = serviceWith(
      { keys: KEYS },
      { operation: { signing: { scheme: 'stripe', keys: ['{{ secrets.s }}'] } } },
    );
    const service = load(doc).services.get('crm')!;
    expect(service.operations.get('send')!.signing!.scheme).toBe('stripe');
    expect(service.operations.get('plain')!.signing!.scheme).toBe('standard-webhooks');
    expect(service.secretNames).toEqual(['s', 'wh_new', 'wh_old']);
    const off = load(serviceWith({ keys: KEYS }, { operation: { signing: false } })).services.get('crm')!;
    expect(off.operations.get('send')!.signing).toBeUndefined();
  });

  it('a service signing: replaces the one of defaults: whole (schemes never mix)', () => {
    const defaults = { signing: { scheme: 'stripe', keys: ['{{ secrets.s }}'], separator: ';' } };
    const own = load(serviceWith({ keys: KEYS }, { defaults })).services.get('crm')!;
    expect(own.operations.get('send')!.signing!.format.separator).toBe(' ');
    expect(own.secretNames).toEqual(['wh_new', 'wh_old']);
    const inherited = load(serviceWith(undefined, { defaults })).services.get('crm')!;
    expect(inherited.operations.get('send')!.signing!.format.separator).toBe(';');
  });
});

describe('signing: mistakes, each with its path', () => {
  const at = 'services.crm.signing';
  it.each<[string, unknown, string[]]>([
    ['no keys', {}, [`${at}.keys: required (a list of key templates ({{ secrets.name }}))`]],
    ['an empty key list', { keys: [] }, [`${at}.keys: must name at least one key`]],
    [
      'a key written in the file',
      { keys: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'] },
      [`${at}.keys[0]: must read a secret ({{ secrets.name }}): a signing key is never written in the file`],
    ],
    [
      'a key read from input',
      { keys: ['{{ input.key }}'] },
      [
        `${at}.keys[0]: "{{ input.key }}" reads input, which is not allowed here (producers never choose where a call goes)`,
      ],
    ],
    [
      'an unknown scheme',
      { scheme: 'svix', keys: KEYS },
      [`${at}.scheme: must be one of standard-webhooks, stripe, custom`],
    ],
    [
      'an unknown algorithm',
      { algorithm: 'md5', keys: KEYS },
      [`${at}.algorithm: must be one of sha256, sha512`],
    ],
    [
      'an unknown encoding',
      { encoding: 'base32', keys: KEYS },
      [`${at}.encoding: must be one of base64, hex`],
    ],
    [
      'an unknown key format',
      { keyFormat: 'pem', keys: KEYS },
      [`${at}.keyFormat: must be one of whsec, utf8`],
    ],
    [
      'key: for keys:',
      { key: '{{ secrets.x }}' },
      [
        `${at}.keys: required (a list of key templates ({{ secrets.name }}))`,
        `${at}.key: unknown option (did you mean keys?)`,
      ],
    ],
    [
      'a payload without the body',
      { keys: KEYS, payload: '{id}.{timestamp}' },
      [`${at}.payload: must hold {body} exactly once`],
    ],
    [
      'a payload with an unknown placeholder',
      { keys: KEYS, payload: '{id}.{nonce}.{body}' },
      [`${at}.payload: unknown placeholder {nonce} (expected {id}, {timestamp}, {body})`],
    ],
    [
      'a template in a layout',
      { keys: KEYS, payload: '{{ input.x }}.{body}' },
      [
        `${at}.payload: is a layout, not a {{ }} template: write single-brace placeholders ({id}, {timestamp}, {body})`,
      ],
    ],
    [
      'a signature layout without {signature}',
      { keys: KEYS, signature: 'v1' },
      [`${at}.signature: must hold {signature} exactly once`],
    ],
    [
      'headers without {signatures}',
      { keys: KEYS, headers: { 'webhook-id': '{id}', 'webhook-timestamp': '{timestamp}' } },
      [`${at}.headers: exactly one header must hold {signatures}, once`],
    ],
    [
      'a signed id no header sends',
      { keys: KEYS, headers: { 'X-Sig': 't={timestamp},{signatures}' } },
      [`${at}.headers: the payload signs {id}, so a header must send it`],
    ],
    [
      'a header the HTTP client sets',
      {
        keys: KEYS,
        headers: {
          'Content-Length': '{signatures}',
          'webhook-id': '{id}',
          'webhook-timestamp': '{timestamp}',
        },
      },
      [`${at}.headers.Content-Length: is set by the HTTP client and may not be configured`],
    ],
    [
      'a header value with a control character',
      {
        keys: KEYS,
        headers: {
          'webhook-id': '{id}\n',
          'webhook-timestamp': '{timestamp}',
          'webhook-signature': '{signatures}',
        },
      },
      [`${at}.headers.webhook-id: must be printable ASCII (no control characters)`],
    ],
    [
      'a custom scheme without its layouts',
      { scheme: 'custom', keys: KEYS },
      [
        `${at}.payload: required with scheme: custom (there is no preset to take it from)`,
        `${at}.headers: required with scheme: custom (there is no preset to take it from)`,
        `${at}.signature: required with scheme: custom (there is no preset to take it from)`,
      ],
    ],
    [
      'an empty separator',
      { keys: KEYS, separator: '' },
      [`${at}.separator: must be 1 to 8 printable ASCII characters`],
    ],
  ])('%s', (_what, signing, expected) => {
    expect(issuesOf(serviceWith(signing))).toEqual(expected);
  });

  it('in an operation, with the operation path', () => {
    expect(
      issuesOf(serviceWith(undefined, { operation: { signing: { keys: KEYS, scheme: 'x', extra: 1 } } })),
    ).toEqual([
      'services.crm.operations.send.signing.scheme: must be one of standard-webhooks, stripe, custom',
      'services.crm.operations.send.signing.extra: unknown option (expected one of scheme, keys, algorithm, encoding, keyFormat, payload, headers, signature, separator)',
    ]);
  });
});
