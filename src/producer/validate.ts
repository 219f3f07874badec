import { ValidationError } from '../core/errors.ts';
import {
  DEFAULT_MAX_INPUT_BYTES,
  DEFAULT_MAX_METADATA_BYTES,
  type EnqueueRequest,
  enqueueRequestSchema,
  issuePath,
  parseSimpleEnqueueRequest,
} from '../core/job.ts';

export { DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_METADATA_BYTES };

/** What a producer needs to know of the services file; ServicesConfig['services'] satisfies it. */
export type ServiceCatalog = ReadonlyMap<
  string,
  {
    readonly operations: ReadonlyMap<string, unknown>;
    readonly maxInputBytes: number;
    /** `required`: every job needs a tenant (its secrets are per tenant, with no global fall-back). */
    readonly tenantSecrets?: 'fallback' | 'required';
  }
>;

/**
 * Requests this module returned, with the catalog they were checked against. The API validates each job (to
 * answer per item) and then hands it to Producer.enqueueMany, which validates again: a request already
 * checked against the same catalog passes at once. They are frozen, so what was checked is what is enqueued.
 */
const validated = new WeakMap<object, { catalog: ServiceCatalog | undefined; maxMetadataBytes: number }>();

/** Re-serialized JSON is at most this many times longer than its source text (an exponent spelled out). */
const MAX_JSON_GROWTH = 6;

export interface ValidateOptions {
  /**
   * The length of the JSON text the request was parsed from (the HTTP body). When even a worst-case
   * re-serialization of it fits the service's limit, the input is not serialized again to measure it.
   */
  sourceBytes?: number;
  /** Largest `metadata` in JSON bytes (default DEFAULT_MAX_METADATA_BYTES; the API's FERRY_MAX_METADATA_BYTES). */
  maxMetadataBytes?: number;
}

/**
 * Validates one enqueue request: shape, then (when the producer knows the services) service, operation and
 * input size. Throws ValidationError whose `field` names the offending field (prefixed for batch items).
 * Returns a new, frozen request.
 */
export function validateEnqueueRequest(
  value: unknown,
  catalog: ServiceCatalog | undefined,
  fieldPrefix = '',
  options: ValidateOptions = {},
): EnqueueRequest {
  const maxMetadataBytes = options.maxMetadataBytes ?? DEFAULT_MAX_METADATA_BYTES;
  if (typeof value === 'object' && value !== null) {
    const checked = validated.get(value);
    if (
      checked !== undefined &&
      checked.catalog === catalog &&
      checked.maxMetadataBytes === maxMetadataBytes
    ) {
      return value as EnqueueRequest;
    }
  }
  refuseFerryFields(value, fieldPrefix);
  const request = parseSimpleEnqueueRequest(value) ?? parseWithZod(value, fieldPrefix);
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
  if (service?.tenantSecrets === 'required' && request.tenant === undefined) {
    throw new ValidationError(
      `${fieldPrefix}tenant: required by service "${request.service}" (tenantSecrets: required)`,
      { field: `${fieldPrefix}tenant`, status: 422 },
    );
  }
  const maxInputBytes = service?.maxInputBytes ?? DEFAULT_MAX_INPUT_BYTES;
  // Serializing parsed JSON can grow it: `1e20` comes back as 21 digits. Six times the source bounds any such
  // growth, so a body that small cannot hold an input over the limit.
  const measure =
    request.input !== undefined &&
    (options.sourceBytes === undefined || options.sourceBytes * MAX_JSON_GROWTH > maxInputBytes);
  const inputBytes = measure ? Buffer.byteLength(JSON.stringify(request.input)) : 0;
  if (inputBytes > maxInputBytes) {
    throw new ValidationError(
      `${fieldPrefix}input: ${inputBytes} bytes, over the ${maxInputBytes}-byte limit`,
      {
        field: `${fieldPrefix}input`,
        status: 413,
      },
    );
  }
  // Metadata is echoed in the result and every event: capped on its own, always measured (it is small when
  // valid). With input and the bounded other fields, this caps the whole job at
  // maxInputBytes + maxMetadataBytes + JOB_FIELDS_BYTES.
  if (request.metadata !== undefined) {
    const metadataBytes = Buffer.byteLength(JSON.stringify(request.metadata));
    if (metadataBytes > maxMetadataBytes) {
      throw new ValidationError(
        `${fieldPrefix}metadata: ${metadataBytes} bytes, over the ${maxMetadataBytes}-byte limit`,
        { field: `${fieldPrefix}metadata`, status: 413 },
      );
    }
  }
  Object.freeze(request);
  validated.set(request, { catalog, maxMetadataBytes });
  return request;
}

/**
 * `origin` says which reaction, route or schedule of Ferry's enqueued a job (core/job.ts JobOrigin): a producer
 * that could set it could pass its job off as a follow-up, and reset the depth that bounds chains. Refused by
 * name, not as one unknown field among others, so the caller learns why.
 */
function refuseFerryFields(value: unknown, fieldPrefix: string): void {
  if (typeof value !== 'object' || value === null || !Object.hasOwn(value, 'origin')) return;
  throw new ValidationError(
    `${fieldPrefix}origin: set by Ferry only, for the jobs its reactions, routes and schedules enqueue; a producer may not set it`,
    { field: `${fieldPrefix}origin` },
  );
}

function parseWithZod(value: unknown, fieldPrefix: string): EnqueueRequest {
  const parsed = enqueueRequestSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = fieldPrefix + (issue.path.length === 0 ? '' : issuePath(issue.path));
    const message =
      issue.code === 'unrecognized_keys' ? `unknown field(s): ${issue.keys.join(', ')}` : issue.message;
    throw new ValidationError(`${field || 'job'}: ${message}`, { field: field || 'job' });
  }
  return parsed.data;
}
