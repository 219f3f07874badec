/**
 * How schedules (`schedules:` in the services file) live in Redis, shared by the workers that keep them equal to
 * the file (src/worker/schedules.ts) and the operator actions (src/ops/schedules.ts). docs/services-file.md
 * § Schedules and docs/queue-layout.md describe it for operators.
 *
 * Each schedule is a BullMQ job scheduler on its service's queue, id `ferry-schedule-<name>`. What it makes at
 * every tick is not the run itself but a *tick* job (`repeat:ferry-schedule-<name>:<run time ms>`, BullMQ's
 * id): a scheduler's job template is fixed, so it cannot carry a per-run idempotency key, and its ids contain
 * `:`, which Ferry's job ids, dead-letter ids and API never do. The worker that takes a tick adds the run: an
 * ordinary job with idempotency key `ferry-schedule-<name>-<run time ms>` and job id `idempotentJobId(key)`,
 * so however often a tick is taken (two workers, a stall, a retry), one run exists per run time.
 *
 * A schedule of a `sensitive` operation stores no plaintext input: its scheduler's template (and so every
 * tick) carries SEALED_PLACEHOLDER instead (a run is built from the services file, never from the tick), and
 * each run is added sealed for its own job id (src/core/sealed-data.ts).
 */
import { randomUUID } from 'node:crypto';

import type { JobSchedulerJson, Queue } from 'bullmq';

import { ConfigurationError } from './errors.ts';
import { type JobData, SEALED_PLACEHOLDER } from './job.ts';
import { idempotentJobId } from './queue-layout.ts';
import type { RedisClient } from './redis.ts';
import { type Keyring, sealJobData } from './sealed-data.ts';
import type { ScheduleConfig, ServicesConfig } from './services/types.ts';

/** Every scheduler Ferry manages has this id prefix; workers remove those the file no longer has. */
export const SCHEDULER_ID_PREFIX = 'ferry-schedule-';

export function schedulerId(name: string): string {
  return `${SCHEDULER_ID_PREFIX}${name}`;
}

/** The schedule a Ferry scheduler id names, else undefined (a scheduler someone else made). */
export function scheduleNameOf(id: string): string | undefined {
  return id.startsWith(SCHEDULER_ID_PREFIX) ? id.slice(SCHEDULER_ID_PREFIX.length) : undefined;
}

/** A run's idempotency key: the schedule and its run time, so every taker of one tick adds the same job. */
export function scheduleRunKey(name: string, runAtMs: number): string {
  return `${SCHEDULER_ID_PREFIX}${name}-${runAtMs}`;
}

/** `run-now`'s key: its own (`-now-`), so it never merges with (and so never swallows) a scheduled run. */
export function scheduleRunNowKey(name: string, atMs: number): string {
  return `${SCHEDULER_ID_PREFIX}${name}-now-${atMs}`;
}

/** The tick a scheduler made: its schedule and run time (from BullMQ's `repeat:<scheduler id>:<ms>` id). */
export function parseTick(
  jobId: string | undefined,
  repeatJobKey: string | undefined,
): { name: string; runAtMs: number } | undefined {
  if (jobId === undefined || repeatJobKey === undefined) return undefined;
  const name = scheduleNameOf(repeatJobKey);
  if (name === undefined) return undefined;
  const prefix = `repeat:${repeatJobKey}:`;
  if (!jobId.startsWith(prefix)) return undefined;
  const runAtMs = Number(jobId.slice(prefix.length));
  return Number.isSafeInteger(runAtMs) && runAtMs >= 0 ? { name, runAtMs } : undefined;
}

/** Redis set of paused schedule names: workers neither recreate their schedulers nor run their ticks. */
export function pausedSchedulesKey(prefix: string): string {
  return `${prefix}:schedules:paused`;
}

/** Redis hash: schedule name → its last run (ScheduleRun as JSON). */
export function lastRunsKey(prefix: string): string {
  return `${prefix}:schedules:last-run`;
}

/** Held by one worker while it makes its queues' schedulers equal to the file. */
export function scheduleSyncLockKey(prefix: string): string {
  return `${prefix}:schedules:sync-lock`;
}

/** One run a schedule made, as recorded for `ferry schedules list`. */
export interface ScheduleRun {
  /** The run time (the tick's, or the moment of `run-now`), epoch ms. */
  runAt: number;
  service: string;
  jobId: string;
  idempotencyKey: string;
  trigger: 'schedule' | 'runNow';
}

/** The data of every run (before it is sealed, for a sensitive operation): input, tenant and origin. */
export function scheduleJobData(schedule: Pick<ScheduleConfig, 'name' | 'input' | 'tenant'>): JobData {
  const data: JobData = {
    input: schedule.input ?? null,
    origin: { kind: 'schedule', schedule: schedule.name, depth: 0 },
  };
  if (schedule.tenant !== undefined) data.tenant = schedule.tenant;
  return data;
}

/** Whether the schedule's operation is `sensitive` (its runs are sealed; an unknown one counts as not). */
export function scheduleIsSensitive(
  config: Pick<ServicesConfig, 'services'>,
  schedule: Pick<ScheduleConfig, 'service' | 'operation'>,
): boolean {
  return config.services.get(schedule.service)?.operations.get(schedule.operation)?.sensitive === true;
}

/** Whether a schedule stores no plaintext input in Redis. */
export interface ScheduleSealing {
  /** The schedule's operation is `sensitive` (scheduleIsSensitive). */
  sensitive?: boolean;
}

/**
 * The data of the scheduler's template, copied into every tick: a run's data, with SEALED_PLACEHOLDER as the
 * input of a sensitive operation (the tick is never delivered, so the input is not needed there).
 */
export function schedulerTemplateData(schedule: ScheduleConfig, sealing: ScheduleSealing = {}): JobData {
  const data = scheduleJobData(schedule);
  if (sealing.sensitive === true) data.input = SEALED_PLACEHOLDER;
  return data;
}

/**
 * The tick's own options: a Redis error while adding the run is retried; the tick is gone once it made its run
 * or gave up (it is no job of the service: the dead-letter sweep must never find it in the failed set).
 */
const TICK_OPTIONS = {
  removeOnComplete: true,
  removeOnFail: true,
  attempts: 5,
  backoff: { type: 'exponential', delay: 1000 },
} as const;

/** Creates or updates `schedule`'s scheduler on its service's queue. */
export async function upsertScheduler(
  queue: Queue,
  schedule: ScheduleConfig,
  sealing: ScheduleSealing = {},
): Promise<void> {
  const repeat =
    schedule.repeat.kind === 'cron'
      ? {
          pattern: schedule.repeat.cron,
          ...(schedule.repeat.tz === undefined ? {} : { tz: schedule.repeat.tz }),
        }
      : { every: schedule.repeat.everyMs };
  await queue.upsertJobScheduler(schedulerId(schedule.name), repeat, {
    name: schedule.operation,
    data: schedulerTemplateData(schedule, sealing),
    opts: TICK_OPTIONS,
  });
}

/** Whether a stored scheduler already says what `schedule` says (then it is left alone: no tick moves). */
export function schedulerMatches(
  stored: JobSchedulerJson,
  schedule: ScheduleConfig,
  sealing: ScheduleSealing = {},
): boolean {
  const repeatMatches =
    schedule.repeat.kind === 'cron'
      ? stored.pattern === schedule.repeat.cron &&
        (stored.tz ?? undefined) === schedule.repeat.tz &&
        stored.every === undefined
      : stored.every === schedule.repeat.everyMs && stored.pattern === undefined;
  return (
    repeatMatches &&
    stored.name === schedule.operation &&
    JSON.stringify(stored.template?.data ?? null) === JSON.stringify(schedulerTemplateData(schedule, sealing))
  );
}

/**
 * Adds one run of a schedule (job id from its key: a repeat add of the same key is a no-op) and records it as
 * the schedule's last run. `created` is false when the run already existed. A run of a sensitive operation is
 * sealed for its job id with `keyring` before the add; without a keyring it is a ConfigurationError and
 * nothing is written.
 */
export async function addScheduleRun(
  connection: RedisClient,
  prefix: string,
  queue: Queue,
  run: {
    name: string;
    service: string;
    operation: string;
    data: JobData;
    idempotencyKey: string;
    runAt: number;
    trigger: ScheduleRun['trigger'];
    /** The operation is `sensitive`: the run is sealed. */
    sensitive?: boolean;
  },
  keyring?: Keyring,
): Promise<{ jobId: string; created: boolean }> {
  const enqueueId = randomUUID();
  const jobId = idempotentJobId(run.idempotencyKey);
  let data: JobData = { ...run.data, idempotencyKey: run.idempotencyKey, enqueueId };
  if (run.sensitive === true) {
    if (keyring === undefined)
      throw new ConfigurationError(
        `schedule "${run.name}": ${run.service}.${run.operation} is sensitive: its runs are sealed, and FERRY_SECRETS_KEY (or FERRY_SECRETS_KEY_FILE) is not set on this process`,
      );
    data = sealJobData(keyring, { service: run.service, tenant: data.tenant, jobId }, data);
  }
  await queue.add(run.operation, data, { jobId });
  const stored = await connection.hget(queue.toKey(jobId), 'data');
  const created = stored === null || (JSON.parse(stored) as JobData).enqueueId === enqueueId;
  const record: ScheduleRun = {
    runAt: run.runAt,
    service: run.service,
    jobId,
    idempotencyKey: run.idempotencyKey,
    trigger: run.trigger,
  };
  await connection.eval(RECORD_LAST_RUN, 1, lastRunsKey(prefix), run.name, JSON.stringify(record), run.runAt);
  return { jobId, created };
}

/** KEYS[1] the last-run hash; ARGV name, record, run time: keeps the newest run (two takers may race). */
const RECORD_LAST_RUN = `
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local ok, old = pcall(cjson.decode, current)
  if ok and type(old) == 'table' and tonumber(old.runAt) and tonumber(old.runAt) > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
`;

/** Every schedule's last run, by name (records that do not parse are skipped). */
export async function readLastRuns(
  connection: RedisClient,
  prefix: string,
): Promise<Map<string, ScheduleRun>> {
  const raw = await connection.hgetall(lastRunsKey(prefix));
  const runs = new Map<string, ScheduleRun>();
  for (const [name, text] of Object.entries(raw)) {
    try {
      const run = JSON.parse(text) as ScheduleRun;
      if (typeof run.runAt === 'number' && typeof run.jobId === 'string') runs.set(name, run);
    } catch {
      // A record someone else wrote: not ours to show.
    }
  }
  return runs;
}
