import { ValidationError } from '../core/errors.ts';
import { type EnqueueRequest, enqueueRequestSchema, issuePath } from '../core/job.ts';

/** 256 KiB: the default largest job input (JSON bytes) when the service does not set maxInputBytes. */
export const DEFAULT_MAX_INPUT_BYTES = 256 * 1024;

/** What a producer needs to know of the services file; ServicesConfig['services'] satisfies it. */
export type ServiceCatalog = ReadonlyMap<
  string,
  { readonly operations: ReadonlyMap<string, unknown>; readonly maxInputBytes: number }
>;

/**
 * Validates one enqueue request: shape, then (when the producer knows the services) service, operation and
 * input size. Throws ValidationError whose `field` names the offending field (prefixed for batch items).
 */
export function validateEnqueueRequest(
  value: unknown,
  catalog: ServiceCatalog | undefined,
  fieldPrefix = '',
): EnqueueRequest {
  const parsed = enqueueRequestSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = fieldPrefix + (issue.path.length === 0 ? '' : issuePath(issue.path));
    const message =
      issue.code === 'unrecognized_keys' ? `unknown field(s): ${issue.keys.join(', ')}` : issue.message;
    throw new ValidationError(`${field || 'job'}: ${message}`, { field: field || 'job' });
  }
  const request = parsed.data;
  const service = catalog?.get(request.service);
  if (catalog !== undefined && service === undefined) {
    // 422: the request is well-formed but names what does not exist (the API answers with this status).
    throw new ValidationError(`${fieldPrefix}service: unknown service "${request.service}"`, {
      field: `${fieldPrefix}service`,
      status: 422,
    });
  }
  if (service !== undefined && !service.operations.has(request.operation)) {
    throw new ValidationError(
      `${fieldPrefix}operation: unknown operation "${request.operation}" for service "${request.service}"`,
      { field: `${fieldPrefix}operation`, status: 422 },
    );
  }
  const maxInputBytes = service?.maxInputBytes ?? DEFAULT_MAX_INPUT_BYTES;
  const inputBytes = request.input === undefined ? 0 : Buffer.byteLength(JSON.stringify(request.input));
  if (inputBytes > maxInputBytes) {
    throw new ValidationError(
      `${fieldPrefix}input: ${inputBytes} bytes, over the ${maxInputBytes}-byte limit`,
      {
        field: `${fieldPrefix}input`,
        status: 413,
      },
    );
  }
  return request;
}
