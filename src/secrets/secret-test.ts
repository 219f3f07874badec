/**
 * The shape of `ferry secrets test` / `POST /v1/secrets/:key/test`: the operator action checks the request
 * (src/ops/secret-test.ts), the worker's HTTP layer makes the call (SecretProbe, src/worker/secret-probe.ts),
 * the API and the CLI pass requests and show outcomes; all of them read these types.
 */
import type { ErrorType } from '../core/errors.ts';
import type { JobData } from '../core/job.ts';
import type { ServiceConfig } from '../core/services/types.ts';
import type { Clock } from '../core/time.ts';
import type { SecretResolver } from './resolver.ts';

export interface SecretTestRequest {
  /** `crm_key` or `tenant/acme/crm_key`. */
  readonly key: string;
  /** The candidate value (the staged version). Never in the outcome: it is scrubbed from body and messages. */
  readonly value: string;
  readonly service: string;
  readonly operation: string;
  /** The job input the operation's templates read. */
  readonly input?: unknown;
  /** The job's tenant. A tenant key (`tenant/T/x`) implies tenant T; a different one here is refused. */
  readonly tenant?: string;
}

export type SecretTestOutcome =
  | {
      outcome: 'completed';
      status: number;
      durationMs: number;
      /** Scrubbed of every secret value and token the call used. */
      body: unknown;
      bodyTruncated?: boolean;
    }
  | {
      outcome: 'failed';
      error: { type: ErrorType; message: string; status?: number };
      durationMs: number;
    };

/** One call of a secret test, already checked (src/ops/secret-test.ts). */
export interface SecretProbeCall {
  readonly service: ServiceConfig;
  readonly operation: string;
  /** The job's data: its input, and its tenant when there is one. */
  readonly data: JobData;
  /** The process's secrets, with the tested key answered by the candidate. */
  readonly secrets: SecretResolver;
  /** The candidate value: scrubbed from the outcome's body and messages. */
  readonly candidate: string;
  readonly clock: Clock;
}

/** Makes the call as a job of the service would, and reports what happened (never throws for the call's failure). */
export type SecretProbe = (call: SecretProbeCall) => Promise<SecretTestOutcome>;
