/** What bench/enqueue.ts and its processes (enqueue-client.ts, enqueue-minimal.ts) share. No side effects. */

/**
 * Part 1 (batch enqueue):
 * - `direct`: the baseline, BullMQ `Queue.addBulk` from the producing process itself, the same job name, data
 *   and options as Ferry's Producer writes.
 * - `api`: Ferry's HTTP API (`ferry api`, its own process), `POST /v1/jobs/batch` from a client process.
 */
export type BatchSide = 'direct' | 'api';
export const BATCH_SIDES: readonly BatchSide[] = ['direct', 'api'];

/**
 * Part 2 (single `POST /v1/jobs` under autocannon):
 * - `ferry`: Ferry's HTTP API (`ferry api`).
 * - `minimal`: a bare Fastify route that does only `queue.add` (bench/enqueue-minimal.ts), the floor for what
 *   any HTTP front of BullMQ costs per request.
 */
export type SingleSide = 'ferry' | 'minimal';
export const SINGLE_SIDES: readonly SingleSide[] = ['ferry', 'minimal'];

/** The service the timed jobs go to; its queue `{bench}` is counted after each run. */
export const BENCH_SERVICE = 'bench';
/** Warm-up jobs go to their own service (queue `{warmup}`), so they never mix with the counted ones. */
export const WARMUP_SERVICE = 'warmup';
export const BENCH_OPERATION = 'create';

/** The API token goes to the client by environment only, never on a command line. */
export const API_TOKEN_ENV = 'BENCH_API_TOKEN';

/** The job input both benches use (bench/payload.ts). */
export { PAYLOAD } from './payload.ts';

/** One timed run of one part-1 side, passed to bench/enqueue-client.ts as JSON in `BENCH_RUN`. */
export interface ClientSpec {
  side: BatchSide;
  redisUrl: string;
  /** Key prefix of this run (the API process gets the same as FERRY_PREFIX). */
  prefix: string;
  /** The API's `http://127.0.0.1:port` (side `api` only). */
  apiUrl: string | undefined;
  /** Timed jobs, all to BENCH_SERVICE. */
  jobs: number;
  /** Jobs per addBulk call / per HTTP request. */
  batch: number;
  /** addBulk calls / HTTP requests in flight at once. */
  concurrency: number;
  /** Jobs sent to WARMUP_SERVICE before the clock starts, the same way. */
  warmupJobs: number;
}

/** The client's messages to the orchestrator, over IPC. */
export type ClientMessage = { type: 'ready' } | { type: 'result'; result: ClientResult };
/** The orchestrator's one message to the client: start the timed part. */
export interface GoMessage {
  type: 'go';
}

export interface ClientResult {
  side: BatchSide;
  jobs: number;
  /** From the first call / request sent to the last answer received. */
  wallMs: number;
  /** The client process's CPU over that window (user + system), µs. */
  clientCpuUs: number;
  /** Jobs the answers said were added (addBulk's returned jobs, the API's `accepted`). */
  acknowledged: number;
}
