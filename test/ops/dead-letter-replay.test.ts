/** Replay: dead letters back on their service queues, filtered, dry, paced, and exactly once across interruptions. */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import type { DeadLetterRecord, JobData } from '../../src/core/job.ts';
import {
  DEAD_LETTERED_FIELD,
  deadLetterJobId,
  idempotentJobId,
  serviceQueueName,
} from '../../src/core/queue-layout.ts';
import type { DeadLetterFilter } from '../../src/dead-letter/list-query.ts';
import { DeadLetterPurger } from '../../src/dead-letter/purge.ts';
import { DeadLetterReader } from '../../src/dead-letter/reader.ts';
import { reconcileJob } from '../../src/dead-letter/reconciler.ts';
import { DeadLetterWriter } from '../../src/dead-letter/writer.ts';
import {
  MAX_REPORT_ITEMS,
  replayDeadLetters,
  type ReplayDeps,
  replayJobData,
  replayJobId,
  type ReplayProgress,
} from '../../src/ops/dead-letter-replay.ts';
import { aRecord, type DeadLetterKit, deadLetterKit, T } from '../dead-letter/support.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService, type TestFerry } from '../helpers/ferry.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';

const redis = await startRedis();

function queueOf(prefix: string, service: string): Queue<JobData> {
  const queue = new Queue<JobData>(serviceQueueName(service), { connection: redis.client, prefix });
  onTestFinished(() => queue.close());
  return queue;
}

/**
 * Every key under the prefix with its type, content and whether it expires: "nothing changed" means this is
 * equal. Content, not DUMP: a read can advance a hash table's incremental rehash, which reorders DUMP's bytes.
 */
async function dump(client: Redis, prefix: string): Promise<[string, string, unknown, boolean][]> {
  const keys = (await client.keys(`${prefix}:*`)).sort();
  const read = async (key: string, type: string): Promise<unknown> => {
    switch (type) {
      case 'string':
        return client.get(key);
      case 'hash':
        return Object.entries(await client.hgetall(key)).sort();
      case 'list':
        return client.lrange(key, 0, -1);
      case 'set':
        return (await client.smembers(key)).sort();
      case 'zset':
        return client.zrangebyscore(key, '-inf', '+inf', 'WITHSCORES');
      case 'stream':
        return client.xrange(key, '-', '+');
      default:
        throw new Error(`${key}: unexpected type ${type}`);
    }
  };
  return Promise.all(
    keys.map(async (key): Promise<[string, string, unknown, boolean]> => {
      const type = await client.type(key);
      return [key, type, await read(key, type), (await client.pttl(key)) >= 0];
    }),
  );
}

/** Four dead letters that differ in every filterable field, oldest first. */
async function fourDeadLetters(kit: DeadLetterKit): Promise<Record<'a' | 'b' | 'c' | 'd', string>> {
  return {
    a: await kit.write({ tenant: 'acme', deadLetteredAt: T }),
    b: await kit.write({
      operation: 'updateContact',
      tenant: 'beta',
      finalError: { type: 'ClientError', message: 'HTTP 400', status: 400 },
      deadLetteredAt: T + 10,
    }),
    c: await kit.write({
      service: 'mail',
      operation: 'send',
      finalError: { type: 'TimeoutError', message: 'timed out' },
      deadLetteredAt: T + 20,
    }),
    d: await kit.write({
      tenant: 'acme',
      idempotencyKey: 'order-42',
      finalError: { type: 'RateLimitedError', message: 'HTTP 429', status: 429 },
      deadLetteredAt: T + 30,
    }),
  };
}

const FILTERS: [string, DeadLetterFilter | { ids: string[] }, ('a' | 'b' | 'c' | 'd')[]][] = [
  ['service', { service: 'mail' }, ['c']],
  ['operation', { operation: 'createContact' }, ['a', 'd']],
  ['tenant', { tenant: 'acme' }, ['a', 'd']],
  ['errorType', { errorType: 'ClientError' }, ['b']],
  ['status', { status: 429 }, ['d']],
  ['since and until', { since: T + 10, until: T + 20 }, ['b', 'c']],
  ['since', { since: T + 25 }, ['d']],
  ['ids', { ids: ['b', 'd'] }, ['b', 'd']],
];

describe('replay by filter', () => {
  it.each(FILTERS)('by %s replays exactly the matching dead letters', async (_name, selection, expected) => {
    const kit = deadLetterKit(redis);
    const ids = await fourDeadLetters(kit);
    const deps: ReplayDeps = { connection: redis.client, prefix: kit.prefix };
    const options =
      'ids' in selection
        ? { ids: selection.ids.map((k) => ids[k as keyof typeof ids]) }
        : { filter: selection };
    const report = await replayDeadLetters(deps, options);

    const wanted = expected.map((k) => ids[k]);
    expect(report).toMatchObject({
      dryRun: false,
      matched: wanted.length,
      replayed: wanted.length,
      skipped: 0,
    });
    // Newest first, as a list shows them (ids: in the order given).
    expect(report.items.map((item) => item.id)).toEqual('ids' in selection ? wanted : [...wanted].reverse());
    for (const [k, id] of Object.entries(ids)) {
      const service = k === 'c' ? 'mail' : 'crm';
      const job = await queueOf(kit.prefix, service).getJob(replayJobId(id));
      expect(job !== undefined, `${k} replayed`).toBe(expected.includes(k as 'a'));
      expect((await kit.reader.show(id)) === undefined, `${k} deleted`).toBe(expected.includes(k as 'a'));
    }
    // Nothing else landed on the queues.
    const counts = await Promise.all(
      ['crm', 'mail'].map((s) => queueOf(kit.prefix, s).getJobCountByTypes('wait')),
    );
    expect(counts[0]! + counts[1]!).toBe(wanted.length);
  });

  it('replays a job with the same input, tenant, metadata and idempotency key, fresh attempts, and its origin', async () => {
    const kit = deadLetterKit(redis);
    const keyed = await kit.write({ tenant: 'acme', idempotencyKey: 'order-42', metadata: { from: 'shop' } });
    const keyless = await kit.write({ sourceJobId: '17' });
    await replayDeadLetters({ connection: redis.client, prefix: kit.prefix });
    const queue = queueOf(kit.prefix, 'crm');

    const job = await queue.getJob(replayJobId(keyed));
    expect(job?.name).toBe('createContact');
    expect(job?.data).toEqual({
      input: expect.anything() as unknown,
      tenant: 'acme',
      idempotencyKey: 'order-42',
      metadata: { from: 'shop' },
      replayOf: keyed,
    });
    expect(job?.data.ferry).toBeUndefined();
    // Without a key the downstream saw the job id as Idempotency-Key: it sees it again.
    expect((await queue.getJob(replayJobId(keyless)))?.data.idempotencyKey).toBe('17');
  });

  it('skips unknown ids, ids outside the scope, ids the filter excludes, and services no longer configured', async () => {
    const kit = deadLetterKit(redis);
    const ids = await fourDeadLetters(kit);
    const deps = { connection: redis.client, prefix: kit.prefix, services: new Set(['crm']) };
    const report = await replayDeadLetters(deps, {
      ids: ['dl-crm.nope.1', 'meta', ids.b, ids.c, ids.a, ids.d, ids.a],
      filter: { tenant: 'acme' },
      scope: { tenants: ['acme', 'beta'] },
    });
    expect(report.items.map(({ id, outcome, reason }) => [id, outcome, reason])).toEqual([
      ['dl-crm.nope.1', 'skipped', 'not-found'],
      ['meta', 'skipped', 'not-found'],
      [ids.b, 'skipped', 'not-matching'],
      [ids.c, 'skipped', 'not-found'], // no tenant: outside a tenant scope
      [ids.a, 'replayed', undefined],
      [ids.d, 'replayed', undefined],
    ]);
    expect(report).toMatchObject({ matched: 6, replayed: 2, skipped: 4, failed: 0 });

    const unconfigured = await replayDeadLetters(deps, { filter: { service: 'mail' } });
    expect(unconfigured.items).toEqual([
      { id: ids.c, service: 'mail', operation: 'send', outcome: 'skipped', reason: 'unknown-service' },
    ]);
    expect(await kit.reader.show(ids.c)).toBeDefined();
  });

  it('refuses bad options before touching anything', async () => {
    const deps = { connection: redis.client, prefix: 'unused' };
    await expect(replayDeadLetters(deps, { ratePerSecond: 0 })).rejects.toMatchObject({
      type: 'ValidationError',
      field: 'ratePerSecond',
    });
    await expect(replayDeadLetters(deps, { limit: 0 })).rejects.toMatchObject({ field: 'limit' });
    await expect(replayDeadLetters(deps, { filter: { status: 42 } })).rejects.toMatchObject({
      field: 'status',
    });
    await expect(replayDeadLetters(deps, { onlyWhenClosed: true })).rejects.toMatchObject({
      type: 'ConfigurationError',
    });
  });
});

describe('dry run', () => {
  it('reports exactly which would go and changes nothing in Redis', async () => {
    const kit = deadLetterKit(redis);
    const ids = await fourDeadLetters(kit);
    await kit.raw.remove(ids.b); // a stale index entry: a real run or a list would clean it up, a dry run may not
    const before = await dump(redis.client, kit.prefix);
    const report = await replayDeadLetters(
      {
        connection: redis.client,
        prefix: kit.prefix,
        services: new Set(['crm', 'mail']),
        isServiceOpen: (service) => Promise.resolve(service === 'mail'),
      },
      { dryRun: true, onlyWhenClosed: true, ratePerSecond: 1 },
    );
    expect(await dump(redis.client, kit.prefix)).toEqual(before);
    expect(report.items.map(({ id, outcome, jobId, reason }) => [id, outcome, jobId, reason])).toEqual([
      [ids.d, 'would-replay', replayJobId(ids.d), undefined],
      [ids.c, 'skipped', undefined, 'breaker-open'],
      [ids.a, 'would-replay', replayJobId(ids.a), undefined],
    ]);
    expect(report).toMatchObject({ dryRun: true, matched: 3, replayed: 2, skipped: 1, interrupted: false });
  });
});

describe('rate', () => {
  it('never adds faster than the cap (100 at 50/s take at least 1.98 s)', async () => {
    const kit = deadLetterKit(redis);
    for (let i = 0; i < 100; i++) await kit.write({ deadLetteredAt: T + i });
    const progress: ReplayProgress[] = [];
    const report = await replayDeadLetters(
      { connection: redis.client, prefix: kit.prefix },
      { ratePerSecond: 50, onProgress: (p) => progress.push(p) },
    );
    expect(report.replayed).toBe(100);
    const jobs = await queueOf(kit.prefix, 'crm').getJobs(['wait']);
    const times = jobs.map((job) => job.timestamp).sort((x, y) => x - y);
    expect(times).toHaveLength(100);
    expect(times.at(-1)! - times[0]!).toBeGreaterThanOrEqual(1_975);
    // No one-second window holds more than 50 adds: +1 for both ends of the window, +2 for the jitter between
    // an add's turn and its timestamp (a round trip apart, on a loaded machine).
    for (const [i, start] of times.entries()) {
      expect(times.slice(i).filter((t) => t < start + 1_000).length).toBeLessThanOrEqual(53);
    }
    expect(report.elapsedMs).toBeGreaterThanOrEqual(1_980);
    expect(report.elapsedMs).toBeLessThan(10_000);
    // The total was known up front (service and time only), so every report had an ETA.
    expect(progress.every((p) => p.matched === 100 && p.matchedIsTotal && p.etaMs !== undefined)).toBe(true);
    expect(progress.at(-1)).toMatchObject({ done: 100, replayed: 100, etaMs: 0 });
  });
});

describe('onlyWhenClosed', () => {
  it('skips the dead letters of a service whose breaker is open', async () => {
    const kit = deadLetterKit(redis);
    const ids = await fourDeadLetters(kit);
    const asked: string[] = [];
    const report = await replayDeadLetters(
      {
        connection: redis.client,
        prefix: kit.prefix,
        isServiceOpen: (service) => {
          asked.push(service);
          return Promise.resolve(service === 'crm');
        },
      },
      { onlyWhenClosed: true },
    );
    expect(report.items.map(({ id, outcome, reason }) => [id, outcome, reason])).toEqual([
      [ids.d, 'skipped', 'breaker-open'],
      [ids.c, 'replayed', undefined],
      [ids.b, 'skipped', 'breaker-open'],
      [ids.a, 'skipped', 'breaker-open'],
    ]);
    expect(await kit.reader.show(ids.a)).toBeDefined();
    // Asked once per service, not once per dead letter.
    expect(asked.sort()).toEqual(['crm', 'mail']);
  });
});

describe('exactly once', () => {
  it('a crash between add and delete: the re-run adds nothing and deletes the dead letter', async () => {
    const kit = deadLetterKit(redis);
    const record: DeadLetterRecord = aRecord({ idempotencyKey: 'k-1' });
    const { id } = await kit.writer.write(record);
    const queue = queueOf(kit.prefix, 'crm');
    // What a run that died after its add left behind (without the marker, as after the NOSCRIPT fallback).
    await queue.add(record.operation, replayJobData(id, record), { jobId: replayJobId(id) });

    const report = await replayDeadLetters({ connection: redis.client, prefix: kit.prefix });
    expect(report).toMatchObject({ replayed: 1, failed: 0 });
    expect(await queue.getJobCounts('wait')).toEqual({ wait: 1 });
    expect(await kit.reader.show(id)).toBeUndefined();
  });

  it('a crash after add, re-run after the replayed job was removed: the marker keeps it from running twice', async () => {
    const kit = deadLetterKit(redis);
    const id = await kit.write();
    const queue = queueOf(kit.prefix, 'crm');
    const marker = queue.toKey(`ferry:replayed:${id}`);
    await redis.client.set(marker, replayJobId(id), 'PX', 60_000); // the add happened...
    // ...and its job completed and was removed (removeOnComplete) before the re-run.
    const report = await replayDeadLetters({ connection: redis.client, prefix: kit.prefix });
    expect(report.items).toMatchObject([{ id, outcome: 'replayed' }]);
    expect(await queue.getJobCounts('wait')).toEqual({ wait: 0 });
    expect(await kit.reader.show(id)).toBeUndefined();
    expect(await redis.client.exists(marker)).toBe(0);
  });

  it('a dead letter deleted while it waits for its turn (purge, concurrent replay) is not added', async () => {
    const kit = deadLetterKit(redis);
    const first = await kit.write({ deadLetteredAt: T + 1 });
    const second = await kit.write({ deadLetteredAt: T });
    const queue = queueOf(kit.prefix, 'crm');
    let deleted: Promise<boolean> | undefined;
    const report = await replayDeadLetters(
      { connection: redis.client, prefix: kit.prefix },
      {
        // 1/s: the second waits a second for its turn, long after the first finished and this ran.
        ratePerSecond: 1,
        onProgress: (progress) => {
          if (progress.last?.id === first) deleted = kit.purger.delete(second);
        },
      },
    );
    expect(await deleted).toBe(true);
    expect(report.items).toMatchObject([
      { id: first, outcome: 'replayed' },
      { id: second, outcome: 'skipped', reason: 'not-found' },
    ]);
    expect((await queue.getJobs(['wait'])).map((job) => job.id)).toEqual([replayJobId(first)]);
  });

  it('a worker that died between writing a dead letter and marking its job: once replayed, it is not written again', async () => {
    const kit = deadLetterKit(redis);
    const queue = queueOf(kit.prefix, 'crm');
    // The failed source job, unmarked, and its dead letter (the worker died before markDeadLettered).
    const source = await queue.add(
      'createContact',
      { input: { n: 1 }, idempotencyKey: 'order-7' },
      {
        jobId: idempotentJobId('order-7'),
      },
    );
    const record = aRecord({
      sourceJobId: source.id!,
      enqueuedAt: source.timestamp,
      idempotencyKey: 'order-7',
    });
    const { id } = await kit.writer.write(record);
    expect(id).toBe(deadLetterJobId('crm', source.id!, source.timestamp));

    expect(await replayDeadLetters({ connection: redis.client, prefix: kit.prefix })).toMatchObject({
      replayed: 1,
    });
    // The failed-set sweep (or the worker's re-run) finds the source job: it must not write the dead letter again.
    expect(await reconcileJob('crm', queue, source.id!, kit.writer, T)).toBe(false);
    expect(await kit.reader.show(id)).toBeUndefined();
    expect((await replayDeadLetters({ connection: redis.client, prefix: kit.prefix })).replayed).toBe(0);
  });

  it('the same for a purged dead letter: deleted, it is not written again by the sweep', async () => {
    const kit = deadLetterKit(redis);
    const queue = queueOf(kit.prefix, 'crm');
    const source = await queue.add(
      'createContact',
      { input: { n: 2 } },
      { jobId: idempotentJobId('order-8') },
    );
    const { id } = await kit.writer.write(
      aRecord({ sourceJobId: source.id!, enqueuedAt: source.timestamp, idempotencyKey: 'order-8' }),
    );
    const purger = new DeadLetterPurger({ connection: redis.client, prefix: kit.prefix });
    onTestFinished(() => purger.close());
    expect(await purger.delete(id)).toBe(true);
    expect(await reconcileJob('crm', queue, source.id!, kit.writer, T)).toBe(false);
    expect(await kit.reader.show(id)).toBeUndefined();
  });

  it('marks only the very source job: a later job under the same idempotency id is left alone', async () => {
    const kit = deadLetterKit(redis);
    const queue = queueOf(kit.prefix, 'crm');
    const later = await queue.add('createContact', { input: null }, { jobId: idempotentJobId('k-9') });
    await kit.writer.write(
      aRecord({ sourceJobId: later.id!, enqueuedAt: later.timestamp - 60_000, idempotencyKey: 'k-9' }),
    );
    await replayDeadLetters({ connection: redis.client, prefix: kit.prefix });
    expect(await redis.client.hget(queue.toKey(later.id!), DEAD_LETTERED_FIELD)).toBeNull();
  });

  it.each([1, 2, 3, 4])(
    'interrupted at a random point (seed %i), then run again: every dead letter delivered exactly once, none lost',
    async (seed) => {
      const random = mulberry32(seed);
      const downstream = await startDownstream();
      onTestFinished(() => downstream.close());
      const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
      const ids = await writeDeadLetters(ferry, 60, (i) => ({ idempotencyKey: `key-${i}` }));
      const deps = { connection: redis.client, prefix: ferry.prefix };

      const controller = new AbortController();
      const stopAt = 1 + Math.floor(random() * 40);
      const first = await replayDeadLetters(deps, {
        ratePerSecond: 100,
        signal: controller.signal,
        onProgress: (progress) => {
          if (progress.done === stopAt) controller.abort();
        },
      });
      // Those already past their turn when it stopped finish; at 100/s, 60 take 0.6 s: most are still waiting.
      expect(first.interrupted).toBe(true);
      expect(first.replayed).toBeGreaterThanOrEqual(stopAt);
      expect(first.replayed).toBeLessThan(60);
      expect(first.items.map((item) => item.id)).toEqual([...ids].reverse().slice(0, first.replayed));
      const second = await replayDeadLetters(deps);
      expect(first.replayed + second.replayed).toBe(60);
      expect(second.interrupted).toBe(false);

      await expectEachDeliveredOnce(ferry, ids, downstream.requests);
    },
  );

  it('interrupted by a timer mid-batch, twice, then finished: exactly once', async () => {
    const downstream = await startDownstream();
    onTestFinished(() => downstream.close());
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const ids = await writeDeadLetters(ferry, 80, (i) => ({ idempotencyKey: `key-${i}` }));
    const deps = { connection: redis.client, prefix: ferry.prefix };
    let total = 0;
    for (const afterMs of [37, 113]) {
      const report = await replayDeadLetters(deps, {
        ratePerSecond: 300,
        signal: AbortSignal.timeout(afterMs),
      });
      expect(report.interrupted).toBe(true);
      total += report.replayed;
    }
    total += (await replayDeadLetters(deps)).replayed;
    expect(total).toBe(80);
    await expectEachDeliveredOnce(ferry, ids, downstream.requests);
  });
});

describe('replayed jobs run', () => {
  it('completes on a real worker with the original Idempotency-Key', async () => {
    const downstream = await startDownstream();
    onTestFinished(() => downstream.close());
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const [id] = await writeDeadLetters(ferry, 1, () => ({
      idempotencyKey: 'order-7',
      input: { name: 'x' },
    }));
    await replayDeadLetters({ connection: redis.client, prefix: ferry.prefix });
    const view = await ferry.producer.waitFor('svc', replayJobId(id!), { timeoutMs: 10_000 });
    expect(view).toMatchObject({ state: 'completed', attempts: 1, idempotencyKey: 'order-7' });
    expect(downstream.requests.map((r) => [r.headers['idempotency-key'], r.body])).toEqual([
      ['order-7', '{"name":"x"}'],
    ]);
  });

  it('gets fresh attempts: failing again, it uses all of them and gets a new dead letter, which the same run does not replay', async () => {
    const downstream = await startDownstream(() => ({ status: 500, body: { error: 'down' } }));
    onTestFinished(() => downstream.close());
    // A breaker that never opens: the point is the attempts, not the hold.
    const services = oneService(downstream.url, { breaker: { volumeThreshold: 1_000_000 } });
    const ferry = await createTestFerry(redis, { services });
    // The original used all its attempts: a replay that kept them would dead-letter at once, without a call.
    const ids = await writeDeadLetters(ferry, 5, (i) => ({
      idempotencyKey: `key-${i}`,
      attempts: [1, 2, 3].map((attempt) => ({
        attempt,
        outcome: 'failed' as const,
        at: T,
        durationMs: 1,
        type: 'ServerError' as const,
        status: 500,
        message: 'HTTP 500',
      })),
    }));
    const deps = { connection: redis.client, prefix: ferry.prefix };
    // Slow enough that the first replayed jobs are dead-lettered again while the run goes on.
    const report = await replayDeadLetters(deps, { ratePerSecond: 2 });
    expect(report.replayed).toBe(5);

    const letters = new DeadLetterReader({ connection: redis.client, prefix: ferry.prefix });
    await expect.poll(async () => (await letters.list()).items.length, { timeout: 15_000 }).toBe(5);
    const again = (await letters.list()).items;
    expect(again.map((item) => item.sourceJobId).sort()).toEqual(ids.map(replayJobId).sort());
    for (const item of again) expect(item.attempts.filter((a) => a.outcome === 'failed')).toHaveLength(3);
    for (const [i] of ids.entries()) {
      expect(downstream.requests.filter((r) => r.headers['idempotency-key'] === `key-${i}`)).toHaveLength(3);
    }
  });
});

describe('large replays', () => {
  it('10,000 dead letters without a cap: all replayed, a capped report', async () => {
    const kit = deadLetterKit(redis);
    await writeMany(redis, kit.prefix, 10_000);
    let peakHeap = 0;
    const heapBefore = process.memoryUsage().heapUsed;
    const report = await replayDeadLetters(
      { connection: redis.client, prefix: kit.prefix },
      {
        onProgress: (progress) => {
          if (progress.done % 500 === 0) peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed);
        },
      },
    );
    const rate = Math.round(report.replayed / (report.elapsedMs / 1_000));
    // eslint-disable-next-line no-console -- the figure, printed for whoever reads the log; speed is bench:redrive's
    console.log(
      `replay of 10,000 dead letters: ${report.elapsedMs} ms, ${rate} jobs/s, heap +${Math.round((peakHeap - heapBefore) / 1e6)} MB`,
    );
    expect(report).toMatchObject({ matched: 10_000, replayed: 10_000, failed: 0 });
    expect(report.items).toHaveLength(MAX_REPORT_ITEMS);
    expect(report.itemsOmitted).toBe(10_000 - MAX_REPORT_ITEMS);
    expect(await queueOf(kit.prefix, 'crm').getJobCounts('wait')).toEqual({ wait: 10_000 });
    expect(await kit.reader.countByService()).toEqual(new Map());
  }, 120_000);

  it('honours limit, and reports a running count when the filter needs the records', async () => {
    const kit = deadLetterKit(redis);
    for (let i = 0; i < 30; i++)
      await kit.write({ tenant: i % 2 === 0 ? 'even' : 'odd', deadLetteredAt: T + i });
    const progress: ReplayProgress[] = [];
    const report = await replayDeadLetters(
      { connection: redis.client, prefix: kit.prefix },
      { filter: { tenant: 'odd' }, limit: 10, onProgress: (p) => progress.push(p) },
    );
    expect(report).toMatchObject({ matched: 10, replayed: 10, interrupted: false });
    expect(progress.every((p) => !p.matchedIsTotal && p.etaMs === undefined)).toBe(true);
    expect((await kit.reader.list({ tenant: 'odd' })).items).toHaveLength(5);
  });
});

/** Dead letters of `svc` on the test ferry's prefix, with ids to compare with. */
async function writeDeadLetters(
  ferry: TestFerry,
  count: number,
  overrides: (i: number) => Partial<DeadLetterRecord>,
): Promise<string[]> {
  const writer = new DeadLetterWriter({ connection: ferry.connection, prefix: ferry.prefix });
  onTestFinished(() => writer.close());
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const record = aRecord({ service: 'svc', operation: 'create', deadLetteredAt: T + i, ...overrides(i) });
    ids.push((await writer.write(record)).id);
  }
  return ids;
}

async function writeMany(testRedis: TestRedis, prefix: string, count: number): Promise<void> {
  const writer = new DeadLetterWriter({ connection: testRedis.client, prefix });
  onTestFinished(() => writer.close());
  for (let start = 0; start < count; start += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, count - start) }, (_, k) =>
        writer.write(aRecord({ deadLetteredAt: T + start + k })),
      ),
    );
  }
}

/** Each dead letter: one job on the queue, completed, one downstream call with its key; no dead letter left. */
async function expectEachDeliveredOnce(
  ferry: TestFerry,
  ids: readonly string[],
  requests: readonly { headers: Record<string, string | string[] | undefined> }[],
): Promise<void> {
  const queue = queueOf(ferry.prefix, 'svc');
  await expect
    .poll(async () => (await queue.getJobCounts('completed')).completed, { timeout: 15_000 })
    .toBe(ids.length);
  expect(await queue.getJobCounts('wait', 'active', 'delayed', 'failed')).toEqual({
    wait: 0,
    active: 0,
    delayed: 0,
    failed: 0,
  });
  for (const id of ids) expect((await queue.getJob(replayJobId(id)))?.finishedOn).toBeDefined();
  const perKey = new Map<string, number>();
  for (const request of requests) {
    const key = String(request.headers['idempotency-key']);
    perKey.set(key, (perKey.get(key) ?? 0) + 1);
  }
  expect([...perKey.values()].every((n) => n === 1)).toBe(true);
  expect(perKey.size).toBe(ids.length);
  expect(await redis.client.zcard(`${ferry.prefix}:{dead-letter}:ferry:by-time`)).toBe(0);
}

/** A small seeded PRNG, so a failing seed can be run again. */
function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}
