import { type Job, UnrecoverableError, Worker } from 'bullmq';

import type { JobData } from '../core/job.ts';
import type { StoredResult } from '../core/stored-result.ts';

/**
 * A BullMQ Worker that knows which jobs it is running: a job is in flight from the moment it is taken until
 * BullMQ has recorded its outcome in Redis (completed, failed, delayed or put back), which is when processJob
 * settles. What is still in flight when a shutdown gives up was not recorded, and will run again.
 */
export class TrackedWorker extends Worker<JobData, StoredResult> {
  readonly inFlight = new Set<Job<JobData, StoredResult>>();
  #idle: (() => void) | undefined;

  override async processJob(
    job: Job<JobData, StoredResult>,
    token: string,
    fetchNextCallback?: () => boolean,
  ): Promise<void | Job<JobData, StoredResult>> {
    this.inFlight.add(job);
    try {
      return await super.processJob(job, token, fetchNextCallback);
    } finally {
      this.inFlight.delete(job);
      if (this.inFlight.size === 0) this.#idle?.();
    }
  }

  /**
   * A job with a `repeatJobKey` but no `repeat` options (anyone can add one: `queue.add(name, data, { jobId,
   * repeatJobKey })`) makes BullMQ throw while taking it (upsertJobScheduler reads `opts.repeat.every`); it then
   * drops the job without failing it, so it stays active, stalls back to wait and is taken again, forever: never
   * run, never dead-lettered, two error lines each time. Such a job is failed here instead (the dead-letter sweep
   * then writes its dead letter). Ticks of Ferry's schedulers carry `repeat` and are taken as before.
   */
  protected override async nextJobFromJobData(
    jobData?: Parameters<Worker['createJob']>[0],
    jobId?: string,
    token?: string,
  ): Promise<Job<JobData, StoredResult>> {
    // No job taken comes as null data (BullMQ's moveToActive answers `[null, 0, …]` while the queue is empty,
    // held, paused or waiting for a delayed job), not as undefined: BullMQ itself checks `!jobData`.
    if (jobData != null && jobId !== undefined && token !== undefined) {
      const job = this.createJob(jobData, jobId);
      if (
        job.repeatJobKey !== undefined &&
        !job.repeatJobKey.includes(':') &&
        (job.opts as { repeat?: unknown }).repeat === undefined
      ) {
        job.token = token;
        await job.moveToFailed(
          new UnrecoverableError('the job names a job scheduler (repeatJobKey) but has no repeat options'),
          token,
          false,
        );
        return undefined as unknown as Job<JobData, StoredResult>;
      }
    }
    return super.nextJobFromJobData(jobData, jobId, token);
  }

  /** Resolves once nothing is in flight. */
  whenIdle(): Promise<void> {
    if (this.inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#idle;
      this.#idle = () => {
        this.#idle = undefined;
        previous?.();
        resolve();
      };
    });
  }
}
