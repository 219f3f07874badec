/**
 * Secret names (DESIGN §5). A name is `[a-z0-9][a-z0-9_.-]*` (at most 128 characters); a tenant's own value of
 * `name` is stored under the key `tenant/<tenant>/<name>`. Tenants match the job schema's pattern, which has no
 * `/`, so a key splits one way only.
 */
import { ValidationError } from '../core/errors.ts';
import { TENANT_PATTERN } from '../core/job.ts';

export const SECRET_NAME_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,127}$/;
export const SECRET_NAME_RULE = '[a-z0-9][a-z0-9_.-]* (at most 128 characters)';

/** A secret's name and, for a tenant's own value, its tenant. */
export interface SecretKey {
  readonly name: string;
  readonly tenant: string | undefined;
}

/** The key a value is stored under: `name`, or `tenant/<tenant>/<name>`. */
export function secretKey(name: string, tenant: string | undefined): string {
  return tenant === undefined ? name : `tenant/${tenant}/${name}`;
}

/**
 * Parses a key as a person or a script writes it (`crm_key`, `tenant/acme/crm_key`); with `tenant` given
 * (`--tenant acme`) the key must be a plain name. Throws ValidationError naming `field`.
 */
export function parseSecretKey(key: string, tenant?: string, field = 'name'): SecretKey {
  let name = key;
  let scope = tenant;
  if (key.startsWith('tenant/')) {
    if (tenant !== undefined) {
      throw new ValidationError(`${field}: give either a tenant/<tenant>/<name> key or a tenant, not both`, {
        field,
      });
    }
    const parts = key.split('/');
    if (parts.length !== 3) {
      throw new ValidationError(`${field}: a tenant's secret is tenant/<tenant>/<name>, got "${key}"`, {
        field,
      });
    }
    scope = parts[1];
    name = parts[2]!;
  }
  if (!SECRET_NAME_PATTERN.test(name)) {
    throw new ValidationError(`${field}: secret name "${name}" must match ${SECRET_NAME_RULE}`, { field });
  }
  if (scope !== undefined && !TENANT_PATTERN.test(scope)) {
    throw new ValidationError(`tenant: "${scope}" must match [A-Za-z0-9][A-Za-z0-9_.-]{0,127}`, {
      field: 'tenant',
    });
  }
  return { name, tenant: scope };
}
