import { createSecretResolver, type SecretResolver, type SecretSource } from './resolver.ts';

/**
 * Secrets from the environment, read once at start (a running process's environment does not change):
 *
 * - `FERRY_SECRET_<NAME>`: the global value of secret `<name>`;
 * - `FERRY_SECRET_TENANT_<tenant>__<NAME>`: tenant `<tenant>`'s own value (key `tenant/<tenant>/<name>`).
 *
 * `<NAME>` is the secret name upper-cased with `-` and `.` as `_` (`crm.api-key` → `CRM_API_KEY`). `<tenant>`
 * is the tenant exactly (tenants `acme` and `ACME` are different tenants), and the double underscore
 * separates it from the name, so no tenant can read another's value by choosing a name that splits
 * differently (`acme_crm` + `api_key` vs `acme` + `crm_api_key`). Only a tenant made of letters, digits and
 * single inner underscores has tenant-scoped env values: a `-` or `.` has no place in a portable variable name,
 * and writing it as `_` would hand `acme-corp` the values of `acme_corp` (a tenant chosen by whoever enqueues
 * could read another's); a `__` or a trailing `_` could be confused at the separator. Other tenants get only
 * global env values; the encrypted store and the file source keep every tenant apart exactly.
 */
export function createEnvSecretSource(env: NodeJS.ProcessEnv = process.env): SecretSource {
  const values = new Map<string, string>();
  for (const [key, value] of Object.entries(env)) {
    if (key.startsWith('FERRY_SECRET_') && value !== undefined) values.set(key, value);
  }
  return {
    kind: 'env',
    read(key) {
      const variable = envVariable(key);
      return variable === undefined ? undefined : values.get(variable);
    },
  };
}

/** A resolver over the environment alone (tests, embedding): see createEnvSecretSource. */
export function createEnvSecretResolver(env: NodeJS.ProcessEnv = process.env): SecretResolver {
  return createSecretResolver([createEnvSecretSource(env)]);
}

/** The variable that holds a key: `crm.api-key` → FERRY_SECRET_CRM_API_KEY; tenant keys as above. */
export function envVariable(key: string): string | undefined {
  if (!key.startsWith('tenant/')) return `FERRY_SECRET_${envName(key)}`;
  const [, tenant, name] = key.split('/');
  const scope = tenant === undefined ? undefined : tenantScope(tenant);
  return scope === undefined || name === undefined
    ? undefined
    : `FERRY_SECRET_TENANT_${scope}__${envName(name)}`;
}

/** The env form of a secret name: `crm.api-key` → `CRM_API_KEY`. */
function envName(name: string): string {
  return name.toUpperCase().replace(/[-.]/g, '_');
}

/**
 * The env form of a tenant: the tenant itself (case kept), or undefined when no variable name can hold it
 * apart from every other tenant (a `-` or `.`) or it could be confused at the `__` separator.
 */
function tenantScope(tenant: string): string | undefined {
  return /^[A-Za-z0-9]+(_[A-Za-z0-9]+)*$/.test(tenant) ? tenant : undefined;
}
