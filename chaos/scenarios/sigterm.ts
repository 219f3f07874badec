/**
 * SIGTERM to `ferry worker` and to `ferry api` with Redis up, killed (SIGKILL) and hung (SIGSTOP): each must
 * exit within 10 s (Kubernetes' default grace is 30 s). The worker has calls in flight when the signal comes;
 * with Redis up it lets them finish, records them and exits 0; with Redis gone it cannot record them, so it
 * must say so with a non-zero exit code (the jobs run again later, with the same Idempotency-Key). The API
 * has served a Server-Sent Events stream before the signal (issue 13 item 8). Afterwards Redis comes back,
 * a new worker runs, and nothing accepted may be lost. The worker runs with its default shutdown deadline.
 */

import { answerOk, startDownstream } from '../downstream.ts';
import {
  CHAOS_TOKEN,
  type FerryChild,
  SERVICE,
  servicesDoc,
  startApi,
  startWorker,
  uniquePrefix,
  workerEnv,
  writeServicesFile,
} from '../ferry.ts';
import { emptyTally, enqueueOverApi } from '../http.ts';
import { enqueueDirectly, recoverMs, settleAndCount } from '../jobs.ts';
import { waitFor, withLab } from '../lab.ts';
import { type ChaosRedis, startRedisServer } from '../redis.ts';
import { formatMs, lostNote, settledRow } from '../rows.ts';
import type { Scenario, ScenarioRow } from '../scenario.ts';
type RedisState = 'up' | 'killed' | 'stopped';
type Target = 'worker' | 'api';

/** The promise: out within 10 s of SIGTERM. */
export const EXIT_LIMIT_MS = 10_000;

/**
 * The last measured exit of each scenario, by name (ms undefined: not out within the wait), so a test can
 * assert the figure itself and not only the row's ok.
 */
export const measuredExits = new Map<string, { ms: number | undefined; code: number | null }>();

async function breakRedis(redis: ChaosRedis, state: RedisState): Promise<void> {
  if (state === 'killed') await redis.kill9();
  else if (state === 'stopped') redis.pause();
}

async function restoreRedis(redis: ChaosRedis, state: RedisState): Promise<void> {
  if (state === 'killed') await redis.restart();
  else if (state === 'stopped') redis.resume();
}

function describeExit(
  timing: { ms: number | undefined; exit: { code: number | null; signal: string | null } | undefined },
  waitedMs: number,
): string {
  if (timing.ms === undefined) return `no exit within ${waitedMs / 1000} s (SIGKILLed)`;
  return `exit ${timing.exit?.code ?? timing.exit?.signal} after ${formatMs(timing.ms)}`;
}

function sigtermScenario(target: Target, state: RedisState): Scenario {
  const name = `sigterm-${target}-redis-${state}`;
  return {
    name,
    run: ({ smoke, log }) =>
      withLab(name, log, async (lab): Promise<ScenarioRow> => {
        // Past the limit the figure only says "too slow": wait a little longer to measure, not forever.
        const waitMs = smoke ? EXIT_LIMIT_MS + 2_000 : 40_000;
        const callMs = smoke ? 1_000 : 2_000;
        const redis = await startRedisServer(lab, { appendfsync: 'always' });
        const downstream = await startDownstream(lab, answerOk(callMs));
        const prefix = uniquePrefix();
        const servicesFile = await writeServicesFile(lab, servicesDoc(downstream.url, { concurrency: 3 }));
        // The product's own shutdown deadline, not the test helpers' shorter one.
        const env = workerEnv({
          redisUrl: redis.url,
          servicesFile,
          prefix,
          extra: { FERRY_SHUTDOWN_TIMEOUT_MS: undefined },
        });
        const tally = emptyTally();
        let victim: FerryChild;
        let sseNote = '';
        if (target === 'worker') {
          victim = await startWorker(lab, env);
          tally.accepted.push(
            ...(await enqueueDirectly(
              redis.url,
              prefix,
              Array.from({ length: 6 }, (_, n) => ({ service: SERVICE, operation: 'call', input: { n } })),
            )),
          );
          // Three calls in flight (the concurrency) when the signal comes.
          await waitFor(() => downstream.calls.length >= 3, { timeoutMs: 20_000 });
        } else {
          const api = await startApi(lab, { redisUrl: redis.url, servicesFile, prefix });
          victim = api.process;
          for (let n = 0; n < 3; n++)
            await enqueueOverApi(api.url, tally, { service: SERVICE, operation: 'call', input: { n } });
          sseNote = await useEvents(api.url, tally.accepted[0]?.id);
        }
        const callsAtSignal = downstream.calls.length;
        await breakRedis(redis, state);
        const timing = await victim.timeTermination(waitMs);
        const exitNote = describeExit(timing, waitMs);
        measuredExits.set(name, { ms: timing.ms, code: timing.exit?.code ?? null });
        log(`${target} after SIGTERM with Redis ${state}: ${exitNote}`);
        const said = victim
          .logs()
          .filter((entry) => (entry.level ?? 0) >= 40)
          .map((entry) => String(entry.msg))
          .slice(-2);

        await restoreRedis(redis, state);
        const faultEndedAt = Date.now();
        await startWorker(lab, workerEnv({ redisUrl: redis.url, servicesFile, prefix }));
        const { accounting, calls } = await settleAndCount(
          lab,
          { redisUrl: redis.url, prefix, calls: downstream.calls, timeoutMs: smoke ? 20_000 : 60_000 },
          tally.accepted,
        );
        const recover = recoverMs(accounting, faultEndedAt);

        const inTime = timing.ms !== undefined && timing.ms <= EXIT_LIMIT_MS;
        const code = timing.exit?.code ?? null;
        // Redis up: a clean exit (0). Redis gone: the worker's finished calls could not be recorded; it must
        // exit non-zero to say so. The API has nothing to record: any exit code, in time.
        const rightCode =
          state === 'up' ? code === 0 : target === 'worker' ? code !== null && code !== 0 : code !== null;
        const notes = [
          exitNote,
          ...(target === 'worker' ? [`${callsAtSignal} calls in flight at SIGTERM`] : [sseNote]),
          ...(state !== 'up' && target === 'worker' && code === 0
            ? ['exit 0 although results were not recorded']
            : []),
          ...(said.length > 0 ? [`last warnings: ${said.join(' / ').slice(0, 160)}`] : []),
          ...lostNote(accounting),
        ];
        return settledRow(name, accounting, calls, {
          serverErrors: tally.serverErrors,
          recoverMs: recover,
          notes: notes.filter((note) => note !== '').join('; '),
          ok:
            inTime &&
            rightCode &&
            accounting.enqueued > 0 &&
            accounting.lost === 0 &&
            calls.duplicatesWithDifferingKeys === 0 &&
            tally.serverErrors === 0,
        });
      }),
  };
}

/**
 * Opens the job's event stream, reads its first bytes and leaves (the client going away is the case that
 * kept `ferry api` from exiting).
 */
async function useEvents(url: string, id: string | undefined): Promise<string> {
  if (id === undefined) return 'no job to watch';
  const controller = new AbortController();
  try {
    const response = await fetch(`${url}/v1/jobs/${SERVICE}/${encodeURIComponent(id)}/events`, {
      headers: { authorization: `Bearer ${CHAOS_TOKEN}`, accept: 'text/event-stream' },
      signal: controller.signal,
    });
    const reader = response.body?.getReader();
    let timer: NodeJS.Timeout | undefined;
    const first = await Promise.race([
      reader === undefined ? Promise.resolve('no body' as const) : reader.read().then(() => 'read' as const),
      new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), 5_000);
      }),
    ]);
    clearTimeout(timer);
    controller.abort();
    return `SSE ${response.status}${first === 'read' ? '' : ` (${first === 'timeout' ? 'no event in 5 s' : first})`}, client left`;
  } catch (error) {
    controller.abort();
    return `SSE failed: ${error instanceof Error ? error.message : String(error)}`;
  }
}

const scenarios: Scenario[] = (['worker', 'api'] as const).flatMap((target) =>
  (['up', 'killed', 'stopped'] as const).map((state) => sigtermScenario(target, state)),
);

export default scenarios;
