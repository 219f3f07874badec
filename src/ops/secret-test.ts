/**
 * `ferry secrets test` and the admin API's test route (issue 4, DESIGN §5: "stage a new version, test it with
 * a live call"): one call to a service as a job of that service would make it, with one secret's value
 * replaced by a candidate (the staged version), before anything uses that value.
 *
 * This operator action checks the request and answers the candidate for its key; the call itself is the
 * worker's HTTP layer (src/worker/secret-probe.ts), injected as `probe` by the composition root (src/cli),
 * since ops never imports the worker. The probe changes nothing: no job, no dead letter, no event, and no
 * breaker (a wrong candidate's 401 must not count toward opening it), and it closes its own connection pool
 * and token cache before it returns, so a token fetched with a candidate client secret is never cached where
 * a worker could use it.
 */
import { ValidationError } from '../core/errors.ts';
import type { ServicesConfig } from '../core/services/types.ts';
import { type Clock, systemClock } from '../core/time.ts';
import { parseSecretKey } from '../secrets/names.ts';
import type { SecretResolver } from '../secrets/resolver.ts';
import type { SecretProbe, SecretTestOutcome, SecretTestRequest } from '../secrets/secret-test.ts';

export interface SecretTestOptions extends SecretTestRequest {
  config: ServicesConfig;
  /** The process's resolver; `key` is answered with `value` instead, every other secret as usual. */
  resolver: SecretResolver;
  /** The live call: the worker's createSecretProbe (src/worker/secret-probe.ts), passed in by cli/. */
  probe: SecretProbe;
  clock?: Clock;
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

  return options.probe({
    service,
    operation: options.operation,
    data: tenant === undefined ? { input: options.input } : { input: options.input, tenant },
    secrets: overrideKey(options.resolver, name, keyTenant, value),
    candidate: value,
    clock: options.clock ?? systemClock,
  });
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
