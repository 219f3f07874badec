/** Service queues: list (paused, counts by state), pause and resume. */
import { type OpsDeps, requireService, withQueues } from './deps.ts';

export interface QueueView {
  service: string;
  paused: boolean;
  /** Jobs by BullMQ state (waiting, prioritized, active, delayed, completed, failed, waiting-children). */
  counts: Record<string, number>;
}

export async function listQueues(deps: OpsDeps, services?: readonly string[]): Promise<QueueView[]> {
  const names = services ?? [...deps.config.services.keys()];
  for (const name of names) requireService(deps.config, name);
  return withQueues(deps, names, (queues) =>
    Promise.all(
      names.map(async (service) => {
        const queue = queues.get(service)!;
        const [paused, counts] = await Promise.all([queue.isPaused(), queue.getJobCounts()]);
        return { service, paused, counts };
      }),
    ),
  );
}

/**
 * Pauses (`paused: true`) or resumes a service queue. Paused: no worker in any process takes its jobs (calls in
 * flight finish); jobs keep their attempts and enqueues are still accepted. Resumed: workers take jobs at once.
 */
export async function setQueuePaused(
  deps: OpsDeps,
  service: string,
  paused: boolean,
): Promise<{ service: string; paused: boolean }> {
  requireService(deps.config, service);
  return withQueues(deps, [service], async (queues) => {
    const queue = queues.get(service)!;
    if (paused) await queue.pause();
    else await queue.resume();
    return { service, paused: await queue.isPaused() };
  });
}
