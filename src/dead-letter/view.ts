/**
 * What the API and the CLI show of a dead letter. Built field by field from the record read back and checked:
 * `{dead-letter}` is an ordinary BullMQ queue that anyone with Redis access can write to, and a view must
 * never carry more than a Ferry dead-letter record holds (secrets never are in one; an unknown key might be).
 */
import { z } from 'zod';

import { type DeadLetterRecord, deadLetterRecordSchema } from '../core/job.ts';
import { decodeDeadLetter } from '../core/stored-history.ts';

/** One dead letter as listed: its record (DeadLetterRecord), its id, and the input only when asked for. */
export type DeadLetterView = Omit<DeadLetterRecord, 'input' | 'sealed'> & {
  /** The job's input and metadata are sealed (`input` is `[sealed]`): `ferry dlq show --reveal` opens them. */
  sealed?: true;
  /** Its job id on `{dead-letter}` (`dl-<service>.<source job id>.<created>`): what show and delete take. */
  id: string;
  /**
   * The job's input. Always in show; in list only with `includeInput`: an input may be 256 KiB, and a page
   * of 500 would be 128 MiB of them, where operators scanning a list need the error and the ids.
   */
  input?: unknown;
};

/** One dead letter as shown: the whole record, its id and its BullMQ job name. */
export interface DeadLetterDetail extends DeadLetterView {
  /** BullMQ job name on `{dead-letter}`: `<service>.<operation>`. */
  name: string;
  input: unknown;
}

/** JSON Schema material for the API's OpenAPI document (`z.toJSONSchema`): a list item, a shown dead letter. */
const sealedFlag = z
  .literal(true)
  .optional()
  .describe('The input and metadata are sealed (sensitive operation): input is "[sealed]", metadata absent');
export const deadLetterViewSchema = deadLetterRecordSchema.extend({
  id: z.string(),
  input: z.unknown().optional(),
  sealed: sealedFlag,
});
export const deadLetterDetailSchema = deadLetterRecordSchema.extend({
  id: z.string(),
  name: z.string(),
  sealed: sealedFlag,
});

/** A dead letter's stored job data (JSON) as a checked record, or undefined when it is not one. */
export function parseDeadLetterRecord(json: string): DeadLetterRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return undefined;
  }
  // The stored history (either version) decoded: a view shows AttemptRecords (core/stored-history.ts).
  return decodeDeadLetter(value);
}

export function toDeadLetterView(
  id: string,
  record: DeadLetterRecord,
  includeInput: boolean,
): DeadLetterView {
  return {
    id,
    service: record.service,
    operation: record.operation,
    ...(record.tenant === undefined ? {} : { tenant: record.tenant }),
    ...(record.idempotencyKey === undefined ? {} : { idempotencyKey: record.idempotencyKey }),
    ...(record.metadata === undefined ? {} : { metadata: record.metadata }),
    sourceJobId: record.sourceJobId,
    sourceQueue: record.sourceQueue,
    attempts: record.attempts,
    finalError: record.finalError,
    deadLetteredAt: record.deadLetteredAt,
    enqueuedAt: record.enqueuedAt,
    // Issue 16: what made the job (a reaction, a route, a schedule), and the onFailure follow-up it fired.
    ...(record.origin === undefined ? {} : { origin: record.origin }),
    ...(record.followUp === undefined ? {} : { followUp: record.followUp }),
    ...(record.followUpError === undefined ? {} : { followUpError: record.followUpError }),
    ...(record.sealed === undefined ? {} : { sealed: true as const }),
    ...(includeInput ? { input: record.input } : {}),
  };
}

export function toDeadLetterDetail(id: string, name: string, record: DeadLetterRecord): DeadLetterDetail {
  return { ...toDeadLetterView(id, record, false), name, input: record.input };
}
