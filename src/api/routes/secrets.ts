/**
 * Secrets (admin; DESIGN §5, issue 4): the operations of `ferry secrets` over HTTP. List and show (names,
 * versions, dates, which services use them, where they are defined: values never), set, stage, test the
 * staged version with one live call, promote, roll back, delete, reencrypt.
 *
 * `:key` is one path segment, URL-encoded: `crm_key`, or a tenant's own value `tenant%2Facme%2Fcrm_key`
 * (find-my-way decodes `%2F` inside a parameter; test/api/secrets.test.ts holds it to that).
 *
 * A value arrives only in a request body and leaves in nothing: not in an answer, an error message or a log
 * line. Request logging is off (app.ts); the error handler logs an error's type, message and stack, never a
 * body; Fastify's JSON parser refuses a malformed body without quoting it (V8's own message would); zod's
 * messages name a field and the rule, never the value. Every value handled is also given to the process's
 * Scrubber, which scrubs it from any log line that might still hold it.
 */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';

import { isFerryError, ValidationError } from '../../core/errors.ts';
import { TENANT_PATTERN } from '../../core/job.ts';
import type { ServicesConfig } from '../../core/services/types.ts';
import { describeSecrets } from '../../secrets/catalog.ts';
import { parseSecretKey, type SecretKey } from '../../secrets/names.ts';
import type { SecretChange, SecretStore } from '../../secrets/redis-store.ts';
import {
  canAccessTenant,
  type Principal,
  principalOf,
  type RequestOfPrincipal,
  requireService,
} from '../auth.ts';
import type { ApiContext, ApiSecrets } from '../context.ts';
import { ConflictError, ForbiddenError, NotFoundError } from '../errors.ts';
import { errorResponses, jsonSchema, serviceName, type ZodTypeProvider } from '../schemas.ts';

/** Longest value accepted: a PEM private key or a service-account JSON fits many times over. */
export const MAX_SECRET_VALUE_CHARS = 64 * 1024;

const NO_MASTER_KEY =
  'FERRY_SECRETS_KEY (or FERRY_SECRETS_KEY_FILE) is not set on this API process: values cannot be sealed or ' +
  'opened (list, promote, rollback and delete work without it)';

const keyParams = z.strictObject({
  key: z
    .string()
    .min(1)
    .max(300)
    .describe('`name` or `tenant/<tenant>/<name>`, URL-encoded as one segment: tenant%2Facme%2Fcrm_key'),
});

const valueBody = z.strictObject({
  value: z
    .string()
    .min(1, 'must not be empty')
    .max(MAX_SECRET_VALUE_CHARS, `must be at most ${MAX_SECRET_VALUE_CHARS} characters`)
    .describe('the value; never shown again'),
});

const testBody = z.strictObject({
  service: serviceName,
  operation: z.string().min(1).max(128),
  input: z.unknown().optional().describe("the job input the operation's templates read"),
  tenant: z
    .string()
    .regex(TENANT_PATTERN, 'must be a tenant name')
    .optional()
    .describe("the job's tenant; a tenant key implies its own"),
});

const deleteQuery = z.strictObject({
  version: z.coerce
    .number()
    .int()
    .min(1)
    .optional()
    .describe('delete only this version (staged or earlier; not the current one)'),
});

const versionInfoSchema = z.object({
  version: z.number().int(),
  createdAt: z.number().describe('epoch ms'),
  keyId: z.string().describe('id of the master key that sealed it'),
});

const secretDescriptionSchema = z.object({
  key: z.string(),
  name: z.string(),
  tenant: z.string().optional(),
  usedBy: z.array(z.string()).describe('services whose templates reference the name'),
  definedIn: z
    .array(z.enum(['store', 'file', 'env']))
    .describe('sources holding this exact key, in lookup order; empty: referenced but defined nowhere'),
  current: versionInfoSchema.optional(),
  staged: versionInfoSchema.optional(),
  previous: z.array(versionInfoSchema).describe('earlier current versions, newest first'),
  createdAt: z.number().optional(),
  updatedAt: z.number().optional(),
});

const putResultSchema = z.object({
  key: z.string(),
  version: z.number().int(),
  state: z.enum(['current', 'staged']),
});

const changeResultSchema = z.object({ key: z.string(), version: z.number().int() });

const testOutcomeSchema = z.discriminatedUnion('outcome', [
  z.object({
    outcome: z.literal('completed'),
    status: z.number().int(),
    durationMs: z.number(),
    body: z.unknown().describe('scrubbed of every secret value and token the call used'),
    bodyTruncated: z.boolean().optional(),
  }),
  z.object({
    outcome: z.literal('failed'),
    error: z.object({ type: z.string(), message: z.string(), status: z.number().int().optional() }),
    durationMs: z.number(),
  }),
]);

const reencryptReportSchema = z.object({
  resealed: z.number().int().describe('versions sealed again with the current master key'),
  current: z.number().int().describe('versions already under it'),
  failed: z
    .array(z.object({ key: z.string(), version: z.number().int(), reason: z.string() }))
    .describe('versions no configured master key opens; left as they were'),
});

/** `key` checked, every refusal naming the field `key`. */
function parseKey(key: string): SecretKey {
  try {
    return parseSecretKey(key, undefined, 'key');
  } catch (error) {
    if (isFerryError(error) && error.type === 'ValidationError' && error.field !== 'key') {
      throw new ValidationError(`key: ${error.message}`, { field: 'key' });
    }
    throw error;
  }
}

/** A tenant-limited token touches only `tenant/<one of its tenants>/…` keys. */
function requireKeyAccess(principal: Principal, key: SecretKey): void {
  if (canAccessTenant(principal, key.tenant)) return;
  throw new ForbiddenError(
    key.tenant === undefined
      ? `token "${principal.name}" is limited to tenants: it may only touch tenant/<tenant>/<name> keys of its tenants`
      : `token "${principal.name}" may not use tenant "${key.tenant}"`,
  );
}

/**
 * A tenant-limited token may not write a secret that a service's baseUrl (or proxy:, tls.ca, tls.servername)
 * reads: its tenant's value would choose where that tenant's calls go, and with them the other credentials the
 * calls carry (global values, under tenantSecrets: fallback). Only an unrestricted admin decides where calls go.
 */
function requireWhereCallsGo(principal: Principal, name: string, config: ServicesConfig): void {
  if (principal.tenants === undefined) return;
  for (const service of config.services.values()) {
    // `proxy:` and `tls.ca`/`tls.servername` too (issue 17): a tenant's own proxy (not under the egress
    // policy) would carry its calls, and with its own CA read them, the global credentials included.
    const part = service.baseUrl.secretNames.includes(name)
      ? 'baseUrl'
      : service.proxy?.kind === 'url' && service.proxy.url.secretNames.includes(name)
        ? 'proxy'
        : service.tls?.ca?.secretNames.includes(name) === true
          ? 'tls.ca'
          : service.tls?.servername?.secretNames.includes(name) === true
            ? 'tls.servername'
            : undefined;
    if (part !== undefined) {
      throw new ForbiddenError(
        `token "${principal.name}" is limited to tenants: secret "${name}" is read by service "${service.name}"'s ${part}, which only an unrestricted admin may set`,
      );
    }
  }
}

/** A tenant-limited token may not act on every key at once (reencrypt). */
function requireUnlimitedTenants(principal: Principal): void {
  if (principal.tenants !== undefined) {
    throw new ForbiddenError(`token "${principal.name}" is limited to tenants; this acts on every secret`);
  }
}

/** The store, or 409 naming FERRY_SECRETS_KEY when this process cannot seal or open values. */
function storeWithKey(secrets: ApiSecrets): SecretStore {
  if (secrets.store === undefined || !secrets.store.hasKeyring) throw new ConflictError(NO_MASTER_KEY);
  return secrets.store;
}

function anyStore(secrets: ApiSecrets): SecretStore {
  if (secrets.store === undefined) throw new ConflictError(NO_MASTER_KEY);
  return secrets.store;
}

/** The version a change made, or the refusal as 404 (no such secret or version) or 409 (its state). */
function changed(key: string, change: SecretChange): number {
  if (change.ok) return change.version;
  const message = `secret "${key}": ${change.message}`;
  switch (change.reason) {
    case 'not_found':
    case 'no_such_version':
      throw new NotFoundError(message);
    case 'nothing_staged':
    case 'no_previous_version':
    case 'version_is_current':
      throw new ConflictError(message);
    default:
      return assertNever(change.reason);
  }
}

function assertNever(value: never): never {
  throw new Error(`unexpected refusal ${String(value)}`);
}

export function secretRoutes(fastify: FastifyInstance, ctx: ApiContext): void {
  const { secrets } = ctx;
  if (secrets === undefined) return;
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const base = { scope: 'admin', redis: true } as const;
  /** The `:key` parameter checked, and the caller, who may touch it. */
  const keyOf = (
    request: RequestOfPrincipal & { readonly params: { readonly key: string } },
  ): SecretKey & { key: string; principal: Principal } => {
    const principal = principalOf(request);
    const { key } = request.params;
    const parsed = parseKey(key);
    requireKeyAccess(principal, parsed);
    return { ...parsed, key, principal };
  };
  const observe = (value: string): void => secrets.scrubber?.add(value);
  const describe = async (): Promise<z.infer<typeof secretDescriptionSchema>[]> => {
    const all = await describeSecrets({ store: secrets.store, sources: secrets.sources, config: ctx.config });
    return all.map(({ tenant, ...rest }) => ({ ...rest, ...(tenant === undefined ? {} : { tenant }) }));
  };

  app.get(
    '/v1/secrets',
    {
      config: base,
      schema: {
        summary:
          'Every stored secret and every name a service references: versions, dates, users (no values)',
        tags: ['secrets'],
        response: {
          200: jsonSchema(z.object({ secrets: z.array(secretDescriptionSchema) }), { validate: false }),
          ...errorResponses(401, 403, 503),
        },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const all = await describe();
      return { secrets: all.filter((secret) => canAccessTenant(principal, secret.tenant)) };
    },
  );

  app.get(
    '/v1/secrets/:key',
    {
      config: base,
      schema: {
        summary: 'One secret: versions, dates, users, where it is defined (no value)',
        tags: ['secrets'],
        params: jsonSchema(keyParams),
        response: {
          200: jsonSchema(secretDescriptionSchema, { validate: false }),
          ...errorResponses(400, 401, 403, 404, 503),
        },
      },
    },
    async (request) => {
      const { key } = keyOf(request);
      const found = (await describe()).find((secret) => secret.key === key);
      if (found === undefined) throw new NotFoundError(`secret "${key}" is neither stored nor referenced`);
      return found;
    },
  );

  for (const state of ['current', 'staged'] as const) {
    const isSet = state === 'current';
    app.route({
      method: isSet ? 'PUT' : 'POST',
      url: isSet ? '/v1/secrets/:key' : '/v1/secrets/:key/stage',
      config: base,
      schema: {
        summary: isSet
          ? 'Set a new version; it becomes current at once'
          : 'Stage a new version: nothing uses it until it is promoted (replaces a version staged before)',
        tags: ['secrets'],
        params: jsonSchema(keyParams),
        body: jsonSchema(valueBody),
        response: {
          201: jsonSchema(putResultSchema, { validate: false }),
          ...errorResponses(400, 401, 403, 409, 503),
        },
      },
      handler: async (request, reply) => {
        const { key, name, principal } = keyOf(request);
        requireWhereCallsGo(principal, name, ctx.config);
        const { value } = request.body;
        observe(value);
        const store = storeWithKey(secrets);
        const version = isSet ? await store.set(key, value) : await store.stage(key, value);
        request.log.info(
          { key, version, tokenName: principal.name },
          `secret ${state === 'current' ? 'set' : 'staged'}`,
        );
        return reply.code(201).send({ key, version, state });
      },
    });
  }

  app.post(
    '/v1/secrets/:key/test',
    {
      config: base,
      schema: {
        summary: 'One live call of a service operation with the staged version; changes nothing',
        description:
          'The call is made as a job of the service would make it, with this key answered by the staged value ' +
          'and every other secret as usual; it goes around the circuit breaker and creates no job. A refusal ' +
          'by the service (401, timeout) is an outcome (200), not an error.',
        tags: ['secrets'],
        params: jsonSchema(keyParams),
        body: jsonSchema(testBody),
        response: {
          200: jsonSchema(testOutcomeSchema, { validate: false }),
          ...errorResponses(400, 401, 403, 409, 422, 503),
        },
      },
    },
    async (request) => {
      const { key, principal } = keyOf(request);
      const body = request.body;
      requireService(principal, body.service);
      if (body.tenant !== undefined && !canAccessTenant(principal, body.tenant)) {
        throw new ForbiddenError(`token "${principal.name}" may not use tenant "${body.tenant}"`);
      }
      const store = storeWithKey(secrets);
      const value = await store.readStaged(key);
      if (value === undefined) {
        throw new ConflictError(`secret "${key}": no staged version to test (stage one first)`);
      }
      observe(value);
      try {
        return await secrets.testStaged({
          key,
          value,
          service: body.service,
          operation: body.operation,
          ...(body.input === undefined ? {} : { input: body.input }),
          ...(body.tenant === undefined ? {} : { tenant: body.tenant }),
        });
      } catch (error) {
        // An unknown service or operation is a 422, as for an enqueue (docs/api.md), not a missing route.
        if (isFerryError(error) && error.type === 'ValidationError' && error.status === 404) {
          throw new ValidationError(error.message, {
            status: 422,
            ...(error.field === undefined ? {} : { field: error.field }),
          });
        }
        throw error;
      }
    },
  );

  for (const action of ['promote', 'rollback'] as const) {
    app.post(
      `/v1/secrets/:key/${action}`,
      {
        config: base,
        schema: {
          summary:
            action === 'promote'
              ? 'The staged version becomes current, for every worker within FERRY_SECRETS_REFRESH_MS'
              : 'The previous version becomes current again (the one rolled back from is deleted)',
          tags: ['secrets'],
          params: jsonSchema(keyParams),
          response: {
            200: jsonSchema(changeResultSchema, { validate: false }),
            ...errorResponses(400, 401, 403, 404, 409, 503),
          },
        },
      },
      async (request) => {
        const { key, principal } = keyOf(request);
        const store = anyStore(secrets);
        const version = changed(
          key,
          action === 'promote' ? await store.promote(key) : await store.rollback(key),
        );
        request.log.info({ key, version, tokenName: principal.name }, `secret ${action}d`);
        return { key, version };
      },
    );
  }

  app.delete(
    '/v1/secrets/:key',
    {
      config: base,
      schema: {
        summary: 'Delete a secret, or with ?version= one version that is not current',
        tags: ['secrets'],
        params: jsonSchema(keyParams),
        querystring: jsonSchema(deleteQuery),
        response: {
          204: { type: 'null', description: 'deleted' },
          ...errorResponses(400, 401, 403, 404, 409, 503),
        },
      },
    },
    async (request, reply) => {
      const { key, principal } = keyOf(request);
      const { version } = request.query;
      changed(key, await anyStore(secrets).delete(key, version));
      request.log.info(
        { key, ...(version === undefined ? {} : { version }), tokenName: principal.name },
        'secret deleted',
      );
      return reply.code(204).send();
    },
  );

  app.post(
    '/v1/secrets/reencrypt',
    {
      config: base,
      schema: {
        summary: 'Seal every version again under the current (first) master key of FERRY_SECRETS_KEY',
        tags: ['secrets'],
        response: {
          200: jsonSchema(reencryptReportSchema, { validate: false }),
          ...errorResponses(401, 403, 409, 503),
        },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      requireUnlimitedTenants(principal);
      const report = await storeWithKey(secrets).reencrypt();
      request.log.info(
        { resealed: report.resealed, failed: report.failed.length, tokenName: principal.name },
        'secrets reencrypted',
      );
      return report;
    },
  );
}
