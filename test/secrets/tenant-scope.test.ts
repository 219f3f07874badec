/**
 * Tenant scope (DESIGN §5, issue 4): for a job of tenant T, `{{ secrets.x }}` reads `tenant/T/x` first, then
 * `x`, across every source in order; with `tenantSecrets: required` only `tenant/T/x` counts.
 */
import { describe, expect, it } from 'vitest';

import { ConfigurationError, ValidationError } from '../../src/core/errors.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { validateEnqueueRequest } from '../../src/producer/validate.ts';
import { createEnvSecretSource } from '../../src/secrets/env-provider.ts';
import { parseSecretKey, secretKey } from '../../src/secrets/names.ts';
import { createSecretResolver, resolveSecrets, type SecretSource } from '../../src/secrets/resolver.ts';

/** A source over a plain table, answering synchronously or (like the store) with a promise. */
function tableSource(table: Record<string, string>, async = false): SecretSource {
  return {
    kind: 'store',
    read: (key) => (async ? Promise.resolve(table[key]) : table[key]),
  };
}

const env = createEnvSecretSource({
  FERRY_SECRET_API_KEY: 'env-global',
  FERRY_SECRET_TENANT_beta__API_KEY: 'env-beta',
});

describe.each([
  ['synchronous', false],
  ['asynchronous', true],
])('resolution order with a %s store', (_, async) => {
  const store = tableSource({ api_key: 'store-global', 'tenant/acme/api_key': 'store-acme' }, async);
  const resolver = createSecretResolver([store, env]);

  it.each([
    ['no tenant: the first source with the global key', undefined, 'store-global'],
    ['tenant with its own value in the store', 'acme', 'store-acme'],
    ['a tenant value in a later source beats a global value in an earlier one', 'beta', 'env-beta'],
    ['a tenant without its own value falls back to the global one', 'gamma', 'store-global'],
  ])('%s', async (_label, tenant, expected) => {
    expect(await resolver.resolve('api_key', tenant)).toBe(expected);
  });

  it('tenantSecrets: required reads only the tenant’s own value', async () => {
    expect(await resolver.resolve('api_key', 'acme', true)).toBe('store-acme');
    expect(await resolver.resolve('api_key', 'gamma', true)).toBeUndefined();
    const missing = Promise.resolve().then(() =>
      resolveSecrets(resolver, ['api_key'], 'gamma', undefined, 'required'),
    );
    await expect(missing).rejects.toBeInstanceOf(ConfigurationError);
    await expect(missing).rejects.toThrow('tenant/gamma/api_key must exist');
    await expect(missing).rejects.not.toThrow(/store-global|env-global/);
  });
});

describe('secret keys', () => {
  it.each([
    ['crm_key', undefined, { name: 'crm_key', tenant: undefined }],
    ['tenant/acme/crm.key-2', undefined, { name: 'crm.key-2', tenant: 'acme' }],
    ['crm_key', 'acme', { name: 'crm_key', tenant: 'acme' }],
  ])('%s (tenant %s)', (key, tenant, expected) => {
    expect(parseSecretKey(key, tenant)).toEqual(expected);
    expect(secretKey(expected.name, expected.tenant)).toBe(tenant === undefined ? key : `tenant/acme/${key}`);
  });

  it.each([
    ['Crm', undefined, 'must match [a-z0-9][a-z0-9_.-]*'],
    ['_x', undefined, 'must match'],
    ['a/b', undefined, 'must match'],
    ['tenant/acme', undefined, 'tenant/<tenant>/<name>'],
    ['tenant/a/b/c', undefined, 'tenant/<tenant>/<name>'],
    ['tenant/-bad/x', undefined, 'tenant: "-bad"'],
    ['tenant/acme/x', 'acme', 'not both'],
    ['x'.repeat(129), undefined, 'at most 128'],
  ])('refuses %s', (key, tenant, message) => {
    expect(() => parseSecretKey(key, tenant)).toThrow(ValidationError);
    expect(() => parseSecretKey(key, tenant)).toThrow(message);
  });
});

describe('tenantSecrets in the services file', () => {
  const config = parseServicesConfig(
    {
      services: {
        'per-tenant': {
          baseUrl: 'http://127.0.0.1:9',
          tenantSecrets: 'required',
          auth: { type: 'bearer', token: '{{ secrets.api_key }}' },
          operations: { op: { method: 'GET', path: '/' } },
        },
        shared: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'GET', path: '/' } } },
      },
    },
    { env: {} },
  );

  it('defaults to fallback and loads required', () => {
    expect(config.services.get('shared')?.tenantSecrets).toBe('fallback');
    expect(config.services.get('per-tenant')?.tenantSecrets).toBe('required');
  });

  it('refuses at enqueue a job without a tenant for a service that requires tenant secrets (422, field tenant)', () => {
    let thrown: unknown;
    try {
      validateEnqueueRequest({ service: 'per-tenant', operation: 'op' }, config.services);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ValidationError);
    expect(thrown).toMatchObject({ field: 'tenant', status: 422 });
    expect(
      validateEnqueueRequest({ service: 'per-tenant', operation: 'op', tenant: 'acme' }, config.services),
    ).toMatchObject({ tenant: 'acme' });
    expect(validateEnqueueRequest({ service: 'shared', operation: 'op' }, config.services)).toMatchObject({
      service: 'shared',
    });
  });

  it('names the path of a bad value', () => {
    expect(() =>
      parseServicesConfig(
        {
          services: {
            s: {
              baseUrl: 'http://x',
              tenantSecrets: 'sometimes',
              operations: { op: { method: 'GET', path: '/' } },
            },
          },
        },
        { env: {} },
      ),
    ).toThrow('services.s.tenantSecrets: must be one of fallback, required');
  });
});
