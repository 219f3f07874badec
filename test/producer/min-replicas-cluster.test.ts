/**
 * Producer `minReplicas` on a real Redis Cluster (3 masters, 3 replicas of Debian's redis-server): WAIT must
 * go to the master of the queue's slot, on the connection that wrote the job. A keyless command sent through
 * ioredis' Cluster goes to a random node, where WAIT counts nothing of this write and answers at once.
 * (Starts its own small cluster; the shared cluster helper of issue 15 can replace startCluster below.)
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { Cluster, Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';

import { freePort, type PrivateRedis, startPrivateRedis } from '../../src/cli/redis-server.ts';
import { idempotentJobId, serviceQueueName } from '../../src/core/queue-layout.ts';
import { Producer } from '../../src/producer/producer.ts';
import { isReplicaTimeoutError } from '../../src/producer/replicas.ts';

const run = promisify(execFile);

async function startCluster(): Promise<{ nodes: PrivateRedis[]; seed: string }> {
  const dir = join(tmpdir(), `ferry-test-cluster-${randomUUID()}`);
  const nodes: PrivateRedis[] = [];
  afterAll(async () => {
    for (const node of nodes) node.process.kill('SIGCONT');
    await Promise.all(nodes.map((node) => node.stop()));
    await rm(dir, { recursive: true, force: true });
  });
  for (let i = 0; i < 6; i++) {
    const nodeDir = join(dir, String(i));
    // The cluster bus on a free port of its own (by default port + 10000, which may be taken or over 65535).
    const busPort = await freePort();
    nodes.push(
      await startPrivateRedis({
        dir: nodeDir,
        appendfsync: 'no',
        extraArgs: [
          '--cluster-port',
          String(busPort),
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(nodeDir, 'nodes.conf'),
          '--cluster-node-timeout',
          '2000',
        ],
      }),
    );
  }
  await run('redis-cli', [
    '--cluster',
    'create',
    ...nodes.map((node) => `127.0.0.1:${node.port}`),
    '--cluster-replicas',
    '1',
    '--cluster-yes',
  ]);
  // Every node sees the whole cluster, and every master has its replica online and acknowledging.
  const deadline = Date.now() + 20_000;
  while (!(await clusterReady(nodes))) {
    if (Date.now() > deadline) throw new Error('the cluster was not ready within 20 s');
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return { nodes, seed: `127.0.0.1:${nodes[0]!.port}` };
}

async function clusterReady(nodes: readonly PrivateRedis[]): Promise<boolean> {
  const states = await Promise.all(
    nodes.map(async (node) => {
      const client = new Redis(node.port, { lazyConnect: true, maxRetriesPerRequest: 1 });
      client.on('error', () => undefined);
      try {
        await client.connect();
        const info = (await client.cluster('INFO')) as string;
        const replication = await client.info('replication');
        const acked = /role:master/.test(replication) ? await client.wait(1, 100) : 1;
        return /cluster_state:ok/.test(info) && acked === 1;
      } catch {
        return false;
      } finally {
        client.disconnect();
      }
    }),
  );
  return states.every(Boolean);
}

const { nodes, seed } = await startCluster();
const SERVICES = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];

/** The cluster's master for `service`'s queue, and the process of that master's replica. */
async function replicaOf(
  cluster: Cluster,
  prefix: string,
  service: string,
): Promise<{ master: string; replica: PrivateRedis }> {
  const slot = Number(await cluster.cluster('KEYSLOT', `${prefix}:${serviceQueueName(service)}:meta`));
  const master = cluster.slots[slot]![0]!;
  const node = cluster.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === master)!;
  const port = Number(/slave0:ip=[^,]+,port=(\d+)/.exec(await node.info('replication'))![1]);
  return { master, replica: nodes.find((n) => n.port === port)! };
}

describe('Producer minReplicas on a Redis Cluster', () => {
  it('waits on the master of each queue, refuses while its replica is paused, and the retry finds the job', async () => {
    const [host, port] = seed.split(':');
    const cluster = new Cluster([{ host: host!, port: Number(port) }], {
      redisOptions: { maxRetriesPerRequest: 1 },
      enableOfflineQueue: false,
    });
    cluster.on('error', () => undefined);
    const prefix = `t${randomUUID().slice(0, 8)}`;
    const producer = new Producer({ connection: cluster, prefix, minReplicas: 1, replicaTimeoutMs: 300 });
    try {
      // Every service, whichever master holds it: accepted, and on that master's replica when it resolves.
      for (const service of SERVICES) {
        const result = await producer.enqueue({ service, operation: 'op' });
        const { replica } = await replicaOf(cluster, prefix, service);
        const client = new Redis(replica.port, { maxRetriesPerRequest: 1 });
        await client.call('READONLY');
        expect(await client.hget(`${prefix}:${serviceQueueName(service)}:${result.id}`, 'name')).toBe('op');
        client.disconnect();
      }
      const { master, replica } = await replicaOf(cluster, prefix, 'a');
      const elsewhere = [];
      for (const service of SERVICES) {
        if ((await replicaOf(cluster, prefix, service)).master !== master) elsewhere.push(service);
      }
      expect(elsewhere.length).toBeGreaterThan(0);
      replica.process.kill('SIGSTOP');
      try {
        // Several tries: a WAIT sent to a random node would answer 1 at once on the other masters.
        for (let i = 0; i < 4; i++) {
          const error = await producer
            .enqueue({ service: 'a', operation: 'op', idempotencyKey: 'cluster-a' })
            .then(
              () => undefined,
              (e: unknown) => e,
            );
          expect(isReplicaTimeoutError(error), `try ${i}`).toBe(true);
        }
        // Another master's services are not held up.
        const other = await producer.enqueue({ service: elsewhere[0]!, operation: 'op' });
        expect(other.created).toBe(true);
      } finally {
        replica.process.kill('SIGCONT');
      }
      await expect
        .poll(
          () =>
            producer.enqueue({ service: 'a', operation: 'op', idempotencyKey: 'cluster-a' }).then(
              (result) => result,
              () => undefined,
            ),
          { timeout: 15_000, interval: 200 },
        )
        .toMatchObject({ id: idempotentJobId('cluster-a'), created: false });
    } finally {
      await producer.close();
      cluster.disconnect();
    }
  });
});
