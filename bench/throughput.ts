/**
 * Ferry's worker vs a hand-rolled BullMQ + undici worker: the same N jobs, payload, concurrency, downstream
 * process and Redis, in one run. Prints jobs/s per side, the ratio ferry/bare and each side's peak RSS.
 *
 *   npm run bench:throughput -- [--jobs 10000] [--concurrency 50] [--latency 0,50] [--rounds 4]
 *       [--sides bare,ferry[,ferry-silent]] [--timeout 600] [--cpu-prof <dir>] [--min-ratio 0.9] [--keep]
 *
 * Layout: this process starts a private redis-server (temp dir, persistence off, the same for both sides) and,
 * per latency, the downstream (bench/downstream.ts) in its own process. Each run preloads N identical jobs with
 * addBulk on a fresh prefix, then starts bench/throughput-worker.ts in a fresh process that times one side from
 * worker start until all N jobs are completed. Sides alternate (bare, ferry / ferry, bare / ...) so neither
 * always goes first; the summary gives the median per side and its spread. Redis is flushed between runs.
 * A bench, not a test: it only fails (exit 1) with --min-ratio when a latency's ratio is below it, or when a
 * run breaks its checks (a job not completed by exactly one authenticated call, or a job retried or failed).
 * See bench/README.md for what is compared, why it is fair, and the latest figures.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Pool } from 'undici';

import { startPrivateRedis } from '../src/cli/redis-server.ts';
import type { JobData } from '../src/core/job.ts';
import { serviceQueueName } from '../src/core/queue-layout.ts';
import { ownProcesses, readPrintedPort, runBench } from './owned-processes.ts';
import { PAYLOAD } from './payload.ts';
import { formatInterval, median } from './stats.ts';
import {
  BENCH_OPERATION,
  BENCH_PATH,
  BENCH_SERVICE,
  BENCH_TOKEN_ENV,
  type RunResult,
  type RunSpec,
  type Side,
  SIDES,
} from './throughput-spec.ts';

// `npm run bench:throughput` runs this file as tsc compiles it (.bench-build/, what `npm start` runs is also
// tsc's output): the children are then plain JavaScript too. From source (tsx) they run through tsx, whose
// esbuild transform wraps every closure in a `__name` helper (keepNames), a per-closure cost production code
// does not pay and that weighs on Ferry more than on the bare worker; good for a quick look, not for figures.
const COMPILED = import.meta.url.endsWith('.js');
const EXT = COMPILED ? '.js' : '.ts';
const NODE_ARGS: readonly string[] = COMPILED ? [] : ['--import', 'tsx'];
const WORKER_FILE = fileURLToPath(new URL(`./throughput-worker${EXT}`, import.meta.url));
const DOWNSTREAM_FILE = fileURLToPath(new URL(`./downstream${EXT}`, import.meta.url));

/**
 * Job options for every job of every run. Ferry ignores them (it owns the retry policy: moveToDelayed with
 * capped, jittered backoff), the bare side relies on them for its retries, as a hand-rolled worker would.
 */
const JOB_OPTIONS = { attempts: 5, backoff: { type: 'exponential', delay: 1_000 } };

/** The bearer token both sides send; a fresh random one per bench run, passed by environment only. */
const TOKEN = randomBytes(24).toString('base64url');
const CHILD_ENV = { ...process.env, [BENCH_TOKEN_ENV]: TOKEN };

/**
 * The services file the ferry side loads (written per latency into the temp dir): bearer auth from the
 * secret `bench_token`, a static header, the job's input as the JSON body; breaker, retry and timeouts at
 * Ferry's defaults (breaker on). The downstream address is given the twelve-factor way,
 * FERRY_SERVICE_BENCH_URL, like the baseUrl override a deployment would use.
 */
function servicesYaml(concurrency: number): string {
  return [
    '# Written by bench/throughput.ts for one run of the throughput bench.',
    'services:',
    `  ${BENCH_SERVICE}:`,
    '    baseUrl: http://127.0.0.1:1  # replaced by FERRY_SERVICE_BENCH_URL',
    '    egress: { allow: [127.0.0.1] }  # a host an env var chooses reaches loopback only when allowed',
    `    concurrency: ${concurrency}`,
    '    auth: { type: bearer, token: "{{ secrets.bench_token }}" }',
    '    operations:',
    `      ${BENCH_OPERATION}: { method: POST, path: ${BENCH_PATH}, body: "{{ input }}" }`,
    '',
  ].join('\n');
}

interface Options {
  jobs: number;
  concurrency: number;
  latencies: number[];
  rounds: number;
  sides: Side[];
  timeoutMs: number;
  cpuProfDir: string | undefined;
  minRatio: number | undefined;
  keep: boolean;
}

function readOptions(): Options {
  const { values } = parseArgs({
    options: {
      jobs: { type: 'string', default: '10000' },
      concurrency: { type: 'string', default: '50' },
      latency: { type: 'string', default: '0,50' },
      rounds: { type: 'string', default: '4' },
      sides: { type: 'string', default: 'bare,ferry' },
      timeout: { type: 'string', default: '600' },
      'cpu-prof': { type: 'string' },
      'min-ratio': { type: 'string' },
      keep: { type: 'boolean', default: false },
      otel: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run bench:throughput -- [--jobs N] [--concurrency C] [--latency ms[,ms…]] [--rounds R]\n' +
        '         [--sides bare,ferry[,ferry-silent][,ferry-otel]] [--otel] [--timeout s] [--cpu-prof dir]\n' +
        '         [--min-ratio r] [--keep]\n',
    );
    process.exit(0);
  }
  const integer = (name: string, raw: string, min: number): number => {
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min) usage(`--${name} must be an integer >= ${min} (got ${raw})`);
    return value;
  };
  const latencies = values.latency.split(',').map((part) => {
    const value = Number(part);
    if (part.trim() === '' || !Number.isFinite(value) || value < 0)
      usage(`--latency must be ms >= 0, comma-separated (got ${values.latency})`);
    return value;
  });
  const sides = values.sides.split(',').map((part) => {
    if (!SIDES.includes(part as Side)) usage(`--sides takes ${SIDES.join(', ')} (got ${part})`);
    return part as Side;
  });
  // --otel: the same run also times Ferry with an OpenTelemetry SDK registered, for the on/off ratio.
  if (values.otel) sides.push('ferry-otel');
  if (!sides.includes('bare') || !sides.includes('ferry'))
    usage('--sides must include bare and ferry (the ratio compares them)');
  const minRatio = values['min-ratio'] === undefined ? undefined : Number(values['min-ratio']);
  if (minRatio !== undefined && !(minRatio > 0))
    usage(`--min-ratio must be a number > 0 (got ${values['min-ratio']})`);
  return {
    jobs: integer('jobs', values.jobs, 1),
    concurrency: integer('concurrency', values.concurrency, 1),
    latencies,
    rounds: integer('rounds', values.rounds, 1),
    sides: [...new Set(sides)],
    timeoutMs: integer('timeout', values.timeout, 1) * 1000,
    cpuProfDir: values['cpu-prof'],
    minRatio,
    keep: values.keep,
  };
}

function usage(message: string): never {
  process.stderr.write(`throughput: ${message}\n`);
  process.exit(2);
}

// ---- processes we own, and their cleanup (also on Ctrl-C) ----

const owned = ownProcesses('throughput', 3_000);

// ---- the pieces of a run ----

interface Downstream {
  url: string;
  child: ChildProcess;
}

async function startDownstream(latencyMs: number): Promise<Downstream> {
  const child = owned.track(
    spawn(process.execPath, [...NODE_ARGS, DOWNSTREAM_FILE, '--latency', String(latencyMs)], {
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
      env: CHILD_ENV,
    }),
  );
  const port = await readPrintedPort(child, 'downstream');
  return { url: `http://127.0.0.1:${port}`, child };
}

/** Warms the downstream's JIT and sockets so the first timed run does not pay for it. Not timed. */
async function warmUp(url: string, concurrency: number, requests = 2_000): Promise<void> {
  const pool = new Pool(url, { connections: concurrency });
  let left = requests;
  const body = JSON.stringify(PAYLOAD);
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (left-- > 0) {
        const response = await pool.request({
          path: '/warm-up',
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
          body,
        });
        await response.body.dump();
      }
    }),
  );
  await pool.close();
}

async function preload(redisUrl: string, prefix: string, jobs: number): Promise<number> {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  const queue = new Queue<JobData>(serviceQueueName(BENCH_SERVICE), { connection, prefix });
  const started = performance.now();
  for (let done = 0; done < jobs; done += 1_000) {
    const size = Math.min(1_000, jobs - done);
    await queue.addBulk(
      Array.from({ length: size }, () => ({
        name: BENCH_OPERATION,
        data: { input: PAYLOAD },
        opts: JOB_OPTIONS,
      })),
    );
  }
  const ms = performance.now() - started;
  const waiting = await queue.getWaitingCount();
  await queue.close();
  connection.disconnect();
  if (waiting !== jobs) throw new Error(`preload: ${waiting} jobs waiting, expected ${jobs}`);
  return ms;
}

async function runSide(spec: RunSpec, cpuProfDir: string | undefined): Promise<RunResult> {
  // tsx's module hooks run on a loader thread that writes a profile of its own: let Node name both (the name
  // holds the thread id), then keep the main thread's (tid 0) as <prefix>.cpuprofile.
  const runProfDir = cpuProfDir === undefined ? undefined : join(cpuProfDir, spec.prefix);
  const profile = runProfDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', runProfDir];
  const result = await runChild(spec, profile);
  if (cpuProfDir !== undefined && runProfDir !== undefined) {
    const main = (await readdir(runProfDir)).find((name) => name.split('.')[4] === '0');
    if (main !== undefined)
      await rename(join(runProfDir, main), join(cpuProfDir, `${spec.prefix}.cpuprofile`));
    await rm(runProfDir, { recursive: true, force: true });
  }
  return result;
}

function runChild(spec: RunSpec, profile: readonly string[]): Promise<RunResult> {
  const child = owned.track(
    spawn(process.execPath, [...NODE_ARGS, ...profile, WORKER_FILE], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: {
        ...CHILD_ENV,
        BENCH_RUN: JSON.stringify(spec),
        // Only the ferry sides read it (Ferry's baseUrl override); harmless for bare.
        FERRY_SERVICE_BENCH_URL: spec.downstreamUrl,
      },
    }),
  );
  return new Promise((resolve, reject) => {
    let result: RunResult | undefined;
    child.on('message', (message) => {
      result = message as RunResult;
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0 && result !== undefined) resolve(result);
      else
        reject(
          new Error(`${spec.side} run ${spec.prefix} failed (exit ${code ?? signal}); see its output above`),
        );
    });
  });
}

/** What must hold for a run to count: every job completed by exactly one call, nothing retried or failed. */
function checkRun(result: RunResult): void {
  const problems: string[] = [];
  if (result.downstreamRequests !== result.jobs)
    problems.push(`downstream answered ${result.downstreamRequests} calls for ${result.jobs} jobs`);
  if (result.downstreamAuthorized !== result.jobs)
    problems.push(`${result.downstreamAuthorized} of ${result.jobs} calls carried the bearer token`);
  if (result.delayed !== 0) problems.push(`${result.delayed} job(s) left delayed (retried)`);
  if (result.failed !== 0) problems.push(`${result.failed} job(s) failed`);
  if (result.side === 'ferry' && result.logLines !== result.jobs)
    problems.push(`ferry logged ${result.logLines} "attempt completed" lines for ${result.jobs} jobs`);
  if (problems.length > 0) throw new Error(`${result.side}: ${problems.join('; ')}`);
}

// ---- output ----

const COLUMNS = [
  'latency',
  'side',
  'run',
  'jobs/s',
  'wall s',
  'worker µs/job',
  'redis µs/job',
  'redis cmd/job',
  'downstr µs/job',
  'peak RSS MiB',
];
const WIDTHS = [7, 12, 3, 7, 6, 13, 12, 13, 14, 12];

function row(cells: readonly string[]): string {
  return cells.map((cell, i) => (i < 2 ? cell.padEnd(WIDTHS[i]!) : cell.padStart(WIDTHS[i]!))).join('  ');
}

function resultRow(latencyMs: number, run: number, result: RunResult): string {
  const perJob = (value: number): string => (value / result.jobs).toFixed(1);
  return row([
    `${latencyMs} ms`,
    result.side,
    String(run),
    result.jobsPerSec.toFixed(0),
    (result.wallMs / 1000).toFixed(2),
    perJob(result.workerCpuUs),
    perJob(result.redisCpuUs),
    perJob(result.redisCommands),
    perJob(result.downstreamCpuUs),
    result.peakRssMiB.toFixed(0),
  ]);
}

function formatLoad(): string {
  return loadavg()
    .map((value) => value.toFixed(2))
    .join(', ');
}

const SUMMARY_HEADER = `${'latency'.padEnd(9)}${'side'.padEnd(14)}${'jobs/s'.padStart(7)}  ${'[min-max]'.padEnd(13)}  ${'worker µs/job'.padStart(13)}  ${'peak RSS MiB'.padStart(12)}`;

function summaryRow(latencyMs: number, side: Side, results: readonly RunResult[]): string {
  const rates = results.map((r) => r.jobsPerSec);
  const spread = `[${Math.min(...rates).toFixed(0)}-${Math.max(...rates).toFixed(0)}]`;
  return (
    `${`${latencyMs} ms`.padEnd(9)}${side.padEnd(14)}${median(rates).toFixed(0).padStart(7)}  ${spread.padEnd(13)}  ` +
    `${median(results.map((r) => r.workerCpuUs / r.jobs))
      .toFixed(0)
      .padStart(13)}  ${median(results.map((r) => r.peakRssMiB))
      .toFixed(0)
      .padStart(12)}`
  );
}

/** Tracing's cost: OTel on over off, medians and per round (runs of one round are neighbours in time). */
function otelRatio(on: readonly RunResult[], off: readonly RunResult[]): string {
  const ratio = median(on.map((r) => r.jobsPerSec)) / median(off.map((r) => r.jobsPerSec));
  const perRound = on.map((r, i) => (r.jobsPerSec / off[i]!.jobsPerSec).toFixed(2));
  const cpu = median(on.map((r) => r.workerCpuUs / r.jobs)) - median(off.map((r) => r.workerCpuUs / r.jobs));
  return `ratio otel on/off ${ratio.toFixed(2)} (per round ${perRound.join(', ')}; worker CPU +${cpu.toFixed(0)} µs/job)`;
}

// ---- main ----

async function main(): Promise<number> {
  const options = readOptions();
  owned.keepWorkDir = options.keep;
  const loadAtStart = formatLoad();
  const workDir = (owned.workDir = await mkdtemp(join(tmpdir(), 'ferry-bench-')));
  const redis = (owned.redis = await startPrivateRedis({ dir: join(workDir, 'redis'), appendfsync: 'no' }));
  const admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  const redisVersion = /^redis_version:(\S+)/m.exec(await admin.info('server'))?.[1] ?? '?';
  const servicesFile = join(workDir, 'bench.services.yaml');
  await writeFile(servicesFile, servicesYaml(options.concurrency));
  await mkdir(join(workDir, 'logs'));

  const cpu = cpus();
  process.stdout.write(
    [
      `ferry throughput bench: N=${options.jobs} jobs per run, concurrency ${options.concurrency}, latencies ${options.latencies.join(', ')} ms, ` +
        `${options.rounds} round(s) of ${options.sides.join(', ')} (order alternates), headline = median per side`,
      `machine: ${cpu.length} x ${cpu[0]?.model.trim() ?? '?'}, node ${process.version}, load average ${loadAtStart}`,
      `redis: private redis-server ${redisVersion} on ${redis.url}, AOF off (appendfsync 'no'; persistence off for both sides), flushed between runs`,
      `ferry logging: pino level 'info', one line per attempt, asynchronous file destination in ${join(workDir, 'logs')}` +
        (options.sides.includes('ferry-silent')
          ? "; side 'ferry-silent' = level 'silent' (logging off, for comparison only)"
          : ''),
      ...(options.sides.includes('ferry-otel')
        ? [
            "ferry-otel: side 'ferry' with an OpenTelemetry SDK in the worker (BasicTracerProvider, always-on sampling, " +
              'BatchSpanProcessor, an exporter that drops spans, AsyncLocalStorage context, W3C propagator): ' +
              'a consumer and a client span per job, traceparent sent downstream',
          ]
        : []),
      `ferry config: ${servicesFile} (bearer auth from secret bench_token via FERRY_SECRET_BENCH_TOKEN, breaker on, Ferry defaults otherwise)`,
      'bare: BullMQ Worker + undici Pool, same bearer token from the environment, JSON body, status check, retries by job attempts',
      'jobs: identical for both sides, added with addBulk before the timer starts: ~300 B JSON input, attempts 5, exponential backoff',
      'downstream: own process (bench/downstream.ts), 200 + small JSON after a fixed latency; checks the bearer token',
      'per-job columns: CPU time of the worker process / redis-server / downstream and Redis commands, divided by N',
      '',
      row(COLUMNS),
    ].join('\n') + '\n',
  );

  const summary: string[] = [];
  const ratios: number[] = [];
  for (const latencyMs of options.latencies) {
    const downstream = await startDownstream(latencyMs);
    await warmUp(downstream.url, options.concurrency);
    const bySide = new Map<Side, RunResult[]>(options.sides.map((side) => [side, []]));
    for (let round = 1; round <= options.rounds; round++) {
      const order = round % 2 === 1 ? options.sides : [...options.sides].reverse();
      for (const side of order) {
        const prefix = `bench-${side}-${latencyMs}ms-r${round}`;
        await preload(redis.url, prefix, options.jobs);
        const result = await runSide(
          {
            side,
            redisUrl: redis.url,
            prefix,
            downstreamUrl: downstream.url,
            jobs: options.jobs,
            concurrency: options.concurrency,
            servicesFile,
            logFile: join(workDir, 'logs', `${prefix}.log`),
            timeoutMs: options.timeoutMs,
          },
          options.cpuProfDir,
        );
        checkRun(result);
        bySide.get(side)!.push(result);
        process.stdout.write(`${resultRow(latencyMs, round, result)}\n`);
        await admin.flushall();
      }
    }
    downstream.child.kill('SIGTERM');

    const bare = bySide.get('bare')!;
    const ferry = bySide.get('ferry')!;
    const bareRate = median(bare.map((r) => r.jobsPerSec));
    const ratio = median(ferry.map((r) => r.jobsPerSec)) / bareRate;
    ratios.push(ratio);
    // Runs of one round are neighbours in time, so their ratio shares the machine's state of the moment.
    const roundRatios = ferry.map((r, i) => r.jobsPerSec / bare[i]!.jobsPerSec);
    const perRound = roundRatios.map((value) => value.toFixed(2));
    // CPU per job is what decides throughput when the worker is the bottleneck, and varies less than jobs/s.
    const cpuRatio =
      median(bare.map((r) => r.workerCpuUs / r.jobs)) / median(ferry.map((r) => r.workerCpuUs / r.jobs));
    for (const side of options.sides) summary.push(summaryRow(latencyMs, side, bySide.get(side)!));
    summary.push(
      `${`${latencyMs} ms`.padEnd(9)}ratio ferry/bare ${ratio.toFixed(2)} (medians; per round ${perRound.join(', ')})` +
        (options.sides.includes('ferry-silent')
          ? `; ferry-silent/bare ${(median(bySide.get('ferry-silent')!.map((r) => r.jobsPerSec)) / bareRate).toFixed(2)}`
          : '') +
        (options.sides.includes('ferry-otel') ? `; ${otelRatio(bySide.get('ferry-otel')!, ferry)}` : ''),
      `${' '.repeat(9)}median of the per-round ratios ${median(roundRatios).toFixed(2)} ` +
        `(${formatInterval(roundRatios)}); ` +
        `worker CPU per job bare/ferry ${cpuRatio.toFixed(2)}`,
    );
  }
  admin.disconnect();

  process.stdout.write(
    `\nsummary: median of ${options.rounds} round(s) per side [min-max], N=${options.jobs}, concurrency ${options.concurrency}\n` +
      `${SUMMARY_HEADER}\n${summary.join('\n')}\n`,
  );
  process.stdout.write(`load average at the end: ${formatLoad()} (at the start: ${loadAtStart})\n`);
  if (options.keep) process.stdout.write(`kept ${workDir} (logs, redis dir)\n`);
  if (options.cpuProfDir !== undefined)
    process.stdout.write(`CPU profiles in ${options.cpuProfDir} (one per run, named by prefix)\n`);
  if (options.minRatio !== undefined && ratios.some((ratio) => ratio < options.minRatio!)) {
    process.stderr.write(`throughput: ratio below --min-ratio ${options.minRatio}\n`);
    return 1;
  }
  return 0;
}

runBench('throughput', owned, main);
