/**
 * From entries of a service queue's BullMQ events stream to public job events (core/job-events.ts).
 *
 * BullMQ's own events give the transitions: `added` → queued, `active` → active, `completed` (its return value
 * is Ferry's JobResult) → completed, `failed` → dead_lettered (Ferry fails a job only once its dead letter is
 * written, and a job BullMQ fails itself after too many stalls gets one from the sweep, under the same id).
 * Ferry's worker adds `ferry:job:retrying` and `ferry:job:held`. Everything else (`waiting`, `delayed`,
 * `stalled`, `duplicated`, ...) is left out: a retry's `delayed` and the `waiting` after it, or a hold's return
 * to `waiting`, would repeat what `retrying` and `held` already said; a stalled run shows as a second `active`.
 */
import type { ErrorRecord } from '../../core/errors.ts';
import { parseFailedReason } from '../../core/failed-reason.ts';
import { type AttemptRecord, completedAttempt, type JobResult, usedAttempts } from '../../core/job.ts';
import {
  HELD_STREAM_EVENT,
  type JobEvent,
  type JobEventBase,
  parseStreamPayload,
  RETRYING_STREAM_EVENT,
} from '../../core/job-events.ts';
import { readResultLinks } from '../../core/job-links.ts';
import { DEAD_LETTERED_FIELD, deadLetterJobId } from '../../core/queue-layout.ts';
import type { RedisClient } from '../../core/redis.ts';
import { storedDeliveryStateSchema } from '../../core/stored-history.ts';
import { decodeStoredResult } from '../../core/stored-result.ts';

/** One stream entry: its id, its `event` field and the other fields (`completed`'s returnvalue maybe parsed). */
export interface StreamEntry {
  id: string;
  event: string;
  fields: Readonly<Record<string, unknown>>;
}

/** Stream events that become public events (or, `removed`, end a job's stream). */
export const MAPPED_STREAM_EVENTS = [
  'added',
  'active',
  'completed',
  'failed',
  'removed',
  RETRYING_STREAM_EVENT,
  HELD_STREAM_EVENT,
] as const;
const mapped: ReadonlySet<string> = new Set(MAPPED_STREAM_EVENTS);

export function isMappedStreamEvent(event: string): boolean {
  return mapped.has(event);
}

/** What every event of a job says about the job itself. */
export interface JobInfo {
  operation?: string;
  tenant?: string;
  metadata?: Record<string, unknown>;
  /** The job's data holds a sealed envelope (a `sensitive` operation's). */
  sealed?: true;
}

/** How a job ended up dead-lettered, read from the job when its `failed` event is seen. */
export interface DeadLetterDetail {
  error: ErrorRecord;
  deadLetterId?: string;
  attempts?: number;
  run?: AttemptRecord;
}

export interface JobRead {
  info: JobInfo;
  deadLetter: DeadLetterDetail | undefined;
}

/** A stream entry as it reaches subscribers: a public event, or the removal of a job (ends its stream). */
export type Dispatch =
  { kind: 'event'; event: JobEvent; hasJobInfo: boolean } | { kind: 'removed'; id: string; jobId: string };

export function jobIdOf(entry: StreamEntry): string | undefined {
  const jobId = entry.fields.jobId;
  // A schedule's tick (`repeat:ferry-schedule-<name>:<ms>`, src/core/schedule-layout.ts) is no job of the
  // service: only the run it adds is, so its events are left out.
  return typeof jobId === 'string' && !jobId.startsWith('repeat:') ? jobId : undefined;
}

/** A flat XRANGE entry (`[id, [field, value, ...]]`) as a StreamEntry. */
export function entryFromXrange([id, flat]: [string, string[]]): StreamEntry {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
  const { event = '', ...rest } = fields;
  return { id, event, fields: rest };
}

/**
 * Reads what the events of one job need, in one round trip: operation, tenant and metadata, and, for a failed
 * job, its final error, attempts and dead-letter id. Undefined when the job is gone.
 */
export async function readJob(
  connection: RedisClient,
  jobKey: string,
  service: string,
  jobId: string,
): Promise<JobRead | undefined> {
  const [name, timestamp, rawData, deadLetterId, stalls, failedReason] = await connection.hmget(
    jobKey,
    'name',
    'timestamp',
    'data',
    DEAD_LETTERED_FIELD,
    'stc',
    'failedReason',
  );
  if (name === null) return undefined;
  let data: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(rawData ?? '{}');
    if (isRecord(parsed)) data = parsed;
  } catch {
    // Job data is anyone's to write: unreadable data leaves tenant and metadata unknown.
  }
  const info: JobInfo = { operation: name };
  if (typeof data.tenant === 'string') info.tenant = data.tenant;
  if (isRecord(data.metadata)) info.metadata = data.metadata;
  // A sealed job's result never shows metadata (stored-result.ts resultMetadata reads this flag).
  if (data.sealed !== undefined) info.sealed = true;
  if (failedReason === null) return { info, deadLetter: undefined };
  const state = storedDeliveryStateSchema.safeParse(data.ferry);
  const createdAt = Number(timestamp);
  const deadLetter: DeadLetterDetail = {
    error:
      (state.success ? state.data.final : undefined) ?? parseFailedReason(failedReason, Number(stalls ?? 0)),
  };
  const id =
    deadLetterId ?? (Number.isFinite(createdAt) ? deadLetterJobId(service, jobId, createdAt) : undefined);
  if (id !== undefined) deadLetter.deadLetterId = id;
  if (state.success) {
    deadLetter.attempts = usedAttempts(state.data.attempts);
    const run = state.data.attempts.at(-1);
    if (run !== undefined) deadLetter.run = run;
  }
  return { info, deadLetter };
}

/**
 * The public event for one stream entry, or undefined for an entry that maps to none (or whose Ferry payload
 * is malformed). `read` is the job as read when the entry was seen, `info` what was known of it before.
 */
export function toDispatch(
  service: string,
  entry: StreamEntry,
  info: JobInfo | undefined,
  read: JobRead | undefined,
): Dispatch | undefined {
  const jobId = jobIdOf(entry);
  if (jobId === undefined) return undefined;
  if (entry.event === 'removed') return { kind: 'removed', id: entry.id, jobId };
  const known = read?.info ?? info;
  const base: JobEventBase = { jobId, service };
  let hasJobInfo = known !== undefined;
  /**
   * `fromPayload`: the worker wrote the tenant into this event itself, so it beats a cached job's (a cache entry
   * can belong to an earlier job under the same id, one that was removed and its id used again).
   */
  const fill = (fallback: { operation?: string; tenant?: string }, fromPayload = false): void => {
    const operation = known?.operation ?? fallback.operation;
    if (operation !== undefined) base.operation = operation;
    const tenant = known === undefined || fromPayload ? fallback.tenant : known.tenant;
    if (tenant !== undefined) base.tenant = tenant;
    if (known?.metadata !== undefined) base.metadata = known.metadata;
  };
  const id = entry.id;
  const event = ((): JobEvent | undefined => {
    switch (entry.event) {
      case 'added':
        fill({ operation: stringField(entry, 'name') });
        return { id, event: 'queued', data: base };
      case 'active':
        fill({});
        return { id, event: 'active', data: base };
      case 'completed': {
        fill({});
        // The job's metadata, as far as it is known, goes back into the result (the stored form has none).
        const result = parseReturnValue(entry.fields.returnvalue, known);
        if (result === undefined) return undefined;
        const run = completedAttempt(result, streamEntryTime(entry.id), 0);
        return {
          id,
          event: 'completed',
          data: { ...base, result, ...(run === undefined ? {} : { run }), ...readResultLinks(result) },
        };
      }
      case 'failed': {
        fill({});
        const detail = read?.deadLetter ?? {
          error: parseFailedReason(stringField(entry, 'failedReason'), 0),
        };
        return { id, event: 'dead_lettered', data: { ...base, ...detail } };
      }
      case RETRYING_STREAM_EVENT: {
        const payload = parseStreamPayload(RETRYING_STREAM_EVENT, stringField(entry, 'data'));
        if (payload === undefined) return undefined;
        // The worker wrote the job's own tenant: good enough to authorize on when the job is gone.
        hasJobInfo = true;
        fill(payload, true);
        const { attempt, at, durationMs, error, delayMs, nextAttemptAt } = payload;
        const run = at === undefined || durationMs === undefined ? {} : { at, durationMs };
        return { id, event: 'retrying', data: { ...base, attempt, ...run, error, delayMs, nextAttemptAt } };
      }
      case HELD_STREAM_EVENT: {
        const payload = parseStreamPayload(HELD_STREAM_EVENT, stringField(entry, 'data'));
        if (payload === undefined) return undefined;
        hasJobInfo = true;
        fill(payload, true);
        const { reason, holdMs, until, error } = payload;
        return { id, event: 'held', data: { ...base, reason, holdMs, until, error } };
      }
      default:
        return undefined;
    }
  })();
  return event === undefined ? undefined : { kind: 'event', event, hasJobInfo };
}

/** The epoch ms of a stream entry id (`<ms>-<seq>`): when Redis wrote it. */
function streamEntryTime(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}

function stringField(entry: StreamEntry, name: string): string | undefined {
  const value = entry.fields[name];
  return typeof value === 'string' ? value : undefined;
}

/** QueueEvents parses `completed`'s return value; XRANGE gives the JSON text. Either stored form, checked. */
function parseReturnValue(value: unknown, info: JobInfo | undefined): JobResult | undefined {
  if (typeof value !== 'string') return decodeStoredResult(value, info);
  try {
    return decodeStoredResult(JSON.parse(value), info);
  } catch {
    return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
