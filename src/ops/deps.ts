/**
 * What every ops function takes: the Redis connection, the key prefix and the loaded services file, injected
 * by the caller (the CLI or the API), never read from the environment here. Queue objects are made per call
 * on the shared connection and closed before the call returns.
 */
import { Queue } from 'bullmq';

import { ValidationError } from '../core/errors.ts';
import { serviceQueueName } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import type { Keyring } from '../core/sealed-data.ts';
import type { ServiceConfig, ServicesConfig } from '../core/services/types.ts';

export interface OpsDeps {
  /** Any ioredis connection (producer or worker role); not closed by ops functions. */
  connection: RedisClient;
  /** FERRY_PREFIX. */
  prefix: string;
  /** The services file as loaded (services not in it are refused). */
  config: ServicesConfig;
  /** Epoch ms; default Date.now. */
  now?: () => number;
  /** FERRY_SECRETS_KEY's keyring: seals a run-now of a sensitive operation's schedule (refused without it). */
  keyring?: Keyring | undefined;
}

/** The service's config; a name not in the services file is a ValidationError (field `service`) naming it. */
export function requireService(config: ServicesConfig, service: string): ServiceConfig {
  const found = config.services.get(service);
  if (found !== undefined) return found;
  const known = [...config.services.keys()].join(', ') || 'none';
  throw new ValidationError(`unknown service "${service}" (services in the services file: ${known})`, {
    field: 'service',
  });
}

/** Runs `fn` with one Queue per service on the shared connection, closing them afterwards. */
export async function withQueues<T>(
  deps: Pick<OpsDeps, 'connection' | 'prefix'>,
  services: readonly string[],
  fn: (queues: Map<string, Queue>) => Promise<T>,
): Promise<T> {
  const queues = new Map(
    services.map((service) => [
      service,
      new Queue(serviceQueueName(service), { connection: deps.connection, prefix: deps.prefix }),
    ]),
  );
  try {
    return await fn(queues);
  } finally {
    await Promise.all([...queues.values()].map((queue) => queue.close()));
  }
}
