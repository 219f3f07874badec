/** The cluster harness itself: six nodes, three masters with a replica each, every slot served. */
import { describe, expect, it } from 'vitest';

import { servicesOnEveryMaster, startRedisCluster } from '../helpers/redis-cluster.ts';

const cluster = await startRedisCluster();

describe('startRedisCluster', () => {
  it('makes 3 masters with a replica each, serving all 16384 slots', async () => {
    const view = await cluster.view();
    const masters = view.filter((node) => node.role === 'master');
    const replicas = view.filter((node) => node.role === 'replica');
    expect(masters).toHaveLength(3);
    expect(replicas).toHaveLength(3);
    expect(new Set(replicas.map((node) => node.masterId))).toEqual(new Set(masters.map((node) => node.id)));
    const served = masters.flatMap((node) => node.slots).reduce((sum, [from, to]) => sum + to - from + 1, 0);
    expect(served).toBe(16_384);
    expect(cluster.seeds.split(',')).toHaveLength(6);
  });

  it('spreads service names over every master, and the client follows them', async () => {
    const services = await servicesOnEveryMaster(cluster, 8);
    expect(services).toHaveLength(8);
    const owners = new Set<string>();
    for (const service of services) {
      const master = await cluster.masterOf(await cluster.slotOf(`{${service}}`));
      owners.add(master.address);
      await cluster.client.set(`ferry:{${service}}:probe`, service);
      expect(await master.client.get(`ferry:{${service}}:probe`)).toBe(service);
    }
    expect(owners.size).toBe(3);
  });
});
