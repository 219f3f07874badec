/**
 * One service's breaker in one process. opossum counts failures while closed; the open / half-open part is
 * ours, because it is shared: Redis holds the open period (`keyFor(name)`) and the half-open probe lock, and
 * every process follows them (DESIGN §4 "Breaker per service"). Transitions are the pure functions of
 * state.ts; this class only feeds them inputs, emits the changes and writes what *this* process decided.
 * A state learned from Redis is never written back (no ping-pong between processes).
 */
import { randomUUID } from 'node:crypto';

import { createFailureDetector, type FailureDetector, isCounted, type IsFailure } from './detector.ts';
import { BreakerOpenError, BreakerRegistryClosedError } from './errors.ts';
import { breakerDefaults, type ResolvedBreakerOptions, sharedStateTtlMs } from './options.ts';
import {
  acquireProbeLock,
  clearSharedState,
  type ObservedRecord,
  type OpenWriteMode,
  readSharedState,
  type RedisLike,
  releaseProbeLock,
  writeSharedOpen,
} from './shared-state.ts';
import {
  type BreakerInput,
  type BreakerState,
  closedState,
  isSameState,
  nextState,
  remainingOpenMs,
  type SharedOpenRecord,
  sourceOf,
  type TransitionSource,
} from './state.ts';

export interface ServiceBreaker {
  readonly name: string;
  /** The current state (an open breaker whose `untilMs` has passed reads `halfOpen`). */
  state(): BreakerState;
  /**
   * Runs `fn` unless the breaker is open. Only rejections for which `isFailure(error)` is true count toward
   * opening; other rejections reach the caller unchanged and count as answered calls. While closed this makes
   * no Redis call. Refused calls reject with BreakerOpenError (fn is not called): `retryAfterMs` is the time
   * left open, or `probeRetryAfterMs` (1 s) while another caller holds the half-open probe.
   */
  execute<T>(fn: () => Promise<T>, isFailure: (error: unknown) => boolean): Promise<T>;
  /** Opens the breaker in every process for `durationMs` (default `resetTimeoutMs`); then one probe decides. */
  open(durationMs?: number): Promise<void>;
  /** Closes the breaker in every process. */
  close(): Promise<void>;
}

export interface BreakerStateChangedEvent {
  name: string;
  from: BreakerState;
  to: BreakerState;
  /** `local`: this process decided; `shared`: learned from Redis; `manual`: open()/close() here. */
  source: TransitionSource;
}

export interface BreakerSyncErrorEvent {
  name: string;
  /** `read`: the periodic GET; `write`: storing this process's decision (retried); `probe`: the probe lock. */
  operation: 'read' | 'write' | 'probe';
  error: unknown;
}

/** What a breaker needs from its registry. */
export interface BreakerContext {
  readonly redis: RedisLike;
  readonly clock: { now(): number };
  isRegistryClosed(): boolean;
  emitStateChanged(event: BreakerStateChangedEvent): void;
  emitSyncError(event: BreakerSyncErrorEvent): void;
  /** Background Redis work that close() waits for. Must not reject. */
  track(work: Promise<void>): void;
}

type ProbeSlot =
  | { kind: 'idle' }
  | { kind: 'acquiring' }
  | { kind: 'running' }
  | { kind: 'heldElsewhere'; recheckAtMs: number };

const idle: ProbeSlot = { kind: 'idle' };

export class Breaker implements ServiceBreaker {
  readonly name: string;
  readonly #key: string;
  readonly #options: ResolvedBreakerOptions;
  readonly #ctx: BreakerContext;
  #state: BreakerState = closedState;
  #detector: FailureDetector;
  #probe: ProbeSlot = idle;
  /** Bumped when this process starts writing shared state: a read issued before then is stale. */
  #writeVersion = 0;
  #writesInFlight = 0;
  /** A write of this process's decision that failed; the next sync retries it instead of reading over it. */
  #pendingWrite: (() => Promise<void>) | undefined;
  #sync: Promise<void> | undefined;

  constructor(name: string, key: string, options: ResolvedBreakerOptions, ctx: BreakerContext) {
    this.name = name;
    this.#key = key;
    this.#options = options;
    this.#ctx = ctx;
    this.#detector = this.#createDetector();
  }

  state(): BreakerState {
    return this.#state.state === 'closed' ? this.#state : this.#advance(this.#ctx.clock.now());
  }

  execute<T>(fn: () => Promise<T>, isFailure: IsFailure): Promise<T> {
    if (this.#ctx.isRegistryClosed()) return Promise.reject(new BreakerRegistryClosedError(this.name));
    // Hot path: a closed breaker reads no clock and makes no Redis call.
    if (this.#state.state === 'closed') return this.#runClosed(fn, isFailure);
    return this.#runNotClosed(fn, isFailure);
  }

  async open(durationMs: number = this.#options.resetTimeoutMs): Promise<void> {
    if (this.#ctx.isRegistryClosed()) throw new BreakerRegistryClosedError(this.name);
    if (!(Number.isFinite(durationMs) && durationMs > 0)) {
      throw new RangeError(`breaker "${this.name}": open() durationMs must be > 0 (got ${durationMs})`);
    }
    const nowMs = this.#ctx.clock.now();
    const record: SharedOpenRecord = { untilMs: nowMs + durationMs, openedAtMs: nowMs, manual: true };
    // Shared first: when this resolves every process will follow, and a failure changes nothing here.
    await this.#writeShared(this.#openWriter(record, 'replace'), false);
    this.#transition({ type: 'manualOpened', untilMs: record.untilMs });
  }

  async close(): Promise<void> {
    if (this.#ctx.isRegistryClosed()) throw new BreakerRegistryClosedError(this.name);
    await this.#writeShared(() => clearSharedState(this.#ctx.redis, this.#key), false);
    this.#transition({ type: 'manualClosed' });
  }

  /** One GET of the shared state (or a retry of a failed write); never rejects. Called by the registry. */
  sync(): Promise<void> {
    this.#sync ??= this.#syncOnce().finally(() => {
      this.#sync = undefined;
    });
    return this.#sync;
  }

  /** Stops opossum's timers; the registry is closing. */
  shutdown(): void {
    this.#detector.shutdown();
  }

  #runClosed<T>(fn: () => Promise<T>, isFailure: IsFailure): Promise<T> {
    return this.#detector.run(fn, isFailure);
  }

  async #runNotClosed<T>(fn: () => Promise<T>, isFailure: IsFailure): Promise<T> {
    const nowMs = this.#ctx.clock.now();
    const state = this.#advance(nowMs);
    switch (state.state) {
      case 'closed':
        return this.#runClosed(fn, isFailure);
      case 'open':
        throw new BreakerOpenError(this.name, remainingOpenMs(state, nowMs), 'open');
      case 'halfOpen':
        return this.#runProbe(fn, isFailure, nowMs);
      default:
        return assertNever(state);
    }
  }

  /** Half-open: run `fn` as the one probe cluster-wide, or refuse. */
  async #runProbe<T>(fn: () => Promise<T>, isFailure: IsFailure, nowMs: number): Promise<T> {
    const slot = this.#probe;
    const busy = slot.kind === 'acquiring' || slot.kind === 'running';
    if (busy || (slot.kind === 'heldElsewhere' && nowMs < slot.recheckAtMs)) throw this.#probingError();
    this.#probe = { kind: 'acquiring' };
    const { redis, clock } = this.#ctx;
    const id = randomUUID();
    let won = false;
    let observed: ObservedRecord | null = null;
    try {
      won = await acquireProbeLock(redis, this.#key, id, this.#options.probeTimeoutMs);
      // Read after winning: a prober that finished just before us has closed or re-opened it.
      if (won) observed = await readSharedState(redis, this.#key);
    } catch (error) {
      this.#ctx.emitSyncError({ name: this.name, operation: 'probe', error });
      if (won) this.#releaseProbe(id);
      won = false;
    }
    if (!won) {
      this.#probe = { kind: 'heldElsewhere', recheckAtMs: clock.now() + breakerDefaults.probeRetryAfterMs };
      throw this.#probingError();
    }
    const decidedMs = clock.now();
    if (observed === null || observed.record.untilMs > decidedMs || this.#state.state !== 'halfOpen') {
      // Closed or re-opened meanwhile (by a prober that just finished, a manual command, or this process):
      // give the lock back and treat the call like any other in the new state.
      this.#probe = idle;
      this.#releaseProbe(id);
      if (this.#state.state === 'halfOpen') {
        this.#transition({ type: 'sharedObserved', record: observed?.record ?? null, nowMs: decidedMs });
      }
      return this.execute(fn, isFailure);
    }
    this.#probe = { kind: 'running' };
    let value: T;
    try {
      value = await fn();
    } catch (error) {
      this.#finishProbe(id, observed.raw, isCounted(isFailure, error) ? 'failed' : 'succeeded');
      throw error;
    }
    this.#finishProbe(id, observed.raw, 'succeeded');
    return value;
  }

  /** A non-counted rejection (a 4xx) is a success here: the service answered. */
  #finishProbe(id: string, probedRaw: string, outcome: 'succeeded' | 'failed'): void {
    this.#probe = idle;
    const { redis, clock } = this.#ctx;
    const nowMs = clock.now();
    let write: (() => Promise<void>) | undefined;
    if (outcome === 'succeeded') {
      // Delete only the record we probed: a manual open meanwhile must survive.
      if (this.#transition({ type: 'probeSucceeded' })) {
        write = () => clearSharedState(redis, this.#key, probedRaw);
      }
    } else if (
      this.#transition({ type: 'probeFailed', nowMs, resetTimeoutMs: this.#options.resetTimeoutMs })
    ) {
      const state = this.#state;
      if (state.state === 'open')
        write = this.#openWriter({ untilMs: state.untilMs, openedAtMs: nowMs }, 'extend');
    }
    // The lock is released after the decision is stored, so the next lock winner reads the decision.
    const stored = write === undefined ? Promise.resolve() : this.#writeShared(write, true);
    this.#ctx.track(
      stored
        .catch((error: unknown) => this.#ctx.emitSyncError({ name: this.name, operation: 'write', error }))
        .then(() => this.#releaseProbe(id)),
    );
  }

  #releaseProbe(id: string): void {
    // Best effort: a lock that cannot be released expires after probeTimeoutMs.
    this.#ctx.track(
      releaseProbeLock(this.#ctx.redis, this.#key, id).catch((error: unknown) =>
        this.#ctx.emitSyncError({ name: this.name, operation: 'probe', error }),
      ),
    );
  }

  #onTripped(): void {
    const nowMs = this.#ctx.clock.now();
    if (!this.#transition({ type: 'tripped', nowMs, resetTimeoutMs: this.#options.resetTimeoutMs })) return;
    const state = this.#state;
    if (state.state !== 'open') return;
    const write = this.#openWriter({ untilMs: state.untilMs, openedAtMs: nowMs }, 'extend');
    this.#ctx.track(
      this.#writeShared(write, true).catch((error: unknown) =>
        this.#ctx.emitSyncError({ name: this.name, operation: 'write', error }),
      ),
    );
  }

  #openWriter(record: SharedOpenRecord, mode: OpenWriteMode): () => Promise<void> {
    return async () => {
      const nowMs = this.#ctx.clock.now();
      // A retried automatic open that has already run out is no longer worth storing.
      if (mode === 'extend' && record.untilMs <= nowMs) return;
      const ttlMs = sharedStateTtlMs(this.#options, record.untilMs, nowMs);
      const stored = await writeSharedOpen(this.#ctx.redis, this.#key, record, ttlMs, mode);
      // Another process stored a longer open period: follow it.
      if (stored.untilMs !== record.untilMs) {
        this.#transition({ type: 'sharedObserved', record: stored, nowMs: this.#ctx.clock.now() });
      }
    };
  }

  #writeShared(write: () => Promise<void>, retryOnFailure: boolean): Promise<void> {
    this.#writeVersion += 1;
    this.#writesInFlight += 1;
    this.#pendingWrite = undefined;
    const version = this.#writeVersion;
    return write()
      .catch((error: unknown) => {
        if (retryOnFailure && version === this.#writeVersion) this.#pendingWrite = write;
        throw error;
      })
      .finally(() => {
        this.#writesInFlight -= 1;
      });
  }

  async #syncOnce(): Promise<void> {
    const pending = this.#pendingWrite;
    if (pending !== undefined) {
      try {
        await this.#writeShared(pending, true);
      } catch (error) {
        this.#ctx.emitSyncError({ name: this.name, operation: 'write', error });
      }
    }
    if (this.#writesInFlight === 0 && this.#pendingWrite === undefined) {
      const version = this.#writeVersion;
      try {
        const observed = await readSharedState(this.#ctx.redis, this.#key);
        // Discard a read that raced a write of ours: it may predate it.
        if (version === this.#writeVersion && this.#writesInFlight === 0) {
          this.#transition({
            type: 'sharedObserved',
            record: observed?.record ?? null,
            nowMs: this.#ctx.clock.now(),
          });
        }
      } catch (error) {
        // Keep the last known state.
        this.#ctx.emitSyncError({ name: this.name, operation: 'read', error });
      }
    }
    if (this.#state.state !== 'closed') this.#advance(this.#ctx.clock.now());
  }

  #advance(nowMs: number): BreakerState {
    this.#transition({ type: 'elapsed', nowMs });
    return this.#state;
  }

  /** Applies `input`; emits and returns true when the state changed. */
  #transition(input: BreakerInput): boolean {
    const from = this.#state;
    const to = nextState(from, input);
    if (to === from || isSameState(from, to)) return false;
    this.#state = to;
    // A fresh rolling window after every close: failures from before the outage must not re-trip it at once.
    if (to.state === 'closed') this.#replaceDetector();
    if (to.state !== 'halfOpen' && this.#probe.kind === 'heldElsewhere') this.#probe = idle;
    this.#ctx.emitStateChanged({ name: this.name, from, to, source: sourceOf(input) });
    return true;
  }

  #createDetector(): FailureDetector {
    return createFailureDetector(
      this.name,
      this.#options,
      () => this.#onTripped(),
      () => this.#refusal(),
    );
  }

  #replaceDetector(): void {
    const old = this.#detector;
    this.#detector = this.#createDetector();
    // Calls still in flight on the old detector settle normally; its events no longer reach us.
    old.shutdown();
  }

  #probingError(): BreakerOpenError {
    return new BreakerOpenError(this.name, breakerDefaults.probeRetryAfterMs, 'probing');
  }

  #refusal(): Error {
    if (this.#ctx.isRegistryClosed()) return new BreakerRegistryClosedError(this.name);
    const nowMs = this.#ctx.clock.now();
    const state = this.#advance(nowMs);
    return state.state === 'open'
      ? new BreakerOpenError(this.name, remainingOpenMs(state, nowMs), 'open')
      : this.#probingError();
  }
}

function assertNever(value: never): never {
  throw new TypeError(`unexpected breaker state ${JSON.stringify(value)}`);
}
