/**
 * A whole-service hold (DESIGN §8) without a per-job cost while nothing holds the service.
 *
 * BullMQ's workers check the queue's limiter key only when the queue has a rate-limit maximum (`max` in its
 * meta hash): that is what makes a hold (`queue.rateLimit(ms)`: the limiter key set to MAX_SAFE_INTEGER for
 * `ms`) stop the workers of every process. But with a maximum, every job taken also pays the limiter's
 * bookkeeping inside BullMQ's scripts (HEXISTS of the job's `defa`, INCR and GET of the limiter key): three of
 * the five Redis commands a first-try job cost over a bare BullMQ worker (bench/README.md, Redis cost bench).
 *
 * So a service without its own `rateLimit` carries the maximum only while it may be held: `holdQueue` sets the
 * maximum (when the queue has none) and the hold in one script, so no process can read the hold without the
 * maximum; `releaseUnusedMaximum` removes Ferry's unlimited maximum again when no hold runs, in one script too,
 * so it never removes the maximum of a hold that is running. Services with a `rateLimit` keep theirs at all times.
 */
import type { Queue } from 'bullmq';

import type { RedisClient } from '../core/redis.ts';
import { SECOND } from '../core/time.ts';

/**
 * The maximum a service without `rateLimit` gets while it may be held: far above any real rate, so it never
 * limits anything itself. Also what tells Ferry's unlimited maximum from a real one (never removed).
 */
export const UNLIMITED_RATE = Object.freeze({ max: 1_000_000_000, perMs: SECOND });

/** What `queue.rateLimit` stores in the limiter key: the mark of a hold (a counter never gets near it). */
const HOLD_MARK = String(Number.MAX_SAFE_INTEGER);

/**
 * KEYS[1] the queue's meta hash, KEYS[2] its limiter key. ARGV[1] hold ms, ARGV[2] max, ARGV[3] duration,
 * ARGV[4] the hold mark. The same hash tag: one Cluster slot.
 */
const HOLD_SCRIPT = `
if redis.call('HEXISTS', KEYS[1], 'max') == 0 then
  redis.call('HSET', KEYS[1], 'max', ARGV[2], 'duration', ARGV[3])
end
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[1])
return 1
`;

/**
 * KEYS as HOLD_SCRIPT; ARGV[1] Ferry's unlimited max, ARGV[2] the hold mark. Removes the maximum only when it is
 * Ferry's unlimited one and no hold runs, with the limiter's counter (meaningless under that maximum, and read
 * as a hold by BullMQ's getRateLimitTtl once the maximum is gone).
 */
const RELEASE_SCRIPT = `
if redis.call('HGET', KEYS[1], 'max') ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[2]) == ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'max', 'duration')
redis.call('DEL', KEYS[2])
return 1
`;

type HoldableQueue = Pick<Queue, 'toKey'>;

/** Holds the whole queue for `ms` in every process: `queue.rateLimit(ms)`, with a maximum if it had none. */
export async function holdQueue(connection: RedisClient, queue: HoldableQueue, ms: number): Promise<void> {
  await connection.eval(
    HOLD_SCRIPT,
    2,
    queue.toKey('meta'),
    queue.toKey('limiter'),
    String(Math.max(1, Math.round(ms))),
    String(UNLIMITED_RATE.max),
    String(UNLIMITED_RATE.perMs),
    HOLD_MARK,
  );
}

/** Removes Ferry's unlimited maximum from a queue that no hold needs it for; true when it was removed. */
export async function releaseUnusedMaximum(connection: RedisClient, queue: HoldableQueue): Promise<boolean> {
  const removed = await connection.eval(
    RELEASE_SCRIPT,
    2,
    queue.toKey('meta'),
    queue.toKey('limiter'),
    String(UNLIMITED_RATE.max),
    HOLD_MARK,
  );
  return removed === 1;
}
