/**
 * testStagedSecret (issue 4, `ferry secrets test`; ops, with the worker's probe): one live call with a candidate value for one key, every
 * other secret as usual; refusals come before any call, and the candidate never appears in the outcome.
 */
import { describe, expect, it } from 'vitest';

import { ValidationError } from '../../src/core/errors.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import type { ServicesConfig } from '../../src/core/services/types.ts';
import { type SecretTestOptions, testStagedSecret } from '../../src/ops/secret-test.ts';
import { createSecretResolver, type SecretResolver } from '../../src/secrets/resolver.ts';
import type { SecretProbe, SecretProbeCall } from '../../src/secrets/secret-test.ts';
import { createSecretProbe } from '../../src/worker/secret-probe.ts';
import { type Downstream, startDownstream } from '../helpers/downstream.ts';

const CURRENT = 'current-crm-value-1';
const STAGED = 'staged-crm-value-2';
const ACME_CURRENT = 'acme-own-value-3';

function servicesFor(url: string): ServicesConfig {
  return parseServicesConfig(
    {
      services: {
        crm: {
          baseUrl: url,
          auth: { type: 'bearer', token: '{{ secrets.crm_key }}' },
          headers: { 'x-region': '{{ secrets.crm_region }}' },
          operations: { ping: { method: 'POST', path: '/ping', body: '{{ input }}' } },
        },
        'crm-tenants': {
          baseUrl: url,
          tenantSecrets: 'required',
          auth: { type: 'bearer', token: '{{ secrets.crm_key }}' },
          operations: { ping: { method: 'GET', path: '/ping' } },
        },
        mailer: {
          baseUrl: url,
          auth: { type: 'apiKey', header: 'x-api-key', value: '{{ secrets.mail_key }}' },
          operations: { send: { method: 'POST', path: '/send' } },
        },
      },
    },
    { env: {} },
  );
}

function tableResolver(): SecretResolver {
  const table: Record<string, string> = {
    crm_key: CURRENT,
    crm_region: 'eu-west',
    mail_key: 'mail-value-4',
    'tenant/acme/crm_key': ACME_CURRENT,
  };
  return createSecretResolver([{ kind: 'store', read: (key) => Promise.resolve(table[key]) }]);
}

async function setup(): Promise<{ downstream: Downstream; base: Omit<SecretTestOptions, 'key'> }> {
  // The downstream echoes what it received, as a careless API does: the outcome must not carry it.
  const downstream = await startDownstream((request) => ({
    status: request.headers.authorization === `Bearer ${STAGED}` ? 200 : 401,
    body: { authorization: request.headers.authorization, region: request.headers['x-region'] },
  }));
  return {
    downstream,
    base: {
      config: servicesFor(downstream.url),
      resolver: tableResolver(),
      probe: createSecretProbe(),
      value: STAGED,
      service: 'crm',
      operation: 'ping',
      input: { hello: 'world' },
    },
  };
}

async function refusal(options: SecretTestOptions): Promise<ValidationError> {
  try {
    await testStagedSecret(options);
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return error as ValidationError;
  }
  throw new Error('expected a refusal');
}

describe('testStagedSecret', () => {
  it('calls with the candidate value, other secrets as usual, and scrubs the candidate from the body', async () => {
    const { downstream, base } = await setup();
    const outcome = await testStagedSecret({ ...base, key: 'crm_key' });
    expect(outcome).toMatchObject({ outcome: 'completed', status: 200 });
    expect(downstream.requests).toHaveLength(1);
    expect(downstream.requests[0]?.headers.authorization).toBe(`Bearer ${STAGED}`);
    expect(downstream.requests[0]?.headers['x-region']).toBe('eu-west');
    expect(JSON.parse(downstream.requests[0]!.body)).toEqual({ hello: 'world' });
    expect(JSON.stringify(outcome)).not.toContain(STAGED);
    // Every secret the call resolved is scrubbed, not only the candidate.
    expect(outcome.outcome === 'completed' && outcome.body).toEqual({
      authorization: 'Bearer [redacted]',
      region: '[redacted]',
    });
    // The process's resolver is not changed.
    expect(await base.resolver.resolve('crm_key', undefined)).toBe(CURRENT);
  });

  it('a refused candidate is a failed outcome (AuthenticationError), never a throw', async () => {
    const { downstream, base } = await setup();
    const outcome = await testStagedSecret({ ...base, key: 'crm_key', value: 'wrong-candidate-5' });
    expect(outcome).toMatchObject({ outcome: 'failed', error: { type: 'AuthenticationError', status: 401 } });
    expect(JSON.stringify(outcome)).not.toContain('wrong-candidate-5');
    expect(downstream.requests).toHaveLength(1);
  });

  it('a tenant key is tested as a job of its tenant', async () => {
    const { downstream, base } = await setup();
    const outcome = await testStagedSecret({ ...base, key: 'tenant/acme/crm_key', service: 'crm-tenants' });
    expect(outcome).toMatchObject({ outcome: 'completed', status: 200 });
    expect(downstream.requests[0]?.headers.authorization).toBe(`Bearer ${STAGED}`);
  });

  it.each([
    ['an unknown service', { key: 'crm_key', service: 'nope' }, { field: 'service', status: 404 }],
    ['an unknown operation', { key: 'crm_key', operation: 'nope' }, { field: 'operation', status: 404 }],
    [
      'a secret the service does not reference',
      { key: 'mail_key' },
      {
        field: 'key',
        status: 422,
        message: expect.stringContaining('only use secrets its config references'),
      },
    ],
    [
      'a tenant that contradicts the key',
      { key: 'tenant/acme/crm_key', tenant: 'beta' },
      { field: 'tenant' },
    ],
    [
      'a global key for a tenant whose own value would be read instead',
      { key: 'crm_key', tenant: 'acme' },
      { field: 'tenant', status: 422 },
    ],
    [
      'a global key for a service that reads only tenant values',
      { key: 'crm_key', tenant: 'beta', service: 'crm-tenants' },
      { field: 'key', status: 422 },
    ],
    [
      'no tenant for a service that requires one',
      { key: 'crm_key', service: 'crm-tenants' },
      { field: 'tenant', status: 422 },
    ],
    ['a bad key', { key: 'Bad Name' }, { field: 'key' }],
  ])('refuses %s before any call', async (_label, overrides, expected) => {
    const { downstream, base } = await setup();
    const error = await refusal({ ...base, ...overrides });
    expect(error).toMatchObject(expected);
    expect(error.message).not.toContain(STAGED);
    expect(downstream.requests).toHaveLength(0);
  });

  it('a global key for a tenant without its own value is read for that tenant', async () => {
    const { downstream, base } = await setup();
    const outcome = await testStagedSecret({ ...base, key: 'crm_key', tenant: 'beta' });
    expect(outcome).toMatchObject({ outcome: 'completed' });
    expect(downstream.requests[0]?.headers.authorization).toBe(`Bearer ${STAGED}`);
  });

  it('hands the injected probe the checked call; a refusal never reaches it', async () => {
    const { base } = await setup();
    const calls: SecretProbeCall[] = [];
    const probe: SecretProbe = (call) => {
      calls.push(call);
      return Promise.resolve({ outcome: 'completed', status: 204, durationMs: 0, body: null });
    };
    const outcome = await testStagedSecret({ ...base, probe, key: 'crm_key', tenant: 'beta' });
    expect(outcome).toEqual({ outcome: 'completed', status: 204, durationMs: 0, body: null });
    expect(calls).toHaveLength(1);
    const [call] = calls;
    expect(call).toMatchObject({
      operation: 'ping',
      candidate: STAGED,
      data: { input: { hello: 'world' }, tenant: 'beta' },
    });
    expect(call!.service.name).toBe('crm');
    // Only the tested key is answered by the candidate.
    expect(await call!.secrets.resolve('crm_key', 'beta')).toBe(STAGED);
    expect(await call!.secrets.resolve('crm_region', 'beta')).toBe('eu-west');
    await expect(testStagedSecret({ ...base, probe, key: 'mail_key' })).rejects.toBeInstanceOf(
      ValidationError,
    );
    expect(calls).toHaveLength(1);
  });
});
