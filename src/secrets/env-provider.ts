import type { SecretResolver } from './resolver.ts';

/**
 * Secrets from the environment: `FERRY_SECRET_<NAME>` for global values and
 * `FERRY_SECRET_TENANT_<TENANT>_<NAME>` for tenant-scoped ones (names upper-cased, `-` and `.` → `_`).
 * Read once at start: the environment of a running process does not change.
 */
export function createEnvSecretResolver(env: NodeJS.ProcessEnv = process.env): SecretResolver {
  const values = new Map<string, string>();
  for (const [key, value] of Object.entries(env)) {
    if (key.startsWith('FERRY_SECRET_') && value !== undefined) values.set(key, value);
  }
  return {
    resolve(name, tenant) {
      if (tenant !== undefined) {
        const scoped = values.get(`FERRY_SECRET_TENANT_${envName(tenant)}_${envName(name)}`);
        if (scoped !== undefined) return scoped;
      }
      return values.get(`FERRY_SECRET_${envName(name)}`);
    },
  };
}

function envName(name: string): string {
  return name.toUpperCase().replace(/[-.]/g, '_');
}
