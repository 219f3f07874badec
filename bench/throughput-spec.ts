/** What bench/throughput.ts and its per-run process (bench/throughput-worker.ts) exchange. No side effects. */

/**
 * - `bare`: a hand-rolled BullMQ Worker + undici Pool, what a team would write without Ferry (the baseline).
 * - `ferry`: Ferry's createWorkerPool with pino at level `info` (one line per attempt), as it runs in production.
 * - `ferry-silent`: the same with logging off; only to show what logging costs, never the headline.
 * - `ferry-otel` (`--otel`): `ferry` with an OpenTelemetry SDK registered in the worker (every attempt traced,
 *   spans batched and dropped by the exporter); only to show what tracing costs, never the headline.
 */
export type Side = 'bare' | 'ferry' | 'ferry-silent' | 'ferry-otel';
export const SIDES: readonly Side[] = ['bare', 'ferry', 'ferry-silent', 'ferry-otel'];

/** The one service both sides call; the bare side uses the same queue name, so Redis keys are alike. */
export const BENCH_SERVICE = 'bench';
export const BENCH_OPERATION = 'create';
export const BENCH_PATH = '/things';
/**
 * Both sides authenticate with this bearer token, read from the environment the orchestrator gives the run
 * (Ferry resolves it as the secret `bench_token` through its env secret provider; the bare side reads the
 * same variable). The downstream counts the calls that carried it.
 */
export const BENCH_TOKEN_ENV = 'FERRY_SECRET_BENCH_TOKEN';

/** One timed run, passed to the worker process as JSON in `BENCH_RUN`. */
export interface RunSpec {
  side: Side;
  redisUrl: string;
  prefix: string;
  downstreamUrl: string;
  jobs: number;
  concurrency: number;
  /** The services file the ferry sides load (ignored by bare). */
  servicesFile: string;
  /** Where the ferry side's pino writes (ignored by the others). */
  logFile: string;
  timeoutMs: number;
}

/** What the worker process sends back over IPC. Totals over the timed window unless said otherwise. */
export interface RunResult {
  side: Side;
  jobs: number;
  wallMs: number;
  jobsPerSec: number;
  /** The worker process's CPU (user + system), µs. */
  workerCpuUs: number;
  /** redis-server's CPU (INFO cpu), µs. */
  redisCpuUs: number;
  /** Commands Redis processed, including this run's completion polling (2 per 10 ms). */
  redisCommands: number;
  /** The downstream process's CPU, µs, and the calls it answered. */
  downstreamCpuUs: number;
  downstreamRequests: number;
  /** Of those, calls that carried the right bearer token. */
  downstreamAuthorized: number;
  /** Peak RSS of the worker process over its whole life, MiB. */
  peakRssMiB: number;
  /** `attempt completed` lines the ferry side logged (0 for the others). */
  logLines: number;
  /** Jobs left delayed (retried) or failed after the run; both must be 0. */
  delayed: number;
  failed: number;
}
