import { Job, Queue } from 'bullmq';

import type { DeadLetterRecord } from '../core/job.ts';
import { DEAD_LETTER_QUEUE, deadLetterJobId, deadLetterJobName } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import { type DeadLetterKeys, deadLetterKeys, indexCommand } from './search-index.ts';

/**
 * Writes dead letters to `{dead-letter}`. The job id is fixed per source job (deadLetterJobId), so the worker,
 * the failed-set sweep and a re-run after a crash all write the same dead letter and none is ever duplicated. The queue is
 * paused: no worker consumes it; operators inspect, replay or purge it.
 */
export class DeadLetterWriter {
  readonly queue: Queue<DeadLetterRecord>;
  readonly #connection: RedisClient;
  readonly #keys: DeadLetterKeys;
  #paused: Promise<void> | undefined;

  constructor(options: { connection: RedisClient; prefix: string }) {
    this.#connection = options.connection;
    this.#keys = deadLetterKeys(options.prefix);
    this.queue = new Queue<DeadLetterRecord>(DEAD_LETTER_QUEUE, {
      connection: options.connection,
      prefix: options.prefix,
    });
  }

  /** The raw connection, for reads BullMQ has no API for. */
  get connection(): RedisClient {
    return this.#connection;
  }

  /**
   * Adds the dead letter and its index entries (search-index.ts) in one MULTI, so no list or count ever sees
   * one without the other. BullMQ's `Job.addJob` takes a transaction for this (its FlowProducer adds a whole
   * flow the same way); the job is stored exactly as `queue.add` would store it. Writing a dead letter that
   * exists changes nothing: BullMQ keeps the first job, and the entries keep theirs.
   */
  async write(record: DeadLetterRecord): Promise<{ id: string }> {
    this.#paused ??= this.queue.pause();
    await this.#paused;
    const id = deadLetterJobId(record.service, record.sourceJobId, record.enqueuedAt);
    const name = deadLetterJobName(record.service, record.operation);
    // Kept until an operator replays or purges it.
    const options = { jobId: id, removeOnComplete: false, removeOnFail: false };
    const index = indexCommand(this.#keys, id, record, 'keep');
    const transaction = (await this.queue.getBackend().client).multi();
    await new Job<DeadLetterRecord>(this.queue, name, record, options, id).addJob(transaction);
    transaction.runCommand('eval', index);
    const error = await transaction.exec().then(
      (results) =>
        results === null
          ? new Error(`dead letter ${id}: the transaction was aborted`)
          : (results.find(([failed]) => failed !== null)?.[0] ?? undefined),
      (failed: unknown) => failed,
    );
    if (error === undefined) return { id };
    if (!(error instanceof Error && error.message.startsWith('NOSCRIPT'))) throw error;
    // Redis no longer has BullMQ's script (SCRIPT FLUSH; Redis 8 and Valkey 8 evict EVAL-loaded scripts past
    // 500, redis/redis#13108). ioredis sends it again for a plain call but not inside MULTI, where nothing was
    // added then: two steps this once.
    // A crash between them leaves a dead letter out of the index until reindexDeadLetters runs.
    await this.queue.add(name, record, options);
    await this.#connection.eval(...index);
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
