/**
 * The smoke version of the chaos suite's fault scenarios (chaos/scenarios/, run in full by `npm run chaos`):
 * the same checks on fewer jobs and shorter faults. Each row's promises: no accepted job lost, no job's calls
 * with two different Idempotency-Keys, every kind of hostility classified within the worker's memory, and
 * `ferry worker` / `ferry api` out within 10 s of SIGTERM whatever state Redis is in.
 *
 * The scenarios are independent (each its own redis-server, processes and downstream) and mostly wait, so
 * they run concurrently to keep the file short.
 */
import { describe, type ExpectStatic, it } from 'vitest';

import type { Scenario, ScenarioRow } from '../../chaos/scenario.ts';
import hostile from '../../chaos/scenarios/hostile-downstreams.ts';
import redisFaults from '../../chaos/scenarios/redis-faults.ts';
import sigterm, { EXIT_LIMIT_MS, measuredExits } from '../../chaos/scenarios/sigterm.ts';
import workerKillLoop from '../../chaos/scenarios/worker-kill-loop.ts';

const SEED = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
process.stderr.write(`test/chaos/faults.test.ts: seed ${SEED} (repeat with CHAOS_SEED=${SEED})\n`);

async function smoke(scenario: Scenario): Promise<{ row: ScenarioRow; context: string }> {
  const lines: string[] = [];
  const row = await scenario.run({ smoke: true, seed: SEED, log: (line) => lines.push(line) });
  const context = `${scenario.name} (seed ${SEED}): ${row.notes ?? ''}\n${lines.slice(-12).join('\n')}`;
  return { row, context };
}

/** Concurrent tests must use their own `expect` (the test context's), so assertions count for the right test. */
function expectPromisesKept(
  expect: ExpectStatic,
  { row, context }: { row: ScenarioRow; context: string },
): void {
  expect(row.enqueued, context).toBeGreaterThan(0);
  expect(row.lost, context).toBe(0);
  expect(row.completed + row.deadLettered, context).toBe(row.enqueued);
  expect(row.duplicatesWithDifferingKeys, context).toBe(0);
  expect(row.serverErrors, context).toBe(0);
  expect(row.ok, context).toBe(true);
}

describe.concurrent('chaos smoke: faults', () => {
  // First: these mostly wait (for an exit that may not come within the limit on code without the fix).
  for (const scenario of sigterm) {
    it(`${scenario.name}: exits within 10 s, with the right code, and loses nothing`, async ({ expect }) => {
      const result = await smoke(scenario);
      const exit = measuredExits.get(scenario.name);
      // Out within 10 s of SIGTERM (undefined: still running when the scenario gave up waiting).
      expect(exit?.ms, result.context).toBeDefined();
      expect(exit?.ms, result.context).toBeLessThanOrEqual(EXIT_LIMIT_MS);
      // row.ok also holds the exit code: 0 with Redis up, non-zero from a worker whose results could not be
      // recorded.
      if (scenario.name.endsWith('-redis-up')) expect(exit?.code, result.context).toBe(0);
      else if (scenario.name.startsWith('sigterm-worker-')) expect(exit?.code, result.context).not.toBe(0);
      expectPromisesKept(expect, result);
    }, 90_000);
  }

  it('worker kill -9 loop with two workers loses nothing', async ({ expect }) => {
    const result = await smoke(workerKillLoop);
    expectPromisesKept(expect, result);
    expect(result.row.deadLettered, result.context).toBe(0);
  }, 90_000);

  for (const scenario of redisFaults) {
    it(`${scenario.name}: every accepted job survives and completes`, async ({ expect }) => {
      const result = await smoke(scenario);
      expectPromisesKept(expect, result);
      expect(result.row.deadLettered, result.context).toBe(0);
      expect(result.row.recoverMs, result.context).not.toBeNull();
    }, 90_000);
  }

  for (const scenario of hostile) {
    it(`${scenario.name}: jobs end classified, within the worker's memory`, async ({ expect }) => {
      expectPromisesKept(expect, await smoke(scenario));
    }, 90_000);
  }
});
