/**
 * A real 6-node Redis Cluster (3 masters, 3 replicas) for the benches, without vitest: adapted from
 * test/helpers/redis-cluster.ts (which registers its stop in vitest's afterAll), so the test helper's API stays
 * as it is. Debian's redis-server on free ports in `dir`, created with `redis-cli --cluster create …
 * --cluster-replicas 1 --cluster-yes`; the caller stops it with `stop()`.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { Redis } from 'ioredis';

import { type PrivateRedis, startPrivateRedis } from '../src/cli/redis-server.ts';

const run = promisify(execFile);
const SLOTS = 16_384;

export interface BenchCluster {
  /** Every node: `127.0.0.1:<port>` and a plain client to that node only. */
  readonly nodes: readonly { address: string; client: Redis; server: PrivateRedis }[];
  /** Seed list for REDIS_CLUSTER_NODES. */
  readonly seeds: string;
  /** Plain clients to the nodes that are masters now. */
  masters(): Promise<Redis[]>;
  /** `count` service names (svc-0, svc-1, … tried in order) whose queues `{name}` land on every master, evenly. */
  servicesOnEveryMaster(count: number): Promise<string[]>;
  stop(): Promise<void>;
}

interface MasterView {
  address: string;
  slots: [number, number][];
}

function mastersOf(clusterNodes: string): MasterView[] {
  return clusterNodes
    .split('\n')
    .map((line) => line.trim().split(' '))
    .filter((fields) => fields.length >= 8 && fields[2]!.split(',').includes('master'))
    .filter((fields) => !fields[2]!.split(',').some((flag) => flag === 'fail' || flag === 'fail?'))
    .map((fields) => ({
      address: fields[1]!.split('@')[0]!,
      slots: fields
        .slice(8)
        .filter((field) => !field.startsWith('['))
        .map((field) => {
          const [from, to] = field.split('-');
          return [Number(from), Number(to ?? from)] as [number, number];
        }),
    }));
}

export async function startBenchCluster(dir: string, nodeTimeoutMs = 2_000): Promise<BenchCluster> {
  const nodes: { address: string; client: Redis; server: PrivateRedis }[] = [];
  const stop = async (): Promise<void> => {
    for (const node of nodes) node.client.disconnect();
    await Promise.all(nodes.map((node) => node.server.stop()));
  };
  try {
    const started = await Promise.all(
      Array.from({ length: 6 }, async (_, index) => {
        const nodeDir = join(dir, `node-${index + 1}`);
        const server = await startPrivateRedis({
          dir: nodeDir,
          appendfsync: 'no',
          extraArgs: [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            join(nodeDir, 'nodes.conf'),
            '--cluster-node-timeout',
            String(nodeTimeoutMs),
          ],
        });
        const client = new Redis(server.url, { maxRetriesPerRequest: 1 });
        client.on('error', () => undefined);
        return { address: `127.0.0.1:${server.port}`, client, server };
      }),
    );
    nodes.push(...started);
    await run(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...nodes.map((node) => node.address),
        '--cluster-replicas',
        '1',
        '--cluster-yes',
      ],
      { timeout: 60_000 },
    );
    const deadline = Date.now() + 30_000;
    for (;;) {
      const states = await Promise.all(
        nodes.map(async (node) => {
          const info = String(await node.client.cluster('INFO'));
          const served = mastersOf(String(await node.client.cluster('NODES')))
            .flatMap((master) => master.slots)
            .reduce((sum, [from, to]) => sum + (to - from + 1), 0);
          const replication = String(await node.client.info('replication'));
          const linked = !replication.includes('role:slave') || replication.includes('master_link_status:up');
          return info.includes('cluster_state:ok') && served === SLOTS && linked;
        }),
      ).catch(() => [false]);
      if (states.every(Boolean)) break;
      if (Date.now() > deadline) throw new Error('the cluster was not healthy within 30 s');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } catch (error) {
    await stop();
    throw error;
  }

  const view = async (): Promise<MasterView[]> => mastersOf(String(await nodes[0]!.client.cluster('NODES')));
  return {
    nodes,
    seeds: nodes.map((node) => node.address).join(','),
    masters: async () => {
      const addresses = new Set((await view()).map((master) => master.address));
      return nodes.filter((node) => addresses.has(node.address)).map((node) => node.client);
    },
    servicesOnEveryMaster: async (count) => {
      const masters = await view();
      const perMaster = new Map<string, string[]>(masters.map((master) => [master.address, []]));
      const quota = Math.ceil(count / masters.length);
      for (let index = 0; [...perMaster.values()].flat().length < count; index++) {
        if (index > 10_000) throw new Error('could not spread service names over the masters');
        const name = `svc-${index}`;
        const slot = Number(await nodes[0]!.client.cluster('KEYSLOT', `{${name}}`));
        const owner = masters.find((master) => master.slots.some(([from, to]) => slot >= from && slot <= to));
        const names = owner === undefined ? undefined : perMaster.get(owner.address);
        if (names !== undefined && names.length < quota) names.push(name);
      }
      return [...perMaster.values()].flat().slice(0, count).sort();
    },
    stop,
  };
}
