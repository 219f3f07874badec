/** The token cache on its own, against a real local token endpoint: keys, expiry, single-flight, invalidate, errors. */
import { createServer } from 'node:http';

import { describe, expect, it } from 'vitest';

import type { FerryError } from '../../src/core/errors.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import type { OAuth2Auth } from '../../src/core/services/types.ts';
import { Scrubber } from '../../src/secrets/scrub.ts';
import {
  refreshAfterMs,
  TokenCache,
  type TokenFetchOptions,
  type TokenGrant,
  tokenKey,
} from '../../src/worker/http/oauth2.ts';
import { listenOnFreePort } from '../helpers/listen.ts';
import { startTokenEndpoint } from '../helpers/token-endpoint.ts';

const SECRET = 'cs-9f1c2e7d5b0a4863';
const OPTIONS: TokenFetchOptions = { timeoutMs: 2_000, maxRetryAfterMs: 60_000, signal: undefined };

function oauth2(tokenUrl: string, extra: Record<string, unknown> = {}): OAuth2Auth {
  const config = parseServicesConfig({
    services: {
      crm: {
        baseUrl: 'https://api.example.com',
        auth: { type: 'oauth2', tokenUrl, clientId: 'ferry', clientSecret: '{{ secrets.s }}', ...extra },
        operations: { get: { method: 'GET', path: '/x' } },
      },
    },
  });
  const auth = config.services.get('crm')!.auth;
  if (auth.type !== 'oauth2') throw new Error('not oauth2');
  return auth;
}

function grant(auth: OAuth2Auth, overrides: Partial<TokenGrant> = {}): TokenGrant {
  return { service: 'crm', tenant: undefined, auth, clientId: 'ferry', clientSecret: SECRET, ...overrides };
}

/** A cache on a clock the test moves; closed when the test ends. */
function cache(options: { maxEntries?: number } = {}) {
  const clock = { ms: Date.now(), now: () => clock.ms };
  const scrubber = new Scrubber({ now: clock.now });
  const tokens = new TokenCache({ observer: scrubber, clock, ...options });
  return { tokens, clock, scrubber };
}

async function failure(promise: unknown): Promise<FerryError> {
  try {
    await promise;
  } catch (error) {
    return error as FerryError;
  }
  throw new Error('expected a failure');
}

describe('token cache', () => {
  it('keeps a token until min(60 s, 10 % of its lifetime) before it expires', () => {
    expect(refreshAfterMs(3600_000)).toBe(3540_000);
    expect(refreshAfterMs(300_000)).toBe(270_000);
    expect(refreshAfterMs(2_000)).toBe(1_800);
  });

  it('fetches once, then answers from the cache until the refresh time, then fetches again', async () => {
    const endpoint = await startTokenEndpoint(() => ({ expiresIn: 100 }));
    const { tokens, clock, scrubber } = cache();
    const auth = oauth2(endpoint.url);
    const first = await tokens.get(grant(auth), OPTIONS);
    expect(first).toMatchObject({ value: endpoint.issued[0]!.token, fromCache: false });
    // Handed to the scrubber the moment it arrives.
    expect(scrubber.scrub(`x ${first.value} y`)).toBe('x [redacted] y');
    clock.ms += 89_000;
    expect(tokens.get(grant(auth), OPTIONS)).toEqual({ ...first, fromCache: true });
    clock.ms += 2_000; // past 90 s: 100 s minus 10 %
    const second = await tokens.get(grant(auth), OPTIONS);
    expect(second.value).toBe(endpoint.issued[1]!.token);
    expect(endpoint.requests).toHaveLength(2);
    await tokens.close();
  });

  it('uses the documented default lifetime (5 min) without expires_in, and a string expires_in', async () => {
    let body: Record<string, unknown> = { access_token: 'tok-no-expiry', token_type: 'bearer' };
    const endpoint = await startTokenEndpoint(() => ({ body }));
    const { tokens, clock } = cache();
    const auth = oauth2(endpoint.url);
    await tokens.get(grant(auth), OPTIONS);
    clock.ms += 269_000;
    expect(tokens.get(grant(auth), OPTIONS)).toMatchObject({ fromCache: true });
    clock.ms += 2_000;
    body = { access_token: 'tok-string-expiry', expires_in: '20' };
    await expect(tokens.get(grant(auth), OPTIONS)).resolves.toMatchObject({ value: 'tok-string-expiry' });
    clock.ms += 17_000;
    expect(tokens.get(grant(auth), OPTIONS)).toMatchObject({ value: 'tok-string-expiry', fromCache: true });
    await tokens.close();
  });

  it('single-flight: 50 concurrent callers share one request', async () => {
    const endpoint = await startTokenEndpoint(() => ({ delayMs: 200 }));
    const { tokens } = cache();
    const auth = oauth2(endpoint.url);
    const all = await Promise.all(Array.from({ length: 50 }, async () => tokens.get(grant(auth), OPTIONS)));
    expect(endpoint.requests).toHaveLength(1);
    expect(new Set(all.map((token) => token.value))).toEqual(new Set([endpoint.issued[0]!.token]));
    await tokens.close();
  });

  it('a waiter with little time left times out alone; the shared request goes on for the others', async () => {
    const endpoint = await startTokenEndpoint(() => ({ delayMs: 300 }));
    const { tokens } = cache();
    const auth = oauth2(endpoint.url);
    // The first caller starts the request with 50 ms left in its attempt, but a whole attempt for the request.
    const hurried = failure(tokens.get(grant(auth), { ...OPTIONS, timeoutMs: 50, fetchTimeoutMs: 2_000 }));
    const patient = tokens.get(grant(auth), OPTIONS);
    expect((await hurried).type).toBe('TimeoutError');
    expect((await patient).value).toBe(endpoint.issued[0]!.token);
    expect(endpoint.requests).toHaveLength(1);
    await tokens.close();
  });

  it('believes expires_in up to 24 h, and the scrubber forgets a token an hour after it expired', async () => {
    const endpoint = await startTokenEndpoint((_, index) => ({ expiresIn: index === 0 ? 10 ** 12 : 60 }));
    const { tokens, clock, scrubber } = cache();
    const auth = oauth2(endpoint.url);
    const first = await tokens.get(grant(auth), OPTIONS);
    clock.ms += 24 * 3600_000 - 61_000;
    expect(tokens.get(grant(auth), OPTIONS)).toMatchObject({ value: first.value, fromCache: true });
    clock.ms += 2_000;
    const second = await tokens.get(grant(auth), OPTIONS);
    expect(second.value).not.toBe(first.value);
    // The first token is still scrubbed during the grace hour after its expiry, then forgotten when the next
    // token arrives (each refresh prunes); a secret resolved for a job is never forgotten.
    scrubber.add('a-secret-value-kept');
    expect(scrubber.scrub(first.value)).toBe('[redacted]');
    clock.ms += 3600_000 + 60_000;
    await tokens.get(grant(auth, { tenant: 'other' }), OPTIONS);
    expect(scrubber.scrub(first.value)).toBe(first.value);
    expect(scrubber.scrub('a-secret-value-kept')).toBe('[redacted]');
    await tokens.close();
  });

  it('one failed fetch fails every waiter, each with an error of its own, and is not cached', async () => {
    const endpoint = await startTokenEndpoint((_, index) =>
      index === 0 ? { status: 500, delayMs: 100 } : {},
    );
    const { tokens } = cache();
    const auth = oauth2(endpoint.url);
    const errors = await Promise.all(
      Array.from({ length: 3 }, () => failure(tokens.get(grant(auth), OPTIONS))),
    );
    expect(errors.map((error) => [error.type, error.message])).toEqual(
      Array.from({ length: 3 }, () => ['ServerError', 'token endpoint: 500']),
    );
    expect(new Set(errors).size).toBe(3);
    await expect(tokens.get(grant(auth), OPTIONS)).resolves.toMatchObject({ fromCache: false });
    expect(endpoint.requests).toHaveLength(2);
    await tokens.close();
  });

  it('invalidate drops a token only while it is still the cached one', async () => {
    const endpoint = await startTokenEndpoint();
    const { tokens } = cache();
    const auth = oauth2(endpoint.url);
    const stale = await tokens.get(grant(auth), OPTIONS);
    // 20 callers saw a 401 with the same token: the first drops it, the rest leave the new one alone.
    const fresh = await Promise.all(
      Array.from({ length: 20 }, async () => {
        tokens.invalidate(stale.key, stale.value);
        return tokens.get(grant(auth), OPTIONS);
      }),
    );
    expect(endpoint.requests).toHaveLength(2);
    expect(new Set(fresh.map((token) => token.value))).toEqual(new Set([endpoint.issued[1]!.token]));
    tokens.invalidate(stale.key, stale.value);
    expect(tokens.get(grant(auth), OPTIONS)).toMatchObject({
      value: endpoint.issued[1]!.token,
      fromCache: true,
    });
    await tokens.close();
  });

  it('keys by service, tenant and credentials: a rotated secret or another tenant gets its own token', async () => {
    const endpoint = await startTokenEndpoint();
    const { tokens } = cache();
    const auth = oauth2(endpoint.url);
    const keys = [
      grant(auth),
      grant(auth, { tenant: 'acme' }),
      grant(auth, { tenant: 'globex' }),
      grant(auth, { clientSecret: `${SECRET}-rotated` }),
      grant(auth, { service: 'billing' }),
    ];
    const values = [];
    for (const each of keys) values.push((await tokens.get(each, OPTIONS)).value);
    expect(new Set(values).size).toBe(5);
    expect(endpoint.requests).toHaveLength(5);
    expect(new Set(keys.map(tokenKey)).size).toBe(5);
    // The key holds a digest, never the secret.
    expect(keys.map(tokenKey).join()).not.toContain(SECRET);
    await tokens.close();
  });

  it('is bounded: past maxEntries the oldest token goes first', async () => {
    const endpoint = await startTokenEndpoint();
    const { tokens } = cache({ maxEntries: 3 });
    const auth = oauth2(endpoint.url);
    for (const tenant of ['a', 'b', 'c', 'd']) await tokens.get(grant(auth, { tenant }), OPTIONS);
    expect(tokens.size).toBe(3);
    expect(tokens.get(grant(auth, { tenant: 'd' }), OPTIONS)).toMatchObject({ fromCache: true });
    await expect(tokens.get(grant(auth, { tenant: 'a' }), OPTIONS)).resolves.toMatchObject({
      fromCache: false,
    });
    await tokens.close();
  });

  it('sends the form (RFC 6749 §4.4.2) with Basic client auth, form-encoded before base64 (§2.3.1)', async () => {
    const endpoint = await startTokenEndpoint();
    const { tokens } = cache();
    const auth = oauth2(endpoint.url, {
      scope: 'contacts.read contacts.write',
      audience: 'https://api.example.com',
      params: { resource: 'urn:crm', tenant_hint: 'x y' },
    });
    await tokens.get(grant(auth, { clientId: 'ferry app', clientSecret: 'p+ss/w=rd:1' }), OPTIONS);
    const [request] = endpoint.requests;
    expect(request?.form).toEqual({
      grant_type: 'client_credentials',
      scope: 'contacts.read contacts.write',
      audience: 'https://api.example.com',
      resource: 'urn:crm',
      tenant_hint: 'x y',
    });
    expect(request?.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(request?.headers.authorization).toBe(
      `Basic ${Buffer.from('ferry+app:p%2Bss%2Fw%3Drd%3A1').toString('base64')}`,
    );
    expect(request?.basic).toEqual({ clientId: 'ferry app', clientSecret: 'p+ss/w=rd:1' });
    await tokens.close();
  });

  it('sends client_id and client_secret in the form with clientAuth: body', async () => {
    const endpoint = await startTokenEndpoint();
    const { tokens } = cache();
    await tokens.get(grant(oauth2(endpoint.url, { clientAuth: 'body' })), OPTIONS);
    const [request] = endpoint.requests;
    expect(request?.headers.authorization).toBeUndefined();
    expect(request?.form).toEqual({
      grant_type: 'client_credentials',
      client_id: 'ferry',
      client_secret: SECRET,
    });
    await tokens.close();
  });

  it.each<
    [string, { status?: number; body?: unknown; headers?: Record<string, string> }, string, string, number?]
  >([
    [
      '401',
      { status: 401, body: { error: 'invalid_client' } },
      'AuthenticationError',
      'token endpoint: 401 (invalid_client)',
    ],
    ['403', { status: 403, body: '' }, 'AuthenticationError', 'token endpoint: 403'],
    [
      '400 invalid_client, description echoing the secret',
      { status: 400, body: { error: 'invalid_client', error_description: `secret ${SECRET} is wrong` } },
      'AuthenticationError',
      'token endpoint: 400 (invalid_client: secret [redacted] is wrong)',
    ],
    [
      '400 unauthorized_client',
      { status: 400, body: { error: 'unauthorized_client' } },
      'AuthenticationError',
      'token endpoint: 400 (unauthorized_client)',
    ],
    [
      '400 invalid_grant',
      { status: 400, body: { error: 'invalid_grant' } },
      'AuthenticationError',
      'token endpoint: 400 (invalid_grant)',
    ],
    [
      '400 invalid_scope',
      { status: 400, body: { error: 'invalid_scope' } },
      'AuthenticationError',
      'token endpoint: 400 (invalid_scope)',
    ],
    [
      '400 invalid_request',
      { status: 400, body: { error: 'invalid_request' } },
      'ClientError',
      'token endpoint: 400 (invalid_request)',
    ],
    [
      '400 unsupported_grant_type',
      { status: 400, body: { error: 'unsupported_grant_type' } },
      'ClientError',
      'token endpoint: 400 (unsupported_grant_type)',
    ],
    [
      '400 temporarily_unavailable',
      { status: 400, body: { error: 'temporarily_unavailable' } },
      'ServerError',
      'token endpoint: 400 (temporarily_unavailable)',
    ],
    [
      '400 without a code, body not shown',
      { status: 400, body: `client_secret=${SECRET}` },
      'ClientError',
      'token endpoint: 400',
    ],
    ['500', { status: 500, body: `<h1>${SECRET}</h1>` }, 'ServerError', 'token endpoint: 500'],
    [
      '429',
      { status: 429, headers: { 'retry-after': '7' }, body: '' },
      'RateLimitedError',
      'token endpoint: 429',
      7_000,
    ],
    [
      '302',
      { status: 302, headers: { location: '/elsewhere' }, body: '' },
      'ClientError',
      'token endpoint: 302 (redirects are not followed)',
    ],
    [
      '200 not JSON',
      { body: '<html>login</html>' },
      'ServerError',
      'token endpoint: 200 answer is not a JSON object',
    ],
    [
      '200 without access_token',
      { body: { token_type: 'bearer' } },
      'ServerError',
      'token endpoint: 200 answer has no access_token',
    ],
    [
      '200 with a mac token',
      { body: { access_token: 'abcd1234', token_type: 'mac' } },
      'ConfigurationError',
      'token endpoint: token_type "mac" is not supported (only bearer)',
    ],
    [
      '200 with a token a header cannot carry',
      { body: { access_token: 'ab\r\ncd' } },
      'ServerError',
      'token endpoint: access_token has characters a header cannot carry',
    ],
  ])('classifies %s', async (_, step, type, message, retryAfterMs) => {
    const endpoint = await startTokenEndpoint(() => step);
    const { tokens } = cache();
    const error = await failure(tokens.get(grant(oauth2(endpoint.url)), OPTIONS));
    expect([error.type, error.message]).toEqual([type, message]);
    if (retryAfterMs !== undefined) expect(error.retryAfterMs).toBe(retryAfterMs);
    expect(tokens.size).toBe(0);
    await tokens.close();
  });

  it('clamps a 429 Retry-After to maxRetryAfterMs and reports what was asked', async () => {
    const endpoint = await startTokenEndpoint(() => ({
      status: 429,
      headers: { 'retry-after': '99999' },
      body: '',
    }));
    const { tokens } = cache();
    const clamped: [number, number][] = [];
    const error = await failure(
      tokens.get(grant(oauth2(endpoint.url)), {
        ...OPTIONS,
        onRetryAfterClamped: (askedMs, appliedMs) => clamped.push([askedMs, appliedMs]),
      }),
    );
    expect([error.type, error.retryAfterMs]).toEqual(['RateLimitedError', 60_000]);
    expect(clamped).toEqual([[99_999_000, 60_000]]);
    await tokens.close();
  });

  it('accepts token_type in any case, and a form-encoded answer', async () => {
    const endpoint = await startTokenEndpoint((_, index) =>
      index === 0
        ? { body: { access_token: 'tok-upper-case', token_type: 'BEARER' } }
        : {
            body: 'access_token=tok-form&token_type=bearer&expires_in=60',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
          },
    );
    const { tokens } = cache();
    const auth = oauth2(endpoint.url);
    await expect(tokens.get(grant(auth), OPTIONS)).resolves.toMatchObject({ value: 'tok-upper-case' });
    await expect(tokens.get(grant(auth, { tenant: 't' }), OPTIONS)).resolves.toMatchObject({
      value: 'tok-form',
    });
    await tokens.close();
  });

  it('refuses an answer over 64 KiB as ResponseTooLargeError', async () => {
    const endpoint = await startTokenEndpoint(() => ({ body: { access_token: 'x'.repeat(70_000) } }));
    const { tokens } = cache();
    const error = await failure(tokens.get(grant(oauth2(endpoint.url)), OPTIONS));
    expect([error.type, error.message]).toEqual([
      'ResponseTooLargeError',
      'token endpoint: response exceeded the 65536-byte cap',
    ]);
    await tokens.close();
  });

  it('connection refused is a NetworkError, a slow endpoint a TimeoutError', async () => {
    const closed = await listenOnFreePort(createServer());
    await closed.close();
    const { tokens } = cache();
    const refused = await failure(tokens.get(grant(oauth2(`${closed.url}/token`)), OPTIONS));
    expect(refused.type).toBe('NetworkError');
    expect(refused.message).toMatch(/^token endpoint: ECONNREFUSED/);

    const slow = await startTokenEndpoint(() => ({ delayMs: 1_000 }));
    const timedOut = await failure(tokens.get(grant(oauth2(slow.url)), { ...OPTIONS, timeoutMs: 100 }));
    expect([timedOut.type, timedOut.message]).toEqual([
      'TimeoutError',
      'token endpoint: timed out after 100 ms',
    ]);
    await tokens.close();
  });
});
