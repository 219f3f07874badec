/**
 * The shape of `ferry secrets test` / `POST /v1/secrets/:key/test`: the worker runs the call
 * (src/worker/secret-test.ts), the API and the CLI pass requests and show outcomes; both read these types.
 */
import type { ErrorType } from '../core/errors.ts';

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
