/**
 * One service's side of the job event hub (see hub.ts): its QueueEvents, its subscribers, the batches
 * of stream entries dispatched to them in order, replays, and the cache of what each job is.
 */
import { QueueEvents, type QueueEventsListener } from 'bullmq';

import { Deadline, forceCloseBull, settleWithin } from '../../core/deadline.ts';
import { compareStreamIds } from '../../core/job-events.ts';
import type { Logger } from '../../core/logger.ts';
import { serviceQueueName } from '../../core/queue-layout.ts';
import { type RedisClient, waitUntilReady } from '../../core/redis.ts';
import { SECOND } from '../../core/time.ts';
import {
  type Dispatch,
  entryFromXrange,
  isMappedStreamEvent,
  jobIdOf,
  type JobInfo,
  type JobRead,
  MAPPED_STREAM_EVENTS,
  readJob,
  type StreamEntry,
  toDispatch,
} from './map.ts';
import { type JobEventSubscribeOptions, Subscription } from './subscription.ts';

export interface ChannelOptions {
  connection: RedisClient;
  eventsConnection: RedisClient;
  prefix: string;
  logger: Logger;
  jobInfoCacheSize: number;
  clockSkewMs: number;
}

/** Entries per XRANGE while replaying: bounded replies, and Redis is never busy long for one client. */
const REPLAY_PAGE = 500;
/** How long a subscribe waits for the read connection before it fails (the route answers 503). */
const CONNECT_WAIT_MS = 2 * SECOND;
/** How long close() waits for Redis, in all, before it force-closes the QueueEvents' connection. */
export const CHANNEL_CLOSE_WAIT_MS = 2 * SECOND;
/** What a force-close gets on top: it only disconnects sockets, it never waits for Redis. */
const FORCE_CLOSE_WAIT_MS = 500;

type FerryListener = QueueEventsListener & {
  [name: string]: (args: Record<string, unknown>, id: string) => void;
};

/** One service: its QueueEvents, its subscribers, its job cache. */
export class ServiceChannel {
  readonly subscriptions = new Set<Subscription>();
  /** Job subscriptions by job id, and service-wide ones: an entry is offered to its job's and to these only. */
  readonly #byJob = new Map<string, Set<Subscription>>();
  readonly #wide = new Set<Subscription>();
  /** Id of the last entry the QueueEvents passed on. */
  cursor = '0-0';
  readonly #service: string;
  readonly #options: ChannelOptions;
  readonly #eventsKey: string;
  readonly #jobKeyPrefix: string;
  readonly #infos = new Map<string, JobInfo>();
  readonly #cacheSize: number;
  #queueEvents: QueueEvents | undefined;
  #starting: Promise<void> | undefined;
  #pending: StreamEntry[] = [];
  #scheduled = false;
  #flushing: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(service: string, options: ChannelOptions) {
    this.#service = service;
    this.#options = options;
    this.#jobKeyPrefix = `${options.prefix}:${serviceQueueName(service)}:`;
    this.#eventsKey = `${this.#jobKeyPrefix}events`;
    this.#cacheSize = options.jobInfoCacheSize;
  }

  /** Starts the QueueEvents at the stream's current end, once; a failed start is tried again next time. */
  #start(): Promise<void> {
    this.#starting ??= (async () => {
      await this.#connected();
      const [last] = (await this.#options.connection.xrevrange(this.#eventsKey, '+', '-', 'COUNT', 1)) as [
        string,
        string[],
      ][];
      this.cursor = last?.[0] ?? '0-0';
      // Closed while starting: a QueueEvents made now would hold its blocking connection for ever.
      if (this.#closed) return;
      const queueEvents = new QueueEvents(serviceQueueName(this.#service), {
        connection: this.#options.eventsConnection,
        prefix: this.#options.prefix,
        lastEventId: this.cursor,
      });
      queueEvents.on('error', (error) =>
        this.#options.logger.error({ service: this.#service, err: error }, 'job events stream error'),
      );
      for (const event of MAPPED_STREAM_EVENTS) {
        queueEvents.on<FerryListener>(event, (fields, id) => this.#receive({ id, event, fields }));
      }
      this.#queueEvents = queueEvents;
    })().catch((error: unknown) => {
      this.#starting = undefined;
      throw error;
    });
    return this.#starting;
  }

  /**
   * Registers for live events, then delivers the replay (if asked); live events follow once it is done, those
   * the replay already gave skipped. Rejects, delivering nothing, when Redis cannot be read.
   */
  async subscribe(options: JobEventSubscribeOptions): Promise<Subscription> {
    await this.#start();
    if (this.#closed) throw new Error('the job event hub is closed');
    if (options.jobId !== undefined && options.info !== undefined)
      this.#remember(options.jobId, options.info);
    const subscription = new Subscription(options, this.cursor, (s) => this.#remove(s));
    this.#add(subscription);
    try {
      if (options.replay !== undefined) await this.#replay(subscription, options.replay);
    } catch (error) {
      subscription.close();
      throw error;
    }
    subscription.goLive();
    return subscription;
  }

  #add(subscription: Subscription): void {
    this.subscriptions.add(subscription);
    const { jobId } = subscription.options;
    if (jobId === undefined) {
      this.#wide.add(subscription);
      return;
    }
    let forJob = this.#byJob.get(jobId);
    if (forJob === undefined) this.#byJob.set(jobId, (forJob = new Set()));
    forJob.add(subscription);
  }

  #remove(subscription: Subscription): void {
    this.subscriptions.delete(subscription);
    const { jobId } = subscription.options;
    if (jobId === undefined) {
      this.#wide.delete(subscription);
      return;
    }
    const forJob = this.#byJob.get(jobId);
    forJob?.delete(subscription);
    if (forJob?.size === 0) this.#byJob.delete(jobId);
  }

  /** Subscriptions an entry is for. */
  #targets(entry: StreamEntry): Subscription[] {
    const jobId = jobIdOf(entry);
    const forJob = jobId === undefined ? undefined : this.#byJob.get(jobId);
    const candidates = forJob === undefined ? [...this.#wide] : [...this.#wide, ...forJob];
    return candidates.filter((subscription) => subscription.accepts(entry));
  }

  #remember(jobId: string, info: JobInfo): void {
    this.#infos.delete(jobId);
    this.#infos.set(jobId, info);
    if (this.#infos.size > this.#cacheSize) this.#infos.delete(this.#infos.keys().next().value!);
  }

  #receive(entry: StreamEntry): void {
    this.cursor = entry.id;
    const jobId = jobIdOf(entry);
    // A job id comes back once its job is gone (idempotency keys): what was known of it no longer holds.
    if (entry.event === 'added' && jobId !== undefined) this.#infos.delete(jobId);
    if (this.#wide.size === 0 && (jobId === undefined || !this.#byJob.has(jobId))) return;
    this.#pending.push(entry);
    if (this.#scheduled) return;
    this.#scheduled = true;
    // One batch per turn: the reads a batch needs go out together, and dispatches keep stream order.
    this.#flushing = this.#flushing.then(() => this.#flush());
  }

  async #flush(): Promise<void> {
    this.#scheduled = false;
    const batch = this.#pending;
    this.#pending = [];
    try {
      const work = batch
        .map((entry) => ({ entry, targets: this.#targets(entry) }))
        .filter(({ targets }) => targets.length > 0);
      if (work.length === 0) return;
      const dispatches = await this.#dispatches(work.map(({ entry }) => entry));
      work.forEach(({ targets }, i) => {
        const dispatch = dispatches[i];
        if (dispatch !== undefined) for (const target of targets) target.receive(dispatch);
      });
    } catch (error) {
      this.#options.logger.error({ service: this.#service, err: error }, 'could not dispatch job events');
    }
  }

  /** The dispatch of each entry (same order), reading the jobs whose events need it, together. */
  async #dispatches(entries: readonly StreamEntry[]): Promise<(Dispatch | undefined)[]> {
    const toRead = new Set<string>();
    for (const entry of entries) {
      const jobId = jobIdOf(entry);
      if (jobId === undefined || entry.event === 'removed') continue;
      if (entry.event === 'failed' || !this.#infos.has(jobId)) toRead.add(jobId);
    }
    const reads = new Map<string, JobRead | undefined>();
    await Promise.all(
      [...toRead].map(async (jobId) => {
        try {
          const read = await readJob(
            this.#options.connection,
            this.#jobKeyPrefix + jobId,
            this.#service,
            jobId,
          );
          reads.set(jobId, read);
          if (read !== undefined) this.#remember(jobId, read.info);
        } catch (error) {
          this.#options.logger.warn(
            { service: this.#service, jobId, err: error },
            'could not read a job for its events',
          );
        }
      }),
    );
    // A job id comes back once its job is gone (idempotency keys): an entry before its id's last `added` here
    // was another job's, maybe another tenant's, and what is known of the job now says nothing about it.
    const lastAdded = new Map<string, number>();
    entries.forEach((entry, i) => {
      const jobId = jobIdOf(entry);
      if (entry.event === 'added' && jobId !== undefined) lastAdded.set(jobId, i);
    });
    return entries.map((entry, i) => {
      const jobId = jobIdOf(entry) ?? '';
      if ((lastAdded.get(jobId) ?? i) > i) return toDispatch(this.#service, entry, undefined, undefined);
      const read = entry.event === 'failed' ? reads.get(jobId) : undefined;
      return toDispatch(this.#service, entry, this.#infos.get(jobId) ?? reads.get(jobId)?.info, read);
    });
  }

  /**
   * Stream entries after `start` (XRANGE syntax: `(id` exclusive, `ms-0` inclusive) to the current end, of one
   * job or all, and the stream's oldest and newest ids.
   */
  async #readRange(
    start: string,
    jobId: string | undefined,
  ): Promise<{ entries: StreamEntry[]; oldest: string | undefined; newest: string | undefined }> {
    const { connection } = this.#options;
    await this.#connected();
    const [[first], [last]] = (await Promise.all([
      connection.xrange(this.#eventsKey, '-', '+', 'COUNT', 1),
      connection.xrevrange(this.#eventsKey, '+', '-', 'COUNT', 1),
    ])) as [[string, string[]][], [string, string[]][]];
    const entries: StreamEntry[] = [];
    let from = start;
    for (;;) {
      const page = (await connection.xrange(this.#eventsKey, from, '+', 'COUNT', REPLAY_PAGE)) as [
        string,
        string[],
      ][];
      for (const raw of page) {
        const entry = entryFromXrange(raw);
        if (isMappedStreamEvent(entry.event) && (jobId === undefined || jobIdOf(entry) === jobId))
          entries.push(entry);
      }
      if (page.length < REPLAY_PAGE) break;
      from = `(${page[page.length - 1]![0]}`;
    }
    return { entries, oldest: first?.[0], newest: last?.[0] };
  }

  async #replay(
    subscription: Subscription,
    from: NonNullable<JobEventSubscribeOptions['replay']>,
  ): Promise<void> {
    const { jobId, onNotice } = subscription.options;
    const isResume = 'after' in from;
    const start = isResume
      ? `(${from.after}`
      : `${Math.max(0, from.fromEnqueuedAt - this.#options.clockSkewMs)}-0`;
    const range = await this.#readRange(start, jobId);
    let dispatches = (await this.#dispatches(range.entries)).filter((d) => d !== undefined);
    if (jobId !== undefined) {
      // A job id can come back (idempotency keys): its history starts at its last `queued`, also on a resume
      // (a client's Last-Event-ID may be older than the job: what came before was another job's).
      const lastQueued = dispatches.findLastIndex((d) => d.kind === 'event' && d.event.event === 'queued');
      if (lastQueued > 0) dispatches = dispatches.slice(lastQueued);
    }
    const { oldest, newest } = range;
    if (isResume) {
      if (newest === undefined || compareStreamIds(from.after, newest) > 0) {
        // Not an id of this stream (Redis lost its data, or another prefix): skipping up to it could hide
        // every event for a long time.
        onNotice?.(`Last-Event-ID ${from.after} is not in the events stream; events from now on`);
      } else {
        subscription.lastEventId = from.after;
        if (oldest !== undefined && compareStreamIds(from.after, oldest) < 0)
          onNotice?.(
            `events after ${from.after} before ${oldest} are no longer held; resuming from ${oldest}`,
          );
      }
    } else if (
      oldest !== undefined &&
      compareStreamIds(start, oldest) < 0 &&
      !dispatches.some((d) => d.kind === 'event' && d.event.event === 'queued')
    ) {
      onNotice?.(`this job's events before ${oldest} are no longer held`);
    }
    for (const dispatch of dispatches) subscription.deliver(dispatch);
  }

  /** A producer-role connection refuses commands until it is connected (no offline queue). */
  async #connected(): Promise<void> {
    const { connection } = this.#options;
    if (connection.status !== 'ready') await waitUntilReady(connection, CONNECT_WAIT_MS);
  }

  /**
   * Ends every subscription and closes the QueueEvents, within `waitMs` (plus a moment to force-close) whatever
   * Redis does: BullMQ's QueueEvents.close() waits for ever when Redis is down (its blocking connection, while
   * reconnecting, never emits the `end` that close waits for, BullMQ #4585) or SIGSTOPped (no answer to QUIT).
   */
  async close(waitMs = CHANNEL_CLOSE_WAIT_MS): Promise<void> {
    this.#closed = true;
    for (const subscription of [...this.subscriptions]) subscription.end();
    const deadline = new Deadline(waitMs);
    // A start under way (a subscribe that has not resolved yet) finishes first, so nothing it opens outlives us
    // (a start that finishes after we gave up sees #closed and opens nothing).
    if (this.#starting !== undefined) await settleWithin(this.#starting, deadline.left());
    await settleWithin(this.#flushing, deadline.left());
    const queueEvents = this.#queueEvents;
    if (queueEvents === undefined) return;
    if ((await settleWithin(queueEvents.close(), deadline.left())) === 'timeout') {
      this.#options.logger.warn(
        { service: this.#service, waitMs },
        'job events stream did not close in time (Redis unreachable); force-closing its connection',
      );
      await forceCloseBull(queueEvents, FORCE_CLOSE_WAIT_MS);
    }
  }
}
