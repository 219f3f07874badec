import { randomUUID } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Redis } from 'ioredis';
import { afterAll, onTestFinished } from 'vitest';

import { type PrivateRedis, startPrivateRedis } from '../../src/cli/redis-server.ts';
import { until } from './until.ts';

export interface TestRedis extends PrivateRedis {
  /** A plain client for assertions; closed with the server. */
  readonly client: Redis;
  readonly dir: string;
}

/**
 * Starts a private redis-server for this test file on a free port in a temp dir, stopped in afterAll.
 * Never a shared 6379, never a mock. With `replicaOf`, a replica of that server (`--replicaof`); wait for
 * its link with waitForReplicaLink.
 */
export async function startRedis(
  options: {
    replicaOf?: { port: number };
    /** `appendonly yes` (fsync every second): leak tests read the AOF files under `dir`/appendonlydir. */
    appendonly?: boolean;
  } = {},
): Promise<TestRedis> {
  const dir = join(tmpdir(), `ferry-test-redis-${randomUUID()}`);
  const extraArgs = [
    ...(options.replicaOf === undefined ? [] : ['--replicaof', '127.0.0.1', String(options.replicaOf.port)]),
    ...(options.appendonly === true ? ['--appendonly', 'yes'] : []),
  ];
  const server = await startPrivateRedis({
    dir,
    appendfsync: 'no',
    ...(extraArgs.length === 0 ? {} : { extraArgs }),
  });
  const client = new Redis(server.url, { lazyConnect: false, maxRetriesPerRequest: 1 });
  // A test that stops its server sees this client's failed reconnects: expected, not worth a stack trace each.
  client.on('error', () => undefined);
  afterAll(async () => {
    client.disconnect();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });
  // Ready before the test sees it: code that checks `status === 'ready'` (the metrics scrape) must not race it.
  await client.ping();
  return Object.assign(Object.create(null) as object, server, { client, dir }) as TestRedis;
}

/** Resolves once `replica` reports its link to the master up and in sync (INFO replication). */
export async function waitForReplicaLink(replica: Redis, timeoutMs = 15_000): Promise<void> {
  let info = '';
  await until(
    async () => {
      info = await replica.info('replication');
      return /master_link_status:up/.test(info) && /master_sync_in_progress:0/.test(info) ? true : undefined;
    },
    timeoutMs,
    () => `replica link up:\n${info}`,
  );
}

/** A Redis key prefix unique to one test, so tests in a file never see each other's queues. */
export function uniquePrefix(): string {
  return `t${randomUUID().slice(0, 8)}`;
}

/** Every key matching `pattern` and every value of every type, as text: what leak tests search. */
export async function dumpRedis(client: Redis, pattern = '*'): Promise<string> {
  const parts: string[] = [];
  for (const key of await client.keys(pattern)) {
    parts.push(key);
    const type = await client.type(key);
    if (type === 'string') parts.push((await client.get(key)) ?? '');
    else if (type === 'hash') parts.push(JSON.stringify(await client.hgetall(key)));
    else if (type === 'list') parts.push(JSON.stringify(await client.lrange(key, 0, -1)));
    else if (type === 'set') parts.push(JSON.stringify(await client.smembers(key)));
    else if (type === 'zset') parts.push(JSON.stringify(await client.zrange(key, '0', '-1')));
    else if (type === 'stream') parts.push(JSON.stringify(await client.xrange(key, '-', '+')));
  }
  return parts.join('\n');
}

/**
 * Everything a Redis server holds at rest, as text keyed by where it was found: every key read by type, every
 * key's DUMP bytes, and each AOF file on disk (the server must run with `appendonly: true`). What tests that
 * promise "this value is nowhere in Redis" search (sealed inputs, secrets).
 */
export async function redisAtRest(redis: TestRedis): Promise<Record<string, string>> {
  const places: Record<string, string> = { 'Redis values': await dumpRedis(redis.client) };
  const dumps: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.client.scan(cursor, 'COUNT', 500);
    cursor = next;
    for (const key of keys) {
      const dumped = await redis.client.dumpBuffer(key);
      if (dumped !== null) dumps.push(`${key}\n${dumped.toString('latin1')}`);
    }
  } while (cursor !== '0');
  places['Redis DUMP'] = dumps.join('\n');
  const aofDir = join(redis.dir, (await redis.client.config('GET', 'appenddirname'))[1] as string);
  const files = await readdir(aofDir);
  if (!files.some((file) => file.includes('.aof')))
    throw new Error(`no AOF file in ${aofDir}: start this Redis with { appendonly: true }`);
  for (const file of files) places[`AOF ${file}`] = (await readFile(join(aofDir, file))).toString('latin1');
  return places;
}

/**
 * A Redis user for one test that may write only the keys of `writes` (service queue names, e.g. `{crm}` or
 * `{dead-letter}`) and read only `reads` (key suffixes under the prefix, e.g. `{ops}:*`), plus the schedules'
 * keys every worker syncs at start: a worker logged in as it is refused (NOPERM) what the test wants to stop
 * it from doing, with no hook in src. Removed when the test finishes. Returns the URL to log in with.
 */
export async function restrictedRedisUser(
  redis: TestRedis,
  prefix: string,
  grants: { writes: readonly string[]; reads?: readonly string[] },
): Promise<string> {
  const user = `limited-${randomUUID().slice(0, 8)}`;
  const password = randomUUID();
  await redis.client.call(
    'ACL',
    'SETUSER',
    user,
    'on',
    `>${password}`,
    'resetkeys',
    ...grants.writes.map((queue) => `~${prefix}:${queue}:*`),
    `~${prefix}:schedules:*`,
    ...(grants.reads ?? []).map((suffix) => `%R~${prefix}:${suffix}`),
    'resetchannels',
    '&*',
    '+@all',
  );
  onTestFinished(async () => {
    await redis.client.call('ACL', 'DELUSER', user);
  });
  return redis.url.replace('redis://', `redis://${user}:${password}@`);
}
