/**
 * The worker's side of sealed jobs (issue 17 item 5): step 2 of runAttempt opens a sealed job's envelope in
 * memory, and a raw producer's unsealed job of a sensitive operation is sealed in place before its first call,
 * so that everything Ferry writes from it afterwards (dead letter, follow-ups, moves) stays sealed.
 */
import { ValidationError } from '../core/errors.ts';
import { type JobData, SEALED_PLACEHOLDER } from '../core/job.ts';
import {
  type Keyring,
  maxSealedLength,
  openJobContent,
  sealedJobId,
  sealJobData,
} from '../core/sealed-data.ts';
import type { ServiceConfig } from '../core/services/types.ts';
import { Scrubber } from '../secrets/scrub.ts';

/** String values of a sealed input scrubbed from what the downstream answers, at most this many. */
const MAX_SCRUBBED_VALUES = 256;
/** Numbers of fewer digits (a quantity, a count) are left, as strings shorter than the scrubber's minimum. */
const MIN_SCRUBBED_NUMBER_LENGTH = 4;
const REDACTED = '[redacted]';

/** Also replaces a parsed body's numbers that are a sealed input's (the string scrubber sees text only). */
class SealedValueScrubber extends Scrubber {
  readonly numbers = new Set<number>();

  override scrubValue<T>(value: T): T {
    return super.scrubValue(this.numbers.size === 0 ? value : (this.#redactNumbers(value, 0) as T));
  }

  #redactNumbers(value: unknown, depth: number): unknown {
    if (typeof value === 'number') return this.numbers.has(value) ? REDACTED : value;
    if (depth > 64 || typeof value !== 'object' || value === null) return value;
    if (Array.isArray(value)) return value.map((item: unknown) => this.#redactNumbers(item, depth + 1));
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [key, this.#redactNumbers(item, depth + 1)]),
    );
  }
}

/**
 * The job data with its envelope opened: `input` and `metadata` are the plaintext ones, in memory only. Throws
 * ValidationError (field `sealed`) for an envelope that is malformed or does not open for this service and
 * tenant, ConfigurationError when no key of the keyring holds its key id.
 *
 * `operation` (the job's): a ValidationError too when it is not sensitive. The seal binds service and tenant,
 * not the operation, so a raw producer could copy a sensitive operation's envelope into a job of another
 * operation of the same service, whose follow-ups (not checked: it is not sensitive) would store the opened
 * input in plaintext.
 */
export function openSealedJob(
  service: ServiceConfig,
  keyring: Keyring | undefined,
  data: JobData,
  operation?: string,
): JobData {
  if (operation !== undefined && service.operations.get(operation)?.sensitive !== true)
    throw new ValidationError(
      `sealed: ${service.name}.${operation} is not sensitive, and its job carries sealed data`,
      { field: 'sealed' },
    );
  const content = openJobContent(
    keyring,
    { service: service.name, tenant: data.tenant },
    data.sealed,
    maxSealedLength(service.maxInputBytes),
  );
  const opened: JobData = { ...data, input: content.input };
  delete opened.sealed;
  if (content.metadata === undefined) delete opened.metadata;
  else opened.metadata = content.metadata;
  return opened;
}

/** The names of a service's `sensitive` operations; undefined when it has none (its jobs pay nothing). */
export function sensitiveOperationsOf(service: ServiceConfig): ReadonlySet<string> | undefined {
  const names = [...service.operations.values()].filter((op) => op.sensitive === true).map((op) => op.name);
  return names.length === 0 ? undefined : new Set(names);
}

/**
 * True for a raw producer's job data that is not sealed: no `sealed` string, or one that is no envelope next to
 * an input that is not the placeholder (a plaintext input with a bogus `sealed`). A malformed envelope next to
 * `[sealed]` is left: it fails as one (ValidationError), rather than run with the placeholder as input.
 */
export function isUnsealed(data: JobData | undefined): boolean {
  const sealed: unknown = data?.sealed;
  if (typeof sealed !== 'string') return true;
  return sealedJobId(sealed) === undefined && data?.input !== SEALED_PLACEHOLDER;
}

/**
 * A raw producer's job of a sensitive operation that is not sealed: the data to store in its place, sealed for
 * this job (undefined when there is nothing to seal). Its tenant is bound only when it is a string (a malformed
 * one fails validation right after).
 */
export function sealInPlace(
  service: ServiceConfig,
  keyring: Keyring,
  jobId: string,
  data: JobData | undefined,
): JobData | undefined {
  if (data === undefined || data === null || typeof data !== 'object' || !isUnsealed(data)) return undefined;
  const tenant = typeof data.tenant === 'string' ? data.tenant : undefined;
  const metadata =
    typeof data.metadata === 'object' && data.metadata !== null && !Array.isArray(data.metadata)
      ? data.metadata
      : undefined;
  // A `sealed` that is not an envelope (a raw producer's null) is replaced by the real one.
  const { metadata: _dropped, sealed: _bogus, ...rest } = data;
  return sealJobData(
    keyring,
    { service: service.name, tenant, jobId },
    metadata === undefined ? rest : { ...rest, metadata },
  );
}

/**
 * A scrubber of a sealed job's plaintext: every string value, and number of 4 or more characters (object keys
 * are left alone) of its input and metadata, in every encoding the secret scrubber knows, so a downstream that echoes the input back (a
 * created record, a 400 naming the bad e-mail) does not put it in the stored result, the error message or the
 * log line. Values shorter than the scrubber's minimum are left, as for secrets. Sealed jobs only.
 */
export function sealedValueScrubber(data: JobData): Scrubber {
  const scrubber = new SealedValueScrubber();
  let count = 0;
  const visit = (value: unknown, depth: number): void => {
    if (count >= MAX_SCRUBBED_VALUES || depth > 64) return;
    if (typeof value === 'string') {
      count++;
      scrubber.add(value);
    } else if (typeof value === 'number' && Number.isFinite(value)) {
      // A card or account number sent as a JSON number, echoed as one or in a message.
      const text = String(value);
      if (text.length < MIN_SCRUBBED_NUMBER_LENGTH) return;
      count++;
      scrubber.add(text);
      scrubber.numbers.add(value);
    } else if (Array.isArray(value)) {
      for (const item of value) visit(item, depth + 1);
    } else if (typeof value === 'object' && value !== null) {
      for (const item of Object.values(value)) visit(item, depth + 1);
    }
  };
  visit(data.input, 0);
  visit(data.metadata, 0);
  return scrubber;
}
