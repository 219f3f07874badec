/**
 * Forward proxies (issue 17 item 1) through a real local CONNECT proxy that counts tunnels: the env's
 * HTTPS_PROXY/HTTP_PROXY/NO_PROXY, a per-service `proxy:` from a secret (credentials scrubbed everywhere),
 * `proxy: none`, the egress policy applied to the target before any tunnel, a proxy that is down, and mTLS
 * through the tunnel.
 */
import { describe, expect, it } from 'vitest';

import { parseServicesConfig } from '../../src/core/services/load.ts';
import { testStagedSecret } from '../../src/ops/secret-test.ts';
import type { SecretResolver } from '../../src/secrets/resolver.ts';
import { envProxyFor, readProxyEnv } from '../../src/worker/http/transport.ts';
import { createSecretProbe } from '../../src/worker/secret-probe.ts';
import { startConnectProxy } from '../helpers/connect-proxy.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { dumpRedis, startRedis } from '../helpers/redis.ts';
import { findSecretForms, secretForms } from '../helpers/secret-forms.ts';
import { makeTestCertificates, startMtlsServer, startOpensslMtlsServer } from '../helpers/tls-certs.ts';

const redis = await startRedis();

function service(baseUrl: string, overrides: Record<string, unknown> = {}): object {
  return (oneService(baseUrl, overrides) as { services: { svc: object } }).services.svc;
}

function secretsOf(values: Record<string, string>): SecretResolver {
  return { resolve: (name) => values[name] };
}

describe('the env proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)', () => {
  it('tunnels calls through the proxy, except to a NO_PROXY host and for proxy: none', async () => {
    const proxy = await startConnectProxy();
    const proxied = await startDownstream();
    const direct = await startDownstream();
    const directPort = new URL(direct.url).port;
    const proxyEnv = readProxyEnv({
      HTTP_PROXY: proxy.url,
      NO_PROXY: `example.org, 127.0.0.1:${directPort}`,
    });
    const ferry = await createTestFerry(redis, {
      services: {
        services: {
          proxied: service(proxied.url),
          listed: service(direct.url),
          optout: service(proxied.url, { proxy: 'none' }),
        },
      },
      pool: { proxyEnv },
    });
    const run = async (name: string, n: number): Promise<void> => {
      const jobs = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          ferry.producer.enqueue({ service: name, operation: 'create', input: { i } }),
        ),
      );
      for (const job of jobs)
        expect((await ferry.producer.waitFor(name, job.id, { timeoutMs: 10_000 })).state).toBe('completed');
    };
    await run('proxied', 3);
    expect(proxy.tunnels).toBeGreaterThanOrEqual(1);
    expect(proxied.requests).toHaveLength(3);
    const tunnels = proxy.tunnels;
    await run('listed', 2);
    await run('optout', 2);
    expect(direct.requests).toHaveLength(2);
    expect(proxied.requests).toHaveLength(5);
    // Neither the NO_PROXY host nor the opted-out service opened a tunnel.
    expect(proxy.tunnels).toBe(tunnels);
    expect(proxy.targets.every((target) => target === `127.0.0.1:${new URL(proxied.url).port}`)).toBe(true);
  });

  it('reads the variables the way undici does', () => {
    const env = readProxyEnv({
      https_proxy: 'http://lower:8080',
      HTTPS_PROXY: 'http://upper:8080',
      HTTP_PROXY: 'http://plain:3128',
      no_proxy: '.internal.example,10.0.0.1:8443',
    });
    expect(envProxyFor(env, 'https://api.example.com')).toBe('http://lower:8080');
    expect(envProxyFor(env, 'http://api.example.com')).toBe('http://plain:3128');
    expect(envProxyFor(env, 'https://a.internal.example')).toBeUndefined();
    expect(envProxyFor(env, 'https://10.0.0.1:8443')).toBeUndefined();
    expect(envProxyFor(env, 'https://10.0.0.1')).toBe('http://lower:8080');
    expect(
      envProxyFor(readProxyEnv({ HTTP_PROXY: 'http://p:1', NO_PROXY: '*' }), 'http://x'),
    ).toBeUndefined();
    expect(() => readProxyEnv({ HTTPS_PROXY: 'socks5://user:hunter22@p:1' })).toThrow(/HTTPS_PROXY/);
    expect(() => readProxyEnv({ HTTPS_PROXY: 'socks5://user:hunter22@p:1' })).not.toThrow(/hunter22/);
  });
});

describe('proxy: per service', () => {
  it('uses a proxy URL from a secret, credentials and all, and never stores or logs them', async () => {
    const user = 'corp-user';
    const password = 'pr0xy-s3cret-91f2';
    const proxy = await startConnectProxy({ user, password });
    // Echoes the Proxy-Authorization it got (a broken downstream or proxy could), and fails now and then.
    const downstream = await startDownstream((request, index) => ({
      status: index === 0 ? 500 : 200,
      body: { echo: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`, url: request.url },
    }));
    const proxyUrl = `http://${user}:${password}@127.0.0.1:${proxy.port}`;
    const ferry = await createTestFerry(redis, {
      services: { services: { svc: service(downstream.url, { proxy: '{{ secrets.corp_proxy }}' }) } },
      secrets: secretsOf({ corp_proxy: proxyUrl }),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { a: 1 } });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('completed');
    expect(proxy.tunnels).toBeGreaterThanOrEqual(1);
    expect(proxy.authorizations[0]).toBe(`Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`);
    // A wrong password: the proxy answers 407, an AuthenticationError (not retried).
    const wrong = await createTestFerry(redis, {
      services: { services: { svc: service(downstream.url, { proxy: '{{ secrets.corp_proxy }}' }) } },
      secrets: secretsOf({ corp_proxy: `http://${user}:not-${password}@127.0.0.1:${proxy.port}` }),
    });
    const refused = await wrong.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const refusedView = await wrong.producer.waitFor('svc', refused.id, { timeoutMs: 10_000 });
    expect(refusedView.lastError?.type).toBe('AuthenticationError');
    expect(refusedView.lastError?.message).toMatch(/407/);

    const places = {
      redis: await dumpRedis(redis.client, `${ferry.prefix}:*`),
      'redis (wrong password)': await dumpRedis(redis.client, `${wrong.prefix}:*`),
      logs: ferry.logs.join('\n'),
      'logs (wrong password)': wrong.logs.join('\n'),
      views: JSON.stringify([view, refusedView]),
    };
    expect(places.redis).toContain('[redacted]');
    expect([
      ...findSecretForms('password', secretForms(password), places),
      ...findSecretForms('user:password', secretForms(`${user}:${password}`), places),
      ...findSecretForms('proxy URL', secretForms(proxyUrl), places),
    ]).toEqual([]);
  });

  it('refuses a target the egress policy refuses before any tunnel is opened', async () => {
    const proxy = await startConnectProxy();
    const downstream = await startDownstream();
    // A host name a secret chooses, resolving to loopback: refused for a non-literal host.
    const target = downstream.url.replace('127.0.0.1', 'localhost');
    const ferry = await createTestFerry(redis, {
      services: { services: { svc: service('{{ secrets.target }}', { proxy: '{{ secrets.corp_proxy }}' }) } },
      secrets: secretsOf({ target, corp_proxy: proxy.url }),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('dead_lettered');
    expect(view.lastError?.type).toBe('EgressDeniedError');
    expect(proxy.targets).toEqual([]);
    expect(downstream.requests).toEqual([]);
  });

  it('retries as a NetworkError while the proxy is down', async () => {
    const proxy = await startConnectProxy();
    await proxy.close();
    const downstream = await startDownstream();
    const ferry = await createTestFerry(redis, {
      services: { services: { svc: service(downstream.url, { proxy: proxy.url }) } },
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('dead_lettered');
    expect(view.lastError?.type).toBe('NetworkError');
    expect(view.attempts).toBe(3);
    expect(downstream.requests).toEqual([]);
  });

  it('carries mTLS through the tunnel', async () => {
    const certs = await makeTestCertificates();
    const server = await startMtlsServer(certs);
    const proxy = await startConnectProxy();
    const ferry = await createTestFerry(redis, {
      services: {
        services: {
          svc: service(server.url, {
            proxy: proxy.url,
            tls: { ca: '{{ secrets.ca }}', cert: '{{ secrets.cert }}', key: '{{ secrets.key }}' },
          }),
        },
      },
      secrets: secretsOf({ ca: certs.ca, cert: certs.clientA.cert, key: certs.clientA.key }),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('completed');
    expect(view.result?.body).toEqual({ cn: 'client-a' });
    expect(proxy.tunnels).toBe(1);
  });

  it('reports a client certificate refused through the tunnel as an AuthenticationError', async () => {
    const certs = await makeTestCertificates();
    const server = await startOpensslMtlsServer(certs);
    const proxy = await startConnectProxy();
    const ferry = await createTestFerry(redis, {
      services: {
        services: {
          svc: service(server.url, {
            proxy: proxy.url,
            tls: { ca: '{{ secrets.ca }}', cert: '{{ secrets.cert }}', key: '{{ secrets.key }}' },
          }),
        },
      },
      secrets: secretsOf({ ca: certs.ca, cert: certs.intruder.cert, key: certs.intruder.key }),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'get', input: { id: 'x' } });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.lastError?.type).toBe('AuthenticationError');
    expect(view.attempts).toBe(1);
    expect(proxy.tunnels).toBe(1);
  });
});

describe('the other calls a worker makes', () => {
  it('sends `ferry secrets test` and OAuth2 token requests through the env proxy', async () => {
    const proxy = await startConnectProxy();
    const tokenEndpoint = await startDownstream(() => ({
      status: 200,
      body: { access_token: 'tok-via-proxy-1234', token_type: 'Bearer', expires_in: 3600 },
    }));
    const downstream = await startDownstream();
    const config = parseServicesConfig(
      {
        services: {
          svc: service(downstream.url, {
            auth: {
              type: 'oauth2',
              tokenUrl: `${tokenEndpoint.url}/token`,
              clientId: 'ferry',
              clientSecret: '{{ secrets.client_secret }}',
            },
          }),
        },
      },
      { env: {} },
    );
    const outcome = await testStagedSecret({
      config,
      service: 'svc',
      operation: 'create',
      key: 'client_secret',
      value: 'staged-secret-5678',
      input: { a: 1 },
      resolver: secretsOf({ client_secret: 'current-secret-1234' }),
      probe: createSecretProbe({ proxyEnv: readProxyEnv({ HTTP_PROXY: proxy.url }) }),
    });
    expect(outcome.outcome).toBe('completed');
    expect(tokenEndpoint.requests).toHaveLength(1);
    expect(downstream.requests[0]?.headers.authorization).toBe('Bearer tok-via-proxy-1234');
    expect([...proxy.targets].sort()).toEqual(
      [`127.0.0.1:${new URL(tokenEndpoint.url).port}`, `127.0.0.1:${new URL(downstream.url).port}`].sort(),
    );
  });

  it("keeps an oauth2 service's token request off the env proxy under proxy: none", async () => {
    const proxy = await startConnectProxy();
    const tokenEndpoint = await startDownstream(() => ({
      status: 200,
      body: { access_token: 'tok-direct-1234', token_type: 'Bearer', expires_in: 3600 },
    }));
    const downstream = await startDownstream();
    const config = parseServicesConfig(
      {
        services: {
          svc: service(downstream.url, {
            proxy: 'none',
            auth: {
              type: 'oauth2',
              tokenUrl: `${tokenEndpoint.url}/token`,
              clientId: 'ferry',
              clientSecret: '{{ secrets.client_secret }}',
            },
          }),
        },
      },
      { env: {} },
    );
    const outcome = await testStagedSecret({
      config,
      service: 'svc',
      operation: 'create',
      key: 'client_secret',
      value: 'staged-secret-5678',
      input: { a: 1 },
      resolver: secretsOf({ client_secret: 'current-secret-1234' }),
      probe: createSecretProbe({ proxyEnv: readProxyEnv({ HTTP_PROXY: proxy.url }) }),
    });
    expect(outcome.outcome).toBe('completed');
    expect(tokenEndpoint.requests).toHaveLength(1);
    expect(downstream.requests[0]?.headers.authorization).toBe('Bearer tok-direct-1234');
    // Neither the call nor its token request went through the proxy.
    expect([...proxy.targets]).toEqual([]);
    expect(proxy.tunnels).toBe(0);
  });
});
