/**
 * `ferry enqueue --wait`, in-process (test/helpers/cli.ts) and once as the built CLI, against a real
 * redis-server, an in-process worker pool and a real downstream: the job it prints lists every run, the
 * completed one last.
 */
import { describe, expect, it } from 'vitest';

import type { AttemptRecord } from '../../src/core/job.ts';
import { runCliInProcess } from '../helpers/cli.ts';
import { failsThenSucceeds, startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { runFerry, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

describe('ferry enqueue --wait: the history', () => {
  it('--json gives every run of a 1-, 2- and 3-attempt job; the text says the attempts', async () => {
    // Each job's input says how many times its calls fail (500) before one succeeds (200).
    const downstream = await startDownstream(failsThenSucceeds());
    const services = {
      services: {
        svc: {
          baseUrl: downstream.url,
          retry: { attempts: 3, backoff: { delayMs: 20, maxDelayMs: 50 } },
          operations: { create: { method: 'POST', path: '/things', body: '{{ input }}' } },
        },
      },
    };
    const ferry = await createTestFerry(redis, { services });
    const env = workerEnv({
      redisUrl: redis.url,
      servicesFile: await writeServicesFile(services),
      prefix: ferry.prefix,
    });

    for (const fails of [0, 1, 2]) {
      const run = await runCliInProcess(
        ['enqueue', 'svc', 'create', '--input', JSON.stringify({ fails }), '--wait', '--json'],
        { env },
      );
      expect(run.code, run.output()).toBe(0);
      const view = JSON.parse(run.stdout) as { state: string; attempts: number; history: AttemptRecord[] };
      const attempts = fails + 1;
      expect(view.state).toBe('completed');
      expect(view.attempts).toBe(attempts);
      expect(view.history.map((a) => [a.attempt, a.outcome, a.status])).toEqual([
        ...Array.from({ length: fails }, (_, i) => [i + 1, 'failed', 500]),
        [attempts, 'completed', 200],
      ]);
      expect(view.history.at(-1)!.durationMs).toBeGreaterThanOrEqual(0);
    }

    const human = await runFerry(['enqueue', 'svc', 'create', '--input', '{"fails":2}', '--wait'], {
      env,
      timeoutMs: 60_000,
    });
    expect(human.code, human.process.output()).toBe(0);
    expect(human.stdout).toMatch(/^completed: svc\/\S+ status 200 after 3 attempt\(s\)$/m);
  }, 120_000);
});
