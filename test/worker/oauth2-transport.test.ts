/**
 * OAuth2 token requests go the way the service's calls go (issue 17): through its own `proxy:` (a URL from a
 * secret: the token request is tunnelled too), direct for `proxy: none` whatever HTTP(S)_PROXY says, and with
 * its `tls:` client certificate (RFC 8705 mutual-TLS client authentication) on the baseUrl's host and on
 * another host, whose certificate is checked against the service's `ca` (and Node's roots) under its own name.
 * A real local CONNECT proxy, real token endpoints (HTTP, and HTTPS requiring a client certificate), the
 * in-process worker pool.
 */
import type { Server as HttpServer } from 'node:http';
import { createServer } from 'node:https';
import { rootCertificates, type TLSSocket } from 'node:tls';

import { describe, expect, it } from 'vitest';

import type { SecretResolver } from '../../src/secrets/resolver.ts';
import { tokenTransport } from '../../src/worker/http/oauth2.ts';
import { readProxyEnv, type Transport } from '../../src/worker/http/transport.ts';
import { startConnectProxy } from '../helpers/connect-proxy.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { listenOnFreePort } from '../helpers/listen.ts';
import { startRedis } from '../helpers/redis.ts';
import { makeTestCertificates, startMtlsServer, type TestCertificates } from '../helpers/tls-certs.ts';
import { bearerOf, startTokenEndpoint } from '../helpers/token-endpoint.ts';

const redis = await startRedis();

function service(baseUrl: string, overrides: Record<string, unknown> = {}): object {
  return (oneService(baseUrl, overrides) as { services: { svc: object } }).services.svc;
}

function secretsOf(values: Record<string, string>): SecretResolver {
  return { resolve: (name) => values[name] };
}

function oauth2(tokenUrl: string): Record<string, unknown> {
  return { type: 'oauth2', tokenUrl, clientId: 'ferry', clientSecret: '{{ secrets.client_secret }}' };
}

function hostPort(url: string): string {
  return new URL(url).host;
}

/** An HTTPS token endpoint that requires a client certificate the test CA signed; the token names its CN. */
async function startMtlsTokenEndpoint(
  certs: TestCertificates,
): Promise<{ port: number; subjects: string[] }> {
  const subjects: string[] = [];
  const server = createServer(
    {
      key: certs.server.key,
      cert: certs.server.cert,
      ca: certs.ca,
      requestCert: true,
      rejectUnauthorized: true,
    },
    (request, response) => {
      const cn = String((request.socket as TLSSocket).getPeerCertificate().subject?.CN ?? '');
      subjects.push(cn);
      request.resume();
      request.on('end', () => {
        response.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            access_token: `tok-mtls-${cn}-0123456789`,
            token_type: 'Bearer',
            expires_in: 3600,
          }),
        );
      });
    },
  );
  const listening = await listenOnFreePort(server as unknown as HttpServer);
  return { port: Number(new URL(listening.url).port), subjects };
}

describe('OAuth2 token requests follow the service transport', () => {
  it("go through the service's own proxy: (a URL from a secret), tunnelled like its calls", async () => {
    const proxy = await startConnectProxy();
    const tokens = await startTokenEndpoint();
    const downstream = await startDownstream();
    const ferry = await createTestFerry(redis, {
      services: {
        services: {
          svc: service(downstream.url, { proxy: '{{ secrets.corp_proxy }}', auth: oauth2(tokens.url) }),
        },
      },
      secrets: secretsOf({ corp_proxy: proxy.url, client_secret: 'client-secret-1234' }),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { a: 1 } });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('completed');
    expect(tokens.requests).toHaveLength(1);
    expect(bearerOf(downstream.requests[0]!.headers)).toBe(tokens.issued[0]!.token);
    // One tunnel to the token endpoint, one to the service.
    expect([...proxy.targets].sort()).toEqual([hostPort(tokens.url), hostPort(downstream.url)].sort());
    expect(proxy.tunnels).toBe(2);
  });

  it('go direct for proxy: none, whatever HTTP_PROXY says', async () => {
    const proxy = await startConnectProxy();
    const tokens = await startTokenEndpoint();
    const downstream = await startDownstream();
    const ferry = await createTestFerry(redis, {
      services: { services: { svc: service(downstream.url, { proxy: 'none', auth: oauth2(tokens.url) }) } },
      secrets: secretsOf({ client_secret: 'client-secret-1234' }),
      pool: { proxyEnv: readProxyEnv({ HTTP_PROXY: proxy.url, HTTPS_PROXY: proxy.url }) },
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { a: 1 } });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('completed');
    expect(tokens.requests).toHaveLength(1);
    expect(downstream.requests).toHaveLength(1);
    expect(proxy.targets).toEqual([]);
    expect(proxy.tunnels).toBe(0);
  });

  it("present the service's tls: client certificate at the token endpoint (RFC 8705), same host or not", async () => {
    const certs = await makeTestCertificates();
    const server = await startMtlsServer(certs);
    const tokenServer = await startMtlsTokenEndpoint(certs);
    const tls = { ca: '{{ secrets.ca }}', cert: '{{ secrets.cert }}', key: '{{ secrets.key }}' };
    const secrets = secretsOf({
      ca: certs.ca,
      cert: certs.clientA.cert,
      key: certs.clientA.key,
      client_secret: 'client-secret-1234',
    });
    // The token endpoint on the baseUrl's host (127.0.0.1), then on another one (localhost): the server
    // certificate names both, and only the test CA (given as the service's `ca`) signed it.
    for (const host of ['127.0.0.1', 'localhost']) {
      const ferry = await createTestFerry(redis, {
        services: {
          services: {
            svc: service(server.url, {
              tls,
              auth: oauth2(`https://${host}:${tokenServer.port}/oauth/token`),
            }),
          },
        },
        secrets,
      });
      const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
      const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
      expect(view.lastError, host).toBeUndefined();
      expect(view.state, host).toBe('completed');
      expect(view.result?.body, host).toEqual({ cn: 'client-a' });
    }
    expect(tokenServer.subjects).toEqual(['client-a', 'client-a']);
  });

  it('keep ca and servername for the baseUrl host; elsewhere, its own name and ca plus the bundled roots', () => {
    const transport: Transport = {
      key: 'k',
      proxy: 'http://proxy.corp:3128',
      tls: { ca: 'CA-PEM', cert: 'CERT', key: 'KEY', servername: 'api.bank.example', minVersion: 'TLSv1.3' },
    };
    expect(tokenTransport(transport, 'https://API.bank.example:8443/token', 'https://api.bank.example')).toBe(
      transport,
    );
    const other = tokenTransport(transport, 'https://auth.bank.example/token', 'https://api.bank.example');
    expect(other).toMatchObject({ proxy: 'http://proxy.corp:3128', tls: { cert: 'CERT', key: 'KEY' } });
    expect(other.tls?.minVersion).toBe('TLSv1.3');
    expect(other.tls?.servername).toBeUndefined();
    expect(other.tls?.ca?.startsWith('CA-PEM\n')).toBe(true);
    expect(other.tls?.ca).toContain(rootCertificates[0]);
    expect(other.key).not.toBe(transport.key);
  });
});
