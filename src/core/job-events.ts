/**
 * Job events (DESIGN §6, issue 3): the public Server-Sent Events shapes, and the two events Ferry's worker adds
 * to each service queue's BullMQ events stream (`<prefix>:{<service>}:events`). Not the worker pool's in-process
 * delivery events (core/delivery-events.ts), which feed metrics and never leave the process.
 *
 * Most of a job's life is already in that stream, written atomically by BullMQ's own scripts: `added`,
 * `active`, `completed` (with the return value), `failed` (with the failed reason). What BullMQ cannot know is
 * why a job went back to wait: a retry (error, next attempt time) or a whole-service hold (breaker open, rate
 * limited, until when). The worker publishes those two, on its failure paths only, as entries of the same
 * stream: `event` = `ferry:job:retrying` | `ferry:job:held`, `jobId`, and `data` = the JSON payload below. One
 * stream keeps one order, so a reader never sees a job's next `active` before the `retrying` that led to it,
 * and any BullMQ `QueueEvents` (any language) can read them.
 */
import { z } from 'zod';

import type { ErrorRecord } from './errors.ts';
import { type AttemptRecord, errorRecordSchema, type JobRef, type JobResult } from './job.ts';

/** Stream `event` field of the worker's retry event. */
export const RETRYING_STREAM_EVENT = 'ferry:job:retrying';
/** Stream `event` field of the worker's hold event. */
export const HELD_STREAM_EVENT = 'ferry:job:held';

/** `data` of a `ferry:job:retrying` stream entry. `error.message` is scrubbed of secret values. */
export interface RetryingStreamPayload {
  operation: string;
  tenant?: string;
  /** The attempt that failed (1-based). */
  attempt: number;
  /** Start of the failed run (epoch ms) and how long it took; absent from entries older workers wrote. */
  at?: number;
  durationMs?: number;
  error: ErrorRecord;
  delayMs: number;
  /** Epoch ms at which the next attempt becomes due. */
  nextAttemptAt: number;
}

export type HoldReason = 'circuitOpen' | 'rateLimited';

/** `data` of a `ferry:job:held` stream entry. `error.message` is scrubbed of secret values. */
export interface HeldStreamPayload {
  operation: string;
  tenant?: string;
  reason: HoldReason;
  holdMs: number;
  /** Epoch ms until which no worker takes the service's jobs. */
  until: number;
  error: ErrorRecord;
}

export interface StreamEventPayloads {
  [RETRYING_STREAM_EVENT]: RetryingStreamPayload;
  [HELD_STREAM_EVENT]: HeldStreamPayload;
}
export type FerryStreamEvent = keyof StreamEventPayloads;

const base = { operation: z.string(), tenant: z.string().optional() };
const payloadSchemas: { [E in FerryStreamEvent]: z.ZodType<StreamEventPayloads[E]> } = {
  [RETRYING_STREAM_EVENT]: z.object({
    ...base,
    attempt: z.number().int().min(1),
    at: z.number().optional(),
    durationMs: z.number().min(0).optional(),
    error: errorRecordSchema,
    delayMs: z.number().min(0),
    nextAttemptAt: z.number(),
  }),
  [HELD_STREAM_EVENT]: z.object({
    ...base,
    reason: z.enum(['circuitOpen', 'rateLimited']),
    holdMs: z.number().min(0),
    until: z.number(),
    error: errorRecordSchema,
  }),
};

export function isFerryStreamEvent(name: string): name is FerryStreamEvent {
  return name === RETRYING_STREAM_EVENT || name === HELD_STREAM_EVENT;
}

/**
 * The payload of a Ferry stream entry, checked: the stream is anyone's to write, and what it holds is shown to
 * API clients. Undefined when it is not JSON of the expected shape.
 */
export function parseStreamPayload<E extends FerryStreamEvent>(
  event: E,
  data: string | undefined,
): StreamEventPayloads[E] | undefined {
  if (data === undefined) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(data);
  } catch {
    return undefined;
  }
  const parsed = payloadSchemas[event].safeParse(raw);
  return parsed.success ? parsed.data : undefined;
}

/** A Redis stream entry id, `<ms>-<seq>`. */
export const STREAM_ID_PATTERN = /^\d{1,20}-\d{1,20}$/;

/** Orders two stream entry ids (`<ms>-<seq>`) as Redis does: negative, zero or positive. */
export function compareStreamIds(a: string, b: string): number {
  const dashA = a.indexOf('-');
  const dashB = b.indexOf('-');
  return (
    compareDigits(a.slice(0, dashA), b.slice(0, dashB)) ||
    compareDigits(a.slice(dashA + 1), b.slice(dashB + 1))
  );
}

/** Compares two unsigned decimal strings without leading zeros (up to 64-bit, beyond Number's precision). */
function compareDigits(a: string, b: string): number {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Public SSE event names (DESIGN §6; its `parked` is `held`, as issue 3 names it). */
export type JobEventName = 'queued' | 'active' | 'retrying' | 'held' | 'completed' | 'dead_lettered';

export const TERMINAL_JOB_EVENTS: ReadonlySet<JobEventName> = new Set(['completed', 'dead_lettered']);

/** Fields every public job event's data carries. */
export interface JobEventBase {
  jobId: string;
  service: string;
  /** The job's operation; absent only when the job was removed before it could be read. */
  operation?: string;
  tenant?: string;
  /** The job's metadata, echoed (DESIGN §3). */
  metadata?: Record<string, unknown>;
}

export interface JobEventDataMap {
  queued: JobEventBase;
  active: JobEventBase;
  /** The worker's payload: the failed run (`at`, `durationMs` as the history records it) and the next one. */
  retrying: JobEventBase & Omit<RetryingStreamPayload, 'operation' | 'tenant'>;
  held: JobEventBase & { reason: HoldReason; holdMs: number; until: number; error: ErrorRecord };
  completed: JobEventBase & {
    result: JobResult;
    /**
     * The run that completed the job, as the job API's history lists it (core/job.ts completedAttempt); `at`
     * is from the time of the stream entry. Absent for a job routed to its fallback (no call was made).
     */
    run?: AttemptRecord;
    /** The result's `then` step, checked (core/job-links.ts): the job a client follows next. */
    next?: JobRef;
    /** The result's route to the fallback service, checked: the job a client follows next. */
    routedTo?: JobRef;
  };
  dead_lettered: JobEventBase & {
    error: ErrorRecord;
    /** Id of the job's dead letter in `{dead-letter}`. */
    deadLetterId?: string;
    /** Ferry attempts used. */
    attempts?: number;
    /** The last run, as the job's history records it (absent when the job never ran, e.g. a bad job). */
    run?: AttemptRecord;
  };
}

/** One public job event: `id` is its stream entry id, the SSE `id:` a client resumes from. */
export type JobEvent = {
  [E in JobEventName]: { id: string; event: E; data: JobEventDataMap[E] };
}[JobEventName];
