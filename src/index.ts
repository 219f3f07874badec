/** Ferry's public library surface. Named exports only; `ferry/producer` is the lighter entry for services that only enqueue. */
export type { DeliveryEventMap, DeliveryEventName } from './core/delivery-events.ts';
export {
  AuthenticationError,
  CircuitOpenError,
  ClientError,
  ConfigurationError,
  EgressDeniedError,
  ERROR_TYPES,
  type ErrorRecord,
  type ErrorType,
  FerryError,
  isFerryError,
  NetworkError,
  RateLimitedError,
  ResponseTooLargeError,
  ServerError,
  TimeoutError,
  TlsError,
  toErrorRecord,
  ValidationError,
} from './core/errors.ts';
export type {
  AttemptRecord,
  DeadLetterRecord,
  DeliveryState,
  EnqueueRequest,
  JobData,
  JobOrigin,
  JobRef,
  JobResult,
} from './core/job.ts';
export { createLogger, type Logger } from './core/logger.ts';
export {
  DEAD_LETTER_QUEUE,
  DEAD_LETTERED_FIELD,
  deadLetterJobId,
  deadLetterJobName,
  DEFAULT_PREFIX,
  defaultIdempotencyKey,
  displayQueueName,
  idempotentJobId,
  isPossibleJobId,
  RESERVED_JOB_IDS,
  serviceFromQueueName,
  serviceQueueName,
} from './core/queue-layout.ts';
export { createRedisConnection, type RedisClient } from './core/redis.ts';
export {
  checkServicesFile,
  loadServicesFile,
  parseServicesConfig,
  ServicesFileError,
} from './core/services/load.ts';
export type { ServiceConfig, ServicesConfig } from './core/services/types.ts';
export {
  decodeStoredResult,
  STORED_RESULT_VERSION,
  type StoredJobRef,
  type StoredResult,
} from './core/stored-result.ts';
export type { TraceContext } from './core/trace-context.ts';
export {
  DEFAULT_MAX_FOLLOW_HOPS,
  type EnqueueOptions,
  type EnqueueResult,
  type FollowedJobView,
  FollowError,
  type FollowOptions,
  type JobState,
  type JobView,
  Producer,
  ProducerClosedError,
  type ProducerOptions,
  type WaitOptions,
  WaitTimeoutError,
} from './producer/producer.ts';
export { isReplicaTimeoutError, ReplicaTimeoutError } from './producer/replicas.ts';
export { DEFAULT_MAX_INPUT_BYTES, type ServiceCatalog, validateEnqueueRequest } from './producer/validate.ts';
export { type Keyring, parseKeyring } from './secrets/crypto.ts';
export { createEnvSecretResolver } from './secrets/env-provider.ts';
export type { SecretResolver } from './secrets/resolver.ts';
export { createWorkerPool, type WorkerPool, type WorkerPoolOptions } from './worker/worker-pool.ts';
