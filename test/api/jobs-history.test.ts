/**
 * A job's history through GET /v1/jobs/:service/:id, the Producer and its Server-Sent Events, on a real
 * redis-server, worker pool and downstream: every run is listed, the one that completed included (built from
 * the job's result when the job is read: the worker writes nothing more per job). The CLI's `--wait` is
 * test/cli/enqueue-history.test.ts.
 */
import { describe, expect, it } from 'vitest';

import type { AttemptRecord } from '../../src/core/job.ts';
import { startTestApi, TOKENS } from '../helpers/api.ts';
import { failsThenSucceeds, startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

interface StreamEvent {
  event: string;
  data: Record<string, unknown>;
}

/** A finished job's event stream, read to its end (the server ends it after the terminal event). */
async function readFinishedStream(url: string, token: string): Promise<StreamEvent[]> {
  const response = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  expect(response.status).toBe(200);
  const text = await response.text();
  return text
    .split('\n\n')
    .map((block) => block.split('\n'))
    .filter((lines) => lines.some((line) => line.startsWith('event: ')))
    .map((lines) => {
      const field = (name: string): string =>
        lines.find((line) => line.startsWith(`${name}: `))?.slice(name.length + 2) ?? '';
      return { event: field('event'), data: JSON.parse(field('data')) as Record<string, unknown> };
    });
}

describe("a job's history: GET, the Producer and SSE", () => {
  it('lists every run of a 1-, 2- and 3-attempt job, the completed one last', async () => {
    // Each job's input says how many times its calls fail (500) before one succeeds (200).
    const downstream = await startDownstream(failsThenSucceeds());
    const ferry = await createTestFerry(redis, {
      services: {
        services: {
          svc: {
            baseUrl: downstream.url,
            retry: { attempts: 3, backoff: { delayMs: 20, maxDelayMs: 50 } },
            operations: { create: { method: 'POST', path: '/things', body: '{{ input }}' } },
          },
        },
      },
    });
    const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });

    for (const fails of [0, 1, 2]) {
      const enqueuedAt = Date.now();
      const { id } = await ferry.producer.enqueue({
        service: 'svc',
        operation: 'create',
        input: { fails },
        idempotencyKey: `history-${fails}`,
      });
      const waited = await ferry.producer.waitFor('svc', id);
      expect(waited.state).toBe('completed');
      const response = await api.request('GET', `/v1/jobs/svc/${id}`, { token: TOKENS.reader });
      expect(response.status).toBe(200);
      const view = response.body as { attempts: number; history: AttemptRecord[]; lastError?: unknown };
      const attempts = fails + 1;
      expect(view.attempts).toBe(attempts);
      expect(view.history.map((a) => [a.attempt, a.outcome, a.status])).toEqual([
        ...Array.from({ length: fails }, (_, i) => [i + 1, 'failed', 500]),
        [attempts, 'completed', 200],
      ]);
      const last = view.history.at(-1)!;
      expect(last.durationMs).toBeGreaterThanOrEqual(0);
      // Within the job's life (generous: clocks of one machine), after every failed run.
      expect(last.at).toBeGreaterThanOrEqual(enqueuedAt - 1000);
      expect(last.at).toBeLessThanOrEqual(Date.now() + 1000);
      for (const failed of view.history.slice(0, -1)) expect(last.at).toBeGreaterThanOrEqual(failed.at);
      // The Producer's JobView is the same view.
      const fromProducer = await ferry.producer.get('svc', id);
      expect(fromProducer?.history).toEqual(view.history);
      expect(fromProducer?.attempts).toBe(attempts);

      // SSE: each failed run's `retrying` and the `completed` event carry the run as the history records it.
      const events = await readFinishedStream(`${api.url}/v1/jobs/svc/${id}/events`, TOKENS.reader);
      const runs = events.filter((e) => e.event === 'retrying' || e.event === 'completed');
      expect(runs.map((e) => e.event)).toEqual([...Array(fails).fill('retrying'), 'completed']);
      for (const [i, failed] of view.history.slice(0, -1).entries()) {
        expect(runs[i]!.data).toMatchObject({
          attempt: failed.attempt,
          at: failed.at,
          durationMs: failed.durationMs,
          error: { status: 500 },
        });
      }
      const { run } = runs.at(-1)!.data as { run: AttemptRecord };
      expect(run).toMatchObject({ attempt: attempts, outcome: 'completed', status: 200 });
      expect(run.durationMs).toBe(last.durationMs);
      // The stream dates the run from its entry's time, the job API from BullMQ's finishedOn: one machine's
      // clock, a few ms apart.
      expect(Math.abs(run.at - last.at)).toBeLessThanOrEqual(1000);
    }
  }, 60_000);
});
