/**
 * Ferry on a real Redis Cluster (issue 15, item 2): eight services whose queues land on all three masters, the
 * built CLI's `ferry worker` and `ferry api` with REDIS_CLUSTER_NODES, and a real downstream. The producer, the
 * HTTP API, the worker pool, SSE events, `ferry status`, Bull Board's queue list and the metrics scrape; the
 * shared breaker, a hold and a rate limit. Each as the single-Redis tests run it.
 */
import { Queue } from 'bullmq';
import { type Cluster } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { createRedisConnection, waitUntilReady } from '../../src/core/redis.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { runFerry, writeServicesFile } from '../helpers/processes.ts';
import { uniquePrefix } from '../helpers/redis.ts';
import { servicesOnEveryMaster, startRedisCluster } from '../helpers/redis-cluster.ts';
import { ADMIN_TOKEN, clusterEnv, clusterProducer, startApiProcess, startWorker } from './support.ts';

const cluster = await startRedisCluster();
const services = await servicesOnEveryMaster(cluster, 8);
/** Roles in the suite: the rate-limited, the held and the breaker service; the rest only take jobs. */
const [limited, held, broken] = services as [string, string, string, ...string[]];

/** Answers per service: `/<service>/…`; the held one says 429 once, the broken one fails while `failing`. */
let failing = false;
let holdOnce = true;
const downstream = await startDownstream((request) => {
  const service = request.url.split('/')[1];
  if (service === held && holdOnce && request.body.includes('"hold":true')) {
    holdOnce = false;
    return { status: 429, headers: { 'retry-after': '1' } };
  }
  if (service === broken && failing) return { status: 500, body: { error: 'down' } };
  return { status: 200, body: { ok: true, service } };
});
const callsTo = (service: string, since = 0): number =>
  downstream.requests.filter((r) => r.url.startsWith(`/${service}/`) && r.at >= since).length;

const servicesFile = await writeServicesFile({
  services: Object.fromEntries(
    services.map((name) => [
      name,
      {
        baseUrl: downstream.url,
        timeoutMs: 2_000,
        concurrency: 4,
        retry: { attempts: 2, backoff: { delayMs: 100, maxDelayMs: 200 } },
        ...(name === limited ? { rateLimit: { max: 3, perMs: 1_000 } } : {}),
        ...(name === broken
          ? {
              retry: { attempts: 10, backoff: { delayMs: 100, maxDelayMs: 200 } },
              breaker: {
                errorThresholdPercentage: 50,
                volumeThreshold: 3,
                rollingWindowMs: 10_000,
                resetTimeoutMs: 4_000,
              },
            }
          : {}),
        operations: { send: { method: 'POST', path: `/${name}/send`, body: '{{ input }}' } },
      },
    ]),
  ),
});
const prefix = uniquePrefix();
const env = clusterEnv(cluster, { servicesFile, prefix });
// One worker for the file (every service but the breaker's, which its own test runs), and the API.
await startWorker(
  env,
  services.filter((s) => s !== broken),
);
const api = await startApiProcess(env);

describe('the cluster under the suite', () => {
  it('spreads the eight service queues over all three masters', async () => {
    const owners = new Set<string>();
    for (const service of services) {
      owners.add((await cluster.masterOf(await cluster.slotOf(serviceQueueName(service)))).address);
    }
    expect(services).toHaveLength(8);
    expect(owners.size).toBe(3);
  });
});

describe('an API-role cluster connection', () => {
  it('serves a BullMQ Queue created while it connects (Bull Board answered 500 for good before)', async () => {
    const connection = createRedisConnection({ clusterNodes: cluster.seeds.split(',') }, 'api') as Cluster;
    connection.on('error', () => undefined);
    onTestFinished(() => connection.disconnect());
    // `connect`: connected, the cluster's own ready check not answered yet. BullMQ takes it as ready.
    await new Promise((resolve) => connection.once('connect', resolve));
    const queue = new Queue(serviceQueueName(services[0]!), { connection, prefix: uniquePrefix() });
    queue.on('error', () => undefined);
    onTestFinished(() => queue.close());
    await waitUntilReady(connection);
    expect(await queue.getJobCounts('waiting')).toEqual({ waiting: 0 });
    // And from then on it fails fast, as a producer must: no offline queue once ready.
    expect(connection.options.enableOfflineQueue).toBe(false);
  });
});

describe('producer, API and worker pool on the cluster', () => {
  it(
    'enqueue, enqueueMany and an idempotent repeat (Producer); single, batch and repeat (API); every job of all 8 services called once',
    { timeout: 60_000 },
    async () => {
      const before = downstream.requests.length;
      const producer = await clusterProducer(cluster, prefix);
      const ok = services.filter((s) => s !== broken);

      const single = await producer.enqueue({
        service: ok[0]!,
        operation: 'send',
        input: { via: 'producer' },
      });
      expect(single.created).toBe(true);
      const many = await producer.enqueueMany(
        ok.map((service, i) => ({ service, operation: 'send', input: { via: 'many', i } })),
      );
      expect(many.map((r) => r.service)).toEqual(ok);
      const key = {
        service: ok[1]!,
        operation: 'send',
        input: { via: 'idem' },
        idempotencyKey: 'cluster-idem-1',
      };
      const first = await producer.enqueue(key);
      const repeat = await producer.enqueue(key);
      expect([first.created, repeat.created, repeat.id]).toEqual([true, false, first.id]);

      const posted = await api.call('POST', '/v1/jobs', {
        service: ok[2]!,
        operation: 'send',
        input: { via: 'api' },
        idempotencyKey: 'cluster-idem-api',
      });
      expect(posted.status, posted.text).toBe(202);
      const again = await api.call('POST', '/v1/jobs', {
        service: ok[2]!,
        operation: 'send',
        input: { via: 'api' },
        idempotencyKey: 'cluster-idem-api',
      });
      expect(again.status, again.text).toBe(200);
      expect(again.body.id).toBe(posted.body.id);
      const batch = await api.call('POST', '/v1/jobs/batch', {
        jobs: ok.map((service, i) => ({ service, operation: 'send', input: { via: 'batch', i } })),
      });
      expect(batch.status, batch.text).toBe(200);
      expect(batch.body).toMatchObject({ accepted: ok.length, rejected: 0 });
      const batchJobs = (batch.body.results as { index: number; status: number; id: string }[]).map((r) => {
        expect(r.status).toBe(202);
        return { service: ok[r.index]!, id: r.id };
      });

      const all = [single, ...many, first, { service: ok[2]!, id: posted.body.id as string }, ...batchJobs];
      for (const job of all) {
        const view = await producer.waitFor(job.service, job.id, { timeoutMs: 20_000 });
        expect(view.state, JSON.stringify(view)).toBe('completed');
        const status = await api.call('GET', `/v1/jobs/${job.service}/${job.id}`);
        expect(status.status).toBe(200);
        expect(status.body).toMatchObject({ id: job.id, state: 'completed' });
      }
      // One call per job: no job ran twice, none was lost.
      expect(downstream.requests.length - before).toBe(all.length);
      expect(new Set(downstream.requests.slice(before).map((r) => r.url.split('/')[1]))).toEqual(new Set(ok));
    },
  );
});

/** The SSE stream of one job, read to its end (the server ends it after the terminal event). */
async function jobEvents(service: string, id: string): Promise<string[]> {
  const controller = new AbortController();
  onTestFinished(() => controller.abort());
  const response = await fetch(`${api.url}/v1/jobs/${service}/${id}/events`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    signal: controller.signal,
  });
  expect(response.status).toBe(200);
  return (await response.text())
    .split('\n')
    .filter((line) => line.startsWith('event: '))
    .map((line) => line.slice('event: '.length));
}

describe('what operators see, on the cluster', () => {
  it(
    'SSE job events, `ferry status`, Bull Board and a metrics scrape cover all 8 services',
    { timeout: 60_000 },
    async () => {
      const producer = await clusterProducer(cluster, prefix);
      const ok = services.filter((s) => s !== broken);
      const jobs = await producer.enqueueMany(
        ok.map((service) => ({ service, operation: 'send', input: {} })),
      );
      for (const job of jobs) {
        expect(await jobEvents(job.service, job.id)).toEqual(['queued', 'active', 'completed']);
      }

      const status = await runFerry(['status', '--json'], { env });
      expect(status.code, status.process.output()).toBe(0);
      const rows = JSON.parse(status.stdout) as { service: string; workers: number; breaker: unknown }[];
      expect(rows.map((row) => row.service)).toEqual(services);
      for (const row of rows) expect(row).toMatchObject({ breaker: { state: 'closed' } });
      await expect
        .poll(
          async () =>
            (JSON.parse((await runFerry(['status', '--json'], { env })).stdout) as typeof rows)
              .filter((row) => row.workers >= 1)
              .map((row) => row.service),
          { timeout: 15_000 },
        )
        .toEqual(ok);
      const human = await runFerry(['status'], { env });
      expect(human.code).toBe(0);
      for (const service of services) expect(human.stdout).toMatch(new RegExp(`^${service}\\s`, 'm'));

      const basic = `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}`;
      const board = await fetch(`${api.url}/admin/queues/api/queues`, { headers: { authorization: basic } });
      expect(board.status).toBe(200);
      const boardQueues = ((await board.json()) as { queues: { name: string }[] }).queues.map((q) => q.name);
      for (const service of services) expect(boardQueues).toContain(serviceQueueName(service));

      const scrape = await api.call('GET', '/metrics');
      expect(scrape.status).toBe(200);
      for (const service of services) expect(scrape.text).toContain(`service="${service}"`);
    },
  );
});

describe('operator commands on the cluster', () => {
  it(
    '`ferry enqueue --wait`, `ferry queues` pause/resume, `ferry breakers` open/close, /v1/status and /v1/queues',
    { timeout: 60_000 },
    async () => {
      const service = services[3]!;
      const enqueued = await runFerry(
        ['enqueue', service, 'send', '--input', '{"via":"cli"}', '--wait', '--json'],
        {
          env,
        },
      );
      expect(enqueued.code, enqueued.process.output()).toBe(0);
      expect(JSON.parse(enqueued.stdout)).toMatchObject({ state: 'completed' });

      const paused = await runFerry(['queues', 'pause', service, '--json'], { env });
      expect(paused.code, paused.process.output()).toBe(0);
      const queues = await api.call('GET', '/v1/queues');
      expect(queues.status, queues.text).toBe(200);
      expect(JSON.stringify(queues.body)).toContain(service);
      const listed = await runFerry(['queues', 'list', '--json'], { env });
      const rows = JSON.parse(listed.stdout) as { service: string; paused: boolean }[];
      expect(rows.map((row) => [row.service, row.paused])).toEqual(services.map((s) => [s, s === service]));
      expect((await runFerry(['queues', 'resume', service], { env })).code).toBe(0);

      const opened = await runFerry(
        ['breakers', 'open', service, '--for', '1h', '--reason', 'cluster test'],
        {
          env,
        },
      );
      expect(opened.code, opened.process.output()).toBe(0);
      const status = await api.call('GET', '/v1/status');
      expect(status.status, status.text).toBe(200);
      expect(JSON.stringify(status.body)).toContain('cluster test');
      const closed = await runFerry(['breakers', 'close', service], { env });
      expect(closed.code, closed.process.output()).toBe(0);
      const breakers = await runFerry(['breakers', 'list', '--json'], { env });
      expect(breakers.code).toBe(0);
      expect(JSON.stringify(JSON.parse(breakers.stdout))).not.toContain('cluster test');
    },
  );
});

describe('breaker, hold and rate limit on the cluster', () => {
  it(
    'a breaker one worker opened holds another worker off the service until its reset timeout',
    { timeout: 60_000 },
    async () => {
      const producer = await clusterProducer(cluster, prefix);
      failing = true;
      const tripper = await startWorker(env, [broken]);
      const first = await producer.enqueueMany(
        Array.from({ length: 4 }, (_, i) => ({ service: broken, operation: 'send', input: { i } })),
      );
      type View = { service: string; state: string; openUntil?: number };
      const breakerView = async (): Promise<View | undefined> =>
        ((await api.call('GET', '/v1/breakers')).body.breakers as View[]).find((b) => b.service === broken);
      await expect.poll(async () => (await breakerView())?.state, { timeout: 20_000 }).toBe('open');
      const openUntil = (await breakerView())!.openUntil!;
      const openAt = Date.now();
      tripper.terminate();
      expect((await tripper.waitForExit(20_000)).code, tripper.output()).toBe(0);

      // A second process learns of the open breaker from Redis: it calls nothing before the breaker's end.
      failing = false;
      const follower = await startWorker(env, [broken]);
      const second = await producer.enqueue({ service: broken, operation: 'send', input: { after: true } });
      for (const job of [...first, second]) {
        expect((await producer.waitFor(broken, job.id, { timeoutMs: 30_000 })).state).toBe('completed');
      }
      const afterOpen = downstream.requests.filter((r) => r.url.startsWith(`/${broken}/`) && r.at >= openAt);
      expect(afterOpen.length).toBeGreaterThanOrEqual(1);
      // One clock (this machine's); 50 ms for the breaker's own timer granularity.
      expect(afterOpen[0]!.at).toBeGreaterThanOrEqual(openUntil - 50);
      follower.terminate();
      expect((await follower.waitForExit(20_000)).code, follower.output()).toBe(0);
    },
  );

  it(
    'a 429 with Retry-After holds one service; the others run on meanwhile',
    { timeout: 60_000 },
    async () => {
      const producer = await clusterProducer(cluster, prefix);
      const heldJob = await producer.enqueue({ service: held, operation: 'send', input: { hold: true } });
      await expect.poll(() => callsTo(held), { timeout: 15_000 }).toBeGreaterThan(0);
      const heldAt = downstream.requests.filter((r) => r.url.startsWith(`/${held}/`)).at(-1)!.at;
      const queued = await producer.enqueue({ service: held, operation: 'send', input: { n: 2 } });
      const others = await producer.enqueueMany(
        services
          .filter((s) => s !== held && s !== broken)
          .map((service) => ({ service, operation: 'send', input: { during: 'hold' } })),
      );
      for (const job of others) {
        expect((await producer.waitFor(job.service, job.id, { timeoutMs: 20_000 })).state).toBe('completed');
      }
      const view = await producer.waitFor(held, heldJob.id, { timeoutMs: 20_000 });
      expect(view.state).toBe('completed');
      expect(view.history.map((a) => [a.outcome, a.status])).toEqual([
        ['held', 429],
        ['completed', 200],
      ]);
      expect((await producer.waitFor(held, queued.id, { timeoutMs: 20_000 })).state).toBe('completed');
      // Nothing was called on the held service during the second it asked for.
      const next = downstream.requests.filter((r) => r.url.startsWith(`/${held}/`) && r.at > heldAt);
      expect(next.length).toBeGreaterThanOrEqual(2);
      expect(next[0]!.at - heldAt).toBeGreaterThanOrEqual(950);
    },
  );

  it('a rate limit (3 per second) holds on the cluster', { timeout: 60_000 }, async () => {
    const producer = await clusterProducer(cluster, prefix);
    const since = Date.now();
    const jobs = await producer.enqueueMany(
      Array.from({ length: 9 }, (_, i) => ({ service: limited, operation: 'send', input: { i } })),
    );
    for (const job of jobs) {
      expect((await producer.waitFor(limited, job.id, { timeoutMs: 30_000 })).state).toBe('completed');
    }
    const calls = downstream.requests.filter((r) => r.url.startsWith(`/${limited}/`) && r.at >= since);
    expect(calls).toHaveLength(9);
    // Nine calls at 3 a second need at least two full windows after the first.
    expect(calls.at(-1)!.at - calls[0]!.at).toBeGreaterThanOrEqual(1_900);
  });
});
