/**
 * Redrive (issue 5): Ferry's replay engine (`replayDeadLetters`, what `ferry dlq replay` and
 * `POST /v1/dead-letters/replay` run) against a bare BullMQ loop, on the same N dead letters, in one run.
 * Prints jobs/s with no rate cap, wall time, and memory (RSS and heap before, after and peak) per side, and the
 * ratio ferry/bare.
 *
 *   npm run bench:redrive -- [--dead-letters 10000] [--rounds 4] [--keep]
 *
 * Layout: this process starts a private redis-server (temp dir, persistence off) and, per run, writes N
 * realistic dead letters (five failed attempts each, a ~300-byte input, tenant, idempotency key, metadata) with
 * Ferry's DeadLetterWriter on a fresh prefix, 500 writes in flight. Then a fresh Node process (this file with
 * `--child`) times one side from its first command until every dead letter is a job on the service queue and
 * gone from `{dead-letter}`, sampling its memory every 5 ms. Sides alternate (ferry, bare / bare, ferry).
 * After each run this process checks the work: N jobs waiting on the service queue, none left in
 * `{dead-letter}` (and, for ferry, none in its index). See bench/README.md (Redrive) for the figures.
 */
import { spawn } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { Queue } from 'bullmq';
import { Redis } from 'ioredis';

import { startPrivateRedis } from '../src/cli/redis-server.ts';
import type { DeadLetterRecord } from '../src/core/job.ts';
import { DEAD_LETTER_QUEUE, serviceQueueName } from '../src/core/queue-layout.ts';
import { waitUntilReady } from '../src/core/redis.ts';
import { deadLetterKeys } from '../src/dead-letter/search-index.ts';
import { DeadLetterWriter } from '../src/dead-letter/writer.ts';
import { replayDeadLetters, replayJobData, replayJobId } from '../src/ops/dead-letter-replay.ts';
import { ownProcesses, runBench } from './owned-processes.ts';
import { PAYLOAD } from './payload.ts';
import { formatInterval, median } from './stats.ts';

const SERVICE = 'bench';
const OPERATION = 'create';
/** Dead letters the bare side reads, adds and removes per round trip: the engine's batch. */
const BARE_BATCH = 200;
const SIDES = ['ferry', 'bare'] as const;
type Side = (typeof SIDES)[number];

const COMPILED = import.meta.url.endsWith('.js');
const NODE_ARGS: readonly string[] = COMPILED ? [] : ['--import', 'tsx'];
const SELF = fileURLToPath(import.meta.url);
const MIB = 1024 * 1024;

interface Memory {
  rss: number;
  heapUsed: number;
}

interface RunResult {
  side: Side;
  deadLetters: number;
  wallMs: number;
  jobsPerSec: number;
  before: Memory;
  after: Memory;
  peak: Memory;
}

/** The same ioredis options on both sides: the CLI's and the API's producer role (fail fast). */
function connect(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
}

// ---- child: one timed side ----

function memoryNow(): Memory {
  const usage = process.memoryUsage();
  return { rss: usage.rss, heapUsed: usage.heapUsed };
}

/** Ferry: the replay engine with no rate cap, as `ferry dlq replay` (all filters off) runs it. */
async function runFerry(connection: Redis, prefix: string, n: number): Promise<void> {
  const report = await replayDeadLetters({ connection, prefix, services: new Set([SERVICE]) });
  if (report.replayed !== n || report.failed !== 0 || report.skipped !== 0) {
    throw new Error(
      `ferry replayed ${report.replayed}, skipped ${report.skipped}, failed ${report.failed} of ${n}`,
    );
  }
}

/**
 * Bare: what a script written against BullMQ alone would do. Read a page of dead-letter jobs (newest first,
 * LRANGE + one HGETALL each), add them to the service queue with one `addBulk` (the same job ids and data as
 * Ferry's replay), remove them from `{dead-letter}` (BullMQ's removeJob), until none is left. It leaves
 * Ferry's index entries behind and has no guard against a crash between add and remove (a re-run cannot tell
 * which were added), which is what the engine's marker and index upkeep pay for.
 */
async function runBare(connection: Redis, prefix: string, n: number): Promise<void> {
  const deadLetters = new Queue<DeadLetterRecord>(DEAD_LETTER_QUEUE, { connection, prefix });
  const queue = new Queue(serviceQueueName(SERVICE), { connection, prefix });
  let moved = 0;
  try {
    for (;;) {
      const jobs = (await deadLetters.getJobs(['wait'], 0, BARE_BATCH - 1)).filter(
        (job) => job !== undefined,
      );
      if (jobs.length === 0) break;
      await queue.addBulk(
        jobs.map((job) => ({
          name: job.data.operation,
          data: replayJobData(job.id!, job.data),
          opts: { jobId: replayJobId(job.id!) },
        })),
      );
      await Promise.all(jobs.map((job) => job.remove()));
      moved += jobs.length;
    }
  } finally {
    await Promise.all([deadLetters.close(), queue.close()]);
  }
  if (moved !== n) throw new Error(`bare moved ${moved} of ${n}`);
}

async function child(side: Side, url: string, prefix: string, n: number): Promise<RunResult> {
  const connection = connect(url);
  await waitUntilReady(connection);
  (globalThis as { gc?: () => void }).gc?.();
  const before = memoryNow();
  const peak = { ...before };
  const sampler = setInterval(() => {
    const now = memoryNow();
    peak.rss = Math.max(peak.rss, now.rss);
    peak.heapUsed = Math.max(peak.heapUsed, now.heapUsed);
  }, 5);
  const startedAt = performance.now();
  if (side === 'ferry') await runFerry(connection, prefix, n);
  else await runBare(connection, prefix, n);
  const wallMs = performance.now() - startedAt;
  clearInterval(sampler);
  const after = memoryNow();
  peak.rss = Math.max(peak.rss, after.rss);
  peak.heapUsed = Math.max(peak.heapUsed, after.heapUsed);
  connection.disconnect();
  return { side, deadLetters: n, wallMs, jobsPerSec: n / (wallMs / 1000), before, after, peak };
}

// ---- orchestrator ----

const owned = ownProcesses('redrive bench', 5_000);

/** N dead letters as a worker writes them after five 503s, spread over the last N × 10 ms. */
async function seed(url: string, prefix: string, n: number): Promise<number> {
  const connection = connect(url);
  await waitUntilReady(connection);
  const writer = new DeadLetterWriter({ connection, prefix });
  const startedAt = performance.now();
  const base = Date.now() - n * 10 - 60_000;
  const record = (i: number): DeadLetterRecord => {
    const enqueuedAt = base + i * 10;
    const attempts = [1, 2, 3, 4, 5].map((attempt) => ({
      attempt,
      outcome: 'failed' as const,
      at: enqueuedAt + attempt * 1_000,
      durationMs: 40 + attempt,
      type: 'ServerError' as const,
      status: 503,
      message: '503 Service Unavailable',
      ...(attempt < 5 ? { retryDelayMs: 1_000 * 2 ** (attempt - 1) } : {}),
    }));
    return {
      service: SERVICE,
      operation: OPERATION,
      input: { ...PAYLOAD, orderId: `order-${i}` },
      tenant: `tenant-${i % 5}`,
      idempotencyKey: `order-${i}`,
      metadata: { source: 'checkout', orderId: i },
      sourceJobId: String(i + 1),
      sourceQueue: serviceQueueName(SERVICE),
      attempts,
      finalError: { type: 'ServerError', message: '503 Service Unavailable', status: 503 },
      deadLetteredAt: enqueuedAt + 5_100,
      enqueuedAt,
    };
  };
  try {
    const inFlight = 500;
    for (let start = 0; start < n; start += inFlight) {
      const count = Math.min(inFlight, n - start);
      await Promise.all(Array.from({ length: count }, (_, k) => writer.write(record(start + k))));
    }
  } finally {
    await writer.close();
    connection.disconnect();
  }
  return n / ((performance.now() - startedAt) / 1000);
}

/** The work really happened: N jobs waiting on the service queue, nothing left of the dead letters. */
async function check(url: string, prefix: string, result: RunResult): Promise<void> {
  const connection = connect(url);
  await waitUntilReady(connection);
  const queue = new Queue(serviceQueueName(SERVICE), { connection, prefix });
  const deadLetters = new Queue(DEAD_LETTER_QUEUE, { connection, prefix });
  try {
    const waiting = await queue.getJobCountByTypes('wait', 'prioritized');
    const left = await deadLetters.getJobCountByTypes('wait');
    const indexed = await connection.zcard(deadLetterKeys(prefix).byTime);
    // One job, as the service's worker will take it: Ferry's job data with the original key, fresh attempts.
    const [first] = await queue.getWaiting(0, 0);
    const data = first?.data as { idempotencyKey?: string; replayOf?: string; ferry?: unknown } | undefined;
    if (
      first?.id?.startsWith(`rp-dl-${SERVICE}.`) !== true ||
      data?.idempotencyKey?.startsWith('order-') !== true ||
      data.replayOf !== first.id.slice(3) ||
      data.ferry !== undefined
    ) {
      throw new Error(
        `${result.side}: a replayed job is not as Ferry's replay writes it: ${JSON.stringify(first?.id)}`,
      );
    }
    if (waiting !== result.deadLetters || left !== 0 || (result.side === 'ferry' && indexed !== 0)) {
      throw new Error(
        `${result.side}: ${waiting} jobs waiting (want ${result.deadLetters}), ${left} dead letters left, ${indexed} indexed`,
      );
    }
  } finally {
    await Promise.all([queue.close(), deadLetters.close()]);
    connection.disconnect();
  }
}

function runChild(side: Side, url: string, prefix: string, n: number): Promise<RunResult> {
  const process_ = owned.track(
    spawn(
      process.execPath,
      [
        ...NODE_ARGS,
        '--expose-gc',
        SELF,
        '--child',
        side,
        '--redis',
        url,
        '--prefix',
        prefix,
        '--dead-letters',
        String(n),
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    ),
  );
  return new Promise((resolve, reject) => {
    let out = '';
    process_.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    process_.once('error', reject);
    process_.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`${side} run exited with ${code}`));
      const line = out.trim().split('\n').at(-1) ?? '';
      resolve(JSON.parse(line) as RunResult);
    });
  });
}

const mib = (bytes: number): string => (bytes / MIB).toFixed(0);

function row(round: number, result: RunResult, seedRate: number): string {
  const { before, after, peak } = result;
  return [
    String(round).padStart(5),
    result.side.padEnd(6),
    result.jobsPerSec.toFixed(0).padStart(7),
    (result.wallMs / 1000).toFixed(2).padStart(7),
    `${mib(before.rss)} / ${mib(after.rss)} / ${mib(peak.rss)}`.padStart(16),
    `${mib(before.heapUsed)} / ${mib(after.heapUsed)} / ${mib(peak.heapUsed)}`.padStart(16),
    seedRate.toFixed(0).padStart(8),
  ].join('  ');
}

function readOptions(): { deadLetters: number; rounds: number; keep: boolean } {
  const { values } = parseArgs({
    options: {
      'dead-letters': { type: 'string', default: '10000' },
      rounds: { type: 'string', default: '4' },
      keep: { type: 'boolean', default: false },
      child: { type: 'string' },
      redis: { type: 'string' },
      prefix: { type: 'string' },
    },
  });
  const deadLetters = Number(values['dead-letters']);
  const rounds = Number(values.rounds);
  if (
    !(Number.isSafeInteger(deadLetters) && deadLetters >= 1) ||
    !(Number.isSafeInteger(rounds) && rounds >= 1)
  ) {
    process.stderr.write('redrive bench: --dead-letters and --rounds must be whole numbers >= 1\n');
    process.exit(2);
  }
  return { deadLetters, rounds, keep: values.keep };
}

async function main(): Promise<number> {
  const options = readOptions();
  owned.keepWorkDir = options.keep;
  const n = options.deadLetters;
  const loadAtStart = loadavg()
    .map((v) => v.toFixed(2))
    .join(', ');
  const workDir = (owned.workDir = await mkdtemp(join(tmpdir(), 'ferry-redrive-')));
  const redis = (owned.redis = await startPrivateRedis({ dir: join(workDir, 'redis'), appendfsync: 'no' }));
  const admin = connect(redis.url);
  await waitUntilReady(admin);
  const redisVersion = /^redis_version:(\S+)/m.exec(await admin.info('server'))?.[1] ?? '?';
  const cpu = cpus();
  process.stdout.write(
    `ferry redrive bench: ${n} dead letters per run, no rate cap, ${options.rounds} round(s) of ferry and bare (order alternates)\n` +
      `machine: ${cpu.length} x ${cpu[0]?.model.trim() ?? '?'}, node ${process.version}, redis ${redisVersion}, load average ${loadAtStart}\n\n` +
      `${'round'.padStart(5)}  ${'side'.padEnd(6)}  ${'jobs/s'.padStart(7)}  ${'wall s'.padStart(7)}  ${'RSS MiB b/a/peak'.padStart(16)}  ${'heap MiB b/a/pk'.padStart(16)}  ${'seed/s'.padStart(8)}\n`,
  );
  const results: Record<Side, RunResult[]> = { ferry: [], bare: [] };
  const ratios: number[] = [];
  for (let round = 1; round <= options.rounds; round++) {
    const order: readonly Side[] = round % 2 === 1 ? SIDES : [...SIDES].reverse();
    const rates: Partial<Record<Side, number>> = {};
    for (const side of order) {
      await admin.flushall();
      const prefix = `rd${round}${side}`;
      const seedRate = await seed(redis.url, prefix, n);
      const result = await runChild(side, redis.url, prefix, n);
      await check(redis.url, prefix, result);
      results[side].push(result);
      rates[side] = result.jobsPerSec;
      process.stdout.write(`${row(round, result, seedRate)}\n`);
    }
    ratios.push(rates.ferry! / rates.bare!);
  }
  admin.disconnect();

  process.stdout.write(
    `\n${'side'.padEnd(6)}  ${'jobs/s'.padStart(7)}  [min-max]      ${'wall s'.padStart(6)}  peak RSS MiB  peak heap MiB  RSS growth MiB\n`,
  );
  for (const side of SIDES) {
    const list = results[side];
    const rates = list.map((r) => r.jobsPerSec);
    process.stdout.write(
      `${side.padEnd(6)}  ${median(rates).toFixed(0).padStart(7)}  ${`[${Math.min(...rates).toFixed(0)}-${Math.max(...rates).toFixed(0)}]`.padEnd(13)}  ` +
        `${median(list.map((r) => r.wallMs / 1000))
          .toFixed(2)
          .padStart(6)}  ${mib(median(list.map((r) => r.peak.rss))).padStart(12)}  ` +
        `${mib(median(list.map((r) => r.peak.heapUsed))).padStart(13)}  ${mib(median(list.map((r) => r.peak.rss - r.before.rss))).padStart(14)}\n`,
    );
  }
  const ratioOfMedians =
    median(results.ferry.map((r) => r.jobsPerSec)) / median(results.bare.map((r) => r.jobsPerSec));
  process.stdout.write(
    `\nferry / bare jobs/s: ${ratioOfMedians.toFixed(2)} (ratio of medians); per round ${ratios.map((r) => r.toFixed(2)).join(', ')}; ` +
      `median ${median(ratios).toFixed(2)}, ${formatInterval(ratios)}\n` +
      `load average at the end ${loadavg()
        .map((v) => v.toFixed(2))
        .join(', ')}\n`,
  );
  return 0;
}

// `--child <side>` (with --redis and --prefix) is one timed run, spawned by main above.
const { values: args } = parseArgs({
  strict: false,
  options: {
    child: { type: 'string' },
    redis: { type: 'string' },
    prefix: { type: 'string' },
    'dead-letters': { type: 'string' },
  },
});
if (typeof args.child === 'string') {
  const side = args.child as Side;
  child(side, String(args.redis), String(args.prefix), Number(args['dead-letters']))
    .then((result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      process.exit(0);
    })
    .catch((error: unknown) => {
      process.stderr.write(
        `redrive ${side}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
      process.exit(1);
    });
} else {
  runBench('redrive bench', owned, main);
}
