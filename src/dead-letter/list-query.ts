/**
 * A dead-letter list's query: filters, scope, page size and cursor; how they are checked (at the edge: the
 * API and the CLI pass what their users typed) and how a dead letter is matched against them.
 */
import { z } from 'zod';

import { type ErrorType, ValidationError } from '../core/errors.ts';
import { type DeadLetterRecord, errorTypeSchema, issuePath } from '../core/job.ts';
import { SERVICE_NAME_PATTERN } from '../core/queue-layout.ts';
import type { DeadLetterFacets } from './search-index.ts';

export const DEFAULT_LIST_LIMIT = 50;
export const MAX_LIST_LIMIT = 500;

/** Every filter is optional; those given must all match. Times are epoch ms, both ends inclusive. */
export interface DeadLetterFilter {
  service?: string;
  operation?: string;
  tenant?: string;
  /** The final error's type. */
  errorType?: ErrorType;
  /** The final error's HTTP status (absent for errors without a response). */
  status?: number;
  /** Dead-lettered at or after. */
  since?: number;
  /** Dead-lettered at or before. */
  until?: number;
}

/** What a caller may see at all (a token limited to services or tenants); a dead letter without a tenant is outside a tenant scope. */
export interface DeadLetterScope {
  services?: readonly string[];
  tenants?: readonly string[];
}

export interface DeadLetterListOptions extends DeadLetterFilter {
  /** `nextCursor` of the previous page, with the same filters. */
  cursor?: string;
  /** Page size, 1 to 500; default 50. */
  limit?: number;
  /** Include each input (default false; show always includes it). */
  includeInput?: boolean;
  scope?: DeadLetterScope;
}

const listOptionsSchema = z.strictObject({
  service: z.string().regex(SERVICE_NAME_PATTERN, 'must match [a-z0-9][a-z0-9_-]{0,63}').optional(),
  operation: z.string().min(1, 'must not be empty').optional(),
  tenant: z.string().min(1, 'must not be empty').optional(),
  errorType: errorTypeSchema.optional(),
  status: z.number().int().min(100).max(599).optional(),
  since: z.number().int().min(0).optional(),
  until: z.number().int().min(0).optional(),
  cursor: z.string().min(1, 'must not be empty').optional(),
  limit: z.number().int().min(1).max(MAX_LIST_LIMIT).optional(),
  includeInput: z.boolean().optional(),
  scope: z
    .strictObject({ services: z.array(z.string()).optional(), tenants: z.array(z.string()).optional() })
    .optional(),
});

/** A position in the index: the last entry a page consumed. */
export interface Position {
  score: number;
  id: string;
}

/** Opaque to callers: base64url of `[score, id]`. */
export function encodeCursor(position: Position): string {
  return Buffer.from(JSON.stringify([position.score, position.id])).toString('base64url');
}

export function decodeCursor(cursor: string): Position {
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(value) && value.length === 2) {
      const [score, id] = value as unknown[];
      if (Number.isSafeInteger(score) && typeof id === 'string' && id !== '')
        return { score: score as number, id };
    }
  } catch {
    // Not JSON: reported below.
  }
  throw new ValidationError('cursor: not a cursor returned by a dead-letter list', { field: 'cursor' });
}

export type ListQuery = z.infer<typeof listOptionsSchema>;

export function parseListOptions(options: DeadLetterListOptions): ListQuery {
  const parsed = listOptionsSchema.safeParse(options);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = issue === undefined ? '' : issuePath(issue.path);
  const message =
    issue?.code === 'unrecognized_keys'
      ? `unknown field(s): ${issue.keys.join(', ')}`
      : (issue?.message ?? 'invalid');
  throw new ValidationError(`${field || 'query'}: ${message}`, { field: field || 'query' });
}

/**
 * The service whose index a list walks (undefined: `by-time`, all services), or null when the query and the
 * scope leave nothing to see.
 */
export function indexedService(query: ListQuery): string | undefined | null {
  const scoped = query.scope?.services;
  const tenants = query.scope?.tenants;
  if (scoped?.length === 0 || tenants?.length === 0) return null;
  if (query.tenant !== undefined && tenants !== undefined && !tenants.includes(query.tenant)) return null;
  if (query.service !== undefined) {
    return scoped === undefined || scoped.includes(query.service) ? query.service : null;
  }
  return scoped?.length === 1 ? scoped[0] : undefined;
}

/** Whether entries must be checked against facets and records (the index alone answers service and time). */
export function needsRecordFilter(query: ListQuery, service: string | undefined): boolean {
  return (
    query.operation !== undefined ||
    query.tenant !== undefined ||
    query.errorType !== undefined ||
    query.status !== undefined ||
    query.scope?.tenants !== undefined ||
    (query.scope?.services !== undefined && service === undefined)
  );
}

export function matchesFacets(
  facets: DeadLetterFacets,
  query: ListQuery,
  service: string | undefined,
): boolean {
  return matches(facets, facets.errorType, facets.status, query, service);
}

export function matchesRecord(
  record: DeadLetterRecord,
  query: ListQuery,
  service: string | undefined,
): boolean {
  return matches(record, record.finalError.type, record.finalError.status, query, service);
}

function matches(
  fields: { service: string; operation: string; tenant?: string },
  errorType: ErrorType,
  status: number | undefined,
  query: ListQuery,
  service: string | undefined,
): boolean {
  const { scope } = query;
  return (
    (service === undefined || fields.service === service) &&
    (scope?.services === undefined || scope.services.includes(fields.service)) &&
    (scope?.tenants === undefined ||
      (fields.tenant !== undefined && scope.tenants.includes(fields.tenant))) &&
    (query.operation === undefined || fields.operation === query.operation) &&
    (query.tenant === undefined || fields.tenant === query.tenant) &&
    (query.errorType === undefined || errorType === query.errorType) &&
    (query.status === undefined || status === query.status)
  );
}
