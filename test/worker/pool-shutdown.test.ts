/**
 * closePool's decision of when nothing is in flight any more, against a stand-in for BullMQ's Worker (the part
 * BullMQ decides: when a job it took reaches processJob) and a real Redis for the watch. The real race: a delayed
 * retry fell due as SIGTERM came; BullMQ had taken it, and it reached processJob a moment after closePool read
 * "nothing in flight". The shared breakers were closed under it and the worker exited 3 with Redis fine.
 */
import { describe, expect, it } from 'vitest';

import { createLogger } from '../../src/core/logger.ts';
import { systemClock } from '../../src/core/time.ts';
import { closePool } from '../../src/worker/pool-shutdown.ts';
import type { ServiceRuntime } from '../../src/worker/service-runtime.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

/** The members of TrackedWorker closePool uses; the job BullMQ took reaches processJob one microtask late. */
class LateJobWorker {
  readonly inFlight = new Set<{ id: string }>();
  readonly events: string[];
  #idle: (() => void) | undefined;
  #closed: Promise<void> | undefined;

  constructor(events: string[]) {
    this.events = events;
  }

  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      const job = { id: 'taken-as-close-began' };
      queueMicrotask(() => this.inFlight.add(job));
      // Its call ends on the next turn of the event loop, after closePool's first look; BullMQ's close
      // resolves once the jobs it took were processed.
      setImmediate(() => {
        this.inFlight.delete(job);
        this.events.push('job recorded');
        this.#idle?.();
        resolve();
      });
    });
    return this.#closed;
  }

  whenIdle(): Promise<void> {
    if (this.inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => (this.#idle = resolve));
  }

  getBackend(): undefined {
    return undefined;
  }
}

describe('closePool', () => {
  it('waits for a job BullMQ took as the close began, and closes what the runs share after it', async () => {
    const events: string[] = [];
    const runtime = {
      service: { name: 'svc' },
      worker: new LateJobWorker(events),
      queue: { close: async () => undefined },
      pools: { close: async () => undefined },
    } as unknown as ServiceRuntime;
    const report = await closePool(
      {
        runtimes: [runtime],
        connection: redis.client,
        logger: createLogger({ level: 'silent' }),
        clock: systemClock,
        abortInFlight: () => events.push('aborted'),
        closeShared: () => {
          events.push('shared closed');
          return [];
        },
      },
      { deadlineMs: 10_000, handbackMs: 1_000 },
    );
    expect(report).toEqual({ unrecorded: [], redisReachable: true });
    expect(events).toEqual(['job recorded', 'shared closed']);
  });
});
