/**
 * A job's history through GET /v1/jobs/:service/:id and the Producer, on a real redis-server, worker pool and
 * downstream: every run is listed, the one that completed included (built from the job's result when the job
 * is read: the worker writes nothing more per job).
 */
import { describe, expect, it } from 'vitest';

import type { AttemptRecord } from '../../src/core/job.ts';
import { startTestApi, TOKENS } from '../helpers/api.ts';
import { failsThenSucceeds, startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

describe('GET /v1/jobs/:service/:id: the history', () => {
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
    }
  }, 60_000);
});
