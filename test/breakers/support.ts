/** Shared pieces of the breaker tests: a RedisLike that records (and can fail) commands, errors, deferreds. */
import { onTestFinished } from 'vitest';

import {
  type BreakerRegistry,
  type BreakerRegistryOptions,
  type BreakerStateChangedEvent,
  createBreakerRegistry,
  type RedisLike,
} from '../../src/breakers/index.ts';

export type RedisCommand = 'get' | 'set' | 'del' | 'eval';

export interface InstrumentedRedis {
  redis: RedisLike;
  /** Every command issued, in order. */
  calls: RedisCommand[];
  /** Commands in this set reject (as a Redis outage would) instead of reaching Redis. */
  failing: Set<RedisCommand>;
}

export function instrumentRedis(inner: RedisLike): InstrumentedRedis {
  const calls: RedisCommand[] = [];
  const failing = new Set<RedisCommand>();
  const run = <T>(command: RedisCommand, send: () => Promise<T>): Promise<T> => {
    calls.push(command);
    return failing.has(command) ? Promise.reject(new Error(`injected ${command} failure`)) : send();
  };
  const set = (key: string, value: string, px: 'PX', ms: number, nx?: 'NX'): Promise<unknown> =>
    run('set', () => (nx === undefined ? inner.set(key, value, px, ms) : inner.set(key, value, px, ms, nx)));
  const redis: RedisLike = {
    get: (key) => run('get', () => inner.get(key)),
    set: set as RedisLike['set'],
    del: (key) => run('del', () => inner.del(key)),
    eval: (script, numkeys, ...args) => run('eval', () => inner.eval(script, numkeys, ...args)),
  };
  return { redis, calls, failing };
}

/** A failure that says the service is unhealthy (Ferry: Timeout, Network, Server). Counts toward opening. */
export class UnhealthyError extends Error {
  override readonly name = 'UnhealthyError';
}

/** A failure that is the job's problem (Ferry: a 4xx). Never counts. */
export class ClientSideError extends Error {
  override readonly name = 'ClientSideError';
}

export const isFailure = (error: unknown): boolean => error instanceof UnhealthyError;

export const failing = (): Promise<never> => Promise.reject(new UnhealthyError('503'));

export interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A registry closed when the test finishes. */
export function openRegistry(options: BreakerRegistryOptions): BreakerRegistry {
  const registry = createBreakerRegistry(options);
  onTestFinished(() => registry.close());
  return registry;
}

/** Collects every `breaker:state:changed` event as `from→to (source)` for readable assertions. */
export function recordTransitions(registry: BreakerRegistry): string[] {
  const seen: string[] = [];
  registry.on('breaker:state:changed', (event: BreakerStateChangedEvent) => {
    seen.push(`${event.name}: ${event.from.state}→${event.to.state} (${event.source})`);
  });
  return seen;
}

/** Settles `promise` and returns its rejection (fails the test if it resolved). */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection, got a value');
}
