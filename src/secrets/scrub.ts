import type { SecretObserver } from './resolver.ts';

const REPLACEMENT = '[redacted]';
/** Shorter values would scrub ordinary text ("on", "1") and protect nothing. */
const MIN_SCRUB_LENGTH = 4;

/**
 * Replaces every secret value this process has resolved, and its base64 and URL-encoded forms, in strings
 * and nested values. Used on everything a downstream sends back before Ferry stores or logs it (an API that
 * echoes the Authorization header must not put the token into a dead letter).
 */
export class Scrubber implements SecretObserver {
  readonly #needles = new Set<string>();
  /** Values that may be forgotten, with when (OAuth2 tokens: each refresh brings a new one). */
  readonly #expiring = new Map<string, number>();
  /** Values never forgotten (secrets). */
  readonly #permanent = new Set<string>();
  readonly #now: () => number;
  #pattern: RegExp | undefined;

  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
  }

  add(value: string, expiresAtMs?: number): void {
    if (value.length < MIN_SCRUB_LENGTH) return;
    if (expiresAtMs !== undefined) {
      if (this.#expiring.size > 0) this.#forgetExpired();
      // A value also added without an expiry (a secret) is never forgotten.
      if (!this.#permanent.has(value)) this.#expiring.set(value, expiresAtMs);
    } else {
      this.#expiring.delete(value);
      this.#permanent.add(value);
    }
    if (this.#needles.has(value)) return;
    for (const form of formsOf(value)) this.#needles.add(form);
    this.#pattern = undefined;
  }

  get size(): number {
    return this.#needles.size;
  }

  scrub(text: string): string {
    if (this.#needles.size === 0) return text;
    return text.replace(this.#compiled(), REPLACEMENT);
  }

  /**
   * Scrubs every string (keys included) inside a JSON-like value. Returns the very same value when nothing
   * matched (no copy of a large body in the common case); changed objects are rebuilt with own data properties, so a
   * `__proto__` key in a downstream's JSON stays a key instead of becoming a prototype.
   */
  scrubValue<T>(value: T): T {
    if (this.#needles.size === 0) return value;
    return this.#scrubIn(value, this.#compiled()) as T;
  }

  /** Forgets expired values: the needles are rebuilt from the rest (two values may share a form). */
  #forgetExpired(): void {
    const now = this.#now();
    const expired = [...this.#expiring].filter(([, at]) => at <= now).map(([value]) => value);
    if (expired.length === 0) return;
    for (const value of expired) this.#expiring.delete(value);
    // Rare (once per expired token), so rebuilding from the values kept is fine.
    this.#needles.clear();
    for (const value of [...this.#permanent, ...this.#expiring.keys()]) {
      for (const form of formsOf(value)) this.#needles.add(form);
    }
    this.#pattern = undefined;
  }

  #compiled(): RegExp {
    this.#pattern ??= new RegExp(
      [...this.#needles]
        .sort((a, b) => b.length - a.length)
        .map((needle) => needle.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
        .join('|'),
      'g',
    );
    return this.#pattern;
  }

  #scrubIn(value: unknown, pattern: RegExp): unknown {
    if (typeof value === 'string') {
      pattern.lastIndex = 0;
      return pattern.test(value) ? value.replace(pattern, REPLACEMENT) : value;
    }
    if (Array.isArray(value)) {
      let out: unknown[] | undefined;
      for (let i = 0; i < value.length; i++) {
        const item: unknown = value[i];
        const scrubbed = this.#scrubIn(item, pattern);
        if (scrubbed !== item) (out ??= [...value])[i] = scrubbed;
      }
      return out ?? value;
    }
    if (value !== null && typeof value === 'object') {
      // A clean value (nearly every one) is walked without allocating: no key list, no copy. for-in with the
      // own-key check sees Object.keys' keys in the same order. From the first change on, entries are
      // collected (each value scrubbed once) and rebuilt with own data properties, so a `__proto__` key stays
      // a key.
      const record = value as Record<string, unknown>;
      let out: [string, unknown][] | undefined;
      for (const key in record) {
        if (!Object.hasOwn(record, key)) continue;
        const item = record[key];
        const newKey = this.#scrubIn(key, pattern) as string;
        const newItem = this.#scrubIn(item, pattern);
        if (out === undefined && (newKey !== key || newItem !== item)) out = entriesBefore(record, key);
        out?.push([newKey, newItem]);
      }
      return out === undefined ? value : Object.fromEntries(out);
    }
    return value;
  }
}

/** What a value looks like wherever it can appear: as is, JSON-escaped (a log line), URL-encoded, base64. */
function formsOf(value: string): string[] {
  const json = JSON.stringify(value).slice(1, -1);
  return [value, json, encodeURIComponent(value), ...base64Forms(value)].filter(
    (form) => form.length >= MIN_SCRUB_LENGTH,
  );
}

/** The entries of `record` before `key`, unchanged. */
function entriesBefore(record: Record<string, unknown>, key: string): [string, unknown][] {
  const entries: [string, unknown][] = [];
  for (const earlier in record) {
    if (earlier === key) break;
    if (Object.hasOwn(record, earlier)) entries.push([earlier, record[earlier]]);
  }
  return entries;
}

/**
 * The base64 text of `value` wherever it sits in a larger encoded string. A secret embedded after other bytes
 * (Basic auth's `user:password`) is encoded at one of three alignments; for each, keep only the characters
 * that depend on the secret's bytes alone, so the needle matches inside any surrounding encoding.
 */
export function base64Forms(value: string): string[] {
  const bytes = Buffer.from(value);
  const forms: string[] = [];
  for (let offset = 0; offset < 3; offset++) {
    const encoded = Buffer.concat([Buffer.alloc(offset), bytes]).toString('base64');
    const first = Math.ceil((8 * offset) / 6);
    const end = Math.floor((8 * (offset + bytes.length)) / 6);
    forms.push(encoded.slice(first, end));
    if (offset === 0) forms.push(encoded.replace(/=+$/, ''));
  }
  return forms;
}
