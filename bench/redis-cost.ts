/**
 * What one job costs Redis: Ferry's worker against a bare BullMQ worker, per job kind. Prints Redis commands
 * per job, Redis CPU per job (µs: the redis-server process's CPU time, and INFO commandstats) and bytes stored
 * per job (MEMORY USAGE), with the per-command breakdown of both sides.
 *
 *   npm run bench:redis-cost -- [--jobs 5000] [--concurrency 50] [--rounds 5] [--warmup 1]
 *       [--pin auto|none|<redis cpu>,<bench cpu>] [--kinds first,retried,dead] [--keep]
 *
 * Every run gets its own fresh redis-server (persistence off), so each side's commandstats start at zero:
 * N identical jobs are added with addBulk, `CONFIG RESETSTAT` clears the counters, the side's worker runs
 * until the downstream has given every job its final answer, the worker closes (waiting for its in-flight
 * jobs), and INFO commandstats is read before anything else touches Redis. Nothing polls Redis during a run.
 * Sides alternate (bare, ferry / ferry, bare / …) after a warm-up round that is left out; the summary takes the
 * median of the rounds and, for CPU, the median of the per-round ratios. redis-server and the sides are pinned
 * to different CPUs when there are two (`--pin`): the redis-server process's CPU time (INFO cpu) is then the
 * steady figure. Commandstats' µs are wall-clock time inside each command, which a preempted Redis inflates.
 *
 * Job kinds (one operation each; the in-process downstream answers by path):
 * - `first`: 200 at once (the targets of issue 20 are about this kind).
 * - `retried`: 503 (no Retry-After) to the first two calls of each job, then 200. Ferry retries it by its own
 *   policy (backoff delayMs 1, maxDelayMs 5); bare by BullMQ's `attempts` 5 and exponential backoff of 1 ms.
 * - `dead`: 422 every time. Ferry dead-letters it (ClientError, not retryable); bare throws UnrecoverableError
 *   (its attempts end there) and the job stays in the failed set (kept a week, as Ferry's).
 * See bench/README.md (Redis cost bench) for what is counted and how.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { type Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { Pool } from 'undici';

import { startPrivateRedis } from '../src/cli/redis-server.ts';
import type { JobData } from '../src/core/job.ts';
import { createLogger } from '../src/core/logger.ts';
import { serviceQueueName } from '../src/core/queue-layout.ts';
import { loadServicesFile } from '../src/core/services/load.ts';
import { createEnvSecretResolver } from '../src/secrets/env-provider.ts';
import { createWorkerPool } from '../src/worker/worker-pool.ts';
import { ownProcesses, runBench } from './owned-processes.ts';
import { PAYLOAD } from './payload.ts';
import { median } from './stats.ts';

const SERVICE = 'bench';
const PREFIX = 'bench';
const KINDS = ['first', 'retried', 'dead'] as const;
type Kind = (typeof KINDS)[number];
type Side = 'bare' | 'ferry';
/** The operation (job name) of each kind and the downstream path it calls. */
const PATHS: Record<Kind, string> = { first: '/ok', retried: '/flaky', dead: '/reject' };
/** 503s a `retried` job gets before its 200. */
const FLAKY_FAILURES = 2;
/** Ferry's default retention (WorkerPoolOptions keepCompletedMs / keepFailedMs), given to the bare side too. */
const KEEP_COMPLETED_S = 24 * 60 * 60;
const KEEP_FAILED_S = 7 * 24 * 60 * 60;
/** The bare side's retries: as many attempts as Ferry's, a tiny exponential backoff (Ferry's is tiny too). */
const JOB_OPTIONS = { attempts: 5, backoff: { type: 'exponential', delay: 1 } };

function servicesYaml(concurrency: number): string {
  return [
    '# Written by bench/redis-cost.ts for one run of the Redis cost bench.',
    'services:',
    `  ${SERVICE}:`,
    '    baseUrl: http://127.0.0.1:1  # replaced by FERRY_SERVICE_BENCH_URL',
    '    egress: { allow: [127.0.0.1] }',
    `    concurrency: ${concurrency}`,
    '    retry: { attempts: 5, backoff: { delayMs: 1, maxDelayMs: 5 } }',
    '    # On, but two 503s in three calls must not open it: the retried kind measures retries, not holds.',
    '    breaker: { errorThresholdPercentage: 100 }',
    '    operations:',
    ...KINDS.map((kind) => `      ${kind}: { method: POST, path: ${PATHS[kind]}, body: "{{ input }}" }`),
    '',
  ].join('\n');
}

interface Options {
  jobs: number;
  concurrency: number;
  rounds: number;
  /** Rounds run first and left out of the summary. */
  warmup: number;
  /** How long the downstream takes to answer, ms. */
  latencyMs: number;
  /** CPUs to pin redis-server and this process to (taskset), or none. */
  pin: { redis: number; bench: number } | undefined;
  kinds: Kind[];
  keep: boolean;
}

function readOptions(): Options {
  const { values } = parseArgs({
    options: {
      jobs: { type: 'string', default: '5000' },
      concurrency: { type: 'string', default: '50' },
      rounds: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '1' },
      latency: { type: 'string', default: '0' },
      pin: { type: 'string', default: 'auto' },
      kinds: { type: 'string', default: KINDS.join(',') },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run bench:redis-cost -- [--jobs N] [--concurrency C] [--rounds R] [--warmup W]\n' +
        '         [--pin auto|none|<redis cpu>,<bench cpu>] [--kinds first,retried,dead] [--keep]\n',
    );
    process.exit(0);
  }
  const integer = (name: string, raw: string, min = 1): number => {
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min) usage(`--${name} must be an integer >= ${min} (got ${raw})`);
    return value;
  };
  const pin = values.pin === 'auto' ? autoPin() : values.pin;
  const cpus = pin === 'none' ? undefined : /^(\d+),(\d+)$/.exec(pin);
  if (cpus === null) usage(`--pin takes auto, none or <redis cpu>,<bench cpu> (got ${values.pin})`);
  const kinds = values.kinds.split(',').map((part) => {
    if (!KINDS.includes(part as Kind)) usage(`--kinds takes ${KINDS.join(', ')} (got ${part})`);
    return part as Kind;
  });
  return {
    jobs: integer('jobs', values.jobs),
    concurrency: integer('concurrency', values.concurrency),
    rounds: integer('rounds', values.rounds),
    warmup: integer('warmup', values.warmup, 0),
    latencyMs: integer('latency', values.latency, 0),
    pin: cpus === undefined ? undefined : { redis: Number(cpus[1]), bench: Number(cpus[2]) },
    kinds: [...new Set(kinds)],
    keep: values.keep,
  };
}

function usage(message: string): never {
  process.stderr.write(`redis-cost: ${message}\n`);
  process.exit(2);
}

const owned = ownProcesses('redis-cost', 3_000);

// ---- the downstream, in this process (its CPU is not what is measured) ----

interface Downstream {
  url: string;
  /** Final answers given (200 on /ok and /flaky, 422 on /reject): one per job when a run is done. */
  finals: () => number;
  reset(): void;
  close(): Promise<void>;
}

async function startDownstream(latencyMs: number): Promise<Downstream> {
  let finals = 0;
  let waiter: (() => void) | undefined;
  const calls = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    req.on('end', () => {
      const key = String(req.headers['idempotency-key'] ?? '');
      let status = 200;
      if (req.url === '/reject') status = 422;
      else if (req.url === '/flaky') {
        const seen = calls.get(key) ?? 0;
        calls.set(key, seen + 1);
        if (seen < FLAKY_FAILURES) status = 503;
      }
      const body =
        status === 200
          ? JSON.stringify({ id: `r${finals + 1}`, ok: true, received })
          : JSON.stringify({ error: status === 422 ? 'unprocessable' : 'unavailable' });
      const answer = (): void => {
        res.writeHead(status, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        });
        res.end(body);
        if (status !== 503) finals += 1;
        waiter?.();
      };
      if (latencyMs === 0) answer();
      else setTimeout(answer, latencyMs);
    });
  });
  server.keepAliveTimeout = 120_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('downstream: no address');
  return {
    url: `http://127.0.0.1:${address.port}`,
    finals: () => finals,
    reset() {
      finals = 0;
      calls.clear();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function waitForFinals(downstream: Downstream, jobs: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (downstream.finals() < jobs) {
    if (Date.now() > deadline)
      throw new Error(`only ${downstream.finals()}/${jobs} jobs got their final answer in ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// ---- the two sides ----

interface RunningSide {
  close(): Promise<void>;
}

function startBare(redisUrl: string, downstreamUrl: string, concurrency: number): RunningSide {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const http = new Pool(downstreamUrl, {
    connections: concurrency,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  const processor = async (job: Job<JobData>): Promise<{ status: number; body: unknown }> => {
    const response = await http.request({
      path: PATHS[job.name as Kind],
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'idempotency-key': job.data.idempotencyKey ?? job.id ?? '',
      },
      body: JSON.stringify(job.data.input),
    });
    if (response.statusCode < 200 || response.statusCode >= 300) {
      await response.body.dump();
      const error = `downstream answered ${response.statusCode}`;
      // A 4xx other than 408/425/429 will never succeed: a competent worker does not retry it.
      if (
        response.statusCode >= 400 &&
        response.statusCode < 500 &&
        ![408, 425, 429].includes(response.statusCode)
      )
        throw new UnrecoverableError(error);
      throw new Error(error);
    }
    return { status: response.statusCode, body: await response.body.json() };
  };
  const worker = new Worker<JobData>(serviceQueueName(SERVICE), processor, {
    connection,
    prefix: PREFIX,
    concurrency,
    removeOnComplete: { age: KEEP_COMPLETED_S },
    removeOnFail: { age: KEEP_FAILED_S },
  });
  worker.on('error', (error) => process.stderr.write(`bare worker error: ${String(error)}\n`));
  return {
    async close() {
      await worker.close();
      await http.close();
      connection.disconnect();
    },
  };
}

async function startFerry(
  redisUrl: string,
  downstreamUrl: string,
  servicesFile: string,
): Promise<RunningSide> {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const env = { ...process.env, FERRY_SERVICE_BENCH_URL: downstreamUrl };
  const config = await loadServicesFile(servicesFile, env);
  const pool = createWorkerPool({
    config,
    connection,
    prefix: PREFIX,
    secrets: createEnvSecretResolver(env),
    logger: createLogger({ level: 'silent' }),
  });
  await pool.start();
  return {
    async close() {
      await pool.close({ deadlineMs: 30_000 });
      connection.disconnect();
    },
  };
}

// ---- what the clients send ----

/**
 * Commands this process's clients sent, by name, outside MULTI/EXEC: Redis's commandstats count a command run by
 * a script or a transaction under its own name too, and EVALSHA's and EXEC's time already includes theirs.
 * Counting what was sent tells the top-level share of each name (see topLevelUsec).
 */
const sent = new Map<string, number>();
const inMulti = new WeakSet<object>();

function countSentCommands(): void {
  const proto = Redis.prototype as unknown as {
    sendCommand(this: object, command: { name: string }, ...rest: unknown[]): unknown;
  };
  const original = proto.sendCommand;
  proto.sendCommand = function (this: object, command, ...rest) {
    const name = command.name.toLowerCase();
    if (name === 'multi') inMulti.add(this);
    else if (name === 'exec' || name === 'discard') inMulti.delete(this);
    if (name === 'exec' || name === 'discard' || !inMulti.has(this))
      sent.set(name, (sent.get(name) ?? 0) + 1);
    return original.call(this, command, ...rest);
  };
}

// ---- what Redis says ----

interface CommandStat {
  calls: number;
  usec: number;
}

interface Bytes {
  /** Job hashes (every hash with a `timestamp` field: service queue jobs, dead letters, follow-ups). */
  jobHashes: number;
  /** Job log lists (`<job key>:logs`). */
  logs: number;
  /** The share of the events streams: (bytes / XLEN) × entries ever added (XINFO STREAM entries-added). */
  streams: number;
  /** Every other key (sets of ids, markers, metrics, meta): shown, not in the headline. */
  other: number;
}

interface RunResult {
  side: Side;
  /** Top-level commands sent by the side's clients during the run (countSentCommands). */
  sent: Map<string, number>;
  kind: Kind;
  /** The round (0-based) the run belongs to: its neighbour in time is the other side's run of that round. */
  round: number;
  jobs: number;
  commands: Map<string, CommandStat>;
  /** redis-server's CPU from INFO cpu (user + sys), µs: includes networking, shown beside commandstats. */
  cpuUs: number;
  /** Bytes Redis read from and wrote to its clients during the run (INFO stats, reset with the counters). */
  netBytes: number;
  bytes: Bytes;
  /** Jobs in the service queue's completed and failed sets after the run (a check). */
  completed: number;
  failed: number;
}

async function commandStats(redis: Redis): Promise<Map<string, CommandStat>> {
  const text = await redis.info('commandstats');
  const stats = new Map<string, CommandStat>();
  for (const match of text.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    stats.set(match[1]!, { calls: Number(match[2]), usec: Number(match[3]) });
  }
  return stats;
}

/**
 * `auto`: with two CPUs or more and taskset at hand, redis-server on the last CPU and this process (workers and
 * downstream) on the first. Unpinned, the two take turns on a core and the redis-server process's CPU per job
 * moved by ±15 % between neighbouring runs; pinned, by a few % (bench/README.md § Redis cost bench).
 */
function autoPin(): string {
  const count = availableParallelism();
  if (count < 2) return 'none';
  try {
    execFileSync('taskset', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'none';
  }
  return `${count - 1},0`;
}

/** Pins every thread of a process to one CPU, so redis-server and the workers stop taking turns on a core. */
function pinCpu(pid: number | undefined, cpu: number): void {
  if (pid === undefined) throw new Error('no pid to pin');
  execFileSync('taskset', ['--all-tasks', '--cpu-list', '--pid', String(cpu), String(pid)], {
    stdio: 'ignore',
  });
}

async function redisNetBytes(redis: Redis): Promise<number> {
  const text = await redis.info('stats');
  const field = (name: string): number => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
  return field('total_net_input_bytes') + field('total_net_output_bytes');
}

async function redisCpuUs(redis: Redis): Promise<number> {
  const text = await redis.info('cpu');
  const field = (name: string): number =>
    Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(text)?.[1] ?? NaN);
  return (field('used_cpu_user') + field('used_cpu_sys')) * 1e6;
}

async function measureBytes(redis: Redis): Promise<Bytes> {
  const bytes: Bytes = { jobHashes: 0, logs: 0, streams: 0, other: 0 };
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${PREFIX}:*`, 'COUNT', 1000);
    cursor = next;
    for (const key of keys) {
      const [type, usage] = await Promise.all([
        redis.type(key),
        redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0') as Promise<number | null>,
      ]);
      const size = usage ?? 0;
      if (type === 'stream') {
        const info = (await redis.call('XINFO', 'STREAM', key)) as unknown[];
        const field = (name: string): number => Number(info[info.indexOf(name) + 1]);
        const length = field('length');
        bytes.streams += length === 0 ? 0 : (size / length) * field('entries-added');
      } else if (type === 'list' && key.endsWith(':logs')) bytes.logs += size;
      else if (type === 'hash' && (await redis.hexists(key, 'timestamp')) === 1) bytes.jobHashes += size;
      else bytes.other += size;
    }
  } while (cursor !== '0');
  return bytes;
}

// ---- one run ----

async function run(
  side: Side,
  kind: Kind,
  round: number,
  options: Options,
  downstream: Downstream,
  workDir: string,
  servicesFile: string,
  index: number,
): Promise<RunResult> {
  const redis = await startPrivateRedis({ dir: join(workDir, `redis-${index}`), appendfsync: 'no' });
  owned.redis = redis;
  if (options.pin !== undefined) pinCpu(redis.process.pid, options.pin.redis);
  const probe = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  try {
    const queue = new Queue<JobData>(serviceQueueName(SERVICE), { connection: probe, prefix: PREFIX });
    for (let done = 0; done < options.jobs; done += 1_000) {
      const size = Math.min(1_000, options.jobs - done);
      await queue.addBulk(
        Array.from({ length: size }, () => ({ name: kind, data: { input: PAYLOAD }, opts: JOB_OPTIONS })),
      );
    }
    await queue.close();
    downstream.reset();
    await probe.config('RESETSTAT');
    sent.clear();
    const cpu0 = await redisCpuUs(probe);
    const running =
      side === 'bare'
        ? startBare(redis.url, downstream.url, options.concurrency)
        : await startFerry(redis.url, downstream.url, servicesFile);
    await waitForFinals(downstream, options.jobs, 600_000);
    await running.close();
    const sentByRun = new Map(sent);
    const commands = await commandStats(probe);
    const cpuUs = (await redisCpuUs(probe)) - cpu0;
    const netBytes = await redisNetBytes(probe);
    // The INFO calls themselves are this bench's, not the side's.
    commands.delete('info');
    commands.delete('config|resetstat');
    const queueKey = (suffix: string): string => `${PREFIX}:${serviceQueueName(SERVICE)}:${suffix}`;
    const [completed, failed] = await Promise.all([
      probe.zcard(queueKey('completed')),
      probe.zcard(queueKey('failed')),
    ]);
    const bytes = await measureBytes(probe);
    return {
      side,
      kind,
      round,
      jobs: options.jobs,
      sent: sentByRun,
      commands,
      cpuUs,
      netBytes,
      bytes,
      completed,
      failed,
    };
  } finally {
    probe.disconnect();
    await redis.stop();
    owned.redis = undefined;
  }
}

// ---- output ----

const totalCalls = (r: RunResult): number => sum([...r.commands.values()].map((s) => s.calls));
/**
 * Redis's time in the commands the side sent, from commandstats: a name's µs times the share of its calls that
 * were sent by a client rather than run inside a script or transaction (whose time EVALSHA's, EVAL's and EXEC's
 * already include). Assumes a name costs the same per call in both places.
 */
const totalUsec = (r: RunResult): number =>
  sum(
    [...r.commands].map(([name, stat]) =>
      stat.calls === 0 ? 0 : stat.usec * Math.min(1, (r.sent.get(name) ?? 0) / stat.calls),
    ),
  );
const headlineBytes = (b: Bytes): number => b.jobHashes + b.logs + b.streams;

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function pad(text: string, width: number, left = false): string {
  return left ? text.padEnd(width) : text.padStart(width);
}

function printRun(r: RunResult): void {
  const n = r.jobs;
  process.stdout.write(
    `  ${pad(r.kind, 8, true)}${pad(r.side, 6, true)} cmd/job ${pad((totalCalls(r) / n).toFixed(2), 6)}` +
      `  cmd µs/job ${pad((totalUsec(r) / n).toFixed(1), 6)}  cpu µs/job ${pad((r.cpuUs / n).toFixed(1), 6)}` +
      `  bytes/job ${pad((headlineBytes(r.bytes) / n).toFixed(0), 5)}` +
      `  (completed ${r.completed}, failed ${r.failed})\n`,
  );
}

/**
 * A table row of ferry / bare per round: a round's two runs are neighbours in time and share the machine's
 * state, so their ratio moves less than the ratio of the two sides' medians when the machine drifts.
 */
function roundRatios(
  label: string,
  bare: RunResult[],
  ferry: RunResult[],
  f: (r: RunResult) => number,
): string {
  const ratios: number[] = [];
  for (const b of bare) {
    const fe = ferry.find((r) => r.round === b.round);
    if (fe !== undefined) ratios.push(f(fe) / fe.jobs / (f(b) / b.jobs));
  }
  if (ratios.length === 0) return '';
  const each = ratios.map((r) => r.toFixed(2)).join(', ');
  return `| ${label}: median of per-round ratios [${each}] | | | **${median(ratios).toFixed(2)}×** |\n`;
}

function printSummary(kind: Kind, results: RunResult[], rounds: number): void {
  const of = (side: Side): RunResult[] => results.filter((r) => r.kind === kind && r.side === side);
  const bare = of('bare');
  const ferry = of('ferry');
  const perJob = (rs: RunResult[], f: (r: RunResult) => number): number =>
    median(rs.map((r) => f(r) / r.jobs));
  const row = (label: string, f: (r: RunResult) => number, digits: number): string => {
    const b = perJob(bare, f);
    const fe = perJob(ferry, f);
    return `| ${label} | ${b.toFixed(digits)} | ${fe.toFixed(digits)} | ${(fe / b).toFixed(2)}× (${fe - b >= 0 ? '+' : ''}${(fe - b).toFixed(digits)}) |\n`;
  };
  process.stdout.write(
    `\n### ${kind} (median of ${rounds} alternating rounds, ${bare[0]?.jobs ?? 0} jobs each)\n\n`,
  );
  process.stdout.write(
    '| per job | bare | ferry | ferry / bare (ferry − bare) |\n| --- | --- | --- | --- |\n',
  );
  process.stdout.write(row('Redis commands', totalCalls, 2));
  process.stdout.write(row('Redis CPU µs (commandstats, top-level)', totalUsec, 1));
  process.stdout.write(row('Redis CPU µs (INFO cpu, with networking)', (r) => r.cpuUs, 1));
  process.stdout.write(roundRatios('Redis CPU, commandstats', bare, ferry, totalUsec));
  process.stdout.write(roundRatios('Redis CPU, INFO cpu', bare, ferry, (r) => r.cpuUs));
  process.stdout.write(row('network bytes in + out (INFO stats)', (r) => r.netBytes, 0));
  process.stdout.write(row('bytes: job hash + logs + stream entries', (r) => headlineBytes(r.bytes), 0));
  process.stdout.write(row('  of which job hashes', (r) => r.bytes.jobHashes, 0));
  process.stdout.write(row('  of which job logs', (r) => r.bytes.logs, 0));
  process.stdout.write(row('  of which stream entries', (r) => r.bytes.streams, 0));
  process.stdout.write(row('bytes in other keys (not in the headline)', (r) => r.bytes.other, 0));
  const names = new Set<string>();
  for (const r of [...bare, ...ferry]) for (const name of r.commands.keys()) names.add(name);
  const stat = (rs: RunResult[], name: string, key: keyof CommandStat): number =>
    median(rs.map((r) => (r.commands.get(name)?.[key] ?? 0) / r.jobs));
  const sorted = [...names].sort((a, b) => stat(ferry, b, 'usec') - stat(ferry, a, 'usec'));
  process.stdout.write(
    '\n| command (µs include nested calls) | bare calls/job | ferry calls/job | bare sent/job | ferry sent/job | bare µs/job | ferry µs/job |\n| --- | --- | --- | --- | --- | --- | --- |\n',
  );
  for (const name of sorted) {
    const cells = [
      stat(bare, name, 'calls').toFixed(3),
      stat(ferry, name, 'calls').toFixed(3),
      median(bare.map((r) => (r.sent.get(name) ?? 0) / r.jobs)).toFixed(3),
      median(ferry.map((r) => (r.sent.get(name) ?? 0) / r.jobs)).toFixed(3),
      stat(bare, name, 'usec').toFixed(2),
      stat(ferry, name, 'usec').toFixed(2),
    ];
    if (cells.every((cell) => Number(cell) === 0)) continue;
    process.stdout.write(`| ${name} | ${cells.join(' | ')} |\n`);
  }
}

async function main(): Promise<number> {
  const options = readOptions();
  countSentCommands();
  const workDir = await mkdtemp(join(tmpdir(), 'ferry-redis-cost-'));
  owned.workDir = workDir;
  owned.keepWorkDir = options.keep;
  const servicesFile = join(workDir, 'services.yaml');
  await writeFile(servicesFile, servicesYaml(options.concurrency));
  if (options.pin !== undefined) pinCpu(process.pid, options.pin.bench);
  const downstream = await startDownstream(options.latencyMs);
  process.stdout.write(
    `redis-cost: ${options.jobs} jobs per run, concurrency ${options.concurrency}, ${options.rounds} rounds, ` +
      `${options.warmup} warm-up, downstream latency ${options.latencyMs} ms, kinds ${options.kinds.join(',')}; a fresh redis-server per run` +
      (options.pin === undefined
        ? ', unpinned\n\n'
        : `, redis-server on CPU ${options.pin.redis}, the sides on CPU ${options.pin.bench}\n\n`),
  );
  const results: RunResult[] = [];
  let index = 0;
  try {
    for (const kind of options.kinds) {
      for (let round = -options.warmup; round < options.rounds; round++) {
        const order: Side[] = round % 2 === 0 ? ['bare', 'ferry'] : ['ferry', 'bare'];
        for (const side of order) {
          const result = await run(side, kind, round, options, downstream, workDir, servicesFile, index++);
          const expected = kind === 'dead' ? result.failed : result.completed;
          if (expected !== options.jobs)
            throw new Error(
              `${side} ${kind}: ${result.completed} completed and ${result.failed} failed, expected ${options.jobs} ${kind === 'dead' ? 'failed' : 'completed'}`,
            );
          printRun(result);
          // Warm-up rounds (negative numbers) are printed, not summed: the first runs of a bench are slower.
          if (round >= 0) results.push(result);
        }
      }
    }
  } finally {
    await downstream.close();
  }
  for (const kind of options.kinds) printSummary(kind, results, options.rounds);
  if (options.keep) process.stdout.write(`\nkept ${workDir}\n`);
  return 0;
}

runBench('redis-cost', owned, main);
