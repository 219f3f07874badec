/**
 * Dead letters and secrets on a real Redis Cluster (issue 15, item 2): eight services on all three masters, the
 * built `ferry worker`, `ferry api` and `ferry dlq` / `ferry secrets` with REDIS_CLUSTER_NODES. Dead letters are
 * written by the worker and by its failed-set sweep, listed with filters and a cursor (API and CLI), replayed,
 * purged, trimmed by retention and reindexed; a secret is stored, rotated and followed by a running worker.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { DEAD_LETTERED_FIELD, serviceQueueName } from '../../src/core/queue-layout.ts';
import { DeadLetterWriter } from '../../src/dead-letter/writer.ts';
import { generateMasterKey } from '../../src/secrets/crypto.ts';
import { aRecord } from '../dead-letter/support.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { runFerry, tempDir, writeServicesFile } from '../helpers/processes.ts';
import { uniquePrefix } from '../helpers/redis.ts';
import { servicesOnEveryMaster, startRedisCluster } from '../helpers/redis-cluster.ts';
import { clusterConnection, clusterEnv, clusterProducer, startApiProcess, startWorker } from './support.ts';

const cluster = await startRedisCluster();
const services = await servicesOnEveryMaster(cluster, 8);
const DAY = 86_400_000;
const OLD_KEY = 'cluster-key-old-7c21e9';
const NEW_KEY = 'cluster-key-new-4fd08a';

/** `/refuse` answers 422 (a dead letter at once) until `accepting`; `/keyed` checks the bearer token. */
let accepting = false;
const downstream = await startDownstream((request) => {
  if (request.url.endsWith('/keyed')) {
    const auth = request.headers.authorization;
    return auth === `Bearer ${OLD_KEY}` || auth === `Bearer ${NEW_KEY}`
      ? { status: 200, body: {} }
      : { status: 401, body: {} };
  }
  if (request.url.endsWith('/refuse') && !accepting) return { status: 422, body: { error: 'refused' } };
  return { status: 200, body: { ok: true } };
});

const servicesFile = await writeServicesFile({
  services: Object.fromEntries(
    services.map((name) => [
      name,
      {
        baseUrl: downstream.url,
        retry: { attempts: 1 },
        ...(name === services[0] ? { auth: { type: 'bearer', token: '{{ secrets.cluster_key }}' } } : {}),
        operations: {
          refuse: { method: 'POST', path: `/${name}/refuse`, body: '{{ input }}' },
          keyed: { method: 'POST', path: `/${name}/keyed`, body: '{{ input }}' },
        },
      },
    ]),
  ),
});
const prefix = uniquePrefix();
const env = clusterEnv(cluster, {
  servicesFile,
  prefix,
  extra: { FERRY_SECRETS_KEY: generateMasterKey(), FERRY_DLQ_MAX_AGE_MS: String(30 * DAY) },
});
const api = await startApiProcess(env);

type Listed = { items: { id: string; service: string }[]; nextCursor: string | null };

/** Every page of GET /v1/dead-letters with `query`, following nextCursor. */
async function listAll(query: string): Promise<{ ids: string[]; services: string[]; pages: number }> {
  const ids: string[] = [];
  const seen: string[] = [];
  let cursor: string | null = null;
  for (let pages = 1; ; pages++) {
    const page = await api.call(
      'GET',
      `/v1/dead-letters?${query}${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`,
    );
    expect(page.status, page.text).toBe(200);
    const body = page.body as Listed;
    ids.push(...body.items.map((item) => item.id));
    seen.push(...body.items.map((item) => item.service));
    if (body.nextCursor === null) return { ids, services: seen, pages };
    if (pages > 100) throw new Error('the cursor never ends');
    cursor = body.nextCursor;
  }
}

describe('dead letters on the cluster', () => {
  it(
    'written by the worker and by the sweep, listed with filters and a cursor, reindexed, replayed and purged',
    { timeout: 90_000 },
    async () => {
      const worker = await startWorker(env);
      const producer = await clusterProducer(cluster, prefix);
      // Two refused jobs per service: sixteen dead letters over the three masters' queues.
      const jobs = await producer.enqueueMany(
        services.flatMap((service) => [1, 2].map((n) => ({ service, operation: 'refuse', input: { n } }))),
      );
      const views = [];
      for (const job of jobs) {
        const view = await producer.waitFor(job.service, job.id, { timeoutMs: 20_000 });
        expect(view.state).toBe('dead_lettered');
        views.push(view);
      }
      expect((await listAll('limit=5')).ids.sort()).toEqual(views.map((v) => v.deadLetterId).sort());

      // The sweep: a failed job whose dead letter was never written (a worker killed in between) gets one.
      const lost = views[3]!;
      const connection = await clusterConnection(cluster);
      const deadLetterQueue = new Queue('{dead-letter}', { connection, prefix });
      onTestFinished(() => deadLetterQueue.close());
      await deadLetterQueue.remove(lost.deadLetterId!);
      const source = new Queue(serviceQueueName(lost.service), { connection, prefix });
      onTestFinished(() => source.close());
      await connection.hdel(source.toKey(lost.id), DEAD_LETTERED_FIELD);
      expect((await api.call('GET', `/v1/dead-letters/${lost.deadLetterId}`)).status).toBe(404);
      await expect
        .poll(async () => (await api.call('GET', `/v1/dead-letters/${lost.deadLetterId}`)).status, {
          timeout: 15_000,
        })
        .toBe(200);

      // Filters and the cursor: by service (each on its master), by operation and error type, CLI as API.
      for (const service of services) {
        const listed = await listAll(`service=${service}&limit=1`);
        expect(listed.services).toEqual([service, service]);
        expect(listed.pages).toBeGreaterThanOrEqual(2);
      }
      // services[0] reads a secret not stored yet: its jobs failed before any call, as ConfigurationError.
      expect((await listAll('operation=refuse&errorType=ClientError&status=422&limit=7')).ids).toHaveLength(
        14,
      );
      expect((await listAll('errorType=ConfigurationError')).services).toEqual([services[0], services[0]]);
      expect((await listAll('errorType=ServerError')).ids).toEqual([]);
      const cliPage = await runFerry(['dlq', 'list', '--service', services[5]!, '--limit', '1', '--json'], {
        env,
      });
      expect(cliPage.code, cliPage.process.output()).toBe(0);
      const firstPage = JSON.parse(cliPage.stdout) as Listed;
      expect(firstPage.items).toHaveLength(1);
      const cliNext = await runFerry(
        [
          'dlq',
          'list',
          '--service',
          services[5]!,
          '--limit',
          '1',
          '--cursor',
          firstPage.nextCursor!,
          '--json',
        ],
        { env },
      );
      expect((JSON.parse(cliNext.stdout) as Listed).items.map((i) => i.service)).toEqual([services[5]]);

      // Reindex: the search index, lost, rebuilt from the dead letters themselves.
      await connection.del(`${prefix}:{dead-letter}:ferry:by-time`);
      expect((await listAll('limit=50')).ids).toEqual([]);
      const reindexed = await runFerry(['dlq', 'reindex', '--json'], { env });
      expect(reindexed.code, reindexed.process.output()).toBe(0);
      expect((await listAll('limit=50')).ids).toHaveLength(16);

      // Replay two services' dead letters through the API: new jobs, called once each, dead letters gone.
      accepting = true;
      const before = downstream.requests.length;
      const replayed = await api.call('POST', '/v1/dead-letters/replay', { service: services[1] });
      expect(replayed.status, replayed.text).toBe(200);
      expect(replayed.body).toMatchObject({ matched: 2, replayed: 2, failed: 0 });
      const byCli = await runFerry(['dlq', 'replay', '--service', services[6]!, '--json'], { env });
      expect(byCli.code, byCli.process.output()).toBe(0);
      for (const service of [services[1]!, services[6]!]) {
        expect((await listAll(`service=${service}`)).ids).toEqual([]);
      }
      const replayJobs = [
        ...(replayed.body.items as { service: string; jobId: string }[]),
        ...views
          .filter((v) => v.service === services[6])
          .map((v) => ({ service: v.service, jobId: `rp-${v.deadLetterId}` })),
      ];
      for (const job of replayJobs) {
        expect((await producer.waitFor(job.service, job.jobId, { timeoutMs: 20_000 })).state).toBe(
          'completed',
        );
      }
      expect(downstream.requests.length - before).toBe(4);

      // Purge: one service by the API, a dry run then the rest by the CLI.
      const purged = await api.call('POST', '/v1/dead-letters/purge', { service: services[2] });
      expect(purged.body).toMatchObject({ matched: 2, deleted: 2 });
      const dry = await runFerry(['dlq', 'purge', '--dry-run', '--json', '--yes'], { env });
      expect(dry.code, dry.process.output()).toBe(0);
      expect(JSON.parse(dry.stdout)).toMatchObject({ matched: 10, deleted: 0 });
      const all = await runFerry(['dlq', 'purge', '--yes', '--json'], { env });
      expect(JSON.parse(all.stdout)).toMatchObject({ deleted: 10 });
      expect((await listAll('limit=50')).ids).toEqual([]);
      worker.terminate();
      expect((await worker.waitForExit(20_000)).code).toBe(0);
    },
  );

  it(
    'retention: the worker deletes dead letters past FERRY_DLQ_MAX_AGE_MS on every service',
    { timeout: 60_000 },
    async () => {
      // A prefix of its own: the dead letters of the test above are not this one's.
      const ownPrefix = uniquePrefix();
      const ownEnv = { ...env, FERRY_PREFIX: ownPrefix };
      const ownApi = await startApiProcess(ownEnv);
      const listOwn = async (): Promise<string[]> =>
        ((await ownApi.call('GET', '/v1/dead-letters?limit=50')).body as Listed).items
          .map((i) => i.id)
          .sort();
      const connection = await clusterConnection(cluster);
      const writer = new DeadLetterWriter({ connection, prefix: ownPrefix });
      onTestFinished(() => writer.close());
      const old = [];
      const fresh = [];
      for (const service of services) {
        old.push((await writer.write(aRecord({ service, deadLetteredAt: Date.now() - 31 * DAY }))).id);
        fresh.push((await writer.write(aRecord({ service, deadLetteredAt: Date.now() - DAY }))).id);
      }
      expect(await listOwn()).toEqual([...old, ...fresh].sort());
      const worker = await startWorker(ownEnv);
      await expect.poll(listOwn, { timeout: 20_000 }).toEqual(fresh.sort());
      worker.terminate();
      expect((await worker.waitForExit(20_000)).code).toBe(0);
    },
  );
});

describe('secrets on the cluster', () => {
  it(
    'set, stage and promote by the CLI; a running worker follows the rotation',
    { timeout: 60_000 },
    async () => {
      const dir = await tempDir('ferry-cluster-secrets');
      const valueFile = async (value: string): Promise<string> => {
        const path = join(dir, value);
        await writeFile(path, `${value}\n`);
        return path;
      };
      const set = await runFerry(['secrets', 'set', 'cluster_key', '--file', await valueFile(OLD_KEY)], {
        env,
      });
      expect(set.code, set.process.output()).toBe(0);
      const worker = await startWorker(env);
      const producer = await clusterProducer(cluster, prefix);
      const service = services[0]!;
      const keyOfCall = async (): Promise<string | undefined> => {
        const job = await producer.enqueue({ service, operation: 'keyed', input: {} });
        expect((await producer.waitFor(service, job.id, { timeoutMs: 15_000 })).state).toBe('completed');
        return downstream.requests.findLast((r) => r.url === `/${service}/keyed`)?.headers.authorization;
      };
      expect(await keyOfCall()).toBe(`Bearer ${OLD_KEY}`);

      const staged = await runFerry(['secrets', 'stage', 'cluster_key', '--file', await valueFile(NEW_KEY)], {
        env,
      });
      expect(staged.code, staged.process.output()).toBe(0);
      expect(await keyOfCall()).toBe(`Bearer ${OLD_KEY}`);
      expect((await runFerry(['secrets', 'promote', 'cluster_key'], { env })).code).toBe(0);
      await expect.poll(keyOfCall, { timeout: 10_000 }).toBe(`Bearer ${NEW_KEY}`);

      // The API on the cluster sees the same store: versions, never values.
      const listed = await api.call('GET', '/v1/secrets/cluster_key');
      expect(listed.status, listed.text).toBe(200);
      expect(listed.body).toMatchObject({ key: 'cluster_key', current: { version: 2 } });
      expect(listed.text).not.toContain(NEW_KEY);
      expect((await api.call('POST', '/v1/secrets/cluster_key/rollback')).status).toBe(200);
      await expect.poll(keyOfCall, { timeout: 10_000 }).toBe(`Bearer ${OLD_KEY}`);
      expect(worker.output()).not.toContain(OLD_KEY);
      expect(worker.output()).not.toContain(NEW_KEY);
      worker.terminate();
      expect((await worker.waitForExit(20_000)).code).toBe(0);
    },
  );
});
