/** Enqueueing over a running `ferry api`, at a steady rate, with a tally of what it answered. */
import { CHAOS_TOKEN } from './ferry.ts';
import type { AcceptedJob } from './jobs.ts';
import { sleep } from './lab.ts';

/** Tally of what the API answered. */
export interface ApiTally {
  accepted: AcceptedJob[];
  /** 5xx answers that are not a 503 with Retry-After (a 503 + Retry-After is the promised answer while Redis is down). */
  serverErrors: number;
  /** 503 + Retry-After answers. */
  unavailable: number;
  /** 4xx answers (none expected from a chaos enqueue). */
  clientErrors: number;
  /** Requests that got no HTTP answer at all (refused, reset, timed out by the client). */
  noAnswer: number;
  /** Slowest answer, in ms (a 503 must come promptly, not after a hang). */
  slowestMs: number;
  /** The first few unexpected answers, for the notes. */
  samples: string[];
}

export function emptyTally(): ApiTally {
  return {
    accepted: [],
    serverErrors: 0,
    unavailable: 0,
    clientErrors: 0,
    noAnswer: 0,
    slowestMs: 0,
    samples: [],
  };
}

/** POSTs one job to `url/v1/jobs`; counts the answer into `tally`. The client gives up after `timeoutMs`. */
export async function enqueueOverApi(
  url: string,
  tally: ApiTally,
  job: { service: string; operation: string; input?: unknown; idempotencyKey?: string },
  timeoutMs = 15_000,
): Promise<void> {
  const started = performance.now();
  try {
    const response = await fetch(`${url}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${CHAOS_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify(job),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    tally.slowestMs = Math.max(tally.slowestMs, Math.round(performance.now() - started));
    if (response.status === 200 || response.status === 202) {
      const body = JSON.parse(text) as { id: string };
      tally.accepted.push({ service: job.service, id: body.id });
    } else if (response.status === 503 && response.headers.get('retry-after') !== null) {
      tally.unavailable++;
    } else if (response.status >= 500) {
      tally.serverErrors++;
      if (tally.samples.length < 3) tally.samples.push(`${response.status} ${text.slice(0, 120)}`);
    } else {
      tally.clientErrors++;
      if (tally.samples.length < 3) tally.samples.push(`${response.status} ${text.slice(0, 120)}`);
    }
  } catch (error) {
    tally.slowestMs = Math.max(tally.slowestMs, Math.round(performance.now() - started));
    tally.noAnswer++;
    if (tally.samples.length < 3)
      tally.samples.push(`no answer: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/**
 * Enqueues `operation` jobs at about `perSecond` until `stop()` (at most `max` jobs), `parallel` requests at a
 * time; `done` resolves when the last request has its answer.
 */
export function steadyEnqueue(options: {
  url: string;
  tally: ApiTally;
  service: string;
  operation: string;
  perSecond: number;
  max: number;
  parallel?: number;
}): { stop(): void; done: Promise<void> } {
  let stopped = false;
  let sent = 0;
  const parallel = options.parallel ?? 4;
  const gapMs = (1000 / options.perSecond) * parallel;
  const lane = async (laneIndex: number): Promise<void> => {
    while (!stopped && sent < options.max) {
      const n = sent++;
      const started = performance.now();
      await enqueueOverApi(options.url, options.tally, {
        service: options.service,
        operation: options.operation,
        input: { n, lane: laneIndex },
      });
      const left = gapMs - (performance.now() - started);
      if (left > 0 && !stopped) await sleep(left);
    }
  };
  const done = Promise.all(Array.from({ length: parallel }, (_, i) => lane(i))).then(() => undefined);
  return {
    stop() {
      stopped = true;
    },
    done,
  };
}
