/**
 * Sealed job data (issue 17 item 5, `sensitive: true`): a job's input and metadata encrypted with the current
 * master key of FERRY_SECRETS_KEY before they reach Redis, and opened only by the worker at call time.
 *
 * AES-256-GCM, a random 96-bit nonce per envelope, and associated data that binds a format label, the service,
 * the tenant and the job id the envelope was sealed for. The envelope carries that job id (so a replay can copy
 * it verbatim to its new job) and the id of the master key (so FERRY_SECRETS_KEY can rotate); service and tenant
 * come from where the envelope is found, so a copy into another service's queue or another tenant's job does
 * not open. Pure: node:crypto only, no Redis, no env. No message here ever holds a key or plaintext.
 *
 * The envelope string: `fs1.<key id>.<job id>.<nonce>.<tag>.<ciphertext>`, the last four base64url.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

import { ConfigurationError, ValidationError } from './errors.ts';
import { JOB_FIELDS_BYTES, SEALED_PLACEHOLDER } from './job.ts';
import { MAX_JOB_ID_LENGTH } from './queue-layout.ts';

export interface MasterKey {
  readonly id: string;
  readonly key: Buffer;
}

/** The master keys a process knows: `current` seals, every key (current included) opens. */
export interface Keyring {
  readonly current: MasterKey;
  readonly keys: ReadonlyMap<string, MasterKey>;
}

/** What is sealed: the job's input and metadata, as JSON. */
export interface SealedContent {
  input: unknown;
  metadata?: Record<string, unknown>;
}

/** Where an envelope is bound: the service (queue), the job's tenant and the job id it was sealed for. */
export interface SealBinding {
  service: string;
  tenant: string | undefined;
  jobId: string;
}

const FORMAT = 'fs1';
const ALGORITHM = 'aes-256-gcm';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/;
const BASE64URL = /^[A-Za-z0-9_-]*$/;
/** The most FERRY_MAX_METADATA_BYTES allows (core/env.ts): a sealed job's metadata is at most that. */
const MAX_SEALED_METADATA_BYTES = 1024 * 1024;

/**
 * The longest envelope a job of a service with this input cap can carry: its whole plaintext at the caps, in
 * base64, plus the key id, the job id and the nonce and tag. A longer one is refused before it is decoded.
 */
export function maxSealedLength(maxInputBytes: number): number {
  const plaintext = maxInputBytes + MAX_SEALED_METADATA_BYTES + JOB_FIELDS_BYTES;
  return Math.ceil(plaintext / 3) * 4 + MAX_JOB_ID_LENGTH * 4 + 128;
}

function associatedData(binding: SealBinding): Buffer {
  // The tenant pattern forbids NUL and the empty string, so "" stands for "no tenant" unambiguously; the
  // job id goes last, so whatever it holds cannot shift the other fields.
  return Buffer.from(
    `ferry-sealed-job\0${FORMAT}\0${binding.service}\0${binding.tenant ?? ''}\0${binding.jobId}`,
  );
}

/** Seals input and metadata for `binding` with the keyring's current key: the envelope string. */
export function sealJobContent(keyring: Keyring, binding: SealBinding, content: SealedContent): string {
  const plaintext: SealedContent = { input: content.input ?? null };
  if (content.metadata !== undefined) plaintext.metadata = content.metadata;
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv(ALGORITHM, keyring.current.key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(associatedData(binding));
  const ciphertext = Buffer.concat([cipher.update(JSON.stringify(plaintext), 'utf8'), cipher.final()]);
  return [
    FORMAT,
    keyring.current.id,
    Buffer.from(binding.jobId, 'utf8').toString('base64url'),
    nonce.toString('base64url'),
    cipher.getAuthTag().toString('base64url'),
    ciphertext.toString('base64url'),
  ].join('.');
}

/** The parts of an envelope string, checked for shape only. */
interface ParsedEnvelope {
  kid: string;
  jobId: string;
  nonce: Buffer;
  tag: Buffer;
  ciphertext: Buffer;
}

function malformed(why: string): ValidationError {
  return new ValidationError(`sealed: ${why}`, { field: 'sealed' });
}

/**
 * The envelope's parts, or a ValidationError naming `sealed` (never echoing it): not a string, too long, or not
 * of the format. `maxLength` is maxSealedLength of the service's input cap.
 */
export function parseSealedEnvelope(value: unknown, maxLength: number): ParsedEnvelope {
  if (typeof value !== 'string') throw malformed('must be an envelope string');
  if (value.length > maxLength)
    throw malformed(`envelope of ${value.length} characters, over the ${maxLength}-character limit`);
  const parts = value.split('.');
  if (parts.length !== 6 || parts[0] !== FORMAT) throw malformed('not a sealed-job envelope (fs1)');
  const [, kid, jobId, nonce, tag, ciphertext] = parts as [string, string, string, string, string, string];
  if (!KEY_ID.test(kid)) throw malformed('its key id is malformed');
  for (const part of [jobId, nonce, tag, ciphertext])
    if (!BASE64URL.test(part)) throw malformed('not base64url where it must be');
  const parsed = {
    kid,
    jobId: Buffer.from(jobId, 'base64url').toString('utf8'),
    nonce: Buffer.from(nonce, 'base64url'),
    tag: Buffer.from(tag, 'base64url'),
    ciphertext: Buffer.from(ciphertext, 'base64url'),
  };
  if (parsed.nonce.length !== NONCE_BYTES || parsed.tag.length !== TAG_BYTES)
    throw malformed('its nonce or tag has the wrong length');
  if (parsed.jobId === '' || parsed.jobId.length > MAX_JOB_ID_LENGTH)
    throw malformed('its job id is malformed');
  return parsed;
}

/** The job id an envelope names (it was sealed for that job), or undefined when it is malformed. */
export function sealedJobId(value: unknown): string | undefined {
  try {
    return parseSealedEnvelope(value, Number.POSITIVE_INFINITY).jobId;
  } catch {
    return undefined;
  }
}

/**
 * Opens an envelope found on `service`'s queue in a job of `tenant`. A malformed envelope, or one that does not
 * authenticate (tampered, sealed for another service or tenant, or with another key under its key id) is a
 * ValidationError naming `sealed`; a key id the keyring lacks (and no key of the ring opens it) is a
 * ConfigurationError: the job is fine, the process lacks its key. Neither is retried.
 */
export function openJobContent(
  keyring: Keyring | undefined,
  where: { service: string; tenant: string | undefined },
  value: unknown,
  maxLength: number,
): SealedContent {
  const envelope = parseSealedEnvelope(value, maxLength);
  if (keyring === undefined)
    throw new ConfigurationError(
      'sealed: job data is sealed, and FERRY_SECRETS_KEY is not set on this process',
    );
  const binding: SealBinding = { service: where.service, tenant: where.tenant, jobId: envelope.jobId };
  const master = keyring.keys.get(envelope.kid);
  let plaintext: string | undefined;
  if (master !== undefined) {
    plaintext = tryOpen(master.key, binding, envelope);
  } else {
    // The key may be held under another id (given one in a rotation after it sealed under its fingerprint):
    // GCM's tag tells the right key from a wrong one, as for the secret store (secrets/crypto.ts).
    for (const candidate of keyring.keys.values()) {
      plaintext = tryOpen(candidate.key, binding, envelope);
      if (plaintext !== undefined) break;
    }
    if (plaintext === undefined)
      throw new ConfigurationError(
        `sealed: sealed with master key "${envelope.kid}", which FERRY_SECRETS_KEY does not hold`,
      );
  }
  if (plaintext === undefined)
    throw malformed(
      `does not open for service "${where.service}"${where.tenant === undefined ? ' (no tenant)' : ` tenant "${where.tenant}"`}: tampered, copied from another service or tenant, or sealed with another key under id "${envelope.kid}"`,
    );
  let content: unknown;
  try {
    content = JSON.parse(plaintext);
  } catch {
    throw malformed('its content is not JSON');
  }
  if (typeof content !== 'object' || content === null || Array.isArray(content))
    throw malformed('its content is not an object');
  const { input, metadata } = content as Record<string, unknown>;
  const opened: SealedContent = { input: input ?? null };
  if (metadata !== undefined) {
    if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata))
      throw malformed('its metadata is not an object');
    opened.metadata = metadata as Record<string, unknown>;
  }
  return opened;
}

function tryOpen(key: Buffer, binding: SealBinding, envelope: ParsedEnvelope): string | undefined {
  try {
    const decipher = createDecipheriv(ALGORITHM, key, envelope.nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(associatedData(binding));
    decipher.setAuthTag(envelope.tag);
    return Buffer.concat([decipher.update(envelope.ciphertext), decipher.final()]).toString('utf8');
  } catch {
    return undefined;
  }
}

/**
 * Job data with its input and metadata sealed for `binding`: `input` becomes SEALED_PLACEHOLDER, `sealed` the
 * envelope, and `metadata` is left out. Every other field (tenant, idempotencyKey, enqueueId, origin) is kept.
 */
export function sealJobData<
  T extends { input?: unknown; metadata?: Record<string, unknown>; sealed?: string },
>(keyring: Keyring, binding: SealBinding, data: T): T & { sealed: string } {
  const { input, metadata, ...rest } = data;
  const content: SealedContent = { input: input ?? null };
  if (metadata !== undefined) content.metadata = metadata;
  return { ...rest, input: SEALED_PLACEHOLDER, sealed: sealJobContent(keyring, binding, content) } as T & {
    sealed: string;
  };
}
