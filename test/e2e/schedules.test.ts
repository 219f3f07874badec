/**
 * Schedules through the built CLI (issue 16 § 5, "a cron schedule runs exactly once per tick with two workers"):
 * two `ferry worker` processes started at once share a `* * * * * *` (every second) schedule, and the downstream counts the
 * calls of each tick (its Idempotency-Key carries the tick's time). Then `ferry schedules` lists the next and
 * last run, pauses the schedule across a restart of the workers, runs it now and resumes it.
 */
import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { schedulerId } from '../../src/core/schedule-layout.ts';
import type { ScheduleView } from '../../src/ops/schedules.ts';
import { runCliInProcess } from '../helpers/cli.ts';
import { type Downstream, startDownstream } from '../helpers/downstream.ts';
import {
  type FerryProcess,
  runFerry,
  startWorker,
  workerEnv,
  writeServicesFile,
} from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { waitUntil } from '../helpers/until.ts';

const redis = await startRedis();
const TICK = /^ferry-schedule-tick-(\d+)$/;

function servicesFile(baseUrl: string): unknown {
  return {
    services: {
      svc: {
        baseUrl,
        retry: { attempts: 2, backoff: { delayMs: 50, maxDelayMs: 100 } },
        operations: { ping: { method: 'POST', path: '/ping', body: '{{ input }}' } },
      },
    },
    schedules: {
      tick: { cron: '* * * * * *', service: 'svc', operation: 'ping', input: { from: 'cron' } },
    },
  };
}

/** Calls per Idempotency-Key, in arrival order. */
function callsByKey(server: Downstream): Map<string, number> {
  const counts = new Map<string, number>();
  for (const request of server.requests) {
    const key = String(request.headers['idempotency-key']);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

function tickKeys(server: Downstream): string[] {
  return [...callsByKey(server).keys()].filter((key) => TICK.test(key));
}

async function stop(workers: readonly FerryProcess[]): Promise<void> {
  for (const worker of workers) worker.terminate();
  for (const worker of workers) expect((await worker.waitForExit(30_000)).code).toBe(0);
}

describe('ferry schedules with two worker processes', () => {
  it('runs a cron schedule exactly once per tick; list, pause across a restart, run-now, resume', async () => {
    const server = await startDownstream();
    onTestFinished(() => server.close());
    const prefix = uniquePrefix();
    const file = await writeServicesFile(servicesFile(server.url));
    const env = workerEnv({ redisUrl: redis.url, servicesFile: file, prefix });
    const queue = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix });
    onTestFinished(() => queue.close());

    // Both start (and sync the schedulers) at the same moment.
    const workers = await Promise.all([startWorker(env), startWorker(env)]);
    await waitUntil(() => tickKeys(server).length >= 4, 60_000, 'four ticks');
    const first = tickKeys(server);
    // A second call of any of those ticks would have come by the time two more ticks did.
    await waitUntil(() => tickKeys(server).length >= first.length + 2, 60_000, 'two more ticks');
    const counts = callsByKey(server);
    for (const key of first) expect(counts.get(key), `calls of ${key}`).toBe(1);
    for (const key of first) expect(Number(TICK.exec(key)![1]) % 1000).toBe(0);
    expect(JSON.parse(server.requests[0]!.body)).toEqual({ from: 'cron' });
    expect(await queue.getJobSchedulers()).toHaveLength(1);
    // Both workers took part (each synced; the lock let one create and the other find it equal).
    const synced = workers.map((worker) =>
      worker.logs().find((entry) => entry.msg === 'schedules synced with the services file')!,
    );
    expect(synced.map((entry) => (entry['schedules'] as { created: string[] }).created).flat()).toEqual([
      'tick',
    ]);

    const listed = await runCliInProcess(['schedules', 'list', '--json'], { env });
    expect(listed.code).toBe(0);
    const [view] = JSON.parse(listed.stdout) as ScheduleView[];
    expect(view).toMatchObject({
      name: 'tick',
      service: 'svc',
      operation: 'ping',
      cron: '* * * * * *',
      paused: false,
      nextRunAt: expect.any(Number),
      lastRun: {
        trigger: 'schedule',
        idempotencyKey: expect.stringMatching(TICK),
        jobId: expect.stringMatching(/^idem-/),
        outcome: expect.stringMatching(/^(completed|running)$/),
      },
    });
    const human = await runCliInProcess(['schedules', 'list'], { env });
    expect(human.stdout).toMatch(/^SCHEDULE\s+OPERATION\s+WHEN\s+NEXT RUN\s+LAST RUN/m);
    expect(human.stdout).toMatch(/^tick\s+svc\.ping\s+cron \* \* \* \* \* \*\s+\d{4}-\d\d-\d\dT/m);

    const paused = await runCliInProcess(['schedules', 'pause', 'tick'], { env });
    expect([paused.code, paused.stdout]).toEqual([0, 'tick: paused']);
    await stop(workers);
    const restarted = await startWorker(env);
    const sync = restarted.logs().find((entry) => entry.msg === 'schedules synced with the services file');
    expect(sync?.['schedules']).toMatchObject({ paused: ['tick'], created: [] });
    // Nothing left that could tick: no scheduler and no tick job.
    expect(await queue.getJobScheduler(schedulerId('tick'))).toBeUndefined();
    expect((await queue.getDelayed()).filter((job) => job.id?.startsWith('repeat:'))).toEqual([]);
    const whilePaused = JSON.parse(
      (await runCliInProcess(['schedules', 'list', '--json'], { env })).stdout,
    ) as ScheduleView[];
    expect(whilePaused[0]).toMatchObject({ paused: true, nextRunAt: null });

    const now = await runCliInProcess(['schedules', 'run-now', 'tick', '--json'], { env });
    expect(now.code).toBe(0);
    const run = JSON.parse(now.stdout) as { jobId: string; idempotencyKey: string };
    expect(run.idempotencyKey).toMatch(/^ferry-schedule-tick-now-\d+$/);
    await waitUntil(() => callsByKey(server).get(run.idempotencyKey) === 1, 30_000, 'the run-now call');

    const ticksBefore = tickKeys(server).length;
    const resumed = await runCliInProcess(['schedules', 'resume', 'tick'], { env });
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toMatch(/^tick: resumed; next run \d{4}-/);
    await waitUntil(() => tickKeys(server).length > ticksBefore, 30_000, 'a tick after resume');

    const unknown = await runCliInProcess(['schedules', 'pause', 'nope'], { env });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown schedule "nope" (schedules in the services file: tick)');
    await stop([restarted]);
    // Three worker starts, one after another, and six ticks: past 30 s on a loaded 2-core machine.
  }, 120_000);

  it('ferry schedules --help: exit 0 with examples', async () => {
    const run = await runFerry(['schedules', '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/Examples:\n\s+\$ ferry schedules list/);
  });
});
