/**
 * What a scrape reads outside the process, bounded by bounded-scrape.ts: Redis reachability (PING), each
 * service queue's job counts and paused flag (BullMQ), and the readers the composition root injects (breaker
 * states, dead letters per service).
 */
import { Queue } from 'bullmq';

import { serviceQueueName } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import { createBoundedScrape, type Outcomes } from './bounded-scrape.ts';

/**
 * BullMQ job states reported by `ferry_queue_jobs` (BullMQ's own names). No `paused`: since BullMQ 5 a paused
 * queue keeps its jobs in `waiting` (pause only sets a flag, see bullmq commands/pause-7.lua), and BullMQ 6
 * has no such job state any more; `ferry_queue_paused` says whether the queue is paused.
 */
export const QUEUE_STATES = Object.freeze([
  'waiting',
  'active',
  'delayed',
  'prioritized',
  'completed',
  'failed',
] as const);
export type QueueState = (typeof QUEUE_STATES)[number];

/** Breaker states as Ferry names them everywhere (CLI, API, `breaker:state:changed`). */
export type BreakerStateName = 'closed' | 'open' | 'halfOpen';

export interface QueueReading {
  counts: Readonly<Record<QueueState, number>>;
  paused: boolean;
}

export interface ScrapedValues {
  redis: void;
  queues: ReadonlyMap<string, QueueReading>;
  breakers: ReadonlyMap<string, BreakerStateName>;
  deadLetters: ReadonlyMap<string, number>;
}

export interface ScrapeReadsOptions {
  connection: RedisClient;
  prefix: string;
  services: readonly string[];
  breakerStates: (() => Promise<ReadonlyMap<string, BreakerStateName>>) | undefined;
  deadLetterCounts: (() => Promise<ReadonlyMap<string, number>>) | undefined;
  timeoutMs: number;
}

export interface ScrapeReads {
  /** Every read's outcome, within about `timeoutMs`; never rejects. */
  scrape(): Promise<Outcomes<ScrapedValues>>;
  /** Closes the queue handles (not the connection). */
  close(): Promise<void>;
}

export function createScrapeReads(options: ScrapeReadsOptions): ScrapeReads {
  const { connection, prefix } = options;
  // Handles on the shared connection, for reads only. A connection error is reported by ferry_redis_up (and
  // by the owner of the connection), not by every handle.
  const queues = options.services.map((service) => {
    const queue = new Queue(serviceQueueName(service), { connection, prefix });
    queue.on('error', () => undefined);
    return { service, queue };
  });
  // Nothing is sent while disconnected: a worker connection would hold the command until Redis is back, and
  // every scrape of an outage would add one.
  const whenReady = <T>(read: () => Promise<T>) => {
    return (): Promise<T> =>
      connection.status === 'ready' ? read() : Promise.reject(new Error('Redis is not connected'));
  };
  const noReader = (): Promise<ReadonlyMap<string, never>> => Promise.resolve(new Map<string, never>());
  const scrape = createBoundedScrape<ScrapedValues>(
    {
      redis: whenReady(async () => {
        await connection.ping();
      }),
      queues: whenReady(async () => {
        const rows = await Promise.all(
          queues.map(async ({ service, queue }) => {
            const [counts, paused] = await Promise.all([
              queue.getJobCounts(...QUEUE_STATES) as Promise<QueueReading['counts']>,
              queue.isPaused(),
            ]);
            return [service, { counts, paused }] as const;
          }),
        );
        return new Map(rows);
      }),
      breakers: options.breakerStates ?? noReader,
      deadLetters: options.deadLetterCounts ?? noReader,
    },
    options.timeoutMs,
  );
  return {
    scrape,
    async close() {
      await Promise.allSettled(queues.map(({ queue }) => queue.close()));
    },
  };
}
