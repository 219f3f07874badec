import { ConfigurationError } from '../core/errors.ts';

/**
 * Where the worker gets secret values. The env provider is the only one today; the encrypted Redis store and
 * a file-directory provider plug in behind this interface later. Implementations must never put a value in
 * an error message.
 */
export interface SecretResolver {
  /** The value of `name` for `tenant` (tenant-scoped first, then global), or undefined when unknown. */
  resolve(name: string, tenant: string | undefined): string | undefined | Promise<string | undefined>;
}

/** Observes every value handed out, so it can be scrubbed from anything Ferry stores or logs. */
export interface SecretObserver {
  add(value: string): void;
}

/**
 * Resolves every name a service's templates read, once per job; a missing one is a ConfigurationError.
 * Synchronous when the resolver answers synchronously (the env provider, a warm cache): the worker then
 * waits on no promise for its secrets. So a missing secret is a throw on that path and a rejection otherwise.
 */
export function resolveSecrets(
  resolver: SecretResolver,
  names: readonly string[],
  tenant: string | undefined,
  observer?: SecretObserver,
): ReadonlyMap<string, string> | Promise<ReadonlyMap<string, string>> {
  const values = new Map<string, string>();
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    const value = resolver.resolve(name, tenant);
    if (typeof value === 'object') return resolveRest(resolver, names, i, value, tenant, observer, values);
    keep(values, name, value, tenant, observer);
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
  observer: SecretObserver | undefined,
  values: Map<string, string>,
): Promise<ReadonlyMap<string, string>> {
  keep(values, names[from]!, await pending, tenant, observer);
  for (let i = from + 1; i < names.length; i++) {
    const name = names[i]!;
    keep(values, name, await resolver.resolve(name, tenant), tenant, observer);
  }
  return values;
}

function keep(
  values: Map<string, string>,
  name: string,
  value: string | undefined,
  tenant: string | undefined,
  observer: SecretObserver | undefined,
): void {
  if (value === undefined) {
    throw new ConfigurationError(
      tenant === undefined ? `unknown secret "${name}"` : `unknown secret "${name}" (tenant "${tenant}")`,
    );
  }
  observer?.add(value);
  values.set(name, value);
}
