/**
 * The encrypted secret store in Redis (DESIGN §5, issue 4): versions per secret, `set` (a new current
 * version), `stage` (a new version nothing uses yet), `promote` (staged → current), `rollback` (the previous
 * version → current), `delete`, `list` (names, versions, dates; never values), `reencrypt` (every version
 * under the current master key).
 *
 * Layout, every key in the `{secrets}` hash slot so one script can change them together on a Redis Cluster:
 * - `<prefix>:{secrets}:secret:<key>`: hash; `current`, `staged`, `history` (JSON array of earlier current
 *   versions, oldest first: what rollback goes back to), `next` (version counter), `createdAt`, `updatedAt`
 *   (ms), and `v:<n>` = the envelope of version n plus its `createdAt`.
 * - `<prefix>:{secrets}:index`: set of keys.
 * - `<prefix>:{secrets}:generation`: counter bumped by every change; workers poll it and drop their caches,
 *   so a promote reaches every worker within FERRY_SECRETS_REFRESH_MS.
 * Every change is one script, so a worker reads either the old current version or the new one, never a mix.
 */
import { ConfigurationError } from '../core/errors.ts';
import type { RedisClient } from '../core/redis.ts';
import { type Envelope, type Keyring, open, parseEnvelope, seal } from './crypto.ts';
import { parseSecretKey } from './names.ts';

/** Earlier current versions kept for rollback; older ones are deleted. */
export const MAX_PREVIOUS_VERSIONS = 10;

export interface VersionInfo {
  readonly version: number;
  readonly createdAt: number;
  /** Id of the master key that sealed it. */
  readonly keyId: string;
}

export interface SecretInfo {
  /** `crm_key` or `tenant/acme/crm_key`. */
  readonly key: string;
  readonly name: string;
  readonly tenant: string | undefined;
  readonly current: VersionInfo | undefined;
  readonly staged: VersionInfo | undefined;
  /** Earlier current versions, newest first: rollback goes to the first. */
  readonly previous: readonly VersionInfo[];
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** A change refused because of the secret's state (not an error of the store). */
export type SecretChange =
  | { readonly ok: true; readonly version: number }
  | {
      readonly ok: false;
      readonly reason:
        'not_found' | 'nothing_staged' | 'no_previous_version' | 'version_is_current' | 'no_such_version';
      readonly message: string;
    };

export interface ReencryptReport {
  /** Versions sealed again with the current master key. */
  readonly resealed: number;
  /** Versions already under the current key. */
  readonly current: number;
  /** Versions that could not be opened (a master key no longer in FERRY_SECRETS_KEY); left as they were. */
  readonly failed: readonly { key: string; version: number; reason: string }[];
}

export interface SecretStoreOptions {
  connection: RedisClient;
  prefix: string;
  /** Needed to write or read values; list, delete, promote and rollback work without it. */
  keyring: Keyring | undefined;
  now?: () => number;
}

const PUSH_HISTORY = `
local function push_history(key, version, max)
  local raw = redis.call('HGET', key, 'history')
  local history = raw and cjson.decode(raw) or {}
  table.insert(history, tonumber(version))
  while #history > max do
    local dropped = table.remove(history, 1)
    redis.call('HDEL', key, 'v:' .. dropped)
  end
  redis.call('HSET', key, 'history', cjson.encode(history))
end
`;

const EMPTY_HISTORY = `
local function save_history(key, history)
  if #history == 0 then redis.call('HSET', key, 'history', '[]')
  else redis.call('HSET', key, 'history', cjson.encode(history)) end
end
local function load_history(key)
  local raw = redis.call('HGET', key, 'history')
  return raw and cjson.decode(raw) or {}
end
`;

/** KEYS: secret, index, generation. ARGV: version, stored version JSON, set|stage, now, max history, key. */
const PUT = `${PUSH_HISTORY}
local secret = KEYS[1]
-- The version was counted (HINCRBY) before it was sealed; a delete in between dropped the counter with the
-- hash. Put it back, or the next set would count from 1 again and overwrite this version's envelope.
if (tonumber(redis.call('HGET', secret, 'next')) or 0) < tonumber(ARGV[1]) then
  redis.call('HSET', secret, 'next', ARGV[1])
end
redis.call('HSET', secret, 'v:' .. ARGV[1], ARGV[2])
if redis.call('HEXISTS', secret, 'createdAt') == 0 then redis.call('HSET', secret, 'createdAt', ARGV[4]) end
if ARGV[3] == 'set' then
  local current = redis.call('HGET', secret, 'current')
  if current then push_history(secret, current, tonumber(ARGV[5])) end
  redis.call('HSET', secret, 'current', ARGV[1])
else
  local staged = redis.call('HGET', secret, 'staged')
  if staged and staged ~= redis.call('HGET', secret, 'current') then redis.call('HDEL', secret, 'v:' .. staged) end
  redis.call('HSET', secret, 'staged', ARGV[1])
end
redis.call('HSET', secret, 'updatedAt', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[6])
redis.call('INCR', KEYS[3])
return 1
`;

/** KEYS: secret, generation. ARGV: now, max history. */
const PROMOTE = `${PUSH_HISTORY}
local secret = KEYS[1]
if redis.call('EXISTS', secret) == 0 then return redis.error_reply('FERRY not_found') end
local staged = redis.call('HGET', secret, 'staged')
if not staged then return redis.error_reply('FERRY nothing_staged') end
local current = redis.call('HGET', secret, 'current')
if current then push_history(secret, current, tonumber(ARGV[2])) end
redis.call('HSET', secret, 'current', staged)
redis.call('HDEL', secret, 'staged')
redis.call('HSET', secret, 'updatedAt', ARGV[1])
redis.call('INCR', KEYS[2])
return tonumber(staged)
`;

/** KEYS: secret, generation. ARGV: now. The version rolled back from is deleted. */
const ROLLBACK = `${EMPTY_HISTORY}
local secret = KEYS[1]
if redis.call('EXISTS', secret) == 0 then return redis.error_reply('FERRY not_found') end
local history = load_history(secret)
if #history == 0 then return redis.error_reply('FERRY no_previous_version') end
local previous = table.remove(history)
local current = redis.call('HGET', secret, 'current')
if current and current ~= redis.call('HGET', secret, 'staged') then redis.call('HDEL', secret, 'v:' .. current) end
redis.call('HSET', secret, 'current', previous)
save_history(secret, history)
redis.call('HSET', secret, 'updatedAt', ARGV[1])
redis.call('INCR', KEYS[2])
return previous
`;

/** KEYS: secret, index, generation. ARGV: key, version ('' = the whole secret), now. */
const DELETE = `${EMPTY_HISTORY}
local secret = KEYS[1]
if redis.call('EXISTS', secret) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  return redis.error_reply('FERRY not_found')
end
if ARGV[2] == '' then
  redis.call('DEL', secret)
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('INCR', KEYS[3])
  return 0
end
if redis.call('HGET', secret, 'current') == ARGV[2] then return redis.error_reply('FERRY version_is_current') end
if redis.call('HEXISTS', secret, 'v:' .. ARGV[2]) == 0 then return redis.error_reply('FERRY no_such_version') end
redis.call('HDEL', secret, 'v:' .. ARGV[2])
if redis.call('HGET', secret, 'staged') == ARGV[2] then redis.call('HDEL', secret, 'staged') end
local history = load_history(secret)
for i = #history, 1, -1 do if tostring(history[i]) == ARGV[2] then table.remove(history, i) end end
save_history(secret, history)
redis.call('HSET', secret, 'updatedAt', ARGV[3])
redis.call('INCR', KEYS[3])
return tonumber(ARGV[2])
`;

/** KEYS: secret. ARGV: current|staged. Returns [version, stored JSON] or nil, in one read. */
const READ = `
local version = redis.call('HGET', KEYS[1], ARGV[1])
if not version then return nil end
return { version, redis.call('HGET', KEYS[1], 'v:' .. version) }
`;

/** KEYS: secret. ARGV: field, expected JSON, new JSON. Replaces a version only if nobody changed it. */
const RESEAL = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
`;

const REFUSALS: Record<Exclude<SecretChange, { ok: true }>['reason'], string> = {
  not_found: 'no such secret',
  nothing_staged: 'no staged version to promote (ferry secrets stage first)',
  no_previous_version: 'no previous version to roll back to',
  version_is_current: 'that version is current: roll back or delete the whole secret',
  no_such_version: 'no such version',
};

interface StoredVersion extends Envelope {
  readonly createdAt: number;
}

export class SecretStore {
  readonly #redis: RedisClient;
  readonly #keyring: Keyring | undefined;
  readonly #now: () => number;
  readonly #base: string;

  constructor(options: SecretStoreOptions) {
    this.#redis = options.connection;
    this.#keyring = options.keyring;
    this.#now = options.now ?? Date.now;
    this.#base = `${options.prefix}:{secrets}`;
  }

  get hasKeyring(): boolean {
    return this.#keyring !== undefined;
  }

  /** The counter every change bumps. */
  async generation(): Promise<string> {
    return (await this.#redis.get(`${this.#base}:generation`)) ?? '0';
  }

  /** A new version that becomes current at once. `key` is checked (`crm_key`, `tenant/acme/crm_key`). */
  async set(key: string, value: string): Promise<number> {
    return this.#put(key, value, 'set');
  }

  /** A new version that nothing reads until it is promoted; it replaces a version staged before. */
  async stage(key: string, value: string): Promise<number> {
    return this.#put(key, value, 'stage');
  }

  async promote(key: string): Promise<SecretChange> {
    return this.#change(
      PROMOTE,
      [this.#secretKey(key), `${this.#base}:generation`],
      [String(this.#now()), String(MAX_PREVIOUS_VERSIONS)],
    );
  }

  async rollback(key: string): Promise<SecretChange> {
    return this.#change(ROLLBACK, [this.#secretKey(key), `${this.#base}:generation`], [String(this.#now())]);
  }

  /** Deletes the whole secret, or one version that is not current (a staged one, an earlier one). */
  async delete(key: string, version?: number): Promise<SecretChange> {
    const change = await this.#change(
      DELETE,
      [this.#secretKey(key), `${this.#base}:index`, `${this.#base}:generation`],
      [key, version === undefined ? '' : String(version), String(this.#now())],
    );
    return change;
  }

  /** The current value, or undefined when the secret (or its current version) does not exist. */
  async read(key: string): Promise<string | undefined> {
    return this.#read(key, 'current');
  }

  /** The staged value (for `ferry secrets test`), or undefined. */
  async readStaged(key: string): Promise<string | undefined> {
    return this.#read(key, 'staged');
  }

  async info(key: string): Promise<SecretInfo | undefined> {
    const secretKey = this.#secretKey(key);
    const hash = await this.#redis.hgetall(secretKey);
    return Object.keys(hash).length === 0 ? undefined : toInfo(key, hash);
  }

  /** Every secret, sorted by key; values never. */
  async list(): Promise<SecretInfo[]> {
    const keys = (await this.#redis.smembers(`${this.#base}:index`)).sort();
    if (keys.length === 0) return [];
    const pipeline = this.#redis.pipeline();
    for (const key of keys) pipeline.hgetall(this.#secretKey(key));
    const hashes = (await pipeline.exec()) ?? [];
    const infos: SecretInfo[] = [];
    keys.forEach((key, index) => {
      const [error, hash] = hashes[index] ?? [null, {}];
      if (error !== null) throw error;
      const fields = hash as Record<string, string>;
      if (Object.keys(fields).length > 0) infos.push(toInfo(key, fields));
    });
    return infos;
  }

  /** Seals every version again under the current master key (after FERRY_SECRETS_KEY gained a new first key). */
  async reencrypt(): Promise<ReencryptReport> {
    const keyring = this.#requireKeyring();
    let resealed = 0;
    let current = 0;
    const failed: { key: string; version: number; reason: string }[] = [];
    for (const key of (await this.#redis.smembers(`${this.#base}:index`)).sort()) {
      const secretKey = this.#secretKey(key);
      const hash = await this.#redis.hgetall(secretKey);
      for (const [field, stored] of Object.entries(hash)) {
        if (!field.startsWith('v:')) continue;
        const version = Number(field.slice(2));
        let envelope: StoredVersion;
        try {
          envelope = parseEnvelope(stored, key, version) as StoredVersion;
        } catch (error) {
          // One unreadable version is reported with the rest, never the end of the whole run.
          failed.push({ key, version, reason: (error as Error).message });
          continue;
        }
        if (envelope.kid === keyring.current.id) {
          current++;
          continue;
        }
        let value: string;
        try {
          value = open(keyring, key, version, envelope);
        } catch (error) {
          failed.push({ key, version, reason: (error as Error).message });
          continue;
        }
        const next: StoredVersion = { ...seal(keyring, key, version, value), createdAt: envelope.createdAt };
        const swapped = await this.#redis.eval(RESEAL, 1, secretKey, field, stored, JSON.stringify(next));
        if (swapped === 1) resealed++;
      }
    }
    if (resealed > 0) await this.#redis.incr(`${this.#base}:generation`);
    return { resealed, current, failed };
  }

  async #put(key: string, value: string, mode: 'set' | 'stage'): Promise<number> {
    const keyring = this.#requireKeyring();
    const secretKey = this.#secretKey(key);
    const version = await this.#redis.hincrby(secretKey, 'next', 1);
    const now = this.#now();
    const stored: StoredVersion = { ...seal(keyring, key, version, value), createdAt: now };
    await this.#redis.eval(
      PUT,
      3,
      secretKey,
      `${this.#base}:index`,
      `${this.#base}:generation`,
      String(version),
      JSON.stringify(stored),
      mode,
      String(now),
      String(MAX_PREVIOUS_VERSIONS),
      key,
    );
    return version;
  }

  async #read(key: string, which: 'current' | 'staged'): Promise<string | undefined> {
    const keyring = this.#requireKeyring();
    const found = (await this.#redis.eval(READ, 1, this.#secretKey(key), which)) as
      [string, string | null] | null;
    if (found === null || found[1] === null) return undefined;
    const version = Number(found[0]);
    return open(keyring, key, version, parseEnvelope(found[1], key, version));
  }

  async #change(script: string, keys: string[], args: string[]): Promise<SecretChange> {
    try {
      const version = await this.#redis.eval(script, keys.length, ...keys, ...args);
      return { ok: true, version: Number(version) };
    } catch (error) {
      const match = /FERRY (\w+)/.exec((error as Error).message);
      const reason = match?.[1] as keyof typeof REFUSALS | undefined;
      if (reason === undefined || !(reason in REFUSALS)) throw error;
      return { ok: false, reason, message: REFUSALS[reason] };
    }
  }

  #secretKey(key: string): string {
    parseSecretKey(key);
    return `${this.#base}:secret:${key}`;
  }

  #requireKeyring(): Keyring {
    if (this.#keyring === undefined) {
      throw new ConfigurationError(
        'FERRY_SECRETS_KEY (or FERRY_SECRETS_KEY_FILE) is not set: values cannot be sealed or opened',
      );
    }
    return this.#keyring;
  }
}

function toInfo(key: string, hash: Record<string, string>): SecretInfo {
  const { name, tenant } = parseSecretKey(key);
  const version = (field: string | undefined): VersionInfo | undefined => {
    if (field === undefined) return undefined;
    const stored = hash[`v:${field}`];
    if (stored === undefined) return undefined;
    const envelope = parseEnvelope(stored, key, Number(field)) as StoredVersion;
    return { version: Number(field), createdAt: envelope.createdAt, keyId: envelope.kid };
  };
  const history = hash['history'] === undefined ? [] : (JSON.parse(hash['history']) as number[]);
  return {
    key,
    name,
    tenant,
    current: version(hash['current']),
    staged: version(hash['staged']),
    previous: history
      .map((n) => version(String(n)))
      .filter((info): info is VersionInfo => info !== undefined)
      .reverse(),
    createdAt: Number(hash['createdAt'] ?? 0),
    updatedAt: Number(hash['updatedAt'] ?? 0),
  };
}
