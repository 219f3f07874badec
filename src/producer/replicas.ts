/**
 * Opt-in replica acknowledgement of an enqueue (`FERRY_ENQUEUE_MIN_REPLICAS`, Producer `minReplicas`): after
 * the write, Redis `WAIT numreplicas timeout` before the caller is told the job is accepted. WAIT counts the
 * replicas that have acknowledged every write made so far ON THE CONNECTION IT IS SENT ON, so it must go on
 * the connection that wrote the job: the Producer's own (a BullMQ Queue built on a client instance sends its
 * commands on that instance), and on a Redis Cluster the connection ioredis keeps to the master of the
 * queue's slot (a keyless command would otherwise go to a random node and count nothing of ours).
 */
import { Cluster, Command } from 'ioredis';

import { ValidationError } from '../core/errors.ts';
import type { RedisClient } from '../core/redis.ts';

/** Replicas an enqueue waits for by default: 0, no WAIT is sent. */
export const DEFAULT_MIN_REPLICAS = 0;
/** How long an enqueue waits for its replicas by default before it is refused (ReplicaTimeoutError, 503). */
export const DEFAULT_REPLICA_TIMEOUT_MS = 1_000;
/** Bounds of the settings: a WAIT timeout of 0 would block forever, and no deployment has 100 replicas. */
export const MAX_MIN_REPLICAS = 100;
export const MIN_REPLICA_TIMEOUT_MS = 1;
export const MAX_REPLICA_TIMEOUT_MS = 30_000;

export type ReplicaDecision = 'ok' | 'unavailable';

/**
 * Whether an enqueue may be answered as accepted: `acked` is WAIT's reply (replicas that acknowledged),
 * `required` the setting. Anything but a count at least `required` (a reply that is not a number included) is
 * `unavailable`: the caller is told to retry, never that the job is safe when that is not known.
 */
export function replicaDecision(acked: unknown, required: number): ReplicaDecision {
  if (required <= 0) return 'ok';
  return typeof acked === 'number' && Number.isInteger(acked) && acked >= required ? 'ok' : 'unavailable';
}

/**
 * An enqueue was written but fewer than the required replicas acknowledged it within the timeout. The job
 * may be in Redis (and run): retry with the same idempotency key, which returns that job instead of adding a
 * second one. Without an idempotency key a retry adds another job, so the call can then run twice.
 */
export class ReplicaTimeoutError extends Error {
  readonly type = 'ReplicaTimeoutError';
  readonly required: number;
  readonly acknowledged: number;
  constructor(message: string, required: number, acknowledged: number) {
    super(message);
    this.required = required;
    this.acknowledged = acknowledged;
  }
  override get name(): string {
    return this.type;
  }
}

/** Brand check (works across module copies): a ReplicaTimeoutError. */
export function isReplicaTimeoutError(value: unknown): value is ReplicaTimeoutError {
  return value instanceof Error && (value as { type?: unknown }).type === 'ReplicaTimeoutError';
}

/** Checks the settings at construction: bounded integers, else a ValidationError naming the field. */
export function checkReplicaSettings(minReplicas: number, timeoutMs: number): void {
  if (!Number.isInteger(minReplicas) || minReplicas < 0 || minReplicas > MAX_MIN_REPLICAS) {
    throw new ValidationError(`minReplicas: must be an integer from 0 to ${MAX_MIN_REPLICAS}`, {
      field: 'minReplicas',
    });
  }
  if (
    !Number.isInteger(timeoutMs) ||
    timeoutMs < MIN_REPLICA_TIMEOUT_MS ||
    timeoutMs > MAX_REPLICA_TIMEOUT_MS
  ) {
    throw new ValidationError(
      `replicaTimeoutMs: must be an integer from ${MIN_REPLICA_TIMEOUT_MS} to ${MAX_REPLICA_TIMEOUT_MS}`,
      { field: 'replicaTimeoutMs' },
    );
  }
}

/**
 * Sends `WAIT required timeoutMs` on the connection that wrote `key` and throws ReplicaTimeoutError unless
 * enough replicas acknowledged. `slotOf` caches each key's cluster slot (it never changes).
 */
export async function waitForReplicas(
  client: RedisClient,
  key: string,
  required: number,
  timeoutMs: number,
  slotOf: Map<string, number>,
): Promise<void> {
  if (required <= 0) return;
  let acked: unknown;
  if (client instanceof Cluster) {
    let slot = slotOf.get(key);
    if (slot === undefined) {
      slot = Number(await client.cluster('KEYSLOT', key));
      slotOf.set(key, slot);
    }
    // ioredis sends a command with a `node.slot` to the slot's current master, on the connection its pool keeps
    // to that node: the one BullMQ's write for this queue went on.
    const command = new Command('wait', [required, timeoutMs]);
    void client.sendCommand(command, undefined, { slot });
    acked = await command.promise;
  } else {
    acked = await client.wait(required, timeoutMs);
  }
  if (replicaDecision(acked, required) === 'unavailable') {
    const count = typeof acked === 'number' ? acked : 0;
    throw new ReplicaTimeoutError(
      `${count} of ${required} required Redis replica(s) acknowledged the enqueue within ${timeoutMs} ms; ` +
        'the job may have been added: retry with the same idempotency key',
      required,
      count,
    );
  }
}
