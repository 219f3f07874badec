/**
 * Purge by filter (`ferry dlq purge`, `POST /v1/dead-letters/purge`): deletes every dead letter matching a
 * filter and an age, newest first, over walkDeadLetters (src/dead-letter/walk.ts), each with
 * DeadLetterPurger's crash-safe order (src/dead-letter/purge.ts), with a dry run, progress and a stop signal.
 */
import { ValidationError } from '../core/errors.ts';
import type { RedisClient } from '../core/redis.ts';
import { type DeadLetterFilter, type DeadLetterScope, parseListOptions } from '../dead-letter/list-query.ts';
import { DeadLetterPurger } from '../dead-letter/purge.ts';
import { deadLetterKeys } from '../dead-letter/search-index.ts';
import { countDeadLetters, walkDeadLetters } from '../dead-letter/walk.ts';

export interface PurgeOptions {
  filter?: DeadLetterFilter;
  scope?: DeadLetterScope;
  /** Only dead letters written more than this long ago (`--older-than 7d`). */
  olderThanMs?: number;
  /** Count what would go; delete nothing. Default false. */
  dryRun?: boolean;
  /** Stops between batches of deletes; a re-run deletes the rest. */
  signal?: AbortSignal;
  onProgress?: (progress: PurgeProgress) => void;
  /** Epoch ms; default Date.now. */
  now?: () => number;
}

export interface PurgeProgress {
  /** Known up front when cheap (filters the index answers alone), else a running count. */
  matched: number;
  matchedIsTotal: boolean;
  done: number;
  deleted: number;
  elapsedMs: number;
  etaMs?: number;
}

export interface PurgeReport {
  dryRun: boolean;
  /** Dead letters matched (those a dry run would delete). */
  matched: number;
  deleted: number;
  interrupted: boolean;
  elapsedMs: number;
}

/** Deletes at once per batch, each with DeadLetterPurger's crash-safe order. */
const PURGE_BATCH = 500;

/**
 * Deletes every dead letter matching the filter and written at least `olderThanMs` ago, newest first.
 * Only dead letters written up to the start are deleted (one written meanwhile was not there to be chosen).
 * Throws ValidationError for a bad filter.
 */
export async function purgeDeadLetters(
  deps: { connection: RedisClient; prefix: string },
  options: PurgeOptions = {},
): Promise<PurgeReport> {
  const query = parseListOptions({
    ...options.filter,
    ...(options.scope === undefined ? {} : { scope: options.scope }),
  });
  const { olderThanMs, signal, dryRun = false } = options;
  if (olderThanMs !== undefined && !(Number.isSafeInteger(olderThanMs) && olderThanMs >= 0))
    throw new ValidationError('olderThanMs: must be an integer >= 0', { field: 'olderThanMs' });
  const startedAt = performance.now();
  const now = (options.now ?? Date.now)();
  const untilMs = now - (olderThanMs ?? 0);
  const keys = deadLetterKeys(deps.prefix);
  const total = await countDeadLetters(deps.connection, keys, query, untilMs);
  const purger = dryRun ? undefined : new DeadLetterPurger(deps);
  const report = { dryRun, matched: 0, deleted: 0, interrupted: false };
  try {
    const walk = walkDeadLetters(deps.connection, keys, {
      query,
      untilMs,
      batchSize: PURGE_BATCH,
      withRecords: false,
    });
    for await (const batch of walk) {
      if (signal?.aborted === true) {
        report.interrupted = true;
        break;
      }
      report.matched += batch.length;
      if (purger !== undefined) {
        const deleted = await Promise.all(batch.map(({ id }) => purger.delete(id)));
        report.deleted += deleted.filter(Boolean).length;
      }
      const elapsedMs = performance.now() - startedAt;
      const matched = Math.max(total ?? 0, report.matched);
      options.onProgress?.({
        matched,
        matchedIsTotal: total !== undefined,
        done: report.matched,
        deleted: report.deleted,
        elapsedMs,
        ...(total === undefined
          ? {}
          : { etaMs: Math.round((elapsedMs / report.matched) * (matched - report.matched)) }),
      });
    }
  } finally {
    await purger?.close();
  }
  return { ...report, elapsedMs: Math.round(performance.now() - startedAt) };
}
