/**
 * Publishes Ferry's own job events (retrying, held: see core/job-events.ts) on a service queue's BullMQ events
 * stream, where the API's SSE streams read them next to BullMQ's own events.
 *
 * Not BullMQ's QueueEventsProducer: its `publishEvent` trims the stream to 1,000 entries by default, ten times
 * shorter than what BullMQ's scripts keep (`opts.maxLenEvents`, 10,000 unless set), and every retry would cut
 * the history that `Last-Event-ID` resumes from. This script trims exactly like BullMQ's own XADDs do, with the
 * queue's setting, in one round trip. Both keys share the queue's `{service}` hash tag: one Cluster slot.
 */
import type { FerryStreamEvent, StreamEventPayloads } from '../core/job-events.ts';
import type { Logger } from '../core/logger.ts';
import type { RedisClient } from '../core/redis.ts';

export interface JobEventPublisher {
  /**
   * Appends one event to the stream. Never rejects: the job's own state matters more than its event, so a
   * failure is logged and dropped.
   */
  publish<E extends FerryStreamEvent>(
    event: E,
    jobId: string,
    payload: StreamEventPayloads[E],
  ): Promise<void>;
}

export interface JobEventPublisherOptions {
  connection: RedisClient;
  /** The queue's keys (BullMQ `queue.keys`): its `events` stream and its `meta` hash. */
  keys: { events: string; meta: string };
  logger: Logger;
}

/** BullMQ's default stream length when the queue's meta has no `opts.maxLenEvents` (its getOrSetMaxEvents). */
const PUBLISH = `local maxEvents = redis.call('HGET', KEYS[2], 'opts.maxLenEvents')
if not maxEvents then maxEvents = 10000 end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxEvents, '*', 'event', ARGV[1], 'jobId', ARGV[2], 'data', ARGV[3])`;

export function createJobEventPublisher(options: JobEventPublisherOptions): JobEventPublisher {
  const { connection, keys, logger } = options;
  return {
    async publish(event, jobId, payload) {
      try {
        await connection.eval(PUBLISH, 2, keys.events, keys.meta, event, jobId, JSON.stringify(payload));
      } catch (error) {
        // The message only: ioredis's error would bring the whole script and payload into the log line.
        const reason = error instanceof Error ? error.message : String(error);
        logger.warn({ event, jobId, reason }, 'could not publish a job event; the job goes on without it');
      }
    },
  };
}
