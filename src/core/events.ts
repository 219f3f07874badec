import type { ErrorRecord } from './errors.ts';
import type { JobRef, JobResult } from './job.ts';

/** Fields every job event carries. */
interface JobEventBase {
  service: string;
  operation: string;
  jobId: string;
  tenant: string | undefined;
}

/** Job lifecycle events a worker pool emits, as `area:subject:verb` names with one typed payload each. */
export interface DeliveryEventMap {
  'job:attempt:completed': JobEventBase & { attempt: number; durationMs: number; result: JobResult };
  'job:attempt:retrying': JobEventBase & {
    attempt: number;
    durationMs: number;
    error: ErrorRecord;
    delayMs: number;
    nextAttemptAt: number;
  };
  'job:service:held': JobEventBase & {
    reason: 'circuitOpen' | 'rateLimited';
    holdMs: number;
    until: number;
    error: ErrorRecord;
  };
  'job:run:interrupted': JobEventBase & { attempt: number; reason: 'stalled' | 'shutdown' };
  'job:dead:lettered': JobEventBase & { attempt: number; deadLetterId: string; error: ErrorRecord };
  /** The service's breaker was open: the job moved to its fallback's queue (`fallback`) and completed. */
  'job:fallback:routed': JobEventBase & { fallback: string; routedTo: JobRef; result: JobResult };
}

export type DeliveryEventName = keyof DeliveryEventMap;
export type DeliveryEventListener = <E extends DeliveryEventName>(
  event: E,
  payload: DeliveryEventMap[E],
) => void;
