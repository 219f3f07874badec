/**
 * A vitest setup file (vitest.config.ts `setupFiles`): fails the test that left a Redis connection open, and
 * the file when one opened outside any test (at the top level, in beforeAll) outlives the file's own afterAll.
 * BullMQ workers and queues hold their Redis connections through ioredis, so a worker, queue, producer or pool
 * left running shows up here as the connections it still holds.
 *
 * Every ioredis connection made in this process is noted with the test that made it (`Redis.prototype.connect`
 * is wrapped: constructors, lazy clients, `duplicate()` and Cluster nodes all go through it). When a test
 * finishes, after its own cleanups (this check is the first onTestFinished handler registered, and they run
 * last-registered first), every connection it made must be closed: no live socket and no reconnect pending. A
 * connection whose close is still under way is waited for (up to CLOSE_BOUND_MS), never slept on. A leaked one
 * fails the test with its name and where it was made, and is then closed so it cannot fail the next test too.
 */
import type { Socket } from 'node:net';

import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeEach } from 'vitest';

import { until } from './until.ts';

/** How long a connection whose close is under way (a disconnect() just called) may take to end its socket. */
const CLOSE_BOUND_MS = 5_000;

interface Tracked {
  client: Redis;
  /** The test that made it; undefined for the file (top level, beforeAll). */
  test: string | undefined;
  /** Where it was made: the first stack frame in test/ or src/. */
  madeAt: string;
}

interface Internals {
  stream?: Socket;
  reconnectTimeout?: unknown;
}

const PATCHED = Symbol.for('ferry.test.leakCheck');

interface LeakState {
  tracked: Tracked[];
  /** Each Cluster client with the test that made it: its nodes connect lazily, often during a later test. */
  clusters: Map<Cluster, string | undefined>;
  currentTest: string | undefined;
}

// One state per process, not per evaluation of this file: the prototype is patched once, and with vitest's
// isolate off this file is evaluated again for each test file while the patch from the first one stays.
const STATE = Symbol.for('ferry.test.leakCheck.state');
const holder = globalThis as typeof globalThis & { [STATE]?: LeakState };
const state: LeakState = (holder[STATE] ??= { tracked: [], clusters: new Map(), currentTest: undefined });
const { tracked, clusters } = state;

/** Open: a socket not yet destroyed, or a reconnect scheduled. A client never connected (lazy) is not. */
function isOpen(client: Redis): boolean {
  if (client.status === 'end' || client.status === 'wait') return false;
  const internals = client as unknown as Internals;
  if (internals.reconnectTimeout !== undefined && internals.reconnectTimeout !== null) return true;
  return internals.stream !== undefined && !internals.stream.destroyed;
}

function callerFrame(): string {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 40;
  const stack = new Error().stack ?? '';
  Error.stackTraceLimit = limit;
  const frames = stack.split('\n').slice(1);
  const ours = frames.find(
    (frame) =>
      /\/(test|src)\//.test(frame) && !frame.includes('node_modules') && !frame.includes('leak-check'),
  );
  return (ours ?? frames.find((frame) => !frame.includes('leak-check')) ?? 'unknown').trim();
}

const prototype = Redis.prototype as Redis & { [PATCHED]?: true };
if (prototype[PATCHED] !== true) {
  const connect = prototype.connect;
  prototype.connect = function (this: Redis, ...args: Parameters<Redis['connect']>) {
    // Called again on every reconnect: the owner stays whoever made the first connection.
    if (!tracked.some((entry) => entry.client === this)) {
      tracked.push({ client: this, test: state.currentTest, madeAt: callerFrame() });
    }
    return connect.apply(this, args);
  };
  prototype[PATCHED] = true;
  const clusterPrototype = Cluster.prototype as Cluster & { [PATCHED]?: true };
  const connectCluster = clusterPrototype.connect;
  clusterPrototype.connect = function (this: Cluster, ...args: Parameters<Cluster['connect']>) {
    if (!clusters.has(this)) clusters.set(this, state.currentTest);
    return connectCluster.apply(this, args);
  };
  clusterPrototype[PATCHED] = true;
}

/**
 * The owner of a connection: a node of a Cluster client belongs to whoever made that client, not to the test
 * whose command happened to open it.
 */
function ownerOf(entry: Tracked): string | undefined {
  for (const [cluster, owner] of clusters) {
    if (cluster.status !== 'end' && cluster.nodes('all').includes(entry.client)) return owner;
  }
  return entry.test;
}

/** Waits for `entries` to close; those still open after CLOSE_BOUND_MS are closed, and an Error names them. */
async function checkClosed(entries: Tracked[], owner: string): Promise<void> {
  if (entries.length === 0) return;
  const open = (): Tracked[] => entries.filter((entry) => isOpen(entry.client));
  const leaked = await until(
    async () => (open().length === 0 ? [] : undefined),
    CLOSE_BOUND_MS,
    () => 'closed',
    10,
  ).catch(() => open());
  for (const entry of entries) tracked.splice(tracked.indexOf(entry), 1);
  if (leaked.length === 0) return;
  const error = new Error(
    `${owner} left ${leaked.length} Redis connection(s) open (a worker, queue, producer or client not ` +
      `closed; close it in onTestFinished or afterAll):\n` +
      leaked.map((entry) => `  made ${entry.madeAt} (status ${entry.client.status})`).join('\n'),
  );
  for (const entry of leaked) entry.client.disconnect();
  throw error;
}

beforeEach((context) => {
  // Tests that run at the same time (describe.concurrent) cannot tell whose connection is whose: theirs are
  // checked with the file's.
  if (context.task.concurrent === true) return;
  const name = context.task.fullName;
  state.currentTest = name;
  context.onTestFinished(async () => {
    state.currentTest = undefined;
    for (const entry of tracked) entry.test = ownerOf(entry);
    for (const [cluster, owner] of clusters) if (owner === name) clusters.delete(cluster);
    await checkClosed(
      tracked.filter((entry) => entry.test === name),
      `test "${name}"`,
    );
  });
});

afterAll(async () => {
  clusters.clear();
  await checkClosed([...tracked], 'this file (top level or beforeAll)');
});
