/**
 * What a run records of a job in one round trip: the lock check (and its extension), Ferry's state in the job
 * data and, for a retry, the `job.log` line Bull Board shows and the `retrying` event on the queue's stream. It
 * was two to four (extendLock, updateData, addLog, the event's script): one script now does what those do, in
 * the same order and with the same checks, so a run that lost its lock still writes nothing (DESIGN §8).
 * All keys share the queue's `{service}` hash tag: one Cluster slot.
 */
import { createHash } from 'node:crypto';

import type { RedisClient } from '../core/redis.ts';
import { appendEventLua, type encodeStreamEvent } from './job-event-publisher.ts';

/**
 * KEYS: [1] the job's lock, [2] the queue's stalled set, [3] the job hash, [4] its logs list, [5] the events
 * stream, [6] the queue's meta hash.
 * ARGV: [1] lock token ('' for none: no check), [2] lock duration ms, [3] job id, [4] job data JSON, [5] log line
 * ('' for none), [6] keepLogs ('' for all), [7] event name ('' for none), [8] event data JSON.
 * Returns 1 written, 0 the lock is not ours (nothing written), -1 the job is gone (nothing written).
 * The lock part is BullMQ's extendLock, the data and log parts its updateData and addLog, the event part
 * job-event-publisher.ts's appendEventLua (the stream trimmed like BullMQ's own XADDs).
 */
const SOURCE = `
if ARGV[1] ~= '' then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SREM', KEYS[2], ARGV[3])
end
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
redis.call('HSET', KEYS[3], 'data', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[4], ARGV[5])
  if ARGV[6] ~= '' then redis.call('LTRIM', KEYS[4], -tonumber(ARGV[6]), -1) end
end
if ARGV[7] ~= '' then
  ${appendEventLua({ stream: 'KEYS[5]', meta: 'KEYS[6]', event: 'ARGV[7]', jobId: 'ARGV[3]', data: 'ARGV[8]' })}
end
return 1
`;
const SHA = createHash('sha1').update(SOURCE).digest('hex');

export interface RunRecord {
  keys: {
    lock: string;
    stalled: string;
    job: string;
    logs: string;
    events: string;
    meta: string;
  };
  /** The run's lock token; undefined: no lock to check (a job run outside a worker's lock). */
  token: string | undefined;
  lockDurationMs: number;
  jobId: string;
  /** The job data as JSON (what job.updateData stores). */
  data: string;
  /** A `job.log` line (none: no line). */
  log?: string;
  keepLogs?: number | undefined;
  /** An event for the queue's stream, as job-event-publisher.ts writes it (none: no event). */
  event?: ReturnType<typeof encodeStreamEvent>;
}

/** 'written', or why nothing was: the lock is not this run's, or the job is gone. */
export async function recordRun(
  connection: RedisClient,
  record: RunRecord,
): Promise<'written' | 'lostLock' | 'missing'> {
  const { keys } = record;
  const args = [
    keys.lock,
    keys.stalled,
    keys.job,
    keys.logs,
    keys.events,
    keys.meta,
    record.token ?? '',
    String(record.lockDurationMs),
    record.jobId,
    record.data,
    record.log ?? '',
    record.keepLogs === undefined ? '' : String(record.keepLogs),
    record.event?.name ?? '',
    record.event?.data ?? '',
  ];
  let answer: unknown;
  try {
    answer = await connection.evalsha(SHA, 6, ...args);
  } catch (error) {
    // Loaded with EVAL the first time a node has not seen it (each Cluster node on its own).
    if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
    answer = await connection.eval(SOURCE, 6, ...args);
  }
  return answer === 1 ? 'written' : answer === 0 ? 'lostLock' : 'missing';
}
