/**
 * Every outbound auth type reads its secrets from the encrypted store (issue 4: "check bearer, basic, apiKey
 * (header or query) against the secret store"), per tenant where the tenant has its own value, and a
 * `tenantSecrets: required` service never falls back to the global value. Real redis-server, worker pool and
 * downstream.
 */
import { describe, expect, it, onTestFinished } from 'vitest';

import { readEnv } from '../../src/core/env.ts';
import { createLogger } from '../../src/core/logger.ts';
import { generateMasterKey } from '../../src/secrets/crypto.ts';
import { createSecretsRuntime } from '../../src/secrets/setup.ts';
import { type RecordedRequest as Req, startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

async function storeResolver() {
  const prefix = uniquePrefix();
  const secrets = await createSecretsRuntime({
    env: readEnv({ FERRY_SECRETS_KEY: generateMasterKey(), FERRY_PREFIX: prefix }),
    processEnv: {},
    connection: redis.client,
    prefix,
    logger: createLogger({ level: 'silent' }),
  });
  onTestFinished(() => secrets.close());
  return secrets;
}

describe('outbound auth from the store', () => {
  it.each([
    [
      'bearer',
      { type: 'bearer', token: '{{ secrets.key }}' },
      (r: Req) => r.headers.authorization,
      'Bearer ',
    ],
    [
      'basic',
      { type: 'basic', username: 'user', password: '{{ secrets.key }}' },
      (r: Req) => Buffer.from(String(r.headers.authorization).replace('Basic ', ''), 'base64').toString(),
      'user:',
    ],
    [
      'apiKey header',
      { type: 'apiKey', header: 'X-Api-Key', value: '{{ secrets.key }}' },
      (r: Req) => r.headers['x-api-key'],
      '',
    ],
    [
      'apiKey query',
      { type: 'apiKey', query: 'api_key', value: '{{ secrets.key }}' },
      (r: Req) => new URL(r.url, 'http://x').searchParams.get('api_key') ?? undefined,
      '',
    ],
  ])('%s: the global value, and a tenant’s own before it', async (_, auth, sent, lead) => {
    const downstream = await startDownstream();
    onTestFinished(() => downstream.close());
    const secrets = await storeResolver();
    await secrets.store!.set('key', 'global-value-123');
    await secrets.store!.set('tenant/acme/key', 'acme-value-456');
    const ferry = await createTestFerry(redis, {
      secrets: secrets.resolver,
      services: {
        services: {
          svc: {
            baseUrl: downstream.url,
            auth,
            operations: { op: { method: 'POST', path: '/x', body: '{{ input }}' } },
          },
        },
      },
    });
    for (const tenant of [undefined, 'acme', 'beta']) {
      const job = await ferry.producer.enqueue({
        service: 'svc',
        operation: 'op',
        input: {},
        ...(tenant === undefined ? {} : { tenant }),
      });
      expect((await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 })).state).toBe('completed');
    }
    expect(downstream.requests.map((request) => sent(request))).toEqual([
      `${lead}global-value-123`,
      `${lead}acme-value-456`,
      `${lead}global-value-123`,
    ]);
  });

  it('tenantSecrets: required never calls with the global value', async () => {
    const downstream = await startDownstream();
    onTestFinished(() => downstream.close());
    const secrets = await storeResolver();
    await secrets.store!.set('key', 'global-value-123');
    await secrets.store!.set('tenant/acme/key', 'acme-value-456');
    const ferry = await createTestFerry(redis, {
      secrets: secrets.resolver,
      services: {
        services: {
          svc: {
            baseUrl: downstream.url,
            tenantSecrets: 'required',
            auth: { type: 'bearer', token: '{{ secrets.key }}' },
            operations: { op: { method: 'POST', path: '/x', body: '{{ input }}' } },
          },
        },
      },
    });
    const acme = await ferry.producer.enqueue({ service: 'svc', operation: 'op', input: {}, tenant: 'acme' });
    const beta = await ferry.producer.enqueue({ service: 'svc', operation: 'op', input: {}, tenant: 'beta' });
    expect((await ferry.producer.waitFor('svc', acme.id, { timeoutMs: 10_000 })).state).toBe('completed');
    const refused = await ferry.producer.waitFor('svc', beta.id, { timeoutMs: 10_000 });
    expect(refused).toMatchObject({
      state: 'dead_lettered',
      attempts: 1,
      lastError: { type: 'ConfigurationError' },
    });
    expect(refused.lastError?.message).toContain('tenant/beta/key must exist');
    expect(downstream.requests.map((request) => request.headers.authorization)).toEqual([
      'Bearer acme-value-456',
    ]);
  });
});
