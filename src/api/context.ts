/** What every route gets: the loaded services, the producer, Redis, and service queues opened once. */
import { Queue } from 'bullmq';

import type { JobData, JobResult } from '../core/job.ts';
import { serviceQueueName } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import type { ServicesConfig } from '../core/services/types.ts';
import type { Producer } from '../producer/producer.ts';
import { NotFoundError } from './errors.ts';

export interface ApiContext {
  readonly config: ServicesConfig;
  readonly producer: Producer;
  /** Producer-role connection: fails fast (no offline queue) while Redis is down. */
  readonly connection: RedisClient;
  readonly prefix: string;
  /** The service's BullMQ queue (opened on first use, closed with the app). */
  queue(service: string): Queue<JobData, JobResult>;
  /** Throws NotFoundError naming the service when the services file has no such service. */
  assertService(service: string): void;
  close(): Promise<void>;
}

export function createApiContext(options: {
  config: ServicesConfig;
  producer: Producer;
  connection: RedisClient;
  prefix: string;
}): ApiContext {
  const queues = new Map<string, Queue<JobData, JobResult>>();
  const assertService = (service: string): void => {
    if (!options.config.services.has(service)) {
      throw new NotFoundError(`unknown service "${service}" (not in the services file)`);
    }
  };
  return {
    ...options,
    assertService,
    queue(service) {
      assertService(service);
      let queue = queues.get(service);
      if (queue === undefined) {
        queue = new Queue<JobData, JobResult>(serviceQueueName(service), {
          connection: options.connection,
          prefix: options.prefix,
        });
        // Connection errors reach the route as rejected calls (503); without a listener BullMQ would also print
        // each failed reconnect to stderr.
        queue.on('error', () => undefined);
        queues.set(service, queue);
      }
      return queue;
    },
    async close() {
      await Promise.all([...queues.values()].map((queue) => queue.close()));
      queues.clear();
    },
  };
}
