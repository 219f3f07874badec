/** Things outside a job's control that must never lose it, re-run it, or hang the worker. */
import { describe, expect, it } from 'vitest';

import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { withTimeout } from '../helpers/processes.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();
// A second server for the test that freezes one (SIGSTOP). Started here, at the top level, so that its
// afterAll stop is registered (one registered from inside a running test never runs).
const frozen = await startRedis();

describe('worker robustness', () => {
  it('a delivery-event listener that throws neither fails nor repeats the job', async () => {
    const downstream = await startDownstream();
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    let calls = 0;
    ferry.pool.on('job:attempt:completed', () => {
      calls++;
      throw new Error('listener bug');
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 1 } });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    // Taken for "could not record the outcome", the job would have been delayed and run again before it
    // completed: a completed job with one call was never repeated.
    expect(view.state).toBe('completed');
    expect(downstream.requests).toHaveLength(1);
    expect(calls).toBe(1);
    expect(ferry.logs.some((line) => line.includes('delivery event listener threw'))).toBe(true);
  });

  it('delivers each event to every listener once, in the order they subscribed, until it unsubscribes', async () => {
    const downstream = await startDownstream();
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const seen: string[] = [];
    const first = (): void => void seen.push('first');
    const second = (): void => void seen.push('second');
    ferry.pool.on('job:attempt:completed', first).on('job:attempt:completed', second);
    const run = async (n: number): Promise<void> => {
      const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n } });
      await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    };
    await run(1);
    ferry.pool.off('job:attempt:completed', first).off('job:attempt:retrying', second);
    await run(2);
    ferry.pool.off('job:attempt:completed', second);
    await run(3);
    expect(seen).toEqual(['first', 'second', 'second']);
  });

  it('close() returns even when Redis stops answering mid-shutdown', { timeout: 30_000 }, async () => {
    const downstream = await startDownstream(() => ({ status: 200, delayMs: 3_000 }));
    const ferry = await createTestFerry(frozen, {
      services: oneService(downstream.url, { timeoutMs: 10_000 }),
    });
    await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    await expect.poll(() => downstream.requests.length, { timeout: 10_000 }).toBe(1);
    frozen.process.kill('SIGSTOP');
    try {
      await expect(
        withTimeout(
          ferry.pool.close({ deadlineMs: 300 }),
          20_000,
          () => 'pool.close() hung past its deadline',
        ),
      ).resolves.toBeUndefined();
    } finally {
      frozen.process.kill('SIGCONT');
    }
  });

  it(
    'shutdown() rides out a Redis that stops answering for a moment: nothing aborted, the call completes',
    { timeout: 30_000 },
    async () => {
      // The call ends 3 s after it starts, well within the grace; Redis answers nothing for 1.5 s of it.
      const downstream = await startDownstream(() => ({ status: 200, delayMs: 3_000 }));
      const ferry = await createTestFerry(redis, {
        services: oneService(downstream.url, { timeoutMs: 30_000 }),
      });
      const { id } = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
      await expect.poll(() => downstream.requests.length, { timeout: 10_000 }).toBe(1);
      // Redis ends the pause itself. The first PING of the shutdown's watch goes unanswered (1 s), the next
      // is answered: one failed probe is not "unreachable" (a slot-map refresh or a starved process fails one).
      await redis.client.call('CLIENT', 'PAUSE', '1500', 'ALL');
      const report = await withTimeout(
        ferry.pool.shutdown({ deadlineMs: 20_000, handbackMs: 5_000 }),
        25_000,
        () => 'pool.shutdown() did not return',
      );
      expect(report).toEqual({ unrecorded: [], redisReachable: true });
      expect(ferry.logs.filter((line) => line.includes('Redis is unreachable'))).toEqual([]);
      expect((await ferry.producer.get('svc', id))?.state).toBe('completed');
      expect(downstream.requests).toHaveLength(1);
    },
  );

  it(
    'shutdown() with Redis paused aborts at once, whatever the grace, and names what it could not record',
    {
      timeout: 30_000,
    },
    async () => {
      const downstream = await startDownstream(() => ({ status: 200, delayMs: 20_000 }));
      const ferry = await createTestFerry(frozen, {
        services: oneService(downstream.url, { timeoutMs: 30_000 }),
      });
      const { id } = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
      await expect.poll(() => downstream.requests.length, { timeout: 10_000 }).toBe(1);
      frozen.process.kill('SIGSTOP');
      try {
        const startedAt = Date.now();
        // A grace and hand-back far longer than the call: only finding Redis unreachable can end this early.
        const report = await withTimeout(
          ferry.pool.shutdown({ deadlineMs: 60_000, handbackMs: 60_000 }),
          20_000,
          () => 'pool.shutdown() waited for a paused Redis',
        );
        expect(Date.now() - startedAt).toBeLessThan(10_000);
        expect(report).toEqual({ unrecorded: [{ service: 'svc', jobId: id }], redisReachable: false });
        expect(ferry.logs.filter((line) => line.includes('Redis is unreachable')).join('\n')).toContain(
          `no answer to PING within 1000 ms`,
        );
        expect(ferry.logs.some((line) => line.includes('were not recorded (Redis unreachable)'))).toBe(true);
      } finally {
        frozen.process.kill('SIGCONT');
      }
    },
  );
});
