/**
 * `tls:` (issue 17 item 2) against a real HTTPS server that requires a client certificate signed by a CA the
 * test makes with openssl: the right certificate completes, a wrong one is an AuthenticationError, an untrusted
 * server certificate a TlsError, a bad PEM a ConfigurationError, and a rotated key secret reaches the next
 * connection. Keys never reach Redis or the logs.
 */
import type { Server as HttpServer } from 'node:http';
import { createServer } from 'node:https';
import type { TLSSocket } from 'node:tls';

import { describe, expect, it, onTestFinished } from 'vitest';

import { readEnv } from '../../src/core/env.ts';
import { createLogger } from '../../src/core/logger.ts';
import { generateMasterKey } from '../../src/secrets/crypto.ts';
import type { SecretResolver } from '../../src/secrets/resolver.ts';
import { createSecretsRuntime } from '../../src/secrets/setup.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { listenOnFreePort } from '../helpers/listen.ts';
import { dumpRedis, startRedis, uniquePrefix } from '../helpers/redis.ts';
import { makeTestCertificates, startMtlsServer, startOpensslMtlsServer } from '../helpers/tls-certs.ts';
import { waitUntil } from '../helpers/until.ts';

const redis = await startRedis();
const certs = await makeTestCertificates();

/** A resolver over a map the test changes: a rotated secret is what the next job resolves. */
function mutableSecrets(values: Map<string, string>): SecretResolver {
  return { resolve: (name) => values.get(name) };
}

const TLS_FROM_SECRETS = {
  ca: '{{ secrets.partner_ca }}',
  cert: '{{ secrets.client_cert }}',
  key: '{{ secrets.client_key }}',
};

function keyLines(pem: string): string[] {
  return pem.split('\n').filter((line) => line.length >= 16 && !line.startsWith('-----'));
}

describe('tls: mTLS and custom CA', () => {
  it('completes with the client certificate the CA signed; the key reaches neither Redis nor the logs', async () => {
    const server = await startMtlsServer(certs);
    const secrets = new Map([
      ['partner_ca', certs.ca],
      ['client_cert', certs.clientA.cert],
      ['client_key', certs.clientA.key],
    ]);
    const ferry = await createTestFerry(redis, {
      services: oneService(server.url, { tls: { ...TLS_FROM_SECRETS, minVersion: 'TLSv1.2' } }),
      secrets: mutableSecrets(secrets),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { a: 1 } });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('completed');
    expect(view.result?.body).toEqual({ cn: 'client-a' });
    expect(server.subjects).toEqual(['client-a']);
    const stored = await dumpRedis(redis.client, `${ferry.prefix}:*`);
    const logs = ferry.logs.join('\n');
    for (const line of keyLines(certs.clientA.key)) {
      expect(stored).not.toContain(line);
      expect(logs).not.toContain(line);
    }
  });

  it('dead-letters a certificate the server refuses as an AuthenticationError, after one attempt', async () => {
    // OpenSSL's server, which sends the TLS alert a refused client gets from nginx, Envoy or Go.
    const server = await startOpensslMtlsServer(certs);
    const ferry = await createTestFerry(redis, {
      services: oneService(server.url, { tls: TLS_FROM_SECRETS }),
      secrets: mutableSecrets(
        new Map([
          ['partner_ca', certs.ca],
          ['client_cert', certs.intruder.cert],
          ['client_key', certs.intruder.key],
        ]),
      ),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'get', input: { id: 'x' } });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('dead_lettered');
    expect(view.lastError?.type).toBe('AuthenticationError');
    expect(view.lastError?.message).toMatch(
      /refused the client certificate \(ERR_SSL_TLSV1_ALERT_UNKNOWN_CA\)/,
    );
    expect(view.attempts).toBe(1);
    // The same server lets the certificate the CA signed through.
    const good = await createTestFerry(redis, {
      services: oneService(server.url, { tls: TLS_FROM_SECRETS }),
      secrets: mutableSecrets(
        new Map([
          ['partner_ca', certs.ca],
          ['client_cert', certs.clientA.cert],
          ['client_key', certs.clientA.key],
        ]),
      ),
    });
    const passing = await good.producer.enqueue({ service: 'svc', operation: 'get', input: { id: 'x' } });
    expect((await good.producer.waitFor('svc', passing.id, { timeoutMs: 10_000 })).state).toBe('completed');
    const logs = ferry.logs.join('\n');
    for (const line of keyLines(certs.intruder.key)) expect(logs).not.toContain(line);
  });

  it('refuses a server certificate it cannot verify with a TlsError naming the code and tls.ca', async () => {
    const server = await startMtlsServer(certs);
    const ferry = await createTestFerry(redis, {
      // No `ca`: Node's bundled roots do not know the test CA.
      services: oneService(server.url, {
        tls: { cert: '{{ secrets.client_cert }}', key: '{{ secrets.client_key }}' },
      }),
      secrets: mutableSecrets(
        new Map([
          ['client_cert', certs.clientA.cert],
          ['client_key', certs.clientA.key],
        ]),
      ),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('dead_lettered');
    expect(view.lastError?.type).toBe('TlsError');
    expect(view.lastError?.message).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN/);
    expect(view.lastError?.message).toMatch(/tls\.ca/);
    expect(view.attempts).toBe(1);
  });

  it('refuses a server certificate for another host name with a TlsError', async () => {
    const server = await startMtlsServer(certs);
    const ferry = await createTestFerry(redis, {
      services: oneService(server.url, { tls: { ...TLS_FROM_SECRETS, servername: 'api.example.com' } }),
      secrets: mutableSecrets(
        new Map([
          ['partner_ca', certs.ca],
          ['client_cert', certs.clientA.cert],
          ['client_key', certs.clientA.key],
        ]),
      ),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.lastError?.type).toBe('TlsError');
    expect(view.lastError?.message).toMatch(/ERR_TLS_CERT_ALTNAME_INVALID/);
  });

  it('fails a PEM secret that is not one as a ConfigurationError naming the field, never the value', async () => {
    const server = await startMtlsServer(certs);
    const broken = `-----BEGIN CERTIFICATE-----\nnot-base64-at-all-${'q'.repeat(40)}\n-----END CERTIFICATE-----\n`;
    const ferry = await createTestFerry(redis, {
      services: oneService(server.url, { tls: TLS_FROM_SECRETS }),
      secrets: mutableSecrets(
        new Map([
          ['partner_ca', certs.ca],
          ['client_cert', broken],
          ['client_key', certs.clientA.key],
        ]),
      ),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('dead_lettered');
    expect(view.lastError?.type).toBe('ConfigurationError');
    expect(view.lastError?.field).toBe('tls.cert');
    expect(view.lastError?.message).not.toContain('not-base64');
    expect(server.subjects).toEqual([]);
  });

  it('uses a rotated certificate and key (with a passphrase) on the next job', async () => {
    const server = await startMtlsServer(certs);
    const secrets = new Map([
      ['partner_ca', certs.ca],
      ['client_cert', certs.clientA.cert],
      ['client_key', certs.clientA.key],
    ]);
    const ferry = await createTestFerry(redis, {
      services: oneService(server.url, {
        tls: { ...TLS_FROM_SECRETS, passphrase: '{{ secrets.client_key_passphrase }}' },
      }),
      secrets: mutableSecrets(secrets),
    });
    secrets.set('client_key_passphrase', 'unused-for-an-unencrypted-key');
    const first = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 1 } });
    expect((await ferry.producer.waitFor('svc', first.id, { timeoutMs: 10_000 })).result?.body).toEqual({
      cn: 'client-a',
    });
    // Rotation: the next job resolves the new values (a real store's cache refreshes them within
    // FERRY_SECRETS_REFRESH_MS), so its call opens a connection with the new certificate.
    secrets.set('client_cert', certs.clientB.cert);
    secrets.set('client_key', certs.clientB.key);
    secrets.set('client_key_passphrase', certs.clientB.passphrase);
    const second = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 2 } });
    const view = await ferry.producer.waitFor('svc', second.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('completed');
    expect(view.result?.body).toEqual({ cn: 'client-b' });
    expect(server.subjects).toEqual(['client-a', 'client-b']);
    const logs = ferry.logs.join('\n');
    expect(logs).not.toContain(certs.clientB.passphrase);
  });

  it('reaches new connections within the store refresh after a promote of one key+certificate secret', async () => {
    const server = await startMtlsServer(certs);
    const prefix = uniquePrefix();
    const runtime = await createSecretsRuntime({
      env: readEnv({
        FERRY_SECRETS_KEY: generateMasterKey(),
        FERRY_PREFIX: prefix,
        FERRY_SECRETS_REFRESH_MS: '100',
      }),
      processEnv: {},
      connection: redis.client,
      prefix,
      logger: createLogger({ level: 'silent' }),
    });
    onTestFinished(() => runtime.close());
    const store = runtime.store!;
    await store.set('partner_ca', certs.ca);
    // Key and certificate in one secret, so one promote switches both (docs/operations.md).
    await store.set('client', `${certs.clientA.key}${certs.clientA.cert}`);
    await store.set('client_passphrase', certs.clientB.passphrase);
    const ferry = await createTestFerry(redis, {
      services: oneService(server.url, {
        tls: {
          ca: '{{ secrets.partner_ca }}',
          cert: '{{ secrets.client }}',
          key: '{{ secrets.client }}',
          passphrase: '{{ secrets.client_passphrase }}',
        },
      }),
      secrets: runtime.resolver,
    });
    const callOnce = async (n: number): Promise<unknown> => {
      const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n } });
      const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
      expect(view.state).toBe('completed');
      return (view.result?.body as { cn: string }).cn;
    };
    expect(await callOnce(0)).toBe('client-a');
    await store.stage('client', `${certs.clientB.key}${certs.clientB.cert}`);
    expect(await callOnce(1)).toBe('client-a'); // staged, not promoted: still the current value
    await store.promote('client');
    let n = 2;
    await waitUntil(
      async () => (await callOnce(n++)) === 'client-b',
      10_000,
      'a call with the new certificate',
    );
    // From then on every call presents the new one.
    expect(await callOnce(n++)).toBe('client-b');
    expect(server.subjects.at(-1)).toBe('client-b');
  });

  it("sends an oauth2 service's token request with its tls: (an mTLS token endpoint)", async () => {
    // One partner host, mTLS on every path: the token endpoint and the API (as banks' OAuth2 mTLS, RFC 8705).
    const seen: string[] = [];
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
        seen.push(`${request.url ?? ''} ${cn}`);
        request.resume();
        request.on('end', () => {
          const body =
            request.url === '/token'
              ? { access_token: 'tok-mtls-1234', token_type: 'Bearer', expires_in: 3600 }
              : { cn, authorization: request.headers.authorization };
          response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
        });
      },
    );
    const { url } = await listenOnFreePort(server as unknown as HttpServer);
    const origin = url.replace('http:', 'https:');
    const ferry = await createTestFerry(redis, {
      services: oneService(origin, {
        tls: TLS_FROM_SECRETS,
        auth: {
          type: 'oauth2',
          tokenUrl: `${origin}/token`,
          clientId: 'ferry',
          clientSecret: '{{ secrets.client_secret }}',
        },
      }),
      secrets: mutableSecrets(
        new Map([
          ['partner_ca', certs.ca],
          ['client_cert', certs.clientA.cert],
          ['client_key', certs.clientA.key],
          ['client_secret', 'oauth-client-secret-1234'],
        ]),
      ),
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { a: 1 } });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.lastError?.message).toBeUndefined();
    expect(view.state).toBe('completed');
    expect(view.result?.body).toEqual({ cn: 'client-a', authorization: 'Bearer [redacted]' });
    expect(seen).toEqual(['/token client-a', '/things client-a']);
  });
});
