/** One subscriber of the job event hub: what it asked for, and the delivery of its events in stream order. */
import { compareStreamIds, type JobEvent } from '../../core/job-events.ts';
import { type Dispatch, jobIdOf, type JobInfo, type StreamEntry } from './map.ts';

export interface JobEventSubscribeOptions {
  service: string;
  /** One job's events; every job's of the service when absent. */
  jobId?: string;
  /**
   * Events delivered before the live ones: those after a stream id the client saw (exclusive: its
   * `Last-Event-ID`), or a job's history from its enqueue time (epoch ms). Live events only when absent.
   */
  replay?: { after: string } | { fromEnqueuedAt: number };
  /** The job's operation, tenant and metadata from the caller's own read of it: saves the hub one. */
  info?: JobInfo;
  /** Which events this subscriber may see (tenant limits). Events whose tenant is unknown never pass. */
  filter?: (event: JobEvent) => boolean;
  onEvent(event: JobEvent): void;
  /** Something the client should know (a gap in what could be replayed); an SSE comment. */
  onNotice?(text: string): void;
  /** The job was removed (cancelled): a job subscription gets nothing more. */
  onRemoved?(): void;
  /** The hub closed: nothing more comes. */
  onEnd?(): void;
}

export interface JobEventSubscription {
  /** Id of the last event delivered (or passed over by the filter). */
  readonly lastEventId: string | undefined;
  close(): void;
}

export class Subscription implements JobEventSubscription {
  lastEventId: string | undefined;
  /** Live events with ids up to here were dispatched before this subscription existed. */
  readonly since: string;
  #buffer: Dispatch[] | undefined = [];
  #closed = false;
  readonly options: JobEventSubscribeOptions;
  readonly #release: (subscription: Subscription) => void;

  constructor(
    options: JobEventSubscribeOptions,
    since: string,
    release: (subscription: Subscription) => void,
  ) {
    this.options = options;
    this.since = since;
    this.#release = release;
  }

  accepts(entry: StreamEntry): boolean {
    return (
      !this.#closed &&
      (this.options.jobId === undefined || jobIdOf(entry) === this.options.jobId) &&
      compareStreamIds(entry.id, this.since) > 0
    );
  }

  /** A live dispatch: held back while the replay is being delivered. */
  receive(dispatch: Dispatch): void {
    if (this.#buffer === undefined) this.deliver(dispatch);
    else this.#buffer.push(dispatch);
  }

  deliver(dispatch: Dispatch): void {
    if (this.#closed) return;
    const id = dispatch.kind === 'event' ? dispatch.event.id : dispatch.id;
    if (this.lastEventId !== undefined && compareStreamIds(id, this.lastEventId) <= 0) return;
    this.lastEventId = id;
    if (dispatch.kind === 'removed') {
      this.options.onRemoved?.();
      return;
    }
    const { filter } = this.options;
    if (filter !== undefined && (!dispatch.hasJobInfo || !filter(dispatch.event))) return;
    this.options.onEvent(dispatch.event);
  }

  /** After the replay: live events from now on. */
  goLive(): void {
    const buffered = this.#buffer ?? [];
    this.#buffer = undefined;
    for (const dispatch of buffered) this.deliver(dispatch);
  }

  end(): void {
    if (this.#closed) return;
    this.close();
    this.options.onEnd?.();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#buffer = undefined;
    this.#release(this);
  }
}
