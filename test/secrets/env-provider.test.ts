import { describe, expect, it } from 'vitest';

import { createEnvSecretResolver } from '../../src/secrets/env-provider.ts';

describe('env secret provider', () => {
  const resolver = createEnvSecretResolver({
    FERRY_SECRET_CRM_API_KEY: 'global-key',
    FERRY_SECRET_TENANT_acme__CRM_API_KEY: 'acme-key',
    FERRY_SECRET_TENANT_acme_corp__API_KEY: 'acme-corp-key',
    FERRY_SECRET_TENANT_ACME__CRM_API_KEY: 'upper-acme-key',
    PATH: '/usr/bin',
  });

  it('resolves global values by upper-cased name, `-` and `.` as `_`', () => {
    expect(resolver.resolve('crm_api_key', undefined)).toBe('global-key');
    expect(resolver.resolve('crm.api-key', undefined)).toBe('global-key');
    expect(resolver.resolve('missing', undefined)).toBeUndefined();
    expect(resolver.resolve('path', undefined)).toBeUndefined();
  });

  it("prefers the tenant's value, then falls back to the global one", () => {
    expect(resolver.resolve('crm_api_key', 'acme')).toBe('acme-key');
    expect(resolver.resolve('crm_api_key', 'globex')).toBe('global-key');
    expect(resolver.resolve('api_key', 'acme_corp')).toBe('acme-corp-key');
  });

  it('never hands a tenant with `-` or `.` the value of the tenant spelled with `_`', () => {
    // Regression: `-` and `.` were written as `_`, so tenants acme-corp and acme.corp read acme_corp's value
    // (and a job's tenant is chosen by whoever enqueues it). They now get only global env values.
    expect(resolver.resolve('api_key', 'acme-corp')).toBeUndefined();
    expect(resolver.resolve('api_key', 'acme.corp')).toBeUndefined();
    expect(resolver.resolve('crm_api_key', 'acme-corp')).toBe('global-key');
    expect(resolver.resolve('api_key', 'acme-corp', true)).toBeUndefined();
  });

  it("never hands one tenant another's value through a different split of the name", () => {
    // acme_crm + api_key must not read acme + crm_api_key, nor the other way round.
    expect(resolver.resolve('api_key', 'acme_crm')).toBeUndefined();
    expect(resolver.resolve('corp_api_key', 'acme')).toBeUndefined();
  });

  it('keeps tenants that differ only in case apart', () => {
    expect(resolver.resolve('crm_api_key', 'ACME')).toBe('upper-acme-key');
    expect(resolver.resolve('crm_api_key', 'Acme')).toBe('global-key');
  });

  it('gives tenants that could be confused at the separator no tenant-scoped value', () => {
    const tricky = createEnvSecretResolver({
      FERRY_SECRET_TENANT_a___KEY: 'tricky',
      FERRY_SECRET_TENANT_a__B__KEY: 'tricky-2',
    });
    expect(tricky.resolve('key', 'a_')).toBeUndefined();
    expect(tricky.resolve('key', 'a-')).toBeUndefined();
    expect(tricky.resolve('key', 'a__b')).toBeUndefined();
    expect(tricky.resolve('key', 'a.-b')).toBeUndefined();
    expect(tricky.resolve('b__key', 'a')).toBe('tricky-2'); // the plain reading of the name stays valid
  });
});
