/**
 * Bodies, answers and progress events of `POST /v1/dead-letters/replay` and `/purge` (dead-letter-bulk.ts):
 * the list's filters (GET /v1/dead-letters), taken from a JSON body.
 */
import { z } from 'zod';

import { errorTypeSchema } from '../../core/job.ts';
import type { ReplayProgress } from '../../ops/dead-letter-replay.ts';
import { serviceName } from '../schemas.ts';

const MAX_IDS = 10_000;

/** Epoch ms, or an ISO 8601 time (as the list's query takes). */
const instant = z
  .union([
    z.number().int().min(0),
    z.string().transform((text, ctx) => {
      const ms = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
      if (!Number.isSafeInteger(ms) || ms < 0) {
        ctx.addIssue({ code: 'custom', message: 'must be epoch milliseconds or an ISO 8601 time' });
        return z.NEVER;
      }
      return ms;
    }),
  ])
  .describe('epoch ms or ISO 8601; inclusive');

export const filterFields = {
  service: serviceName.optional(),
  operation: z.string().min(1).max(128).optional(),
  tenant: z.string().min(1).max(128).optional(),
  errorType: errorTypeSchema.optional().describe("the final error's type"),
  status: z.number().int().min(100).max(599).optional().describe("the final error's HTTP status"),
  since: instant.optional().describe('dead-lettered at or after'),
  until: instant.optional().describe('dead-lettered at or before'),
};

export const replayBodySchema = z.strictObject({
  ...filterFields,
  ids: z
    .array(z.string().min(1).max(400))
    .min(1)
    .max(MAX_IDS)
    .optional()
    .describe('only these dead letters (and of them those matching the filters); unknown ids are skipped'),
  dryRun: z.boolean().optional().describe('report what would go; change nothing (default false)'),
  ratePerSecond: z
    .number()
    .positive()
    .max(100_000)
    .optional()
    .describe('jobs added per second at most (default: as fast as Redis allows)'),
  onlyWhenClosed: z
    .boolean()
    .optional()
    .describe('skip dead letters of services whose breaker is open when they come up (default false)'),
  limit: z.number().int().min(1).optional().describe('take at most this many dead letters'),
});

export const purgeBodySchema = z.strictObject({
  ...filterFields,
  olderThanMs: z
    .number()
    .int()
    .min(0)
    .optional()
    .describe('only dead letters written at least this long ago (7 days: 604800000)'),
  dryRun: z.boolean().optional().describe('count what would go; delete nothing (default false)'),
});

const replayItemSchema = z.object({
  id: z.string(),
  service: z.string(),
  operation: z.string(),
  outcome: z.enum(['replayed', 'skipped', 'failed', 'would-replay']),
  jobId: z.string().optional().describe('the job it was (or would be) added as: rp-<dead letter id>'),
  reason: z
    .string()
    .optional()
    .describe(
      'why skipped (not-found, not-matching, unknown-service, breaker-open, unreadable), or why it failed',
    ),
});

export const replayReportSchema = z.object({
  dryRun: z.boolean(),
  matched: z.number().int(),
  replayed: z.number().int().describe('replayed, or would be in a dry run'),
  skipped: z.number().int(),
  failed: z.number().int(),
  interrupted: z
    .boolean()
    .describe('stopped (client gone, server closing) before every matched one was taken'),
  elapsedMs: z.number(),
  items: z.array(replayItemSchema).describe('the first 1000 taken, in order'),
  itemsOmitted: z.number().int(),
});

export const purgeReportSchema = z.object({
  dryRun: z.boolean(),
  matched: z.number().int().describe('dead letters matched (those a dry run would delete)'),
  deleted: z.number().int(),
  interrupted: z.boolean(),
  elapsedMs: z.number(),
});

/** A `progress` event's data. */
export interface ReplayProgressEvent {
  done: number;
  /** The number that will be taken, when known up front (ids, or only service and time filters); else null. */
  total: number | null;
  /** Matched so far (the total, when known). */
  matched: number;
  replayed: number;
  skipped: number;
  failed: number;
  /** Dead letters taken per second so far. */
  rate: number;
  /** Expected time left, when the total is known; else null. */
  etaMs: number | null;
  elapsedMs: number;
}

export function progressEvent(progress: ReplayProgress): ReplayProgressEvent {
  const seconds = progress.elapsedMs / 1000;
  return {
    done: progress.done,
    total: progress.matchedIsTotal ? progress.matched : null,
    matched: progress.matched,
    replayed: progress.replayed,
    skipped: progress.skipped,
    failed: progress.failed,
    rate: seconds > 0 ? Math.round((progress.done / seconds) * 10) / 10 : 0,
    etaMs: progress.etaMs ?? null,
    elapsedMs: Math.round(progress.elapsedMs),
  };
}
