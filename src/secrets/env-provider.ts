import type { SecretResolver } from './resolver.ts';

/**
 * Secrets from the environment, read once at start (a running process's environment does not change):
 *
 * - `FERRY_SECRET_<NAME>`: the global value of secret `<name>`;
 * - `FERRY_SECRET_TENANT_<tenant>__<NAME>`: the value for jobs of tenant `<tenant>`, used before the global one.
 *
 * `<NAME>` is the secret name upper-cased with `-` and `.` as `_` (`crm.api-key` → `CRM_API_KEY`). `<tenant>`
 * keeps its case (tenants `acme` and `ACME` are different tenants) with `-` and `.` as `_`, and the double
 * underscore separates it from the name, so no tenant can read another's value by choosing a name that
 * splits differently (`acme_crm` + `api_key` vs `acme` + `crm_api_key`). A tenant whose form would contain
 * `__` or end in `_` could be confused with another at the separator, so it gets no tenant-scoped env values
 * (only global ones); the encrypted store keeps tenants apart exactly.
 */
export function createEnvSecretResolver(env: NodeJS.ProcessEnv = process.env): SecretResolver {
  const values = new Map<string, string>();
  for (const [key, value] of Object.entries(env)) {
    if (key.startsWith('FERRY_SECRET_') && value !== undefined) values.set(key, value);
  }
  return {
    resolve(name, tenant) {
      const secret = envName(name);
      const scope = tenant === undefined ? undefined : tenantScope(tenant);
      if (scope !== undefined) {
        const scoped = values.get(`FERRY_SECRET_TENANT_${scope}__${secret}`);
        if (scoped !== undefined) return scoped;
      }
      return values.get(`FERRY_SECRET_${secret}`);
    },
  };
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
