/**
 * One timed run of bench/throughput.ts, in a fresh process (so every run starts with a cold JIT and an empty
 * heap, and its peak RSS is its own). Started by throughput.ts with an IPC channel; not meant to be run by
 * hand. The jobs are already on the queue; this process builds one side (not timed), then times it from
 * starting the worker until all N jobs are completed, closes it and sends one RunResult over IPC.
 *
 * Sides:
 * - `bare`: what a team would write without Ferry: a BullMQ Worker (same connection options, concurrency and
 *   job retention as Ferry) + an undici Pool (keep-alive, one socket per concurrent job, timeouts) that POSTs
 *   the job's input as JSON with the bearer token from the environment and an Idempotency-Key, checks the
 *   status and returns `{ status, body }`; failures are retried by BullMQ through the jobs' `attempts`.
 * - `ferry`: Ferry's createWorkerPool on the services file the orchestrator wrote (loaded with the real
 *   loader), secrets from the environment through the env secret provider, breaker on, pino at level `info`
 *   writing one line per attempt to a file through Ferry's own log destination (createLogDestination:
 *   asynchronous, buffered as by default), what Ferry does with stdout.
 * - `ferry-silent`: the same with the logger at level `silent`, to show what logging costs. Not the headline.
 * - `ferry-otel`: `ferry` with an OpenTelemetry SDK registered (registerTracing), to show what tracing costs.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { ExportResultCode, W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { type Job, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { Pool } from 'undici';

import type { JobData } from '../src/core/job.ts';
import { createLogDestination, createLogger } from '../src/core/logger.ts';
import { serviceQueueName } from '../src/core/queue-layout.ts';
import { loadServicesFile } from '../src/core/services/load.ts';
import { createEnvSecretResolver } from '../src/secrets/env-provider.ts';
import { createWorkerPool } from '../src/worker/worker-pool.ts';
import {
  BENCH_PATH,
  BENCH_SERVICE,
  BENCH_TOKEN_ENV,
  type RunResult,
  type RunSpec,
  SIDES,
} from './throughput-spec.ts';

const POLL_MS = 10;
/** Ferry's default retention (WorkerPoolOptions keepCompletedMs / keepFailedMs), given to the bare side too. */
const KEEP_COMPLETED_S = 24 * 60 * 60;
const KEEP_FAILED_S = 7 * 24 * 60 * 60;

async function main(): Promise<RunResult> {
  const spec = JSON.parse(process.env.BENCH_RUN ?? 'null') as RunSpec | null;
  if (spec === null || !SIDES.includes(spec.side))
    throw new Error('throughput-worker: BENCH_RUN is missing or bad (run bench/throughput.ts instead)');
  const queueName = serviceQueueName(BENCH_SERVICE);
  const key = (suffix: string): string => `${spec.prefix}:${queueName}:${suffix}`;
  // The worker's shared connection, as Ferry's CLI makes it (worker role), and a separate one for polling.
  const connection = new Redis(spec.redisUrl, { maxRetriesPerRequest: null });
  const probe = new Redis(spec.redisUrl, { maxRetriesPerRequest: 1 });
  await Promise.all([connection.ping(), probe.ping()]);

  const side =
    spec.side === 'bare'
      ? createBareSide(spec, queueName, connection)
      : await createFerrySide(spec, connection);
  await side.ready();

  const before = await snapshot(probe, spec.downstreamUrl);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await side.start();
  const deadline = t0 + spec.timeoutMs;
  for (;;) {
    await sleep(POLL_MS);
    const [completed, failed] = await Promise.all([
      probe.zcard(key('completed')),
      probe.zcard(key('failed')),
    ]);
    if (failed > 0)
      throw new Error(
        `${spec.side}: ${failed} job(s) failed; first reasons: ${await failedReasons(probe, key)}`,
      );
    if (completed >= spec.jobs) break;
    if (performance.now() > deadline)
      throw new Error(
        `${spec.side}: only ${completed}/${spec.jobs} jobs completed within ${spec.timeoutMs} ms`,
      );
  }
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const after = await snapshot(probe, spec.downstreamUrl);

  await side.close();
  const [delayed, failed] = await Promise.all([probe.zcard(key('delayed')), probe.zcard(key('failed'))]);
  connection.disconnect();
  probe.disconnect();

  const result: RunResult = {
    side: spec.side,
    jobs: spec.jobs,
    wallMs,
    jobsPerSec: spec.jobs / (wallMs / 1000),
    workerCpuUs: cpu.user + cpu.system,
    redisCpuUs: after.redisCpuUs - before.redisCpuUs,
    redisCommands: after.redisCommands - before.redisCommands,
    downstreamCpuUs: after.downstreamCpuUs - before.downstreamCpuUs,
    downstreamRequests: after.downstreamRequests - before.downstreamRequests,
    downstreamAuthorized: after.downstreamAuthorized - before.downstreamAuthorized,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    logLines: side.logLines(),
    delayed,
    failed,
  };
  return result;
}

interface BenchSide {
  /** Everything that is not the work itself: connections up, worker built (not running). */
  ready(): Promise<void>;
  /** Starts taking jobs; resolves once the worker runs (not when the jobs are done). */
  start(): Promise<void>;
  close(): Promise<void>;
  logLines(): number;
}

function createBareSide(spec: RunSpec, queueName: string, connection: Redis): BenchSide {
  const token = process.env[BENCH_TOKEN_ENV];
  if (token === undefined) throw new Error(`bare: ${BENCH_TOKEN_ENV} is not set`);
  const authorization = `Bearer ${token}`;
  // Keep-alive pool with one socket per concurrent job, and timeouts, as any production worker would have.
  const http = new Pool(spec.downstreamUrl, {
    connections: spec.concurrency,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  const processor = async (job: Job<JobData>): Promise<{ status: number; body: unknown }> => {
    const response = await http.request({
      path: BENCH_PATH,
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization,
        'idempotency-key': job.data.idempotencyKey ?? job.id ?? '',
      },
      body: JSON.stringify(job.data.input),
    });
    if (response.statusCode < 200 || response.statusCode >= 300) {
      await response.body.dump();
      // Thrown: BullMQ retries it with the job's `attempts` and exponential `backoff` (set when enqueued).
      throw new Error(`downstream answered ${response.statusCode}`);
    }
    return { status: response.statusCode, body: await response.body.json() };
  };
  const worker = new Worker<JobData>(queueName, processor, {
    connection,
    prefix: spec.prefix,
    concurrency: spec.concurrency,
    autorun: false,
    // The same retention as Ferry's defaults (a day of completed jobs, a week of failed ones).
    removeOnComplete: { age: KEEP_COMPLETED_S },
    removeOnFail: { age: KEEP_FAILED_S },
  });
  worker.on('error', (error) => process.stderr.write(`bare worker error: ${String(error)}\n`));
  worker.on('failed', (job, error) =>
    process.stderr.write(`bare job ${job?.id ?? '?'} failed: ${error.message}\n`),
  );
  return {
    ready: () => worker.waitUntilReady().then(() => undefined),
    start: async () => {
      worker.run().catch((error: unknown) => process.stderr.write(`bare worker stopped: ${String(error)}\n`));
    },
    close: async () => {
      await worker.close();
      await http.close();
    },
    logLines: () => 0,
  };
}

/**
 * What a user's SDK set-up does (docs/operations.md, Tracing), with an exporter that drops the spans instead of
 * sending them: a BasicTracerProvider (always-on sampling) with a BatchSpanProcessor, the AsyncLocalStorage
 * context manager and the W3C propagator (so every call also carries `traceparent`).
 */
function registerTracing(): () => Promise<void> {
  const exporter: SpanExporter = {
    export: (_spans, done) => done({ code: ExportResultCode.SUCCESS }),
    shutdown: async () => undefined,
  };
  const provider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(exporter)] });
  trace.setGlobalTracerProvider(provider);
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  return () => provider.shutdown();
}

async function createFerrySide(spec: RunSpec, connection: Redis): Promise<BenchSide> {
  const stopTracing = spec.side === 'ferry-otel' ? registerTracing() : undefined;
  // The real loader on a real file; FERRY_SECRET_BENCH_TOKEN comes from our environment, like a deployment's.
  const config = await loadServicesFile(spec.servicesFile, process.env);
  const silent = spec.side === 'ferry-silent';
  // Ferry's own destination (asynchronous, buffered as by default) on a file instead of stdout: the bench's
  // output stays readable and the lines can be counted.
  const destination = createLogDestination({ dest: spec.logFile });
  const logger = createLogger({ level: silent ? 'silent' : 'info', destination });
  const pool = createWorkerPool({
    config,
    connection,
    prefix: spec.prefix,
    secrets: createEnvSecretResolver(process.env),
    logger,
  });
  return {
    ready: async () => undefined,
    start: () => pool.start(),
    close: async () => {
      await pool.close({ deadlineMs: 10_000 });
      destination.flushSync();
      await stopTracing?.();
    },
    logLines: () => {
      if (silent) return 0;
      const text = readFileSync(spec.logFile, 'utf8');
      let lines = 0;
      for (const line of text.split('\n')) if (line.includes('"attempt completed"')) lines++;
      return lines;
    },
  };
}

interface Snapshot {
  redisCpuUs: number;
  redisCommands: number;
  downstreamCpuUs: number;
  downstreamRequests: number;
  downstreamAuthorized: number;
}

async function snapshot(redis: Redis, downstreamUrl: string): Promise<Snapshot> {
  const [cpu, stats, downstream] = await Promise.all([
    redis.info('cpu'),
    redis.info('stats'),
    fetch(`${downstreamUrl}/stats`).then(
      (response) => response.json() as Promise<{ requests: number; authorized: number; cpuUs: number }>,
    ),
  ]);
  const field = (text: string, name: string): number => {
    const match = new RegExp(`^${name}:([0-9.]+)`, 'm').exec(text);
    if (match?.[1] === undefined) throw new Error(`redis INFO has no ${name}`);
    return Number(match[1]);
  };
  return {
    redisCpuUs: (field(cpu, 'used_cpu_user') + field(cpu, 'used_cpu_sys')) * 1e6,
    redisCommands: field(stats, 'total_commands_processed'),
    downstreamCpuUs: downstream.cpuUs,
    downstreamRequests: downstream.requests,
    downstreamAuthorized: downstream.authorized,
  };
}

async function failedReasons(redis: Redis, key: (suffix: string) => string): Promise<string> {
  const ids = await redis.zrange(key('failed'), '0', '2');
  const reasons = await Promise.all(ids.map((id) => redis.hget(key(id), 'failedReason')));
  return reasons.map((reason, i) => `${ids[i]}: ${reason ?? '?'}`).join('; ');
}

// The parent went away (Ctrl-C, crash): stop at once rather than run on unobserved.
process.on('disconnect', () => process.exit(1));

main().then(
  (result) => {
    if (process.send === undefined) {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      process.exit(0);
    }
    process.send(result, () => process.exit(0));
  },
  (error: unknown) => {
    process.stderr.write(
      `throughput-worker: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  },
);
