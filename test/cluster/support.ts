/**
 * What the cluster suite's files share: the env that points the built CLI at a TestCluster
 * (REDIS_CLUSTER_NODES, no REDIS_URL), the API as a child process, and a Producer on a cluster connection.
 */
import { onTestFinished } from 'vitest';

import { createRedisConnection, type RedisClient, waitUntilReady } from '../../src/core/redis.ts';
import { Producer } from '../../src/producer/index.ts';
import type { ResponseBody } from '../helpers/api.ts';
import { type FerryProcess, spawnFerry, workerEnv } from '../helpers/processes.ts';
import type { TestCluster } from '../helpers/redis-cluster.ts';

export const ADMIN_TOKEN = 'cluster-suite-admin-token-0123456789';

/** workerEnv (fast sweeps, JSON logs; a 15 s lock) on the cluster: REDIS_CLUSTER_NODES and no REDIS_URL. */
export function clusterEnv(
  cluster: TestCluster,
  options: { servicesFile: string; prefix: string; extra?: Record<string, string | undefined> },
): Record<string, string | undefined> {
  return workerEnv({
    redisUrl: '',
    servicesFile: options.servicesFile,
    prefix: options.prefix,
    extra: {
      REDIS_URL: undefined,
      REDIS_CLUSTER_NODES: cluster.seeds,
      // Nothing here crashes a worker; a long lock keeps a loaded machine from running a job twice.
      FERRY_LOCK_DURATION_MS: '15000',
      FERRY_API_TOKENS: JSON.stringify([{ name: 'admin', token: ADMIN_TOKEN, scopes: ['admin'] }]),
      ...options.extra,
    },
  });
}

export interface ApiProcess {
  process: FerryProcess;
  url: string;
  /** One request with the admin token; status, headers and the parsed JSON body (if any). */
  call(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; headers: Headers; body: ResponseBody; text: string }>;
}

/** `ferry worker` (on `services` only, when given) with `env`, once it says it started. */
export async function startWorker(
  env: Record<string, string | undefined>,
  services?: readonly string[],
): Promise<FerryProcess> {
  const worker = spawnFerry(
    ['worker', ...(services === undefined ? [] : ['--services', services.join(',')])],
    {
      env,
    },
  );
  await worker.waitUntilStarted(30_000);
  return worker;
}

/** `ferry api` on a free port with `env`, once it listens. */
export async function startApiProcess(env: Record<string, string | undefined>): Promise<ApiProcess> {
  const api = spawnFerry(['api'], { env: { ...env, PORT: '0' } });
  const line = await api.waitForLine(/Ferry API listening on/, { timeoutMs: 30_000 });
  const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)![1]!;
  return {
    process: api,
    url,
    async call(method, path, body) {
      const response = await fetch(url + path, {
        method,
        headers: {
          authorization: `Bearer ${ADMIN_TOKEN}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await response.text();
      let parsed: unknown;
      try {
        parsed = text === '' ? undefined : JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      return { status: response.status, headers: response.headers, body: parsed, text };
    },
  };
}

/** A producer-role Cluster connection (as `ferry enqueue` makes one), closed when the test finishes. */
export async function clusterConnection(cluster: TestCluster): Promise<RedisClient> {
  const connection = createRedisConnection({ clusterNodes: cluster.seeds.split(',') }, 'producer');
  connection.on('error', () => undefined);
  onTestFinished(() => connection.disconnect());
  await waitUntilReady(connection);
  return connection;
}

/** A Producer on its own cluster connection, closed when the test finishes. */
export async function clusterProducer(cluster: TestCluster, prefix: string): Promise<Producer> {
  const producer = new Producer({ connection: await clusterConnection(cluster), prefix });
  onTestFinished(() => producer.close());
  return producer;
}
