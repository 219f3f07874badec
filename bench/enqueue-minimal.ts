/**
 * The floor for part 2 of bench/enqueue.ts: a bare Fastify server whose `POST /v1/jobs` does only
 * `queue.add`, with the job name and data Ferry's Producer writes (`{ input, enqueueId }`) on the queue of the
 * body's service. No token, no validation, no request logger, no OpenAPI: what any HTTP front of BullMQ pays
 * per request at least. Run in its own process by the orchestrator, which reads REDIS_URL, FERRY_PREFIX, PORT
 * and HOST like `ferry api`; `GET /healthz` says it is up. Exits on SIGTERM/SIGINT and when its parent's IPC
 * channel closes.
 */
import { randomUUID } from 'node:crypto';

import { Queue } from 'bullmq';
import Fastify from 'fastify';

import type { JobData } from '../src/core/job.ts';
import { serviceQueueName } from '../src/core/queue-layout.ts';
import { createRedisConnection, waitUntilReady } from '../src/core/redis.ts';

const { REDIS_URL, FERRY_PREFIX, PORT, HOST } = process.env;
if (REDIS_URL === undefined || FERRY_PREFIX === undefined || PORT === undefined)
  throw new Error('enqueue-minimal: REDIS_URL, FERRY_PREFIX and PORT must be set');

// The same connection options as Ferry's API (producer role).
const connection = createRedisConnection({ url: REDIS_URL }, 'producer', 'bench-minimal');
await waitUntilReady(connection, 10_000);
const queues = new Map<string, Queue<JobData>>();
const queue = (service: string): Queue<JobData> => {
  let found = queues.get(service);
  if (found === undefined) {
    found = new Queue<JobData>(serviceQueueName(service), { connection, prefix: FERRY_PREFIX });
    queues.set(service, found);
  }
  return found;
};

const app = Fastify({ logger: false });
app.get('/healthz', async () => ({ status: 'ok' }));
app.post('/v1/jobs', async (request, reply) => {
  const body = request.body as { service: string; operation: string; input?: unknown };
  const job = await queue(body.service).add(body.operation, {
    input: body.input ?? null,
    enqueueId: randomUUID(),
  });
  return reply.code(202).send({ id: job.id });
});
await app.listen({ host: HOST ?? '127.0.0.1', port: Number(PORT) });

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  void app
    .close()
    .then(() => Promise.all([...queues.values()].map((q) => q.close())))
    .finally(() => {
      connection.disconnect();
      process.exit(0);
    });
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
process.on('disconnect', stop);
