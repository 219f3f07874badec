/**
 * Signed requests end to end (issue 17 item 3): a worker signs each request, and a real local receiver checks
 * it with the schemes written out here from their specs with node:crypto, over the bytes it received.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

import { describe, expect, it } from 'vitest';

import { type RecordedRequest, startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { dumpRedis, startRedis } from '../helpers/redis.ts';
import { findSecretForms, secretForms } from '../helpers/secret-forms.ts';

const redis = await startRedis();

// Fixed keys (no randomness): 32 bytes each, as Standard Webhooks serialises them.
const NEW_KEY = Buffer.from('6d1c0e7a9b4f2c8d3e5a7b9c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6', 'hex');
const OLD_KEY = Buffer.from('0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0', 'hex');
const NEW_WHSEC = `whsec_${NEW_KEY.toString('base64')}`;
const OLD_WHSEC = `whsec_${OLD_KEY.toString('base64')}`;
const STRIPE_SECRET = 'whsec_stripeTestSecret7Q2mX9pL4vN8';
const GITHUB_SECRET = 'gh-hook-secret-5e8a1f3c9d';
/** Receivers accept a timestamp this far from their own clock (the reference libraries use 5 minutes). */
const TOLERANCE_S = 5 * 60;

function header(headers: IncomingHttpHeaders, name: string): string {
  const value = headers[name];
  if (typeof value !== 'string') throw new Error(`no ${name} header`);
  return value;
}

function equal(a: string, b: string): boolean {
  const [x, y] = [Buffer.from(a), Buffer.from(b)];
  return x.length === y.length && timingSafeEqual(x, y);
}

function freshTimestamp(request: RecordedRequest, timestamp: string): boolean {
  return /^\d+$/.test(timestamp) && Math.abs(request.at / 1000 - Number(timestamp)) <= TOLERANCE_S;
}

/** Standard Webhooks' verification with one key: some `v1,` entry of webhook-signature must match. */
function verifyStandard(request: RecordedRequest, key: Buffer): boolean {
  const id = header(request.headers, 'webhook-id');
  const timestamp = header(request.headers, 'webhook-timestamp');
  if (!freshTimestamp(request, timestamp)) return false;
  const signed = Buffer.concat([Buffer.from(`${id}.${timestamp}.`), request.raw]);
  const expected = createHmac('sha256', key).update(signed).digest('base64');
  return header(request.headers, 'webhook-signature')
    .split(' ')
    .some((entry) => {
      const [version, signature] = entry.split(',');
      return version === 'v1' && signature !== undefined && equal(signature, expected);
    });
}

/** Stripe's: `t=<ts>,v1=<hex>` (several v1 while a secret is rolled), HMAC of `<ts>.<body>` with the secret. */
function verifyStripe(request: RecordedRequest, secret: string): boolean {
  const pairs = header(request.headers, 'stripe-signature')
    .split(',')
    .map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)] as const);
  const timestamp = pairs.find(([name]) => name === 't')?.[1] ?? '';
  if (!freshTimestamp(request, timestamp)) return false;
  const signed = Buffer.concat([Buffer.from(`${timestamp}.`), request.raw]);
  const expected = createHmac('sha256', secret).update(signed).digest('hex');
  return pairs.some(([name, value]) => name === 'v1' && equal(value, expected));
}

/** GitHub's: `X-Hub-Signature-256: sha256=<hex HMAC of the body>`. */
function verifyGithub(request: RecordedRequest, secret: string): boolean {
  const expected = `sha256=${createHmac('sha256', secret).update(request.raw).digest('hex')}`;
  return equal(header(request.headers, 'x-hub-signature-256'), expected);
}

const ENV = {
  FERRY_SECRET_WH_NEW: NEW_WHSEC,
  FERRY_SECRET_WH_OLD: OLD_WHSEC,
  FERRY_SECRET_WH_EMPTY: '',
  FERRY_SECRET_STRIPE: STRIPE_SECRET,
  FERRY_SECRET_GITHUB: GITHUB_SECRET,
  FERRY_SECRET_API_TOKEN: 'api-token-3b9f0c2e',
  FERRY_SECRET_BROKEN: 'whsec_this is not base64 at all!',
};

function service(baseUrl: string, signing: unknown, retry: unknown = { attempts: 1 }): unknown {
  return {
    baseUrl,
    timeoutMs: 5_000,
    retry,
    signing,
    operations: {
      send: { method: 'POST', path: '/hooks', body: '{{ input }}' },
      text: { method: 'POST', path: '/text', body: '{{ input.text }}' },
      poll: { method: 'GET', path: '/poll' },
    },
  };
}

/** Input with characters of 2, 3 and 4 UTF-8 bytes: the signature is over the UTF-8 bytes as sent. */
const INPUT = { name: 'Zoë Ångström', city: '東京', note: 'café ☕ 🚀', quote: '"\\' };

describe('signed requests, verified by an independent receiver', () => {
  it('Standard Webhooks (one key, rotation with two, an emptied key), Stripe and a custom scheme', async () => {
    const downstream = await startDownstream();
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: {
        services: {
          standard: service(downstream.url, { keys: ['{{ secrets.wh_new }}'] }),
          rotating: service(downstream.url, { keys: ['{{ secrets.wh_new }}', '{{ secrets.wh_old }}'] }),
          // Signing composes with auth: a bearer token and a signature on the same call.
          retired: {
            ...(service(downstream.url, {
              keys: ['{{ secrets.wh_new }}', '{{ secrets.wh_empty }}'],
            }) as object),
            auth: { type: 'bearer', token: '{{ secrets.api_token }}' },
          },
          stripe: service(downstream.url, { scheme: 'stripe', keys: ['{{ secrets.stripe }}'] }),
          github: service(downstream.url, {
            scheme: 'custom',
            keys: ['{{ secrets.github }}'],
            payload: '{body}',
            headers: { 'X-Hub-Signature-256': '{signatures}' },
            signature: 'sha256={signature}',
            encoding: 'hex',
          }),
        },
      },
    });
    const names = ['standard', 'rotating', 'retired', 'stripe', 'github'];
    const jobs = await Promise.all(
      names.flatMap((name) => [
        ferry.producer.enqueue({
          service: name,
          operation: 'send',
          input: INPUT,
          idempotencyKey: `${name}-json`,
        }),
        ferry.producer.enqueue({
          service: name,
          operation: 'text',
          input: { text: 'plain text, ünïcödé ✓' },
          idempotencyKey: `${name}-text`,
        }),
        ferry.producer.enqueue({
          service: name,
          operation: 'poll',
          input: {},
          idempotencyKey: `${name}-get`,
        }),
      ]),
    );
    const views = await Promise.all(
      jobs.map((job) => ferry.producer.waitFor(job.service, job.id, { timeoutMs: 15_000 })),
    );
    expect(views.map((view) => view.state)).toEqual(views.map(() => 'completed'));
    expect(downstream.requests).toHaveLength(names.length * 3);

    const byKey = (key: string): RecordedRequest => {
      const found = downstream.requests.find((request) => request.headers['idempotency-key'] === key);
      if (found === undefined) throw new Error(`no request with Idempotency-Key ${key}`);
      return found;
    };
    for (const kind of ['json', 'text', 'get']) {
      const standard = byKey(`standard-${kind}`);
      expect(verifyStandard(standard, NEW_KEY)).toBe(true);
      expect(verifyStandard(standard, OLD_KEY)).toBe(false);
      // webhook-id is the job's idempotency key, as Idempotency-Key carries it.
      expect(standard.headers['webhook-id']).toBe(`standard-${kind}`);

      const rotating = byKey(`rotating-${kind}`);
      expect(header(rotating.headers, 'webhook-signature').split(' ')).toHaveLength(2);
      expect(verifyStandard(rotating, NEW_KEY)).toBe(true);
      expect(verifyStandard(rotating, OLD_KEY)).toBe(true);

      const retired = byKey(`retired-${kind}`);
      expect(header(retired.headers, 'webhook-signature').split(' ')).toHaveLength(1);
      expect(verifyStandard(retired, NEW_KEY)).toBe(true);
      expect(retired.headers.authorization).toBe('Bearer api-token-3b9f0c2e');

      const stripe = byKey(`stripe-${kind}`);
      expect(verifyStripe(stripe, STRIPE_SECRET)).toBe(true);
      expect(stripe.headers['webhook-signature']).toBeUndefined();

      expect(verifyGithub(byKey(`github-${kind}`), GITHUB_SECRET)).toBe(true);
    }
    // The bytes received really are the UTF-8 of the input, and a tampered body does not verify.
    const json = byKey('standard-json');
    expect(JSON.parse(json.raw.toString('utf8'))).toEqual(INPUT);
    expect(json.raw.length).toBeGreaterThan(JSON.stringify(INPUT).length);
    expect(
      verifyStandard({ ...json, raw: Buffer.from(JSON.stringify({ ...INPUT, city: 'Kyoto' })) }, NEW_KEY),
    ).toBe(false);
    expect(byKey('standard-get').raw).toHaveLength(0);
  });

  it('a retry keeps webhook-id, gets a new timestamp, and each attempt verifies', async () => {
    const downstream = await startDownstream((request, index) => {
      if (index > 0) return { status: 200, body: { ok: true } };
      // The first answer (500) waits for the receiver's clock to reach the next second, so that the retry,
      // which starts after it, must carry a later timestamp.
      const nextSecond = (Math.floor(request.at / 1000) + 1) * 1000;
      return { status: 500, body: { error: 'try again' }, delayMs: nextSecond - Date.now() + 5 };
    });
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: {
        services: {
          hooks: service(
            downstream.url,
            { keys: ['{{ secrets.wh_new }}', '{{ secrets.wh_old }}'] },
            { attempts: 3, backoff: { delayMs: 10, maxDelayMs: 20 } },
          ),
        },
      },
    });
    const job = await ferry.producer.enqueue({ service: 'hooks', operation: 'send', input: INPUT });
    const view = await ferry.producer.waitFor('hooks', job.id, { timeoutMs: 15_000 });
    expect(view.state).toBe('completed');
    const [first, second] = downstream.requests;
    expect(downstream.requests).toHaveLength(2);
    expect(header(second!.headers, 'webhook-id')).toBe(header(first!.headers, 'webhook-id'));
    expect(header(first!.headers, 'webhook-id')).toBe(header(first!.headers, 'idempotency-key'));
    expect(Number(header(second!.headers, 'webhook-timestamp'))).toBeGreaterThan(
      Number(header(first!.headers, 'webhook-timestamp')),
    );
    expect(header(second!.headers, 'webhook-signature')).not.toBe(
      header(first!.headers, 'webhook-signature'),
    );
    for (const request of [first!, second!]) {
      expect(verifyStandard(request, NEW_KEY)).toBe(true);
      expect(verifyStandard(request, OLD_KEY)).toBe(true);
    }
  });

  it('a producer-chosen key with a dot is not the id as such: a stable digest of it, on every attempt', async () => {
    const downstream = await startDownstream((_request, index) => ({ status: index === 0 ? 503 : 200 }));
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: {
        services: {
          hooks: service(
            downstream.url,
            { keys: ['{{ secrets.wh_new }}'] },
            { attempts: 3, backoff: { delayMs: 10, maxDelayMs: 20 } },
          ),
        },
      },
    });
    const job = await ferry.producer.enqueue({
      service: 'hooks',
      operation: 'send',
      input: INPUT,
      idempotencyKey: 'order.42 v2',
    });
    expect((await ferry.producer.waitFor('hooks', job.id, { timeoutMs: 15_000 })).state).toBe('completed');
    const ids = downstream.requests.map((request) => header(request.headers, 'webhook-id'));
    expect(ids).toHaveLength(2);
    expect(ids[1]).toBe(ids[0]);
    expect(ids[0]).toMatch(/^msg_[A-Za-z0-9_-]{32}$/);
    expect(downstream.requests.every((request) => verifyStandard(request, NEW_KEY))).toBe(true);
  });

  it('keys never reach Redis, logs, results or dead letters, even when a downstream echoes one', async () => {
    // A hostile or broken receiver that echoes the key it was configured with in a 400 (dead-lettered).
    const downstream = await startDownstream((request) =>
      request.url === '/text'
        ? { status: 400, body: { youShouldNotSee: [NEW_WHSEC, OLD_WHSEC, STRIPE_SECRET] } }
        : { status: 200, body: { echoed: STRIPE_SECRET } },
    );
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: {
        services: {
          rotating: service(downstream.url, { keys: ['{{ secrets.wh_new }}', '{{ secrets.wh_old }}'] }),
          stripe: service(downstream.url, { scheme: 'stripe', keys: ['{{ secrets.stripe }}'] }),
          broken: service(downstream.url, { keys: ['{{ secrets.broken }}'] }),
          empty: service(downstream.url, { keys: ['{{ secrets.wh_empty }}'] }),
        },
      },
    });
    // One at a time, the stripe and rotating services' first jobs first: a worker scrubs the secrets it has
    // resolved, and the 400 echoes every service's keys. Run in parallel, the rotating job's 400 could come back
    // before any stripe job resolved the stripe key (seen in CI), an order this test does not mean to check.
    const requests = [
      { service: 'stripe', operation: 'send', input: INPUT },
      { service: 'rotating', operation: 'text', input: { text: 'x' } },
      { service: 'stripe', operation: 'text', input: { text: 'y' } },
      { service: 'broken', operation: 'send', input: INPUT },
      { service: 'empty', operation: 'send', input: INPUT },
    ];
    const views = [];
    for (const request of requests) {
      const job = await ferry.producer.enqueue(request);
      views.push(await ferry.producer.waitFor(job.service, job.id, { timeoutMs: 15_000 }));
    }
    expect(views.map((view) => view.state)).toEqual([
      'completed',
      'dead_lettered',
      'dead_lettered',
      'dead_lettered',
      'dead_lettered',
    ]);
    const stored = await dumpRedis(redis.client, `${ferry.prefix}:*`);
    // The two bad-key jobs were refused before any call, as configuration errors naming the key's template.
    expect(stored).toContain('ConfigurationError');
    expect(stored).toContain('signing.keys[0] ({{ secrets.broken }}) is not a whsec_ key');
    expect(stored).toContain('every key rendered empty');
    expect(downstream.requests.map((request) => request.url).sort()).toEqual(['/hooks', '/text', '/text']);
    expect(stored).toContain('[redacted]');
    const places = { redis: stored, logs: ferry.logs.join('\n'), views: JSON.stringify(views) };
    const hits = [NEW_WHSEC, OLD_WHSEC, STRIPE_SECRET, ENV.FERRY_SECRET_BROKEN].flatMap((value) =>
      findSecretForms(value.slice(0, 12), secretForms(value), places),
    );
    expect(hits).toEqual([]);
  });
});
