/**
 * Operator actions on the services file's schedules (`ferry schedules …`, `/v1/schedules`): list with the next
 * and last run, pause, resume, run now. Layout and keys: src/core/schedule-layout.ts.
 *
 * Pause is stored in Redis (a set of names) and removes the schedule's BullMQ scheduler, so it survives any
 * worker restart: a worker syncing at start leaves a paused schedule alone, and one whose tick comes anyway
 * (it synced just before the pause) skips it and removes the scheduler. Resume clears the mark and recreates
 * the scheduler from this process's services file (the workers' file, when they share it).
 *
 * A schedule of a sensitive operation stores no plaintext: resume writes `[sealed]` in its template, and run-now
 * seals the run with `deps.keyring` (FERRY_SECRETS_KEY), or refuses (ConfigurationError) without one.
 */
import type { Queue } from 'bullmq';

import { ValidationError } from '../core/errors.ts';
import type { JobRef } from '../core/job.ts';
import { readResultLinks } from '../core/job-links.ts';
import { DEAD_LETTERED_FIELD } from '../core/queue-layout.ts';
import {
  addScheduleRun,
  pausedSchedulesKey,
  readLastRuns,
  scheduleIsSensitive,
  scheduleJobData,
  schedulerId,
  type ScheduleRun,
  scheduleRunNowKey,
  upsertScheduler,
} from '../core/schedule-layout.ts';
import { MAX_FALLBACK_CHAIN } from '../core/services/flow-graph.ts';
import type { ScheduleConfig, ServicesConfig } from '../core/services/types.ts';
import { decodeStoredResult } from '../core/stored-result.ts';
import { type OpsDeps, withQueues } from './deps.ts';

/** What became of a schedule's last run, read from its job. */
export type ScheduleRunOutcome = 'completed' | 'deadLettered' | 'running' | 'unknown';

export interface ScheduleView {
  name: string;
  service: string;
  operation: string;
  cron?: string;
  tz?: string;
  everyMs?: number;
  tenant?: string;
  paused: boolean;
  /** Epoch ms of the next tick; null while paused, or before a worker of the service created the scheduler. */
  nextRunAt: number | null;
  lastRun:
    | (ScheduleRun & {
        outcome: ScheduleRunOutcome;
        /** The run's dead letter, when it was dead-lettered. */
        deadLetterId?: string;
        /**
         * Where the run went when its service's breaker was open (fallback routing): the job whose outcome
         * `outcome` is, the last of the route.
         */
        routedTo?: JobRef;
      })
    | null;
}

/** The schedule of that name in the services file; else a ValidationError (field `name`) listing them. */
export function requireSchedule(config: ServicesConfig, name: string): ScheduleConfig {
  const found = config.schedules.get(name);
  if (found !== undefined) return found;
  const known = [...config.schedules.keys()].join(', ') || 'none';
  throw new ValidationError(`unknown schedule "${name}" (schedules in the services file: ${known})`, {
    field: 'name',
  });
}

/** Every schedule of the services file (or `names`), in file order, with its next and last run. */
export async function listSchedules(deps: OpsDeps, names?: readonly string[]): Promise<ScheduleView[]> {
  const schedules = (names ?? [...deps.config.schedules.keys()]).map((name) =>
    requireSchedule(deps.config, name),
  );
  if (schedules.length === 0) return [];
  const [paused, lastRuns] = await Promise.all([
    deps.connection.smembers(pausedSchedulesKey(deps.prefix)),
    readLastRuns(deps.connection, deps.prefix),
  ]);
  const services = [...new Set(schedules.map((schedule) => schedule.service))];
  return withQueues(deps, services, (queues) =>
    Promise.all(
      schedules.map(async (schedule): Promise<ScheduleView> => {
        const queue = queues.get(schedule.service)!;
        const isPaused = paused.includes(schedule.name);
        const scheduler = isPaused ? undefined : await queue.getJobScheduler(schedulerId(schedule.name));
        const view: ScheduleView = {
          name: schedule.name,
          service: schedule.service,
          operation: schedule.operation,
          ...(schedule.repeat.kind === 'cron'
            ? {
                cron: schedule.repeat.cron,
                ...(schedule.repeat.tz === undefined ? {} : { tz: schedule.repeat.tz }),
              }
            : { everyMs: schedule.repeat.everyMs }),
          ...(schedule.tenant === undefined ? {} : { tenant: schedule.tenant }),
          paused: isPaused,
          nextRunAt: typeof scheduler?.next === 'number' ? scheduler.next : null,
          lastRun: null,
        };
        const last = lastRuns.get(schedule.name);
        if (last !== undefined) {
          // The run is on the queue it was added to (a schedule moved to another service keeps its old run).
          const runQueue = last.service === schedule.service ? queue : undefined;
          view.lastRun = { ...last, ...(await outcomeOf(deps, runQueue, last)) };
        }
        return view;
      }),
    ),
  );
}

type RunOutcome = { outcome: ScheduleRunOutcome; deadLetterId?: string; routedTo?: JobRef };

/**
 * The outcome of the run's job. A run routed to its service's fallback completed without a call: its outcome
 * is the fallback job's, followed along the route (at most MAX_FALLBACK_CHAIN hops, services of the file only).
 */
async function outcomeOf(deps: OpsDeps, queue: Queue | undefined, run: ScheduleRun): Promise<RunOutcome> {
  if (queue === undefined) return { outcome: 'unknown' };
  const found = await jobOutcome(deps, queue, run.jobId);
  let routedTo = found.routedTo;
  if (routedTo === undefined) return found.outcome;
  for (let hop = 1; ; hop++) {
    const target: JobRef = routedTo;
    if (!deps.config.services.has(target.service)) return { outcome: 'unknown', routedTo: target };
    const next = await withQueues(deps, [target.service], (queues) =>
      jobOutcome(deps, queues.get(target.service)!, target.jobId),
    );
    if (next.routedTo === undefined || hop >= MAX_FALLBACK_CHAIN)
      return { ...next.outcome, routedTo: target };
    routedTo = next.routedTo;
  }
}

/** One job's outcome, and where it was routed when it was. */
async function jobOutcome(
  deps: OpsDeps,
  queue: Queue,
  jobId: string,
): Promise<{ outcome: RunOutcome; routedTo?: JobRef }> {
  const state = await queue.getJobState(jobId);
  switch (state) {
    case 'completed': {
      const { routedTo } = readResultLinks(decodeStoredResult((await queue.getJob(jobId))?.returnvalue));
      return routedTo === undefined
        ? { outcome: { outcome: 'completed' } }
        : { outcome: { outcome: 'completed' }, routedTo };
    }
    case 'failed': {
      const deadLetterId = await deps.connection.hget(queue.toKey(jobId), DEAD_LETTERED_FIELD);
      return {
        outcome:
          deadLetterId === null ? { outcome: 'deadLettered' } : { outcome: 'deadLettered', deadLetterId },
      };
    }
    case 'unknown':
      // Removed: past the completed/failed retention (a failed run's dead letter stays in `ferry dlq`).
      return { outcome: { outcome: 'unknown' } };
    default:
      return { outcome: { outcome: 'running' } };
  }
}

/** Pauses a schedule in every worker, and across their restarts, until resumeSchedule. */
export async function pauseSchedule(deps: OpsDeps, name: string): Promise<ScheduleView> {
  const schedule = requireSchedule(deps.config, name);
  await deps.connection.sadd(pausedSchedulesKey(deps.prefix), name);
  await withQueues(deps, [schedule.service], async (queues) => {
    await queues.get(schedule.service)!.removeJobScheduler(schedulerId(name));
  });
  const [view] = await listSchedules(deps, [name]);
  return view!;
}

/** Resumes a paused schedule: its scheduler is recreated from the services file, the next tick follows it. */
export async function resumeSchedule(deps: OpsDeps, name: string): Promise<ScheduleView> {
  const schedule = requireSchedule(deps.config, name);
  await deps.connection.srem(pausedSchedulesKey(deps.prefix), name);
  await withQueues(deps, [schedule.service], async (queues) => {
    await upsertScheduler(queues.get(schedule.service)!, schedule, {
      sensitive: scheduleIsSensitive(deps.config, schedule),
    });
  });
  const [view] = await listSchedules(deps, [name]);
  return view!;
}

export interface RunNowResult {
  schedule: string;
  service: string;
  jobId: string;
  idempotencyKey: string;
  runAt: number;
}

/**
 * Adds one run of the schedule at once, with its own key (`ferry-schedule-<name>-now-<ms>`), whether or not it
 * is paused; the schedule's ticks go on as before. A run of a sensitive operation is sealed with `deps.keyring`;
 * without one it is a ConfigurationError and nothing is added.
 */
export async function runScheduleNow(deps: OpsDeps, name: string): Promise<RunNowResult> {
  const schedule = requireSchedule(deps.config, name);
  const runAt = (deps.now ?? Date.now)();
  const idempotencyKey = scheduleRunNowKey(name, runAt);
  const { jobId } = await withQueues(deps, [schedule.service], (queues) =>
    addScheduleRun(
      deps.connection,
      deps.prefix,
      queues.get(schedule.service)!,
      {
        name,
        service: schedule.service,
        operation: schedule.operation,
        data: scheduleJobData(schedule),
        idempotencyKey,
        runAt,
        trigger: 'runNow',
        sensitive: scheduleIsSensitive(deps.config, schedule),
      },
      deps.keyring,
    ),
  );
  return { schedule: name, service: schedule.service, jobId, idempotencyKey, runAt };
}
