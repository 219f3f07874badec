/**
 * Exactly once, across interruptions. Each dead letter `<id>` becomes the job `rp-<id>` (replayJobId): BullMQ
 * keeps the first job added under an id, so adding it again is a no-op. The add runs in one MULTI with a
 * marker key in the service queue's slot (`<prefix>:{<service>}:ferry:replayed:<id>`, kept REPLAY_MARKER_TTL_MS),
 * then the dead letter is deleted (DeadLetterPurger), then the marker. Stopped anywhere, a re-run finds the
 * dead letter still there and either the marker (the add happened: it only deletes) or no marker (the add
 * did not happen: it adds). The marker closes the window a job id alone leaves open: a replayed job that
 * completed and was removed (removeOnComplete, 24 h by default) before the re-run would be added again.
 * What is left: a crash between add and delete, then a re-run more than REPLAY_MARKER_TTL_MS (30 days)
 * later whose job is gone by then; and two replays of the same dead letter in the same few milliseconds
 * (each checks the dead letter is still there right before its add), where both may add but the job id
 * makes the second add a no-op unless the first job has already been removed. Before the delete, the
 * source job is marked dead-lettered (markSourceOfDeadLetter), so a worker that died between writing the
 * dead letter and marking it does not write it again for a second replay.
 */
import { Job, Queue } from 'bullmq';

import type { DeadLetterRecord, JobData } from '../core/job.ts';
import { MAX_IDEMPOTENCY_KEY_LENGTH, serviceQueueName } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import { DAY } from '../core/time.ts';
import { DeadLetterPurger } from '../dead-letter/purge.ts';
import { type DeadLetterKeys, deadLetterKeys } from '../dead-letter/search-index.ts';

/** How long a replay marker outlives a crash between a replay's add and its delete. */
export const REPLAY_MARKER_TTL_MS = 30 * DAY;
/** The job id a dead letter is replayed as: BullMQ ids may not contain `:` (dead-letter ids never do) nor be integers. */
export function replayJobId(deadLetterId: string): string {
  return `rp-${deadLetterId}`;
}

/** Data of a replayed job: a service queue's job data (DESIGN §3) plus the dead letter it came from. */
export type ReplayJobData = JobData & { replayOf: string };

/** Adds replayed jobs and deletes their dead letters (the protocol in the module comment). */
export class Replayer {
  readonly #client: RedisClient;
  readonly #prefix: string;
  readonly #purger: DeadLetterPurger;
  readonly #keys: DeadLetterKeys;
  readonly #queues = new Map<string, Queue<ReplayJobData>>();

  constructor(client: RedisClient, prefix: string) {
    this.#client = client;
    this.#prefix = prefix;
    this.#purger = new DeadLetterPurger({ connection: client, prefix });
    this.#keys = deadLetterKeys(prefix);
  }

  /** False when the dead letter was gone (deleted, or replayed by another run) before its add. */
  async replay(id: string, record: DeadLetterRecord): Promise<boolean> {
    const queue = this.#queue(record.service);
    const marker = queue.toKey(`ferry:replayed:${id}`);
    if ((await this.#client.exists(marker)) === 0) {
      // The record was read a batch ago (up to a batch of the sources / rate seconds with a cap): purged, or replayed by a
      // concurrent run whose job may be gone by now, it must not be added again.
      if ((await this.#client.exists(this.#keys.job(id))) === 0) return false;
      await this.#add(queue, marker, id, record);
    }
    // The purger marks the source job first (markSourceOfDeadLetter): a dead letter written again after its
    // replay would be replayed a second time.
    await this.#purger.delete(id);
    await this.#client.del(marker);
    return true;
  }

  async close(): Promise<void> {
    await Promise.all([this.#purger.close(), ...[...this.#queues.values()].map((queue) => queue.close())]);
  }

  async #add(
    queue: Queue<ReplayJobData>,
    marker: string,
    id: string,
    record: DeadLetterRecord,
  ): Promise<void> {
    const jobId = replayJobId(id);
    const data = replayJobData(id, record);
    const transaction = (await queue.getBackend().client).multi();
    await new Job<ReplayJobData>(queue, record.operation, data, { jobId }, jobId).addJob(transaction);
    transaction.runCommand('set', [marker, jobId, 'PX', REPLAY_MARKER_TTL_MS]);
    const results = await transaction.exec();
    const error =
      results === null
        ? new Error(`replay of ${id}: the transaction was aborted`)
        : results.find(([failed]) => failed !== null)?.[0];
    if (error === undefined || error === null) return;
    if (!error.message.startsWith('NOSCRIPT')) throw error;
    // BullMQ's script was evicted (see dead-letter/writer.ts): ioredis resends it for a plain call, not inside MULTI.
    // A crash between the two leaves a job without its marker: a re-run's add is then a no-op by job id.
    await queue.add(record.operation, data, { jobId });
    await this.#client.set(marker, jobId, 'PX', REPLAY_MARKER_TTL_MS);
  }

  #queue(service: string): Queue<ReplayJobData> {
    let queue = this.#queues.get(service);
    if (queue === undefined) {
      queue = new Queue<ReplayJobData>(serviceQueueName(service), {
        connection: this.#client,
        prefix: this.#prefix,
      });
      this.#queues.set(service, queue);
    }
    return queue;
  }
}

/**
 * A new job's data: fresh attempts (no `ferry` delivery state), the same input, tenant, metadata and origin, and
 * the key the downstream saw as `Idempotency-Key`, so a call that did reach the downstream is recognised
 * there. A dead letter records it, the job's own key or the default one (queue-layout.ts
 * defaultIdempotencyKey); one written before it did so, for a job without a key, has none: its job was sent
 * its job id.
 */
export function replayJobData(id: string, record: DeadLetterRecord): ReplayJobData {
  const data: ReplayJobData = { input: record.input ?? null, replayOf: id };
  if (record.tenant !== undefined) data.tenant = record.tenant;
  const key =
    record.idempotencyKey ??
    (record.sourceJobId.length <= MAX_IDEMPOTENCY_KEY_LENGTH ? record.sourceJobId : undefined);
  if (key !== undefined) data.idempotencyKey = key;
  if (record.metadata !== undefined) data.metadata = record.metadata;
  // Sealed stays sealed: the envelope names the job it was sealed for, and opens on the same service and
  // tenant, so it is copied verbatim (no key needed to replay).
  if (record.sealed !== undefined) data.sealed = record.sealed;
  // A follow-up stays one: its origin, depth included, so its own reactions still count towards the chain's
  // depth limit (a replay cannot start a chain afresh).
  if (record.origin !== undefined) data.origin = record.origin;
  return data;
}
