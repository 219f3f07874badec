/**
 * Migrating the slot of a busy service queue to another master while jobs flow through a real `ferry api` and
 * two `ferry worker` processes (the built CLI, REDIS_CLUSTER_NODES). Exactly that one slot is moved, the way
 * `redis-cli --cluster reshard` moves each slot: SETSLOT IMPORTING on the target, MIGRATING on the source,
 * MIGRATE of its keys in small batches (so BullMQ's scripts meet a half-moved queue: ASK and TRYAGAIN), then
 * SETSLOT NODE. Nothing accepted may be lost; the API answers 2xx or 503 + Retry-After, never a 500.
 */
import { describe, expect, it } from 'vitest';

import { EnqueueLoad, settle, startClusterStack, waitForFlow, waitUntil } from '../helpers/cluster-load.ts';
import { type ClusterNode, servicesOnEveryMaster, startRedisCluster } from '../helpers/redis-cluster.ts';

const cluster = await startRedisCluster();

/** Keys moved per MIGRATE: small, so the queue is half on each master for a while. */
const BATCH = 5;

/** Moves `slot` from `source` to `target` while the cluster serves it (redis-cli's moveSlot, one slot). */
async function migrateSlot(
  slot: number,
  source: ClusterNode & { id: string },
  target: ClusterNode & { id: string },
  everyMaster: readonly ClusterNode[],
  between: () => Promise<void>,
): Promise<{ keys: number; batches: number }> {
  await target.client.cluster('SETSLOT', slot, 'IMPORTING', source.id);
  await source.client.cluster('SETSLOT', slot, 'MIGRATING', target.id);
  let keys = 0;
  let batches = 0;
  for (;;) {
    const batch = (await source.client.cluster('GETKEYSINSLOT', slot, BATCH)) as string[];
    if (batch.length === 0) break;
    await source.client.migrate('127.0.0.1', target.port, '', 0, 10_000, 'KEYS', ...batch);
    keys += batch.length;
    batches++;
    await between();
  }
  // The target first, then the source, then everyone else (redis-cli's order).
  await target.client.cluster('SETSLOT', slot, 'NODE', target.id);
  await source.client.cluster('SETSLOT', slot, 'NODE', target.id);
  for (const node of everyMaster) {
    if (node.address !== source.address && node.address !== target.address)
      await node.client.cluster('SETSLOT', slot, 'NODE', target.id);
  }
  return { keys, batches };
}

describe('resharding a busy service queue slot under load', () => {
  it('loses no accepted job and keeps the API and the workers working', async () => {
    const services = await servicesOnEveryMaster(cluster, 3);
    const [moved] = services as [string];
    const slot = await cluster.slotOf(`{${moved}}`);
    const view = await cluster.view();
    const byAddress = (address: string): ClusterNode & { id: string } => {
      const node = cluster.nodes.find((candidate) => candidate.address === address)!;
      const id = view.find((entry) => entry.address === address)!.id;
      return Object.assign(Object.create(node) as ClusterNode, { id });
    };
    const sourceNode = await cluster.masterOf(slot);
    const source = byAddress(sourceNode.address);
    const masters = view.filter((entry) => entry.role === 'master').map((entry) => byAddress(entry.address));
    const target = masters.find((node) => node.address !== source.address)!;

    const stack = await startClusterStack(cluster, services);
    const load = new EnqueueLoad(stack.url, services);
    try {
      // Jobs flow for every service before the fault.
      await waitForFlow(stack, load, services);

      const startedAt = Date.now();
      const { keys, batches } = await migrateSlot(
        slot,
        source,
        target,
        cluster.nodes.filter((node) => masters.some((master) => master.address === node.address)),
        // Between two batches, traffic for the moved service meets the half-moved slot: wait for an answer.
        async () => {
          const seen = load.answers.length;
          await waitUntil(
            () => load.answers.slice(seen).some((a) => a.service === moved),
            15_000,
            'an answer for the moved service',
          );
        },
      );
      const doneAt = Date.now();
      expect((await cluster.masterOf(slot)).address).toBe(target.address);
      // Load goes on after the move: the API and the workers follow MOVED to the new owner.
      await waitUntil(
        () => load.answers.some((a) => a.service === moved && a.sentAt > doneAt && a.status === 202),
        15_000,
        'an enqueue accepted after the move',
      );
      await waitUntil(
        () =>
          stack.downstream.requests.some(
            (r) =>
              r.url === `/${moved}` &&
              r.at > doneAt &&
              load.answers.some((a) => a.key === r.headers['idempotency-key'] && a.sentAt > doneAt),
          ),
        15_000,
        'a job enqueued after the move called',
      );
      await load.stop();

      const during = load.answers.filter((a) => a.answeredAt >= startedAt && a.sentAt <= doneAt);
      const refused = during.filter((a) => a.status !== 200 && a.status !== 202);
      const firstOkAfter = load.answers.find(
        (a) => a.service === moved && a.sentAt > doneAt && a.status === 202,
      );
      const { lost, duplicates, calls } = await settle(load, stack.downstream);
      const figures = {
        slotKeysMoved: keys,
        migrateBatches: batches,
        migrationMs: doneAt - startedAt,
        answersDuringMigration: during.length,
        refusedDuringMigration: refused.length,
        refusedStatuses: [
          ...new Set(refused.map((a) => `${a.service}:${a.status}/${a.retryAfter}/${a.errorType}`)),
        ],
        slowestAnswerDuringMigrationMs: Math.max(0, ...during.map((a) => a.answeredAt - a.sentAt)),
        firstOkAfterMoveMs: firstOkAfter === undefined ? null : firstOkAfter.answeredAt - doneAt,
        accepted: load.accepted().length,
        ackedLost: lost.length,
        runTwice: duplicates,
        called: calls.size,
      };
      // eslint-disable-next-line no-console -- the figures docs/scaling.md quotes, printed on purpose
      console.log(`cluster reshard figures: ${JSON.stringify(figures)}`);

      for (const answer of refused) {
        expect(answer.status, JSON.stringify(answer)).toBe(503);
        expect(answer.retryAfter).toMatch(/^\d+$/);
      }
      expect(
        lost.map((a) => a.key),
        JSON.stringify(figures),
      ).toEqual([]);
      expect(stack.workers.every((worker) => worker.running)).toBe(true);
    } finally {
      await load.stop();
    }
  }, 90_000);
});
