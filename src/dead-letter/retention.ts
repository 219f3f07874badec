/**
 * Dead-letter retention: the oldest dead letters go once they are older than `maxAgeMs` or beyond the newest
 * `maxCount`. The worker pool enforces it on every sweep (FERRY_DLQ_MAX_AGE_MS, FERRY_DLQ_MAX_COUNT), in
 * every worker process: each round reads the oldest entries of the index and deletes them with
 * DeadLetterPurger's crash-safe order, so two processes doing it at once delete the same dead letters at
 * most twice, which is once (a delete of a deleted dead letter changes nothing), and never more than the
 * limits ask for.
 */
import type { RedisClient } from '../core/redis.ts';
import { DAY } from '../core/time.ts';
import { DeadLetterPurger } from './purge.ts';
import { deadLetterKeys } from './search-index.ts';

/** Default FERRY_DLQ_MAX_AGE_MS: 30 days, long enough to notice and replay after a holiday weekend. */
export const DEFAULT_DLQ_MAX_AGE_MS = 30 * DAY;
/**
 * Default FERRY_DLQ_MAX_COUNT. A guard for Redis's memory, not a policy: with `noeviction` (DESIGN §7) a full
 * Redis refuses every write, enqueues included. A million dead letters of a few KB are a few GB, and hold a
 * two-hour outage of a service taking 100 jobs/s (720,000) without dropping any.
 */
export const DEFAULT_DLQ_MAX_COUNT = 1_000_000;
/** Dead letters deleted at once. */
const BATCH = 500;

export interface RetentionOptions {
  /** Delete dead letters written longer ago than this; 0 or undefined: no age limit. */
  maxAgeMs?: number;
  /** Keep at most this many dead letters (the newest); 0 or undefined: no count limit. */
  maxCount?: number;
  /** Epoch ms; default Date.now. */
  now?: () => number;
}

/**
 * Deletes what the limits no longer allow, oldest first. `deleted` counts the deletes this call made; with
 * several enforcers at once, two may each count the same dead letter (a delete of one just deleted succeeds).
 */
export async function enforceRetention(
  deps: { connection: RedisClient; prefix: string },
  options: RetentionOptions,
): Promise<{ deleted: number }> {
  const { connection: client } = deps;
  const keys = deadLetterKeys(deps.prefix);
  const purger = new DeadLetterPurger(deps);
  let deleted = 0;
  const remove = async (ids: readonly string[]): Promise<void> => {
    const results = await Promise.all(ids.map((id) => purger.delete(id)));
    deleted += results.filter(Boolean).length;
  };
  try {
    if (options.maxAgeMs !== undefined && options.maxAgeMs > 0) {
      const before = (options.now ?? Date.now)() - options.maxAgeMs;
      for (;;) {
        const ids = await client.zrangebyscore(keys.byTime, '-inf', `(${before}`, 'LIMIT', 0, BATCH);
        if (ids.length === 0) break;
        await remove(ids);
        // Each delete removes its entry (DeadLetterPurger), so every round starts further on.
      }
    }
    if (options.maxCount !== undefined && options.maxCount > 0) {
      for (;;) {
        const excess = (await client.zcard(keys.byTime)) - options.maxCount;
        if (excess <= 0) break;
        const count = Math.min(excess, BATCH);
        await remove(await client.zrangebyscore(keys.byTime, '-inf', '+inf', 'LIMIT', 0, count));
      }
    }
  } finally {
    await purger.close();
  }
  return { deleted };
}
