/**
 * Fair share between tenants (issue 17 item 6): `tenantConcurrency: N` lets at most N calls per tenant be in
 * flight across every worker, so a tenant with a backlog of 500 jobs does not make another tenant's 10 wait
 * behind it. Two worker pools on one queue ("all workers"), a real Redis and a local downstream that counts the
 * calls each tenant has open at any moment.
 */
import { createServer } from 'node:http';

import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import type { JobData, JobResult } from '../../src/core/job.ts';
import { serviceQueueName, tenantLeaseKeys } from '../../src/core/queue-layout.ts';
import { decodeStoredResult } from '../../src/core/stored-result.ts';
import { createTenantLeases } from '../../src/worker/tenant-leases.ts';
import { createTestFerry, type TestFerry } from '../helpers/ferry.ts';
import { listenOnFreePort } from '../helpers/listen.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { until, waitUntil } from '../helpers/until.ts';

const redis = await startRedis();

/**
 * A downstream that answers each call after `delayMs`, reading the tenant from the `x-tenant` header: how many
 * calls each tenant has open now, the most it ever had, and the order calls were answered in.
 */
async function startCountingDownstream(delayMs: number) {
  const open = new Map<string, number>();
  const maxOpen = new Map<string, number>();
  const answered: string[] = [];
  const server = createServer((req, res) => {
    const tenant = String(req.headers['x-tenant']);
    req.resume();
    req.on('end', () => {
      const now = (open.get(tenant) ?? 0) + 1;
      open.set(tenant, now);
      maxOpen.set(tenant, Math.max(maxOpen.get(tenant) ?? 0, now));
      setTimeout(() => {
        // Counted down before the answer leaves: the worker gives its lease back only after reading it.
        open.set(tenant, open.get(tenant)! - 1);
        answered.push(tenant);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      }, delayMs);
    });
  });
  const { url } = await listenOnFreePort(server);
  const count = (tenant: string): number => answered.filter((t) => t === tenant).length;
  return { url, maxOpen, answered, count };
}

function services(url: string, tenantConcurrency: number | undefined): unknown {
  return {
    services: {
      svc: {
        baseUrl: url,
        timeoutMs: 5_000,
        concurrency: 5,
        ...(tenantConcurrency === undefined ? {} : { tenantConcurrency }),
        operations: {
          create: {
            method: 'POST',
            path: '/things',
            headers: { 'x-tenant': '{{ tenant }}' },
            body: '{{ input }}',
          },
        },
      },
    },
  };
}

/** Two worker pools on the same queues (two workers), and the producer of the first. */
async function twoWorkers(url: string, tenantConcurrency: number | undefined): Promise<TestFerry[]> {
  const prefix = uniquePrefix();
  const doc = services(url, tenantConcurrency);
  const first = await createTestFerry(redis, { services: doc, prefix, pool: { lockDurationMs: 30_000 } });
  const second = await createTestFerry(redis, { services: doc, prefix, pool: { lockDurationMs: 30_000 } });
  return [first, second];
}

function queueOf(ferry: TestFerry): Queue<JobData, JobResult> {
  const queue = new Queue<JobData, JobResult>(serviceQueueName('svc'), {
    connection: redis.client,
    prefix: ferry.prefix,
  });
  onTestFinished(() => queue.close());
  return queue;
}

const jobsOf = (tenant: string, n: number) =>
  Array.from({ length: n }, (_, i) => ({ service: 'svc', operation: 'create', tenant, input: { i } }));

describe('tenantConcurrency', () => {
  it(
    "lets tenant B's 10 jobs through while tenant A's 500 still drain, with at most N calls per tenant",
    { timeout: 90_000 },
    async () => {
      const downstream = await startCountingDownstream(100);
      const workers = await twoWorkers(downstream.url, 2);
      const [first] = workers;
      const completedBy = workers.map(() => 0);
      let deferred = 0;
      workers.forEach(({ pool }, i) => {
        pool.on('job:attempt:completed', () => (completedBy[i]! += 1));
        pool.on('job:run:deferred', () => (deferred += 1));
      });
      await first!.producer.enqueueMany(jobsOf('A', 500));
      const b = await first!.producer.enqueueMany(jobsOf('B', 10));
      const queue = queueOf(first!);

      // All of B within a generous bound for a loaded machine, by state (not by timing).
      await waitUntil(
        async () =>
          (await Promise.all(b.map((job) => queue.getJobState(job.id)))).every((s) => s === 'completed'),
        15_000,
        "tenant B's 10 jobs completed",
      );
      const aAnswered = downstream.count('A');
      const counts = await queue.getJobCounts('waiting', 'delayed', 'active', 'completed');
      expect(aAnswered).toBeLessThan(500);
      // A still has a backlog: most of its jobs are not done (the B jobs are among the completed).
      expect(counts.completed! - 10).toBeLessThan(500);
      expect(counts.waiting! + counts.delayed! + counts.active!).toBeGreaterThan(0);

      // Never more than N calls of one tenant at once, across both workers; A did reach N.
      expect(downstream.maxOpen.get('A')).toBe(2);
      expect(downstream.maxOpen.get('B')).toBeLessThanOrEqual(2);
      // Both workers delivered (the limit held across them, not per process), and A's extra runs were deferred.
      expect(completedBy.every((n) => n > 0)).toBe(true);
      expect(deferred).toBeGreaterThan(0);
      // A deferral uses no attempt and records nothing: each completed job has one attempt, no history.
      const done = await queue.getCompleted(0, -1);
      expect(done.length).toBeGreaterThan(10);
      for (const job of done) {
        expect(decodeStoredResult(job.returnvalue)?.attempts).toBe(1);
        expect(job.data.ferry?.attempts ?? []).toEqual([]);
      }
    },
  );

  it("without it, tenant B's jobs wait behind tenant A's backlog", { timeout: 90_000 }, async () => {
    const downstream = await startCountingDownstream(10);
    const workers = await twoWorkers(downstream.url, undefined);
    const [first] = workers;
    await first!.producer.enqueueMany(jobsOf('A', 500));
    const b = await first!.producer.enqueueMany(jobsOf('B', 10));
    for (const job of b) await first!.producer.waitFor('svc', job.id, { timeoutMs: 60_000 });
    // By completion order: B's last call was answered after most of A's (FIFO: B comes after A's 500).
    const lastB = downstream.answered.lastIndexOf('B');
    const aBeforeLastB = downstream.answered.slice(0, lastB).filter((t) => t === 'A').length;
    expect(aBeforeLastB).toBeGreaterThan(450);
    // And more than N of A's calls were open at once: nothing held A back.
    expect(downstream.maxOpen.get('A')).toBeGreaterThan(2);
    // Unset, no lease is ever taken: no key of it exists.
    expect(await redis.client.keys(`${first!.prefix}:*tenants*`)).toEqual([]);
  });

  it(
    "takes a Redis error on the lease for Ferry's failure: backoff, no attempt used",
    { timeout: 60_000 },
    async () => {
      const downstream = await startCountingDownstream(10);
      const ferry = await createTestFerry(redis, { services: services(downstream.url, 2), start: false });
      const keys = tenantLeaseKeys(ferry.prefix, 'svc');
      // A counts key of the wrong type: every take fails with WRONGTYPE until it is gone.
      await redis.client.set(keys.counts, 'not a hash');
      const [job] = await ferry.producer.enqueueMany(jobsOf('A', 1));
      await ferry.start();
      const queue = queueOf(ferry);
      await waitUntil(
        async () => (await queue.getJob(job!.id))?.data.ferry?.internalErrors === 1,
        15_000,
        'the failed take recorded as an internal error',
      );
      expect(downstream.answered).toEqual([]);
      await redis.client.del(keys.counts);
      const view = await ferry.producer.waitFor('svc', job!.id, { timeoutMs: 20_000 });
      expect(view.state).toBe('completed');
      expect(view.result?.attempts).toBe(1);
      expect(ferry.logs.some((line) => line.includes('could not take a tenant lease'))).toBe(true);
    },
  );

  it('gives the leases of calls aborted at shutdown back', { timeout: 60_000 }, async () => {
    const downstream = await startCountingDownstream(120_000);
    const ferry = await createTestFerry(redis, { services: services(downstream.url, 2) });
    const keys = tenantLeaseKeys(ferry.prefix, 'svc');
    await ferry.producer.enqueueMany(jobsOf('A', 3));
    await waitUntil(() => downstream.maxOpen.get('A') === 2, 15_000, "two of A's calls open");
    expect(await redis.client.hget(keys.counts, 'A')).toBe('2');
    await ferry.pool.close({ deadlineMs: 100, handbackMs: 5_000 });
    expect(await redis.client.exists(keys.leases, keys.counts)).toBe(0);
  });

  it(
    "a lost worker's lease blocks its tenant only until the lease expires",
    { timeout: 60_000 },
    async () => {
      const downstream = await startCountingDownstream(10);
      const prefix = uniquePrefix();
      // What a worker killed mid-call leaves behind: a lease of tenant A (limit 1) that nobody gives back. Its
      // attempt timeout is 500 ms, so it expires 500 ms + LEASE_MARGIN_MS after it was taken.
      const lost = createTenantLeases({ connection: redis.client, prefix, service: 'svc', limit: 1 });
      expect(await lost.take('A', 'lost-job', 500)).toBeDefined();
      const keys = tenantLeaseKeys(prefix, 'svc');

      const ferry = await createTestFerry(redis, { services: services(downstream.url, 1), prefix });
      const [a] = await ferry.producer.enqueueMany(jobsOf('A', 1));
      const [b] = await ferry.producer.enqueueMany(jobsOf('B', 1));
      await ferry.producer.waitFor('svc', b!.id, { timeoutMs: 15_000 });
      // B flowed; A has not been called while the lost lease lives.
      if ((await redis.client.zscore(keys.leases, 'A\0lost-job')) !== null)
        expect(downstream.count('A')).toBe(0);

      const view = await ferry.producer.waitFor('svc', a!.id, { timeoutMs: 30_000 });
      expect(view.state).toBe('completed');
      expect(view.result?.attempts).toBe(1);
      expect(downstream.count('A')).toBe(1);
      // The lost lease was reclaimed, and the job's own lease given back: nothing is left.
      await until(
        async () => ((await redis.client.exists(keys.leases, keys.counts)) === 0 ? true : undefined),
        5_000,
        () => 'lease keys emptied',
      );
    },
  );
});
