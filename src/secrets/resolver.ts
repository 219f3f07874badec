import { ConfigurationError } from '../core/errors.ts';
import { secretKey } from './names.ts';

/**
 * Where the worker gets secret values. Implementations must never put a value in an error message.
 */
export interface SecretResolver {
  /**
   * The value of `name` for a job of `tenant`: the tenant's own value (`tenant/<tenant>/<name>`) first, then,
   * unless `tenantOnly`, the global one. Undefined when unknown.
   */
  resolve(
    name: string,
    tenant: string | undefined,
    tenantOnly?: boolean,
  ): string | undefined | Promise<string | undefined>;
}

/**
 * One place values are kept: env, a directory of files, the encrypted store. `read` takes a key exactly
 * (`crm_key`, `tenant/acme/crm_key`) and answers undefined when the source has no value under it.
 */
export interface SecretSource {
  readonly kind: 'env' | 'file' | 'store';
  read(key: string): string | undefined | Promise<string | undefined>;
}

/**
 * Resolves through `sources` in the order given. A tenant's own value in any source beats a global value in
 * every source (the more specific scope wins before the source order is asked); within a scope, the first
 * source that has the key answers. Synchronous while every source asked answers synchronously.
 */
export function createSecretResolver(sources: readonly SecretSource[]): SecretResolver {
  const readFrom = (key: string, from: number): string | undefined | Promise<string | undefined> => {
    for (let i = from; i < sources.length; i++) {
      const value = sources[i]!.read(key);
      if (typeof value === 'object') {
        return value.then((found) => (found !== undefined ? found : readFrom(key, i + 1)));
      }
      if (value !== undefined) return value;
    }
    return undefined;
  };
  return {
    resolve(name, tenant, tenantOnly = false) {
      if (tenant === undefined) return tenantOnly ? undefined : readFrom(name, 0);
      const scoped = readFrom(secretKey(name, tenant), 0);
      if (tenantOnly) return scoped;
      if (typeof scoped === 'object') return scoped.then((found) => found ?? readFrom(name, 0));
      return scoped ?? readFrom(name, 0);
    },
  };
}

/** Observes every value handed out, so it can be scrubbed from anything Ferry stores or logs. */
export interface SecretObserver {
  /** `expiresAtMs`: the value may be forgotten after then (an OAuth2 token); default never. */
  add(value: string, expiresAtMs?: number): void;
}

/** How a service's secrets are looked up for a tenant's job (the services file's `tenantSecrets`). */
export type TenantSecretsMode = 'fallback' | 'required';

/**
 * Resolves every name a service's templates read, once per job; a missing one is a ConfigurationError.
 * Synchronous when the resolver answers synchronously (the env provider, a warm cache): the worker then
 * waits on no promise for its secrets. So a missing secret is a throw on that path and a rejection otherwise.
 * With mode `required`, only the tenant's own values count.
 */
export function resolveSecrets(
  resolver: SecretResolver,
  names: readonly string[],
  tenant: string | undefined,
  observer?: SecretObserver,
  mode: TenantSecretsMode = 'fallback',
): ReadonlyMap<string, string> | Promise<ReadonlyMap<string, string>> {
  const values = new Map<string, string>();
  const tenantOnly = mode === 'required';
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    const value = resolver.resolve(name, tenant, tenantOnly);
    if (typeof value === 'object') {
      return resolveRest(resolver, names, i, value, tenant, tenantOnly, observer, values);
    }
    keep(values, name, value, tenant, tenantOnly, observer);
  }
  return values;
}

/** The rest of resolveSecrets from the first name whose value is a promise. */
async function resolveRest(
  resolver: SecretResolver,
  names: readonly string[],
  from: number,
  pending: Promise<string | undefined>,
  tenant: string | undefined,
  tenantOnly: boolean,
  observer: SecretObserver | undefined,
  values: Map<string, string>,
): Promise<ReadonlyMap<string, string>> {
  keep(values, names[from]!, await pending, tenant, tenantOnly, observer);
  for (let i = from + 1; i < names.length; i++) {
    const name = names[i]!;
    keep(values, name, await resolver.resolve(name, tenant, tenantOnly), tenant, tenantOnly, observer);
  }
  return values;
}

function keep(
  values: Map<string, string>,
  name: string,
  value: string | undefined,
  tenant: string | undefined,
  tenantOnly: boolean,
  observer: SecretObserver | undefined,
): void {
  if (value === undefined) {
    throw new ConfigurationError(
      tenant === undefined
        ? `unknown secret "${name}"`
        : tenantOnly
          ? `unknown secret "${name}" (tenant "${tenant}"; the service has tenantSecrets: required, so ` +
            `${secretKey(name, tenant)} must exist and the global value is not used)`
          : `unknown secret "${name}" (tenant "${tenant}")`,
    );
  }
  observer?.add(value);
  values.set(name, value);
}
