/**
 * Redis faults while jobs flow in over the API and two workers (smoke: one) call the downstream:
 * - `redis-kill-aof`: redis-server with AOF `appendfsync always` is SIGKILLed and started again on its
 *   directory (smoke: once, full: three times). Every job the API accepted (2xx) survives and ends.
 * - `redis-sigstop`: redis-server is SIGSTOPped for 10 s (smoke: 3 s) and continued. Nothing is lost; jobs
 *   whose lock ran out meanwhile run twice, with one Idempotency-Key. The API answers 503 + Retry-After, never
 *   500, and the slowest answer is noted (docs/api.md: within 2 s).
 */
import { answerOk, startDownstream } from '../downstream.ts';
import {
  SERVICE,
  servicesDoc,
  startApi,
  startWorker,
  uniquePrefix,
  workerEnv,
  writeServicesFile,
} from '../ferry.ts';
import { emptyTally, steadyEnqueue } from '../http.ts';
import { recoverMs, settleAndCount } from '../jobs.ts';
import { type Lab, sleep, waitFor, withLab } from '../lab.ts';
import { type ChaosRedis, startRedisServer } from '../redis.ts';
import { describeSettled, formatMs, lostNote, settledRow } from '../rows.ts';
import type { Scenario, ScenarioRow } from '../scenario.ts';
interface FaultPlan {
  name: string;
  appendfsync: 'always' | 'no';
  /** Injects the fault and ends it; returns what the notes should say. */
  inject(redis: ChaosRedis, lab: Lab): Promise<string>;
}

function redisScenario(plan: FaultPlan): Scenario {
  return {
    name: plan.name,
    run: ({ smoke, log }) =>
      withLab(plan.name, log, async (lab): Promise<ScenarioRow> => {
        const redis = await startRedisServer(lab, { appendfsync: plan.appendfsync });
        const downstream = await startDownstream(lab, answerOk(40));
        const prefix = uniquePrefix();
        const servicesFile = await writeServicesFile(lab, servicesDoc(downstream.url));
        const env = workerEnv({ redisUrl: redis.url, servicesFile, prefix });
        const api = await startApi(lab, { redisUrl: redis.url, servicesFile, prefix });
        // Two workers (one in the smoke run, to keep `npm test` light).
        const workerCount = smoke ? 1 : 2;
        const workers = await Promise.all(Array.from({ length: workerCount }, () => startWorker(lab, env)));
        const tally = emptyTally();
        const flow = steadyEnqueue({
          url: api.url,
          tally,
          service: SERVICE,
          operation: 'call',
          perSecond: smoke ? 25 : 40,
          max: 100_000,
        });
        await waitFor(() => downstream.calls.length >= 20, { timeoutMs: 20_000 });
        const faultNotes = await plan.inject(redis, lab);
        const faultEndedAt = Date.now();
        log(`fault over: ${faultNotes}`);
        await sleep(smoke ? 1_500 : 3_000);
        flow.stop();
        await flow.done;
        log(`enqueued ${tally.accepted.length} jobs; settling`);
        const { accounting, calls } = await settleAndCount(
          lab,
          { redisUrl: redis.url, prefix, calls: downstream.calls, timeoutMs: smoke ? 30_000 : 90_000 },
          tally.accepted,
        );
        const recover = recoverMs(accounting, faultEndedAt);
        const alive = workers.filter((worker) => worker.running).length;
        log(`settled: ${describeSettled(accounting)}; recover ${formatMs(recover)}`);
        const notes = [
          faultNotes,
          `${tally.unavailable} × 503 + Retry-After, slowest API answer ${formatMs(tally.slowestMs)}`,
          ...(tally.noAnswer > 0 ? [`${tally.noAnswer} requests got no answer`] : []),
          ...(alive < workerCount
            ? [`${workerCount - alive} worker(s) exited: ${workers.find((w) => !w.running)?.tail(3) ?? ''}`]
            : []),
          ...lostNote(accounting),
          ...(tally.samples.length > 0 ? [`API: ${tally.samples.join('; ')}`] : []),
        ];
        return settledRow(plan.name, accounting, calls, {
          serverErrors: tally.serverErrors,
          recoverMs: recover,
          notes: notes.join('; '),
          ok:
            accounting.enqueued > 0 &&
            accounting.lost === 0 &&
            accounting.deadLettered === 0 &&
            calls.duplicatesWithDifferingKeys === 0 &&
            tally.serverErrors === 0 &&
            recover !== null &&
            alive === workerCount,
        });
      }),
  };
}

let smokeMode = false;

const scenarios: Scenario[] = [
  redisScenario({
    name: 'redis-kill-aof',
    appendfsync: 'always',
    async inject(redis) {
      const cycles = smokeMode ? 1 : 3;
      const downMs = smokeMode ? 1_500 : 3_000;
      for (let cycle = 0; cycle < cycles; cycle++) {
        if (cycle > 0) await sleep(2_000);
        await redis.kill9();
        await sleep(downMs);
        await redis.restart();
      }
      return `${cycles} × kill -9, ${downMs / 1000} s down, restart on its AOF (appendfsync always)`;
    },
  }),
  redisScenario({
    name: 'redis-sigstop',
    appendfsync: 'no',
    async inject(redis) {
      const pauseMs = smokeMode ? 3_000 : 10_000;
      redis.pause();
      await sleep(pauseMs);
      redis.resume();
      return `SIGSTOP ${pauseMs / 1000} s`;
    },
  }),
].map((scenario) => ({
  name: scenario.name,
  run(options) {
    smokeMode = options.smoke;
    return scenario.run(options);
  },
}));

export default scenarios;
