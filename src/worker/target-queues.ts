/**
 * Handles on the service queues a worker adds jobs to on its own: reactions' follow-ups (follow-ups.ts) and
 * fallback moves (fallback-route.ts). Their targets need not be services the worker works on, so a handle is
 * opened on first use, on the worker's connection, and closed with the pool.
 */
import { Queue } from 'bullmq';

import type { JobData, JobResult } from '../core/job.ts';
import { serviceQueueName } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';

export class TargetQueues {
  readonly #connection: RedisClient;
  readonly #prefix: string;
  readonly #queues = new Map<string, Queue<JobData, JobResult>>();
  #closed = false;

  constructor(options: { connection: RedisClient; prefix: string }) {
    this.#connection = options.connection;
    this.#prefix = options.prefix;
  }

  /** The queue of `service`; throws once closed (a job's add after shutdown must not reopen one). */
  of(service: string): Queue<JobData, JobResult> {
    if (this.#closed) throw new Error('target queues are closed');
    let queue = this.#queues.get(service);
    if (queue === undefined) {
      queue = new Queue<JobData, JobResult>(serviceQueueName(service), {
        connection: this.#connection,
        prefix: this.#prefix,
      });
      // A failure reaches the caller as a rejected add (delivery.ts puts the job back): not reported twice.
      queue.on('error', () => undefined);
      this.#queues.set(service, queue);
    }
    return queue;
  }

  /** Closes the handles (not the connection, which is the pool's). */
  async close(): Promise<void> {
    this.#closed = true;
    const queues = [...this.#queues.values()];
    this.#queues.clear();
    await Promise.all(queues.map((queue) => queue.close()));
  }
}
