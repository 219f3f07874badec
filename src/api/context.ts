/** What every route gets: the loaded services, the producer, Redis, and service queues opened once. */
import { Queue } from 'bullmq';

import type { JobData, JobResult } from '../core/job.ts';
import { serviceQueueName } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import type { Keyring } from '../core/sealed-data.ts';
import type { ServicesConfig } from '../core/services/types.ts';
import type { Producer } from '../producer/producer.ts';
import type { SecretStore } from '../secrets/redis-store.ts';
import type { SecretObserver, SecretResolver, SecretSource } from '../secrets/resolver.ts';
import type { SecretTestOutcome, SecretTestRequest } from '../secrets/secret-test.ts';
import { NotFoundError } from './errors.ts';

/** The admin secrets routes' collaborators (DESIGN §5), built by cli/ (src/cli/api-server.ts). */
export interface ApiSecrets {
  /** Undefined, or without a keyring, when FERRY_SECRETS_KEY is unset: values can then not be set or read. */
  readonly store: SecretStore | undefined;
  /** The sources in lookup order: where else a name is defined. */
  readonly sources: readonly SecretSource[];
  readonly resolver: SecretResolver;
  /** One live call with a staged value, changing nothing (ops' testStagedSecret with the worker's probe, passed in by cli/). */
  testStaged(request: SecretTestRequest): Promise<SecretTestOutcome>;
  /** The process's Scrubber: every value the routes handle is scrubbed from its log lines. */
  readonly scrubber?: SecretObserver;
}

export interface ApiContext {
  readonly config: ServicesConfig;
  readonly producer: Producer;
  /** Producer-role connection: fails fast (no offline queue) while Redis is down. */
  readonly connection: RedisClient;
  readonly prefix: string;
  /** FERRY_SECRETS_KEY's keyring: seals a run-now of a sensitive operation's schedule. */
  readonly keyring?: Keyring | undefined;
  /** The secrets routes' store and sources (cli/ builds them); without it those routes are not mounted. */
  readonly secrets?: ApiSecrets;
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
  keyring?: Keyring | undefined;
  secrets?: ApiSecrets;
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

export type { SecretTestOutcome, SecretTestRequest } from '../secrets/secret-test.ts';
