/**
 * Per-tenant metrics of tenantConcurrency with bounded cardinality: `ferry_tenant_in_flight` has the top N
 * tenants of a service and `tenant="_other"` for the rest, read at scrape time from the live leases; and
 * `ferry_jobs_deferred_total` counts deferrals with no tenant label. promtool accepts the output.
 */
import { EventEmitter } from 'node:events';

import { describe, expect, it, onTestFinished } from 'vitest';

import type { DeliveryEventMap } from '../../src/core/delivery-events.ts';
import { NO_TENANT, tenantLeaseKeys } from '../../src/core/queue-layout.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import type { DeliveryEventSource } from '../../src/metrics/delivery-tally.ts';
import { createMetrics, OTHER_TENANTS, topTenantsOf } from '../../src/metrics/metrics.ts';
import { createTenantLeases } from '../../src/worker/tenant-leases.ts';
import { promtoolCheckMetrics } from '../helpers/promtool.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import { Scrape } from './support.ts';

const redis = await startRedis();

const doc = {
  services: {
    fair: {
      baseUrl: 'http://127.0.0.1:9',
      tenantConcurrency: 10,
      operations: { create: { method: 'POST', path: '/x' } },
    },
    plain: { baseUrl: 'http://127.0.0.1:9', operations: { create: { method: 'POST', path: '/x' } } },
  },
};
const config = parseServicesConfig(doc, { env: {} });

describe('topTenantsOf', () => {
  it('keeps the `limit` tenants with the most in flight (ties by name) and sums the rest', () => {
    const counts = new Map([
      ['c', 1],
      ['a', 5],
      ['b', 5],
      ['d', 2],
      ['e', 1],
    ]);
    expect(topTenantsOf(counts, 3)).toEqual({
      top: [
        ['a', 5],
        ['b', 5],
        ['d', 2],
      ],
      other: 2,
    });
    expect(topTenantsOf(counts, 0)).toEqual({ top: [], other: 14 });
    expect(topTenantsOf(new Map(), 3)).toEqual({ top: [], other: 0 });
  });
});

describe('ferry_tenant_in_flight and ferry_jobs_deferred_total', () => {
  it('shows the top N tenants plus "_other", only for tenantConcurrency services', async () => {
    const prefix = uniquePrefix();
    const leases = createTenantLeases({ connection: redis.client, prefix, service: 'fair', limit: 10 });
    // 6 tenants (more than N = 3): t0 holds 6 leases, t1 5, … t5 1; plus 2 jobs without a tenant.
    for (let tenant = 0; tenant < 6; tenant++)
      for (let n = 0; n < 6 - tenant; n++)
        expect(await leases.take(`t${tenant}`, `${tenant}-${n}`, 60_000)).toBeDefined();
    await leases.take(undefined, 'none-1', 60_000);
    await leases.take(undefined, 'none-2', 60_000);
    // An expired lease (a lost worker's, not yet reclaimed) is not a call in flight.
    await redis.client.zadd(tenantLeaseKeys(prefix, 'fair').leases, 1, 't9\0lost');
    await redis.client.hincrby(tenantLeaseKeys(prefix, 'fair').counts, 't9', 1);

    const metrics = createMetrics({ config, connection: redis.client, prefix, topTenants: 3 });
    onTestFinished(() => metrics.close());
    const events = new EventEmitter();
    metrics.observeDeliveries(events as unknown as DeliveryEventSource);
    const deferred: DeliveryEventMap['job:run:deferred'] = {
      service: 'fair',
      operation: 'create',
      jobId: '1',
      tenant: 't0',
      reason: 'tenantConcurrency',
      delayMs: 300,
    };
    events.emit('job:run:deferred', deferred);
    events.emit('job:run:deferred', { ...deferred, tenant: 't1' });

    const { body } = await metrics.render();
    const scrape = new Scrape(body);
    const series = scrape
      .samples('ferry_tenant_in_flight')
      .map((sample) => [sample.labels?.service, sample.labels?.tenant, Number(sample.value)]);
    expect(series.sort()).toEqual(
      [
        ['fair', 't0', 6],
        ['fair', 't1', 5],
        ['fair', 't2', 4],
        // t3 3 + t4 2 + t5 1 + 2 without a tenant; the expired lease is not counted.
        ['fair', OTHER_TENANTS, 8],
      ].sort(),
    );
    expect(scrape.type('ferry_tenant_in_flight')).toBe('GAUGE');
    expect(scrape.value('ferry_jobs_deferred_total', { service: 'fair', reason: 'tenantConcurrency' })).toBe(
      2,
    );
    expect(scrape.value('ferry_jobs_deferred_total', { service: 'plain', reason: 'tenantConcurrency' })).toBe(
      0,
    );
    expect(scrape.samples('ferry_jobs_deferred_total').every((s) => s.labels?.tenant === undefined)).toBe(
      true,
    );
    expect(scrape.value('ferry_scrape_collector_success', { collector: 'tenants' })).toBe(1);
    expect(await promtoolCheckMetrics(body)).toEqual({ code: 0, problems: [] });

    // With a larger N the jobs without a tenant get their own series, as NO_TENANT.
    const wide = createMetrics({ config, connection: redis.client, prefix, topTenants: 10 });
    onTestFinished(() => wide.close());
    const all = new Scrape((await wide.render()).body);
    expect(all.value('ferry_tenant_in_flight', { service: 'fair', tenant: NO_TENANT })).toBe(2);
    expect(all.value('ferry_tenant_in_flight', { service: 'fair', tenant: OTHER_TENANTS })).toBe(0);
    expect(all.samples('ferry_tenant_in_flight')).toHaveLength(8);
  });

  it('has no tenant gauge when no service sets tenantConcurrency', async () => {
    const plainOnly = parseServicesConfig({ services: { plain: doc.services.plain } }, { env: {} });
    const metrics = createMetrics({ config: plainOnly, connection: redis.client, prefix: uniquePrefix() });
    onTestFinished(() => metrics.close());
    const scrape = new Scrape((await metrics.render()).body);
    expect(scrape.family('ferry_tenant_in_flight')).toBeUndefined();
    expect(scrape.value('ferry_scrape_collector_success', { collector: 'tenants' })).toBeUndefined();
  });
});
