import { type Job, Queue } from 'bullmq';

import type { DeadLetterRecord } from '../core/job.ts';
import { DEAD_LETTER_QUEUE, deadLetterJobId, deadLetterJobName } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';

/**
 * Writes dead letters to `{dead-letter}`. The job id is fixed per source job (deadLetterJobId), so the worker,
 * the failed-set sweep and a re-run after a crash all write the same dead letter and none is ever duplicated. The queue is
 * paused: no worker consumes it; operators inspect, replay or purge it.
 */
export class DeadLetterWriter {
  readonly queue: Queue<DeadLetterRecord>;
  readonly #connection: RedisClient;
  #paused: Promise<void> | undefined;

  constructor(options: { connection: RedisClient; prefix: string }) {
    this.#connection = options.connection;
    this.queue = new Queue<DeadLetterRecord>(DEAD_LETTER_QUEUE, {
      connection: options.connection,
      prefix: options.prefix,
    });
  }

  /** The raw connection, for reads BullMQ has no API for. */
  get connection(): RedisClient {
    return this.#connection;
  }

  async write(record: DeadLetterRecord): Promise<{ id: string }> {
    this.#paused ??= this.queue.pause();
    await this.#paused;
    const id = deadLetterJobId(record.service, record.sourceJobId, record.enqueuedAt);
    await this.queue.add(deadLetterJobName(record.service, record.operation), record, {
      jobId: id,
      // Kept until an operator replays or purges it.
      removeOnComplete: false,
      removeOnFail: false,
    });
    return { id };
  }

  async exists(id: string): Promise<boolean> {
    return (await this.#connection.exists(this.queue.toKey(id))) === 1;
  }

  /** A dead letter by its id (`deadLetterJobId`, or a JobView's `deadLetterId`). */
  async get(id: string): Promise<Job<DeadLetterRecord> | undefined> {
    return this.queue.getJob(id);
  }

  close(): Promise<void> {
    return this.queue.close();
  }
}
