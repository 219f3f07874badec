/**
 * Envelopes of the encrypted secret store (DESIGN §5): AES-256-GCM with a random 96-bit nonce per value, the
 * secret's key and version bound as associated data (a ciphertext copied to another name or version does not
 * decrypt), and the id of the master key that sealed it, so FERRY_SECRETS_KEY can rotate (`ferry secrets
 * reencrypt`). Pure: no Redis, no env. No message here ever holds a key or a value.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

import { ConfigurationError } from '../core/errors.ts';
import type { Keyring, MasterKey } from '../core/sealed-data.ts';

const ALGORITHM = 'aes-256-gcm';
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_ID_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;

/** One stored version of a secret, as JSON in Redis. */
export interface Envelope {
  /** Envelope format. */
  readonly v: 1;
  /** Id of the master key that sealed it. */
  readonly kid: string;
  /** base64 */
  readonly iv: string;
  readonly tag: string;
  readonly ct: string;
}

// The master keyring's types live in core, which seals job data with it (core/sealed-data.ts).
export type { Keyring, MasterKey } from '../core/sealed-data.ts';

/**
 * Parses FERRY_SECRETS_KEY: comma-separated `[<id>:]<key>`, each key 32 bytes as 64 hex digits or base64. An
 * id defaults to a fingerprint of the key (`k` + 8 hex digits of a SHA-256 over a fixed label and the key),
 * which identifies it without revealing it. Throws ConfigurationError naming the entry by position only.
 */
export function parseKeyring(text: string, variable = 'FERRY_SECRETS_KEY'): Keyring {
  const entries = text
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  if (entries.length === 0) throw new ConfigurationError(`${variable}: no key given`);
  const keys = new Map<string, MasterKey>();
  let current: MasterKey | undefined;
  entries.forEach((entry, index) => {
    const where = `${variable}: key ${index + 1} of ${entries.length}`;
    const colon = entry.indexOf(':');
    const id = colon === -1 ? undefined : entry.slice(0, colon);
    const key = decodeKey(colon === -1 ? entry : entry.slice(colon + 1));
    if (key === undefined) {
      throw new ConfigurationError(
        `${where}: must be 32 bytes as 64 hex digits or base64 (ferry secrets keygen)`,
      );
    }
    if (id !== undefined && !KEY_ID_PATTERN.test(id)) {
      throw new ConfigurationError(`${where}: its id must match [A-Za-z0-9_-]{1,32}`);
    }
    const master = { id: id ?? keyFingerprint(key), key };
    if (keys.has(master.id)) throw new ConfigurationError(`${where}: id "${master.id}" is used twice`);
    keys.set(master.id, master);
    current ??= master;
  });
  return { current: current!, keys };
}

/** A new random master key, as FERRY_SECRETS_KEY takes it (base64). */
export function generateMasterKey(): string {
  return randomBytes(KEY_BYTES).toString('base64');
}

function decodeKey(text: string): Buffer | undefined {
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) return undefined;
  const key = Buffer.from(text, 'base64');
  return key.length === KEY_BYTES ? key : undefined;
}

function keyFingerprint(key: Buffer): string {
  return `k${createHash('sha256').update('ferry secrets key id\0').update(key).digest('hex').slice(0, 8)}`;
}

/** What the ciphertext is bound to: the secret's key (`crm_key`, `tenant/acme/crm_key`) and version. */
function associatedData(key: string, version: number): Buffer {
  return Buffer.from(`ferry-secret\0v1\0${key}\0${version}`);
}

export function seal(keyring: Keyring, key: string, version: number, value: string): Envelope {
  const iv = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv(ALGORITHM, keyring.current.key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(associatedData(key, version));
  const ct = Buffer.concat([cipher.update(value, 'utf8'), cipher.final()]);
  return {
    v: 1,
    kid: keyring.current.id,
    iv: iv.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
    ct: ct.toString('base64'),
  };
}

/**
 * Opens an envelope. A key id the keyring lacks, a tampered ciphertext or tag, or an envelope moved to another
 * key or version is a ConfigurationError (retrying cannot fix it) whose message names the secret and why,
 * never a value.
 */
export function open(keyring: Keyring, key: string, version: number, envelope: Envelope): string {
  const master = keyring.keys.get(envelope.kid);
  if (master === undefined) {
    // The key may be held under another id: one given an id (`old:<key>`) in a rotation after it sealed
    // values under its fingerprint, or the other way round. GCM's tag tells the right key from a wrong one.
    for (const candidate of keyring.keys.values()) {
      const value = tryOpen(candidate.key, key, version, envelope);
      if (value !== undefined) return value;
    }
    throw new ConfigurationError(
      `secret "${key}" version ${version} was sealed with master key "${envelope.kid}", which FERRY_SECRETS_KEY does not hold`,
    );
  }
  const value = tryOpen(master.key, key, version, envelope);
  if (value === undefined) {
    throw new ConfigurationError(
      `secret "${key}" version ${version} failed authentication: tampered, moved, or sealed with another key under id "${envelope.kid}"`,
    );
  }
  return value;
}

/** The plaintext, or undefined when the tag does not authenticate (wrong key, tampered, moved). */
function tryOpen(masterKey: Buffer, key: string, version: number, envelope: Envelope): string | undefined {
  try {
    const decipher = createDecipheriv(ALGORITHM, masterKey, Buffer.from(envelope.iv, 'base64'), {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(associatedData(key, version));
    decipher.setAuthTag(Buffer.from(envelope.tag, 'base64'));
    return Buffer.concat([decipher.update(Buffer.from(envelope.ct, 'base64')), decipher.final()]).toString(
      'utf8',
    );
  } catch {
    return undefined;
  }
}

/** Parses a stored envelope; anything else is a ConfigurationError (never echoing the stored text). */
export function parseEnvelope(text: string, key: string, version: number): Envelope {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  const envelope = value as Partial<Envelope> | undefined;
  if (
    envelope === undefined ||
    envelope === null ||
    envelope.v !== 1 ||
    typeof envelope.kid !== 'string' ||
    typeof envelope.iv !== 'string' ||
    typeof envelope.tag !== 'string' ||
    typeof envelope.ct !== 'string'
  ) {
    throw new ConfigurationError(`secret "${key}" version ${version}: stored envelope is not readable`);
  }
  return envelope as Envelope;
}
