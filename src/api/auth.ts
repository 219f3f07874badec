/**
 * API bearer tokens (DESIGN §6): `[{ name, token | sha256, scopes, services?, tenants? }]` from
 * FERRY_API_TOKENS (JSON) or FERRY_API_TOKENS_FILE (YAML). `sha256` (hex of the token) keeps plain tokens out
 * of config. A presented token is hashed and compared with every configured digest in constant time, so
 * neither the comparison nor an early exit tells an attacker how close a guess was.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

import { z } from 'zod';

import { ValidationError } from '../core/errors.ts';
import { issuePath, TENANT_PATTERN } from '../core/job.ts';
import { SERVICE_NAME_PATTERN } from '../core/queue-layout.ts';
import { ForbiddenError, UnauthorizedError } from './errors.ts';

export const SCOPES = ['jobs:write', 'jobs:read', 'admin'] as const;
/** `jobs:write` enqueues and cancels; `jobs:read` reads jobs, events, dead letters, services, breakers, metrics; `admin` is everything. */
export type Scope = (typeof SCOPES)[number];

/** Shortest plain token accepted: 128 bits of a random base64url/hex token. */
export const MIN_TOKEN_LENGTH = 22;

const tokenEntrySchema = z
  .strictObject({
    name: z.string().min(1, 'must not be empty').max(100),
    token: z.string().min(MIN_TOKEN_LENGTH, `must be at least ${MIN_TOKEN_LENGTH} characters`).optional(),
    sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, 'must be the hex SHA-256 of the token (64 hex digits)')
      .optional(),
    scopes: z.array(z.enum(SCOPES)).min(1, 'must list at least one scope'),
    services: z.array(z.string().regex(SERVICE_NAME_PATTERN, 'must be a service name')).min(1).optional(),
    tenants: z.array(z.string().regex(TENANT_PATTERN, 'must be a tenant name')).min(1).optional(),
  })
  .refine((entry) => (entry.token === undefined) !== (entry.sha256 === undefined), {
    message: 'give exactly one of token or sha256',
    path: ['token'],
  });

const tokenListSchema = z.array(tokenEntrySchema).min(1, 'must list at least one token');

/** Who made a request, and what they may touch. */
export interface Principal {
  readonly name: string;
  readonly scopes: ReadonlySet<Scope>;
  /** Services the token is limited to; undefined = all. */
  readonly services: ReadonlySet<string> | undefined;
  /** Tenants the token is limited to; undefined = all (and jobs without a tenant). */
  readonly tenants: ReadonlySet<string> | undefined;
}

interface TokenEntry {
  digest: Buffer;
  principal: Principal;
}

export class TokenSet {
  readonly #entries: readonly TokenEntry[];

  private constructor(entries: readonly TokenEntry[]) {
    this.#entries = entries;
  }

  /** Validates a token list; errors name the entry and field (`FERRY_API_TOKENS[1].scopes[0]: …`). */
  static parse(value: unknown, source: string): TokenSet {
    const parsed = tokenListSchema.safeParse(value);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const field = issuePath(issue.path, source);
      throw new ValidationError(`${field}: ${issue.message}`, { field });
    }
    const names = new Set<string>();
    const entries = parsed.data.map((entry, i) => {
      if (names.has(entry.name)) {
        throw new ValidationError(`${source}[${i}].name: "${entry.name}" is used twice`, {
          field: `${source}[${i}].name`,
        });
      }
      names.add(entry.name);
      const digest =
        entry.sha256 === undefined
          ? sha256(entry.token ?? '')
          : Buffer.from(entry.sha256.toLowerCase(), 'hex');
      return {
        digest,
        principal: Object.freeze({
          name: entry.name,
          scopes: new Set(entry.scopes),
          services: entry.services === undefined ? undefined : new Set(entry.services),
          tenants: entry.tenants === undefined ? undefined : new Set(entry.tenants),
        }),
      };
    });
    return new TokenSet(entries);
  }

  /** The principal of a presented token, or undefined. Looks at every entry whatever matches. */
  authenticate(token: string): Principal | undefined {
    const digest = sha256(token);
    let found: Principal | undefined;
    for (const entry of this.#entries) {
      if (timingSafeEqual(digest, entry.digest) && found === undefined) found = entry.principal;
    }
    return found;
  }

  get size(): number {
    return this.#entries.length;
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/**
 * The token of an `Authorization` header: `Bearer <token>`, or `Basic` with the token as password (browsers
 * cannot send bearer tokens: Bull Board and /docs). `basic: false` takes Bearer only.
 */
export function tokenFromHeader(
  header: string | undefined,
  options: { basic?: boolean } = {},
): string | undefined {
  if (header === undefined) return undefined;
  const space = header.indexOf(' ');
  if (space < 0) return undefined;
  const scheme = header.slice(0, space).toLowerCase();
  const value = header.slice(space + 1).trim();
  if (scheme === 'bearer') return value === '' ? undefined : value;
  if (scheme === 'basic' && options.basic !== false) {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const password = colon < 0 ? '' : decoded.slice(colon + 1);
    return password === '' ? undefined : password;
  }
  return undefined;
}

/** Resolves the caller of a request, or throws UnauthorizedError. `basic: false` takes Bearer only. */
export function authenticate(
  tokens: TokenSet,
  header: string | undefined,
  options: { basic?: boolean } = {},
): Principal {
  const token = tokenFromHeader(header, options);
  if (token === undefined)
    throw new UnauthorizedError('missing bearer token (Authorization: Bearer <token>)');
  const principal = tokens.authenticate(token);
  if (principal === undefined) throw new UnauthorizedError('unknown token');
  return principal;
}

/** What principalOf reads of a request: any Fastify request has it. */
export interface RequestOfPrincipal {
  readonly principal: Principal | undefined;
  readonly method: string;
  readonly routeOptions: { readonly url?: string | undefined };
}

/**
 * The caller of an authenticated route: the principal app.ts's auth hook set. Its absence is Ferry's bug, not
 * the client's (a `public` route asking, or a route mounted outside the hook): an internal error (500), never
 * a request served as nobody. Takes the route's pattern, not its URL, for the message: nothing the client sent.
 */
export function principalOf(request: RequestOfPrincipal): Principal {
  if (request.principal === undefined) {
    throw new Error(
      `${request.method} ${request.routeOptions.url ?? '(no route)'}: no principal; the auth hook did not run for this route`,
    );
  }
  return request.principal;
}

export function hasScope(principal: Principal, scope: Scope): boolean {
  return principal.scopes.has('admin') || principal.scopes.has(scope);
}

export function requireScope(principal: Principal, scope: Scope): void {
  if (!hasScope(principal, scope)) {
    throw new ForbiddenError(`token "${principal.name}" lacks the ${scope} scope`);
  }
}

export function canAccessService(principal: Principal, service: string): boolean {
  return principal.services === undefined || principal.services.has(service);
}

/** A tenant-limited token sees only jobs of its tenants; jobs without a tenant are outside every such limit. */
export function canAccessTenant(principal: Principal, tenant: string | undefined): boolean {
  return principal.tenants === undefined || (tenant !== undefined && principal.tenants.has(tenant));
}

/** 403 unless the token may use the service. */
export function requireService(principal: Principal, service: string): void {
  if (!canAccessService(principal, service)) {
    throw new ForbiddenError(`token "${principal.name}" may not use service "${service}"`);
  }
}

/** For writes, where the request names the service and tenant: a refusal says why (403). */
export function requireAccess(principal: Principal, service: string, tenant: string | undefined): void {
  requireService(principal, service);
  if (!canAccessTenant(principal, tenant)) {
    throw new ForbiddenError(
      tenant === undefined
        ? `token "${principal.name}" is limited to tenants; give a tenant`
        : `token "${principal.name}" may not use tenant "${tenant}"`,
    );
  }
}

/**
 * The configured tokens: FERRY_API_TOKENS (JSON) or else FERRY_API_TOKENS_FILE (YAML), one shape for both.
 * Undefined when neither is set (the caller decides: `ferry api` refuses to start, `ferry dev` makes one).
 */
export async function loadTokenSet(env: {
  FERRY_API_TOKENS?: string | undefined;
  FERRY_API_TOKENS_FILE?: string | undefined;
}): Promise<TokenSet | undefined> {
  if (env.FERRY_API_TOKENS !== undefined && env.FERRY_API_TOKENS.trim() !== '') {
    let value: unknown;
    try {
      value = JSON.parse(env.FERRY_API_TOKENS);
    } catch (error) {
      throw new ValidationError(`FERRY_API_TOKENS: not valid JSON (${(error as Error).message})`, {
        field: 'FERRY_API_TOKENS',
      });
    }
    return TokenSet.parse(value, 'FERRY_API_TOKENS');
  }
  if (env.FERRY_API_TOKENS_FILE !== undefined && env.FERRY_API_TOKENS_FILE !== '') {
    const [{ readFile }, yaml] = await Promise.all([import('node:fs/promises'), import('js-yaml')]);
    const file = env.FERRY_API_TOKENS_FILE;
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      throw new ValidationError(`FERRY_API_TOKENS_FILE: cannot read ${file} (${(error as Error).message})`, {
        field: 'FERRY_API_TOKENS_FILE',
      });
    }
    let value: unknown;
    try {
      value = yaml.load(text);
    } catch (error) {
      throw new ValidationError(`${file}: not valid YAML (${(error as Error).message})`, { field: file });
    }
    return TokenSet.parse(value, file);
  }
  return undefined;
}

/**
 * For reads that span a service's jobs (event streams): throws 403 when the token may not read the service at
 * all, else returns the per-job tenant check, so a tenant-limited token sees only its tenants' jobs.
 */
export function serviceReadAccess(
  principal: Principal,
  service: string,
): (tenant: string | undefined) => boolean {
  requireService(principal, service);
  return (tenant) => canAccessTenant(principal, tenant);
}
