/**
 * The sizing facts of docs/production.md, measured on this machine:
 *
 *   npm run bench:sizing -- [--jobs 10000] [--concurrency 50] [--aof-jobs 5000] [--aof-rounds 3]
 *       [--memory-limit MiB]
 *
 * 1. Memory of a worker: RSS of a `ferry worker` process (the compiled CLI, its own process) idle for 5 s after
 *    start, then its peak while it delivers --jobs jobs (1 KiB input) to a local HTTP service answering after
 *    5 ms, at --concurrency calls in flight. RSS is read from /proc/<pid>/status every 100 ms. With
 *    --memory-limit the worker runs in a cgroup with that limit (as in a container, which V8 sizes its heap
 *    by; root only), and the OOM kills in it are printed.
 * 2. Redis memory per job: `used_memory` before and after, divided by the number of jobs: queued (waiting,
 *    enqueued with the Producer, no worker) at three input sizes; completed (kept 24 h, the worker's
 *    default); dead-lettered (the failed source job, kept 7 days, plus its dead letter, kept 30 days).
 * 3. The AOF trade-off: enqueues per second with `appendfsync always` and with `everysec` (each a fresh
 *    private redis-server with AOF on, as docker-compose.yml runs it), one enqueue at a time (latency-bound)
 *    and 32 in flight; rounds alternate between the two, median of --aof-rounds.
 *
 * A bench, not a test: it prints figures and fails only when a run breaks (a job not delivered in time).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { Queue } from 'bullmq';
import { Redis } from 'ioredis';

import { type PrivateRedis, startPrivateRedis } from '../src/cli/redis-server.ts';
import { DEAD_LETTER_QUEUE, serviceQueueName } from '../src/core/queue-layout.ts';
import { Producer } from '../src/producer/index.ts';
import { createMemoryCgroup, type MemoryCgroup } from './memory-cgroup.ts';
import { ownProcesses, runBench } from './owned-processes.ts';
import { PAYLOAD } from './payload.ts';
import { median } from './stats.ts';

const COMPILED = import.meta.url.endsWith('.js');
const FERRY_CLI = fileURLToPath(new URL(`../src/cli/main${COMPILED ? '.js' : '.ts'}`, import.meta.url));
const NODE_ARGS: readonly string[] = COMPILED ? [] : ['--import', 'tsx'];
const SERVICE = 'sizing';
const MiB = 1024 * 1024;

const { values: options } = parseArgs({
  options: {
    jobs: { type: 'string', default: '10000' },
    concurrency: { type: 'string', default: '50' },
    'aof-jobs': { type: 'string', default: '5000' },
    'aof-rounds': { type: 'string', default: '3' },
    'memory-limit': { type: 'string' },
  },
});
const JOBS = Number(options.jobs);
const CONCURRENCY = Number(options.concurrency);
const AOF_JOBS = Number(options['aof-jobs']);
const AOF_ROUNDS = Number(options['aof-rounds']);
/** MiB: run the worker in a cgroup with this memory limit, as a container's (bench/memory-cgroup.ts). */
const MEMORY_LIMIT_MIB = options['memory-limit'] === undefined ? undefined : Number(options['memory-limit']);
if (MEMORY_LIMIT_MIB !== undefined && !(Number.isInteger(MEMORY_LIMIT_MIB) && MEMORY_LIMIT_MIB >= 64)) {
  process.stderr.write(
    `bench:sizing: --memory-limit takes MiB, at least 64 (got ${options['memory-limit']})\n`,
  );
  process.exit(2);
}

/** An input of about `bytes` of JSON: the bench's "create contact" body, padded with a note. */
function inputOf(bytes: number): Record<string, unknown> {
  const base = JSON.stringify(PAYLOAD).length;
  return bytes <= base ? PAYLOAD : { ...PAYLOAD, note: 'x'.repeat(bytes - base - 10) };
}

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

async function usedMemory(client: Redis): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await client.info('memory'))![1]);
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The service every job calls: 200 after 5 ms on /ok, 422 at once on /reject (a dead letter, no retry). */
async function startService(): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const reject = req.url === '/reject';
      const answer = (): void => {
        res.writeHead(reject ? 422 : 200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(reject ? { error: 'invalid' } : { id: 'c1', ok: true }));
      };
      if (reject) answer();
      else setTimeout(answer, 5);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address() as { port: number };
  return { server, url: `http://127.0.0.1:${address.port}` };
}

async function enqueueAll(
  producer: Producer,
  count: number,
  input: unknown,
  operation: string,
): Promise<void> {
  for (let done = 0; done < count; done += 1000) {
    const batch = Array.from({ length: Math.min(1000, count - done) }, () => ({
      service: SERVICE,
      operation,
      input,
    }));
    await producer.enqueueMany(batch);
  }
}

async function jobCount(queue: Queue, ...states: string[]): Promise<number> {
  const counts = await queue.getJobCounts(...(states as never[]));
  return Object.values(counts).reduce((sum, n) => sum + n, 0);
}

const owned = ownProcesses('bench:sizing', 15_000);

async function startWorker(
  redisUrl: string,
  servicesFile: string,
  serviceUrl: string,
  cgroup: MemoryCgroup | undefined,
): Promise<ChildProcess> {
  const argv = [process.execPath, ...NODE_ARGS, FERRY_CLI, 'worker'];
  const { command, args } = cgroup?.wrap(argv) ?? { command: argv[0]!, args: argv.slice(1) };
  const child = owned.track(
    spawn(command, args, {
      env: {
        PATH: process.env.PATH,
        REDIS_URL: redisUrl,
        FERRY_SERVICES: servicesFile,
        FERRY_SERVICE_SIZING_URL: serviceUrl,
        FERRY_METRICS_PORT: '0',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  );
  const lines = createInterface({ input: child.stdout! });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`ferry worker exited (${code}) before it started`)));
    lines.on('line', (line) => {
      if (line.includes('"worker pool started"')) resolve();
    });
  });
  return child;
}

async function stopWorker(child: ChildProcess): Promise<void> {
  child.kill('SIGTERM');
  if (child.exitCode === null) await once(child, 'exit');
}

async function main(): Promise<number> {
  owned.workDir = await mkdtemp(join(tmpdir(), 'ferry-sizing-'));
  const { server, url } = await startService();
  const servicesFile = join(owned.workDir, 'services.yaml');
  await writeFile(
    servicesFile,
    JSON.stringify({
      services: {
        [SERVICE]: {
          baseUrl: 'http://127.0.0.1:1',
          egress: { allow: ['127.0.0.1'] },
          concurrency: CONCURRENCY,
          operations: {
            create: { method: 'POST', path: '/ok', body: '{{ input }}' },
            invalid: { method: 'POST', path: '/reject', body: '{{ input }}' },
          },
        },
      },
    }),
  );
  const say = (line: string): void => {
    process.stdout.write(`${line}\n`);
  };
  say(
    `bench:sizing on ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, jobs ${JOBS}`,
  );

  // ---- 1 + 2: a worker's RSS; Redis memory per queued, completed, dead-lettered job ----
  const redis = await startPrivateRedis({ dir: join(owned.workDir, 'redis'), appendfsync: 'everysec' });
  owned.redis = redis;
  const client = new Redis(redis.url);
  const producer = new Producer({ connection: redis.url });
  const queue = new Queue(serviceQueueName(SERVICE), { connection: client, prefix: 'ferry' });
  const deadLetters = new Queue(DEAD_LETTER_QUEUE, { connection: client, prefix: 'ferry' });

  for (const bytes of [JSON.stringify(PAYLOAD).length, 1024, 4096]) {
    await client.flushall();
    const before = await usedMemory(client);
    await enqueueAll(producer, JOBS, inputOf(bytes), 'create');
    const per = ((await usedMemory(client)) - before) / JOBS;
    say(`redis: ${Math.round(per)} B per queued job (input ${bytes} B of JSON)`);
  }

  await client.flushall();
  const cgroup =
    MEMORY_LIMIT_MIB === undefined
      ? undefined
      : await createMemoryCgroup(`ferry-sizing-${process.pid}`, MEMORY_LIMIT_MIB * MiB);
  if (cgroup !== undefined) say(`worker: in a cgroup limited to ${MEMORY_LIMIT_MIB} MiB (${cgroup.path})`);
  const worker = await startWorker(redis.url, servicesFile, url, cgroup);
  const idle: number[] = [];
  const idleUntil = Date.now() + 5_000;
  while (Date.now() < idleUntil) {
    idle.push(await rssBytes(worker.pid!));
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  say(`worker: ${(median(idle) / MiB).toFixed(0)} MiB RSS idle (median of 5 s after start)`);
  const beforeCompleted = await usedMemory(client);
  let peak = 0;
  const started = Date.now();
  const enqueued = enqueueAll(producer, JOBS, inputOf(1024), 'create');
  await until(
    'completed',
    async () => {
      peak = Math.max(peak, await rssBytes(worker.pid!));
      return (await jobCount(queue, 'completed')) >= JOBS;
    },
    300_000,
  );
  await enqueued;
  const seconds = (Date.now() - started) / 1000;
  say(
    `worker: ${(peak / MiB).toFixed(0)} MiB RSS peak busy (${JOBS} jobs of 1 KiB, concurrency ${CONCURRENCY}, ` +
      `5 ms downstream: ${Math.round(JOBS / seconds)} jobs/s)`,
  );
  say(
    `redis: ${Math.round(((await usedMemory(client)) - beforeCompleted) / JOBS)} B per completed job ` +
      `(kept 24 h; input 1 KiB)`,
  );

  await client.flushall();
  const beforeDead = await usedMemory(client);
  await enqueueAll(producer, JOBS, inputOf(1024), 'invalid');
  await until('dead-lettered', async () => (await jobCount(deadLetters)) >= JOBS, 300_000);
  await until('failed', async () => (await jobCount(queue, 'failed')) >= JOBS, 60_000);
  say(
    `redis: ${Math.round(((await usedMemory(client)) - beforeDead) / JOBS)} B per dead-lettered job ` +
      `(failed job kept 7 d + dead letter kept 30 d; input 1 KiB)`,
  );
  await stopWorker(worker);
  if (cgroup !== undefined) {
    say(`worker: ${await cgroup.oomKills()} OOM kills under the ${MEMORY_LIMIT_MIB} MiB limit`);
    await cgroup.remove();
  }
  await queue.close();
  await deadLetters.close();
  await producer.close();
  client.disconnect();
  await redis.stop();
  owned.redis = undefined;

  // ---- 3: enqueue rate, appendfsync always vs everysec ----
  const rates = new Map<string, number[]>();
  for (let round = 0; round < AOF_ROUNDS; round += 1) {
    const order: ('always' | 'everysec')[] =
      round % 2 === 0 ? ['always', 'everysec'] : ['everysec', 'always'];
    for (const fsync of order) {
      const aof: PrivateRedis = await startPrivateRedis({
        dir: join(owned.workDir, `aof-${fsync}-${round}`),
        appendfsync: fsync,
      });
      owned.redis = aof;
      const aofProducer = new Producer({ connection: aof.url });
      for (const inFlight of [1, 32]) {
        const count = inFlight === 1 ? Math.ceil(AOF_JOBS / 5) : AOF_JOBS;
        let next = 0;
        const t0 = process.hrtime.bigint();
        await Promise.all(
          Array.from({ length: inFlight }, async () => {
            while (next < count) {
              next += 1;
              await aofProducer.enqueue({ service: SERVICE, operation: 'create', input: PAYLOAD });
            }
          }),
        );
        const rate = count / (Number(process.hrtime.bigint() - t0) / 1e9);
        const key = `${fsync} ${inFlight}`;
        rates.set(key, [...(rates.get(key) ?? []), rate]);
      }
      await aofProducer.close();
      await aof.stop();
      owned.redis = undefined;
    }
  }
  for (const inFlight of [1, 32]) {
    const always = median(rates.get(`always ${inFlight}`)!);
    const everysec = median(rates.get(`everysec ${inFlight}`)!);
    say(
      `aof: ${Math.round(always)} enqueues/s with appendfsync always, ${Math.round(everysec)} with everysec ` +
        `(${inFlight} in flight, ~300 B input, median of ${AOF_ROUNDS}; always/everysec ${(always / everysec).toFixed(2)})`,
    );
  }
  server.close();
  return 0;
}

runBench('bench:sizing', owned, main);
