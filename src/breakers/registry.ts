/**
 * One breaker per service per process, created lazily, and the timer that keeps them in step with Redis:
 * every `syncIntervalMs` one GET per known breaker (never MGET: keys may live in different Cluster slots).
 */
import { EventEmitter } from 'node:events';

import { BreakerRegistryClosedError } from './errors.ts';
import { breakerDefaults, type BreakerOptions, resolveBreakerOptions } from './options.ts';
import {
  Breaker,
  type BreakerContext,
  type BreakerStateChangedEvent,
  type BreakerSyncErrorEvent,
  type ServiceBreaker,
} from './service-breaker.ts';
import type { RedisLike } from './shared-state.ts';
import type { BreakerState } from './state.ts';

export interface BreakerRegistryOptions {
  /** Where shared state lives; ioredis `Redis` and `Cluster` fit. Not closed by the registry. */
  redis: RedisLike;
  /** Redis key of a breaker's shared state; its probe lock is `<key>:probe`. */
  keyFor(name: string): string;
  /** How often each breaker's shared state is read, in ms. Default 500 ms: other processes follow within ~1 s. */
  syncIntervalMs?: number;
  /** Time source for open periods (epoch ms). Default `Date.now`. Timers still use real time. */
  clock?: { now(): number };
}

/** Every event a registry emits, with its payload (`area:subject:verb`). */
export interface BreakerRegistryEventMap {
  /** Every transition of every breaker, with where it came from. */
  'breaker:state:changed': BreakerStateChangedEvent;
  /** Redis failed; the breaker kept its last known state (and retries a failed write at the next sync). */
  'breaker:sync:error': BreakerSyncErrorEvent;
}

export type BreakerRegistryEventName = keyof BreakerRegistryEventMap;

export interface BreakerRegistry {
  /** The breaker for `name`, created on first use; later calls return the same one (their options are ignored). */
  get(name: string, options: BreakerOptions): ServiceBreaker;
  list(): { name: string; state: BreakerState }[];
  on<E extends BreakerRegistryEventName>(
    event: E,
    listener: (payload: BreakerRegistryEventMap[E]) => void,
  ): this;
  off<E extends BreakerRegistryEventName>(
    event: E,
    listener: (payload: BreakerRegistryEventMap[E]) => void,
  ): this;
  /** Stops the sync timer and opossum's timers, waits for Redis work in flight. Idempotent. */
  close(): Promise<void>;
}

export function createBreakerRegistry(options: BreakerRegistryOptions): BreakerRegistry {
  return new Registry(options);
}

class Registry implements BreakerRegistry {
  readonly #keyFor: (name: string) => string;
  readonly #syncIntervalMs: number;
  readonly #context: BreakerContext;
  readonly #breakers = new Map<string, Breaker>();
  readonly #events = new EventEmitter();
  readonly #background = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: BreakerRegistryOptions) {
    const syncIntervalMs = options.syncIntervalMs ?? breakerDefaults.syncIntervalMs;
    if (!(Number.isInteger(syncIntervalMs) && syncIntervalMs >= 1)) {
      throw new RangeError(
        `breaker registry: syncIntervalMs must be an integer >= 1 (got ${syncIntervalMs})`,
      );
    }
    this.#keyFor = options.keyFor;
    this.#syncIntervalMs = syncIntervalMs;
    this.#context = {
      redis: options.redis,
      clock: options.clock ?? { now: () => Date.now() },
      isRegistryClosed: () => this.#closing !== undefined,
      emitStateChanged: (event) => this.#emit('breaker:state:changed', event),
      emitSyncError: (event) => this.#emit('breaker:sync:error', event),
      track: (work) => this.#track(work),
    };
  }

  get(name: string, options: BreakerOptions): ServiceBreaker {
    const existing = this.#breakers.get(name);
    if (existing !== undefined) return existing;
    if (this.#closing !== undefined) throw new BreakerRegistryClosedError(name);
    const breaker = new Breaker(
      name,
      this.#keyFor(name),
      resolveBreakerOptions(name, options),
      this.#context,
    );
    this.#breakers.set(name, breaker);
    // Learn at once whether another process has it open, rather than after the first interval.
    this.#track(breaker.sync());
    this.#timer ??= setInterval(() => this.#syncAll(), this.#syncIntervalMs).unref();
    return breaker;
  }

  list(): { name: string; state: BreakerState }[] {
    return [...this.#breakers.values()].map((breaker) => ({ name: breaker.name, state: breaker.state() }));
  }

  on<E extends BreakerRegistryEventName>(
    event: E,
    listener: (payload: BreakerRegistryEventMap[E]) => void,
  ): this {
    this.#events.on(event, listener);
    return this;
  }

  off<E extends BreakerRegistryEventName>(
    event: E,
    listener: (payload: BreakerRegistryEventMap[E]) => void,
  ): this {
    this.#events.off(event, listener);
    return this;
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    clearInterval(this.#timer);
    for (const breaker of this.#breakers.values()) breaker.shutdown();
    // Work in flight may start more (a probe's write, then its lock release).
    while (this.#background.size > 0) await Promise.allSettled(this.#background);
  }

  #syncAll(): void {
    for (const breaker of this.#breakers.values()) this.#track(breaker.sync());
  }

  #track(work: Promise<void>): void {
    if (this.#background.has(work)) return;
    this.#background.add(work);
    const forget = (): void => {
      this.#background.delete(work);
    };
    work.then(forget, forget);
  }

  #emit<E extends BreakerRegistryEventName>(event: E, payload: BreakerRegistryEventMap[E]): void {
    try {
      this.#events.emit(event, payload);
    } catch (error) {
      // A throwing listener must not leave a breaker half-way through a transition; surface it like an
      // exception in any other async callback.
      process.nextTick(() => {
        throw error;
      });
    }
  }
}
