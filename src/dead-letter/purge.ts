/**
 * Deletes one dead letter (DeadLetterPurger), with its index entries, in a crash-safe order; the bulk runs
 * over it (purge by filter, replay) are operator actions, in src/ops. A deleted dead letter stays deleted:
 * its source job carries DEAD_LETTERED_FIELD (writer.ts), which the failed-set sweep and a re-run of the job
 * trust instead of looking for the dead letter, so neither writes it again.
 */
import { Queue } from 'bullmq';

import { ConfigurationError } from '../core/errors.ts';
import type { DeadLetterRecord } from '../core/job.ts';
import { DEAD_LETTER_QUEUE } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import {
  type DeadLetterKeys,
  deadLetterKeys,
  isDeadLetterId,
  serviceOfDeadLetter,
  unindexIfMissing,
} from './search-index.ts';
import { markSourceOfDeadLetter } from './writer.ts';

export class DeadLetterPurger {
  readonly #client: RedisClient;
  readonly #prefix: string;
  readonly #keys: DeadLetterKeys;
  #queue: Queue<DeadLetterRecord> | undefined;

  constructor(options: { connection: RedisClient; prefix: string }) {
    this.#client = options.connection;
    this.#prefix = options.prefix;
    this.#keys = deadLetterKeys(options.prefix);
  }

  /**
   * Deletes one dead letter and its index entries; true when it existed. The job goes first, with BullMQ's
   * own removal (its lists, logs), then the entries, and only if the job is still gone: a list running
   * meanwhile may meet an entry without its job and skips it, but never shows a dead letter that is gone.
   * Deleting again (after a crash between the two) removes what is left. An id that cannot name a dead
   * letter (a BullMQ key such as `meta`) is reported as not existing, never removed.
   */
  async delete(id: string): Promise<boolean> {
    if (!(await isDeadLetterId(this.#client, this.#keys, id))) return false;
    const [existed, service] = await Promise.all([
      this.#client.exists(this.#keys.job(id)),
      serviceOfDeadLetter(this.#client, this.#keys, id),
    ]);
    // A worker that died between writing this dead letter and marking its source job would write it again
    // on the job's re-run (so would the sweep): a purged, retired or replayed dead letter would come back.
    // Marking the source (only if it is still the job that died) keeps every deleted dead letter deleted.
    if (existed === 1) await markSourceOfDeadLetter(this.#client, this.#prefix, id);
    if (existed === 1 && (await this.#deadLetterQueue().remove(id)) === 0) {
      // BullMQ refuses to remove a locked job: something consumes `{dead-letter}`, which must stay paused.
      throw new ConfigurationError(
        `dead letter ${id} is locked by a worker: nothing may consume ${DEAD_LETTER_QUEUE}, which stays paused`,
      );
    }
    await unindexIfMissing(this.#client, this.#keys, id, service);
    return existed === 1;
  }

  async close(): Promise<void> {
    await this.#queue?.close();
  }

  #deadLetterQueue(): Queue<DeadLetterRecord> {
    this.#queue ??= new Queue<DeadLetterRecord>(DEAD_LETTER_QUEUE, {
      connection: this.#client,
      prefix: this.#prefix,
    });
    return this.#queue;
  }
}
