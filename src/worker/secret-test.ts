/**
 * `ferry secrets test` and the admin API's test route (issue 4, DESIGN §5: "stage a new version, test it with
 * a live call"): one call to a service as a job of that service would make it, with one secret's value
 * replaced by a candidate (the staged version), before anything uses that value.
 *
 * It changes nothing: no job, no dead letter, no event, and no breaker. The call goes around the service's
 * circuit breaker on purpose: a wrong candidate value is expected to fail (that is what the test is for), and
 * its 401 must neither open the breaker nor count toward opening it for the jobs that use the current value.
 * Its own connection pool and token cache are closed before it returns, so a token fetched with a candidate
 * client secret is never cached where a worker could use it.
 */
import { randomUUID } from 'node:crypto';

import { type FerryError, NetworkError, ValidationError } from '../core/errors.ts';
import type { JobData } from '../core/job.ts';
import type { ServicesConfig } from '../core/services/types.ts';
import { type Clock, systemClock } from '../core/time.ts';
import { parseSecretKey } from '../secrets/names.ts';
import type { SecretResolver } from '../secrets/resolver.ts';
import { Scrubber } from '../secrets/scrub.ts';
import type { SecretTestOutcome, SecretTestRequest } from '../secrets/secret-test.ts';
import { egressScopeOf } from './http/egress.ts';
import { TokenCache } from './http/oauth2.ts';
import { PoolSet } from './http/pools.ts';
import { observeProxyEnv, type ProxyEnv, readProxyEnv } from './http/transport.ts';
import { runAttempt } from './processor.ts';

export interface SecretTestOptions extends SecretTestRequest {
  config: ServicesConfig;
  /** The process's resolver; `key` is answered with `value` instead, every other secret as usual. */
  resolver: SecretResolver;
  clock?: Clock;
  /** HTTPS_PROXY / HTTP_PROXY / NO_PROXY; default: read from process.env, as a worker does at start. */
  proxyEnv?: ProxyEnv;
}

export type { SecretTestOutcome } from '../secrets/secret-test.ts';

/**
 * One live call of `service`/`operation` with `key` resolved to `value`. Throws ValidationError before any
 * call when the request cannot test the key: unknown service or operation (`status` 404), a service whose
 * templates do not read the secret's name (422: a service may only use the secrets its config references), a
 * tenant that contradicts the key's, or a tenant for which the key would not be read (its own value shadows a
 * global key, or a service with `tenantSecrets: required` never reads a global one) (422). Whatever the call
 * does (a 401, a timeout) is the outcome, never a throw.
 */
export async function testStagedSecret(options: SecretTestOptions): Promise<SecretTestOutcome> {
  const { config, key, value } = options;
  const { name, tenant: keyTenant } = parseSecretKey(key, undefined, 'key');
  if (keyTenant !== undefined && options.tenant !== undefined && options.tenant !== keyTenant) {
    throw new ValidationError(
      `tenant: "${options.tenant}" contradicts the key ${key} (a job of tenant "${keyTenant}" reads it)`,
      { field: 'tenant', status: 422 },
    );
  }
  const tenant = keyTenant ?? options.tenant;
  if (tenant !== undefined) parseSecretKey(name, tenant);
  const service = config.services.get(options.service);
  if (service === undefined) {
    throw new ValidationError(`service: unknown service "${options.service}"`, {
      field: 'service',
      status: 404,
    });
  }
  if (!service.operations.has(options.operation)) {
    throw new ValidationError(
      `operation: unknown operation "${options.operation}" for service "${service.name}"`,
      {
        field: 'operation',
        status: 404,
      },
    );
  }
  if (!service.secretNames.includes(name)) {
    throw new ValidationError(
      `key: service "${service.name}" does not reference secrets.${name} (a service may only use secrets its config references)`,
      { field: 'key', status: 422 },
    );
  }
  if (service.tenantSecrets === 'required') {
    if (tenant === undefined) {
      throw new ValidationError(`tenant: required by service "${service.name}" (tenantSecrets: required)`, {
        field: 'tenant',
        status: 422,
      });
    }
    if (keyTenant === undefined) {
      throw new ValidationError(
        `key: service "${service.name}" has tenantSecrets: required and never reads the global ${key}; test tenant/${tenant}/${name}`,
        { field: 'key', status: 422 },
      );
    }
  } else if (keyTenant === undefined && tenant !== undefined) {
    // A tenant's own value beats the global one: the call would not read the candidate at all.
    if ((await options.resolver.resolve(name, tenant, true)) !== undefined) {
      throw new ValidationError(
        `tenant: tenant "${tenant}" has its own value of ${name} (tenant/${tenant}/${name}), so a job of it does not read ${key}`,
        { field: 'tenant', status: 422 },
      );
    }
  }

  const clock = options.clock ?? systemClock;
  const scrubber = new Scrubber();
  scrubber.add(value);
  // The test call takes the worker's route (issue 17): the process's proxy variables, the service's proxy: and tls:.
  const proxyEnv = options.proxyEnv ?? readProxyEnv(process.env);
  observeProxyEnv(proxyEnv, scrubber);
  const pools = new PoolSet({ connections: 1, egress: egressScopeOf(service), proxyEnv, scrubber });
  const tokens = new TokenCache({ observer: scrubber, clock, proxyEnv });
  const data: JobData = { input: options.input };
  if (tenant !== undefined) data.tenant = tenant;
  try {
    const outcome = await runAttempt(
      { id: `secret-test-${randomUUID()}`, name: options.operation, data },
      {
        service,
        breaker: undefined,
        secrets: overrideKey(options.resolver, name, keyTenant, value),
        scrubber,
        pools,
        tokens,
        clock,
      },
      undefined,
    );
    switch (outcome.kind) {
      case 'completed': {
        const { result } = outcome;
        return {
          outcome: 'completed',
          status: result.status,
          durationMs: outcome.durationMs,
          body: result.body,
          ...(result.bodyTruncated === true ? { bodyTruncated: true } : {}),
        };
      }
      case 'failed':
      case 'held':
        // Held: an open breaker (none here). A 429/503 with Retry-After is `failed`: a job would wait, a test
        // reports it.
        return failed(outcome.error, outcome.durationMs, scrubber);
      case 'interrupted':
        return failed(new NetworkError('the call was interrupted'), outcome.durationMs, scrubber);
      case 'deferred':
        // A secret test is given no tenant leases (tenantConcurrency): never deferred.
        throw new Error('a secret test was deferred');
      default:
        return assertNever(outcome);
    }
  } finally {
    await Promise.all([pools.close(), tokens.close()]);
  }
}

/**
 * `resolver` with one key answered by `value`. A global key is read for a job without a tenant, and for a
 * tenant's job when the tenant has no value of its own (checked before the call); a tenant key only for that
 * tenant's jobs.
 */
function overrideKey(
  resolver: SecretResolver,
  name: string,
  keyTenant: string | undefined,
  value: string,
): SecretResolver {
  return {
    resolve(asked, tenant, tenantOnly = false) {
      if (asked !== name) return resolver.resolve(asked, tenant, tenantOnly);
      if (keyTenant !== undefined) {
        return tenant === keyTenant ? value : resolver.resolve(asked, tenant, tenantOnly);
      }
      if (tenant === undefined) return tenantOnly ? undefined : value;
      const scoped = resolver.resolve(asked, tenant, true);
      const pick = (found: string | undefined): string | undefined =>
        found ?? (tenantOnly ? undefined : value);
      return typeof scoped === 'object' ? scoped.then(pick) : pick(scoped);
    },
  };
}

function failed(error: FerryError, durationMs: number, scrubber: Scrubber): SecretTestOutcome {
  return {
    outcome: 'failed',
    error: {
      type: error.type,
      message: scrubber.scrub(error.message),
      ...(error.status === undefined ? {} : { status: error.status }),
    },
    durationMs,
  };
}

function assertNever(value: never): never {
  throw new Error(`unexpected attempt outcome ${JSON.stringify(value)}`);
}
