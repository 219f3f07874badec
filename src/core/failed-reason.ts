import { type ErrorRecord, isErrorType } from './errors.ts';

/**
 * BullMQ keeps one string per failed job, `failedReason`. Ferry writes it as `<type>: <message>` so that
 * anyone reading a failed job (the sweep, `Producer.get`, plain BullMQ tools) can recover the error type.
 */
export function formatFailedReason(error: ErrorRecord): string {
  return `${error.type}: ${error.message}`;
}

export function parseFailedReason(reason: string | undefined, stalledCounter: number): ErrorRecord {
  const text = reason ?? '';
  if (/stalled more than allowable limit/i.test(text)) {
    return {
      type: 'TimeoutError',
      message: `the job was lost by a worker ${stalledCounter} times (crash or stall) and BullMQ gave up on it; the downstream may or may not have received the last call`,
    };
  }
  const match = /^([A-Za-z]+Error): ([\s\S]*)$/.exec(text);
  if (match !== null && isErrorType(match[1])) return { type: match[1], message: match[2] ?? '' };
  return {
    type: 'ConfigurationError',
    message: `the job failed outside Ferry's delivery path: ${text || 'no reason recorded'}`,
  };
}
