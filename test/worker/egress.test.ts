/**
 * Egress guard end to end (issue 13 item 3): a real redis-server, a real worker pool and a real HTTP server on
 * 127.0.0.1 that counts what reaches it. Every host a secret, a tenant's secret or FERRY_SERVICE_<NAME>_URL
 * chooses is refused at dial time when it is loopback (whatever its spelling), and the call is dead-lettered
 * as EgressDeniedError without a byte reaching the server; the same calls succeed once the service allows
 * them; a baseUrl written literally keeps working.
 */
import { describe, expect, it } from 'vitest';

import type { JobView } from '../../src/producer/producer.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, type TestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();
const downstream = await startDownstream((request) => ({
  status: 200,
  body: { path: request.url, authorization: request.headers.authorization ?? null },
}));
const port = new URL(downstream.url).port;

const operations = { call: { method: 'POST', path: '/things', body: '{{ input }}' } };
const fast = { timeoutMs: 3_000, retry: { attempts: 2, backoff: { delayMs: 50, maxDelayMs: 100 } } };

/** One job of `service` (tenant optional): its final view and, when dead-lettered, its final error. */
async function runOne(
  ferry: TestFerry,
  service: string,
  tenant?: string,
): Promise<{ view: JobView; finalError: unknown }> {
  const job = await ferry.producer.enqueue({
    service,
    operation: 'call',
    input: { service },
    ...(tenant === undefined ? {} : { tenant }),
  });
  const view = await ferry.producer.waitFor(service, job.id);
  const dl =
    view.deadLetterId === undefined ? undefined : await ferry.pool.deadLetters.get(view.deadLetterId);
  return { view, finalError: dl?.data.finalError };
}

/** Services that each try to reach the test server through a host the services file does not write. */
function hostileServices(egress: Record<string, unknown> | undefined): Record<string, unknown> {
  const common = { ...fast, operations, ...(egress === undefined ? {} : { egress }) };
  return {
    // A secret fills the host: 127.0.0.1.
    'secret-host': { ...common, baseUrl: `http://{{ secrets.loop_host }}:${port}` },
    // A secret is the whole URL.
    'secret-url': { ...common, baseUrl: '{{ secrets.loop_url }}' },
    // FERRY_SERVICE_<NAME>_URL overrides, in the spellings the issue reproduced.
    decimal: { ...common, baseUrl: 'https://api.example.com' },
    mapped: { ...common, baseUrl: 'https://api.example.com' },
    // A name that resolves to loopback: only the dial-time check on the resolved address can refuse it.
    'local-name': { ...common, baseUrl: 'https://api.example.com' },
  };
}

const hostileEnv: NodeJS.ProcessEnv = {
  FERRY_SECRET_LOOP_HOST: '127.0.0.1',
  FERRY_SECRET_LOOP_URL: `http://127.0.0.1:${port}`,
  FERRY_SERVICE_DECIMAL_URL: `http://2130706433:${port}`,
  FERRY_SERVICE_MAPPED_URL: `http://[::ffff:127.0.0.1]:${port}`,
  FERRY_SERVICE_LOCAL_NAME_URL: `http://localhost:${port}`,
};

describe('egress guard', () => {
  it('dead-letters calls to loopback that a secret, a tenant or an env override chose, with no request sent', async () => {
    const services = {
      ...hostileServices(undefined),
      // A tenant's own secret chooses the host; the global one is public.
      tenanted: { ...fast, operations, baseUrl: '{{ secrets.region_url }}' },
      // userinfo in a whole-URL secret.
      userinfo: {
        ...fast,
        operations,
        baseUrl: '{{ secrets.userinfo_url }}',
        egress: { allowPrivate: true },
      },
      // A query in a whole-URL secret.
      query: { ...fast, operations, baseUrl: '{{ secrets.query_url }}', egress: { allowPrivate: true } },
      // A host secret that tries to pick the port and the path: refused even where private egress is allowed.
      'host-injection': {
        ...fast,
        operations,
        baseUrl: 'http://{{ secrets.inject_host }}/v1',
        egress: { allowPrivate: true },
      },
    };
    const env = {
      ...hostileEnv,
      FERRY_SECRET_REGION_URL: 'https://eu.api.example.com',
      FERRY_SECRET_TENANT_acme__REGION_URL: `http://127.0.0.1:${port}`,
      FERRY_SECRET_USERINFO_URL: `http://user:pw@127.0.0.1:${port}`,
      FERRY_SECRET_INJECT_HOST: `127.0.0.1:${port}/evil?`,
      FERRY_SECRET_QUERY_URL: `http://127.0.0.1:${port}/?x=1`,
    };
    const ferry = await createTestFerry(redis, { services: { services }, env });
    const before = downstream.requests.length;
    const outcomes = await Promise.all([
      ...Object.keys(services)
        .filter((name) => name !== 'tenanted')
        .map(async (name) => [name, await runOne(ferry, name)] as const),
      (async () => ['tenanted (acme)', await runOne(ferry, 'tenanted', 'acme')] as const)(),
    ]);
    for (const [name, { view, finalError }] of outcomes) {
      expect(view.state, name).toBe('dead_lettered');
      expect(finalError, name).toMatchObject({ type: 'EgressDeniedError' });
      // One attempt: not retryable.
      expect(view.attempts, name).toBe(1);
    }
    expect(downstream.requests.length - before).toBe(0);
    const messages = outcomes.map(([, { finalError }]) => (finalError as { message: string }).message);
    // Says what was refused and what allows it, never where the secret pointed.
    expect(messages.join('\n')).toContain('egress.allowPrivate: true');
    for (const message of messages) {
      expect(message).not.toContain('user:pw');
      expect(message).not.toContain(`127.0.0.1:${port}`);
    }
    const injected = outcomes.find(([name]) => name === 'host-injection')![1].finalError as {
      message: string;
    };
    expect(injected.message).toContain('secrets.inject_host may fill only the host');
  });

  it('never sends the global token to a host a tenant’s own secret chose', async () => {
    const services = {
      tenanted: {
        ...fast,
        operations,
        baseUrl: `http://{{ secrets.api_host }}:${port}`,
        auth: { type: 'bearer', token: '{{ secrets.api_token }}' },
        // Private egress allowed, so only the tenant-scope rule is at work here.
        egress: { allowPrivate: true },
      },
    };
    const env = {
      FERRY_SECRET_API_HOST: '127.0.0.1',
      FERRY_SECRET_API_TOKEN: 'global-token-do-not-leak',
      FERRY_SECRET_TENANT_acme__API_HOST: 'localhost',
      FERRY_SECRET_TENANT_beta__API_HOST: 'localhost',
      FERRY_SECRET_TENANT_beta__API_TOKEN: 'beta-token',
    };
    const ferry = await createTestFerry(redis, { services: { services }, env });
    const before = downstream.requests.length;

    const acme = await runOne(ferry, 'tenanted', 'acme');
    expect(acme.view.state).toBe('dead_lettered');
    expect(acme.finalError).toMatchObject({ type: 'EgressDeniedError', field: 'secrets.api_token' });
    expect((acme.finalError as { message: string }).message).toContain('set tenant/acme/api_token');
    expect(downstream.requests.length - before).toBe(0);

    // A tenant with its own token, the operator's own host, and a tenant on the operator's host: all go.
    const beta = await runOne(ferry, 'tenanted', 'beta');
    const global = await runOne(ferry, 'tenanted');
    const gamma = await runOne(ferry, 'tenanted', 'gamma');
    expect([beta, global, gamma].map(({ view }) => view.state)).toEqual([
      'completed',
      'completed',
      'completed',
    ]);
    const sent = downstream.requests.slice(before).map((request) => request.headers.authorization);
    expect(sent.sort()).toEqual([
      'Bearer beta-token',
      'Bearer global-token-do-not-leak',
      'Bearer global-token-do-not-leak',
    ]);
  });

  it.each([
    ['egress.allowPrivate', { allowPrivate: true }],
    ['egress.allow CIDRs and host names', { allow: ['127.0.0.0/8', '::ffff:127.0.0.0/104', 'localhost'] }],
  ])('%s lets the same calls through', async (_label, egress) => {
    const services = hostileServices(egress);
    // `[::ffff:127.0.0.1]` needs an IPv6 socket to reach an IPv4 listener; not every test machine has one.
    delete services['mapped'];
    const ferry = await createTestFerry(redis, { services: { services }, env: hostileEnv });
    const before = downstream.requests.length;
    const outcomes = await Promise.all(Object.keys(services).map((name) => runOne(ferry, name)));
    expect(outcomes.map(({ view }) => view.state)).toEqual(Object.keys(services).map(() => 'completed'));
    expect(downstream.requests.length - before).toBe(Object.keys(services).length);
  });

  it('an egress.allow that does not cover the address still refuses', async () => {
    const services = {
      'local-name': hostileServices({ allow: ['10.0.0.0/8', 'api.internal'] })['local-name'],
    };
    const ferry = await createTestFerry(redis, { services: { services }, env: hostileEnv });
    const before = downstream.requests.length;
    const { view, finalError } = await runOne(ferry, 'local-name');
    expect(view.state).toBe('dead_lettered');
    expect(finalError).toMatchObject({ type: 'EgressDeniedError' });
    expect((finalError as { message: string }).message).toContain('FERRY_SERVICE_LOCAL_NAME_URL');
    expect(downstream.requests.length - before).toBe(0);
  });

  it('a baseUrl written literally in the services file reaches 127.0.0.1 without any allowance', async () => {
    const services = {
      literal: { ...fast, operations, baseUrl: downstream.url },
      'literal-path': { ...fast, operations, baseUrl: `${downstream.url}/{{ secrets.account }}` },
    };
    const ferry = await createTestFerry(redis, {
      services: { services },
      env: { FERRY_SECRET_ACCOUNT: 'acct-7' },
    });
    const before = downstream.requests.length;
    const outcomes = await Promise.all([runOne(ferry, 'literal'), runOne(ferry, 'literal-path')]);
    expect(outcomes.map(({ view }) => view.state)).toEqual(['completed', 'completed']);
    expect(
      downstream.requests
        .slice(before)
        .map((request) => request.url)
        .sort(),
    ).toEqual(['/acct-7/things', '/things']);
  });

  it('refuses a metadata address even when written literally, and for an oauth2 token endpoint', async () => {
    const services = {
      metadata: {
        ...fast,
        operations,
        baseUrl: 'http://169.254.169.254/latest',
        egress: { allowPrivate: true },
      },
      token: {
        ...fast,
        operations,
        baseUrl: downstream.url,
        auth: {
          type: 'oauth2',
          tokenUrl: 'http://[fd00:ec2::254]/token',
          clientId: 'id',
          clientSecret: '{{ secrets.client_secret }}',
        },
      },
    };
    const ferry = await createTestFerry(redis, {
      services: { services },
      env: { FERRY_SECRET_CLIENT_SECRET: 'cs' },
    });
    const outcomes = await Promise.all([runOne(ferry, 'metadata'), runOne(ferry, 'token')]);
    for (const { view, finalError } of outcomes) {
      expect(view.state).toBe('dead_lettered');
      // Refused before a connection: an attempt to connect would have ended as a Timeout or NetworkError.
      expect(finalError).toMatchObject({ type: 'EgressDeniedError' });
      expect((finalError as { message: string }).message).toContain('always refused');
    }
  });
});
