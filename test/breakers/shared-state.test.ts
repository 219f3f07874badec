/**
 * Two registries with two ioredis clients on one real Redis stand for two worker processes.
 */
import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished, vi } from 'vitest';

import {
  breakerDefaults,
  type BreakerOptions,
  type BreakerRegistry,
  clearSharedState,
  isBreakerOpenError,
  readSharedState,
  type RedisLike,
  type ServiceBreaker,
  writeSharedOpen,
} from '../../src/breakers/index.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';
import {
  ClientSideError,
  deferred,
  failing,
  instrumentRedis,
  isFailure,
  openRegistry,
  recordTransitions,
  rejectionOf,
  UnhealthyError,
} from './support.ts';

// At the top level, not in beforeAll: startRedis() registers its own afterAll (stop the server), and one
// registered from inside beforeAll never ran here (vitest 4.1) — the redis-server outlived the test file.
const redis = await startRedis();

const options: BreakerOptions = {
  errorThresholdPercentage: 50,
  volumeThreshold: 4,
  rollingWindowMs: 10_000,
  resetTimeoutMs: 600,
};

/** DESIGN §4: every process respects an open breaker "within about a second". */
const PROPAGATION_MS = 1000;

interface Process {
  client: Redis;
  registry: BreakerRegistry;
  breaker: ServiceBreaker;
  transitions: string[];
}

function connect(): Redis {
  const client = new Redis(redis.url);
  onTestFinished(() => {
    client.disconnect();
  });
  return client;
}

/** One "worker process": its own connection and registry, default sync interval. */
function startProcess(
  prefix: string,
  wrap: (client: Redis) => RedisLike = (client) => client,
  opts = options,
): Process {
  const client = connect();
  const registry = openRegistry({ redis: wrap(client), keyFor: (name) => `${prefix}:breaker:${name}` });
  return { client, registry, breaker: registry.get('crm', opts), transitions: recordTransitions(registry) };
}

async function trip(breaker: ServiceBreaker): Promise<void> {
  for (let i = 0; i < options.volumeThreshold; i += 1) {
    await breaker.execute(failing, isFailure).catch(() => undefined);
  }
  expect(breaker.state().state).toBe('open');
}

const untilOf = (breaker: ServiceBreaker): number => (breaker.state() as { untilMs: number }).untilMs;

describe('shared open state', () => {
  it('A opens → B is open within ~1 s with the same untilMs, refuses without calling fn, and writes nothing back', async () => {
    const prefix = uniquePrefix();
    let writes: string[] = [];
    const a = startProcess(prefix);
    const b = startProcess(prefix, (client) => {
      const instrumented = instrumentRedis(client);
      writes = instrumented.calls;
      return instrumented.redis;
    });
    await expect.poll(() => writes).toContain('get');

    await trip(a.breaker);

    await expect
      .poll(() => b.breaker.state(), { timeout: PROPAGATION_MS, interval: 10 })
      .toEqual(a.breaker.state());
    expect(b.transitions).toEqual(['crm: closed→open (shared)']);
    const fn = vi.fn(() => Promise.resolve('called'));
    const refusal = await rejectionOf(b.breaker.execute(fn, isFailure));
    expect(fn).not.toHaveBeenCalled();
    expect(isBreakerOpenError(refusal)).toBe(true);
    expect(refusal).toMatchObject({ reason: 'open', breaker: 'crm' });
    expect((refusal as { retryAfterMs: number }).retryAfterMs).toBeLessThanOrEqual(options.resetTimeoutMs);
    // No ping-pong: what B learned from Redis is never written back as a new open.
    expect(writes.filter((command) => command !== 'get')).toEqual([]);
  });

  it('a process that starts while the breaker is open learns it at get(), before the first interval', async () => {
    const prefix = uniquePrefix();
    const a = startProcess(prefix);
    await a.breaker.open(60_000);

    const late = startProcess(prefix);

    await expect.poll(() => late.breaker.state(), { timeout: 200, interval: 5 }).toEqual(a.breaker.state());
  });

  it('processes that trip at the same time agree on one untilMs', async () => {
    const prefix = uniquePrefix();
    const a = startProcess(prefix);
    const b = startProcess(prefix);

    await Promise.all([trip(a.breaker), trip(b.breaker)]);

    await expect.poll(() => untilOf(a.breaker), { timeout: PROPAGATION_MS }).toBe(untilOf(b.breaker));
    expect(JSON.parse((await a.client.get(`${prefix}:breaker:crm`)) ?? 'null')).toMatchObject({
      untilMs: untilOf(a.breaker),
    });
  });

  it('manual open and close on one process are followed by the others', async () => {
    const prefix = uniquePrefix();
    const a = startProcess(prefix);
    const b = startProcess(prefix);

    await a.breaker.open(60_000);
    await expect.poll(() => b.breaker.state(), { timeout: PROPAGATION_MS }).toEqual(a.breaker.state());
    await a.breaker.close();
    await expect.poll(() => b.breaker.state(), { timeout: PROPAGATION_MS }).toEqual({ state: 'closed' });

    expect(a.transitions).toEqual(['crm: closed→open (manual)', 'crm: open→closed (manual)']);
    expect(b.transitions).toEqual(['crm: closed→open (shared)', 'crm: open→closed (shared)']);
  });

  it('a manual open is marked manual in Redis, with its reason when written by an operator tool', async () => {
    const prefix = uniquePrefix();
    const a = startProcess(prefix);
    await a.breaker.open(60_000);
    const stored = await readSharedState(a.client, `${prefix}:breaker:crm`);
    expect(stored?.record).toMatchObject({ manual: true, untilMs: untilOf(a.breaker) });

    const nowMs = Date.now();
    await writeSharedOpen(
      a.client,
      `${prefix}:breaker:crm`,
      { untilMs: nowMs + 5_000, openedAtMs: nowMs, manual: true, reason: 'partner maintenance' },
      60_000,
      'replace',
    );
    expect((await readSharedState(a.client, `${prefix}:breaker:crm`))?.record).toEqual({
      untilMs: nowMs + 5_000,
      openedAtMs: nowMs,
      manual: true,
      reason: 'partner maintenance',
    });
  });

  it('a trip neither replaces nor shortens a manual open still running, even a shorter one', async () => {
    const prefix = uniquePrefix();
    const a = startProcess(prefix);
    const key = `${prefix}:breaker:crm`;
    const nowMs = Date.now();
    // Shorter than resetTimeoutMs would make an automatic open: `extend` alone would replace it.
    const manual = { untilMs: nowMs + 300, openedAtMs: nowMs, manual: true as const, reason: 'window' };
    await writeSharedOpen(a.client, key, manual, 60_000, 'replace');

    const stored = await writeSharedOpen(
      a.client,
      key,
      { untilMs: nowMs + options.resetTimeoutMs, openedAtMs: nowMs },
      60_000,
      'extend',
    );

    expect(stored).toEqual(manual);
    expect((await readSharedState(a.client, key))?.record).toEqual(manual);
    // Once the manual window is over, an automatic open (the probe failed) is stored as usual.
    await expect.poll(() => Date.now(), { interval: 20 }).toBeGreaterThan(manual.untilMs);
    const later = Date.now();
    const automatic = { untilMs: later + options.resetTimeoutMs, openedAtMs: later };
    expect(await writeSharedOpen(a.client, key, automatic, 60_000, 'extend')).toEqual(automatic);
  });

  it('an operator open written straight to Redis (ferry breakers open) is followed by every process', async () => {
    const prefix = uniquePrefix();
    const a = startProcess(prefix);
    const nowMs = Date.now();
    await writeSharedOpen(
      a.client,
      `${prefix}:breaker:crm`,
      { untilMs: nowMs + 60_000, openedAtMs: nowMs, manual: true },
      120_000,
      'replace',
    );
    await expect
      .poll(() => a.breaker.state(), { timeout: PROPAGATION_MS })
      .toEqual({ state: 'open', untilMs: nowMs + 60_000 });
    await clearSharedState(a.client, `${prefix}:breaker:crm`);
    await expect.poll(() => a.breaker.state(), { timeout: PROPAGATION_MS }).toEqual({ state: 'closed' });
  });
});

describe('half-open probe, cluster-wide', () => {
  /**
   * Trips `a`, then waits until `b` has seen the shared open and both are half-open. `b` sees it at its next
   * sync (every 500 ms): open until the same time as `a`, or, when that sync comes after the 600 ms open period
   * (a loaded machine), straight away half-open — so waiting for `b` to read open raced the clock, and failed
   * with "halfOpen where open was expected". `b` never trips itself: either state is the shared one.
   */
  async function openOnBoth(a: Process, b: Process): Promise<void> {
    await trip(a.breaker);
    const opened = a.breaker.state();
    await expect.poll(() => b.breaker.state().state, { timeout: 10_000 }).not.toBe('closed');
    expect([opened, { state: 'halfOpen' }]).toContainEqual(b.breaker.state());
    await expect
      .poll(() => [a.breaker.state().state, b.breaker.state().state], { timeout: 10_000 })
      .toEqual(['halfOpen', 'halfOpen']);
  }

  it('exactly one of many concurrent calls across both processes probes; its success closes both', async () => {
    const prefix = uniquePrefix();
    const a = startProcess(prefix);
    const b = startProcess(prefix);
    await openOnBoth(a, b);
    const probe = deferred<string>();
    let calls = 0;
    const fn = (): Promise<string> => {
      calls += 1;
      return probe.promise;
    };

    const executions = [a, b, a, b, a, b, a, b, a, b, a, b, a, b, a, b].map((p) =>
      p.breaker.execute(fn, isFailure),
    );
    const refusals: unknown[] = [];
    for (const execution of executions) execution.catch((error: unknown) => refusals.push(error));

    await expect.poll(() => refusals.length).toBe(executions.length - 1);
    expect(calls).toBe(1);
    for (const refusal of refusals) {
      expect(refusal).toMatchObject({ reason: 'probing', retryAfterMs: breakerDefaults.probeRetryAfterMs });
    }

    probe.resolve('healthy');
    await expect(Promise.any(executions)).resolves.toBe('healthy');
    await expect.poll(() => a.breaker.state(), { timeout: PROPAGATION_MS }).toEqual({ state: 'closed' });
    await expect.poll(() => b.breaker.state(), { timeout: PROPAGATION_MS }).toEqual({ state: 'closed' });
    expect(await a.client.exists(`${prefix}:breaker:crm`, `${prefix}:breaker:crm:probe`)).toBe(0);
    expect(calls).toBe(1);
  });

  it('a failed probe re-opens for everyone for another resetTimeoutMs', async () => {
    const prefix = uniquePrefix();
    const a = startProcess(prefix);
    const b = startProcess(prefix);
    await openOnBoth(a, b);

    await expect(
      b.breaker.execute(() => Promise.reject(new UnhealthyError('still down')), isFailure),
    ).rejects.toBeInstanceOf(UnhealthyError);

    expect(b.breaker.state().state).toBe('open');
    expect(b.transitions.slice(-1)).toEqual(['crm: halfOpen→open (local)']);
    await expect.poll(() => a.breaker.state(), { timeout: PROPAGATION_MS }).toEqual(b.breaker.state());
    expect(a.transitions.slice(-1)).toEqual(['crm: halfOpen→open (shared)']);
  });

  it('a non-counted rejection of the probe closes it for everyone', async () => {
    const prefix = uniquePrefix();
    const a = startProcess(prefix);
    const b = startProcess(prefix);
    await openOnBoth(a, b);

    await expect(
      a.breaker.execute(() => Promise.reject(new ClientSideError('404')), isFailure),
    ).rejects.toBeInstanceOf(ClientSideError);

    expect(a.breaker.state()).toEqual({ state: 'closed' });
    await expect.poll(() => b.breaker.state(), { timeout: PROPAGATION_MS }).toEqual({ state: 'closed' });
  });

  it('when the probing process dies, its lock expires after probeTimeoutMs and another process probes', async () => {
    const prefix = uniquePrefix();
    const short = { ...options, probeTimeoutMs: 300 };
    const doomed = startProcess(prefix, undefined, short);
    const survivor = startProcess(prefix, undefined, short);
    await openOnBoth(doomed, survivor);
    const stuck = vi.fn(() => new Promise<never>(() => undefined));
    void doomed.breaker.execute(stuck, isFailure).catch(() => undefined);
    await expect.poll(() => stuck.mock.calls.length).toBe(1);
    // The doomed process dies mid-probe: no result, no lock release.
    doomed.client.disconnect();

    const healthy = vi.fn(() => Promise.resolve('ok'));
    const first = await rejectionOf(survivor.breaker.execute(healthy, isFailure));
    expect(first).toMatchObject({ reason: 'probing' });
    // Callers retry after retryAfterMs (1 s); the lock has expired by then.
    await expect
      .poll(
        async () => {
          await survivor.breaker.execute(healthy, isFailure).catch(() => undefined);
          return healthy.mock.calls.length;
        },
        { timeout: 3000, interval: 100 },
      )
      .toBe(1);

    expect(survivor.breaker.state()).toEqual({ state: 'closed' });
    await expect.poll(() => survivor.client.exists(`${prefix}:breaker:crm`)).toBe(0);
  });
});

describe('Redis errors', () => {
  it('a process whose sync GET fails keeps its last known state, emits breaker:sync:error, and catches up after', async () => {
    const prefix = uniquePrefix();
    const a = startProcess(prefix);
    let failingCommands = new Set<string>();
    const b = startProcess(prefix, (client) => {
      const instrumented = instrumentRedis(client);
      failingCommands = instrumented.failing;
      return instrumented.redis;
    });
    const errors: string[] = [];
    b.registry.on('breaker:sync:error', (event) => errors.push(`${event.name}/${event.operation}`));
    await a.breaker.open(60_000);
    await expect.poll(() => b.breaker.state(), { timeout: PROPAGATION_MS }).toEqual(a.breaker.state());

    failingCommands.add('get');
    await a.breaker.close();
    await expect.poll(() => errors.length, { timeout: PROPAGATION_MS }).toBeGreaterThan(0);
    expect(errors[0]).toBe('crm/read');
    expect(b.breaker.state().state).toBe('open');

    failingCommands.delete('get');
    await expect.poll(() => b.breaker.state(), { timeout: PROPAGATION_MS }).toEqual({ state: 'closed' });
  });
});
