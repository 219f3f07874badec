/**
 * What createWorkerPool takes, and the one place its defaults are stated.
 */

import type { Logger } from '../core/logger.ts';
import type { RedisClient } from '../core/redis.ts';
import type { Keyring } from '../core/sealed-data.ts';
import type { ServicesConfig } from '../core/services/types.ts';
import { type Clock, DAY, SECOND } from '../core/time.ts';
import type { RetentionOptions } from '../dead-letter/retention.ts';
import type { SecretResolver } from '../secrets/resolver.ts';
import type { Scrubber } from '../secrets/scrub.ts';
import { DEFAULT_MAX_CHAIN_DEPTH } from './follow-ups.ts';
import type { ProxyEnv } from './http/transport.ts';

/** A worker pool's collaborators and settings; what is left out takes its value from WORKER_POOL_DEFAULTS. */
export interface WorkerPoolOptions {
  config: ServicesConfig;
  /** Services to work on; default all in the config. */
  services?: readonly string[];
  /** Shared non-blocking connection (worker role: `maxRetriesPerRequest: null`); BullMQ duplicates it for blocking reads. */
  connection: RedisClient;
  prefix: string;
  secrets: SecretResolver;
  /** FERRY_SECRETS_KEY's keyring: opens and seals the jobs of sensitive operations (required when any exists). */
  keyring?: Keyring | undefined;
  /**
   * Collects every secret value and token the pool hands out, and scrubs them from what it stores; share the
   * process's, so its log lines are scrubbed too. Default: the pool's own.
   */
  scrubber?: Scrubber;
  logger: Logger;
  clock?: Clock;
  random?: () => number;
  /** How long a job's lock lasts without renewal; a crashed worker's jobs are taken again after about this. */
  lockDurationMs?: number;
  /** How often stalled jobs are looked for. */
  stalledIntervalMs?: number;
  /** Stalls before BullMQ fails a job (the sweep then dead-letters it). */
  maxStalledCount?: number;
  /** How often failed sets are swept for jobs without a dead letter. */
  sweepIntervalMs?: number;
  /** Dead-letter retention enforced on every sweep interval (dead-letter/retention.ts). Default: none. */
  deadLetterRetention?: Pick<RetentionOptions, 'maxAgeMs' | 'maxCount'>;
  /** How long completed jobs are kept (and so how long an idempotency key deduplicates). */
  keepCompletedMs?: number;
  /** How long failed jobs stay on their service queue (their dead letter stays until purged). */
  keepFailedMs?: number;
  /** Longest chain of onFailure/`then` follow-ups from one producer's job. */
  maxChainDepth?: number;
  /**
   * HTTPS_PROXY / HTTP_PROXY / NO_PROXY (readProxyEnv of the process env, at start): services without `proxy:`
   * and the OAuth2 token requests go through it. Default: none (direct).
   */
  proxyEnv?: ProxyEnv;
}

/**
 * What a worker pool uses for each option left out of WorkerPoolOptions, and for close(). The CLI passes the
 * environment's values instead (core/env.ts: FERRY_LOCK_DURATION_MS, FERRY_STALLED_INTERVAL_MS,
 * FERRY_MAX_STALLED_COUNT, FERRY_SWEEP_INTERVAL_MS, FERRY_SHUTDOWN_TIMEOUT_MS, FERRY_SHUTDOWN_HANDBACK_MS),
 * whose defaults are these (test/worker/pool-defaults.test.ts holds the two together).
 */
export const WORKER_POOL_DEFAULTS = Object.freeze({
  /** How long a job's lock lasts without renewal: a crashed worker's jobs are taken again after about this. */
  lockDurationMs: 30 * SECOND,
  /** How often stalled jobs are looked for. */
  stalledIntervalMs: 30 * SECOND,
  /** Stalls before BullMQ fails a job (the sweep then dead-letters it): one crash must not dead-letter a job. */
  maxStalledCount: 5,
  /** How often failed sets are swept for jobs without a dead letter, and dead-letter retention enforced. */
  sweepIntervalMs: 30 * SECOND,
  /** How long completed jobs are kept (and so how long an idempotency key deduplicates). */
  keepCompletedMs: DAY,
  /** How long failed jobs stay on their service queue (their dead letter stays until purged). */
  keepFailedMs: 7 * DAY,
  /** Longest chain of onFailure/`then` follow-ups from one producer's job. */
  maxChainDepth: DEFAULT_MAX_CHAIN_DEPTH,
  /** close(): how long in-flight calls may finish before they are aborted (`deadlineMs`). */
  shutdownGraceMs: 5 * SECOND,
  /** close(): then how long aborted runs get to be recorded and handed back (`handbackMs`). */
  shutdownHandbackMs: 3 * SECOND,
  /**
   * Shortest lock of a breaker's half-open probe; a service whose slowest operation (plus 5 s) takes longer
   * gets that instead. The probe is one call: its lock must outlive it, or a second process probes too.
   */
  breakerProbeTimeoutMs: 30 * SECOND,
});

/** Default grace of in-flight calls on close (FERRY_SHUTDOWN_TIMEOUT_MS). */
export const DEFAULT_SHUTDOWN_GRACE_MS = WORKER_POOL_DEFAULTS.shutdownGraceMs;
/** Default time aborted runs get to be recorded and handed back (FERRY_SHUTDOWN_HANDBACK_MS). */
export const DEFAULT_SHUTDOWN_HANDBACK_MS = WORKER_POOL_DEFAULTS.shutdownHandbackMs;
