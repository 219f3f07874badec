/**
 * How a job's attempt history is stored in Redis: in its job data's `ferry.attempts` (Ferry's bookkeeping)
 * and in its dead letter's `attempts`. The one home of the codec: writers encode a list here, readers decode
 * it here, and everything above (the job API, SSE, the CLI, Bull Board) sees AttemptRecord objects.
 *
 * Stored form, version 2 (docs/queue-layout.md § "The stored attempt history"):
 *
 *   [2, [attempt, outcome, at, durationMs, message, type, status, retryDelayMs], …]
 *
 * - the first element is the format's version, the number 2; each run follows as a positional array;
 * - the last three positions are dropped when absent, from the end; an absent one before a present one is
 *   `null` (a timeout has no status, but is retried: `…, "TimeoutError", null, 712]`);
 * - an empty history is `[]`, as in version 1 (it has no runs to mark, and a 0.1.0 reader reads it too).
 *
 * Version 1 (Ferry 0.1.0) stored a list of AttemptRecord objects, the field names repeated in every run:
 * jobs and dead letters written then stay in Redis (dead letters for weeks), so decoding reads both. A list
 * whose first element is a number is versioned: 2 is read, any other version is malformed; a list of objects
 * is version 1. Never both in one list: a writer decodes what it read and encodes the whole list again.
 *
 * Job data is anyone's to write and `{dead-letter}` is an ordinary queue: decoding never throws and never
 * trusts. A value of the wrong shape is a zod issue with its path (`.attempts[1][5]: …`), which each reader
 * treats as it treated a malformed history before (the worker dead-letters the job as a malformed state).
 * The work is bounded by the value's size: every run is a flat array of at most eight primitives (a longer
 * one is malformed), and nothing is walked deeper.
 */
import { z } from 'zod';

import {
  type AttemptRecord,
  attemptRecordSchema,
  type DeadLetterRecord,
  deadLetterRecordSchema,
  type DeliveryState,
  errorRecordSchema,
  errorTypeSchema,
  type StoredAttempt,
  type StoredDeadLetterRecord,
  type StoredDeliveryState,
  type StoredHistory,
} from './job.ts';

/** The stored history's version marker: the first element of a non-empty history. */
export const STORED_HISTORY_VERSION = 2;

/** A history as stored: `[]`, or the version marker followed by one positional array per run. */
export function encodeHistory(attempts: readonly AttemptRecord[]): StoredHistory {
  if (attempts.length === 0) return [];
  const stored: [typeof STORED_HISTORY_VERSION, ...StoredAttempt[]] = [STORED_HISTORY_VERSION];
  for (const run of attempts) stored.push(encodeAttempt(run));
  return stored;
}

function encodeAttempt(run: AttemptRecord): StoredAttempt {
  const { attempt, outcome, at, durationMs, message, type, status, retryDelayMs } = run;
  const tuple: StoredAttempt = [attempt, outcome, at, durationMs, message];
  // Trailing absent fields dropped; an absent one before a present one is null.
  if (retryDelayMs !== undefined) tuple.push(type ?? null, status ?? null, retryDelayMs);
  else if (status !== undefined) tuple.push(type ?? null, status);
  else if (type !== undefined) tuple.push(type);
  return tuple;
}

/** One run as stored in version 2, decoded into the AttemptRecord the readers know (keys in schema order). */
const storedAttemptSchema = z
  .tuple([
    attemptRecordSchema.shape.attempt,
    attemptRecordSchema.shape.outcome,
    attemptRecordSchema.shape.at,
    attemptRecordSchema.shape.durationMs,
    attemptRecordSchema.shape.message,
    errorTypeSchema.nullable().optional(),
    z.number().int().nullable().optional(),
    z.number().min(0).nullable().optional(),
  ])
  .transform(([attempt, outcome, at, durationMs, message, type, status, retryDelayMs]): AttemptRecord =>
    // The keys in attemptRecordSchema's order, as a version 1 record came out of it: the API's JSON is the same.
    ({
      attempt,
      outcome,
      at,
      durationMs,
      ...(type === undefined || type === null ? {} : { type }),
      ...(status === undefined || status === null ? {} : { status }),
      message,
      ...(retryDelayMs === undefined || retryDelayMs === null ? {} : { retryDelayMs }),
    }),
  );
const version2Schema = z.tuple([z.literal(STORED_HISTORY_VERSION)], storedAttemptSchema);
const version1Schema = z.array(attemptRecordSchema);

/**
 * A stored history (either version) as AttemptRecords; a malformed one fails with the issues of the version
 * it claims, at their place in the stored value.
 */
export const storedHistorySchema: z.ZodType<AttemptRecord[], unknown> = z
  .array(z.unknown())
  .transform((stored, context): AttemptRecord[] => {
    if (stored.length === 0) return [];
    const marker = stored[0];
    if (typeof marker === 'number' && marker !== STORED_HISTORY_VERSION) {
      context.addIssue({
        code: 'custom',
        message: `unknown history version ${marker} (this Ferry reads 2, and lists of objects)`,
        path: [0],
      });
      return z.NEVER;
    }
    // Version 2 (the marker, then the runs) or version 1 (objects only): checked as the version it claims.
    if (typeof marker === 'number') {
      const parsed = version2Schema.safeParse(stored);
      if (parsed.success) return parsed.data.slice(1) as AttemptRecord[];
      reportIssues(parsed.error, context);
    } else {
      const parsed = version1Schema.safeParse(stored);
      if (parsed.success) return parsed.data;
      reportIssues(parsed.error, context);
    }
    return z.NEVER;
  });

/** The issues of the version a history claims, at their place in the stored value. */
function reportIssues(error: z.ZodError, context: z.RefinementCtx): void {
  for (const issue of error.issues)
    context.addIssue({ code: 'custom', message: issue.message, path: issue.path });
}

/** The result of decodeHistory: the runs, or where and why the stored value is not a history. */
export type DecodedHistory =
  { ok: true; attempts: AttemptRecord[] } | { ok: false; path: PropertyKey[]; message: string };

/** A stored history (either version) as AttemptRecords, or its first problem. Never throws. */
export function decodeHistory(stored: unknown): DecodedHistory {
  const parsed = storedHistorySchema.safeParse(stored);
  if (parsed.success) return { ok: true, attempts: parsed.data };
  const issue = parsed.error.issues[0];
  return { ok: false, path: issue?.path ?? [], message: issue?.message ?? 'invalid' };
}

/**
 * Ferry's bookkeeping as read back from a job's data (`ferry`), its history decoded. Only the worker writes
 * it, but job data is anyone's to write (a raw producer can set `ferry` by mistake): it is checked before it
 * is trusted, so a malformed one can neither crash a run nor loop it.
 */
export const storedDeliveryStateSchema: z.ZodType<DeliveryState, unknown> = z.object({
  attempts: storedHistorySchema,
  heldMs: z.number().min(0),
  stallsSeen: z.number().int().min(0),
  final: errorRecordSchema.optional(),
  internalErrors: z.number().int().min(0).optional(),
  routedTo: z.object({ service: z.string().min(1), jobId: z.string().min(1) }).optional(),
});

/** Ferry's bookkeeping as the worker stores it in the job data: the same fields, the history encoded. */
export function toStoredDeliveryState(state: DeliveryState): StoredDeliveryState {
  return { ...state, attempts: encodeHistory(state.attempts) };
}

/**
 * A dead letter's data as read back from `{dead-letter}`, its history decoded. The API's schemas (and so the
 * OpenAPI document) are deadLetterRecordSchema's, which has the decoded AttemptRecords: this one is for
 * reading Redis only.
 */
export const storedDeadLetterRecordSchema: z.ZodType<DeadLetterRecord, unknown> =
  deadLetterRecordSchema.extend({
    attempts: storedHistorySchema,
  }) as unknown as z.ZodType<DeadLetterRecord, unknown>;

/** A dead letter's data as the writer stores it: the same fields, the history encoded. */
export function toStoredDeadLetter(record: DeadLetterRecord): StoredDeadLetterRecord {
  return { ...record, attempts: encodeHistory(record.attempts) };
}

/** A stored dead letter's data (either version) decoded, or undefined when it is not one. Never throws. */
export function decodeDeadLetter(stored: unknown): DeadLetterRecord | undefined {
  const parsed = storedDeadLetterRecordSchema.safeParse(stored);
  return parsed.success ? parsed.data : undefined;
}

/**
 * A dead letter's data with its history decoded, the rest as stored (for views that show the data as it is);
 * data whose `attempts` is not a history, or that is not an object, comes back unchanged. Never throws.
 */
export function withDecodedHistory<T>(data: T): T {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return data;
  const history = decodeHistory((data as { attempts?: unknown }).attempts);
  return history.ok ? { ...data, attempts: history.attempts } : data;
}
