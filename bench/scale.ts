/**
 * Scale-out: jobs/s of 1, 2 and 4 `ferry worker` processes at 50 ms downstream latency, on one Redis and on a
 * 3-master Redis Cluster, with what each job costs Redis (CPU, commands) and each worker (RSS, CPU).
 *
 *   npm run bench:scale [-- --quick] [-- --rounds 3 --processes 1,2,4 --setups single,cluster --concurrency 2 --window 10]
 *
 * - 8 services (`svc-…`, chosen so their queues `{svc-…}` land on all three masters of the cluster; the same
 *   names on one Redis), each `concurrency` calls in flight per worker process (fixed, default 2: 16 per
 *   process), all calling one downstream (bench/downstream.ts, its own process) that answers after 50 ms.
 * - Workers: the compiled CLI (`node .bench-build/src/cli/main.js worker`, what `dist/` runs), real processes,
 *   LOG_LEVEL info to a file each, REDIS_URL or REDIS_CLUSTER_NODES.
 * - Feed: the bench keeps every service's waiting list topped up to `concurrency × processes` jobs (checked
 *   every 20 ms with LLEN, topped up with `Producer.enqueueMany`), so the workers never wait for work and the
 *   queue stays short: jobs/s is the workers' throughput, and the latency from enqueue to completion is about
 *   one queue's wait plus the call.
 * - Timed: a window of `--window` s after `--warmup` s of steady load. jobs = completed-set growth over the
 *   window; latency = finishedOn - timestamp of the jobs finished in the window (job hashes); Redis CPU =
 *   INFO cpu used_cpu_sys + used_cpu_user delta, summed over masters; Redis commands = INFO commandstats
 *   delta, summed over masters (commands run by Lua scripts count; the bench's own LLEN polls and INFO calls
 *   are taken out); worker RSS = /proc/<pid>/status VmRSS sampled every 500 ms; worker CPU from /proc/<pid>/stat.
 * - Then one redis-server core's rate for simple commands with redis-benchmark, and the estimate
 *   "jobs/s per Redis core ~= ops/s per core / ops per job" next to 1 s / Redis CPU per job.
 *
 * A bench, not a test: it prints figures; it exits 1 only when a run breaks or with --min-ratio when the
 * 2-process run is below that ratio of the 1-process one.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';

import { Redis } from 'ioredis';

import { startPrivateRedis } from '../src/cli/redis-server.ts';
import { serviceQueueName } from '../src/core/queue-layout.ts';
import { createRedisConnection, type RedisClient, waitUntilReady } from '../src/core/redis.ts';
import { Producer } from '../src/producer/index.ts';
import {
  launchRedisCluster,
  servicesOnEveryMaster,
  type TestCluster,
} from '../test/helpers/redis-cluster-core.ts';
import { ownProcesses, readPrintedPort, runBench } from './owned-processes.ts';
import { PAYLOAD } from './payload.ts';
import { median } from './stats.ts';

const COMPILED = import.meta.url.endsWith('.js');
const EXT = COMPILED ? '.js' : '.ts';
const NODE_ARGS: readonly string[] = COMPILED ? [] : ['--import', 'tsx'];
const FERRY_CLI = fileURLToPath(new URL(`../src/cli/main${EXT}`, import.meta.url));
const DOWNSTREAM_FILE = fileURLToPath(new URL(`./downstream${EXT}`, import.meta.url));
const PREFIX = 'ferry';
const SERVICES = 8;
const LATENCY_MS = 50;
const POLL_MS = 20;
const MiB = 1024 * 1024;
const CLOCK_TICKS_PER_S = 100;

const { values: options } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    processes: { type: 'string', default: '1,2,4' },
    setups: { type: 'string', default: 'single,cluster' },
    concurrency: { type: 'string', default: '2' },
    window: { type: 'string' },
    warmup: { type: 'string' },
    'bench-requests': { type: 'string' },
    'min-ratio': { type: 'string' },
    rounds: { type: 'string', default: '1' },
    keep: { type: 'boolean', default: false },
  },
});
const QUICK = options.quick;
const PROCESSES = options.processes.split(',').map(Number);
const SETUPS = options.setups.split(',') as ('single' | 'cluster')[];
const CONCURRENCY = Number(options.concurrency);
const WINDOW_S = Number(options.window ?? (QUICK ? 4 : 10));
const WARMUP_S = Number(options.warmup ?? (QUICK ? 1.5 : 3));
const BENCH_REQUESTS = Number(options['bench-requests'] ?? (QUICK ? 50_000 : 200_000));
const ROUNDS = Number(options.rounds);
const MIN_RATIO = options['min-ratio'] === undefined ? undefined : Number(options['min-ratio']);
if (
  PROCESSES.some((n) => !Number.isInteger(n) || n < 1) ||
  !Number.isInteger(ROUNDS) ||
  ROUNDS < 1 ||
  SETUPS.some((setup) => setup !== 'single' && setup !== 'cluster') ||
  ![CONCURRENCY, WINDOW_S, WARMUP_S, BENCH_REQUESTS].every((n) => Number.isFinite(n) && n > 0) ||
  (MIN_RATIO !== undefined && !(MIN_RATIO > 0))
) {
  process.stderr.write('bench:scale: bad options (see the header of bench/scale.ts)\n');
  process.exit(2);
}

const owned = ownProcesses('bench:scale', 15_000);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const say = (line = ''): void => {
  process.stdout.write(`${line}\n`);
};

// ---- /proc and INFO readers ----

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

/** CPU seconds (user + system) of a process so far. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
}

interface RedisSnapshot {
  cpuS: number;
  calls: Map<string, number>;
}

async function snapshot(masters: readonly Redis[]): Promise<RedisSnapshot> {
  const calls = new Map<string, number>();
  let cpuS = 0;
  for (const master of masters) {
    const info = await master.info('all');
    cpuS += Number(/used_cpu_sys:([\d.]+)/.exec(info)![1]) + Number(/used_cpu_user:([\d.]+)/.exec(info)![1]);
    for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
      calls.set(match[1]!, (calls.get(match[1]!) ?? 0) + Number(match[2]));
    }
  }
  return { cpuS, calls };
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

// ---- the pieces ----

async function startDownstream(): Promise<string> {
  const child = owned.track(
    spawn(process.execPath, [...NODE_ARGS, DOWNSTREAM_FILE, '--latency', String(LATENCY_MS)], {
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    }),
  );
  const port = await readPrintedPort(child, 'downstream');
  return `http://127.0.0.1:${port}`;
}

interface Target {
  name: 'single' | 'cluster';
  /** REDIS_URL or REDIS_CLUSTER_NODES for the workers. */
  env: Record<string, string>;
  /** A client that follows the cluster (or the one Redis): the bench's own reads and the Producer. */
  client: RedisClient;
  masters: Redis[];
}

interface Worker {
  pid: number;
  exited: Promise<void>;
  stop(): void;
}

async function startWorker(target: Target, servicesFile: string, logFile: string): Promise<Worker> {
  const log = await open(logFile, 'a');
  const child = owned.track(
    spawn(process.execPath, [...NODE_ARGS, FERRY_CLI, 'worker'], {
      env: {
        PATH: process.env.PATH,
        ...target.env,
        FERRY_SERVICES: servicesFile,
        FERRY_METRICS_PORT: '0',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', log.fd, log.fd],
    }),
  );
  await log.close();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  const deadline = Date.now() + 60_000;
  while (!(await readFile(logFile, 'utf8')).includes('"worker pool started"')) {
    if (gone) throw new Error(`ferry worker exited before it started; see ${logFile}`);
    if (Date.now() > deadline) throw new Error(`ferry worker did not start within 60 s; see ${logFile}`);
    await sleep(50);
  }
  return { pid: child.pid!, exited, stop: () => child.kill('SIGTERM') };
}

/** Keeps every service's waiting list at `depth` jobs until stopped; counts its own LLEN calls. */
function startFeeder(
  client: RedisClient,
  producer: Producer,
  services: readonly string[],
  depth: number,
): { stop(): Promise<void>; polls(): number; enqueued(): number } {
  let running = true;
  let polls = 0;
  let enqueued = 0;
  const loops = services.map(async (service) => {
    const wait = `${PREFIX}:${serviceQueueName(service)}:wait`;
    while (running) {
      polls += 1;
      const waiting = await client.llen(wait);
      const missing = depth - waiting;
      if (missing > 0) {
        await producer.enqueueMany(
          Array.from({ length: missing }, () => ({ service, operation: 'create', input: PAYLOAD })),
        );
        enqueued += missing;
      }
      await sleep(POLL_MS);
    }
  });
  return {
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
    polls: () => polls,
    enqueued: () => enqueued,
  };
}

async function completedCount(client: RedisClient, services: readonly string[]): Promise<number> {
  let total = 0;
  for (const service of services)
    total += await client.zcard(`${PREFIX}:${serviceQueueName(service)}:completed`);
  return total;
}

/** Enqueue-to-completion latencies (ms) of the jobs finished in [from, to]. */
async function latencies(
  client: RedisClient,
  services: readonly string[],
  from: number,
  to: number,
): Promise<number[]> {
  const out: number[] = [];
  for (const service of services) {
    const base = `${PREFIX}:${serviceQueueName(service)}`;
    const ids = await client.zrangebyscore(`${base}:completed`, from, to);
    for (let at = 0; at < ids.length; at += 500) {
      const pipeline = client.pipeline();
      for (const id of ids.slice(at, at + 500)) pipeline.hmget(`${base}:${id}`, 'timestamp', 'finishedOn');
      for (const [error, fields] of (await pipeline.exec()) ?? []) {
        const [timestamp, finishedOn] = (fields ?? []) as (string | null)[];
        if (error === null && timestamp != null && finishedOn != null)
          out.push(Number(finishedOn) - Number(timestamp));
      }
    }
  }
  return out.sort((a, b) => a - b);
}

interface RunResult {
  setup: string;
  processes: number;
  jobs: number;
  seconds: number;
  jobsPerS: number;
  p50: number;
  p99: number;
  redisCpuUsPerJob: number;
  opsPerJob: number;
  opsByCommand: Map<string, number>;
  /** With `monitor`: commands per job sent by clients (round trips, a pipeline's commands count one each) and run by Lua scripts. */
  sent?: number;
  inLua?: number;
  workerCpuUsPerJob: number;
  rssMiB: number;
  rssPeakMiB: number;
  load: number;
}

async function runOnce(
  target: Target,
  services: readonly string[],
  servicesFile: string,
  processes: number,
  runDir: string,
  monitorUrl?: string,
): Promise<RunResult> {
  for (const master of target.masters) await master.flushall();
  await mkdir(runDir, { recursive: true });
  const workers: Worker[] = [];
  const producer = new Producer({ connection: target.client });
  let feeder: ReturnType<typeof startFeeder> | undefined;
  let monitor: Redis | undefined;
  let monitorBase: Redis | undefined;
  const counted = { on: false, sent: 0, inLua: 0, polls: 0 };
  try {
    if (monitorUrl !== undefined) {
      monitorBase = new Redis(monitorUrl);
      monitor = await monitorBase.monitor(); // a connection of its own
      monitor.on('monitor', (_time: string, args: string[], source: string) => {
        if (!counted.on) return;
        const command = String(args[0]).toLowerCase();
        if (source === 'lua') counted.inLua += 1;
        else if (command === 'info') return;
        else if (command === 'llen') counted.polls += 1;
        else counted.sent += 1;
      });
    }
    for (let index = 0; index < processes; index++)
      workers.push(await startWorker(target, servicesFile, join(runDir, `worker-${index + 1}.log`)));
    feeder = startFeeder(target.client, producer, services, CONCURRENCY * processes);
    await sleep(WARMUP_S * 1000);

    const polls0 = feeder.polls();
    const completed0 = await completedCount(target.client, services);
    const cpu0 = await Promise.all(workers.map((worker) => cpuSeconds(worker.pid)));
    const redis0 = await snapshot(target.masters);
    const t0 = Date.now();
    counted.on = true;
    const rss: number[] = [];
    let rssPeak = 0;
    while (Date.now() - t0 < WINDOW_S * 1000) {
      for (const worker of workers) {
        const bytes = await rssBytes(worker.pid);
        rss.push(bytes);
        rssPeak = Math.max(rssPeak, bytes);
      }
      await sleep(Math.min(500, Math.max(0, WINDOW_S * 1000 - (Date.now() - t0))));
    }
    const redis1 = await snapshot(target.masters);
    const t1 = Date.now();
    counted.on = false;
    const cpu1 = await Promise.all(workers.map((worker) => cpuSeconds(worker.pid)));
    const completed1 = await completedCount(target.client, services);
    const polls = feeder.polls() - polls0;
    await feeder.stop();
    feeder = undefined;

    const jobs = completed1 - completed0;
    if (jobs <= 0) throw new Error(`${target.name}, ${processes} processes: no job completed in the window`);
    const seconds = (t1 - t0) / 1000;
    const times = await latencies(target.client, services, t0, t1);
    const opsByCommand = new Map<string, number>();
    for (const [command, calls] of redis1.calls) {
      // INFO is the bench's own snapshot; LLEN the feeder's polls (any LLEN a script runs stays counted).
      if (command === 'info') continue;
      const own = command === 'llen' ? polls : 0;
      const delta = calls - (redis0.calls.get(command) ?? 0) - own;
      if (delta > 0) opsByCommand.set(command, delta / jobs);
    }
    const workerCpu = cpu1.reduce((sum, value, index) => sum + value - cpu0[index]!, 0);
    return {
      setup: target.name,
      processes,
      jobs,
      seconds,
      jobsPerS: jobs / seconds,
      p50: percentile(times, 50),
      p99: percentile(times, 99),
      redisCpuUsPerJob: ((redis1.cpuS - redis0.cpuS) * 1e6) / jobs,
      opsPerJob: [...opsByCommand.values()].reduce((sum, value) => sum + value, 0),
      opsByCommand,
      workerCpuUsPerJob: (workerCpu * 1e6) / jobs,
      rssMiB: rss.reduce((sum, value) => sum + value, 0) / rss.length / MiB,
      rssPeakMiB: rssPeak / MiB,
      ...(monitor === undefined ? {} : { sent: counted.sent / jobs, inLua: counted.inLua / jobs }),
      load: loadavg()[0]!,
    };
  } finally {
    await feeder?.stop();
    monitor?.disconnect();
    monitorBase?.disconnect();
    for (const worker of workers) worker.stop();
    await Promise.all(workers.map((worker) => worker.exited));
    await producer.close();
  }
}

// ---- redis-benchmark: what one Redis core sustains ----

const BENCH_TESTS = 'set,get,incr,lpush,rpop,sadd,hset,zadd';
/** Ten commands in one script, as most of a job's commands run (inside BullMQ's Lua scripts). */
const BENCH_SCRIPT = [
  "redis.call('INCR', KEYS[1])",
  "redis.call('HSET', KEYS[2], 'f', ARGV[1])",
  "redis.call('HGET', KEYS[2], 'f')",
  "redis.call('ZADD', KEYS[3], ARGV[1], ARGV[1])",
  "redis.call('ZCARD', KEYS[3])",
  "redis.call('LPUSH', KEYS[4], ARGV[1])",
  "redis.call('LTRIM', KEYS[4], 0, 99)",
  "redis.call('EXISTS', KEYS[1])",
  "redis.call('SET', KEYS[5], ARGV[1])",
  "redis.call('GET', KEYS[5])",
  'return 1',
].join(' ');
const SCRIPT_COMMANDS = 10;

interface BenchRates {
  /** Top-level commands per second, one per round trip, by test. */
  simple: Map<string, number>;
  /** EVALSHA calls per second of BENCH_SCRIPT. */
  scriptCalls: number;
  /** The same per second of redis-server CPU (INFO cpu delta): what one core sustains, whatever else runs. */
  simplePerCpuS: number;
  scriptCallsPerCpuS: number;
}

async function redisBenchmark(dir: string): Promise<BenchRates> {
  const server = await startPrivateRedis({ dir, appendfsync: 'no' });
  owned.redis = server;
  const client = new Redis(server.url);
  const exec = promisify(execFile);
  const common = [
    '-h',
    '127.0.0.1',
    '-p',
    String(server.port),
    '-q',
    '-n',
    String(BENCH_REQUESTS),
    '-c',
    '50',
  ];
  const rateOf = (stdout: string): Map<string, number> => {
    const rates = new Map<string, number>();
    // Lines look like `SET: 81234.56 requests per second, p50=0.303 msec` (with \r progress before them).
    for (const match of stdout.matchAll(/(?:^|\r|\n)([^\r\n:]+): ([\d.]+) requests per second/g))
      rates.set(match[1]!.trim(), Number(match[2]));
    if (rates.size === 0) throw new Error(`redis-benchmark printed no rates:\n${stdout}`);
    return rates;
  };
  const cpu = async (): Promise<number> => (await snapshot([client])).cpuS;
  try {
    const cpu0 = await cpu();
    const simple = rateOf(
      (await exec('redis-benchmark', [...common, '-t', BENCH_TESTS], { timeout: 300_000 })).stdout,
    );
    const cpu1 = await cpu();
    const sha = String(await client.script('LOAD', BENCH_SCRIPT));
    const cpu2 = await cpu();
    const script = rateOf(
      (
        await exec(
          'redis-benchmark',
          [...common, '-r', '100000', 'EVALSHA', sha, '5', 'b1', 'b2', 'b3', 'b4', 'b5', '__rand_int__'],
          { timeout: 300_000 },
        )
      ).stdout,
    );
    const cpu3 = await cpu();
    return {
      simple,
      scriptCalls: [...script.values()][0]!,
      simplePerCpuS: (BENCH_REQUESTS * simple.size) / (cpu1 - cpu0),
      scriptCallsPerCpuS: BENCH_REQUESTS / (cpu3 - cpu2),
    };
  } finally {
    client.disconnect();
    await server.stop();
    owned.redis = undefined;
  }
}

// ---- output ----

function pad(cells: readonly string[], widths: readonly number[]): string {
  return `| ${cells.map((cell, index) => cell.padEnd(widths[index]!)).join(' | ')} |`;
}

function table(header: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = header.map((cell, index) => Math.max(cell.length, ...rows.map((row) => row[index]!.length)));
  say(pad(header, widths));
  say(`| ${widths.map((width) => '-'.repeat(width)).join(' | ')} |`);
  for (const row of rows) say(pad(row, widths));
}

async function main(): Promise<number> {
  owned.workDir = await mkdtemp(join(tmpdir(), 'ferry-scale-'));
  owned.keepWorkDir = options.keep;
  const started = Date.now();
  say(
    `bench:scale on ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, ` +
      `${new Date().toISOString()}, load average ${loadavg()
        .map((value) => value.toFixed(2))
        .join(' ')}`,
  );
  say(
    `${SERVICES} services × concurrency ${CONCURRENCY} = ${SERVICES * CONCURRENCY} calls in flight per worker ` +
      `process; downstream answers after ${LATENCY_MS} ms (own process); each queue kept topped up to ` +
      `concurrency × processes waiting jobs; ${WARMUP_S} s warm-up, ${WINDOW_S} s window per run, ${ROUNDS} round(s) (medians)`,
  );
  const downstreamUrl = await startDownstream();

  // The cluster decides the service names (queues on all three masters); one Redis uses the same ones.
  let cluster: TestCluster | undefined;
  let services: string[];
  if (SETUPS.includes('cluster')) {
    cluster = await launchRedisCluster(join(owned.workDir, 'cluster'));
    services = await servicesOnEveryMaster(cluster, SERVICES);
  } else {
    services = Array.from({ length: SERVICES }, (_, index) => `svc-${index}`);
  }
  const servicesFile = join(owned.workDir, 'services.json');
  await writeFile(
    servicesFile,
    JSON.stringify({
      services: Object.fromEntries(
        services.map((name) => [
          name,
          {
            baseUrl: downstreamUrl,
            egress: { allow: ['127.0.0.1'] },
            concurrency: CONCURRENCY,
            operations: { create: { method: 'POST', path: '/things', body: '{{ input }}' } },
          },
        ]),
      ),
    }),
  );

  /** Every run, in order, with its round. */
  const runs: { round: number; result: RunResult }[] = [];
  const idleCpu = new Map<string, number>();
  let monitored: RunResult | undefined;
  try {
    for (const setup of SETUPS) {
      let target: Target;
      let close: () => Promise<void>;
      if (setup === 'single') {
        const redis = await startPrivateRedis({ dir: join(owned.workDir, 'redis'), appendfsync: 'no' });
        owned.redis = redis;
        const client = createRedisConnection({ url: redis.url }, 'producer', 'bench-scale');
        const master = new Redis(redis.url);
        await waitUntilReady(client);
        target = { name: setup, env: { REDIS_URL: redis.url }, client, masters: [master] };
        close = async () => {
          client.disconnect();
          master.disconnect();
          await redis.stop();
          owned.redis = undefined;
        };
      } else {
        const seeds = cluster!.seeds.split(',');
        const client = createRedisConnection({ clusterNodes: seeds }, 'producer', 'bench-scale');
        await waitUntilReady(client, 30_000);
        target = {
          name: setup,
          env: { REDIS_CLUSTER_NODES: cluster!.seeds },
          client,
          masters: await mastersOf(cluster!),
        };
        close = async () => {
          client.disconnect();
          await cluster!.stop();
          cluster = undefined;
        };
      }
      try {
        // What Redis spends with nothing to do (serverCron, the cluster bus): part of every run's CPU per job.
        const idle0 = await snapshot(target.masters);
        const idleStart = Date.now();
        await sleep(2_000);
        const idle1 = await snapshot(target.masters);
        idleCpu.set(setup, ((idle1.cpuS - idle0.cpuS) * 1000) / ((Date.now() - idleStart) / 1000));
        // Rounds alternate the order (1, 2, 4 / 4, 2, 1) so the machine's drift does not favour one count.
        for (let round = 1; round <= ROUNDS; round++) {
          const order = round % 2 === 1 ? PROCESSES : [...PROCESSES].reverse();
          for (const processes of order) {
            const result = await runOnce(
              target,
              services,
              servicesFile,
              processes,
              join(owned.workDir, `${setup}-${processes}-${round}`),
            );
            runs.push({ round, result });
            say(
              `  ${setup}, round ${round}, ${processes} process(es): ${result.jobsPerS.toFixed(0)} jobs/s ` +
                `(${result.jobs} jobs in ${result.seconds.toFixed(1)} s, load ${result.load.toFixed(2)})`,
            );
          }
        }
        if (setup === 'single') {
          // One more 1-process run under MONITOR (not in the table: MONITOR costs Redis CPU): which commands
          // clients send and which Lua scripts run.
          monitored = await runOnce(
            target,
            services,
            servicesFile,
            1,
            join(owned.workDir, 'single-monitor'),
            target.env.REDIS_URL,
          );
        }
      } finally {
        await close();
      }
    }
  } finally {
    await cluster?.stop();
  }

  // One row per setup and process count: the median of each figure over the rounds.
  const results: RunResult[] = [];
  for (const setup of SETUPS) {
    for (const processes of PROCESSES) {
      const of = runs
        .map((run) => run.result)
        .filter((result) => result.setup === setup && result.processes === processes);
      if (of.length === 0) continue;
      const mid = (pick: (result: RunResult) => number): number => median(of.map(pick));
      results.push({
        ...of[0]!,
        jobs: mid((result) => result.jobs),
        seconds: mid((result) => result.seconds),
        jobsPerS: mid((result) => result.jobsPerS),
        p50: mid((result) => result.p50),
        p99: mid((result) => result.p99),
        redisCpuUsPerJob: mid((result) => result.redisCpuUsPerJob),
        opsPerJob: mid((result) => result.opsPerJob),
        workerCpuUsPerJob: mid((result) => result.workerCpuUsPerJob),
        rssMiB: mid((result) => result.rssMiB),
        rssPeakMiB: Math.max(...of.map((result) => result.rssPeakMiB)),
        load: mid((result) => result.load),
      });
    }
  }

  say();
  say(
    `Throughput at ${LATENCY_MS} ms downstream latency (concurrency ${SERVICES * CONCURRENCY} per process)`,
  );
  say();
  const oneProcess = (setup: string): RunResult | undefined =>
    results.find((result) => result.setup === setup && result.processes === 1);
  table(
    [
      'setup',
      'procs',
      'jobs/s',
      'ratio vs 1',
      'p50 ms',
      'p99 ms',
      'redis CPU µs/job',
      'redis cmds/job',
      'worker CPU µs/job',
      'worker RSS MiB (peak)',
    ],
    results.map((result) => {
      const base = oneProcess(result.setup);
      return [
        result.setup === 'single' ? 'one Redis' : 'cluster, 3 masters',
        String(result.processes),
        result.jobsPerS.toFixed(0),
        base === undefined ? '-' : `${(result.jobsPerS / base.jobsPerS).toFixed(2)}x`,
        result.p50.toFixed(0),
        result.p99.toFixed(0),
        result.redisCpuUsPerJob.toFixed(0),
        result.opsPerJob.toFixed(1),
        result.workerCpuUsPerJob.toFixed(0),
        `${result.rssMiB.toFixed(0)} (${result.rssPeakMiB.toFixed(0)})`,
      ];
    }),
  );
  say();
  say(
    `The ceiling of one process is ${SERVICES * CONCURRENCY} in flight / ${LATENCY_MS} ms = ` +
      `${((SERVICES * CONCURRENCY * 1000) / LATENCY_MS).toFixed(0)} jobs/s. This machine has ${cpus().length} ` +
      'cores shared by the workers, Redis, the downstream, the feeder and other work: the figures show the cost ' +
      'per job and the trend, not capacity.',
  );

  // Redis commands per job, split by command, for each setup's 1-process run.
  for (const setup of SETUPS) {
    const base = oneProcess(setup) ?? results.find((result) => result.setup === setup);
    if (base === undefined) continue;
    say();
    say(
      `Redis commands per job, ${setup === 'single' ? 'one Redis' : 'cluster (summed over masters)'}, ` +
        `${base.processes} process(es): INFO commandstats delta / jobs, enqueue (Producer.enqueueMany) included; ` +
        'commands run inside Lua scripts count on their own line',
    );
    say();
    const split = [...base.opsByCommand.entries()].sort((a, b) => b[1] - a[1]);
    table(
      ['command', 'calls/job'],
      [
        ...split
          .filter(([, perJob]) => perJob >= 0.05)
          .map(([command, perJob]) => [command, perJob.toFixed(2)]),
        [
          '(others)',
          split
            .filter(([, perJob]) => perJob < 0.05)
            .reduce((sum, [, perJob]) => sum + perJob, 0)
            .toFixed(2),
        ],
        ['total', base.opsPerJob.toFixed(1)],
      ],
    );
  }

  say();
  const rates = await redisBenchmark(join(owned.workDir, 'redis-benchmark'));
  const sortedRates = [...rates.simple.values()].sort((a, b) => a - b);
  const wallMedian = sortedRates[Math.floor(sortedRates.length / 2)]!;
  const perCore = rates.simplePerCpuS;
  const inScript = rates.scriptCallsPerCpuS * SCRIPT_COMMANDS;
  say(
    `redis-benchmark -q -n ${BENCH_REQUESTS} -c 50 -t ${BENCH_TESTS} (one redis-server, no pipelining): ` +
      [...rates.simple.entries()].map(([command, rate]) => `${command} ${rate.toFixed(0)}`).join(', ') +
      ` ops/s (median ${wallMedian.toFixed(0)}); per second of redis-server CPU: ${perCore.toFixed(0)} ops`,
  );
  say(
    `redis-benchmark EVALSHA of a script running ${SCRIPT_COMMANDS} commands (INCR, HSET, HGET, ZADD, ZCARD, ` +
      `LPUSH, LTRIM, EXISTS, SET, GET): ${rates.scriptCalls.toFixed(0)} calls/s; per second of redis-server CPU: ` +
      `${rates.scriptCallsPerCpuS.toFixed(0)} calls = ${inScript.toFixed(0)} commands run inside Lua`,
  );
  const single = oneProcess('single') ?? results[0];
  if (single !== undefined) {
    say(
      `Expected jobs/s per Redis core ~= ops/s per core / ops per job = ${perCore.toFixed(0)} / ` +
        `${single.opsPerJob.toFixed(1)} ~= ${(perCore / single.opsPerJob).toFixed(0)} jobs/s counting every ` +
        `command as a round trip (a floor); ${inScript.toFixed(0)} / ${single.opsPerJob.toFixed(1)} ~= ` +
        `${(inScript / single.opsPerJob).toFixed(0)} jobs/s counting all as run inside Lua (a ceiling)`,
    );
  }
  if (monitored?.sent !== undefined && monitored.inLua !== undefined) {
    const sent = monitored.sent;
    const inLua = monitored.inLua;
    const estimate = 1 / (sent / perCore + inLua / inScript);
    say(
      `MONITOR, one Redis, 1 process (${monitored.jobs} jobs): ${sent.toFixed(1)} commands per job sent by clients ` +
        `(the feeder's LLEN polls left out), ${inLua.toFixed(1)} run inside Lua scripts; so ` +
        `1 / (${sent.toFixed(1)} / ${perCore.toFixed(0)} + ${inLua.toFixed(1)} / ${inScript.toFixed(0)}) ` +
        `~= ${estimate.toFixed(0)} jobs/s per Redis core`,
    );
  }
  if (single !== undefined) {
    say(
      `Measured here: Redis CPU ${single.redisCpuUsPerJob.toFixed(0)} µs per job (one Redis, 1 process) ~= ` +
        `${(1e6 / single.redisCpuUsPerJob).toFixed(0)} jobs/s per Redis core`,
    );
  }
  for (const [setup, idle] of idleCpu)
    say(`Redis idle CPU, ${setup} (no worker, no feeder; summed over masters): ${idle.toFixed(1)} ms per s`);
  say(`bench:scale done in ${((Date.now() - started) / 1000).toFixed(0)} s`);

  let code = 0;
  for (const setup of SETUPS) {
    const one = oneProcess(setup);
    const two = results.find((result) => result.setup === setup && result.processes === 2);
    if (one === undefined || two === undefined) continue;
    const ratio = two.jobsPerS / one.jobsPerS;
    const perRound = Array.from({ length: ROUNDS }, (_, index) => {
      const find = (processes: number): RunResult | undefined =>
        runs.find(
          (run) =>
            run.round === index + 1 && run.result.setup === setup && run.result.processes === processes,
        )?.result;
      return find(2)!.jobsPerS / find(1)!.jobsPerS;
    });
    say(
      `${setup}: 2 processes / 1 process = ${ratio.toFixed(2)}x` +
        (ROUNDS > 1 ? ` (medians; per round ${perRound.map((value) => value.toFixed(2)).join(', ')})` : ''),
    );
    if (MIN_RATIO !== undefined && ratio < MIN_RATIO) code = 1;
  }
  return code;
}

runBench('bench:scale', owned, main);

/** Plain clients to the nodes that are masters now: their INFO is the cluster's Redis cost. */
async function mastersOf(cluster: TestCluster): Promise<Redis[]> {
  const masters = new Set(
    (await cluster.view()).filter((node) => node.role === 'master').map((node) => node.address),
  );
  return cluster.nodes.filter((node) => masters.has(node.address)).map((node) => node.client);
}
