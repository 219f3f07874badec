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

/**
 * Lua that appends one event to a queue's events stream, trimmed as BullMQ's own XADDs trim it: to the queue's
 * `opts.maxLenEvents`, or BullMQ's default 10,000 (its getOrSetMaxEvents). Each argument is the Lua expression
 * (a KEYS or ARGV slot) that holds it: the publisher's script and record-run.ts's share this one text.
 */
export function appendEventLua(at: {
  stream: string;
  meta: string;
  event: string;
  jobId: string;
  data: string;
}): string {
  return `local maxEvents = redis.call('HGET', ${at.meta}, 'opts.maxLenEvents')
if not maxEvents then maxEvents = 10000 end
redis.call('XADD', ${at.stream}, 'MAXLEN', '~', maxEvents, '*', 'event', ${at.event}, 'jobId', ${at.jobId}, 'data', ${at.data})`;
}

/** An event as the stream stores it: its name and its payload as JSON, typed by the event. */
export function encodeStreamEvent<E extends FerryStreamEvent>(
  event: E,
  payload: StreamEventPayloads[E],
): { name: E; data: string } {
  return { name: event, data: JSON.stringify(payload) };
}

const PUBLISH = appendEventLua({
  stream: 'KEYS[1]',
  meta: 'KEYS[2]',
  event: 'ARGV[1]',
  jobId: 'ARGV[2]',
  data: 'ARGV[3]',
});

export function createJobEventPublisher(options: JobEventPublisherOptions): JobEventPublisher {
  const { connection, keys, logger } = options;
  return {
    async publish(event, jobId, payload) {
      try {
        const { data } = encodeStreamEvent(event, payload);
        await connection.eval(PUBLISH, 2, keys.events, keys.meta, event, jobId, data);
      } catch (error) {
        // The message only: ioredis's error would bring the whole script and payload into the log line.
        const reason = error instanceof Error ? error.message : String(error);
        logger.warn({ event, jobId, reason }, 'could not publish a job event; the job goes on without it');
      }
    },
  };
}
