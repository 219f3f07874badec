/**
 * The attempt history as Redis really holds it (core/stored-history.ts, docs/queue-layout.md): a retried job's
 * data and a dead letter's data, read with HGET, are the compact positional runs behind the version marker,
 * with no field name repeated, while the API shows the same runs as the AttemptRecord objects it always did.
 * The codec's tables are test/core/stored-history.test.ts.
 */
import { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';

import type { AttemptRecord } from '../../src/core/job.ts';
import { DEAD_LETTER_QUEUE, serviceQueueName } from '../../src/core/queue-layout.ts';
import { startTestApi, TOKENS } from '../helpers/api.ts';
import { failsThenSucceeds, startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

/** A stored run, as the object the API shows for it (the positions of docs/queue-layout.md). */
function asRecord(run: unknown[]): AttemptRecord {
  const [attempt, outcome, at, durationMs, message, type, status, retryDelayMs] = run;
  return {
    attempt,
    outcome,
    at,
    durationMs,
    ...(type === undefined || type === null ? {} : { type }),
    ...(status === undefined || status === null ? {} : { status }),
    message,
    ...(retryDelayMs === undefined || retryDelayMs === null ? {} : { retryDelayMs }),
  } as AttemptRecord;
}

/** A failed run with a 500 as stored: every position filled, the wait only when a retry followed. */
function failedRun(attempt: number, retried: boolean): unknown[] {
  const run = [
    attempt,
    'failed',
    expect.any(Number),
    expect.any(Number),
    expect.any(String),
    'ServerError',
    500,
  ];
  return retried ? [...run, expect.any(Number)] : run;
}

/** A Ferry whose one service retries twice, quickly: a job that fails twice still completes. */
function ferryWithRetries(baseUrl: string): ReturnType<typeof createTestFerry> {
  return createTestFerry(redis, {
    services: {
      services: {
        svc: {
          baseUrl,
          retry: { attempts: 3, backoff: { delayMs: 20, maxDelayMs: 50 } },
          operations: { create: { method: 'POST', path: '/things', body: '{{ input }}' } },
        },
      },
    },
  });
}

describe('the stored history in Redis', () => {
  it("a retried job's data and a dead letter's data hold compact runs; the API shows the same records", async () => {
    const downstream = await startDownstream(failsThenSucceeds());
    const ferry = await ferryWithRetries(downstream.url);
    const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
    const storedData = async (queue: string, id: string): Promise<string> => {
      const raw = await redis.client.hget(`${ferry.prefix}:${queue}:${id}`, 'data');
      expect(raw).not.toBeNull();
      return raw!;
    };

    // Retried twice, then completed.
    const retried = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: { fails: 2 },
    });
    expect((await ferry.producer.waitFor('svc', retried.id)).state).toBe('completed');
    const jobData = JSON.parse(await storedData(serviceQueueName('svc'), retried.id)) as {
      ferry: { attempts: unknown[] };
    };
    expect(jobData.ferry.attempts).toEqual([2, failedRun(1, true), failedRun(2, true)]);
    expect(JSON.stringify(jobData.ferry.attempts)).not.toMatch(
      /"(attempt|outcome|at|durationMs|message|retryDelayMs)"/,
    );
    const jobView = await api.request('GET', `/v1/jobs/svc/${retried.id}`, { token: TOKENS.reader });
    expect(jobView.status).toBe(200);
    const history = jobView.body.history as AttemptRecord[];
    expect(history.slice(0, 2)).toEqual(
      jobData.ferry.attempts.slice(1).map((run) => asRecord(run as unknown[])),
    );
    expect(history.map((a) => [a.attempt, a.outcome, a.status])).toEqual([
      [1, 'failed', 500],
      [2, 'failed', 500],
      [3, 'completed', 200],
    ]);

    // Every attempt failed: dead-lettered, the last run without a wait.
    const dead = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { fails: 99 } });
    const deadView = await ferry.producer.waitFor('svc', dead.id);
    expect(deadView.state).toBe('dead_lettered');
    const letter = JSON.parse(await storedData(DEAD_LETTER_QUEUE, deadView.deadLetterId!)) as {
      attempts: unknown[];
    };
    expect(letter.attempts).toEqual([2, failedRun(1, true), failedRun(2, true), failedRun(3, false)]);
    expect(JSON.stringify(letter.attempts)).not.toMatch(
      /"(attempt|outcome|at|durationMs|message|retryDelayMs)"/,
    );
    const shown = await api.request('GET', `/v1/dead-letters/${deadView.deadLetterId!}`, {
      token: TOKENS.admin,
    });
    expect(shown.status).toBe(200);
    const decoded = letter.attempts.slice(1).map((run) => asRecord(run as unknown[]));
    expect(shown.body.attempts).toEqual(decoded);
    // The source job's own history is the same three runs, stored the same way.
    const sourceData = JSON.parse(await storedData(serviceQueueName('svc'), dead.id)) as {
      ferry: { attempts: unknown[] };
    };
    expect(sourceData.ferry.attempts).toEqual(letter.attempts);
    const sourceView = await api.request('GET', `/v1/jobs/svc/${dead.id}`, { token: TOKENS.reader });
    expect(sourceView.body.history).toEqual(decoded);
  });

  it('a job whose history 0.1.0 stored as objects runs on: the old runs kept, the whole list written as version 2', async () => {
    const downstream = await startDownstream(failsThenSucceeds());
    const ferry = await ferryWithRetries(downstream.url);
    // As a 0.1.0 worker left it: attempt 1 failed, recorded as an object, then the job went back to wait.
    const legacyRun: AttemptRecord = {
      attempt: 1,
      outcome: 'failed',
      at: 1_733_400_000_000,
      durationMs: 12,
      type: 'ServerError',
      status: 500,
      message: 'downstream answered 500',
      retryDelayMs: 20,
    };
    const queue = new Queue(serviceQueueName('svc'), { connection: redis.client, prefix: ferry.prefix });
    const job = await queue.add('create', {
      input: { fails: 1 },
      idempotencyKey: 'legacy-1',
      ferry: { attempts: [legacyRun], heldMs: 0, stallsSeen: 0 },
    });
    await queue.close();
    const view = await ferry.producer.waitFor('svc', job.id!);
    expect(view.state).toBe('completed');
    // Attempt 1 was the old worker's: this run is attempt 2, it failed (the downstream's first call), and 3 completed.
    expect(view.history.map((a) => [a.attempt, a.outcome, a.status])).toEqual([
      [1, 'failed', 500],
      [2, 'failed', 500],
      [3, 'completed', 200],
    ]);
    expect(view.history[0]).toEqual(legacyRun);
    const stored = JSON.parse(
      (await redis.client.hget(`${ferry.prefix}:${serviceQueueName('svc')}:${job.id!}`, 'data'))!,
    ) as { ferry: { attempts: unknown[] } };
    expect(stored.ferry.attempts).toEqual([
      2,
      [1, 'failed', legacyRun.at, 12, 'downstream answered 500', 'ServerError', 500, 20],
      failedRun(2, true),
    ]);
  });
});
