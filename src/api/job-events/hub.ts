/**
 * The job event hub of the API process: one BullMQ QueueEvents per service, shared by every SSE client of that
 * service. A QueueEvents holds a blocking Redis connection, so there is never one per HTTP client; each is
 * created on its service's first subscriber and closed with the hub.
 *
 * Resuming. Every event's id is its stream entry id. A subscriber is registered for live events first; then
 * what it missed is read with XRANGE (after its `Last-Event-ID`, or a job's history from its enqueue time) up
 * to the stream's current end, delivered, and only then are the live events that arrived meanwhile delivered,
 * skipping ids already sent: no gap, no duplicate. BullMQ trims the stream (about 10,000 entries by default):
 * when what a subscriber asks for is older than the oldest entry held, it gets a notice and what is held.
 *
 * Tenants. A service-wide subscriber may be limited to some tenants (its `filter`), so the hub must know each
 * event's tenant. Ferry's own events carry it; for BullMQ's, the job is read once (name, data, one HMGET) and
 * kept in a bounded per-service cache, seeded by job subscribers from their own read of the job, and dropped
 * when the job id is added again. A job is read only while someone subscribes to its events, and a dead-lettered
 * job is read again when it fails, for its final error and dead-letter id. Events of a job that can no longer
 * be read (tenant unknown) never reach a filtered subscriber.
 */
import type { Logger } from '../../core/logger.ts';
import type { RedisClient } from '../../core/redis.ts';
import { SECOND } from '../../core/time.ts';
import { ServiceChannel } from './channel.ts';
import type { JobEventSubscribeOptions, JobEventSubscription } from './subscription.ts';

export type { JobInfo } from './map.ts';
export type { JobEventSubscribeOptions, JobEventSubscription } from './subscription.ts';

export interface JobEventHubOptions {
  /** For reads (XRANGE, one HMGET per job); the API's producer connection (fails fast) is right. */
  connection: RedisClient;
  /**
   * Template of each service's QueueEvents connection: BullMQ duplicates it (one blocking connection per
   * service) and never uses it itself. Must have `maxRetriesPerRequest: null` (worker role), BullMQ refuses
   * anything else for a blocking connection.
   */
  eventsConnection: RedisClient;
  prefix: string;
  logger: Logger;
  /** Jobs whose operation, tenant and metadata are remembered, per service. Default 10,000. */
  jobInfoCacheSize?: number;
  /**
   * How much earlier than a job's enqueue time (the producer's clock) its history is looked for in the stream
   * (Redis's clock). Default 5 s.
   */
  clockSkewMs?: number;
}

export interface JobEventHub {
  /**
   * Registers for live events, then delivers the replay (if asked) before resolving; live events follow. Rejects
   * (delivering nothing) when Redis cannot be read.
   */
  subscribe(options: JobEventSubscribeOptions): Promise<JobEventSubscription>;
  /** Open subscriptions, of one service or of all. */
  subscriberCount(service?: string): number;
  /**
   * Ends every subscription (onEnd) and closes every QueueEvents, within about `waitMs` (default 2 s) plus a
   * moment to force-close, whatever Redis does.
   */
  close(waitMs?: number): Promise<void>;
}

const DEFAULT_CACHE_SIZE = 10_000;
const DEFAULT_CLOCK_SKEW_MS = 5 * SECOND;

export function createJobEventHub(options: JobEventHubOptions): JobEventHub {
  const channels = new Map<string, ServiceChannel>();
  const channelOptions = {
    connection: options.connection,
    eventsConnection: options.eventsConnection,
    prefix: options.prefix,
    logger: options.logger,
    jobInfoCacheSize: options.jobInfoCacheSize ?? DEFAULT_CACHE_SIZE,
    clockSkewMs: options.clockSkewMs ?? DEFAULT_CLOCK_SKEW_MS,
  };
  let closed = false;
  return {
    async subscribe(subscribeOptions) {
      if (closed) throw new Error('the job event hub is closed');
      const { service } = subscribeOptions;
      let channel = channels.get(service);
      if (channel === undefined) {
        channel = new ServiceChannel(service, channelOptions);
        channels.set(service, channel);
      }
      return channel.subscribe(subscribeOptions);
    },
    subscriberCount(service) {
      if (service !== undefined) return channels.get(service)?.subscriptions.size ?? 0;
      let count = 0;
      for (const channel of channels.values()) count += channel.subscriptions.size;
      return count;
    },
    async close(waitMs) {
      closed = true;
      await Promise.all([...channels.values()].map((channel) => channel.close(waitMs)));
      channels.clear();
    },
  };
}
