/**
 * Per-service circuit breakers whose open state is shared by every process through Redis.
 * Imports nothing from the rest of Ferry: Redis comes in as a RedisLike.
 */
export {
  BreakerOpenError,
  type BreakerOpenReason,
  BreakerRegistryClosedError,
  isBreakerOpenError,
} from './errors.ts';
export { breakerDefaults, type BreakerOptions } from './options.ts';
export {
  type BreakerRegistry,
  type BreakerRegistryEventMap,
  type BreakerRegistryEventName,
  type BreakerRegistryOptions,
  createBreakerRegistry,
} from './registry.ts';
export type { BreakerStateChangedEvent, BreakerSyncErrorEvent, ServiceBreaker } from './service-breaker.ts';
export {
  clearSharedState,
  type ObservedRecord,
  readSharedState,
  type RedisLike,
  writeSharedOpen,
} from './shared-state.ts';
export type { BreakerState, SharedOpenRecord, TransitionSource } from './state.ts';
