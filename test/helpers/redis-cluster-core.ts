/**
 * A real Redis Cluster: six redis-servers from Debian's redis-server (3 masters, 3 replicas) on free ports in a
 * folder, created with `redis-cli --cluster create … --cluster-replicas 1 --cluster-yes`. No vitest here: the
 * benches use it as it is, tests through `startRedisCluster()` (redis-cluster.ts), which stops it in afterAll.
 */
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { Cluster, Redis } from 'ioredis';

import {
  freePort,
  type PrivateRedis,
  RedisPortInUseError,
  startPrivateRedis,
} from '../../src/cli/redis-server.ts';
import { waitUntil } from './until.ts';

const run = promisify(execFile);

export interface ClusterNode extends PrivateRedis {
  /** `127.0.0.1:<port>`, as CLUSTER NODES and REDIS_CLUSTER_NODES spell it. */
  readonly address: string;
  /** A plain client to this node only (no redirects followed). */
  readonly client: Redis;
  readonly dir: string;
}

/** One line of CLUSTER NODES, as seen from a live node. */
export interface NodeView {
  readonly id: string;
  readonly address: string;
  readonly role: 'master' | 'replica';
  /** The node is marked failed (`fail`) or suspected (`fail?`) by the one asked. */
  readonly failing: boolean;
  /** For a replica, the id of its master. */
  readonly masterId: string | undefined;
  /** Slot ranges served, `[from, to]` inclusive (masters only). */
  readonly slots: readonly (readonly [number, number])[];
}

export interface TestCluster {
  readonly nodes: readonly ClusterNode[];
  /** Seed list for REDIS_CLUSTER_NODES: every node's `127.0.0.1:<port>`, comma-separated. */
  readonly seeds: string;
  /** An ioredis Cluster client for assertions (follows MOVED). */
  readonly client: Cluster;
  /** The slot a key hashes to (CLUSTER KEYSLOT: `{tag}` rules included). */
  slotOf(key: string): Promise<number>;
  /** CLUSTER NODES as the first live node sees it. */
  view(): Promise<NodeView[]>;
  /** The live node that serves `slot` as master now. */
  masterOf(slot: number): Promise<ClusterNode>;
  /**
   * Resolves once every live node says `cluster_state:ok`, all 16384 slots are served by live masters and
   * each master's live replicas have their link up.
   */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Kills every node (SIGKILL works on a paused one too) and removes the folder. Idempotent. */
  stop(): Promise<void>;
}

export interface ClusterOptions {
  /** cluster-node-timeout: how long a master may be unreachable before its replica takes over (ms). */
  nodeTimeoutMs?: number;
}

const SLOTS = 16_384;

/**
 * Starts the cluster in `root` and waits until it is healthy. The caller owns `stop()`, which also cleans up
 * after a start that failed half-way if it is called from a finally.
 */
export async function launchRedisCluster(
  root: string,
  options: ClusterOptions = {},
  onStop?: (stop: () => Promise<void>) => void,
): Promise<TestCluster> {
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 2_000;
  const nodes: ClusterNode[] = [];
  const opened: { client?: Cluster } = {};
  const stop = async (): Promise<void> => {
    opened.client?.disconnect();
    for (const node of nodes) node.client.disconnect();
    await Promise.all(nodes.map((node) => node.kill()));
    await rm(root, { recursive: true, force: true });
  };
  onStop?.(stop);
  // Every port of the cluster distinct, and a bus port taken before redis-server bound it (an outgoing
  // connection's local port, another test's pick) picked again: a failed start here failed a whole test file.
  const used = new Set<number>();
  const distinctPort = async (): Promise<number> => {
    for (;;) {
      const port = await freePort();
      if (!used.has(port)) {
        used.add(port);
        return port;
      }
    }
  };
  const startNode = async (index: number): Promise<ClusterNode> => {
    const dir = join(root, `node-${index + 1}`);
    for (let attempt = 1; ; attempt++) {
      // The cluster bus on a free port of its own: the default (port + 10000) may be taken or above 65535.
      const busPort = await distinctPort();
      try {
        const server = await startPrivateRedis({
          dir,
          port: await distinctPort(),
          appendfsync: 'no',
          extraArgs: [
            '--cluster-port',
            String(busPort),
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            join(dir, 'nodes.conf'),
            '--cluster-node-timeout',
            String(nodeTimeoutMs),
          ],
        });
        const nodeClient = new Redis(server.url, { maxRetriesPerRequest: 1 });
        // A node a test kills sees this client's reconnects fail: expected.
        nodeClient.on('error', () => undefined);
        const node = Object.assign(Object.create(null) as object, server, {
          address: `127.0.0.1:${server.port}`,
          client: nodeClient,
          dir,
        }) as ClusterNode;
        // Tracked at once, so that a start that fails half-way stops what it had started.
        nodes.push(node);
        return node;
      } catch (error) {
        if (!(error instanceof RedisPortInUseError) || attempt === 5) throw error;
        // The failed start may have written its node id and ports: start afresh.
        await rm(join(dir, 'nodes.conf'), { force: true });
      }
    }
  };
  // A file whose top level fails runs no afterAll: a start that fails stops what it started itself.
  const orStop = async <T>(step: Promise<T>): Promise<T> => {
    try {
      return await step;
    } catch (error) {
      await stop();
      throw error;
    }
  };
  // Settled, all six: stopping while one is still starting would leave that one running.
  const starts = await Promise.allSettled(Array.from({ length: 6 }, (_, index) => startNode(index)));
  const failedStart = starts.find((start) => start.status === 'rejected');
  if (failedStart !== undefined) await orStop(Promise.reject(failedStart.reason as Error));
  // In node order (the replicas `--cluster create` assigns follow it), not in the order they came up.
  nodes.splice(
    0,
    nodes.length,
    ...starts.map((start) => (start as PromiseFulfilledResult<ClusterNode>).value),
  );
  await orStop(
    run(
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
    ),
  );

  const live = (): ClusterNode[] =>
    nodes.filter((node) => node.process.exitCode === null && node.process.signalCode === null);

  const view = async (): Promise<NodeView[]> => {
    for (const node of live()) {
      try {
        return parseClusterNodes(String(await node.client.cluster('NODES')));
      } catch {
        // That node is going away: ask the next one.
      }
    }
    throw new Error('no live cluster node answers CLUSTER NODES');
  };

  const healthy = async (): Promise<boolean> => {
    const liveNodes = live();
    const liveAddresses = new Set(liveNodes.map((node) => node.address));
    for (const node of liveNodes) {
      const info = String(await node.client.cluster('INFO'));
      if (!info.includes('cluster_state:ok')) return false;
      const nodesView = parseClusterNodes(String(await node.client.cluster('NODES')));
      const served = nodesView
        .filter((entry) => entry.role === 'master' && !entry.failing && liveAddresses.has(entry.address))
        .flatMap((entry) => entry.slots)
        .reduce((sum, [from, to]) => sum + (to - from + 1), 0);
      if (served !== SLOTS) return false;
      const replication = String(await node.client.info('replication'));
      if (replication.includes('role:slave') && !replication.includes('master_link_status:up')) return false;
      // With all six up, each master's replica is attached and has acknowledged once (`offset` > 0: its first
      // REPLCONF ACK comes up to a second after the sync); a WAIT right after start-up would count 0 before.
      if (replication.includes('role:master') && liveNodes.length === 6) {
        const acked = /slave0:[^\r\n]*offset=(\d+)/.exec(replication);
        if (acked === null || Number(acked[1]) === 0) return false;
      }
    }
    return true;
  };

  const waitHealthy = (timeoutMs = 30_000): Promise<void> =>
    waitUntil(healthy, timeoutMs, 'the cluster healthy');
  await orStop(waitHealthy());

  const seeds = nodes.map((node) => node.address).join(',');
  const client = new Cluster(
    nodes.map((node) => ({ host: '127.0.0.1', port: node.port })),
    { redisOptions: { maxRetriesPerRequest: 1 } },
  );
  client.on('error', () => undefined);
  opened.client = client;

  return {
    nodes,
    seeds,
    client,
    slotOf: async (key) => Number(await live()[0]!.client.cluster('KEYSLOT', key)),
    view,
    masterOf: async (slot) => {
      const owner = (await view()).find(
        (entry) =>
          entry.role === 'master' &&
          !entry.failing &&
          entry.slots.some(([from, to]) => slot >= from && slot <= to),
      );
      const node = nodes.find((candidate) => candidate.address === owner?.address);
      if (node === undefined) throw new Error(`no live master serves slot ${slot}`);
      return node;
    },
    waitHealthy,
    stop,
  };
}

/**
 * `count` service names whose queues (`{name}`) land on every master of the cluster, as evenly as the names
 * allow: a suite on them touches all three shards. Deterministic (svc-0, svc-1, … are tried in order).
 */
export async function servicesOnEveryMaster(cluster: TestCluster, count: number): Promise<string[]> {
  const masters = (await cluster.view()).filter((entry) => entry.role === 'master' && !entry.failing);
  const perMaster = new Map<string, string[]>(masters.map((entry) => [entry.address, []]));
  const quota = Math.ceil(count / masters.length);
  for (let index = 0; [...perMaster.values()].flat().length < count; index++) {
    if (index > 10_000) throw new Error('could not spread service names over the masters');
    const name = `svc-${index}`;
    const slot = await cluster.slotOf(`{${name}}`);
    const owner = masters.find((entry) => entry.slots.some(([from, to]) => slot >= from && slot <= to));
    const names = owner === undefined ? undefined : perMaster.get(owner.address);
    if (names !== undefined && names.length < quota) names.push(name);
  }
  return [...perMaster.values()].flat().slice(0, count).sort();
}

export function parseClusterNodes(text: string): NodeView[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .map((line) => {
      const [id = '', endpoint = '', flags = '', masterId = '-', , , , , ...slotFields] = line.split(' ');
      const flagList = flags.split(',');
      const slots = slotFields
        .filter((field) => !field.startsWith('['))
        .map((field) => {
          const [from, to] = field.split('-');
          return [Number(from), Number(to ?? from)] as const;
        });
      return {
        id,
        // ip:port@cport[,hostname]
        address: endpoint.split('@')[0]!,
        role: flagList.includes('master') ? ('master' as const) : ('replica' as const),
        failing: flagList.includes('fail') || flagList.includes('fail?'),
        masterId: masterId === '-' ? undefined : masterId,
        slots,
      };
    });
}
