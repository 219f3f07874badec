/** `ferry/producer`: everything a service needs to enqueue, and nothing of the worker (no undici, no opossum). */
export { type ErrorRecord, type ErrorType, isFerryError, ValidationError } from '../core/errors.ts';
export type {
  AttemptRecord,
  DeadLetterRecord,
  EnqueueRequest,
  JobData,
  JobOrigin,
  JobRef,
  JobResult,
  SealedEnvelope,
} from '../core/job.ts';
export { SEALED_PLACEHOLDER } from '../core/job.ts';
export {
  DEAD_LETTER_QUEUE,
  deadLetterJobId,
  DEFAULT_PREFIX,
  defaultIdempotencyKey,
  displayQueueName,
  idempotentJobId,
  isPossibleJobId,
  RESERVED_JOB_IDS,
  serviceQueueName,
} from '../core/queue-layout.ts';
export type { Keyring } from '../core/sealed-data.ts';
export {
  decodeStoredResult,
  STORED_RESULT_VERSION,
  type StoredJobRef,
  type StoredResult,
} from '../core/stored-result.ts';
export type { TraceContext } from '../core/trace-context.ts';
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
} from './producer.ts';
export {
  DEFAULT_MIN_REPLICAS,
  DEFAULT_REPLICA_TIMEOUT_MS,
  isReplicaTimeoutError,
  ReplicaTimeoutError,
} from './replicas.ts';
export { DEFAULT_MAX_INPUT_BYTES, type ServiceCatalog, validateEnqueueRequest } from './validate.ts';
