/**
 * A real Redis Sentinel deployment from Debian's packages, for one test file: a master, a replica (or
 * `replicas` of them, `replicaof`) and 3 Sentinels (`redis-sentinel`, each with its own config file: Sentinels rewrite theirs),
 * all on free ports on 127.0.0.1, each in its own temp dir. The data nodes have a password (`requirepass` +
 * `masterauth`), and so do the Sentinels when asked. Failure detection is fast (`down-after-milliseconds`
 * 1000, `failover-timeout` 3000) so that a `kill -9` of the master is followed within seconds. Everything is
 * stopped in afterAll (or by `stop()`).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Redis } from 'ioredis';

import { freePort } from '../../src/cli/redis-server.ts';
import { registerCleanup } from './cleanup.ts';
import { withTimeout } from './processes.ts';
import { until } from './until.ts';

export const MASTER_NAME = 'mymaster';
export const DOWN_AFTER_MS = 1_000;
export const FAILOVER_TIMEOUT_MS = 3_000;

export interface Address {
  host: string;
  port: number;
}

export interface SentinelNode {
  readonly port: number;
  readonly process: ChildProcess;
  readonly dir: string;
}

export interface SentinelDeployment {
  readonly masterName: string;
  /** Password of the data nodes (`requirepass`, `masterauth`). */
  readonly password: string;
  /** Password of the Sentinels, when they have one. */
  readonly sentinelPassword: string | undefined;
  readonly dataNodes: readonly SentinelNode[];
  readonly sentinels: readonly SentinelNode[];
  /** REDIS_SENTINELS, REDIS_SENTINEL_NAME, REDIS_PASSWORD (and REDIS_SENTINEL_PASSWORD) for a Ferry process. */
  readonly env: Record<string, string>;
  /** Where the Sentinels say the master is (`SENTINEL get-master-addr-by-name`), asked of the first that answers. */
  master(): Promise<Address>;
  /** An ioredis client on one data node (with the password), closed with the deployment. */
  client(port: number): Redis;
  /**
   * Subscribes to `+switch-master` on every Sentinel; resolves once subscribed. `next()` resolves with the
   * new master and when the first Sentinel announced it; `seenAt` holds when each Sentinel did (they learn
   * the new configuration from each other); `close()` unsubscribes.
   */
  watchSwitch(): Promise<{
    next(timeoutMs: number): Promise<Address & { at: number }>;
    readonly seenAt: readonly number[];
    close(): void;
  }>;
  /** `SENTINEL FAILOVER`: a planned failover, the old master still up (it is demoted later). */
  failover(): Promise<void>;
  /** SIGKILL of the data node on `port` (`kill -9`), resolved once the process is gone; returns when it was sent. */
  kill9(port: number): Promise<number>;
  stop(): Promise<void>;
}

export { until } from './until.ts';

function startProcess(binary: string, args: readonly string[]): ChildProcess {
  const child = spawn(binary, args, { stdio: 'ignore' });
  child.on('error', () => undefined);
  return child;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

/**
 * Starts the deployment and waits until the Sentinels know the replicas and each other (a failover can run).
 * `replicas` (default 1): with 2, a failover promotes one and the Sentinels re-attach the other to it, so the
 * new master has a replica again (what `FERRY_ENQUEUE_MIN_REPLICAS=1` needs to keep accepting enqueues).
 */
export async function startSentinels(
  options: { sentinelPassword?: boolean; replicas?: number } = {},
): Promise<SentinelDeployment> {
  const replicaCount = options.replicas ?? 1;
  if (!Number.isInteger(replicaCount) || replicaCount < 1) throw new Error('replicas: at least 1');
  const root = join(tmpdir(), `ferry-test-sentinel-${randomUUID().slice(0, 8)}`);
  const password = `data-${randomBytes(12).toString('hex')}`;
  const sentinelPassword =
    options.sentinelPassword === true ? `sent-${randomBytes(12).toString('hex')}` : undefined;
  const clients: Redis[] = [];
  const dataNodes: SentinelNode[] = [];
  const sentinels: SentinelNode[] = [];
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    for (const client of clients) client.disconnect();
    await Promise.all([...sentinels, ...dataNodes].map((node) => stopProcess(node.process)));
    await rm(root, { recursive: true, force: true });
  };
  // From inside a test (a deployment per test), an afterAll would never run: everything would outlive it.
  registerCleanup(stop);

  const client = (port: number, sentinel = false): Redis => {
    const redis = new Redis({
      host: '127.0.0.1',
      port,
      password: sentinel ? sentinelPassword : password,
      maxRetriesPerRequest: 1,
      connectTimeout: 2_000,
      commandTimeout: 2_000,
      retryStrategy: () => 200,
      // A node the test kills: its client's failed reconnects are expected.
      lazyConnect: false,
    });
    redis.on('error', () => undefined);
    clients.push(redis);
    return redis;
  };

  const startDataNode = async (replicaOf?: number): Promise<SentinelNode> => {
    const port = await freePort();
    const dir = join(root, `redis-${port}`);
    await mkdir(dir, { recursive: true });
    const args = [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      'no',
      '--requirepass',
      password,
      '--masterauth',
      password,
      '--repl-diskless-sync',
      'yes',
      '--repl-diskless-sync-delay',
      '0',
      '--maxmemory-policy',
      'noeviction',
      '--logfile',
      join(dir, 'redis.log'),
      ...(replicaOf === undefined ? [] : ['--replicaof', '127.0.0.1', String(replicaOf)]),
    ];
    const node = { port, dir, process: startProcess('redis-server', args) };
    dataNodes.push(node);
    const probe = client(port);
    await until(
      async () => ((await probe.ping()) === 'PONG' ? true : undefined),
      10_000,
      () => `redis-server :${port} answers`,
    );
    return node;
  };

  const startSentinel = async (masterPort: number): Promise<SentinelNode> => {
    const port = await freePort();
    const dir = join(root, `sentinel-${port}`);
    await mkdir(dir, { recursive: true });
    const conf = [
      `port ${port}`,
      'bind 127.0.0.1',
      'daemonize no',
      `dir ${dir}`,
      `logfile ${join(dir, 'sentinel.log')}`,
      `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${masterPort} 2`,
      `sentinel auth-pass ${MASTER_NAME} ${password}`,
      `sentinel down-after-milliseconds ${MASTER_NAME} ${DOWN_AFTER_MS}`,
      `sentinel failover-timeout ${MASTER_NAME} ${FAILOVER_TIMEOUT_MS}`,
      `sentinel parallel-syncs ${MASTER_NAME} 1`,
      ...(sentinelPassword === undefined
        ? []
        : [`requirepass ${sentinelPassword}`, `sentinel sentinel-pass ${sentinelPassword}`]),
      '',
    ].join('\n');
    const confPath = join(dir, 'sentinel.conf');
    await writeFile(confPath, conf, { mode: 0o600 });
    const node = { port, dir, process: startProcess('redis-sentinel', [confPath]) };
    sentinels.push(node);
    return node;
  };

  try {
    const master = await startDataNode();
    const replicas: SentinelNode[] = [];
    for (let i = 0; i < replicaCount; i++) replicas.push(await startDataNode(master.port));
    const masterClient = client(master.port);
    await until(
      async () => {
        const info = await masterClient.info('replication');
        return (info.match(/^slave\d+:.*state=online/gm) ?? []).length === replicaCount ? true : undefined;
      },
      15_000,
      () => `the ${replicaCount} replica(s) in sync`,
    );
    for (let i = 0; i < 3; i++) await startSentinel(master.port);
    // A failover needs a majority of Sentinels that know each other and the replica (hello messages every 2 s).
    for (const sentinel of sentinels) {
      const sentinelClient = client(sentinel.port, true);
      await until(
        async () => {
          const others = (await sentinelClient.call('SENTINEL', 'SENTINELS', MASTER_NAME)) as unknown[];
          const listed = (await sentinelClient.call('SENTINEL', 'REPLICAS', MASTER_NAME)) as string[][];
          const known = replicas.every((replica) =>
            listed.some(
              (fields) => fields.includes(String(replica.port)) && !fields.join(' ').includes('s_down'),
            ),
          );
          return others.length === 2 && known ? true : undefined;
        },
        20_000,
        () => `sentinel :${sentinel.port} knows the other two and the replica(s)`,
      );
    }
  } catch (error) {
    await stop();
    throw error;
  }

  const sentinelClients = sentinels.map((sentinel) => client(sentinel.port, true));
  const env: Record<string, string> = {
    REDIS_SENTINELS: sentinels.map((sentinel) => `127.0.0.1:${sentinel.port}`).join(','),
    REDIS_SENTINEL_NAME: MASTER_NAME,
    REDIS_PASSWORD: password,
    ...(sentinelPassword === undefined ? {} : { REDIS_SENTINEL_PASSWORD: sentinelPassword }),
  };

  return {
    masterName: MASTER_NAME,
    password,
    sentinelPassword,
    dataNodes,
    sentinels,
    env,
    async master() {
      for (const sentinel of sentinelClients) {
        try {
          const [host, port] = (await sentinel.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME)) as [
            string,
            string,
          ];
          return { host, port: Number(port) };
        } catch {
          // That Sentinel is unreachable: ask the next one.
        }
      }
      throw new Error('no Sentinel answered');
    },
    client: (port) => client(port),
    async watchSwitch() {
      const subscribers = sentinels.map((sentinel) => client(sentinel.port, true));
      let announced: ((value: Address & { at: number }) => void) | undefined;
      const seenAt: number[] = [];
      const switched = new Promise<Address & { at: number }>((resolve) => {
        announced = resolve;
      });
      for (const subscriber of subscribers) {
        subscriber.on('message', (channel: string, message: string) => {
          // `<name> <old ip> <old port> <new ip> <new port>`
          const [name, , , host, port] = message.split(' ');
          if (channel === '+switch-master' && name === MASTER_NAME) {
            seenAt.push(Date.now());
            announced?.({ host: host!, port: Number(port), at: Date.now() });
          }
        });
        await subscriber.subscribe('+switch-master');
      }
      return {
        seenAt,
        close() {
          for (const subscriber of subscribers) subscriber.disconnect();
        },
        async next(timeoutMs) {
          return await withTimeout(switched, timeoutMs, () => `no +switch-master within ${timeoutMs} ms`);
        },
      };
    },
    async failover() {
      await sentinelClients[0]!.call('SENTINEL', 'FAILOVER', MASTER_NAME);
    },
    async kill9(port) {
      const node = dataNodes.find((candidate) => candidate.port === port);
      if (node === undefined) throw new Error(`no data node on port ${port}`);
      const at = Date.now();
      await stopProcess(node.process);
      return at;
    },
    stop,
  };
}
