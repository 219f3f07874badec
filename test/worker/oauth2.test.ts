/**
 * OAuth2 client credentials through the whole worker (issue 4): a real token endpoint, a real downstream that
 * checks the bearer token, real redis-server and the worker pool.
 */
import { createServer } from 'node:http';

import { describe, expect, it } from 'vitest';

import type { Producer } from '../../src/producer/index.ts';
import { type Downstream, startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, type TestFerry } from '../helpers/ferry.ts';
import { listenOnFreePort } from '../helpers/listen.ts';
import { startRedis } from '../helpers/redis.ts';
import { bearerOf, startTokenEndpoint, type TokenEndpoint } from '../helpers/token-endpoint.ts';

const redis = await startRedis();
const CLIENT_ID = 'ferry-client';
const CLIENT_SECRET = 'cs_live_7d3f0a9e51b24c68';
const ENV = { FERRY_SECRET_CLIENT_ID: CLIENT_ID, FERRY_SECRET_CLIENT_SECRET: CLIENT_SECRET };

/** One oauth2 service `svc` calling `downstream`, its token from `endpoint`. */
function services(
  tokenUrl: string,
  downstreamUrl: string,
  auth: Record<string, unknown> = {},
  service: Record<string, unknown> = {},
): unknown {
  return {
    services: {
      svc: {
        baseUrl: downstreamUrl,
        timeoutMs: 2_000,
        concurrency: 5,
        retry: { attempts: 3, backoff: { delayMs: 50, maxDelayMs: 200 } },
        auth: {
          type: 'oauth2',
          tokenUrl,
          clientId: '{{ secrets.client_id }}',
          clientSecret: '{{ secrets.client_secret }}',
          ...auth,
        },
        operations: { create: { method: 'POST', path: '/things', body: '{{ input }}' } },
        ...service,
      },
    },
  };
}

/** A downstream that answers 200 to a valid token of `endpoint` and 401 to anything else. */
async function checkingDownstream(endpoint: TokenEndpoint): Promise<Downstream> {
  return startDownstream((request) => {
    const token = bearerOf(request.headers);
    return token !== undefined && endpoint.isValid(token)
      ? { status: 200, body: { ok: true } }
      : { status: 401, body: { error: 'invalid_token' } };
  });
}

async function runJobs(producer: Producer, count: number, extra: { tenant?: string } = {}) {
  const jobs = await producer.enqueueMany(
    Array.from({ length: count }, (_, i) => ({
      service: 'svc',
      operation: 'create',
      input: { i },
      ...extra,
    })),
  );
  return Promise.all(jobs.map((job) => producer.waitFor('svc', job.id)));
}

/** Everything a test could leak into: the worker's log lines and the dead letters. */
async function leakSurface(ferry: TestFerry, deadLetterIds: (string | undefined)[]): Promise<string> {
  const letters = await Promise.all(
    deadLetterIds.map(async (id) => (id === undefined ? undefined : ferry.pool.deadLetters.get(id))),
  );
  return [...ferry.logs, ...letters.map((letter) => JSON.stringify(letter?.data))].join('\n');
}

describe('oauth2 client credentials', () => {
  it('fetches one token for many jobs and sends it as a bearer token; form and Basic client auth as configured', async () => {
    const endpoint = await startTokenEndpoint();
    const downstream = await checkingDownstream(endpoint);
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: services(endpoint.url, downstream.url, {
        scope: 'things.write',
        audience: 'https://things.example.com',
        params: { resource: 'urn:things' },
      }),
    });
    const views = await runJobs(ferry.producer, 20);
    expect(views.map((view) => [view.state, view.result?.status])).toEqual(
      Array.from({ length: 20 }, () => ['completed', 200]),
    );
    expect(endpoint.requests).toHaveLength(1);
    const [request] = endpoint.requests;
    expect(request?.form).toEqual({
      grant_type: 'client_credentials',
      scope: 'things.write',
      audience: 'https://things.example.com',
      resource: 'urn:things',
    });
    expect(request?.basic).toEqual({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    expect(new Set(downstream.requests.map((r) => bearerOf(r.headers)))).toEqual(
      new Set([endpoint.issued[0]!.token]),
    );
  });

  it('sends the client credentials in the form with clientAuth: body', async () => {
    const endpoint = await startTokenEndpoint();
    const downstream = await checkingDownstream(endpoint);
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: services(endpoint.url, downstream.url, { clientAuth: 'body' }),
    });
    const [view] = await runJobs(ferry.producer, 1);
    expect(view?.state).toBe('completed');
    expect(endpoint.requests[0]?.headers.authorization).toBeUndefined();
    expect(endpoint.requests[0]?.form).toEqual({
      grant_type: 'client_credentials',
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
    });
  });

  it('refreshes a token before it expires, without a 401', async () => {
    // expires_in 2 s: kept for 1.8 s (10 % skew), and the downstream refuses it once it has expired.
    const endpoint = await startTokenEndpoint(() => ({ expiresIn: 2 }));
    const downstream = await checkingDownstream(endpoint);
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: services(endpoint.url, downstream.url),
    });
    await runJobs(ferry.producer, 2);
    expect(endpoint.requests).toHaveLength(1);
    const first = endpoint.issued[0]!.token;
    await expect
      .poll(
        async () => {
          await runJobs(ferry.producer, 1);
          return bearerOf(downstream.requests.at(-1)!.headers);
        },
        { timeout: 6_000, interval: 100 },
      )
      .not.toBe(first);
    expect(endpoint.requests).toHaveLength(2);
    expect(downstream.requests.every((r) => r.headers.authorization !== undefined)).toBe(true);
    // Every call carried a token that was still valid: the cache refreshed ahead of expiry, not after a 401.
    expect(
      downstream.requests.filter(
        (r) => !endpoint.issued.some((t) => `Bearer ${t.token}` === r.headers.authorization),
      ),
    ).toEqual([]);
    expect(ferry.logs.filter((line) => line.includes('"status":401'))).toEqual([]);
  });

  it('single-flight: 50 concurrent jobs wait for one token request', async () => {
    const endpoint = await startTokenEndpoint(() => ({ delayMs: 500 }));
    const downstream = await checkingDownstream(endpoint);
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: services(endpoint.url, downstream.url, {}, { concurrency: 50 }),
      start: false,
    });
    const jobs = await ferry.producer.enqueueMany(
      Array.from({ length: 50 }, (_, i) => ({ service: 'svc', operation: 'create', input: { i } })),
    );
    await ferry.start();
    const views = await Promise.all(jobs.map((job) => ferry.producer.waitFor('svc', job.id)));
    expect(views.every((view) => view.state === 'completed' && view.result?.attempts === 1)).toBe(true);
    expect(endpoint.requests).toHaveLength(1);
    expect(downstream.requests).toHaveLength(50);
    // They really waited together: every call went out after the one slow token answer.
    const answeredAt = endpoint.requests[0]!.at + 500;
    expect(downstream.requests.every((r) => r.at >= answeredAt - 5)).toBe(true);
  });

  it('a 401 to a cached token fetches one new token and retries at once, without using an attempt', async () => {
    const endpoint = await startTokenEndpoint();
    const revoked = new Set<string>();
    const downstream = await startDownstream((request) => {
      const token = bearerOf(request.headers);
      return token !== undefined && endpoint.isValid(token) && !revoked.has(token)
        ? { status: 200, body: { ok: true } }
        : { status: 401, body: { error: 'invalid_token' } };
    });
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: services(endpoint.url, downstream.url, {}, { concurrency: 20 }),
    });
    await runJobs(ferry.producer, 1);
    const old = endpoint.issued[0]!.token;
    // Revoked before it expired: every job of the next batch first calls with it and gets a 401.
    revoked.add(old);
    const views = await runJobs(ferry.producer, 20);
    expect(views.map((view) => [view.state, view.result?.attempts, view.history.length])).toEqual(
      // The run that completed, only: the 401 and its retried call are one attempt.
      Array.from({ length: 20 }, () => ['completed', 1, 1]),
    );
    expect(endpoint.requests).toHaveLength(2);
    const fresh = endpoint.issued[1]!.token;
    const batch = downstream.requests.slice(1);
    expect(batch.filter((r) => bearerOf(r.headers) === fresh)).toHaveLength(20);
    expect(batch.filter((r) => bearerOf(r.headers) === old).length).toBeGreaterThanOrEqual(1);
  });

  it('a downstream that always answers 401 dead-letters the job after one refresh, with no backoff retry', async () => {
    const endpoint = await startTokenEndpoint();
    let refuse = false;
    const downstream = await startDownstream(() =>
      refuse ? { status: 401, body: { error: 'invalid_token' } } : { status: 200, body: { ok: true } },
    );
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: services(endpoint.url, downstream.url),
    });
    await runJobs(ferry.producer, 1); // a token in the cache
    refuse = true;
    const [view] = await runJobs(ferry.producer, 1);
    expect(view?.state).toBe('dead_lettered');
    expect(endpoint.requests).toHaveLength(2);
    expect(downstream.requests).toHaveLength(3); // the first job, then the old token and the fresh one
    const letter = await ferry.pool.deadLetters.get(view!.deadLetterId!);
    expect(letter?.data.attempts.map((a) => [a.attempt, a.type, a.status])).toEqual([
      [1, 'AuthenticationError', 401],
    ]);
    expect(letter?.data.finalError.message).toMatch(
      /downstream answered 401.*\(also after a token refresh\)$/,
    );

    // A 401 to a token fetched for this very call is the credentials' fault: no second token, no second call.
    const ferry2 = await createTestFerry(redis, {
      env: ENV,
      services: services(endpoint.url, downstream.url),
    });
    const [fresh] = await runJobs(ferry2.producer, 1);
    expect(fresh?.state).toBe('dead_lettered');
    expect(fresh?.history.map((a) => a.type)).toEqual(['AuthenticationError']);
    expect(endpoint.requests).toHaveLength(3);
    expect(downstream.requests).toHaveLength(4);
  });

  it('token endpoint refusing connections: NetworkError, retried per policy, then dead-lettered', async () => {
    const closed = await listenOnFreePort(createServer());
    await closed.close();
    const downstream = await startDownstream();
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: services(`${closed.url}/oauth/token`, downstream.url),
    });
    const [view] = await runJobs(ferry.producer, 1);
    expect(view?.state).toBe('dead_lettered');
    const letter = await ferry.pool.deadLetters.get(view!.deadLetterId!);
    expect(letter?.data.attempts.map((a) => [a.type, a.outcome])).toEqual([
      ['NetworkError', 'failed'],
      ['NetworkError', 'failed'],
      ['NetworkError', 'failed'],
    ]);
    expect(letter?.data.attempts.every((a) => a.message?.startsWith('token endpoint: ECONNREFUSED'))).toBe(
      true,
    );
    expect(downstream.requests).toHaveLength(0);
    expect(await leakSurface(ferry, [view?.deadLetterId])).not.toContain(CLIENT_SECRET);
  });

  it('token endpoint answering 500: ServerError, retried, and the downstream never called', async () => {
    const endpoint = await startTokenEndpoint(() => ({
      status: 500,
      body: `<pre>form was client_secret=${CLIENT_SECRET}</pre>`,
    }));
    const downstream = await startDownstream();
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: services(endpoint.url, downstream.url),
    });
    const [view] = await runJobs(ferry.producer, 1);
    expect(view?.state).toBe('dead_lettered');
    expect(view?.history.map((a) => [a.type, a.status, a.message])).toEqual(
      Array.from({ length: 3 }, () => ['ServerError', 500, 'token endpoint: 500']),
    );
    expect(endpoint.requests).toHaveLength(3);
    expect(downstream.requests).toHaveLength(0);
    expect(await leakSurface(ferry, [view?.deadLetterId])).not.toContain(CLIENT_SECRET);
  });

  it('a client secret in base64 across the cut of an error_description leaves none of it (issue 13)', async () => {
    // The description is cut at 200 characters: scrubbed after the cut, only a start of the base64 would be left.
    const encoded = Buffer.from(CLIENT_SECRET).toString('base64');
    const endpoint = await startTokenEndpoint(() => ({
      status: 400,
      body: { error: 'invalid_client', error_description: `${'d'.repeat(190)}${encoded} was revoked` },
    }));
    const downstream = await startDownstream();
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: services(endpoint.url, downstream.url),
    });
    const [view] = await runJobs(ferry.producer, 1);
    expect(view?.state).toBe('dead_lettered');
    expect(view?.history[0]?.message).toBe(
      `token endpoint: 400 (invalid_client: ${'d'.repeat(190)}[redacted]…)`,
    );
    const surface = await leakSurface(ferry, [view?.deadLetterId]);
    for (let k = 8; k <= encoded.length; k++) expect(surface).not.toContain(encoded.slice(0, k));
  });

  it('token endpoint answering 401: AuthenticationError, dead-lettered at once; no secret or token anywhere', async () => {
    const endpoint = await startTokenEndpoint((_, index) =>
      index === 0
        ? {} // one good token first, so a token was in play
        : {
            status: 401,
            body: {
              error: 'invalid_client',
              error_description: `client secret ${CLIENT_SECRET} was revoked`,
            },
          },
    );
    const downstream = await startDownstream((request) => ({
      status: 401,
      // A downstream that echoes the token it was sent.
      body: { error: 'invalid_token', got: request.headers.authorization },
    }));
    const ferry = await createTestFerry(redis, {
      env: ENV,
      services: services(endpoint.url, downstream.url),
    });
    const [primed] = await runJobs(ferry.producer, 1);
    // Fresh token refused by the downstream: dead-lettered, its echo scrubbed.
    expect(primed?.state).toBe('dead_lettered');
    const [view] = await runJobs(ferry.producer, 1);
    expect(view?.state).toBe('dead_lettered');
    // The cached token got a 401, so one refresh was tried; the token endpoint refused it.
    expect(view?.history.map((a) => [a.type, a.status, a.message])).toEqual([
      [
        'AuthenticationError',
        401,
        'token endpoint: 401 (invalid_client: client secret [redacted] was revoked)',
      ],
    ]);
    expect(endpoint.requests).toHaveLength(2);
    const surface = await leakSurface(ferry, [primed?.deadLetterId, view?.deadLetterId]);
    expect(surface).toContain('token endpoint: 401');
    expect(surface).toContain('[redacted]');
    for (const needle of [
      CLIENT_SECRET,
      endpoint.issued[0]!.token,
      Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64'),
    ])
      expect(surface).not.toContain(needle);
  });

  it('tenants get separate tokens, each fetched with its own client secret', async () => {
    const endpoint = await startTokenEndpoint();
    const downstream = await checkingDownstream(endpoint);
    const env = {
      FERRY_SECRET_CLIENT_ID: CLIENT_ID,
      FERRY_SECRET_TENANT_acme__CLIENT_SECRET: 'cs-acme-0a1b2c3d',
      FERRY_SECRET_TENANT_globex__CLIENT_SECRET: 'cs-globex-4e5f6a7b',
    };
    const ferry = await createTestFerry(redis, {
      env,
      // client_id is global, client_secret each tenant's own.
      services: services(endpoint.url, downstream.url),
    });
    const [acme, globex] = await Promise.all([
      runJobs(ferry.producer, 5, { tenant: 'acme' }),
      runJobs(ferry.producer, 5, { tenant: 'globex' }),
    ]);
    expect([...acme, ...globex].every((view) => view.state === 'completed')).toBe(true);
    expect(endpoint.requests).toHaveLength(2);
    const tokenOf = (secret: string): string => endpoint.issued.find((t) => t.clientSecret === secret)!.token;
    const acmeToken = tokenOf('cs-acme-0a1b2c3d');
    const globexToken = tokenOf('cs-globex-4e5f6a7b');
    expect(acmeToken).not.toBe(globexToken);
    const sent = downstream.requests.map((r) => bearerOf(r.headers));
    expect(sent.filter((token) => token === acmeToken)).toHaveLength(5);
    expect(sent.filter((token) => token === globexToken)).toHaveLength(5);
  });
});
