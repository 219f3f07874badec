/**
 * Schedules (issue 16 § 5) in one process, on a real redis-server and a real local HTTP server: workers keep the
 * BullMQ job schedulers equal to the services file, each tick becomes an ordinary run with its own idempotency
 * key, and the operator actions (src/ops/schedules.ts) pause (across a worker restart), resume, run now and list
 * the next and last run. Two worker processes ticking at once: test/e2e/schedules.test.ts.
 */
import { Writable } from 'node:stream';

import { type Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import type { JobData, JobResult } from '../../src/core/job.ts';
import { createLogger } from '../../src/core/logger.ts';
import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { pausedSchedulesKey, schedulerId } from '../../src/core/schedule-layout.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { openBreaker } from '../../src/ops/breaker-control.ts';
import type { OpsDeps } from '../../src/ops/deps.ts';
import { listSchedules, pauseSchedule, resumeSchedule, runScheduleNow } from '../../src/ops/schedules.ts';
import { createEnvSecretResolver } from '../../src/secrets/env-provider.ts';
import { runScheduleTick } from '../../src/worker/schedules.ts';
import { createWorkerPool, type WorkerPool } from '../../src/worker/worker-pool.ts';
import { type Downstream, startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, type TestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';
import { until, waitUntil } from '../helpers/until.ts';

const redis = await startRedis();

function servicesFile(baseUrl: string, schedules: Record<string, unknown>): Record<string, unknown> {
  return {
    services: {
      svc: {
        baseUrl,
        retry: { attempts: 1 },
        operations: {
          ping: { method: 'POST', path: '/ping', body: '{{ input }}' },
          pingTenant: {
            method: 'POST',
            path: '/ping',
            body: '{{ input }}',
            headers: { 'x-tenant': '{{ tenant }}' },
          },
        },
      },
    },
    schedules,
  };
}

async function downstream(status = 200): Promise<Downstream> {
  const server = await startDownstream(() => ({ status, body: { ok: status < 400 } }));
  onTestFinished(() => server.close());
  return server;
}

function keysSeen(server: Downstream): string[] {
  return server.requests.map((request) => String(request.headers['idempotency-key']));
}

function opsOf(ferry: TestFerry, config = ferry.config): OpsDeps {
  return { connection: redis.client, prefix: ferry.prefix, config };
}

function queueOf(ferry: TestFerry): Queue {
  const queue = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix: ferry.prefix });
  onTestFinished(() => queue.close());
  return queue;
}

/** Another worker pool on `prefix`, as a restarted (or second) worker process would be; closed after the test. */
async function poolOn(
  prefix: string,
  services: unknown,
  { start = true }: { start?: boolean } = {},
): Promise<{ pool: WorkerPool; logs: string[] }> {
  const logs: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(line);
      callback();
    },
  });
  const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  const pool = createWorkerPool({
    config: parseServicesConfig(services, { env: {} }),
    connection,
    prefix,
    secrets: createEnvSecretResolver({}),
    logger: createLogger({ level: 'debug', destination }),
    lockDurationMs: 5_000,
    stalledIntervalMs: 1_000,
    sweepIntervalMs: 1_000,
  });
  onTestFinished(async () => {
    await pool.close({ deadlineMs: 2_000 });
    connection.disconnect();
  });
  if (start) await pool.start();
  return { pool, logs };
}

describe('schedules', () => {
  it('runs an everyMs schedule as ordinary jobs, each with its own key, input, tenant and origin', async () => {
    const server = await downstream();
    const ferry = await createTestFerry(redis, {
      services: servicesFile(server.url, {
        beat: {
          everyMs: 1000,
          service: 'svc',
          operation: 'pingTenant',
          input: { full: true },
          tenant: 'acme',
        },
      }),
    });
    await waitUntil(() => server.requests.length >= 2, 20_000, 'two runs');
    const keys = keysSeen(server);
    for (const key of keys) expect(key).toMatch(/^ferry-schedule-beat-\d+$/);
    expect(new Set(keys).size).toBe(keys.length);
    const times = keys.map((key) => Number(key.split('-').at(-1)));
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(1000);
    expect(JSON.parse(server.requests[0]!.body)).toEqual({ full: true });
    expect(server.requests[0]!.headers['x-tenant']).toBe('acme');
    const job = await ferry.producer.get('svc', (await listSchedules(opsOf(ferry)))[0]!.lastRun!.jobId);
    expect(job).toBeDefined();
    const [view] = await listSchedules(opsOf(ferry));
    expect(view).toMatchObject({
      name: 'beat',
      service: 'svc',
      operation: 'pingTenant',
      everyMs: 1000,
      paused: false,
    });
    expect(view!.nextRunAt).toEqual(expect.any(Number));
    expect(view!.lastRun).toMatchObject({
      trigger: 'schedule',
      jobId: expect.stringMatching(/^idem-/),
      idempotencyKey: expect.stringMatching(/^ferry-schedule-beat-\d+$/),
    });
    const queue = queueOf(ferry);
    const run = await queue.getJob(view!.lastRun!.jobId);
    expect(run?.data).toMatchObject({
      input: { full: true },
      tenant: 'acme',
      idempotencyKey: view!.lastRun!.idempotencyKey,
      origin: { kind: 'schedule', schedule: 'beat', depth: 0 },
    });
    await until(
      async () =>
        (await listSchedules(opsOf(ferry)))[0]!.lastRun?.outcome === 'completed' ? true : undefined,
      10_000,
      () => 'the last run completed',
    );
  });

  it('follows tz: the next run of a cron schedule is at that zone’s wall-clock time', async () => {
    const server = await downstream();
    const ferry = await createTestFerry(redis, {
      services: servicesFile(server.url, {
        // 03:00 in Kolkata (UTC+05:30, no daylight saving) is 21:30 UTC.
        kolkata: { cron: '0 3 * * *', tz: 'Asia/Kolkata', service: 'svc', operation: 'ping' },
        utc: { cron: '0 3 * * *', service: 'svc', operation: 'ping' },
      }),
    });
    const views = await listSchedules(opsOf(ferry));
    const kolkata = new Date(views[0]!.nextRunAt!);
    expect([kolkata.getUTCHours(), kolkata.getUTCMinutes()]).toEqual([21, 30]);
    expect(views[0]).toMatchObject({ cron: '0 3 * * *', tz: 'Asia/Kolkata' });
    const utc = new Date(views[1]!.nextRunAt!);
    expect([utc.getUTCHours(), utc.getUTCMinutes()]).toEqual([3, 0]);
  });

  it("removes a schedule the file drops, updates a changed one, and leaves others' schedulers alone", async () => {
    const server = await downstream();
    const first = await createTestFerry(redis, {
      services: servicesFile(server.url, {
        keep: { cron: '0 3 * * *', service: 'svc', operation: 'ping' },
        change: { cron: '0 4 * * *', service: 'svc', operation: 'ping' },
        drop: { cron: '0 5 * * *', service: 'svc', operation: 'ping' },
      }),
    });
    const queue = queueOf(first);
    await queue.upsertJobScheduler('someone-elses', { pattern: '0 6 * * *' }, { name: 'ping' });
    const keepBefore = await queue.getJobScheduler(schedulerId('keep'));
    await first.pool.close();
    const pool = await poolOn(
      first.prefix,
      servicesFile(server.url, {
        keep: { cron: '0 3 * * *', service: 'svc', operation: 'ping' },
        change: { cron: '30 4 * * *', service: 'svc', operation: 'ping' },
      }),
    );
    expect(pool.logs.some((line) => line.includes('"removed":["drop"]'))).toBe(true);
    const ids = (await queue.getJobSchedulers()).map((scheduler) => scheduler.key).sort();
    expect(ids).toEqual([schedulerId('change'), schedulerId('keep'), 'someone-elses']);
    expect((await queue.getJobScheduler(schedulerId('change')))?.pattern).toBe('30 4 * * *');
    expect((await queue.getJobScheduler(schedulerId('keep')))?.next).toBe(keepBefore?.next);
    // The dropped schedule's next tick went with it.
    expect((await queue.getDelayed()).map((job) => job.id).filter((id) => id?.includes('-drop:'))).toEqual(
      [],
    );
  });

  it('keeps a schedule paused across a worker restart, then resumes it', async () => {
    const server = await downstream();
    const services = servicesFile(server.url, { beat: { everyMs: 1000, service: 'svc', operation: 'ping' } });
    const first = await createTestFerry(redis, { services });
    await waitUntil(() => server.requests.length >= 1, 20_000, 'a first run');
    const paused = await pauseSchedule(opsOf(first), 'beat');
    expect(paused).toMatchObject({ name: 'beat', paused: true, nextRunAt: null });
    await first.pool.close();
    const queue = queueOf(first);
    expect(await redis.client.sismember(pausedSchedulesKey(first.prefix), 'beat')).toBe(1);

    const second = await poolOn(first.prefix, services);
    expect(second.logs.some((line) => line.includes('"paused":["beat"]'))).toBe(true);
    // Nothing that could tick: no scheduler, no tick job waiting.
    expect(await queue.getJobScheduler(schedulerId('beat'))).toBeUndefined();
    expect((await queue.getDelayed()).filter((job) => job.id?.startsWith('repeat:'))).toEqual([]);
    expect((await listSchedules(opsOf(first)))[0]).toMatchObject({ paused: true, nextRunAt: null });

    const before = server.requests.length;
    const resumed = await resumeSchedule(opsOf(first), 'beat');
    expect(resumed).toMatchObject({ paused: false, nextRunAt: expect.any(Number) });
    await waitUntil(() => server.requests.length > before, 20_000, 'a run after resume');
  });

  it('skips the tick of a schedule paused after a worker recreated its scheduler', async () => {
    const server = await downstream();
    const ferry = await createTestFerry(redis, {
      services: servicesFile(server.url, { beat: { everyMs: 1000, service: 'svc', operation: 'ping' } }),
      start: false,
    });
    // As if the pause landed while the worker synced: the mark is set, the scheduler exists.
    await redis.client.sadd(pausedSchedulesKey(ferry.prefix), 'beat');
    const queue = queueOf(ferry);
    const { upsertScheduler } = await import('../../src/core/schedule-layout.ts');
    await upsertScheduler(queue, ferry.config.schedules.get('beat')!);
    await redis.client.srem(pausedSchedulesKey(ferry.prefix), 'beat');
    await ferry.start();
    await redis.client.sadd(pausedSchedulesKey(ferry.prefix), 'beat');
    await waitUntil(
      async () => (await queue.getJobScheduler(schedulerId('beat'))) === undefined,
      20_000,
      'the tick removed the paused scheduler',
    );
    expect(ferry.logs.some((line) => line.includes('schedule paused: tick skipped'))).toBe(true);
  });

  it('run-now adds one run at once with its own key, and list shows its outcome', async () => {
    const server = await downstream(400);
    const ferry = await createTestFerry(redis, {
      services: servicesFile(server.url, {
        nightly: { cron: '0 2 * * *', service: 'svc', operation: 'ping', input: { a: 1 } },
      }),
    });
    const run = await runScheduleNow(opsOf(ferry), 'nightly');
    expect(run.idempotencyKey).toBe(`ferry-schedule-nightly-now-${run.runAt}`);
    await waitUntil(() => server.requests.length === 1, 20_000, 'the run-now call');
    expect(server.requests[0]!.headers['idempotency-key']).toBe(run.idempotencyKey);
    const view = await until(
      async () => {
        const [found] = await listSchedules(opsOf(ferry));
        return found?.lastRun?.outcome === 'deadLettered' ? found : undefined;
      },
      20_000,
      () => 'the run dead-lettered',
    );
    expect(view.lastRun).toMatchObject({
      trigger: 'runNow',
      jobId: run.jobId,
      outcome: 'deadLettered',
      deadLetterId: expect.stringMatching(/^dl-svc\./),
    });
    expect(view.nextRunAt).toEqual(expect.any(Number));
    await expect(runScheduleNow(opsOf(ferry), 'nope')).rejects.toThrow(/unknown schedule "nope"/);
  });

  it("shows a run routed to the fallback with the fallback job's outcome, not the route's", async () => {
    const server = await downstream();
    const backup = await downstream(400);
    const services = servicesFile(server.url, {
      nightly: { cron: '0 2 * * *', service: 'svc', operation: 'ping', input: { a: 1 } },
    }) as { services: Record<string, Record<string, unknown>> };
    services.services.svc!.fallback = { service: 'svc2' };
    const { fallback: _primaryOnly, ...primary } = services.services.svc!;
    services.services.svc2 = { ...primary, baseUrl: backup.url };
    const ferry = await createTestFerry(redis, { services, start: false });
    await openBreaker(opsOf(ferry), 'svc', { forMs: 60_000 });
    await ferry.start();
    await waitUntil(
      () => ferry.pool.breakers.list().find((breaker) => breaker.name === 'svc')?.state.state === 'open',
      10_000,
      "svc's breaker open in the pool",
    );
    const run = await runScheduleNow(opsOf(ferry), 'nightly');
    const view = await until(
      async () => {
        const [found] = await listSchedules(opsOf(ferry));
        return found?.lastRun?.outcome === 'deadLettered' ? found : undefined;
      },
      20_000,
      () => 'the routed run dead-lettered',
    );
    expect(backup.requests.length).toBe(1);
    expect(server.requests.length).toBe(0);
    expect(view.lastRun).toMatchObject({
      jobId: run.jobId,
      outcome: 'deadLettered',
      routedTo: { service: 'svc2', jobId: expect.any(String) },
      deadLetterId: expect.stringMatching(/^dl-svc2\./),
    });
  });

  it('a job naming a scheduler without repeat options is dead-lettered, not taken forever', async () => {
    const server = await downstream();
    const ferry = await createTestFerry(redis, {
      services: servicesFile(server.url, {
        nightly: { cron: '0 2 * * *', service: 'svc', operation: 'ping', input: { a: 1 } },
      }),
    });
    const queue = queueOf(ferry);
    // Anyone can add this (BullMQ allows a 3-part `repeat:<key>:<ms>` id and a repeatJobKey): BullMQ threw while
    // taking it and left it active, to stall and be taken again forever, never run nor dead-lettered.
    const forged = [
      { jobId: `repeat:${schedulerId('nightly')}:${Date.now()}`, repeatJobKey: schedulerId('nightly') },
      { jobId: 'poison-1', repeatJobKey: 'anything' },
    ];
    for (const opts of forged) await queue.add('ping', { input: { evil: true }, tenant: 'victim' }, opts);
    const good = await ferry.producer.enqueue({ service: 'svc', operation: 'ping', input: { ok: 1 } });
    expect((await ferry.producer.waitFor('svc', good.id, { timeoutMs: 20_000 })).state).toBe('completed');
    for (const { jobId } of forged) {
      await waitUntil(async () => (await queue.getJobState(jobId)) === 'failed', 20_000, `${jobId} failed`);
    }
    // (Producer.get does not look up a `repeat:` id: the plain one shows the dead letter the sweep wrote.)
    const poison = await ferry.producer.waitFor('svc', 'poison-1', { timeoutMs: 20_000 });
    expect(poison.state).toBe('dead_lettered');
    // Neither was run: only the good job reached the downstream, and no schedule run was recorded.
    expect(server.requests).toHaveLength(1);
    const [view] = await listSchedules(opsOf(ferry));
    expect(view?.lastRun).toBeNull();
  });

  it("a forged tick makes a run only for the file's schedule, when due, and with the file's input", async () => {
    const server = await downstream();
    const ferry = await createTestFerry(redis, {
      services: servicesFile(server.url, {
        nightly: { cron: '0 2 * * *', service: 'svc', operation: 'ping', input: { a: 1 } },
      }),
      start: false,
    });
    const queue = queueOf(ferry);
    const deps = {
      connection: redis.client,
      prefix: ferry.prefix,
      service: 'svc',
      queue,
      logger: createLogger({ level: 'silent' }),
      schedules: ferry.config.schedules,
    };
    // What reaches runScheduleTick from a job anyone could add with a tick's id and scheduler key.
    const tick = (name: string, runAt: number): Job<JobData, JobResult> =>
      ({
        id: `repeat:${schedulerId(name)}:${runAt}`,
        repeatJobKey: schedulerId(name),
        name: 'pingTenant',
        data: { input: { evil: true }, tenant: 'victim' },
      }) as unknown as Job<JobData, JobResult>;
    expect((await runScheduleTick(tick('ghost', Date.now()), deps)).body).toEqual({
      skipped: 'unknownSchedule',
    });
    const later = Date.now() + 86_400_000;
    expect((await runScheduleTick(tick('nightly', later), deps)).body).toEqual({ skipped: 'notDue' });
    expect(await queue.getJobCounts('waiting')).toEqual({ waiting: 0 });
    const made = await runScheduleTick(tick('nightly', Date.now()), deps);
    const run = await queue.getJob((made.body as { run: string }).run);
    expect(run?.name).toBe('ping');
    expect(run?.data).toMatchObject({ input: { a: 1 }, origin: { kind: 'schedule', schedule: 'nightly' } });
    expect(run?.data.tenant).toBeUndefined();
  });

  it('two pools syncing at once make one scheduler and one run per tick', async () => {
    const server = await downstream();
    const services = servicesFile(server.url, {
      fast: { cron: '* * * * * *', service: 'svc', operation: 'ping' },
    });
    const a = await createTestFerry(redis, { services, start: false });
    const b = await poolOn(a.prefix, services, { start: false });
    await Promise.all([a.start(), b.pool.start()]);
    await waitUntil(() => new Set(keysSeen(server)).size >= 4, 30_000, 'four ticks');
    const seen = new Set(keysSeen(server));
    await waitUntil(() => new Set(keysSeen(server)).size >= seen.size + 1, 30_000, 'one more tick');
    const counts = new Map<string, number>();
    for (const key of keysSeen(server)) counts.set(key, (counts.get(key) ?? 0) + 1);
    for (const key of seen) expect(counts.get(key), key).toBe(1);
    expect((await queueOf(a).getJobSchedulers()).length).toBe(1);
  });
});
