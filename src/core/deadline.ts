/**
 * Bounded waits for shutdown. Closing a BullMQ class or an ioredis client can wait for Redis for ever (a
 * blocking connection that is reconnecting never emits `end` when disconnected, BullMQ #4585; a SIGSTOPped
 * Redis never answers QUIT): every close on a shutdown path is raced with a deadline.
 */

import { type Clock, systemClock } from './time.ts';

/** Resolves when `promise` settles (either way) or after `ms`, whichever comes first; never rejects. */
export async function settleWithin(promise: Promise<unknown>, ms: number): Promise<'settled' | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), Math.max(0, ms));
  });
  try {
    return await Promise.race([promise.then(settled, settled), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function settled(): 'settled' {
  return 'settled';
}

/** A point in time a sequence of steps shares: each step waits at most for what is left of it. */
export class Deadline {
  readonly at: number;
  readonly #clock: Clock;

  /**
   * `ms` from now on `clock`, which left() and passed read too (default the system clock). A number instead of
   * a clock is the start time on the system clock.
   */
  constructor(ms: number, clock: Clock | number = systemClock) {
    this.#clock = typeof clock === 'number' ? systemClock : clock;
    this.at = (typeof clock === 'number' ? clock : clock.now()) + ms;
  }

  /** What is left, never less than `atLeast` (a step that gets no time at all could not even start). */
  left(atLeast = 0): number {
    return Math.max(atLeast, this.at - this.#clock.now());
  }

  get passed(): boolean {
    return this.#clock.now() >= this.at;
  }
}

/** What a BullMQ Queue, Worker or QueueEvents exposes of its Redis backend (duck-typed: core imports no BullMQ). */
interface BullOwner {
  getBackend(): unknown;
}
interface ClosableConnection {
  close(force?: boolean): Promise<void>;
}

/**
 * Force-closes the Redis connections a BullMQ Queue, Worker or QueueEvents owns: a plain disconnect, no QUIT,
 * no wait for an `end` that a reconnecting client never emits. A connection the caller shares is left alone
 * (BullMQ does not own it). For when a graceful `close()` did not finish in time; bounded by `ms` too.
 */
export async function forceCloseBull(owner: BullOwner, ms: number): Promise<'settled' | 'timeout'> {
  const backend = owner.getBackend() as
    { connection?: ClosableConnection; blockingConnection?: ClosableConnection } | undefined;
  const closes = [backend?.blockingConnection, backend?.connection]
    .filter((connection) => connection !== undefined)
    .map((connection) => connection.close(true));
  return settleWithin(Promise.all(closes), ms);
}
