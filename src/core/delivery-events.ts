import type { ErrorRecord } from './errors.ts';
import type { JobRef, JobResult } from './job.ts';

/** Fields every delivery event about one job carries. */
interface DeliveryEventBase {
  service: string;
  operation: string;
  jobId: string;
  tenant: string | undefined;
}

/**
 * Delivery events: what a worker pool emits in-process (`pool.on`), to the metrics tally and to library users,
 * as `area:subject:verb` names with one typed payload each. Never written to Redis and never seen by API
 * clients: the public job events (SSE) and the stream entries behind them are core/job-events.ts.
 */
export interface DeliveryEventMap {
  'job:attempt:completed': DeliveryEventBase & { attempt: number; durationMs: number; result: JobResult };
  'job:attempt:retrying': DeliveryEventBase & {
    attempt: number;
    durationMs: number;
    error: ErrorRecord;
    delayMs: number;
    nextAttemptAt: number;
  };
  'job:service:held': DeliveryEventBase & {
    reason: 'circuitOpen' | 'rateLimited';
    holdMs: number;
    until: number;
    error: ErrorRecord;
  };
  'job:run:interrupted': DeliveryEventBase & { attempt: number; reason: 'stalled' | 'shutdown' };
  /** Not run: its tenant is at the service's `tenantConcurrency`; back in `delayMs`, no attempt used. */
  'job:run:deferred': DeliveryEventBase & { reason: 'tenantConcurrency'; delayMs: number };
  'job:dead:lettered': DeliveryEventBase & { attempt: number; deadLetterId: string; error: ErrorRecord };
  /** The service's breaker was open: the job moved to its fallback's queue (`fallback`) and completed. */
  'job:fallback:routed': DeliveryEventBase & { fallback: string; routedTo: JobRef; result: JobResult };

  /** A job Ferry enqueued itself for a reaction (issue 16): `service`/`jobId` name the source job. */
  'job:followUp:enqueued': {
    kind: 'onFailure' | 'then';
    service: string;
    jobId: string;
    target: { service: string; jobId: string };
  };
  /** A reaction that matched but made no job: its input could not be rendered, or the chain is too deep. */
  'job:followUp:refused': {
    kind: 'onFailure' | 'then';
    reason: 'template' | 'depth' | 'origin';
    service: string;
    jobId: string;
  };
}

export type DeliveryEventName = keyof DeliveryEventMap;
export type DeliveryEventListener = <E extends DeliveryEventName>(
  event: E,
  payload: DeliveryEventMap[E],
) => void;
