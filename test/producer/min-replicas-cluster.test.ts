/**
 * Producer `minReplicas` on a real Redis Cluster (3 masters, 3 replicas of Debian's redis-server): WAIT must
 * go to the master of the queue's slot, on the connection that wrote the job. A keyless command sent through
 * ioredis' Cluster goes to a random node, where WAIT counts nothing of this write and answers at once.
 */

import { randomUUID } from 'node:crypto';

import { Cluster, Redis } from 'ioredis';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';

import { TokenSet } from '../../src/api/auth.ts';
import { buildFerryApi } from '../../src/cli/api-server.ts';
import type { PrivateRedis } from '../../src/cli/redis-server.ts';
import { readEnv } from '../../src/core/env.ts';
import { idempotentJobId, serviceQueueName } from '../../src/core/queue-layout.ts';
import { createRedisConnection, waitUntilReady } from '../../src/core/redis.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { Producer } from '../../src/producer/producer.ts';
import { isReplicaTimeoutError } from '../../src/producer/replicas.ts';
import { Scrubber } from '../../src/secrets/scrub.ts';
import { TOKEN_CONFIG, TOKENS } from '../helpers/api.ts';
import { startRedisCluster } from '../helpers/redis-cluster.ts';

const cluster0 = await startRedisCluster();
const nodes = cluster0.nodes;
const seed = nodes[0]!.address;
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

  it("through the API: 202 on the cluster, 503 with Retry-After while the slot master's replica is paused", async () => {
    const connection = createRedisConnection({ clusterNodes: [seed] }, 'api', 'ferry-test-api');
    const eventsConnection = createRedisConnection({ clusterNodes: [seed] }, 'worker', 'ferry-test-events');
    connection.on('error', () => undefined);
    eventsConnection.on('error', () => undefined);
    await waitUntilReady(connection);
    const prefix = `t${randomUUID().slice(0, 8)}`;
    const config = parseServicesConfig(
      {
        services: Object.fromEntries(
          SERVICES.map((name) => [
            name,
            { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'POST', path: '/x' } } },
          ]),
        ),
      },
      { env: {} },
    );
    const env = readEnv({
      FERRY_PREFIX: prefix,
      FERRY_ENQUEUE_MIN_REPLICAS: '1',
      FERRY_ENQUEUE_REPLICA_TIMEOUT_MS: '300',
    });
    const api = await buildFerryApi(
      { env, logger: pino({ level: 'silent' }), config, scrubber: new Scrubber() },
      { connection, eventsConnection, tokens: TokenSet.parse(TOKEN_CONFIG, 'test tokens'), processEnv: {} },
    );
    // Over real HTTP, as clients send (with app.inject each answer waited the API's 5 s linger time here).
    await api.app.listen({ port: 0, host: '127.0.0.1' });
    const address = api.app.server.address() as { port: number };
    const post = async (body: unknown): Promise<{ statusCode: number; retryAfter: string | null }> => {
      const response = await fetch(`http://127.0.0.1:${address.port}/v1/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKENS.writer}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      await response.text();
      return { statusCode: response.status, retryAfter: response.headers.get('retry-after') };
    };
    try {
      const accepted = await post({ service: 'b', operation: 'op', idempotencyKey: 'api-b' });
      expect(accepted.statusCode).toBe(202);
      const { replica } = await replicaOf(connection as Cluster, prefix, 'b');
      replica.process.kill('SIGSTOP');
      try {
        for (let i = 0; i < 3; i++) {
          const refused = await post({ service: 'b', operation: 'op', idempotencyKey: 'api-b2' });
          expect(refused.statusCode, `try ${i}`).toBe(503);
          expect(refused.retryAfter).not.toBeNull();
        }
      } finally {
        replica.process.kill('SIGCONT');
      }
      await expect
        .poll(
          async () => (await post({ service: 'b', operation: 'op', idempotencyKey: 'api-b2' })).statusCode,
          {
            timeout: 15_000,
            interval: 200,
          },
        )
        .toBe(200);
    } finally {
      await api.close();
      connection.disconnect();
      eventsConnection.disconnect();
    }
  });
});
