/**
 * The cluster-wide part of a breaker, in Redis:
 * - `<key>`        JSON SharedOpenRecord while open or half-open, PX outliving `untilMs`; no key = closed.
 * - `<key>:probe`  the half-open probe lock: `SET NX PX probeTimeoutMs` with a random id.
 *
 * Every command touches exactly one key (Lua scripts included), so `keyFor` may spread breakers over Redis
 * Cluster slots freely and `<key>` and `<key>:probe` need not share a slot.
 */
import type { SharedOpenRecord } from './state.ts';

/**
 * The few Redis commands breakers need. ioredis's `Redis` and `Cluster` satisfy it (checked in
 * test/breakers/registry.test.ts), so `src/breakers` depends on no client library.
 */
export interface RedisLike {
  get(key: string): Promise<string | null>;
  set(key: string, value: string, millisecondsToken: 'PX', milliseconds: number): Promise<unknown>;
  set(
    key: string,
    value: string,
    millisecondsToken: 'PX',
    milliseconds: number,
    nx: 'NX',
  ): Promise<'OK' | null>;
  del(key: string): Promise<number>;
  eval(script: string, numkeys: number, ...args: (string | number)[]): Promise<unknown>;
}

/** A record as read, with the exact stored string (for compare-and-delete). */
export interface ObservedRecord {
  record: SharedOpenRecord;
  raw: string;
}

/** How an open is written: `replace` (manual open) or `extend` (never shortens a longer open already stored). */
export type OpenWriteMode = 'replace' | 'extend';

// KEYS[1] key; ARGV[1] JSON, ARGV[2] untilMs, ARGV[3] PX, ARGV[4] now (epoch ms). Returns the stored JSON
// afterwards, so a process that tripped at the same time as another adopts one common untilMs, and a trip
// from a process that has not yet seen a manual open can neither shorten it nor replace it (a manual open
// still running is kept whatever its length: the operator's window, not the detector's, decides).
const extendOpenScript = `
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and tonumber(decoded.untilMs) then
    local untilMs = tonumber(decoded.untilMs)
    if untilMs >= tonumber(ARGV[2]) or (decoded.manual == true and untilMs > tonumber(ARGV[4])) then
      return current
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return ARGV[1]
`;

// KEYS[1] key; ARGV[1] expected value. Deletes only what the caller saw (Redis has no DEL-if-equal before 8.4).
const compareAndDeleteScript = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;

export function probeKeyOf(key: string): string {
  return `${key}:probe`;
}

export async function readSharedState(redis: RedisLike, key: string): Promise<ObservedRecord | null> {
  const raw = await redis.get(key);
  return raw === null ? null : { record: parseRecord(key, raw), raw };
}

/** Writes an open period; returns the record stored afterwards (another, longer one when `extend` kept it). */
export async function writeSharedOpen(
  redis: RedisLike,
  key: string,
  record: SharedOpenRecord,
  ttlMs: number,
  mode: OpenWriteMode,
): Promise<SharedOpenRecord> {
  const json = JSON.stringify(record);
  const px = Math.max(Math.ceil(ttlMs), 1);
  if (mode === 'replace') {
    await redis.set(key, json, 'PX', px);
    return record;
  }
  const stored = await redis.eval(extendOpenScript, 1, key, json, record.untilMs, px, record.openedAtMs);
  return typeof stored === 'string' ? parseRecord(key, stored) : record;
}

/** Closes the breaker for everyone; with `expectedRaw`, only if the stored record is still that one. */
export async function clearSharedState(redis: RedisLike, key: string, expectedRaw?: string): Promise<void> {
  if (expectedRaw === undefined) await redis.del(key);
  else await redis.eval(compareAndDeleteScript, 1, key, expectedRaw);
}

/** True when this caller won the half-open probe (and must run it). */
export async function acquireProbeLock(
  redis: RedisLike,
  key: string,
  id: string,
  ttlMs: number,
): Promise<boolean> {
  return (await redis.set(probeKeyOf(key), id, 'PX', ttlMs, 'NX')) === 'OK';
}

/** Releases the probe lock if this caller still holds it (it may have expired and been won by another). */
export async function releaseProbeLock(redis: RedisLike, key: string, id: string): Promise<void> {
  await redis.eval(compareAndDeleteScript, 1, probeKeyOf(key), id);
}

function parseRecord(key: string, raw: string): SharedOpenRecord {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    value = undefined;
  }
  if (typeof value === 'object' && value !== null) {
    const { untilMs, openedAtMs, manual, reason } = value as Record<string, unknown>;
    if (typeof untilMs === 'number' && Number.isFinite(untilMs)) {
      const record: SharedOpenRecord = {
        untilMs,
        openedAtMs: typeof openedAtMs === 'number' ? openedAtMs : untilMs,
      };
      if (manual === true) {
        record.manual = true;
        if (typeof reason === 'string') record.reason = reason;
      }
      return record;
    }
  }
  throw new TypeError(`malformed shared breaker state at "${key}": ${raw.slice(0, 200)}`);
}
