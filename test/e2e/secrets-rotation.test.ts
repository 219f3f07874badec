/**
 * The rotation recipe of docs/secrets.md, as an operator runs it, against a `ferry worker` in another process
 * (issue 4): set → stage → test (one live call with the staged value; jobs keep the current one) → promote
 * (every job the worker calls from then on uses the new value, within a second) → rollback (the same, back).
 * Every step is the built CLI; the downstream records which key each call carried.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { describe, expect, it, onTestFinished } from 'vitest';

import { Producer } from '../../src/index.ts';
import { generateMasterKey } from '../../src/secrets/crypto.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { runFerry, startWorker, tempDir, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const OLD = 'crm-key-old-5b1f0e6a9c';
const NEW = 'crm-key-new-d83a27c4f1';

/** Within a second of the CLI's exit; a busy CI machine gets no more: that is the promise. */
const PICKUP_BOUND_MS = 1_000;

describe('rotation with a live test, across processes', () => {
  it('stage → test → promote → rollback; the worker follows each change within a second', async () => {
    const downstream = await startDownstream((request) => ({
      status:
        request.headers.authorization === `Bearer ${OLD}` || request.headers.authorization === `Bearer ${NEW}`
          ? 200
          : 401,
      body: { ok: true },
    }));
    onTestFinished(() => downstream.close());
    const prefix = uniquePrefix();
    const servicesFile = await writeServicesFile({
      services: {
        crm: {
          baseUrl: downstream.url,
          auth: { type: 'bearer', token: '{{ secrets.crm_key }}' },
          retry: { attempts: 1 },
          operations: { ping: { method: 'POST', path: '/ping', body: '{{ input }}' } },
        },
      },
    });
    const env = workerEnv({
      redisUrl: redis.url,
      servicesFile,
      prefix,
      extra: { FERRY_SECRETS_KEY: generateMasterKey() },
    });
    const dir = await tempDir('ferry-rotation');
    const ferry = async (...args: string[]) => {
      const result = await runFerry(args, { env });
      // No step ever prints a value.
      expect(`${result.stdout}\n${result.stderr}`).not.toContain(OLD);
      expect(`${result.stdout}\n${result.stderr}`).not.toContain(NEW);
      return result;
    };
    const valueFile = async (value: string): Promise<string> => {
      const path = join(dir, `value-${value.slice(-4)}`);
      await writeFile(path, `${value}\n`);
      return path;
    };

    expect((await ferry('secrets', 'set', 'crm_key', '--file', await valueFile(OLD))).code).toBe(0);
    const worker = await startWorker(env);
    const producer = new Producer({ connection: redis.url, prefix });
    onTestFinished(() => producer.close());

    /**
     * Enqueues a job as soon as the last one has ended, until stopped: a steady stream paced by the worker. The
     * downstream's records say which key each call carried.
     */
    const load = (() => {
      let running = true;
      const done = (async () => {
        let i = 0;
        while (running) {
          const job = await producer.enqueue({ service: 'crm', operation: 'ping', input: { i: i++ } });
          await producer.waitFor('crm', job.id, { timeoutMs: 30_000 });
        }
      })();
      return {
        async stop() {
          running = false;
          await done;
        },
      };
    })();
    onTestFinished(() => load.stop());
    const keyOf = (authorization: string | string[] | undefined): string =>
      authorization === `Bearer ${OLD}` ? 'old' : authorization === `Bearer ${NEW}` ? 'new' : 'other';
    const callsSince = (at: number) =>
      downstream.requests
        .filter((request) => request.at >= at && request.url === '/ping')
        .map((r) => keyOf(r.headers.authorization));

    await expect.poll(() => callsSince(0).length, { timeout: 10_000 }).toBeGreaterThan(5);
    expect(new Set(callsSince(0))).toEqual(new Set(['old']));

    // Stage and test: one call with the new key, and the worker's jobs still use the old one.
    expect((await ferry('secrets', 'stage', 'crm_key', '--file', await valueFile(NEW))).code).toBe(0);
    const stagedAt = Date.now();
    const tested = await ferry(
      'secrets',
      'test',
      'crm_key',
      '--service',
      'crm',
      '--operation',
      'ping',
      '--input',
      '{"probe":true}',
      '--json',
    );
    expect(tested.code).toBe(0);
    expect(JSON.parse(tested.stdout)).toMatchObject({ outcome: 'completed', status: 200 });
    const probes = downstream.requests.filter((request) => request.body.includes('"probe":true'));
    expect(probes.map((request) => keyOf(request.headers.authorization))).toEqual(['new']);
    // Jobs called past the pickup bound after the stage: had staging changed the live value, they would show it.
    await expect
      .poll(() => callsSince(stagedAt + PICKUP_BOUND_MS).length, { timeout: 10_000 })
      .toBeGreaterThan(5);
    expect(
      downstream.requests
        .filter((r) => r.at >= stagedAt && !r.body.includes('probe'))
        .map((r) => keyOf(r.headers.authorization)),
    ).not.toContain('new');

    // Promote: from a second after the command returned, every call carries the new key.
    expect((await ferry('secrets', 'promote', 'crm_key')).code).toBe(0);
    const promotedAt = Date.now();
    await expect
      .poll(() => callsSince(promotedAt + PICKUP_BOUND_MS).length, { timeout: 10_000 })
      .toBeGreaterThan(5);
    const afterPromote = callsSince(promotedAt + PICKUP_BOUND_MS);
    expect(afterPromote.length).toBeGreaterThan(5);
    expect(new Set(afterPromote)).toEqual(new Set(['new']));

    // Roll back: the same, to the old key.
    expect((await ferry('secrets', 'rollback', 'crm_key')).code).toBe(0);
    const rolledBackAt = Date.now();
    await expect
      .poll(() => callsSince(rolledBackAt + PICKUP_BOUND_MS).length, { timeout: 10_000 })
      .toBeGreaterThan(5);
    const afterRollback = callsSince(rolledBackAt + PICKUP_BOUND_MS);
    expect(afterRollback.length).toBeGreaterThan(5);
    expect(new Set(afterRollback)).toEqual(new Set(['old']));

    await load.stop();
    // Nothing failed along the way: no call carried anything but one of the two keys.
    expect(callsSince(0)).not.toContain('other');
    const listed = await ferry('secrets', 'list', '--json');
    expect(listed.code).toBe(0);
    expect(worker.stdout.join('\n')).not.toContain(OLD);
    expect(worker.stdout.join('\n')).not.toContain(NEW);
  }, 60_000);
});
