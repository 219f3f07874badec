/**
 * Workers keep the BullMQ job schedulers equal to the services file's `schedules:` (src/core/schedule-layout.ts
 * has the layout), and turn each scheduler's tick into the schedule's run.
 *
 * - At start, under one Redis lock shared by every worker, each worker makes the schedulers of the queues it
 *   serves equal to its file: it creates missing ones, updates changed ones (an unchanged one is left alone, so
 *   its next tick does not move), and removes Ferry's (`ferry-schedule-…`) that the file no longer has or that
 *   an operator paused. The lock makes two workers starting at once take turns: the second finds everything
 *   equal and changes nothing.
 * - A tick is not delivered: the worker that takes it adds the run (an ordinary job, key
 *   `ferry-schedule-<name>-<run time ms>`, job id from the key), then completes the tick. Two takers of one
 *   tick, a retried tick or a stalled one all add the same job id: one run per run time.
 * - A schedule of a sensitive operation stores no plaintext: its scheduler's template carries `[sealed]` as
 *   input, and the run is sealed for its own job id with the worker's keyring before it is added.
 */
import { randomUUID } from 'node:crypto';

import type { Job, Queue } from 'bullmq';

import type { JobData, JobResult } from '../core/job.ts';
import type { Logger } from '../core/logger.ts';
import type { RedisClient } from '../core/redis.ts';
import {
  addScheduleRun,
  parseTick,
  pausedSchedulesKey,
  scheduleIsSensitive,
  scheduleJobData,
  scheduleNameOf,
  schedulerMatches,
  scheduleRunKey,
  scheduleSyncLockKey,
  upsertScheduler,
} from '../core/schedule-layout.ts';
import type { Keyring } from '../core/sealed-data.ts';
import type { ScheduleConfig, ServicesConfig } from '../core/services/types.ts';
import { SECOND } from '../core/time.ts';

export interface ScheduleSyncDeps {
  connection: RedisClient;
  prefix: string;
  config: ServicesConfig;
  /** The queues this worker serves, by service name. */
  queues: ReadonlyMap<string, Queue>;
  logger: Logger;
}

export interface ScheduleSyncReport {
  created: string[];
  updated: string[];
  removed: string[];
  unchanged: string[];
  /** Paused by an operator: not (re)created. */
  paused: string[];
}

/** The sync lock's lifetime: a worker that dies holding it delays the others by at most this. */
const SYNC_LOCK_MS = 30 * SECOND;
const SYNC_LOCK_POLL_MS = 100;
/** KEYS[1] lock, ARGV[1] token: deletes it only while this worker still holds it. */
const RELEASE_LOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;

/** Makes the schedulers of `deps.queues` equal to the file (see the module doc). */
export async function syncSchedules(deps: ScheduleSyncDeps): Promise<ScheduleSyncReport> {
  const report: ScheduleSyncReport = { created: [], updated: [], removed: [], unchanged: [], paused: [] };
  const lockKey = scheduleSyncLockKey(deps.prefix);
  const token = randomUUID();
  const lockDeadline = Date.now() + 2 * SYNC_LOCK_MS;
  while ((await deps.connection.set(lockKey, token, 'PX', SYNC_LOCK_MS, 'NX')) !== 'OK') {
    // A holder that died frees it within SYNC_LOCK_MS; a sync of its own never takes that long.
    if (Date.now() > lockDeadline) throw new Error('schedules: the sync lock stayed taken');
    await new Promise((resolve) => setTimeout(resolve, SYNC_LOCK_POLL_MS));
  }
  try {
    const paused = new Set(await deps.connection.smembers(pausedSchedulesKey(deps.prefix)));
    for (const [service, queue] of deps.queues) {
      const wanted = [...deps.config.schedules.values()].filter((schedule) => schedule.service === service);
      const stored = new Map(
        (await queue.getJobSchedulers())
          .filter((scheduler) => scheduleNameOf(scheduler.key) !== undefined)
          .map((scheduler) => [scheduleNameOf(scheduler.key)!, scheduler]),
      );
      for (const schedule of wanted) {
        const sealing = { sensitive: scheduleIsSensitive(deps.config, schedule) };
        const existing = stored.get(schedule.name);
        stored.delete(schedule.name);
        if (paused.has(schedule.name)) {
          if (existing !== undefined) await queue.removeJobScheduler(existing.key);
          report.paused.push(schedule.name);
        } else if (existing !== undefined && schedulerMatches(existing, schedule, sealing)) {
          report.unchanged.push(schedule.name);
        } else {
          // A sensitive schedule's template stored in plaintext (before its operation was sealed) is rewritten.
          await upsertScheduler(queue, schedule, sealing);
          (existing === undefined ? report.created : report.updated).push(schedule.name);
        }
      }
      // Ferry's schedulers on this queue that the file no longer has here (dropped, or moved to another service).
      for (const [name, scheduler] of stored) {
        await queue.removeJobScheduler(scheduler.key);
        report.removed.push(name);
      }
    }
  } finally {
    await deps.connection.eval(RELEASE_LOCK, 1, lockKey, token);
  }
  return report;
}

/** Whether a job is a scheduler's tick (not a run: runs are ordinary jobs). */
export function isScheduleTick(job: Job<JobData, unknown>): boolean {
  return parseTick(job.id, job.repeatJobKey) !== undefined;
}

/**
 * Turns a tick into its run (see the module doc), unless the schedule is paused; then it also removes the
 * scheduler, which a worker syncing just before the pause may have recreated. Throws on a Redis error: the tick
 * is retried (its own attempts), and the run added by a retry is the same job.
 */
/** How far ahead of this worker's clock a tick's run time may be (other workers' clocks drift). */
const MAX_TICK_EARLY_MS = 60_000;

export async function runScheduleTick(
  job: Job<JobData, unknown>,
  deps: {
    connection: RedisClient;
    prefix: string;
    service: string;
    queue: Queue;
    logger: Logger;
    /** The services file's schedules: a run is built from these, never from the tick's own data. */
    schedules: ReadonlyMap<string, ScheduleConfig>;
    /** The services file's services: a run of a `sensitive` operation is sealed (with `keyring`). */
    services?: ServicesConfig['services'];
    /** FERRY_SECRETS_KEY's keyring: seals the runs of sensitive operations. */
    keyring?: Keyring | undefined;
  },
): Promise<JobResult> {
  const tick = parseTick(job.id, job.repeatJobKey)!;
  const startedAt = Date.now();
  const done = (body: unknown): JobResult => ({
    status: 0,
    headers: {},
    body,
    durationMs: Date.now() - startedAt,
    attempts: 1,
  });
  // Anyone who can write the queue can add a job shaped like a tick: its name, data, operation and run time
  // are not to be trusted. Only a schedule of this service in the file makes a run, with the file's operation,
  // input and tenant, and only at a run time that has come (a far-future one would claim a later run's id
  // and pin the schedule's last run).
  const schedule = deps.schedules.get(tick.name);
  if (schedule === undefined || schedule.service !== deps.service) {
    deps.logger.warn(
      { schedule: tick.name, service: deps.service, jobId: job.id },
      'a tick of a schedule this service does not have in the services file: skipped',
    );
    return done({ skipped: 'unknownSchedule' });
  }
  if (tick.runAtMs > Date.now() + MAX_TICK_EARLY_MS) {
    deps.logger.warn(
      { schedule: tick.name, service: deps.service, jobId: job.id, runAt: tick.runAtMs },
      'a tick whose run time has not come: skipped',
    );
    return done({ skipped: 'notDue' });
  }
  if ((await deps.connection.sismember(pausedSchedulesKey(deps.prefix), tick.name)) === 1) {
    await deps.queue.removeJobScheduler(job.repeatJobKey!);
    deps.logger.info({ schedule: tick.name, service: deps.service }, 'schedule paused: tick skipped');
    return done({ skipped: 'paused' });
  }
  const idempotencyKey = scheduleRunKey(tick.name, tick.runAtMs);
  const { jobId, created } = await addScheduleRun(
    deps.connection,
    deps.prefix,
    deps.queue,
    {
      name: tick.name,
      service: deps.service,
      operation: schedule.operation,
      data: scheduleJobData(schedule),
      idempotencyKey,
      runAt: tick.runAtMs,
      trigger: 'schedule',
      sensitive: deps.services !== undefined && scheduleIsSensitive({ services: deps.services }, schedule),
    },
    deps.keyring,
  );
  if (created)
    deps.logger.info(
      { schedule: tick.name, service: deps.service, jobId, runAt: new Date(tick.runAtMs).toISOString() },
      'schedule run enqueued',
    );
  return done({ run: jobId });
}
