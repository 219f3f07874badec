import { createSecretResolver, type SecretResolver, type SecretSource } from './resolver.ts';

/**
 * Secrets from the environment, read once at start (a running process's environment does not change):
 *
 * - `FERRY_SECRET_<NAME>`: the global value of secret `<name>`;
 * - `FERRY_SECRET_TENANT_<tenant>__<NAME>`: tenant `<tenant>`'s own value (key `tenant/<tenant>/<name>`).
 *
 * `<NAME>` is the secret name upper-cased with `-` and `.` as `_` (`crm.api-key` → `CRM_API_KEY`). `<tenant>`
 * keeps its case (tenants `acme` and `ACME` are different tenants) with `-` and `.` as `_`, and the double
 * underscore separates it from the name, so no tenant can read another's value by choosing a name that
 * splits differently (`acme_crm` + `api_key` vs `acme` + `crm_api_key`). A tenant whose form would contain
 * `__` or end in `_` could be confused with another at the separator, so it gets no tenant-scoped env values
 * (only global ones); the encrypted store keeps tenants apart exactly.
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

/** The env form of a tenant (case kept), or undefined when it could be confused at the `__` separator. */
function tenantScope(tenant: string): string | undefined {
  const scope = tenant.replace(/[-.]/g, '_');
  return scope.includes('__') || scope.endsWith('_') ? undefined : scope;
}
