/**
 * Steady enqueue load on a real `ferry api` + `ferry worker` stack over a Redis Cluster, for the failover and
 * resharding tests: every API answer is recorded (status, Retry-After, when), every downstream call is
 * counted by its Idempotency-Key, so a test can say what was lost, what ran twice and how long the API
 * refused.
 */
import { type Downstream, startDownstream } from './downstream.ts';
import { type FerryProcess, spawnFerry, startWorker, workerEnv, writeServicesFile } from './processes.ts';
import { uniquePrefix } from './redis.ts';
import type { TestCluster } from './redis-cluster.ts';
import { until, waitUntil } from './until.ts';

export const LOAD_TOKEN = 'ferry-cluster-load-token-0123456789';

export interface ClusterStack {
  api: FerryProcess;
  url: string;
  workers: FerryProcess[];
  downstream: Downstream;
  prefix: string;
}

/** `ferry api` and `workers` × `ferry worker` on the cluster, every service calling one downstream. */
export async function startClusterStack(
  cluster: TestCluster,
  services: readonly string[],
  options: { workers?: number } = {},
): Promise<ClusterStack> {
  const downstream = await startDownstream(() => ({ status: 200, body: { ok: true }, delayMs: 5 }));
  const servicesFile = await writeServicesFile({
    services: Object.fromEntries(
      services.map((service) => [
        service,
        {
          baseUrl: downstream.url,
          timeoutMs: 2_000,
          concurrency: 10,
          retry: { attempts: 10, backoff: { delayMs: 100, maxDelayMs: 500 } },
          operations: { op: { method: 'POST', path: `/${service}`, body: '{{ input }}' } },
        },
      ]),
    ),
  });
  const prefix = uniquePrefix();
  const env = {
    ...workerEnv({ redisUrl: '', servicesFile, prefix }),
    REDIS_URL: undefined,
    REDIS_CLUSTER_NODES: cluster.seeds,
  };
  const api = spawnFerry(['api'], {
    env: {
      ...env,
      FERRY_API_TOKENS: JSON.stringify([{ name: 'load', token: LOAD_TOKEN, scopes: ['admin'] }]),
      PORT: '0',
    },
  });
  const workers = await Promise.all(Array.from({ length: options.workers ?? 2 }, () => startWorker(env)));
  const line = await api.waitForLine(/Ferry API listening on/, { timeoutMs: 30_000 });
  const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)![1]!;
  return { api, url, workers, downstream, prefix };
}

export interface Answer {
  service: string;
  key: string;
  sentAt: number;
  answeredAt: number;
  /** HTTP status, or 0 when no answer came within the client's timeout (a hang) or the socket failed. */
  status: number;
  retryAfter: string | null;
  errorType: string | undefined;
}

/** How long one request may take before it counts as a hang (status 0). */
const HANG_MS = 8_000;

/**
 * One client per service, each sending an enqueue, waiting for its answer, then pausing `intervalMs`, until
 * stop(). Every job has its own idempotency key `<service>-<n>`, sent downstream as Idempotency-Key.
 */
export class EnqueueLoad {
  readonly answers: Answer[] = [];
  #stopped = false;
  readonly #loops: Promise<void>[];

  constructor(url: string, services: readonly string[], intervalMs = 40) {
    this.#loops = services.map(async (service) => {
      for (let n = 0; !this.#stopped; n++) {
        const key = `${service}-${n}`;
        const sentAt = Date.now();
        let status = 0;
        let retryAfter: string | null = null;
        let errorType: string | undefined;
        try {
          const response = await fetch(`${url}/v1/jobs`, {
            method: 'POST',
            headers: { authorization: `Bearer ${LOAD_TOKEN}`, 'content-type': 'application/json' },
            body: JSON.stringify({ service, operation: 'op', input: { n }, idempotencyKey: key }),
            signal: AbortSignal.timeout(HANG_MS),
          });
          status = response.status;
          retryAfter = response.headers.get('retry-after');
          const body = (await response.json()) as { error?: { type?: string } };
          errorType = body.error?.type;
        } catch {
          status = 0;
        }
        this.answers.push({ service, key, sentAt, answeredAt: Date.now(), status, retryAfter, errorType });
        // Pacing of the load, not a wait for a condition.
        await new Promise((resolve) => setTimeout(resolve, intervalMs));
      }
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all(this.#loops);
  }

  accepted(): Answer[] {
    return this.answers.filter((answer) => answer.status === 200 || answer.status === 202);
  }
}

/** Downstream calls per Idempotency-Key. */
export function callsByKey(downstream: Downstream): Map<string, number> {
  const calls = new Map<string, number>();
  for (const request of downstream.requests) {
    const key = String(request.headers['idempotency-key'] ?? '');
    calls.set(key, (calls.get(key) ?? 0) + 1);
  }
  return calls;
}

/**
 * Waits (up to timeoutMs) until every accepted job was called at least once; returns the accepted keys that
 * never were (lost) and the keys called more than once (run twice or more).
 */
export async function settle(
  load: EnqueueLoad,
  downstream: Downstream,
  timeoutMs = 20_000,
): Promise<{ lost: Answer[]; duplicates: number; calls: Map<string, number> }> {
  const lostOf = (calls: Map<string, number>): Answer[] =>
    load.accepted().filter((answer) => !calls.has(answer.key));
  // Past the bound the answer is what is still lost, for the caller to assert on: not an error here.
  await until(
    async () => (lostOf(callsByKey(downstream)).length === 0 ? true : undefined),
    timeoutMs,
    () => 'every accepted job called',
    200,
  ).catch(() => undefined);
  const calls = callsByKey(downstream);
  const duplicates = [...calls.values()].filter((count) => count > 1).length;
  return { lost: lostOf(calls), duplicates, calls };
}

export { waitUntil } from './until.ts';

/** Jobs flow before a fault: every service has been called, and `accepted` enqueues were acknowledged. */
export async function waitForFlow(
  stack: ClusterStack,
  load: EnqueueLoad,
  services: readonly string[],
  accepted = 60,
): Promise<void> {
  await waitUntil(
    () => services.every((service) => stack.downstream.requests.some((r) => r.url === `/${service}`)),
    20_000,
    'jobs called for every service',
  );
  await waitUntil(() => load.accepted().length >= accepted, 20_000, `${accepted} accepted enqueues`);
}
