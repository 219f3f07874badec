/**
 * The dead-letter index: how dead letters are found without loading them all. BullMQ keeps `{dead-letter}`'s
 * jobs in its wait list in insertion order, with no way to filter or page by time, and every record holds the
 * job's input (up to 256 KiB): listing the 50 newest of 100,000 must not read the other 99,950.
 *
 * Beside the queue's own keys, in the same hash slot (`{dead-letter}`, so Redis Cluster runs every script and
 * transaction here on one node), Ferry keeps:
 * - `by-time`: a sorted set of every dead letter's id, scored by `deadLetteredAt` (epoch ms);
 * - `by-service:<service>`: the same, per service, so a service filter and a per-service count (ZCARD) are cheap;
 * - `services`: the services that have a `by-service` set (removed when the set empties);
 * - `facets`: a hash, id → the small JSON the other filters read (operation, tenant, error type, status),
 *   so a filtered walk never parses inputs.
 * The writer adds a dead letter and its entries in one MULTI (writer.ts); deletes remove the job first and
 * then its entries, only if the job is really gone (purge.ts). Anything that bypasses both (raw BullMQ
 * tools, Bull Board, an older Ferry) is caught up by reindexDeadLetters (src/ops/dead-letter-reindex.ts).
 * docs/queue-layout.md documents the keys: they are part of what raw BullMQ tools see.
 */
import type { ErrorType } from '../core/errors.ts';
import type { DeadLetterRecord } from '../core/job.ts';
import { DEAD_LETTER_QUEUE } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';

export interface DeadLetterKeys {
  /** `<prefix>:{dead-letter}:`, BullMQ's base for the queue: a dead letter's hash is `base + id`. */
  readonly base: string;
  readonly byTime: string;
  readonly facets: string;
  readonly services: string;
  byService(service: string): string;
  job(id: string): string;
}

/**
 * The index's keys, under `ferry:` after the queue's base. No key BullMQ uses for the queue has one of these
 * names: job ids cannot contain `:`, and the keys BullMQ derives from a job id (`<id>:logs`, `<id>:lock`...)
 * end otherwise.
 */
export function deadLetterKeys(prefix: string): DeadLetterKeys {
  const base = `${prefix}:${DEAD_LETTER_QUEUE}:`;
  return {
    base,
    byTime: `${base}ferry:by-time`,
    facets: `${base}ferry:facets`,
    services: `${base}ferry:services`,
    byService: (service) => `${base}ferry:by-service:${service}`,
    job: (id) => `${base}${id}`,
  };
}

/** What the filters other than service and time read, instead of the whole record. */
export interface DeadLetterFacets {
  service: string;
  operation: string;
  tenant?: string;
  errorType: ErrorType;
  status?: number;
}

export function facetsOf(record: DeadLetterRecord): DeadLetterFacets {
  const facets: DeadLetterFacets = {
    service: record.service,
    operation: record.operation,
    errorType: record.finalError.type,
  };
  if (record.tenant !== undefined) facets.tenant = record.tenant;
  if (record.finalError.status !== undefined) facets.status = record.finalError.status;
  return facets;
}

/** Facets as stored, or undefined when missing or unreadable (the caller then reads the record). */
export function parseFacets(raw: string | null | undefined): DeadLetterFacets | undefined {
  if (raw === null || raw === undefined) return undefined;
  try {
    const value = JSON.parse(raw) as Partial<DeadLetterFacets> | null;
    return typeof value?.service === 'string' && typeof value.operation === 'string'
      ? (value as DeadLetterFacets)
      : undefined;
  } catch {
    return undefined;
  }
}

/** Service of an id written by Ferry (`dl-<service>.<source id>.<created>`, deadLetterJobId), else undefined. */
export function serviceOfDeadLetterId(id: string): string | undefined {
  return /^dl-([a-z0-9][a-z0-9_-]{0,63})\./.exec(id)?.[1];
}

/**
 * Whether `id` can name a dead letter's hash: never a key of BullMQ's (`meta`, `wait`...: removing one of
 * those as a "job" would break the queue) nor of the index. Ferry's ids start with `dl-`, which no BullMQ
 * key does; any other id must be in the index, which holds only ids of jobs that existed when indexed.
 */
export async function isDeadLetterId(
  client: RedisClient,
  keys: DeadLetterKeys,
  id: string,
): Promise<boolean> {
  if (id === '' || id.includes(':')) return false;
  if (id.startsWith('dl-')) return true;
  return (await client.zscore(keys.byTime, id)) !== null;
}

/**
 * Adds a dead letter's entries if its job exists. `keep` (the writer): entries already there keep their score
 * and facets, since a repeated add keeps the first record, not the new one. `exact` (reindex): entries are
 * set from the stored record. Returns 2 when the id was new to `by-time`, 1 when it was there, 0 when the job
 * does not exist.
 */
const INDEX = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local added
if ARGV[5] == 'exact' then
  added = redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
else
  added = redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
  redis.call('ZADD', KEYS[5], 'NX', ARGV[2], ARGV[1])
  redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[4])
end
redis.call('SADD', KEYS[4], ARGV[3])
return added + 1`;

export type IndexMode = 'keep' | 'exact';
export type EvalArgs = [script: string, numberOfKeys: number, ...keysAndArgs: (string | number)[]];

/** EVAL arguments that index one dead letter (see INDEX): for a MULTI (writer) or a plain call (reindex). */
export function indexCommand(
  keys: DeadLetterKeys,
  id: string,
  record: DeadLetterRecord,
  mode: IndexMode,
): EvalArgs {
  const { service } = record;
  const score = Math.trunc(record.deadLetteredAt);
  const facets = JSON.stringify(facetsOf(record));
  return [
    INDEX,
    5,
    keys.job(id),
    keys.byTime,
    keys.facets,
    keys.services,
    keys.byService(service),
    id,
    score,
    service,
    facets,
    mode,
  ];
}

/**
 * Removes a dead letter's entries, but only if its job no longer exists: a writer that added it again
 * meanwhile keeps it indexed. Without a service (unknown for a foreign id whose job is gone) only `by-time`
 * and `facets` are cleaned. Returns the number of entries removed.
 */
const UNINDEX_IF_MISSING = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local removed = redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if #KEYS >= 5 then
  removed = removed + redis.call('ZREM', KEYS[5], ARGV[1])
  if redis.call('ZCARD', KEYS[5]) == 0 then redis.call('SREM', KEYS[4], ARGV[2]) end
end
return removed`;

export async function unindexIfMissing(
  client: RedisClient,
  keys: DeadLetterKeys,
  id: string,
  service: string | undefined,
): Promise<number> {
  const common = [keys.job(id), keys.byTime, keys.facets];
  const result =
    service === undefined
      ? await client.eval(UNINDEX_IF_MISSING, 3, ...common, id)
      : await client.eval(
          UNINDEX_IF_MISSING,
          5,
          ...common,
          keys.services,
          keys.byService(service),
          id,
          service,
        );
  return Number(result);
}

/**
 * The service a dead letter belongs to, from the cheapest place that knows: its job's name
 * (`<service>.<operation>`), its facets, its id. Undefined when none does (foreign id, job and facets gone).
 */
export async function serviceOfDeadLetter(
  client: RedisClient,
  keys: DeadLetterKeys,
  id: string,
): Promise<string | undefined> {
  const [name, facets] = await Promise.all([client.hget(keys.job(id), 'name'), client.hget(keys.facets, id)]);
  const dot = name?.indexOf('.') ?? -1;
  if (name !== null && dot > 0) return name.slice(0, dot);
  return parseFacets(facets)?.service ?? serviceOfDeadLetterId(id);
}

/**
 * For a list, a replay and a purge walk alike: up to ARGV[4] entries (id, score, ...) of the index, newest first, strictly after position (ARGV[1], ARGV[2])
 * (ARGV[2] empty: from ARGV[1] inclusive), down to ARGV[3]. Entries of the same score follow each other by id
 * descending, which is how Redis orders them (bytewise, compared here byte by byte: Lua's `<` on strings
 * follows the server's locale). The cursor's own entry need not exist any more. Cost: O(log N + count), plus
 * the number of entries sharing the cursor's millisecond (a handful at most in practice).
 */
export const INDEX_PAGE = `
local function before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local max, after, min, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
if after ~= '' then
  for _, member in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[1], max, max)) do
    if #out >= count * 2 then break end
    if before(member, after) then
      out[#out + 1] = member
      out[#out + 1] = max
    end
  end
  max = '(' .. max
end
local left = count - #out / 2
if left > 0 then
  local rest = redis.call('ZREVRANGEBYSCORE', KEYS[1], max, min, 'WITHSCORES', 'LIMIT', 0, left)
  for i = 1, #rest do out[#out + 1] = rest[i] end
end
return out`;
