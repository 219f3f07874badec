/** closeBreaker ends a queue's hold whatever held it: an open breaker, or a 429/503 Retry-After alone. */
import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { closeBreaker } from '../../src/ops/breaker-control.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

describe('closeBreaker', () => {
  it('ends a Retry-After hold on a queue whose breaker is closed', async () => {
    const prefix = uniquePrefix();
    const config = parseServicesConfig(
      {
        services: {
          crm: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'GET', path: '/' } } },
        },
      },
      { env: {} },
    );
    const queue = new Queue(serviceQueueName('crm'), { connection: redis.client, prefix });
    onTestFinished(() => queue.close());
    await queue.rateLimit(60_000);
    expect(await queue.getRateLimitTtl()).toBeGreaterThan(0);
    const view = await closeBreaker({ connection: redis.client, prefix, config }, 'crm');
    expect(view).toMatchObject({ service: 'crm' });
    expect(await queue.getRateLimitTtl()).toBeLessThanOrEqual(0);
  });
});
