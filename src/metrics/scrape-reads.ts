/**
 * What a scrape reads outside the process, bounded by bounded-scrape.ts: Redis reachability (PING), each
 * service queue's job counts and paused flag (BullMQ), and the readers the composition root injects (breaker
 * states, dead letters per service).
 */
import { Queue } from 'bullmq';

import { serviceQueueName, tenantLeaseKeys } from '../core/queue-layout.ts';
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
  /** Per service with `tenantConcurrency`: its tenants' live leases (calls in flight), tenant → count. */
  tenants: ReadonlyMap<string, ReadonlyMap<string, number>>;
}

export interface ScrapeReadsOptions {
  connection: RedisClient;
  prefix: string;
  services: readonly string[];
  breakerStates: (() => Promise<ReadonlyMap<string, BreakerStateName>>) | undefined;
  deadLetterCounts: (() => Promise<ReadonlyMap<string, number>>) | undefined;
  /** Services that set `tenantConcurrency`: their tenant leases are read. */
  tenantServices?: readonly string[];
  timeoutMs: number;
}

/**
 * KEYS[1] a service's leases ZSET (src/worker/tenant-leases.ts). Its live leases (not expired by Redis's clock;
 * an expired one belongs to a lost worker and is reclaimed by the next take) counted per tenant, as a flat
 * `tenant, count, …` list. Bounded: a lease is a call in flight, so there are at most as many as all the
 * workers' concurrency (plus those of workers lost within one lease lifetime).
 */
const LIVE_LEASES_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local counts, order = {}, {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  local cut = string.find(member, '\\0', 1, true)
  if cut then
    local tenant = string.sub(member, 1, cut - 1)
    if counts[tenant] == nil then
      counts[tenant] = 0
      order[#order + 1] = tenant
    end
    counts[tenant] = counts[tenant] + 1
  end
end
local flat = {}
for _, tenant in ipairs(order) do
  flat[#flat + 1] = tenant
  flat[#flat + 1] = counts[tenant]
end
return flat
`;

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
  const tenantServices = options.tenantServices ?? [];
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
      tenants:
        tenantServices.length === 0
          ? noReader
          : whenReady(async () => {
              const rows = await Promise.all(
                tenantServices.map(async (service) => {
                  const flat = (await connection.eval(
                    LIVE_LEASES_SCRIPT,
                    1,
                    tenantLeaseKeys(prefix, service).leases,
                  )) as (string | number)[];
                  const counts = new Map<string, number>();
                  for (let i = 0; i + 1 < flat.length; i += 2)
                    counts.set(String(flat[i]), Number(flat[i + 1]));
                  return [service, counts] as const;
                }),
              );
              return new Map(rows);
            }),
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
