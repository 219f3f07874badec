/**
 * Replay (DESIGN §4, `ferry dlq replay`, `POST /v1/dead-letters/replay`): puts dead letters back on their service queue as new jobs with fresh attempts and the
 * original idempotency key, filtered like a list, with a dry run, a rate, progress, and safe to interrupt
 * and run again.
 *
 * Exactly once, across interruptions. Each dead letter `<id>` becomes the job `rp-<id>` (replayJobId): BullMQ
 * keeps the first job added under an id, so adding it again is a no-op. The add runs in one MULTI with a
 * marker key in the service queue's slot (`<prefix>:{<service>}:ferry:replayed:<id>`, kept REPLAY_MARKER_TTL_MS),
 * then the dead letter is deleted (DeadLetterPurger), then the marker. Stopped anywhere, a re-run finds the
 * dead letter still there and either the marker (the add happened: it only deletes) or no marker (the add
 * did not happen: it adds). The marker closes the window a job id alone leaves open: a replayed job that
 * completed and was removed (removeOnComplete, 24 h by default) before the re-run would be added again.
 * What is left: a crash between add and delete, then a re-run more than REPLAY_MARKER_TTL_MS (30 days)
 * later whose job is gone by then; and two replays of the same dead letter in the same few milliseconds
 * (each checks the dead letter is still there right before its add), where both may add but the job id
 * makes the second add a no-op unless the first job has already been removed. Before the delete, the
 * source job is marked dead-lettered (markSourceOfDeadLetter), so a worker that died between writing the
 * dead letter and marking it does not write it again for a second replay.
 *
 * Cheap and flat for large replays: the walk (dead-letter/walk.ts) reads the index newest first, like
 * a list, in batches, with a cursor that is a position (score, id), and loads a record only when its facets
 * match. It starts at the replay's start and goes down, so a replayed job that fails again during the replay
 * (its new dead letter is newer) is not met again by the same run.
 */
import { Job, Queue } from 'bullmq';

import { ConfigurationError, ValidationError } from '../core/errors.ts';
import type { DeadLetterRecord, JobData } from '../core/job.ts';
import { MAX_IDEMPOTENCY_KEY_LENGTH, serviceQueueName } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import { DAY, SECOND } from '../core/time.ts';
import {
  type DeadLetterFilter,
  type DeadLetterScope,
  type ListQuery,
  matchesRecord,
  parseListOptions,
} from '../dead-letter/list-query.ts';
import { DeadLetterPurger } from '../dead-letter/purge.ts';
import {
  type DeadLetterKeys,
  deadLetterKeys,
  isDeadLetterId,
  serviceOfDeadLetterId,
} from '../dead-letter/search-index.ts';
import { parseDeadLetterRecord } from '../dead-letter/view.ts';
import { countDeadLetters, walkDeadLetters, type WalkedDeadLetter } from '../dead-letter/walk.ts';
import { listBreakers } from './breaker-control.ts';
import type { OpsDeps } from './deps.ts';

/** Items a report lists at most; the rest are counted (`itemsOmitted`) and were each seen by onProgress. */
export const MAX_REPORT_ITEMS = 1_000;
/** How long a replay marker outlives a crash between a replay's add and its delete. */
export const REPLAY_MARKER_TTL_MS = 30 * DAY;
/** Dead letters read and replayed together (concurrently, within the rate). */
const BATCH = 200;
/** How long an `isServiceOpen` answer is trusted. */
const BREAKER_CHECK_MS = SECOND;

/** The job id a dead letter is replayed as: BullMQ ids may not contain `:` (dead-letter ids never do) nor be integers. */
export function replayJobId(deadLetterId: string): string {
  return `rp-${deadLetterId}`;
}

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
/**
 * Why a dead letter was skipped: `not-found` (an id that names no dead letter, or one outside the scope, or
 * one deleted, by a purge or a concurrent replay, after it was read and before its turn),
 * `not-matching` (an id whose dead letter the filter excludes), `unknown-service` (not in `deps.services`),
 * `breaker-open` (onlyWhenClosed), `unreadable` (data that is not a dead-letter record).
 */
export type ReplaySkipReason =
  'not-found' | 'not-matching' | 'unknown-service' | 'breaker-open' | 'unreadable';

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

/** Data of a replayed job: a service queue's job data (DESIGN §3) plus the dead letter it came from. */
export type ReplayJobData = JobData & { replayOf: string };

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

interface Candidate {
  id: string;
  /** Known from the id or the facets when there is no record. */
  service?: string;
  record?: DeadLetterRecord;
  skip?: ReplaySkipReason;
}

/**
 * The matching dead letters written up to `untilMs`, newest first. A dead letter of a job this run replayed
 * (its source job `rp-…`, created after the run started) is left out even if a worker's clock put it before
 * `untilMs`: it would be the same job a second time.
 */
async function* fromIndex(
  client: RedisClient,
  keys: DeadLetterKeys,
  query: ListQuery,
  untilMs: number,
  wallStart: number,
): AsyncGenerator<Candidate[]> {
  const exclude = (id: string): boolean => {
    const service = serviceOfDeadLetterId(id);
    if (service === undefined || !id.startsWith(`dl-${service}.rp-`)) return false;
    return Number(/\.(\d+)$/.exec(id)?.[1] ?? 0) >= wallStart;
  };
  const walk = walkDeadLetters(client, keys, {
    query,
    untilMs,
    batchSize: BATCH,
    withRecords: true,
    exclude,
  });
  for await (const batch of walk) yield batch.map(toCandidate);
}

function toCandidate(entry: WalkedDeadLetter): Candidate {
  const service = entry.record?.service ?? entry.facets?.service ?? serviceOfDeadLetterId(entry.id);
  return {
    id: entry.id,
    ...(service === undefined ? {} : { service }),
    ...(entry.record === undefined ? { skip: 'unreadable' as const } : { record: entry.record }),
  };
}

/** Each distinct id once, in the order given, checked against the scope and the filter. */
async function* fromIds(
  client: RedisClient,
  keys: DeadLetterKeys,
  query: ListQuery,
  ids: readonly string[],
): AsyncGenerator<Candidate[]> {
  const unique = [...new Set(ids)];
  const inScope: ListQuery = query.scope === undefined ? {} : { scope: query.scope };
  for (let start = 0; start < unique.length; start += BATCH) {
    const chunk = unique.slice(start, start + BATCH);
    yield Promise.all(
      chunk.map(async (id): Promise<Candidate> => {
        const service = serviceOfDeadLetterId(id);
        const known = service === undefined ? { id } : { id, service };
        const json = (await isDeadLetterId(client, keys, id))
          ? await client.hget(keys.job(id), 'data')
          : null;
        if (json === null) return { ...known, skip: 'not-found' };
        const record = parseDeadLetterRecord(json);
        if (record === undefined) return { ...known, skip: 'unreadable' };
        if (!matchesRecord(record, inScope, undefined)) return { ...known, skip: 'not-found' };
        const inTime =
          (query.since === undefined || record.deadLetteredAt >= query.since) &&
          (query.until === undefined || record.deadLetteredAt <= query.until);
        if (!inTime || !matchesRecord(record, query, query.service))
          return { id, record, skip: 'not-matching' };
        return { id, record };
      }),
    );
  }
}

/** Adds replayed jobs and deletes their dead letters (the protocol in the module comment). */
class Replayer {
  readonly #client: RedisClient;
  readonly #prefix: string;
  readonly #purger: DeadLetterPurger;
  readonly #keys: DeadLetterKeys;
  readonly #queues = new Map<string, Queue<ReplayJobData>>();

  constructor(client: RedisClient, prefix: string) {
    this.#client = client;
    this.#prefix = prefix;
    this.#purger = new DeadLetterPurger({ connection: client, prefix });
    this.#keys = deadLetterKeys(prefix);
  }

  /** False when the dead letter was gone (deleted, or replayed by another run) before its add. */
  async replay(id: string, record: DeadLetterRecord): Promise<boolean> {
    const queue = this.#queue(record.service);
    const marker = queue.toKey(`ferry:replayed:${id}`);
    if ((await this.#client.exists(marker)) === 0) {
      // The record was read a batch ago (up to BATCH / rate seconds with a cap): purged, or replayed by a
      // concurrent run whose job may be gone by now, it must not be added again.
      if ((await this.#client.exists(this.#keys.job(id))) === 0) return false;
      await this.#add(queue, marker, id, record);
    }
    // The purger marks the source job first (markSourceOfDeadLetter): a dead letter written again after its
    // replay would be replayed a second time.
    await this.#purger.delete(id);
    await this.#client.del(marker);
    return true;
  }

  async close(): Promise<void> {
    await Promise.all([this.#purger.close(), ...[...this.#queues.values()].map((queue) => queue.close())]);
  }

  async #add(
    queue: Queue<ReplayJobData>,
    marker: string,
    id: string,
    record: DeadLetterRecord,
  ): Promise<void> {
    const jobId = replayJobId(id);
    const data = replayJobData(id, record);
    const transaction = (await queue.getBackend().client).multi();
    await new Job<ReplayJobData>(queue, record.operation, data, { jobId }, jobId).addJob(transaction);
    transaction.runCommand('set', [marker, jobId, 'PX', REPLAY_MARKER_TTL_MS]);
    const results = await transaction.exec();
    const error =
      results === null
        ? new Error(`replay of ${id}: the transaction was aborted`)
        : results.find(([failed]) => failed !== null)?.[0];
    if (error === undefined || error === null) return;
    if (!error.message.startsWith('NOSCRIPT')) throw error;
    // BullMQ's script was evicted (see dead-letter/writer.ts): ioredis resends it for a plain call, not inside MULTI.
    // A crash between the two leaves a job without its marker: a re-run's add is then a no-op by job id.
    await queue.add(record.operation, data, { jobId });
    await this.#client.set(marker, jobId, 'PX', REPLAY_MARKER_TTL_MS);
  }

  #queue(service: string): Queue<ReplayJobData> {
    let queue = this.#queues.get(service);
    if (queue === undefined) {
      queue = new Queue<ReplayJobData>(serviceQueueName(service), {
        connection: this.#client,
        prefix: this.#prefix,
      });
      this.#queues.set(service, queue);
    }
    return queue;
  }
}

/**
 * A new job's data: fresh attempts (no `ferry` delivery state), the same input, tenant, metadata and origin, and
 * the key the downstream saw as `Idempotency-Key`, so a call that did reach the downstream is recognised
 * there. A dead letter records it, the job's own key or the default one (queue-layout.ts
 * defaultIdempotencyKey); one written before it did so, for a job without a key, has none: its job was sent
 * its job id.
 */
export function replayJobData(id: string, record: DeadLetterRecord): ReplayJobData {
  const data: ReplayJobData = { input: record.input ?? null, replayOf: id };
  if (record.tenant !== undefined) data.tenant = record.tenant;
  const key =
    record.idempotencyKey ??
    (record.sourceJobId.length <= MAX_IDEMPOTENCY_KEY_LENGTH ? record.sourceJobId : undefined);
  if (key !== undefined) data.idempotencyKey = key;
  if (record.metadata !== undefined) data.metadata = record.metadata;
  // Sealed stays sealed: the envelope names the job it was sealed for, and opens on the same service and
  // tenant, so it is copied verbatim (no key needed to replay).
  if (record.sealed !== undefined) data.sealed = record.sealed;
  // A follow-up stays one: its origin, depth included, so its own reactions still count towards the chain's
  // depth limit (a replay cannot start a chain afresh).
  if (record.origin !== undefined) data.origin = record.origin;
  return data;
}

/**
 * Paces adds: each turn starts at least 1 / rate seconds after the previous turn actually started, and turns
 * are taken one after another, so however late a timer fires or however slow one add is, no two adds are
 * closer than the interval and the measured rate never exceeds the cap (a schedule fixed up front let a late
 * first add be followed by on-time ones: 31 adds at 20/s took 1.3 s instead of 1.5 s under load). A pause
 * earns no burst. `wait` resolves false when the signal aborts (at once, also while waiting).
 */
function createPacer(
  ratePerSecond: number | undefined,
  signal: AbortSignal | undefined,
): { wait(): Promise<boolean>; dispose(): void } {
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<void>((resolve) => {
    onAbort = resolve;
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  const dispose = (): void => signal?.removeEventListener('abort', onAbort!);
  if (ratePerSecond === undefined) return { wait: () => Promise.resolve(signal?.aborted !== true), dispose };
  const intervalMs = SECOND / ratePerSecond;
  let last = -Infinity;
  let turns: Promise<boolean> = Promise.resolve(true);
  const isAborted = (): boolean => signal?.aborted === true;
  return {
    wait() {
      turns = turns.then(async (going) => {
        if (!going || isAborted()) return false;
        const waitMs = Math.ceil(last + intervalMs - performance.now());
        if (waitMs > 0) {
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([new Promise((resolve) => (timer = setTimeout(resolve, waitMs))), aborted]);
          clearTimeout(timer);
        }
        if (isAborted()) return false;
        last = performance.now();
        return true;
      });
      return turns;
    },
    dispose,
  };
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
