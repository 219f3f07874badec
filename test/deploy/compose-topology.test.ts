/**
 * docker-compose.yml, run without a container engine (issue 14): redis-server with the compose file's own
 * flags, then each Ferry service's command with its compose environment (env file + `environment:`) as local
 * `node dist/cli/main.js <command>` processes, the worker once per replica. Only what a container network
 * changes is mapped, by the table in localAddress(): the Redis address, listen addresses and ports, mounted
 * paths. A job goes in through the API, to a worker, to a real local HTTP service and back; then SIGTERM, and
 * every process exits 0 within its stop_grace_period.
 *
 * The compose file and the code cannot drift apart: a variable Ferry does not read, a command Ferry does not
 * have, or a container path or address the table does not map fails here.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';

import { API_CLOSE_WAIT_MS } from '../../src/cli/api-server.ts';
import { freePort } from '../../src/cli/redis-server.ts';
import { SHUTDOWN_SLACK_MS } from '../../src/cli/shutdown.ts';
import { readEnv } from '../../src/core/env.ts';
import { waitUntilReady } from '../../src/core/redis.ts';
import { registerCleanup } from '../helpers/cleanup.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { type FerryProcess, ROOT, spawnFerry, tempDir, withTimeout } from '../helpers/processes.ts';
import {
  type ComposeFile,
  type ComposeService,
  durationMs,
  ferryCommands,
  ferryReads,
  hostPath,
  interpolatedNames,
  parseEnvFile,
  readComposeFile,
  serviceEnvironment,
} from './compose.ts';

const execFileAsync = promisify(execFile);

/** Compose's stop_grace_period when a service sets none. */
const COMPOSE_DEFAULT_GRACE_MS = 10_000;

/** Services that run the Ferry image (built from this repository). */
function ferryServices(compose: ComposeFile): [string, ComposeService & { build?: unknown }][] {
  return Object.entries(compose.services).filter(
    ([, service]) => (service as { build?: unknown }).build !== undefined,
  );
}

interface Local {
  /** Compose host:port → local host:port (`redis:6379`, `redis-node-1:6379`, …). */
  hosts: Map<string, string>;
  /** Container path → host path: the compose file's bind mounts and secrets. */
  mounts: Map<string, string>;
  apiPort: number;
  metricsPort: number;
}

/**
 * The one table of what differs between a container and a local process. Anything else that looks like a
 * container address or path is an error: add it here, knowingly.
 */
function localAddress(name: string, value: string, local: Local): string {
  const byName: Record<string, string> = {
    // Containers listen on every interface of their own network; a local process on loopback.
    HOST: '127.0.0.1',
    FERRY_METRICS_HOST: '127.0.0.1',
    // Fixed container ports would collide between local processes (and two worker replicas).
    PORT: String(local.apiPort),
    FERRY_METRICS_PORT: String(local.metricsPort),
  };
  if (name in byName) return byName[name]!;
  const mounted = local.mounts.get(value);
  if (mounted !== undefined) return mounted;
  // Compose's own settings also reach the containers through the env file; Ferry ignores them.
  if (!ferryReads(name)) return value;
  // Hosts of the compose network: REDIS_URL, REDIS_CLUSTER_NODES.
  const mapped = value.replace(/\b(redis(?:-node-\d+)?:6379)\b/g, (address) => {
    const host = local.hosts.get(address);
    if (host === undefined)
      throw new Error(`${name}=${value}: ${address} is not mapped; add it to localAddress`);
    return host;
  });
  if (/^\/(?:etc|run|data|var)\//.test(mapped))
    throw new Error(`${name}=${value}: a container path the test does not map; add it to localAddress`);
  return mapped;
}

/** Host side of every bind mount (`host:container[:ro]`) and secret (`/run/secrets/<name>`) of a service. */
async function mountsOf(
  service: ComposeService,
  compose: ComposeFile,
  dir: string | undefined,
): Promise<Map<string, string>> {
  const mounts = new Map<string, string>();
  for (const volume of service.volumes ?? []) {
    const [host, container] = volume.split(':');
    // Named volumes (no path) belong to Redis; a Ferry service mounts files only.
    expect(host, `${volume}: a Ferry service mounts files`).toMatch(/^[./]/);
    mounts.set(container!, hostPath(host!));
  }
  for (const name of service.secrets ?? []) {
    expect(compose.secrets?.[name], `secret ${name} is declared`).toBeDefined();
    // The secret's file is the operator's (absent on a clean clone): a fresh master key stands in for it.
    const file = join(dir ?? '/nonexistent', `secret-${name}`);
    if (dir !== undefined) await writeFile(file, randomBytes(32).toString('base64'), { mode: 0o600 });
    mounts.set(`/run/secrets/${name}`, file);
  }
  return mounts;
}

interface LocalRedis {
  /** `127.0.0.1:<port>`, standing in for the service's `<name>:6379`. */
  address: string;
  client: Redis;
  process: ChildProcess;
  config(name: string): Promise<string>;
}

/**
 * A redis-server with a compose service's command line: `/data` is a temp dir, the container's own name
 * (`--cluster-announce-hostname`) is loopback, and it listens on a free port instead of the network's 6379.
 */
async function startComposeRedis(name: string, service: ComposeService, dir: string): Promise<LocalRedis> {
  const [binary, ...args] = service.command!;
  expect(binary).toBe('redis-server');
  const data = join(dir, name);
  await mkdir(data);
  const port = await freePort();
  const local = args.map((arg) => (arg === '/data' ? data : arg === name ? '127.0.0.1' : arg));
  const child = spawn('redis-server', [...local, '--port', String(port), '--bind', '127.0.0.1'], {
    stdio: 'ignore',
  });
  registerCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });
  const client = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1 });
  client.on('error', () => undefined);
  registerCleanup(async () => client.disconnect());
  await waitUntilReady(client, 10_000);
  const config = async (key: string): Promise<string> => ((await client.config('GET', key)) as string[])[1]!;
  return { address: `127.0.0.1:${port}`, client, process: child, config };
}

/** Redis as compose runs it: AOF with an fsync per write, no eviction, data in the volume. */
async function expectDurable(redis: LocalRedis, service: ComposeService): Promise<void> {
  expect(await redis.config('appendonly')).toBe('yes');
  expect(await redis.config('appendfsync')).toBe('always');
  expect(await redis.config('maxmemory-policy')).toBe('noeviction');
  // No RDB snapshots (`--save ''`): the AOF is the one copy.
  expect(await redis.config('save')).toBe('');
  expect(Number(await redis.config('maxmemory'))).toBeGreaterThan(0);
  expect(service.volumes?.some((volume) => volume.endsWith(':/data'))).toBe(true);
  expect(service.healthcheck?.test.join(' ')).toContain('redis-cli ping');
}

async function stopRedis(redis: LocalRedis): Promise<number | null> {
  redis.client.disconnect();
  redis.process.kill('SIGTERM');
  const [code] = (await withTimeout(
    once(redis.process, 'exit'),
    COMPOSE_DEFAULT_GRACE_MS,
    () => 'redis-server did not exit',
  )) as [number | null];
  return code;
}

/**
 * Runs a compose file's API and worker services as local processes (the worker once per replica) on the given
 * Redis addresses: a job goes in through the API, to a worker, to a real local HTTP server and back; the
 * image's HEALTHCHECK passes for each role; SIGTERM, and each exits 0 within its stop_grace_period.
 */
async function runFerryServices(
  compose: ComposeFile,
  names: { api: string; worker: string },
  hosts: Map<string, string>,
  dir: string,
): Promise<void> {
  const apiService = compose.services[names.api]!;
  const workerService = compose.services[names.worker]!;
  const downstream = await startDownstream((request) => ({ status: 200, body: { echoed: request.body } }));
  const token = randomBytes(24).toString('hex');
  const environment = async (
    service: ComposeService,
    ports: { api: number; metrics: number },
  ): Promise<Record<string, string>> => {
    const { env } = await serviceEnvironment(service);
    const local: Local = {
      hosts,
      mounts: await mountsOf(service, compose, dir),
      apiPort: ports.api,
      metricsPort: ports.metrics,
    };
    const mapped: Record<string, string> = {};
    for (const [key, value] of env) mapped[key] = localAddress(key, value, local);
    // What the operator adds, as .env.example says: the tokens (in their env file), and where the mounted
    // services file's demo service is (a host of the compose network there, a local server here).
    mapped.FERRY_API_TOKENS = JSON.stringify([
      { name: 'ops', sha256: createHash('sha256').update(token).digest('hex'), scopes: ['admin'] },
    ]);
    mapped.FERRY_SERVICE_DEMO_URL = downstream.url;
    return mapped;
  };

  // Ferry starts once its Redis is healthy (or the cluster created).
  for (const service of [apiService, workerService])
    for (const [dependency, { condition }] of Object.entries(service.depends_on ?? {}))
      expect(condition, dependency).toBe(
        compose.services[dependency]?.healthcheck === undefined
          ? 'service_completed_successfully'
          : 'service_healthy',
      );
  // The published port points at the port the API listens on.
  const { env: composeApiEnv } = await serviceEnvironment(apiService);
  expect(apiService.ports!.map((port) => port.split(':').at(-1))).toEqual([composeApiEnv.get('PORT')]);
  const apiPort = await freePort();
  const apiEnv = await environment(apiService, { api: apiPort, metrics: 0 });
  const processes: { name: string; ferry: FerryProcess; graceMs: number }[] = [];
  const api = spawnFerry(apiService.command!, { env: apiEnv });
  processes.push({ name: names.api, ferry: api, graceMs: durationMs(apiService.stop_grace_period ?? '10s') });
  const replicas = workerService.deploy?.replicas ?? 1;
  expect(replicas).toBe(2);
  const workerEnvs: Record<string, string>[] = [];
  for (let replica = 1; replica <= replicas; replica += 1) {
    const env = await environment(workerService, { api: 0, metrics: await freePort() });
    workerEnvs.push(env);
    processes.push({
      name: `${names.worker}-${replica}`,
      ferry: spawnFerry(workerService.command!, { env }),
      graceMs: durationMs(workerService.stop_grace_period ?? '10s'),
    });
  }
  await api.waitForLine('Ferry API listening', { timeoutMs: 20_000 });
  for (const { ferry } of processes.slice(1)) await ferry.waitUntilStarted(20_000);

  // ---- a job through the API to a worker and back ----
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const enqueued = await fetch(`${apiUrl}/v1/jobs`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ service: 'demo', operation: 'echo', input: { from: 'compose' } }),
  });
  expect(enqueued.status, await enqueued.clone().text()).toBe(202);
  const { id } = (await enqueued.json()) as { id: string };
  type JobView = { state?: string; result?: { status: number; body: unknown } };
  const read = async (): Promise<JobView> =>
    (await (await fetch(`${apiUrl}/v1/jobs/demo/${id}`, { headers })).json()) as JobView;
  await expect.poll(async () => (await read()).state, { timeout: 15_000, interval: 100 }).toBe('completed');
  const job = await read();
  expect(job.result?.status).toBe(200);
  expect(JSON.stringify(job.result?.body)).toContain('compose');
  expect(downstream.requests.map((request) => request.url)).toEqual(['/echo']);

  // ---- the image's HEALTHCHECK, for each role ----
  const healthcheck = join(ROOT, 'dist', 'cli', 'healthcheck.js');
  const roles = [['api', apiEnv] as const, ...workerEnvs.map((env) => ['worker', env] as const)];
  for (const [role, env] of roles) {
    const { stdout } = await execFileAsync(process.execPath, [healthcheck, role], {
      env: { PATH: process.env.PATH, ...env },
    });
    expect(stdout, role).toMatch(/^healthy: http:\/\/127\.0\.0\.1:\d+\/healthz answered 200/);
  }

  // ---- SIGTERM, as `docker-compose stop` sends it: exit 0 within the grace period ----
  expect(durationMs(workerService.stop_grace_period!)).toBeGreaterThanOrEqual(
    Number(workerEnvs[0]!.FERRY_SHUTDOWN_TIMEOUT_MS) +
      Number(workerEnvs[0]!.FERRY_SHUTDOWN_HANDBACK_MS) +
      SHUTDOWN_SLACK_MS,
  );
  // The API's own shutdown limit (src/cli/commands/api.ts).
  expect(durationMs(apiService.stop_grace_period!)).toBeGreaterThanOrEqual(
    API_CLOSE_WAIT_MS + 2 * SHUTDOWN_SLACK_MS,
  );
  const started = Date.now();
  const exits = await Promise.all(
    processes.map(async ({ name, ferry, graceMs }) => {
      ferry.terminate();
      const exit = await ferry.waitForExit(graceMs);
      return { name, code: exit.code, withinGrace: Date.now() - started < graceMs };
    }),
  );
  expect(exits).toEqual(processes.map(({ name }) => ({ name, code: 0, withinGrace: true })));
}

describe('docker-compose.yml', () => {
  it('names only variables and commands Ferry has, and .env.example documents each ${VARIABLE}', async () => {
    const { raw, compose } = await readComposeFile();
    const interpolated = interpolatedNames(raw);
    const example = parseEnvFile(await readFile(join(ROOT, '.env.example'), 'utf8'));
    const commands = await ferryCommands();
    const services = ferryServices(compose);
    expect(services.map(([name]) => name).sort()).toEqual(['api', 'cluster-api', 'cluster-worker', 'worker']);
    const hosts = new Map(
      ['redis', ...[1, 2, 3, 4, 5, 6].map((i) => `redis-node-${i}`)].map((host) => [
        `${host}:6379`,
        '127.0.0.1:1',
      ]),
    );
    for (const [name, service] of services) {
      expect(commands, `${name}: command ${service.command?.[0]}`).toContain(service.command?.[0]);
      const { env, fromEnvFile } = await serviceEnvironment(service);
      for (const key of Object.keys(service.environment ?? {}))
        expect(ferryReads(key), `${name}: environment ${key} is not a variable Ferry reads`).toBe(true);
      for (const key of fromEnvFile.keys())
        expect(
          ferryReads(key) || interpolated.has(key),
          `${name}: env file sets ${key}, which neither Ferry nor docker-compose.yml reads`,
        ).toBe(true);
      // The values themselves pass Ferry's own validation (after the address mapping).
      const local: Local = {
        hosts,
        mounts: await mountsOf(service, compose, undefined),
        apiPort: 1,
        metricsPort: 1,
      };
      const mapped = Object.fromEntries(
        [...env].map(([key, value]) => [key, localAddress(key, value, local)]),
      );
      expect(() => readEnv(mapped), name).not.toThrow();
    }
    // Every ${VARIABLE} is in .env.example with the default the compose file uses on a clean clone, so
    // `cp .env.example .env` changes nothing until it is edited.
    for (const [name, fallback] of interpolated) {
      expect(example.has(name), `.env.example documents ${name}`).toBe(true);
      expect(example.get(name), `.env.example's ${name} is the compose default`).toBe(fallback);
    }
  });

  it(
    'runs as local processes: a job goes through the API to a worker and back; SIGTERM exits 0 in grace',
    { timeout: 60_000 },
    async () => {
      const { compose } = await readComposeFile();
      const dir = await tempDir('ferry-compose');
      expect(compose.services.redis?.profiles).toBeUndefined();
      const redis = await startComposeRedis('redis', compose.services.redis!, dir);
      await expectDurable(redis, compose.services.redis!);
      await runFerryServices(
        compose,
        { api: 'api', worker: 'worker' },
        new Map([['redis:6379', redis.address]]),
        dir,
      );
      expect(await stopRedis(redis)).toBe(0);
    },
  );

  it(
    'profile cluster: 6 nodes, the init makes 3 masters with a replica each, and Ferry runs on the cluster',
    { timeout: 60_000 },
    async () => {
      const { compose } = await readComposeFile();
      const dir = await tempDir('ferry-compose-cluster');
      const nodes = Object.entries(compose.services).filter(
        ([, service]) =>
          service.profiles?.includes('cluster') === true && service.command?.[0] === 'redis-server',
      );
      expect(nodes.map(([name]) => name)).toEqual([1, 2, 3, 4, 5, 6].map((i) => `redis-node-${i}`));
      const servers = await Promise.all(
        nodes.map(([name, service]) => startComposeRedis(name, service, dir)),
      );
      for (const [index, server] of servers.entries()) {
        await expectDurable(server, nodes[index]![1]);
        expect(await server.config('cluster-enabled')).toBe('yes');
      }

      // The init's own redis-cli command line, with the local addresses of the nodes it resolves.
      const init = compose.services['redis-cluster-init']!;
      const script = init.command!.join('\n');
      const create = /redis-cli (--cluster create) \$nodes (--cluster-replicas 1 --cluster-yes)/.exec(script);
      expect(create, script).not.toBeNull();
      expect(/for i in ([\d ]+);/.exec(script)?.[1]?.trim().split(/ +/)).toHaveLength(nodes.length);
      await execFileAsync('redis-cli', [
        ...create![1]!.split(' '),
        ...servers.map((server) => server.address),
        ...create![2]!.split(' '),
      ]);
      for (const server of servers)
        await expect
          .poll(async () => String(await server.client.cluster('INFO')), { timeout: 15_000, interval: 100 })
          .toContain('cluster_state:ok');
      // Each node's own ROLE (a master's lists its connected replicas), once every replica has taken its master.
      // Not one node's CLUSTER NODES: that is its gossip view, which on a loaded machine learned of a replica's
      // new role more than 15 s late.
      const roles = async (): Promise<string[]> =>
        (await Promise.all(servers.map(async (server) => (await server.client.call('ROLE')) as unknown[])))
          .map((role) => (role[0] === 'master' ? `master of ${(role[2] as unknown[]).length}` : 'replica'))
          .sort();
      await expect
        .poll(roles, { timeout: 30_000, interval: 100 })
        .toEqual(['master of 1', 'master of 1', 'master of 1', 'replica', 'replica', 'replica']);

      const hosts = new Map(nodes.map(([name], index) => [`${name}:6379`, servers[index]!.address]));
      await runFerryServices(compose, { api: 'cluster-api', worker: 'cluster-worker' }, hosts, dir);
      for (const server of servers) expect(await stopRedis(server)).toBe(0);
    },
  );
});
