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

/** Resolves every name a service's templates read, once per job; a missing one is a ConfigurationError. */
export async function resolveSecrets(
  resolver: SecretResolver,
  names: readonly string[],
  tenant: string | undefined,
  observer?: SecretObserver,
): Promise<ReadonlyMap<string, string>> {
  const values = new Map<string, string>();
  for (const name of names) {
    const value = await resolver.resolve(name, tenant);
    if (value === undefined) {
      throw new ConfigurationError(
        tenant === undefined ? `unknown secret "${name}"` : `unknown secret "${name}" (tenant "${tenant}")`,
      );
    }
    observer?.add(value);
    values.set(name, value);
  }
  return values;
}
