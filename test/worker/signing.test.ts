/**
 * The request signer (issue 17 item 3) as tables, checked against the schemes written out here from their specs
 * with node:crypto (never with src/worker/http/signing.ts: the code under test is not its own oracle).
 */
import { createHash, createHmac } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { isFerryError } from '../../src/core/errors.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import type { CompiledOperation, TemplateContext } from '../../src/core/services/types.ts';
import type { OutboundRequest } from '../../src/worker/http/request.ts';
import { signingId, signRequest } from '../../src/worker/http/signing.ts';

/** Standard Webhooks: `whsec_` + base64 of the key bytes (24 bytes here, the spec's minimum). */
const KEY_BYTES = Buffer.from('00112233445566778899aabbccddeeff0011223344556677', 'hex');
const WHSEC = `whsec_${KEY_BYTES.toString('base64')}`;
const OLD_KEY_BYTES = Buffer.from('ffeeddccbbaa99887766554433221100ffeeddccbbaa9988', 'hex');
const OLD_WHSEC = `whsec_${OLD_KEY_BYTES.toString('base64')}`;
const STRIPE_SECRET = 'whsec_stripe_0123456789abcdef';
const NOW_MS = 1_674_087_231_999;
const NOW_S = '1674087231';

/** Standard Webhooks' reference: `v1,` + base64 HMAC-SHA256(key, "id.timestamp.body") over UTF-8 bytes. */
function standardSignature(key: Buffer, id: string, timestamp: string, body: Buffer): string {
  const signed = Buffer.concat([Buffer.from(`${id}.${timestamp}.`, 'utf8'), body]);
  return `v1,${createHmac('sha256', key).update(signed).digest('base64')}`;
}

/** Stripe's: `v1=` hex HMAC-SHA256(secret as text, "timestamp.body"). */
function stripeSignature(secret: string, timestamp: string, body: Buffer): string {
  const signed = Buffer.concat([Buffer.from(`${timestamp}.`, 'utf8'), body]);
  return createHmac('sha256', Buffer.from(secret, 'utf8')).update(signed).digest('hex');
}

function operationOf(signing: unknown, method = 'POST'): CompiledOperation {
  const config = parseServicesConfig({
    services: {
      svc: {
        baseUrl: 'https://example.test',
        signing,
        operations: {
          op: method === 'GET' ? { method, path: '/x' } : { method, path: '/x', body: '{{ input }}' },
        },
      },
    },
  });
  return config.services.get('svc')!.operations.get('op')!;
}

function contextOf(secrets: Record<string, string>, idempotencyKey = 'ferry-abc_123'): TemplateContext {
  return {
    input: {},
    secrets: new Map(Object.entries(secrets)),
    tenant: undefined,
    job: { id: '1', idempotencyKey },
  };
}

function requestOf(body: string | undefined): OutboundRequest {
  return {
    origin: 'https://example.test',
    path: '/x',
    method: 'POST',
    headers: { 'user-agent': 'ferry/0.1' },
    body,
  };
}

function sign(signing: unknown, secrets: Record<string, string>, body: string | undefined): OutboundRequest {
  return signRequest(operationOf(signing).signing!, requestOf(body), contextOf(secrets), NOW_MS);
}

const BODIES: [string, string | undefined][] = [
  ['a JSON body', '{"a":1,"b":"two"}'],
  ['a body with non-ASCII characters', '{"name":"Zoë Ångström","city":"東京","emoji":"🚀"}'],
  ['no body (GET: the empty body is signed)', undefined],
];

describe('Standard Webhooks (the default scheme)', () => {
  it.each(BODIES)('one key: %s', async (_what, body) => {
    const request = sign({ keys: ['{{ secrets.wh }}'] }, { wh: WHSEC }, body);
    const bytes = Buffer.from(body ?? '', 'utf8');
    expect(request.headers['webhook-id']).toBe('ferry-abc_123');
    expect(request.headers['webhook-timestamp']).toBe(NOW_S);
    expect(request.headers['webhook-signature']).toBe(
      standardSignature(KEY_BYTES, 'ferry-abc_123', NOW_S, bytes),
    );
    expect(request.body).toBe(body);
  });

  it('two keys (rotation): one signature per key, space-separated, current key first', async () => {
    const signing = { keys: ['{{ secrets.wh_new }}', '{{ secrets.wh_old }}'] };
    const request = sign(signing, { wh_new: WHSEC, wh_old: OLD_WHSEC }, '{"x":1}');
    const bytes = Buffer.from('{"x":1}');
    expect(request.headers['webhook-signature']!.split(' ')).toEqual([
      standardSignature(KEY_BYTES, 'ferry-abc_123', NOW_S, bytes),
      standardSignature(OLD_KEY_BYTES, 'ferry-abc_123', NOW_S, bytes),
    ]);
  });

  it.each([
    ['the old key emptied', { wh_new: WHSEC, wh_old: '' }, [KEY_BYTES]],
    ['the new key not yet filled', { wh_new: '  ', wh_old: OLD_WHSEC }, [OLD_KEY_BYTES]],
  ])('a key that renders empty is skipped: %s', async (_what, secrets, expected) => {
    const request = sign({ keys: ['{{ secrets.wh_new }}', '{{ secrets.wh_old }}'] }, secrets, 'b');
    expect(request.headers['webhook-signature']).toBe(
      expected.map((key) => standardSignature(key, 'ferry-abc_123', NOW_S, Buffer.from('b'))).join(' '),
    );
  });

  it('a key without the whsec_ prefix is base64-decoded all the same (as the reference libraries do)', async () => {
    const request = sign({ keys: ['{{ secrets.wh }}'] }, { wh: KEY_BYTES.toString('base64') }, 'b');
    expect(request.headers['webhook-signature']).toBe(
      standardSignature(KEY_BYTES, 'ferry-abc_123', NOW_S, Buffer.from('b')),
    );
  });

  it.each([
    ['every key empty', { a: '', b: '' }, /every key rendered empty/],
    [
      'a key that is not base64',
      { a: 'whsec_not*base64!', b: '' },
      /signing\.keys\[0\].*is not a whsec_ key/,
    ],
    ['a bare prefix', { a: 'whsec_', b: '' }, /is not a whsec_ key/],
  ])('%s is a ConfigurationError naming the key, never its value', async (_what, secrets, message) => {
    let thrown: unknown;
    try {
      sign({ keys: ['{{ secrets.a }}', '{{ secrets.b }}'] }, secrets, 'b');
    } catch (error) {
      thrown = error;
    }
    expect(isFerryError(thrown) && thrown.type).toBe('ConfigurationError');
    expect((thrown as Error).message).toMatch(message);
    for (const value of Object.values(secrets).filter((v) => v.length > 6))
      expect((thrown as Error).message).not.toContain(value);
  });

  it('a fresh timestamp per call (per attempt), the id the same', async () => {
    const operation = operationOf({ keys: ['{{ secrets.wh }}'] });
    const context = contextOf({ wh: WHSEC });
    const first = signRequest(operation.signing!, requestOf('b'), context, NOW_MS);
    const second = signRequest(operation.signing!, requestOf('b'), context, NOW_MS + 61_000);
    expect(second.headers['webhook-id']).toBe(first.headers['webhook-id']);
    expect(Number(second.headers['webhook-timestamp'])).toBe(Number(NOW_S) + 61);
    expect(second.headers['webhook-signature']).toBe(
      standardSignature(KEY_BYTES, 'ferry-abc_123', String(Number(NOW_S) + 61), Buffer.from('b')),
    );
  });
});

describe('signingId', () => {
  const digest = (key: string): string =>
    `msg_${createHash('sha256').update(key).digest('base64url').slice(0, 32)}`;
  it.each<[string, string, string]>([
    [
      'a default key',
      'ferry-0f8fad5b-d9cb-469f-a165-70867728950e',
      'ferry-0f8fad5b-d9cb-469f-a165-70867728950e',
    ],
    ['letters, digits, _ - :', 'order:42_a-b', 'order:42_a-b'],
    ['a key with a dot (would shift text between signed fields)', 'order.42', digest('order.42')],
    ['a key with a space', 'order 42', digest('order 42')],
    ['a key with a comma', 'a,b', digest('a,b')],
    ['a Latin-1 key', 'café', digest('café')],
  ])('%s', async (_what, key, expected) => {
    expect(signingId(key)).toBe(expected);
    expect(signingId(key)).toMatch(/^[A-Za-z0-9_:-]+$/);
  });
});

describe('Stripe', () => {
  it.each(BODIES)('one key: %s', async (_what, body) => {
    const request = sign(
      { scheme: 'stripe', keys: ['{{ secrets.stripe }}'] },
      { stripe: STRIPE_SECRET },
      body,
    );
    const expected = stripeSignature(STRIPE_SECRET, NOW_S, Buffer.from(body ?? '', 'utf8'));
    expect(request.headers['stripe-signature']).toBe(`t=${NOW_S},v1=${expected}`);
    expect(request.headers['webhook-signature']).toBeUndefined();
  });

  it('two keys: t=…,v1=…,v1=… as Stripe sends during a roll', async () => {
    const signing = { scheme: 'stripe', keys: ['{{ secrets.a }}', '{{ secrets.b }}'] };
    const request = sign(signing, { a: STRIPE_SECRET, b: 'whsec_older_secret_value' }, 'b');
    const body = Buffer.from('b');
    expect(request.headers['stripe-signature']).toBe(
      `t=${NOW_S},v1=${stripeSignature(STRIPE_SECRET, NOW_S, body)},v1=${stripeSignature('whsec_older_secret_value', NOW_S, body)}`,
    );
  });
});

describe('a custom scheme', () => {
  it("GitHub's: X-Hub-Signature-256: sha256=<hex HMAC of the body>", async () => {
    const signing = {
      scheme: 'custom',
      keys: ['{{ secrets.gh }}'],
      payload: '{body}',
      headers: { 'X-Hub-Signature-256': '{signatures}' },
      signature: 'sha256={signature}',
      encoding: 'hex',
    };
    const request = sign(signing, { gh: "It's a Secret to Everybody" }, 'Hello, World!');
    // GitHub's documented test vector (docs.github.com, "Validating webhook deliveries").
    expect(request.headers['x-hub-signature-256']).toBe(
      'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17',
    );
  });

  it('a preset with its header names changed, SHA-512 and hex', async () => {
    const signing = {
      keys: ['{{ secrets.wh }}'],
      algorithm: 'sha512',
      encoding: 'hex',
      headers: { 'X-Msg-Id': '{id}', 'X-Msg-Time': '{timestamp}', 'X-Msg-Sig': '{signatures}' },
    };
    const request = sign(signing, { wh: WHSEC }, 'b');
    const expected = createHmac('sha512', KEY_BYTES).update(`ferry-abc_123.${NOW_S}.b`).digest('hex');
    expect(request.headers).toMatchObject({
      'x-msg-id': 'ferry-abc_123',
      'x-msg-time': NOW_S,
      'x-msg-sig': `v1,${expected}`,
    });
    expect(request.headers['webhook-id']).toBeUndefined();
  });
});
