/**
 * Per-service status for `ferry status` and the API: queue counts, whether and why the queue is held, the
 * last hour's completed and dead-lettered jobs (counted in the completed and failed sets), dead letters,
 * breaker, rate limit, paused, and the workers connected.
 */
import type { Queue } from 'bullmq';

import type { RedisClient } from '../core/redis.ts';
import { HOUR } from '../core/time.ts';
import { DeadLetterReader } from '../dead-letter/reader.ts';
import { type BreakerView, listBreakers } from './breaker-control.ts';
import { type OpsDeps, requireService, withQueues } from './deps.ts';

export interface ServiceStatus {
  service: string;
  /** Jobs ready to run (wait + prioritized; while the queue is paused, they wait for resume). */
  waiting: number;
  active: number;
  /** Jobs waiting for a retry's backoff or a delayed enqueue. */
  delayed: number;
  /**
   * Whether workers are holding the whole queue, until when (epoch ms), and why: `breakerOpen` (its breaker
   * is open) or `rateLimited` (a 429/503 Retry-After, or the service's rate limit reached). null: not held.
   */
  held: { reason: 'breakerOpen' | 'rateLimited'; untilMs: number } | null;
  /**
   * Jobs completed and failed (dead-lettered) in the last hour, as far as retention keeps them; null when no
   * finished job of this service is kept (none yet, or all removed: not the same as 0).
   */
  lastHour: { completed: number; failed: number } | null;
  /** Dead letters of this service now. */
  deadLetters: number;
  breaker: Omit<BreakerView, 'service' | 'heldForMs'>;
  /** The services file's rate limit across all workers; null: none. */
  rateLimit: { max: number; perMs: number } | null;
  paused: boolean;
  /** Worker connections on this queue (BullMQ's CLIENT LIST names; 0 when none is running). */
  workers: number;
}

/** The status of every service (or of `services`), in the services file's order. */
export async function readStatus(deps: OpsDeps, services?: readonly string[]): Promise<ServiceStatus[]> {
  const names = services ?? [...deps.config.services.keys()];
  for (const name of names) requireService(deps.config, name);
  const now = (deps.now ?? Date.now)();
  const reader = new DeadLetterReader({ connection: deps.connection, prefix: deps.prefix });
  const [breakers, deadLetters] = await Promise.all([listBreakers(deps, names), reader.countByService()]);
  return withQueues(deps, names, (queues) =>
    Promise.all(
      names.map(async (service, i) => {
        const queue = queues.get(service)!;
        const [counts, paused, lastHour, workers] = await Promise.all([
          queue.getJobCounts('wait', 'prioritized', 'active', 'delayed'),
          queue.isPaused(),
          readLastHour(deps.connection, queue, now),
          queue.getWorkersCount(),
        ]);
        const { service: _, heldForMs, ...breaker } = breakers[i]!;
        const config = deps.config.services.get(service)!;
        return {
          service,
          waiting: (counts.wait ?? 0) + (counts.prioritized ?? 0),
          active: counts.active ?? 0,
          delayed: counts.delayed ?? 0,
          held:
            heldForMs <= 0
              ? null
              : // A breaker hold lasts until the open period's end (workers hold the queue in slices of it,
                // src/worker/delivery.ts); anything else is a rate-limit hold.
                breaker.state !== 'closed' && breaker.openUntil !== undefined && breaker.openUntil >= now
                ? { reason: 'breakerOpen', untilMs: breaker.openUntil }
                : { reason: 'rateLimited', untilMs: now + heldForMs },
          lastHour,
          deadLetters: deadLetters.get(service) ?? 0,
          breaker,
          rateLimit: config.rateLimit === undefined ? null : { ...config.rateLimit },
          paused,
          workers,
        } satisfies ServiceStatus;
      }),
    ),
  );
}

/**
 * Jobs that finished in the last hour, counted in the queue's completed and failed sets, which BullMQ scores by
 * the time a job finished: one ZCOUNT each, where BullMQ's per-minute metrics cost two commands on every job
 * (issue 20). Retention bounds it: jobs removed before the hour is over (a `keepCompletedMs` under an hour) are
 * not counted. null when neither set holds a job (nothing finished within the retention, or never).
 */
async function readLastHour(
  client: RedisClient,
  queue: Queue,
  now: number,
): Promise<ServiceStatus['lastHour']> {
  const completedKey = queue.toKey('completed');
  const failedKey = queue.toKey('failed');
  const since = now - HOUR;
  const [completed, failed] = await Promise.all([
    client.zcount(completedKey, since, '+inf'),
    client.zcount(failedKey, since, '+inf'),
  ]);
  if (completed === 0 && failed === 0 && (await client.exists(completedKey, failedKey)) === 0) return null;
  return { completed, failed };
}
