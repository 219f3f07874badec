/**
 * Two `ferry worker` processes; while jobs flow in over the API, one of them (chosen by the seed) is SIGKILLed
 * and started again, over and over. At-least-once: every accepted job ends completed, a job a kill
 * interrupted runs again with the same Idempotency-Key.
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
import { type JobInspector, recoverMs, settleAndCount } from '../jobs.ts';
import { Random, sleep, withLab } from '../lab.ts';
import { startRedisServer } from '../redis.ts';
import { describeSettled, formatMs, lostNote, settledRow } from '../rows.ts';
import type { Scenario, ScenarioRow } from '../scenario.ts';
const NAME = 'worker-kill-loop';

const scenario: Scenario = {
  name: NAME,
  run: ({ smoke, seed, log }) =>
    withLab(NAME, log, async (lab): Promise<ScenarioRow> => {
      const random = new Random(seed);
      const kills = smoke ? 2 : 12;
      const redis = await startRedisServer(lab);
      // 30-80 ms per call: long enough that a kill lands mid-call.
      const downstream = await startDownstream(lab, (req, res, call) =>
        answerOk(30 + (call.index % 6) * 10)(req, res, call),
      );
      const prefix = uniquePrefix();
      const servicesFile = await writeServicesFile(lab, servicesDoc(downstream.url));
      const env = workerEnv({ redisUrl: redis.url, servicesFile, prefix });
      const api = await startApi(lab, { redisUrl: redis.url, servicesFile, prefix });
      const workers = await Promise.all([startWorker(lab, env), startWorker(lab, env)]);

      const tally = emptyTally();
      const flow = steadyEnqueue({
        url: api.url,
        tally,
        service: SERVICE,
        operation: 'call',
        perSecond: smoke ? 20 : 40,
        max: 100_000,
      });
      await sleep(1_000);
      let faultEndedAt = Date.now();
      for (let k = 0; k < kills; k++) {
        await sleep(400 + random.next() * (smoke ? 800 : 2_000));
        const which = random.next() < 0.5 ? 0 : 1;
        const victim = workers[which]!;
        await victim.kill9();
        faultEndedAt = Date.now();
        log(`kill ${k + 1}/${kills}: worker ${which} (pid ${victim.pid}) SIGKILLed; restarting`);
        workers[which] = await startWorker(lab, env);
      }
      await sleep(1_500);
      flow.stop();
      await flow.done;
      log(`enqueued ${tally.accepted.length} jobs; settling`);

      const { inspector, accounting, calls } = await settleAndCount(
        lab,
        { redisUrl: redis.url, prefix, calls: downstream.calls, timeoutMs: smoke ? 30_000 : 90_000 },
        tally.accepted,
      );
      const stalled = await countStalled(
        inspector,
        tally.accepted.map((job) => job.id),
      );
      const recover = recoverMs(accounting, faultEndedAt);
      const notes = [
        `${kills} kills of 2 workers`,
        `${stalled} jobs interrupted and run again`,
        `${tally.unavailable} × 503`,
        ...lostNote(accounting),
        ...(tally.samples.length > 0 ? [`API: ${tally.samples.join('; ')}`] : []),
      ];
      log(`settled: ${describeSettled(accounting)}; recover ${formatMs(recover)}`);
      return settledRow(NAME, accounting, calls, {
        serverErrors: tally.serverErrors,
        recoverMs: recover,
        notes: notes.join('; '),
        ok:
          accounting.lost === 0 &&
          accounting.deadLettered === 0 &&
          calls.duplicatesWithDifferingKeys === 0 &&
          tally.serverErrors === 0 &&
          accounting.enqueued > 0 &&
          recover !== null,
      });
    }),
};

/** Jobs whose BullMQ stall counter says a worker lost them at least once. */
async function countStalled(inspector: JobInspector, ids: readonly string[]): Promise<number> {
  let stalled = 0;
  const queue = inspector.queue(SERVICE);
  for (let i = 0; i < ids.length; i += 200) {
    const jobs = await Promise.all(ids.slice(i, i + 200).map((id) => queue.getJob(id)));
    stalled += jobs.filter((job) => (job?.stalledCounter ?? 0) > 0).length;
  }
  return stalled;
}

export default scenario;
