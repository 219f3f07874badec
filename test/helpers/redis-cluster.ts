/**
 * A real Redis Cluster for one test file (redis-cluster-core.ts): 3 masters and 3 replicas on free ports in a
 * temp dir, stopped in afterAll. Start it once per file, as `startRedis()` starts a single server.
 */
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll } from 'vitest';

import { type ClusterOptions, launchRedisCluster, type TestCluster } from './redis-cluster-core.ts';

export {
  type ClusterNode,
  type ClusterOptions,
  type NodeView,
  parseClusterNodes,
  servicesOnEveryMaster,
  type TestCluster,
} from './redis-cluster-core.ts';

export async function startRedisCluster(options: ClusterOptions = {}): Promise<TestCluster> {
  const root = join(tmpdir(), `ferry-test-cluster-${randomUUID()}`);
  // Registered before the start, so a start that fails half-way leaves no redis-server behind.
  let stop: (() => Promise<void>) | undefined;
  afterAll(async () => stop?.());
  return launchRedisCluster(root, options, (fn) => {
    stop = fn;
  });
}
