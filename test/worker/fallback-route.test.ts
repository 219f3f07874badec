/**
 * Fallback routing while a breaker is open (issue 16 §3), on a real redis-server and real local HTTP servers:
 * one worker pool serves only `sms-primary`, another only `sms-backup`; the primary's breaker is opened the way
 * operators do (src/ops/breaker-control.ts).
 */
import { Writable } from 'node:stream';

import { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import { entryFromXrange, toDispatch } from '../../src/api/job-events/map.ts';
import type { ServiceBreaker } from '../../src/breakers/index.ts';
import type { DeliveryEventMap } from '../../src/core/delivery-events.ts';
import type { JobData, JobResult } from '../../src/core/job.ts';
import { createLogger } from '../../src/core/logger.ts';
import { idempotentJobId, serviceQueueName } from '../../src/core/queue-layout.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import type { ServicesConfig } from '../../src/core/services/types.ts';
import { decodeStoredResult } from '../../src/core/stored-result.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { closeBreaker, openBreaker } from '../../src/ops/breaker-control.ts';
import { Producer } from '../../src/producer/index.ts';
import { createEnvSecretResolver } from '../../src/secrets/env-provider.ts';
import { createFallbackRouter, effectiveIdempotencyKey } from '../../src/worker/fallback-route.ts';
import { TargetQueues } from '../../src/worker/target-queues.ts';
import { createWorkerPool, type WorkerPool } from '../../src/worker/worker-pool.ts';
import { type Downstream, startDownstream } from '../helpers/downstream.ts';
import { promtoolCheckMetrics } from '../helpers/promtool.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { waitUntil } from '../helpers/until.ts';

const redis = await startRedis();
const primary = await startDownstream();
const backup = await startDownstream();
const third = await startDownstream();

const PRIMARY = 'sms-primary';
const BACKUP = 'sms-backup';
const THIRD = 'sms-third';

function smsService(baseUrl: string, fallback?: string): Record<string, unknown> {
  return {
    baseUrl,
    timeoutMs: 2_000,
    concurrency: 4,
    retry: { attempts: 3, backoff: { delayMs: 50, maxDelayMs: 200 } },
    ...(fallback === undefined ? {} : { fallback: { service: fallback } }),
    operations: {
      send: { method: 'POST', path: '/messages', body: '{{ input }}' },
      status: { method: 'GET', path: '/messages/{{ input.id }}' },
    },
  };
}

/** The services file with `sms-primary`'s `fallback: { service: sms-backup }`. */
function servicesConfig(): ServicesConfig {
  return parseServicesConfig(
    {
      services: {
        [PRIMARY]: smsService(primary.url, BACKUP),
        [BACKUP]: smsService(backup.url, THIRD),
        [THIRD]: smsService(third.url),
      },
    },
    { env: {} },
  );
}

interface Setup {
  prefix: string;
  config: ServicesConfig;
  producer: Producer;
  connection: Redis;
  logs: string[];
  pool(services: readonly string[]): Promise<WorkerPool>;
  queue(service: string): Queue<JobData, JobResult>;
}

async function setup(): Promise<Setup> {
  const prefix = uniquePrefix();
  const config = servicesConfig();
  const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  const producer = new Producer({ connection: redis.url, prefix, services: config.services });
  const logs: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(line);
      callback();
    },
  });
  const logger = createLogger({ level: 'info', destination });
  const pools: WorkerPool[] = [];
  const queues = new Map<string, Queue<JobData, JobResult>>();
  onTestFinished(async () => {
    await Promise.all(pools.map((pool) => pool.close({ deadlineMs: 2_000 })));
    await Promise.all([...queues.values()].map((queue) => queue.close()));
    await producer.close();
    connection.disconnect();
  });
  return {
    prefix,
    config,
    producer,
    connection,
    logs,
    async pool(services) {
      const pool = createWorkerPool({
        config,
        services,
        connection,
        prefix,
        secrets: createEnvSecretResolver({}),
        logger,
        lockDurationMs: 5_000,
        stalledIntervalMs: 1_000,
        sweepIntervalMs: 1_000,
      });
      pools.push(pool);
      await pool.start();
      return pool;
    },
    queue(service) {
      let queue = queues.get(service);
      if (queue === undefined) {
        queue = new Queue(serviceQueueName(service), { connection: redis.client, prefix });
        queues.set(service, queue);
      }
      return queue;
    },
  };
}

function keysSeen(downstream: Downstream, since: number): Map<string, number> {
  const seen = new Map<string, number>();
  for (const request of downstream.requests.slice(since)) {
    const key = String(request.headers['idempotency-key']);
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  return seen;
}

async function breakerSeen(pool: WorkerPool, service: string, state: string): Promise<void> {
  await waitUntil(
    () => pool.breakers.list().find((breaker) => breaker.name === service)?.state.state === state,
    10_000,
    `${service}'s breaker ${state} in the pool`,
  );
}

describe('fallback routing while the breaker is open', () => {
  it('moves every job of the open service to its fallback exactly once, and completes it with routedTo', async () => {
    const ferry = await setup();
    const ops = { connection: redis.client, prefix: ferry.prefix, config: ferry.config };
    await openBreaker(ops, PRIMARY, { forMs: 60_000, reason: 'provider outage' });
    const [primaryPool] = [await ferry.pool([PRIMARY]), await ferry.pool([BACKUP])];
    const routed: DeliveryEventMap['job:fallback:routed'][] = [];
    primaryPool.on('job:fallback:routed', (event) => routed.push(event));
    const metrics = createMetrics({
      config: ferry.config,
      services: [PRIMARY],
      connection: redis.client,
      prefix: ferry.prefix,
      processMetrics: false,
    });
    onTestFinished(() => metrics.close());
    metrics.observeDeliveries(primaryPool);
    await breakerSeen(primaryPool, PRIMARY, 'open');
    const primaryBefore = primary.requests.length;
    const backupBefore = backup.requests.length;

    // Half with the producer's own key, half with the default one; tenants and metadata on some.
    const N = 24;
    const requests = Array.from({ length: N }, (_, i) => ({
      service: PRIMARY,
      operation: 'send',
      input: { to: `+4915100000${String(i).padStart(2, '0')}`, text: `hello ${i}` },
      ...(i % 2 === 0 ? { idempotencyKey: `sms-${i}` } : {}),
      ...(i % 3 === 0 ? { tenant: `tenant-${i % 4}` } : {}),
      ...(i % 4 === 0 ? { metadata: { order: i } } : {}),
    }));
    const accepted = await ferry.producer.enqueueMany(requests);
    const views = await Promise.all(
      accepted.map((job) => ferry.producer.waitFor(PRIMARY, job.id, { timeoutMs: 20_000 })),
    );

    const backupQueue = ferry.queue(BACKUP);
    const expectedKeys = new Set<string>();
    for (const [i, view] of views.entries()) {
      expect(view.state, `job ${i}`).toBe('completed');
      const source = await Job.fromId<JobData, JobResult>(ferry.queue(PRIMARY), accepted[i]!.id);
      const key = effectiveIdempotencyKey(ferry.config.services.get(PRIMARY)!, {
        id: source!.id!,
        name: source!.name,
        data: source!.data,
        createdAt: source!.timestamp,
        priority: 0,
      });
      if (i % 2 === 0) expect(key).toBe(`sms-${i}`);
      expectedKeys.add(key);
      const routedTo = { service: BACKUP, jobId: idempotentJobId(key) };
      // Stored compactly (issue 20), read back as the job API reads it.
      expect(source!.returnvalue).toEqual([
        2,
        0,
        {},
        null,
        0,
        0,
        0,
        null,
        [routedTo.service, routedTo.jobId],
      ]);
      expect(decodeStoredResult(source!.returnvalue, source!.data)).toEqual({
        status: 0,
        headers: {},
        body: null,
        durationMs: 0,
        attempts: 0,
        ...(i % 4 === 0 ? { metadata: { order: i } } : {}),
        routedTo,
      });
      expect(source!.data.ferry?.routedTo).toEqual(routedTo);
      // The backup's job: same input, tenant, metadata and key, a fresh attempt count, its origin.
      const moved = await Job.fromId<JobData, JobResult>(backupQueue, routedTo.jobId);
      expect(moved?.name).toBe('send');
      expect(moved?.data).toEqual({
        input: requests[i]!.input,
        idempotencyKey: key,
        ...(requests[i]!.tenant === undefined ? {} : { tenant: requests[i]!.tenant }),
        ...(requests[i]!.metadata === undefined ? {} : { metadata: requests[i]!.metadata }),
        origin: { kind: 'fallback', source: { service: PRIMARY, jobId: accepted[i]!.id }, depth: 1 },
      });
    }
    // Each reaches the backup exactly once, with the key the primary would have sent; the primary got none.
    await waitUntil(
      async () => (await backupQueue.getJobCounts('completed')).completed === N,
      20_000,
      'every routed job completed on the backup',
    );
    const onBackup = keysSeen(backup, backupBefore);
    expect(new Set(onBackup.keys())).toEqual(expectedKeys);
    expect([...onBackup.values()].every((count) => count === 1)).toBe(true);
    expect(primary.requests.length - primaryBefore).toBe(0);
    for (const request of backup.requests.slice(backupBefore)) expect(request.url).toBe('/messages');

    // One event, one log line per route; the metric counts them.
    expect(routed).toHaveLength(N);
    const lines = ferry.logs.filter((line) => line.includes('job routed to its fallback service'));
    expect(lines).toHaveLength(N);
    expect(JSON.parse(lines[0]!)).toMatchObject({ service: PRIMARY, fallback: BACKUP, operation: 'send' });
    const { body } = await metrics.render();
    expect(body).toContain(`ferry_jobs_routed_total{service="${PRIMARY}",fallback="${BACKUP}"} ${N}`);
    expect(body).toContain(
      `ferry_jobs_finished_total{service="${PRIMARY}",operation="send",outcome="completed"} 0`,
    );
    const promtool = await promtoolCheckMetrics(body);
    expect(promtool.problems).toEqual([]);
    expect(promtool.code).toBe(0);

    // What SSE sends for the primary job: a completed event whose result names the route.
    const stream = (await redis.client.xrange(ferry.queue(PRIMARY).toKey('events'), '-', '+')) as [
      string,
      string[],
    ][];
    const completed = stream
      .map(entryFromXrange)
      .filter((entry) => entry.event === 'completed' && entry.fields.jobId === accepted[0]!.id);
    expect(completed).toHaveLength(1);
    const dispatch = toDispatch(PRIMARY, completed[0]!, { operation: 'send' }, undefined);
    expect(dispatch?.kind === 'event' ? dispatch.event : undefined).toMatchObject({
      event: 'completed',
      data: { result: { routedTo: { service: BACKUP, jobId: idempotentJobId('sms-0') } } },
    });
  });

  it('holds the job as before when both breakers are open, and routes nothing', async () => {
    const ferry = await setup();
    const ops = { connection: redis.client, prefix: ferry.prefix, config: ferry.config };
    await openBreaker(ops, PRIMARY, { forMs: 60_000 });
    await openBreaker(ops, BACKUP, { forMs: 60_000 });
    const pool = await ferry.pool([PRIMARY]);
    await breakerSeen(pool, PRIMARY, 'open');
    await breakerSeen(pool, BACKUP, 'open');
    const held: DeliveryEventMap['job:service:held'][] = [];
    pool.on('job:service:held', (event) => held.push(event));
    const primaryBefore = primary.requests.length;
    const [job] = await ferry.producer.enqueueMany([
      { service: PRIMARY, operation: 'send', input: { text: 'held' }, idempotencyKey: 'both-open' },
    ]);
    await waitUntil(() => held.length > 0, 10_000, 'the job held');
    expect(held[0]).toMatchObject({ service: PRIMARY, jobId: job!.id, reason: 'circuitOpen' });
    expect(await ferry.queue(PRIMARY).getJobState(job!.id)).not.toBe('completed');
    expect((await ferry.queue(BACKUP).getJobCounts()).waiting ?? 0).toBe(0);
    expect(await Job.fromId(ferry.queue(BACKUP), idempotentJobId('both-open'))).toBeUndefined();

    // The primary recovers first: the job goes to the primary itself, as it always did.
    await closeBreaker(ops, PRIMARY);
    const view = await ferry.producer.waitFor(PRIMARY, job!.id, { timeoutMs: 15_000 });
    expect(view.state).toBe('completed');
    expect(view.result?.status).toBe(200);
    expect((view.result as JobResult | undefined)?.routedTo).toBeUndefined();
    expect(keysSeen(primary, primaryBefore).get('both-open')).toBe(1);
    expect(await Job.fromId(ferry.queue(BACKUP), idempotentJobId('both-open'))).toBeUndefined();
  });

  it('routes the held jobs once the fallback recovers, without waiting out the hold', async () => {
    const ferry = await setup();
    const ops = { connection: redis.client, prefix: ferry.prefix, config: ferry.config };
    await openBreaker(ops, PRIMARY, { forMs: 60_000 });
    await openBreaker(ops, BACKUP, { forMs: 60_000 });
    const pool = await ferry.pool([PRIMARY]);
    await breakerSeen(pool, BACKUP, 'open');
    let heldAt = 0;
    pool.on('job:service:held', () => {
      heldAt ||= Date.now();
    });
    const [job] = await ferry.producer.enqueueMany([
      { service: PRIMARY, operation: 'send', input: { text: 'later' }, idempotencyKey: 'backup-back' },
    ]);
    await waitUntil(() => heldAt > 0, 10_000, 'the job held');
    // An open breaker holds the queue in slices of 10 s; the backup's close ends the slice in every worker.
    await closeBreaker(ops, BACKUP);
    const view = await ferry.producer.waitFor(PRIMARY, job!.id, { timeoutMs: 20_000 });
    expect((view.result as JobResult | undefined)?.routedTo).toEqual({
      service: BACKUP,
      jobId: idempotentJobId('backup-back'),
    });
    const source = await Job.fromId(ferry.queue(PRIMARY), job!.id);
    expect(source!.finishedOn! - heldAt).toBeLessThan(9_500);
  });

  it('a routed job whose new service opens in turn goes one hop further down the chain, with the same key', async () => {
    const ferry = await setup();
    const ops = { connection: redis.client, prefix: ferry.prefix, config: ferry.config };
    await openBreaker(ops, PRIMARY, { forMs: 60_000 });
    const primaryPool = await ferry.pool([PRIMARY]);
    await breakerSeen(primaryPool, PRIMARY, 'open');
    const [job] = await ferry.producer.enqueueMany([
      {
        service: PRIMARY,
        operation: 'send',
        input: { text: 'chain' },
        idempotencyKey: 'chain-1',
        tenant: 't1',
      },
    ]);
    const first = await ferry.producer.waitFor(PRIMARY, job!.id, { timeoutMs: 15_000 });
    const onBackup = (first.result as JobResult | undefined)?.routedTo;
    expect(onBackup).toEqual({ service: BACKUP, jobId: idempotentJobId('chain-1') });
    // No backup worker yet: the job waits on the backup's queue until the backup's breaker has opened too.
    await openBreaker(ops, BACKUP, { forMs: 60_000 });
    const thirdBefore = third.requests.length;
    const backupBefore = backup.requests.length;
    const backupPool = await ferry.pool([BACKUP, THIRD]);
    await breakerSeen(backupPool, BACKUP, 'open');
    const second = await ferry.producer.waitFor(BACKUP, onBackup!.jobId, { timeoutMs: 15_000 });
    const onThird = (second.result as JobResult | undefined)?.routedTo;
    expect(onThird).toEqual({ service: THIRD, jobId: idempotentJobId('chain-1') });
    const last = await ferry.producer.waitFor(THIRD, onThird!.jobId, { timeoutMs: 15_000 });
    expect(last.state).toBe('completed');
    expect(last.result?.status).toBe(200);
    const moved = await Job.fromId<JobData>(ferry.queue(THIRD), onThird!.jobId);
    expect(moved?.data).toMatchObject({
      tenant: 't1',
      idempotencyKey: 'chain-1',
      origin: { kind: 'fallback', source: { service: BACKUP, jobId: onBackup!.jobId }, depth: 2 },
    });
    expect(keysSeen(third, thirdBefore)).toEqual(new Map([['chain-1', 1]]));
    expect(backup.requests.length - backupBefore).toBe(0);
  });

  it('a run that finds the route persisted finishes the move without asking either breaker', async () => {
    const ferry = await setup();
    const ops = { connection: redis.client, prefix: ferry.prefix, config: ferry.config };
    // The backup's breaker is open now and the primary's closed: a run that asked would hold or call the primary.
    await openBreaker(ops, BACKUP, { forMs: 60_000 });
    const routedTo = { service: BACKUP, jobId: idempotentJobId('decided') };
    // The state a run leaves behind when it dies between persisting the route and completing the job.
    const source = await ferry.queue(PRIMARY).add(
      'send',
      {
        input: { text: 'decided' },
        idempotencyKey: 'decided',
        ferry: { attempts: [], heldMs: 0, stallsSeen: 0, routedTo },
      },
      { jobId: idempotentJobId('decided') },
    );
    const primaryBefore = primary.requests.length;
    const pool = await ferry.pool([PRIMARY]);
    await breakerSeen(pool, BACKUP, 'open');
    const view = await ferry.producer.waitFor(PRIMARY, source.id!, { timeoutMs: 15_000 });
    expect(view.state).toBe('completed');
    expect((view.result as JobResult | undefined)?.routedTo).toEqual(routedTo);
    expect(primary.requests.length - primaryBefore).toBe(0);
    const moved = await Job.fromId<JobData>(ferry.queue(BACKUP), routedTo.jobId);
    expect(moved?.data.idempotencyKey).toBe('decided');
    expect(await ferry.queue(BACKUP).getJobCounts('waiting')).toEqual({ waiting: 1 });
  });

  it('a forged ferry.routedTo cannot make the worker add a job to another queue or under another id', async () => {
    const ferry = await setup();
    // Job data is anyone's to write: a raw producer on sms-primary's queue names, as its "persisted route", a
    // service that is not the primary's fallback, one not in the services file, and the fallback under an id
    // that is not this job's (squatting another job's idempotent id).
    const forged = [
      { service: THIRD, jobId: idempotentJobId('forged-third') },
      { service: 'billing', jobId: 'victim-1' },
      { service: BACKUP, jobId: idempotentJobId('someone-elses-key') },
    ];
    const sources = [];
    for (const [index, routedTo] of forged.entries())
      sources.push(
        await ferry.queue(PRIMARY).add(
          'send',
          {
            input: { text: `forged-${index}` },
            idempotencyKey: `forged-${index}`,
            ferry: { attempts: [], heldMs: 0, stallsSeen: 0, routedTo },
          },
          { jobId: idempotentJobId(`forged-${index}`) },
        ),
      );
    const primaryBefore = primary.requests.length;
    await ferry.pool([PRIMARY]);
    for (const source of sources) {
      const view = await ferry.producer.waitFor(PRIMARY, source.id!, { timeoutMs: 15_000 });
      expect(view.state).toBe('dead_lettered');
      expect(view.deadLetterId).toBeDefined();
      expect((view.result as JobResult | undefined)?.routedTo).toBeUndefined();
    }
    expect(primary.requests.length - primaryBefore).toBe(0);
    for (const service of [THIRD, 'billing', BACKUP])
      expect(await ferry.queue(service).getJobCounts('waiting', 'delayed', 'prioritized')).toEqual({
        waiting: 0,
        delayed: 0,
        prioritized: 0,
      });
  });
});

describe('the fallback router', () => {
  const config = servicesConfig();
  const primaryService = config.services.get(PRIMARY)!;
  const states: Record<string, ReturnType<ServiceBreaker['state']>> = {};
  const queues = new TargetQueues({ connection: redis.client, prefix: uniquePrefix() });
  const router = createFallbackRouter({
    config,
    queues,
    breakerOf: (name) =>
      states[name] === undefined ? undefined : ({ state: () => states[name]! } as ServiceBreaker),
  });

  it('routes to the fallback unless it lacks the operation, the route would go back, or its breaker is open', () => {
    states[BACKUP] = { state: 'closed' };
    expect(router.target(primaryService, 'send', { input: 1 })).toBe(BACKUP);
    states[BACKUP] = { state: 'halfOpen' };
    expect(router.target(primaryService, 'send', { input: 1 })).toBe(BACKUP);
    states[BACKUP] = { state: 'open', untilMs: Date.now() + 60_000 };
    expect(router.target(primaryService, 'send', { input: 1 })).toBeUndefined();
    states[BACKUP] = { state: 'closed' };
    expect(router.target(primaryService, 'unknownOp', { input: 1 })).toBeUndefined();
    expect(router.target(config.services.get(THIRD)!, 'send', { input: 1 })).toBeUndefined();
    const cameFromBackup = {
      input: 1,
      origin: { kind: 'fallback' as const, source: { service: BACKUP, jobId: '7' }, depth: 1 },
    };
    expect(router.target(primaryService, 'send', cameFromBackup)).toBeUndefined();
  });

  it('lands the job under the job id of the key the primary would have sent', () => {
    const job = {
      id: '41',
      name: 'send',
      data: { input: 1, enqueueId: 'x' },
      createdAt: 1_700_000_000_000,
      priority: 0,
    };
    const key = effectiveIdempotencyKey(primaryService, job);
    expect(key).toMatch(/^ferry-/);
    expect(router.plan(primaryService, BACKUP, job)).toEqual({
      service: BACKUP,
      jobId: idempotentJobId(key),
    });
    const keyed = { ...job, data: { input: 1, idempotencyKey: 'mine' } };
    expect(router.plan(primaryService, BACKUP, keyed)).toEqual({
      service: BACKUP,
      jobId: idempotentJobId('mine'),
    });
  });
});
