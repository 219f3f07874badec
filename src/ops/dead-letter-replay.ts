/**
 * Replay (DESIGN §4, `ferry dlq replay`, `POST /v1/dead-letters/replay`): puts dead letters back on their
 * service queue as new jobs with fresh attempts and the original idempotency key, filtered like a list, with
 * a dry run, a rate, progress, and safe to interrupt and run again: each dead letter is replayed exactly
 * once, across interruptions (the protocol: dead-letter-replayer.ts).
 *
 * Cheap and flat for large replays: the walk (dead-letter/walk.ts, through dead-letter-replay-sources.ts)
 * reads the index newest first, like a list, in batches, with a cursor that is a position (score, id), and
 * loads a record only when its facets match. It starts at the replay's start and goes down, so a replayed job
 * that fails again during the replay (its new dead letter is newer) is not met again by the same run. Adds
 * are paced (pacer.ts).
 */
import { ConfigurationError, ValidationError } from '../core/errors.ts';
import type { RedisClient } from '../core/redis.ts';
import { SECOND } from '../core/time.ts';
import {
  type DeadLetterFilter,
  type DeadLetterScope,
  type ListQuery,
  parseListOptions,
} from '../dead-letter/list-query.ts';
import { deadLetterKeys } from '../dead-letter/search-index.ts';
import { countDeadLetters } from '../dead-letter/walk.ts';
import { listBreakers } from './breaker-control.ts';
import { type Candidate, fromIds, fromIndex } from './dead-letter-replay-sources.ts';
import { Replayer, replayJobId } from './dead-letter-replayer.ts';
import type { OpsDeps } from './deps.ts';
import { createPacer } from './pacer.ts';

export type { ReplaySkipReason } from './dead-letter-replay-sources.ts';
export {
  REPLAY_MARKER_TTL_MS,
  type ReplayJobData,
  replayJobData,
  replayJobId,
} from './dead-letter-replayer.ts';

/** Items a report lists at most; the rest are counted (`itemsOmitted`) and were each seen by onProgress. */
export const MAX_REPORT_ITEMS = 1_000;
/** How long an `isServiceOpen` answer is trusted. */
const BREAKER_CHECK_MS = SECOND;

export interface ReplayDeps {
  connection: RedisClient;
  prefix: string;
  /** The services configured now; a dead letter of another service is skipped (`unknown-service`). Default: all. */
  services?: ReadonlySet<string>;
  /** Whether a service's breaker is open now; needed for `onlyWhenClosed`. */
  isServiceOpen?: (service: string) => Promise<boolean>;
  /** Epoch ms; bounds the walk (dead letters written up to the start). Default Date.now. */
  now?: () => number;
}

/**
 * The replay's collaborators for an operator (the CLI, the API): the services file's services, and their
 * breakers as every worker sees them (for `onlyWhenClosed`; a service not in the file counts as closed).
 */
export function replayDeps(deps: OpsDeps): ReplayDeps {
  return {
    connection: deps.connection,
    prefix: deps.prefix,
    services: new Set(deps.config.services.keys()),
    isServiceOpen: async (service) =>
      deps.config.services.has(service) && (await listBreakers(deps, [service]))[0]!.state !== 'closed',
    ...(deps.now === undefined ? {} : { now: deps.now }),
  };
}

export interface ReplayOptions {
  /** Dead letters to replay; all when neither filter nor ids is given. */
  filter?: DeadLetterFilter;
  /** Replay exactly these (and only those of them matching `filter`, if given); unknown ids are skipped (`not-found`). */
  ids?: readonly string[];
  /** What the caller may touch at all; a dead letter outside it is `not-found` (by id) or not walked. */
  scope?: DeadLetterScope;
  /** Report what would go (`would-replay`) and change nothing in Redis. Default false. */
  dryRun?: boolean;
  /** Jobs added per second at most; undefined: as fast as Redis allows. Not applied to a dry run. */
  ratePerSecond?: number;
  /** Skip (`breaker-open`) dead letters of services whose breaker is open when they come up. Default false. */
  onlyWhenClosed?: boolean;
  /** Dead letters to take at most (matched, whatever their outcome). Default: no limit. */
  limit?: number;
  /** Stops the replay between dead letters: those in flight finish (add and delete), no other starts. */
  signal?: AbortSignal;
  /** Called after each dead letter. Must not throw: an error stops the replay (as the signal would) and is rethrown. */
  onProgress?: (progress: ReplayProgress) => void;
}

export type ReplayOutcome = 'replayed' | 'skipped' | 'failed' | 'would-replay';
export interface ReplayItem {
  id: string;
  /** Empty when unknown (an id that names nothing). */
  service: string;
  operation: string;
  outcome: ReplayOutcome;
  /** The job it was (or would be) added as. */
  jobId?: string;
  /** A skip reason (ReplaySkipReason), or a failure's message. */
  reason?: string;
}

export interface ReplayProgress {
  /** Known up front when cheap (ids, or filters the index answers alone: service and time), else a running count. */
  matched: number;
  /** Whether `matched` is the total (then `etaMs` is given). */
  matchedIsTotal: boolean;
  done: number;
  replayed: number;
  skipped: number;
  failed: number;
  elapsedMs: number;
  etaMs?: number;
  last?: Omit<ReplayItem, 'operation'>;
}

export interface ReplayReport {
  dryRun: boolean;
  matched: number;
  /** Replayed, or would be in a dry run. */
  replayed: number;
  skipped: number;
  failed: number;
  /** Stopped by the signal before every matched dead letter was taken. */
  interrupted: boolean;
  elapsedMs: number;
  /**
   * The first MAX_REPORT_ITEMS dead letters taken, in order. Capped so 100,000 stay cheap; a caller that
   * needs every one (a CLI printing JSON lines) takes them from onProgress's `last`.
   */
  items: ReplayItem[];
  itemsOmitted: number;
}

/** Puts dead letters back on their service queues; see the module comment. Throws ValidationError for bad options. */
export async function replayDeadLetters(
  deps: ReplayDeps,
  options: ReplayOptions = {},
): Promise<ReplayReport> {
  const query = checkOptions(deps, options);
  const now = deps.now ?? Date.now;
  const startedAt = performance.now();
  const startedAtMs = now();
  const wallStart = Date.now();
  const keys = deadLetterKeys(deps.prefix);
  const dryRun = options.dryRun === true;
  const limit = options.limit ?? Infinity;
  const { signal } = options;
  const replayer = dryRun ? undefined : new Replayer(deps.connection, deps.prefix);
  const pacer = createPacer(dryRun ? undefined : options.ratePerSecond, signal);
  const isOpen = breakerCheck(options.onlyWhenClosed === true ? deps.isServiceOpen : undefined);

  const upFront =
    options.ids !== undefined
      ? new Set(options.ids).size
      : await countDeadLetters(deps.connection, keys, query, startedAtMs);
  const total = upFront === undefined ? undefined : Math.min(upFront, limit);
  const counts = { matched: 0, done: 0, replayed: 0, skipped: 0, failed: 0 };
  const items: (ReplayItem | undefined)[] = [];
  let progressError: { error: unknown } | undefined;
  const stopped = (): boolean => signal?.aborted === true || progressError !== undefined;

  // In the order taken, whatever order they finish in; a hole is one stopped before its turn.
  const finish = (seq: number, item: ReplayItem): void => {
    counts.done++;
    if (item.outcome === 'skipped') counts.skipped++;
    else if (item.outcome === 'failed') counts.failed++;
    else counts.replayed++;
    if (seq < MAX_REPORT_ITEMS) items[seq] = item;
    if (options.onProgress === undefined || progressError !== undefined) return;
    const elapsedMs = performance.now() - startedAt;
    const matched = Math.max(total ?? 0, counts.matched);
    const { operation: _operation, ...last } = item;
    try {
      options.onProgress({
        ...counts,
        matched,
        matchedIsTotal: total !== undefined,
        elapsedMs,
        ...(total === undefined
          ? {}
          : { etaMs: Math.round((elapsedMs / counts.done) * (matched - counts.done)) }),
        last,
      });
    } catch (error) {
      progressError = { error };
    }
  };

  let interrupted = false;
  let seq = 0;
  const take = async (seq: number, candidate: Candidate): Promise<void> => {
    const { id, record } = candidate;
    const service = record?.service ?? candidate.service ?? '';
    const base = { id, service, operation: record?.operation ?? '' };
    let reason = candidate.skip;
    if (reason === undefined && deps.services !== undefined && !deps.services.has(service))
      reason = 'unknown-service';
    if (reason === undefined && (await isOpen(service))) reason = 'breaker-open';
    if (reason !== undefined || record === undefined) {
      finish(seq, { ...base, outcome: 'skipped', reason: reason ?? 'unreadable' });
      return;
    }
    const jobId = replayJobId(id);
    if (replayer === undefined) {
      finish(seq, { ...base, outcome: 'would-replay', jobId });
      return;
    }
    if (!(await pacer.wait()) || progressError !== undefined) {
      // Stopped while it waited for its turn: not taken.
      counts.matched--;
      interrupted = true;
      return;
    }
    try {
      if (await replayer.replay(id, record)) finish(seq, { ...base, outcome: 'replayed', jobId });
      else finish(seq, { ...base, outcome: 'skipped', reason: 'not-found' });
    } catch (error) {
      finish(seq, {
        ...base,
        outcome: 'failed',
        jobId,
        reason: error instanceof Error ? error.message : String(error),
      });
    }
  };

  const source =
    options.ids === undefined
      ? fromIndex(deps.connection, keys, query, startedAtMs, wallStart)
      : fromIds(deps.connection, keys, query, options.ids);
  try {
    for await (const batch of source) {
      const running: Promise<void>[] = [];
      for (const candidate of batch) {
        if (counts.matched >= limit) break;
        if (stopped()) {
          interrupted = true;
          break;
        }
        counts.matched++;
        running.push(take(seq++, candidate));
      }
      await Promise.all(running);
      if (interrupted || counts.matched >= limit) break;
    }
  } finally {
    pacer.dispose();
    await replayer?.close();
  }
  const listed = items.filter((item): item is ReplayItem => item !== undefined);
  if (progressError !== undefined) throw progressError.error;
  return {
    dryRun,
    matched: counts.matched,
    replayed: counts.replayed,
    skipped: counts.skipped,
    failed: counts.failed,
    interrupted,
    elapsedMs: Math.round(performance.now() - startedAt),
    items: listed,
    itemsOmitted: counts.done - listed.length,
  };
}

function checkOptions(deps: ReplayDeps, options: ReplayOptions): ListQuery {
  const query = parseListOptions({
    ...options.filter,
    ...(options.scope === undefined ? {} : { scope: options.scope }),
  });
  const { ratePerSecond, limit, ids } = options;
  if (ratePerSecond !== undefined && !(Number.isFinite(ratePerSecond) && ratePerSecond > 0))
    throw new ValidationError('ratePerSecond: must be a number > 0', { field: 'ratePerSecond' });
  if (limit !== undefined && !(Number.isSafeInteger(limit) && limit >= 1))
    throw new ValidationError('limit: must be an integer >= 1', { field: 'limit' });
  if (ids !== undefined && !ids.every((id) => typeof id === 'string' && id !== ''))
    throw new ValidationError('ids: must be non-empty strings', { field: 'ids' });
  if (options.onlyWhenClosed === true && deps.isServiceOpen === undefined)
    throw new ConfigurationError('onlyWhenClosed needs deps.isServiceOpen (the breakers state)');
  return query;
}

/** isServiceOpen, asked at most once per BREAKER_CHECK_MS per service. */
function breakerCheck(isServiceOpen: ((service: string) => Promise<boolean>) | undefined) {
  const known = new Map<string, { at: number; open: Promise<boolean> }>();
  return (service: string): Promise<boolean> => {
    if (isServiceOpen === undefined) return Promise.resolve(false);
    const cached = known.get(service);
    if (cached !== undefined && performance.now() - cached.at < BREAKER_CHECK_MS) return cached.open;
    const open = isServiceOpen(service);
    known.set(service, { at: performance.now(), open });
    return open;
  };
}
