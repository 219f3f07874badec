/**
 * tenantConcurrency and a worker killed mid-call, with the built CLI: the killed `ferry worker` never gives its
 * tenant lease back, and the tenant flows again once that lease expires (the attempt's timeoutMs + the margin),
 * well before the killed job's own lock expires and it runs again. Other tenants never wait for it.
 */
import { describe, expect, it, onTestFinished } from 'vitest';

import { tenantLeaseKeys } from '../../src/core/queue-layout.ts';
import { Producer } from '../../src/producer/index.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { startWorker, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { waitUntil } from '../helpers/until.ts';

const redis = await startRedis();

describe('tenant leases and SIGKILL', () => {
  it(
    "a killed worker's lease blocks its tenant only until the lease expires",
    { timeout: 90_000 },
    async () => {
      // The first call of job "a1" never gets an answer: its worker is killed while it waits.
      const downstream = await startDownstream((request) =>
        (JSON.parse(request.body) as { name: string }).name === 'a1'
          ? { status: 200, delayMs: 120_000 }
          : { status: 200, body: { ok: true } },
      );
      const calls = (name: string): number =>
        downstream.requests.filter((r) => (JSON.parse(r.body) as { name: string }).name === name).length;
      const prefix = uniquePrefix();
      const servicesFile = await writeServicesFile({
        services: {
          svc: {
            baseUrl: downstream.url,
            // The lease lasts 1 s + LEASE_MARGIN_MS (5 s).
            timeoutMs: 1_000,
            concurrency: 2,
            tenantConcurrency: 1,
            operations: { create: { method: 'POST', path: '/things', body: '{{ input }}' } },
          },
        },
      });
      // A 60 s lock: the killed job runs again only long after its lease expired.
      const env = workerEnv({
        redisUrl: redis.url,
        servicesFile,
        prefix,
        extra: { FERRY_LOCK_DURATION_MS: '60000' },
      });
      const producer = new Producer({ connection: redis.url, prefix });
      onTestFinished(() => producer.close());
      const keys = tenantLeaseKeys(prefix, 'svc');

      const first = await startWorker(env);
      const [a1] = await producer.enqueueMany([
        { service: 'svc', operation: 'create', tenant: 'A', input: { name: 'a1' } },
      ]);
      await waitUntil(() => calls('a1') === 1, 20_000, 'a1 called');
      expect(await redis.client.hget(keys.counts, 'A')).toBe('1');
      await first.kill9();

      const second = await startWorker(env);
      const [a2, b1] = await producer.enqueueMany([
        { service: 'svc', operation: 'create', tenant: 'A', input: { name: 'a2' } },
        { service: 'svc', operation: 'create', tenant: 'B', input: { name: 'b1' } },
      ]);
      expect((await producer.waitFor('svc', b1!.id, { timeoutMs: 20_000 })).state).toBe('completed');
      // Tenant A is still at its limit while the dead worker's lease lives.
      if ((await redis.client.zscore(keys.leases, `A\0${a1!.id}`)) !== null) expect(calls('a2')).toBe(0);

      const view = await producer.waitFor('svc', a2!.id, { timeoutMs: 30_000 });
      expect(view.state).toBe('completed');
      expect(view.result?.attempts).toBe(1);
      // The killed job has not run again (its lock holds it): A flowed because the lease expired.
      expect(calls('a1')).toBe(1);
      expect((await producer.get('svc', a1!.id))?.state).toBe('active');
      expect(await redis.client.zscore(keys.leases, `A\0${a1!.id}`)).toBeNull();
      await second.kill9();
    },
  );
});
