/**
 * A completed job's result as BullMQ stores it (issue 20): the job hash's `returnvalue` and, again, the events
 * stream's `completed` entry. Stored compactly, as a versioned positional array with no field names and
 * without `metadata` (a copy of the job data's, which the job hash already holds); readers get the
 * JobResult of DESIGN §4 back from decodeStoredResult, with `metadata` taken from the job's data.
 *
 * Version 2 (0.1.0's object form counts as version 1; docs/queue-layout.md § What Ferry adds to a job):
 *
 *   [2, status, headers, body, durationMs, attempts, bodyTruncated?, next?, routedTo?]
 *
 * `bodyTruncated` is 1 or 0, `next` and `routedTo` are `[service, jobId]` or null; trailing positions that
 * say nothing are left out, so a first-try result has six. A later form gets a new version number, and this
 * decoder returns undefined for it.
 *
 * The return value is anyone's to write (a raw BullMQ worker, anyone with Redis access), so the decoder
 * checks every field, never throws, and does bounded work; it also reads the object form Ferry 0.1.0 wrote
 * (`{ status, headers, body, ... }`), which stays in Redis until the job is removed.
 */
import type { JobRef, JobResult } from './job.ts';
import { followableJobRef } from './job-links.ts';

/** The version of the form encodeStoredResult writes. */
export const STORED_RESULT_VERSION = 2;

/** A job link as stored: `[service, jobId]`. */
export type StoredJobRef = [service: string, jobId: string];

/** A completed job's return value as the worker stores it (version 2). */
export type StoredResult = [
  version: 2,
  status: number,
  headers: Record<string, string>,
  body: unknown,
  durationMs: number,
  attempts: number,
  bodyTruncated?: 0 | 1,
  next?: StoredJobRef | null,
  routedTo?: StoredJobRef | null,
];

/** More headers than the worker ever keeps (core/result-headers.ts allows 15): a bound on the decoder's work. */
const MAX_HEADERS = 64;

/**
 * The stored form of a result. On the worker's hot path, once per completed job: one small array, cheaper for
 * BullMQ's JSON.stringify than the object (no keys, no metadata).
 */
export function encodeStoredResult(result: JobResult): StoredResult {
  const stored: StoredResult = [
    STORED_RESULT_VERSION,
    result.status,
    result.headers,
    result.body,
    result.durationMs,
    result.attempts,
  ];
  const { next, routedTo } = result;
  if (routedTo !== undefined)
    stored.push(result.bodyTruncated === true ? 1 : 0, refOf(next), [routedTo.service, routedTo.jobId]);
  else if (next !== undefined) stored.push(result.bodyTruncated === true ? 1 : 0, [next.service, next.jobId]);
  else if (result.bodyTruncated === true) stored.push(1);
  return stored;
}

function refOf(ref: JobRef | undefined): StoredJobRef | null {
  return ref === undefined ? null : [ref.service, ref.jobId];
}

/**
 * The result of a completed job from its stored return value (parsed: BullMQ's `job.returnvalue`, or the
 * JSON of the hash field or stream entry parsed), in either form; undefined for anything that is not a
 * well-formed Ferry result. `metadata` comes from `data`, the job's data (or what a reader knows of it: an
 * object with its `metadata`), never for a sealed job; without `data`, an 0.1.0 result keeps the copy it holds.
 * A link (`next`, `routedTo`) that is not a followable job is left out, as if absent.
 */
export function decodeStoredResult(value: unknown, data?: unknown): JobResult | undefined {
  try {
    if (Array.isArray(value)) return decodeArray(value, data);
    if (typeof value === 'object' && value !== null)
      return decodeLegacy(value as Record<string, unknown>, data);
  } catch {
    // A getter or proxy in a value handed in by a caller: not a stored result.
  }
  return undefined;
}

function decodeArray(value: readonly unknown[], data: unknown): JobResult | undefined {
  if (value.length < 6 || value.length > 9 || value[0] !== STORED_RESULT_VERSION) return undefined;
  const [, status, headers, body, durationMs, attempts, truncated, next, routedTo] = value;
  if (!isStatus(status) || !isHeaders(headers) || !isDuration(durationMs) || !isCount(attempts))
    return undefined;
  if (truncated !== undefined && truncated !== 0 && truncated !== 1) return undefined;
  if (!isStoredRef(next) || !isStoredRef(routedTo)) return undefined;
  return build(
    status,
    headers,
    body,
    truncated === 1,
    durationMs,
    attempts,
    resultMetadata(data),
    linkOf(next),
    linkOf(routedTo),
  );
}

/** The object form of Ferry 0.1.0: `{ status, headers, body, bodyTruncated?, durationMs, attempts, ... }`. */
function decodeLegacy(value: Record<string, unknown>, data: unknown): JobResult | undefined {
  const { status, headers, body, bodyTruncated, durationMs, attempts, metadata, next, routedTo } = value;
  if (!isStatus(status) || !isHeaders(headers) || !isDuration(durationMs) || !isCount(attempts))
    return undefined;
  if (bodyTruncated !== undefined && typeof bodyTruncated !== 'boolean') return undefined;
  return build(
    status,
    headers,
    body,
    bodyTruncated === true,
    durationMs,
    attempts,
    data === undefined ? (isRecord(metadata) ? metadata : undefined) : resultMetadata(data),
    followable(next),
    followable(routedTo),
  );
}

/**
 * The fields in the order the worker's completed JobResult had them (processor.ts builds it, delivery.ts adds
 * `attempts` and `next`; a route's in fallback-route.ts): a reader's JSON is what it was before the compact form.
 */
function build(
  status: number,
  headers: Record<string, string>,
  body: unknown,
  bodyTruncated: boolean,
  durationMs: number,
  attempts: number,
  metadata: Record<string, unknown> | undefined,
  next: JobRef | undefined,
  routedTo: JobRef | undefined,
): JobResult {
  const result = { status, headers, body, durationMs } as JobResult;
  if (bodyTruncated) result.bodyTruncated = true;
  if (routedTo !== undefined) {
    // A route's result (worker/fallback-route.ts routedResult) had `attempts` before `metadata`.
    result.attempts = attempts;
    if (metadata !== undefined) result.metadata = metadata;
    result.routedTo = routedTo;
    return result;
  }
  if (metadata !== undefined) result.metadata = metadata;
  result.attempts = attempts;
  if (next !== undefined) result.next = next;
  return result;
}

/**
 * The `metadata` a completed job's result shows: its data's, when that is an object, and never a sealed job's
 * (src/worker/processor.ts never copied a sealed job's metadata into its result).
 */
export function resultMetadata(data: unknown): Record<string, unknown> | undefined {
  if (!isRecord(data) || data.sealed !== undefined) return undefined;
  return isRecord(data.metadata) ? data.metadata : undefined;
}

/** An HTTP status, or 0 for a job that made no call (routed to its fallback, a schedule's tick). */
function isStatus(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 999;
}

function isDuration(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isHeaders(value: unknown): value is Record<string, string> {
  if (!isRecord(value)) return false;
  let count = 0;
  for (const name in value) {
    if (++count > MAX_HEADERS || !Object.hasOwn(value, name) || typeof value[name] !== 'string') return false;
  }
  return true;
}

/** A stored link's place: absent, null, or `[service, jobId]` (strings; whether it is followable is linkOf's). */
function isStoredRef(value: unknown): boolean {
  return (
    value === undefined ||
    value === null ||
    (Array.isArray(value) &&
      value.length === 2 &&
      typeof value[0] === 'string' &&
      typeof value[1] === 'string')
  );
}

function linkOf(value: unknown): JobRef | undefined {
  return Array.isArray(value) ? followableJobRef(value[0], value[1]) : undefined;
}

function followable(value: unknown): JobRef | undefined {
  return isRecord(value) ? followableJobRef(value.service, value.jobId) : undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
