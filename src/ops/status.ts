/**
 * Per-service status for `ferry status` and the API: queue counts, whether and why the queue is held, the
 * last hour's completed and dead-lettered jobs (BullMQ metrics, recorded by workers), dead letters, breaker,
 * rate limit, paused, and the workers connected.
 */
import type { Queue } from 'bullmq';

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
   * Jobs completed and failed (dead-lettered) in about the last hour, from the metrics workers record
   * (per minute); null when no worker has recorded any yet for this service (not the same as 0).
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

const MINUTE = 60_000;

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
          readLastHour(queue, now),
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
 * Sums the last 60 minutes of BullMQ's per-minute metrics. BullMQ pushes a minute's count only when the next
 * job finishes in a later minute (collectMetrics.lua), so the newest point covers the minutes just before
 * `prevTS`, and what finished since is `count - prevCount`: points older than an hour from now are left out.
 */
async function readLastHour(queue: Queue, now: number): Promise<ServiceStatus['lastHour']> {
  const [completed, failed] = await Promise.all([
    queue.getMetrics('completed', 0, 59),
    queue.getMetrics('failed', 0, 59),
  ]);
  if (completed.meta.prevTS === 0 && failed.meta.prevTS === 0) return null;
  return { completed: sumLastHour(completed, now), failed: sumLastHour(failed, now) };
}

function sumLastHour(
  metrics: { meta: { count: number; prevTS: number; prevCount: number }; data: number[] },
  now: number,
): number {
  const { count, prevTS, prevCount } = metrics.meta;
  if (prevTS === 0) return 0;
  const since = Math.floor(now / MINUTE) - Math.floor(prevTS / MINUTE);
  if (since >= 60) return 0;
  let total = count - prevCount;
  for (const [i, points] of metrics.data.entries()) {
    if (since + 1 + i >= 60) break;
    total += points;
  }
  return total;
}
