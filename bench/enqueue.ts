/**
 * Enqueueing through Ferry's HTTP API vs straight into BullMQ, in one run.
 *
 *   npm run bench:enqueue -- [--jobs 50000] [--batch 1000] [--concurrency 1,4] [--warmup 5000] [--rounds 6]
 *       [--connections 50] [--duration 10] [--single-rounds 2] [--parts batch,single] [--timeout 600]
 *       [--cpu-prof <dir>] [--min-ratio 0.8] [--keep] [--min-replicas 1]
 *
 * Part 1 (batch): N jobs per run in batches, the same number of calls in flight on both sides; one block of
 * runs per --concurrency value (1: a sequential producer, every batch waits for its round trip; 4: enough in
 * flight that both sides are bound by CPU, not by round trips).
 * - `direct` (baseline): one process calls BullMQ `Queue.addBulk` on Ferry's queue `{bench}` with the job
 *   name, data and options Ferry's Producer writes.
 * - `api`: Ferry's HTTP API as `ferry api` runs it (the built CLI, its own process: real token auth, real
 *   validation against a loaded services file, pino at info), and a client process posting
 *   `POST /v1/jobs/batch` over keep-alive undici connections.
 * Each run has fresh processes and its own prefix, sends warm-up jobs to another queue first, then is timed by
 * the client from its first call to its last answer. Afterwards Redis must hold exactly N waiting jobs on
 * `{bench}`, all of the same shape on both sides; otherwise the bench stops (exit 1). Sides alternate
 * (direct, api / api, direct / ...); Redis is flushed between runs. The headline is the ratio api/direct of
 * the median jobs/s, with the per-round ratios' median and its distribution-free 95% interval.
 *
 * Part 2 (single): autocannon against `POST /v1/jobs` (one job per request, a fixed body, no idempotency
 * key) for `--duration` seconds with `--connections` connections: requests/s, p50 and p99 latency, non-2xx
 * answers (must be 0). The same against `minimal` (bench/enqueue-minimal.ts: a Fastify route that does only
 * `queue.add`), the floor for any HTTP front of BullMQ.
 *
 * Part 3 (replicas, only with `--parts replicas`): a replica of the bench Redis (`--replicaof`) is attached
 * for the whole part, then `ferry api` runs part 2's autocannon load with FERRY_ENQUEUE_MIN_REPLICAS=0
 * (`off`) and =`--min-replicas` (`wait`), alternating, --single-rounds each: the only difference is the
 * Redis WAIT after each enqueue. Prints req/s, latency and the ratio wait/off.
 *
 * A bench, not a test: it fails (exit 1) only when a run breaks its checks or, with --min-ratio, when the
 * batch ratio is below it. See bench/README.md § Enqueue bench for what is compared, why it is fair, and the
 * latest figures.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { Redis } from 'ioredis';
import { Pool } from 'undici';

import { freePort, startPrivateRedis } from '../src/cli/redis-server.ts';
import { serviceQueueName } from '../src/core/queue-layout.ts';
import {
  API_TOKEN_ENV,
  BATCH_SIDES,
  type BatchSide,
  BENCH_OPERATION,
  BENCH_SERVICE,
  type ClientMessage,
  type ClientResult,
  type ClientSpec,
  type GoMessage,
  PAYLOAD,
  SINGLE_SIDES,
  type SingleSide,
  WARMUP_SERVICE,
} from './enqueue-spec.ts';
import { ownProcesses, runBench } from './owned-processes.ts';
import { formatInterval, median } from './stats.ts';

// As bench/throughput.ts: `npm run bench:enqueue` runs tsc's output (.bench-build/), so the API process runs
// the same compiled CLI `npm start` runs from dist/; from source (tsx) everything goes through tsx's
// transform, which is fine for a quick look, not for figures.
const COMPILED = import.meta.url.endsWith('.js');
const EXT = COMPILED ? '.js' : '.ts';
const NODE_ARGS: readonly string[] = COMPILED ? [] : ['--import', 'tsx'];
const CLIENT_FILE = fileURLToPath(new URL(`./enqueue-client${EXT}`, import.meta.url));
const MINIMAL_FILE = fileURLToPath(new URL(`./enqueue-minimal${EXT}`, import.meta.url));
const FERRY_CLI = fileURLToPath(new URL(`../src/cli/main${EXT}`, import.meta.url));

/** The API token of this bench run: random, given to the API as its sha256 (the recommended form). */
const TOKEN = randomBytes(24).toString('base64url');
const API_TOKENS = JSON.stringify([
  { name: 'bench', sha256: createHash('sha256').update(TOKEN).digest('hex'), scopes: ['jobs:write'] },
]);

/** Both services of the services file the API loads: the counted one and the warm-up one. */
function servicesYaml(): string {
  const service = (name: string): string[] => [
    `  ${name}:`,
    '    baseUrl: http://127.0.0.1:1  # never called: nothing works the jobs off',
    '    operations:',
    `      ${BENCH_OPERATION}: { method: POST, path: /things, body: "{{ input }}" }`,
  ];
  return [
    '# Written by bench/enqueue.ts for one run of the enqueue bench.',
    'services:',
    ...service(BENCH_SERVICE),
    ...service(WARMUP_SERVICE),
    '',
  ].join('\n');
}

type Part = 'batch' | 'single' | 'replicas';
const PARTS: readonly Part[] = ['batch', 'single', 'replicas'];

interface Options {
  jobs: number;
  batch: number;
  concurrencies: number[];
  warmup: number;
  rounds: number;
  connections: number;
  durationS: number;
  singleRounds: number;
  parts: Part[];
  timeoutMs: number;
  cpuProfDir: string | undefined;
  minRatio: number | undefined;
  keep: boolean;
  minReplicas: number;
}

const USAGE =
  'usage: npm run bench:enqueue -- [--jobs N] [--batch B] [--concurrency C[,C…]] [--warmup W] [--rounds R]\n' +
  '         [--connections K] [--duration s] [--single-rounds R] [--parts batch,single] [--timeout s]\n' +
  '         [--cpu-prof dir] [--min-ratio r] [--keep] [--min-replicas N]\n' +
  '\n' +
  '  --jobs N           part 1: jobs per timed run (default 50000)\n' +
  '  --batch B          part 1: jobs per addBulk call and per POST /v1/jobs/batch, 1-1000 (default 1000)\n' +
  '  --concurrency C,…  part 1: calls in flight at once, on both sides; one block of runs each (default 1,4)\n' +
  '  --warmup W         part 1: jobs sent the same way before the clock starts, to another queue (default 5000)\n' +
  '  --rounds R         part 1: runs per side, alternating order (default 6; the interval needs 6)\n' +
  '  --connections K    part 2: autocannon connections (default 50)\n' +
  '  --duration s       part 2: seconds per autocannon run (default 10)\n' +
  '  --single-rounds R  part 2: runs per side, alternating order (default 2)\n' +
  '  --parts …          batch, single, replicas (default batch,single)\n' +
  '  --timeout s        a part-1 run not done by then fails the bench (default 600)\n' +
  '  --cpu-prof dir     one .cpuprofile per API, minimal and client process (open in Chrome DevTools)\n' +
  '  --min-ratio r      exit 1 when a part-1 ratio api/direct (medians), at any concurrency, is below r\n' +
  '  --keep             keep the temp dir (API logs, services file, Redis dir)\n' +
  '  --min-replicas N   part 3: FERRY_ENQUEUE_MIN_REPLICAS of the `wait` side (default 1; one replica runs)\n';

function readOptions(): Options {
  const { values } = parseArgs({
    options: {
      jobs: { type: 'string', default: '50000' },
      batch: { type: 'string', default: '1000' },
      concurrency: { type: 'string', default: '1,4' },
      warmup: { type: 'string', default: '5000' },
      rounds: { type: 'string', default: '6' },
      connections: { type: 'string', default: '50' },
      duration: { type: 'string', default: '10' },
      'single-rounds': { type: 'string', default: '2' },
      parts: { type: 'string', default: 'batch,single' },
      timeout: { type: 'string', default: '600' },
      'cpu-prof': { type: 'string' },
      'min-ratio': { type: 'string' },
      keep: { type: 'boolean', default: false },
      'min-replicas': { type: 'string', default: '1' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const integer = (name: string, raw: string, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max)
      usage(
        `--${name} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`} (got ${raw})`,
      );
    return value;
  };
  const parts = values.parts.split(',').map((part) => {
    if (!PARTS.includes(part as Part)) usage(`--parts takes ${PARTS.join(', ')} (got ${part})`);
    return part as Part;
  });
  const minRatio = values['min-ratio'] === undefined ? undefined : Number(values['min-ratio']);
  if (minRatio !== undefined && !(minRatio > 0))
    usage(`--min-ratio must be a number > 0 (got ${values['min-ratio']})`);
  return {
    jobs: integer('jobs', values.jobs, 1),
    // The API refuses batches over 1000 (MAX_BATCH_JOBS): the same chunk size must work on both sides.
    batch: integer('batch', values.batch, 1, 1000),
    concurrencies: [
      ...new Set(values.concurrency.split(',').map((part) => integer('concurrency', part.trim(), 1))),
    ],
    warmup: integer('warmup', values.warmup, 0),
    rounds: integer('rounds', values.rounds, 1),
    connections: integer('connections', values.connections, 1),
    durationS: integer('duration', values.duration, 1),
    singleRounds: integer('single-rounds', values['single-rounds'], 1),
    parts: [...new Set(parts)],
    timeoutMs: integer('timeout', values.timeout, 1) * 1000,
    cpuProfDir: values['cpu-prof'],
    minRatio,
    keep: values.keep,
    minReplicas: integer('min-replicas', values['min-replicas'], 1, 1),
  };
}

function usage(message: string): never {
  process.stderr.write(`enqueue: ${message}\n${USAGE}`);
  process.exit(2);
}

// ---- processes we own, and their cleanup (also on Ctrl-C) ----

const owned = ownProcesses('enqueue', 5_000);

/**
 * The environment of every child: ours without Ferry's, Redis's and the API's variables (a developer's own
 * REDIS_URL or FERRY_API_TOKENS must not leak into a run), plus what the run sets.
 */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!/^(FERRY_|REDIS_|LOG_|PORT$|HOST$)/.test(name)) env[name] = value;
  }
  return { ...env, ...extra };
}

// ---- CPU time of other processes ----

const CLOCK_TICKS_PER_S = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU time (user + system, all threads) of a live process, µs, from /proc (Linux). Resolution: one tick. */
async function processCpuUs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after "pid (comm) ": state is field 3, utime 14, stime 15 (proc(5)).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S) * 1e6;
}

interface RedisSnapshot {
  cpuUs: number;
  commands: number;
}

async function redisSnapshot(admin: Redis): Promise<RedisSnapshot> {
  const [cpu, stats] = await Promise.all([admin.info('cpu'), admin.info('stats')]);
  const field = (text: string, name: string): number => {
    const match = new RegExp(`^${name}:([0-9.]+)`, 'm').exec(text);
    if (match?.[1] === undefined) throw new Error(`redis INFO has no ${name}`);
    return Number(match[1]);
  };
  return {
    cpuUs: (field(cpu, 'used_cpu_user') + field(cpu, 'used_cpu_sys')) * 1e6,
    commands: field(stats, 'total_commands_processed'),
  };
}

// ---- CPU profiles (--cpu-prof) ----

/** Node arguments that write a process's profiles into `<dir>/<name>/`; none without --cpu-prof. */
function profileArgs(cpuProfDir: string | undefined, name: string): string[] {
  return cpuProfDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', join(cpuProfDir, name)];
}

/** Keeps the main thread's profile (thread id 0 in Node's file name) as `<dir>/<name>.cpuprofile`. */
async function collectProfile(cpuProfDir: string | undefined, name: string): Promise<void> {
  if (cpuProfDir === undefined) return;
  const dir = join(cpuProfDir, name);
  const main = (await readdir(dir).catch(() => [] as string[])).find((file) => file.split('.')[4] === '0');
  if (main !== undefined) await rename(join(dir, main), join(cpuProfDir, `${name}.cpuprofile`));
  await rm(dir, { recursive: true, force: true });
}

// ---- servers: Ferry's API (the built CLI) and the minimal one ----

interface Server {
  url: string;
  child: ChildProcess;
  pid: number;
  logFile: string;
  name: string;
}

async function startServer(
  kind: 'ferry' | 'minimal',
  name: string,
  prefix: string,
  options: Options,
  extraEnv: Record<string, string> = {},
): Promise<Server> {
  const port = await freePort();
  const logFile = join(owned.workDir!, 'logs', `${name}.log`);
  const log = await open(logFile, 'w');
  const args =
    kind === 'ferry'
      ? [...NODE_ARGS, ...profileArgs(options.cpuProfDir, name), FERRY_CLI, 'api']
      : [...NODE_ARGS, ...profileArgs(options.cpuProfDir, name), MINIMAL_FILE];
  const child = owned.track(
    spawn(process.execPath, args, {
      // Ferry logs JSON lines to stdout (request logging is off in the API: only start, stop and errors).
      stdio: ['ignore', log.fd, log.fd, 'ipc'],
      env: childEnv({
        REDIS_URL: owned.redis!.url,
        FERRY_PREFIX: prefix,
        FERRY_SERVICES: join(owned.workDir!, 'bench.services.yaml'),
        FERRY_API_TOKENS: API_TOKENS,
        HOST: '127.0.0.1',
        PORT: String(port),
        LOG_LEVEL: 'info',
        // No worker metrics server in a bench process (and no port clash with anyone's tests).
        FERRY_METRICS_PORT: '0',
        ...extraEnv,
      }),
    }),
  );
  await log.close();
  const url = `http://127.0.0.1:${port}`;
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`${name} exited before answering /healthz:\n${await tail(logFile)}`);
    const up = await fetch(`${url}/healthz`).then(
      (response) => response.ok,
      () => false,
    );
    if (up) break;
    if (Date.now() > deadline)
      throw new Error(`${name} did not answer /healthz within 30 s:\n${await tail(logFile)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { url, child, pid: child.pid!, logFile, name };
}

async function stopServer(server: Server, options: Options): Promise<void> {
  if (server.child.exitCode === null && server.child.signalCode === null) {
    const exited = once(server.child, 'exit');
    server.child.kill('SIGTERM');
    const timer = setTimeout(() => server.child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
  await collectProfile(options.cpuProfDir, server.name);
}

async function tail(file: string, lines = 20): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-lines).join('\n');
}

// ---- part 1: batch enqueue ----

interface BatchRun {
  side: BatchSide;
  concurrency: number;
  jobs: number;
  wallMs: number;
  jobsPerSec: number;
  clientCpuUs: number;
  /** The API process's CPU (0 for direct). */
  apiCpuUs: number;
  redisCpuUs: number;
  redisCommands: number;
}

async function runBatch(
  side: BatchSide,
  concurrency: number,
  round: number,
  admin: Redis,
  options: Options,
  shapes: Map<BatchSide, string>,
): Promise<BatchRun> {
  const prefix = `enq-${side}-c${concurrency}-r${round}`;
  const server = side === 'api' ? await startServer('ferry', `${prefix}-api`, prefix, options) : undefined;
  const spec: ClientSpec = {
    side,
    redisUrl: owned.redis!.url,
    prefix,
    apiUrl: server?.url,
    jobs: options.jobs,
    batch: options.batch,
    concurrency,
    warmupJobs: options.warmup,
  };
  const clientName = `${prefix}-client`;
  const client = owned.track(
    spawn(process.execPath, [...NODE_ARGS, ...profileArgs(options.cpuProfDir, clientName), CLIENT_FILE], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: childEnv({ BENCH_RUN: JSON.stringify(spec), [API_TOKEN_ENV]: TOKEN }),
    }),
  );
  let before: { redis: RedisSnapshot; apiCpuUs: number } | undefined;
  const result = await new Promise<ClientResult>((resolve, reject) => {
    let result: ClientResult | undefined;
    const timer = setTimeout(() => {
      client.kill('SIGKILL');
      reject(new Error(`${side} run ${prefix} did not finish within ${options.timeoutMs / 1000} s`));
    }, options.timeoutMs);
    client.on('message', (message: ClientMessage) => {
      if (message.type === 'result') {
        result = message.result;
        return;
      }
      // Warm-up done: take the "before" readings, then start the clock.
      void (async () => {
        before = {
          redis: await redisSnapshot(admin),
          apiCpuUs: server === undefined ? 0 : await processCpuUs(server.pid),
        };
        client.send({ type: 'go' } satisfies GoMessage);
      })().catch(reject);
    });
    client.once('error', reject);
    client.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0 && result !== undefined) resolve(result);
      else reject(new Error(`${side} run ${prefix} failed (exit ${code ?? signal}); see its output above`));
    });
  });
  const redisAfter = await redisSnapshot(admin);
  const apiCpuUs = server === undefined ? 0 : (await processCpuUs(server.pid)) - before!.apiCpuUs;
  await collectProfile(options.cpuProfDir, clientName);
  if (server !== undefined) await stopServer(server, options);

  await checkBatchRun(admin, prefix, result, options, shapes);
  await admin.flushall();
  return {
    side,
    concurrency,
    jobs: result.jobs,
    wallMs: result.wallMs,
    jobsPerSec: result.jobs / (result.wallMs / 1000),
    clientCpuUs: result.clientCpuUs,
    apiCpuUs,
    redisCpuUs: redisAfter.cpuUs - before!.redis.cpuUs,
    redisCommands: redisAfter.commands - before!.redis.commands,
  };
}

/**
 * What must hold for a run to count: every job acknowledged and in Redis, exactly N on `{bench}` and the
 * warm-up's on `{warmup}`, and a job of the same shape (name, hash fields, data keys, options) on both sides.
 */
async function checkBatchRun(
  admin: Redis,
  prefix: string,
  result: ClientResult,
  options: Options,
  shapes: Map<BatchSide, string>,
): Promise<void> {
  const problems: string[] = [];
  const waiting = (service: string): Promise<number> =>
    admin.llen(`${prefix}:${serviceQueueName(service)}:wait`);
  const [counted, warmedUp] = await Promise.all([waiting(BENCH_SERVICE), waiting(WARMUP_SERVICE)]);
  if (result.acknowledged !== options.jobs)
    problems.push(`${result.acknowledged} of ${options.jobs} jobs acknowledged`);
  if (counted !== options.jobs)
    problems.push(`Redis holds ${counted} jobs on {bench}, expected ${options.jobs}`);
  if (warmedUp !== options.warmup)
    problems.push(`Redis holds ${warmedUp} warm-up jobs, expected ${options.warmup}`);
  const shape = await jobShape(admin, prefix);
  if (shape === undefined) problems.push('no job to look at on {bench}');
  else {
    shapes.set(result.side, shape);
    const other = shapes.get(result.side === 'api' ? 'direct' : 'api');
    if (other !== undefined && other !== shape)
      problems.push(
        `jobs differ between the sides:\n  direct ${shapes.get('direct')}\n  api    ${shapes.get('api')}`,
      );
  }
  if (problems.length > 0) throw new Error(`${result.side} run ${prefix}: ${problems.join('; ')}`);
}

/** A job's shape, for comparing the sides: name, hash fields, data keys, enqueueId type, input, options. */
async function jobShape(admin: Redis, prefix: string): Promise<string | undefined> {
  const queue = `${prefix}:${serviceQueueName(BENCH_SERVICE)}`;
  const id = await admin.lindex(`${queue}:wait`, 0);
  if (id === null) return undefined;
  const hash = await admin.hgetall(`${queue}:${id}`);
  const data = JSON.parse(hash.data ?? 'null') as Record<string, unknown> | null;
  return JSON.stringify({
    name: hash.name,
    fields: Object.keys(hash).sort(),
    data: data === null ? null : Object.keys(data),
    enqueueId: typeof data?.enqueueId,
    input: JSON.stringify(data?.input) === JSON.stringify(PAYLOAD) ? 'the payload' : data?.input,
    opts: hash.opts,
  });
}

// ---- part 2: single POST /v1/jobs under autocannon ----

/** The part of autocannon 8's result this bench reads (the package has no types). */
interface CannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
  requests: { average: number; total: number };
  latency: { average: number; p50: number; p99: number; max: number };
}
type Autocannon = (options: {
  url: string;
  method: 'POST';
  connections: number;
  duration: number;
  headers: Record<string, string>;
  body: string;
}) => Promise<CannonResult>;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

interface SingleRun {
  side: SingleSide;
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  ok: number;
  non2xx: number;
  errors: number;
  /** CPU of the server process / redis-server per 2xx request, µs. */
  serverCpuUs: number;
  redisCpuUs: number;
}

const SINGLE_HEADERS = { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` };
const singleBody = (service: string): string =>
  JSON.stringify({ service, operation: BENCH_OPERATION, input: PAYLOAD });

/** Warms the server's JIT and its connections before autocannon starts; to the warm-up queue, not timed. */
async function warmUpSingle(url: string, connections: number, requests = 2_000): Promise<void> {
  const pool = new Pool(url, { connections });
  const body = singleBody(WARMUP_SERVICE);
  let left = requests;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (left-- > 0) {
        const response = await pool.request({
          path: '/v1/jobs',
          method: 'POST',
          headers: SINGLE_HEADERS,
          body,
        });
        const text = await response.body.text();
        if (response.statusCode !== 202)
          throw new Error(`warm-up POST /v1/jobs answered ${response.statusCode}: ${text.slice(0, 300)}`);
      }
    }),
  );
  await pool.close();
}

async function runSingle(
  side: SingleSide,
  round: number,
  admin: Redis,
  options: Options,
  variant: { label: string; env: Record<string, string> } = { label: side, env: {} },
): Promise<SingleRun> {
  const prefix = `enq-single-${variant.label}-r${round}`;
  const server = await startServer(side, `${prefix}-server`, prefix, options, variant.env);
  await warmUpSingle(server.url, options.connections);
  const redisBefore = await redisSnapshot(admin);
  const cpuBefore = await processCpuUs(server.pid);
  const result = await autocannon({
    url: `${server.url}/v1/jobs`,
    method: 'POST',
    connections: options.connections,
    duration: options.durationS,
    headers: SINGLE_HEADERS,
    body: singleBody(BENCH_SERVICE),
  });
  const serverCpuUs = (await processCpuUs(server.pid)) - cpuBefore;
  const redisAfter = await redisSnapshot(admin);
  await stopServer(server, options);

  // Requests still in flight when autocannon stops were answered to nobody but may have been added.
  const counted = await admin.llen(`${prefix}:${serviceQueueName(BENCH_SERVICE)}:wait`);
  const ok = result['2xx'];
  const problems: string[] = [];
  if (result.non2xx !== 0) problems.push(`${result.non2xx} non-2xx answers (see ${server.logFile})`);
  if (result.errors !== 0 || result.timeouts !== 0)
    problems.push(`${result.errors} errors, ${result.timeouts} timeouts`);
  if (counted < ok || counted > ok + options.connections)
    problems.push(`Redis holds ${counted} jobs for ${ok} 2xx answers (${options.connections} connections)`);
  await admin.flushall();
  if (problems.length > 0) throw new Error(`${variant.label} single run ${prefix}: ${problems.join('; ')}`);
  return {
    side,
    requestsPerSec: ok / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    ok,
    non2xx: result.non2xx,
    errors: result.errors,
    serverCpuUs: serverCpuUs / ok,
    redisCpuUs: (redisAfter.cpuUs - redisBefore.cpuUs) / ok,
  };
}

// ---- output ----

function table(widths: readonly number[], leftAligned: number) {
  return (cells: readonly string[]): string =>
    cells
      .map((cell, i) => (i < leftAligned ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
      .join('  ');
}

const batchRow = table([9, 6, 3, 7, 6, 13, 10, 12, 13, 12], 2);
const BATCH_HEADER = batchRow([
  'in flight',
  'side',
  'run',
  'jobs/s',
  'wall s',
  'client µs/job',
  'api µs/job',
  'redis µs/job',
  'redis cmd/job',
  'total µs/job',
]);
const totalCpu = (r: BatchRun): number => r.clientCpuUs + r.apiCpuUs + r.redisCpuUs;

function batchResultRow(round: number, r: BatchRun): string {
  const perJob = (value: number): string => (value / r.jobs).toFixed(1);
  return batchRow([
    String(r.concurrency),
    r.side,
    String(round),
    r.jobsPerSec.toFixed(0),
    (r.wallMs / 1000).toFixed(2),
    perJob(r.clientCpuUs),
    r.side === 'api' ? perJob(r.apiCpuUs) : '-',
    perJob(r.redisCpuUs),
    perJob(r.redisCommands),
    perJob(totalCpu(r)),
  ]);
}

const batchSummaryRow = table([9, 6, 7, 13, 13, 10, 12, 12], 2);

function batchSummary(side: BatchSide, runs: readonly BatchRun[]): string {
  const rates = runs.map((r) => r.jobsPerSec);
  const perJob = (pick: (r: BatchRun) => number): string =>
    median(runs.map((r) => pick(r) / r.jobs)).toFixed(1);
  return batchSummaryRow([
    String(runs[0]!.concurrency),
    side,
    median(rates).toFixed(0),
    `[${Math.min(...rates).toFixed(0)}-${Math.max(...rates).toFixed(0)}]`,
    perJob((r) => r.clientCpuUs),
    side === 'api' ? perJob((r) => r.apiCpuUs) : '-',
    perJob((r) => r.redisCpuUs),
    perJob(totalCpu),
  ]);
}

const singleRow = table([7, 3, 7, 6, 6, 8, 7, 6, 13, 13], 1);
const SINGLE_HEADER = singleRow([
  'side',
  'run',
  'req/s',
  'p50 ms',
  'p99 ms',
  '2xx',
  'non-2xx',
  'errors',
  'server µs/req',
  'redis µs/req',
]);

function singleResultRow(round: number, r: SingleRun): string {
  return singleRow([
    r.side,
    String(round),
    r.requestsPerSec.toFixed(0),
    r.p50Ms.toFixed(0),
    r.p99Ms.toFixed(0),
    String(r.ok),
    String(r.non2xx),
    String(r.errors),
    r.serverCpuUs.toFixed(0),
    r.redisCpuUs.toFixed(0),
  ]);
}

const singleSummaryRow = table([7, 7, 13, 6, 6, 8, 13], 1);

function singleSummary(side: SingleSide, runs: readonly SingleRun[]): string {
  const rates = runs.map((r) => r.requestsPerSec);
  return singleSummaryRow([
    side,
    median(rates).toFixed(0),
    `[${Math.min(...rates).toFixed(0)}-${Math.max(...rates).toFixed(0)}]`,
    median(runs.map((r) => r.p50Ms)).toFixed(0),
    median(runs.map((r) => r.p99Ms)).toFixed(0),
    String(runs.reduce((sum, r) => sum + r.non2xx, 0)),
    median(runs.map((r) => r.serverCpuUs)).toFixed(0),
  ]);
}

function formatLoad(): string {
  return loadavg()
    .map((value) => value.toFixed(2))
    .join(', ');
}

const print = (text: string): void => {
  process.stdout.write(`${text}\n`);
};

// ---- part 3: FERRY_ENQUEUE_MIN_REPLICAS ----

/** A replica of the bench Redis for part 3, resolved once its link is up and in sync. */
async function startReplica(): Promise<{ stop(): Promise<void> }> {
  const primary = owned.redis!;
  const replica = await startPrivateRedis({
    dir: join(owned.workDir!, 'replica'),
    appendfsync: 'no',
    extraArgs: ['--replicaof', '127.0.0.1', String(primary.port)],
  });
  owned.track(replica.process);
  const client = new Redis(replica.url, { maxRetriesPerRequest: 1 });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const info = await client.info('replication');
    if (/master_link_status:up/.test(info) && /master_sync_in_progress:0/.test(info)) break;
    if (Date.now() > deadline) throw new Error(`the replica did not sync within 30 s:\n${info}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  client.disconnect();
  return { stop: () => replica.stop() };
}

/** WAIT commands Redis has run (INFO commandstats). */
async function waitCalls(admin: Redis): Promise<number> {
  return Number(/^cmdstat_wait:calls=(\d+)/m.exec(await admin.info('commandstats'))?.[1] ?? 0);
}

async function runReplicasPart(admin: Redis, options: Options): Promise<void> {
  const replica = await startReplica();
  const variants = [
    { label: 'off', env: { FERRY_ENQUEUE_MIN_REPLICAS: '0' } },
    { label: 'wait', env: { FERRY_ENQUEUE_MIN_REPLICAS: String(options.minReplicas) } },
  ];
  print(
    [
      '',
      `part 3: single POST /v1/jobs to \`ferry api\` with one replica attached, ${options.connections} connections, ` +
        `${options.durationS} s per run, ${options.singleRounds} round(s) of off, wait (order alternates)`,
      `  off = FERRY_ENQUEUE_MIN_REPLICAS=0; wait = FERRY_ENQUEUE_MIN_REPLICAS=${options.minReplicas} ` +
        '(Redis WAIT after each enqueue, FERRY_ENQUEUE_REPLICA_TIMEOUT_MS 1000)',
      '',
      SINGLE_HEADER,
    ].join('\n'),
  );
  const runs = new Map<string, SingleRun[]>(variants.map((variant) => [variant.label, []]));
  try {
    for (let round = 1; round <= options.singleRounds; round++) {
      const order = round % 2 === 1 ? variants : [...variants].reverse();
      for (const variant of order) {
        const before = await waitCalls(admin);
        const run = await runSingle('ferry', round, admin, options, variant);
        // The one difference between the sides, checked: a WAIT per answered enqueue (warm-up included) or none.
        const waits = (await waitCalls(admin)) - before;
        if (variant.label === 'off' ? waits !== 0 : waits < run.ok)
          throw new Error(`${variant.label} run ${round}: Redis ran ${waits} WAIT for ${run.ok} 2xx answers`);
        runs.get(variant.label)!.push(run);
        print(singleResultRow(round, run).replace(/^ferry  /, variant.label.padEnd(7)));
      }
    }
  } finally {
    await replica.stop();
  }
  const off = runs.get('off')!;
  const wait = runs.get('wait')!;
  const rate = (list: readonly SingleRun[]): number => median(list.map((r) => r.requestsPerSec));
  print(
    [
      '',
      `summary, part 3: median of ${options.singleRounds} round(s) per side [min-max], ${options.connections} connections, ${options.durationS} s`,
      singleSummaryRow(['side', 'req/s', '[min-max]', 'p50 ms', 'p99 ms', 'non-2xx', 'server µs/req']),
      singleSummary('ferry', off).replace(/^ferry  /, 'off    '),
      singleSummary('ferry', wait).replace(/^ferry  /, 'wait   '),
      'checked: the off runs sent no WAIT, the wait runs one per 2xx answer at least (INFO commandstats)',
      `ratio wait/off ${(rate(wait) / rate(off)).toFixed(2)} (req/s, medians; per round ` +
        `${wait.map((r, i) => (r.requestsPerSec / off[i]!.requestsPerSec).toFixed(2)).join(', ')})`,
    ].join('\n'),
  );
}

// ---- main ----

async function main(): Promise<number> {
  const options = readOptions();
  owned.keepWorkDir = options.keep;
  const loadAtStart = formatLoad();
  const workDir = (owned.workDir = await mkdtemp(join(tmpdir(), 'ferry-bench-enqueue-')));
  await mkdir(join(workDir, 'logs'));
  await writeFile(join(workDir, 'bench.services.yaml'), servicesYaml());
  const redis = (owned.redis = await startPrivateRedis({ dir: join(workDir, 'redis'), appendfsync: 'no' }));
  const admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  const redisVersion = /^redis_version:(\S+)/m.exec(await admin.info('server'))?.[1] ?? '?';

  const cpu = cpus();
  print(
    [
      'ferry enqueue bench',
      `machine: ${cpu.length} x ${cpu[0]?.model.trim() ?? '?'}, node ${process.version}, load average ${loadAtStart}`,
      `redis: private redis-server ${redisVersion} on ${redis.url}, persistence off, flushed between runs`,
      `api: \`ferry api\` (${COMPILED ? 'compiled by tsc' : 'through tsx'}), its own process per run, services file with {${BENCH_SERVICE}} and {${WARMUP_SERVICE}}, ` +
        'one token (sha256, jobs:write), LOG_LEVEL info to a file',
      `job: name ${BENCH_OPERATION}, data { input: ~300 B JSON, enqueueId: UUID }, no options (as Ferry's Producer writes it)`,
    ].join('\n'),
  );

  let failedRatio = false;
  if (options.parts.includes('batch')) {
    print(
      [
        '',
        `part 1: batch enqueue, N=${options.jobs} jobs per run in batches of ${options.batch}, ${options.concurrencies.join(' then ')} call(s) in flight on both sides, ` +
          `${options.warmup} warm-up jobs first, ${options.rounds} round(s) of direct, api (order alternates)`,
        '  direct = BullMQ Queue.addBulk from the client process; api = POST /v1/jobs/batch over keep-alive undici to `ferry api`',
        '  per-job columns: CPU time of the client process / API process / redis-server and Redis commands, divided by N',
        '',
        BATCH_HEADER,
      ].join('\n'),
    );
    const summary: string[] = [];
    const shapes = new Map<BatchSide, string>();
    for (const concurrency of options.concurrencies) {
      const runs = new Map<BatchSide, BatchRun[]>(BATCH_SIDES.map((side) => [side, []]));
      for (let round = 1; round <= options.rounds; round++) {
        const order = round % 2 === 1 ? BATCH_SIDES : [...BATCH_SIDES].reverse();
        for (const side of order) {
          const run = await runBatch(side, concurrency, round, admin, options, shapes);
          runs.get(side)!.push(run);
          print(batchResultRow(round, run));
        }
      }
      const direct = runs.get('direct')!;
      const api = runs.get('api')!;
      const ratio = median(api.map((r) => r.jobsPerSec)) / median(direct.map((r) => r.jobsPerSec));
      // Runs of one round are neighbours in time, so their ratio shares the machine's state of the moment.
      const roundRatios = api.map((r, i) => r.jobsPerSec / direct[i]!.jobsPerSec);
      const cpuRatio =
        median(direct.map((r) => totalCpu(r) / r.jobs)) / median(api.map((r) => totalCpu(r) / r.jobs));
      const indent = ' '.repeat(11);
      summary.push(
        batchSummary('direct', direct),
        batchSummary('api', api),
        `${indent}ratio api/direct ${ratio.toFixed(2)} (medians; per round ${roundRatios.map((value) => value.toFixed(2)).join(', ')})`,
        `${indent}median of the per-round ratios ${median(roundRatios).toFixed(2)} (${formatInterval(roundRatios)}); ` +
          `CPU per job, all processes, direct/api ${cpuRatio.toFixed(2)}`,
      );
      if (options.minRatio !== undefined && ratio < options.minRatio) failedRatio = true;
    }
    print(
      [
        '',
        `summary, part 1: median of ${options.rounds} round(s) per side [min-max], N=${options.jobs}, batch ${options.batch}`,
        batchSummaryRow([
          'in flight',
          'side',
          'jobs/s',
          '[min-max]',
          'client µs/job',
          'api µs/job',
          'redis µs/job',
          'total µs/job',
        ]),
        ...summary,
      ].join('\n'),
    );
  }

  if (options.parts.includes('single')) {
    print(
      [
        '',
        `part 2: single POST /v1/jobs under autocannon, ${options.connections} connections, ${options.durationS} s per run, ` +
          `${options.singleRounds} round(s) of ferry, minimal (order alternates); 2,000 warm-up requests first`,
        '  ferry = `ferry api`; minimal = a bare Fastify route doing only queue.add (no auth, no validation, no logger)',
        '',
        SINGLE_HEADER,
      ].join('\n'),
    );
    const runs = new Map<SingleSide, SingleRun[]>(SINGLE_SIDES.map((side) => [side, []]));
    for (let round = 1; round <= options.singleRounds; round++) {
      const order = round % 2 === 1 ? SINGLE_SIDES : [...SINGLE_SIDES].reverse();
      for (const side of order) {
        const run = await runSingle(side, round, admin, options);
        runs.get(side)!.push(run);
        print(singleResultRow(round, run));
      }
    }
    const ferry = runs.get('ferry')!;
    const minimal = runs.get('minimal')!;
    print(
      [
        '',
        `summary, part 2: median of ${options.singleRounds} round(s) per side [min-max], ${options.connections} connections, ${options.durationS} s`,
        singleSummaryRow(['side', 'req/s', '[min-max]', 'p50 ms', 'p99 ms', 'non-2xx', 'server µs/req']),
        singleSummary('ferry', ferry),
        singleSummary('minimal', minimal),
        `ratio ferry/minimal ${(median(ferry.map((r) => r.requestsPerSec)) / median(minimal.map((r) => r.requestsPerSec))).toFixed(2)} (req/s, medians)`,
      ].join('\n'),
    );
  }
  if (options.parts.includes('replicas')) await runReplicasPart(admin, options);
  admin.disconnect();

  print(`\nload average at the end: ${formatLoad()} (at the start: ${loadAtStart})`);
  if (options.keep) print(`kept ${workDir} (API logs, services file, redis dir)`);
  if (options.cpuProfDir !== undefined)
    print(`CPU profiles in ${options.cpuProfDir} (one per process, named by run)`);
  if (failedRatio) {
    process.stderr.write(`enqueue: ratio api/direct below --min-ratio ${options.minRatio}\n`);
    return 1;
  }
  return 0;
}

runBench('enqueue', owned, main);
