/**
 * tenantConcurrency on a real Redis Cluster: the take and release scripts and the scrape-time read each touch
 * two keys, which must share the service queue's slot (a CROSSSLOT error otherwise), for services whose queues
 * live on every master.
 */
import type { Cluster } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import { serviceQueueName, tenantLeaseKeys } from '../../src/core/queue-layout.ts';
import { createRedisConnection, waitUntilReady } from '../../src/core/redis.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { createTenantLeases } from '../../src/worker/tenant-leases.ts';
import { uniquePrefix } from '../helpers/redis.ts';
import { servicesOnEveryMaster, startRedisCluster } from '../helpers/redis-cluster.ts';
import { Scrape } from '../metrics/support.ts';

const cluster = await startRedisCluster();
const services = await servicesOnEveryMaster(cluster, 3);

describe('tenant leases on Redis Cluster', () => {
  it(
    'takes, refuses, gives back and reports leases of services on every master',
    { timeout: 60_000 },
    async () => {
      const connection = createRedisConnection(
        { clusterNodes: cluster.seeds.split(',') },
        'worker',
      ) as Cluster;
      connection.on('error', () => undefined);
      onTestFinished(() => connection.disconnect());
      await waitUntilReady(connection);
      const prefix = uniquePrefix();
      const masters = new Set<string>();
      for (const service of services) {
        const keys = tenantLeaseKeys(prefix, service);
        const slot = await cluster.slotOf(serviceQueueName(service));
        expect([await cluster.slotOf(keys.leases), await cluster.slotOf(keys.counts)]).toEqual([slot, slot]);
        masters.add((await cluster.masterOf(slot)).address);

        const leases = createTenantLeases({ connection, prefix, service, limit: 1 });
        const held = await leases.take('A', `${service}-1`, 1_000);
        expect(held).toBeDefined();
        expect(await leases.take('A', `${service}-2`, 1_000)).toBeUndefined();
        expect(await leases.take('B', `${service}-3`, 1_000)).toBeDefined();
        await held!.release();
        expect(await cluster.client.hgetall(keys.counts)).toEqual({ B: '1' });
        expect(await leases.take('A', `${service}-2`, 1_000)).toBeDefined();
      }
      expect(masters.size).toBe(3);

      // The scrape-time read of the same keys, per service.
      const doc = {
        services: Object.fromEntries(
          services.map((name) => [
            name,
            {
              baseUrl: 'http://127.0.0.1:9',
              tenantConcurrency: 1,
              operations: { get: { method: 'GET', path: '/x' } },
            },
          ]),
        ),
      };
      const metrics = createMetrics({
        config: parseServicesConfig(doc, { env: {} }),
        connection,
        prefix,
        processMetrics: false,
        scrapeTimeoutMs: 10_000,
      });
      onTestFinished(() => metrics.close());
      const scrape = new Scrape((await metrics.render()).body);
      for (const service of services) {
        expect(scrape.value('ferry_tenant_in_flight', { service, tenant: 'A' })).toBe(1);
        expect(scrape.value('ferry_tenant_in_flight', { service, tenant: 'B' })).toBe(1);
      }
      expect(scrape.value('ferry_scrape_collector_success', { collector: 'tenants' })).toBe(1);
    },
  );
});
