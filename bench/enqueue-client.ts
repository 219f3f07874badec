/**
 * One timed run of part 1 of bench/enqueue.ts (batch enqueue), in a fresh process. Started by enqueue.ts with
 * an IPC channel; not meant to be run by hand. Connects, sends the warm-up jobs, says `ready`, waits for `go`,
 * then enqueues N jobs in batches with a fixed number of calls in flight and sends one ClientResult back.
 *
 * Sides:
 * - `direct`: BullMQ `Queue.addBulk` on Ferry's queue `{bench}`, over an ioredis connection with the options
 *   Ferry's API uses (producer role: no offline queue, command timeout), each job written as Ferry's Producer
 *   writes it: name = operation, data = `{ input, enqueueId }` (a fresh UUID per job), no job options.
 * - `api`: `POST /v1/jobs/batch` to Ferry's API (started by the orchestrator) over keep-alive undici
 *   connections, one per call in flight, with the bearer token; every answer must be 200 with every job
 *   accepted.
 *
 * Both sides build each call's jobs inside the timed window (the UUIDs and objects for addBulk, the JSON body
 * for HTTP), as a producer with real jobs would.
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';

import { Queue } from 'bullmq';
import { Pool } from 'undici';

import type { JobData } from '../src/core/job.ts';
import { serviceQueueName } from '../src/core/queue-layout.ts';
import { createRedisConnection, waitUntilReady } from '../src/core/redis.ts';
import {
  API_TOKEN_ENV,
  BATCH_SIDES,
  BENCH_OPERATION,
  BENCH_SERVICE,
  type ClientMessage,
  type ClientResult,
  type ClientSpec,
  type GoMessage,
  PAYLOAD,
  WARMUP_SERVICE,
} from './enqueue-spec.ts';

/** Sends `size` jobs for `service` in one call; resolves with how many the answer acknowledged. */
type SendBatch = (service: string, size: number) => Promise<number>;

interface Side {
  send: SendBatch;
  close(): Promise<void>;
}

async function directSide(spec: ClientSpec): Promise<Side> {
  // The connection Ferry's API enqueues through (cli/runtime.ts connect(env, 'producer', …)).
  const connection = createRedisConnection({ url: spec.redisUrl }, 'producer', 'bench-direct');
  await waitUntilReady(connection, 10_000);
  const queues = new Map(
    [BENCH_SERVICE, WARMUP_SERVICE].map((service) => [
      service,
      new Queue<JobData>(serviceQueueName(service), { connection, prefix: spec.prefix }),
    ]),
  );
  return {
    async send(service, size) {
      // What Producer.#add hands to addBulk for a job without idempotency key, delay or priority.
      const jobs = await queues.get(service)!.addBulk(
        Array.from({ length: size }, () => ({
          name: BENCH_OPERATION,
          data: { input: PAYLOAD, enqueueId: randomUUID() },
          opts: {},
        })),
      );
      return jobs.length;
    },
    async close() {
      await Promise.all([...queues.values()].map((queue) => queue.close()));
      connection.disconnect();
    },
  };
}

function apiSide(spec: ClientSpec): Side {
  const token = process.env[API_TOKEN_ENV];
  if (spec.apiUrl === undefined || token === undefined)
    throw new Error(`api side: apiUrl or ${API_TOKEN_ENV} missing`);
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` };
  const pool = new Pool(spec.apiUrl, { connections: spec.concurrency, pipelining: 1 });
  return {
    async send(service, size) {
      const body = JSON.stringify({
        jobs: Array.from({ length: size }, () => ({ service, operation: BENCH_OPERATION, input: PAYLOAD })),
      });
      const response = await pool.request({ path: '/v1/jobs/batch', method: 'POST', headers, body });
      const text = await response.body.text();
      if (response.statusCode !== 200)
        throw new Error(`POST /v1/jobs/batch answered ${response.statusCode}: ${text.slice(0, 500)}`);
      const answer = JSON.parse(text) as { accepted: number; rejected: number };
      if (answer.accepted !== size || answer.rejected !== 0)
        throw new Error(
          `POST /v1/jobs/batch accepted ${answer.accepted} and rejected ${answer.rejected} of ${size} jobs: ` +
            text.slice(0, 500),
        );
      return answer.accepted;
    },
    close: () => pool.close(),
  };
}

/** `total` jobs in calls of at most `batch`, `concurrency` calls in flight. Resolves with the acknowledged count. */
async function drive(
  send: SendBatch,
  service: string,
  total: number,
  batch: number,
  concurrency: number,
): Promise<number> {
  let next = 0;
  let acknowledged = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const size = Math.min(batch, total - next);
        next += size;
        // Not `acknowledged += await …`: that reads `acknowledged` before the await and loses the others' counts.
        const added = await send(service, size);
        acknowledged += added;
      }
    }),
  );
  return acknowledged;
}

async function main(): Promise<ClientResult> {
  const spec = JSON.parse(process.env.BENCH_RUN ?? 'null') as ClientSpec | null;
  if (spec === null || !BATCH_SIDES.includes(spec.side))
    throw new Error('enqueue-client: BENCH_RUN is missing or bad (run bench/enqueue.ts instead)');
  const side = spec.side === 'direct' ? await directSide(spec) : apiSide(spec);
  if (spec.warmupJobs > 0)
    await drive(side.send, WARMUP_SERVICE, spec.warmupJobs, spec.batch, spec.concurrency);

  const go = once(process, 'message') as Promise<[GoMessage]>;
  send({ type: 'ready' });
  await go;

  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const acknowledged = await drive(side.send, BENCH_SERVICE, spec.jobs, spec.batch, spec.concurrency);
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  await side.close();
  return { side: spec.side, jobs: spec.jobs, wallMs, clientCpuUs: cpu.user + cpu.system, acknowledged };
}

function send(message: ClientMessage, callback: () => void = () => undefined): void {
  if (process.send === undefined) throw new Error('enqueue-client: no IPC channel (run bench/enqueue.ts)');
  process.send(message, callback);
}

// The parent went away (Ctrl-C, crash): stop at once rather than run on unobserved.
process.on('disconnect', () => process.exit(1));

main().then(
  (result) => send({ type: 'result', result }, () => process.exit(0)),
  (error: unknown) => {
    process.stderr.write(
      `enqueue-client: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  },
);
