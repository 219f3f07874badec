import type { SecretObserver } from './resolver.ts';

const REPLACEMENT = '[redacted]';
/** Shorter values would scrub ordinary text ("on", "1") and protect nothing. */
const MIN_SCRUB_LENGTH = 4;

/**
 * A text cut short (an error excerpt, a result over its cap, a body read only up to a byte cap) can end in the
 * first characters of a secret whose rest was cut off: scrubbing cannot see it, since the whole value is not
 * there. Such a trailing fragment is redacted when it is at least this many characters of the value; for a
 * short value, at least half of it (never fewer than 3 characters), so a 10-character password never gives
 * away 5.
 *
 * Why 6: the fragment is only ever looked for at the very end of a text that was cut anyway, so a false match
 * costs a few characters of an already truncated text; but a lower floor would eat ordinary endings ("pass"
 * of a password "password1", "http" of a URL-valued secret) for a gain of 1 or 2 characters of a value that
 * keeps the rest of its length secret. 5 characters of a 34-character key leave 29 unknown.
 */
const PREFIX_MIN_CHARS = 6;
const PREFIX_MIN_CHARS_SHORT = 3;

/** How many value characters a trailing fragment must have to be redacted (see PREFIX_MIN_CHARS). */
export function prefixMinChars(valueLength: number): number {
  return Math.min(PREFIX_MIN_CHARS, Math.max(PREFIX_MIN_CHARS_SHORT, Math.ceil(valueLength / 2)));
}

/**
 * Longest text one value character can take on the wire (a 4-byte character double percent-encoded is
 * 4 × `%25XX`): bounds the window at the end of a cut text where a fragment is looked for.
 */
const MAX_WIRE_CHARS_PER_CHAR = 20;

/** One text form of a value, compiled: the whole of it, and what a cut-off start of it looks like. */
interface Needle {
  /** Regex source matching the form (each character in any of its encodings). */
  readonly full: string;
  /** Regex source matching a long enough start of the form anywhere (ANYWHERE_MIN_CHARS); tried after every `full`. */
  readonly altered: string | undefined;
  /** Regex source matching a start of the form, long enough to redact, that runs to the end of the text. */
  readonly prefix: string;
  /** Characters of the form: longer forms are tried first, so a value never leaves a longer one's tail. */
  readonly length: number;
}

/**
 * Replaces every secret value this process has resolved, in every form it can take on the wire, in strings
 * and nested values. Used on everything a downstream sends back before Ferry stores or logs it (an API that
 * echoes the Authorization header or the request URL must not put the key into a dead letter), and on every
 * log line.
 *
 * The forms (docs/secrets.md): the value as is; JSON-escaped (`\"`, `\/`, `\u00e9`, at any nesting depth);
 * percent-encoded the way `encodeURIComponent`, `URLSearchParams` (space as `+`, `!'()~` escaped), RFC 3986
 * or any other encoder does it, with hex digits in either case and escapes themselves escaped once (`%2521`);
 * HTML character references (`&#39;`, `&amp;`); base64 and base64url of the value (and of its form-encoded
 * text, as OAuth2's Basic client authentication sends it) at all three byte alignments. Each character of a
 * value matches any of its own encodings, so mixed encoders (a `Location` rebuilt by a proxy) are caught too;
 * a run of whitespace also matches when a downstream collapsed it. Only escape digits are case-insensitive:
 * the value's own letters never are, so ordinary text is not scrubbed.
 *
 * Everything is compiled into a few regexes when a value is added (a worker adds the same few values on
 * every job, which costs one map lookup); `scrub` only runs them.
 */
export class Scrubber implements SecretObserver {
  /** Every value kept, with its compiled forms. */
  readonly #values = new Map<string, readonly Needle[]>();
  /** Values that may be forgotten, with when (OAuth2 tokens: each refresh brings a new one). */
  readonly #expiring = new Map<string, number>();
  /** Values never forgotten (secrets). */
  readonly #permanent = new Set<string>();
  readonly #now: () => number;
  /** The needles, longest first, in regexes of at most REGEX_SOURCE_BUDGET characters each. */
  #patterns: readonly RegExp[] | undefined;
  /** Compiled on first use: only cut texts need it. */
  #tailPatterns: readonly RegExp[] | undefined;
  /** The last build's regexes by source: a new token recompiles its own needles, not every other one. */
  readonly #cache = new Map<string, RegExp>();
  readonly #tailCache = new Map<string, RegExp>();
  #sorted: readonly Needle[] = [];
  /** Characters at the end of a cut text searched for a fragment of a value. */
  #tailWindow = 0;
  #size = 0;

  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
  }

  add(value: string, expiresAtMs?: number): void {
    if (value.length < MIN_SCRUB_LENGTH) return;
    if (expiresAtMs !== undefined) {
      if (this.#expiring.size > 0) this.#forgetExpired();
      // A value also added without an expiry (a secret) is never forgotten.
      if (!this.#permanent.has(value)) this.#expiring.set(value, expiresAtMs);
    } else if (!this.#permanent.has(value)) {
      this.#expiring.delete(value);
      this.#permanent.add(value);
    }
    if (this.#values.has(value)) return;
    this.#values.set(value, needlesOf(value));
    this.#changed();
  }

  /** How many forms are scrubbed. */
  get size(): number {
    if (this.#values.size === 0) return 0;
    this.#compiled();
    return this.#size;
  }

  scrub(text: string): string {
    if (this.#values.size === 0) return text;
    return scrubString(text, this.#compiled());
  }

  /**
   * Scrubs every string (keys included) inside a JSON-like value. Returns the very same value when nothing
   * matched (no copy of a large body in the common case); changed objects are rebuilt with own data properties, so a
   * `__proto__` key in a downstream's JSON stays a key instead of becoming a prototype.
   */
  scrubValue<T>(value: T): T {
    if (this.#values.size === 0) return value;
    return this.#scrubIn(value, this.#compiled()) as T;
  }

  /**
   * Scrubs `text`, then cuts it to `maxChars`. Scrubbing comes first, so a value the cut runs through is
   * replaced whole; a `[redacted]` the cut would split is kept whole (the result may then pass `maxChars` by
   * up to its 9 characters). When the text was cut, here or before Ferry saw it (`wasCut`: a body read up to
   * a byte cap), a fragment that starts a value is redacted at its end (see PREFIX_MIN_CHARS).
   */
  scrubAndCut(text: string, maxChars: number, wasCut = false): { text: string; truncated: boolean } {
    if (this.#values.size === 0) {
      return text.length > maxChars
        ? { text: text.slice(0, maxChars), truncated: true }
        : { text, truncated: wasCut };
    }
    this.#compiled();
    // Only the part that can reach the result is scrubbed: what the cut keeps, and as much after it as one
    // encoded value can take (a value straddling the cut is replaced whole).
    const reach = maxChars + this.#tailWindow;
    const headWasCut = wasCut || text.length > reach;
    const scrubbed = this.scrub(headWasCut && text.length > reach ? text.slice(0, reach) : text);
    if (scrubbed.length <= maxChars)
      return { text: headWasCut ? this.redactCutTail(scrubbed) : scrubbed, truncated: headWasCut };
    return { text: this.redactCutTail(cutOutsideMarker(scrubbed, maxChars)), truncated: true };
  }

  /**
   * Redacts a fragment at the end of a text that was cut short, when it is the start of a value in any of its
   * forms (a cut may also fall inside an escape, `%2`, or inside a character's UTF-8 bytes). Call only on a
   * text that was cut: a whole text that happens to end like a secret begins is left alone.
   */
  redactCutTail(text: string): string {
    if (this.#values.size === 0 || text === '') return text;
    this.#compiled();
    this.#tailPatterns ??= packed(
      this.#sorted.map((needle) => needle.prefix),
      '',
      this.#tailCache,
    );
    const start = Math.max(0, text.length - this.#tailWindow);
    const window = start === 0 ? text : text.slice(start);
    // The fragment as it ends, or without a cut-off escape at its end (shortest first): `%2`, `\u00`, `&am`…
    for (let end = window.length; end >= 0 && end >= window.length - MAX_CUT_ESCAPE_CHARS; end--) {
      if (end < window.length && !CUT_ESCAPE.test(window.slice(end))) continue;
      const head = end === window.length ? window : window.slice(0, end);
      // The earliest start over every regex: the longest fragment.
      let at = -1;
      for (const pattern of this.#tailPatterns) {
        const match = pattern.exec(head);
        if (match !== null && (at === -1 || match.index < at)) at = match.index;
      }
      if (at !== -1) return text.slice(0, start + at) + REPLACEMENT;
    }
    return text;
  }

  /** Forgets expired values. Rare (once per expired token), so the regexes are rebuilt. */
  #forgetExpired(): void {
    const now = this.#now();
    let forgot = false;
    for (const [value, at] of this.#expiring) {
      if (at > now) continue;
      this.#expiring.delete(value);
      this.#values.delete(value);
      forgot = true;
    }
    if (forgot) this.#changed();
  }

  #changed(): void {
    this.#patterns = undefined;
    this.#tailPatterns = undefined;
  }

  #compiled(): readonly RegExp[] {
    if (this.#patterns !== undefined) return this.#patterns;
    const needles = new Map<string, Needle>();
    let window = 0;
    for (const [value, forms] of this.#values) {
      for (const needle of forms) needles.set(needle.full, needle);
      window = Math.max(window, value.length * MAX_WIRE_CHARS_PER_CHAR);
    }
    // Longest first: where two values overlap (a token and a longer one starting with it), the longer wins.
    const sorted = [...needles.values()].sort((a, b) => b.length - a.length);
    this.#size = sorted.length;
    this.#tailWindow = window;
    this.#sorted = sorted;
    // Whole values first, in every regex and position: an altered start is only what is left after them.
    const altered = sorted.flatMap((needle) => (needle.altered === undefined ? [] : [needle.altered]));
    this.#patterns = packed([...sorted.map((needle) => needle.full), ...altered], 'g', this.#cache);
    return this.#patterns;
  }

  #scrubIn(value: unknown, patterns: readonly RegExp[]): unknown {
    if (typeof value === 'string') return scrubString(value, patterns);
    if (Array.isArray(value)) {
      let out: unknown[] | undefined;
      for (let i = 0; i < value.length; i++) {
        const item: unknown = value[i];
        const scrubbed = this.#scrubIn(item, patterns);
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
        const newKey = this.#scrubIn(key, patterns) as string;
        const newItem = this.#scrubIn(item, patterns);
        if (out === undefined && (newKey !== key || newItem !== item)) out = entriesBefore(record, key);
        out?.push([newKey, newItem]);
      }
      return out === undefined ? value : Object.fromEntries(out);
    }
    return value;
  }
}

/** `text` with every needle replaced; the very same string when none matched (no copy). */
function scrubString(text: string, patterns: readonly RegExp[]): string {
  let out = text;
  for (const pattern of patterns) {
    pattern.lastIndex = 0;
    if (pattern.test(out)) out = out.replace(pattern, REPLACEMENT);
  }
  return out;
}

/**
 * V8 runs one alternation of many long needles far slower than several short regexes: with a hundred OAuth2
 * JWTs held (about 800 needles of 1-3 KB), a log line took 612 µs in regexes of 6,000 source characters,
 * 305 µs at 20,000 and 89 µs at 2,000 (one needle each; the old single literal regex: 72 µs), and rebuilding
 * after each new token 0.95 s in all at 2,000 against 76 s for the old single regex. With a few short
 * secrets every size is under 1 µs a line. Measured with tsx on the busy 2-vCPU VM. So needles are packed,
 * in order, into regexes of about this many source characters; a longer needle gets one of its own.
 */
const REGEX_SOURCE_BUDGET = 2_000;

function packed(sources: readonly string[], flags: string, cache: Map<string, RegExp>): RegExp[] {
  const batches: string[] = [];
  let batch: string[] = [];
  let size = 0;
  for (const source of sources) {
    if (batch.length > 0 && size + source.length > REGEX_SOURCE_BUDGET) {
      batches.push(batch.join('|'));
      batch = [];
      size = 0;
    }
    batch.push(source);
    size += source.length + 1;
  }
  if (batch.length > 0) batches.push(batch.join('|'));
  const patterns = batches.map((source) => cache.get(source) ?? new RegExp(source, flags));
  cache.clear();
  batches.forEach((source, i) => cache.set(source, patterns[i]!));
  return patterns;
}

/** `text` cut to `maxChars`, except that a `[redacted]` the cut would split is kept whole. */
function cutOutsideMarker(text: string, maxChars: number): string {
  const marker = text.lastIndexOf(REPLACEMENT, maxChars - 1);
  if (marker !== -1 && marker + REPLACEMENT.length > maxChars)
    return text.slice(0, marker + REPLACEMENT.length);
  return text.slice(0, maxChars);
}

/**
 * The needles of one value: the value itself (which, character by character, also matches its JSON,
 * percent-encoded and HTML forms) and its base64 and base64url texts. A base64 text is matched literally, but
 * its `+`, `/` and `=` may be percent- or JSON-escaped like any character (a token in a query string).
 */
function needlesOf(value: string): Needle[] {
  const chars = [...value].length;
  const minChars = prefixMinChars(chars);
  const needles = [needle(value, minChars, anywhereMinChars(chars))];
  const encodings = new Set<string>(base64Forms(value));
  // OAuth2's Basic client authentication base64-encodes the form-encoded secret (RFC 6749 §2.3.1).
  const formEncoded = new URLSearchParams([['', value]]).toString().slice(1);
  if (formEncoded !== value) for (const form of base64Forms(formEncoded)) encodings.add(form);
  for (const form of [...encodings]) encodings.add(form.replace(/\+/g, '-').replace(/\//g, '_'));
  encodings.delete(value);
  // A fragment of base64 gives away 3 bytes per 4 characters: the same floor, counted in base64 characters.
  const base64MinChars = Math.ceil((minChars * 4) / 3);
  for (const form of encodings)
    if (form.length >= MIN_SCRUB_LENGTH) needles.push(needle(form, base64MinChars));
  return needles;
}

/**
 * A downstream can alter a value it echoes (a Latin-1 header byte read as UTF-8 turns `é` into U+FFFD; a
 * template cuts it), leaving its start whole and the rest changed: the whole value no longer matches. So a run
 * of at least this many leading characters of a value is redacted wherever it stands, not only at the end of a
 * cut text: half the value, and never fewer than 8 characters. Half, so what stays visible can never be most
 * of a value; 8, so a URL-valued secret (`https://…`) does not redact every URL, and ordinary words rarely
 * match. Longer matches win: the whole value is matched whole.
 */
const ANYWHERE_MIN_CHARS = 8;
/** Longest value whose altered start is looked for anywhere (see needle()). */
const ALTERED_MAX_CHARS = 128;
/** Characters of a value past the minimum that a cut-off fragment is matched on one by one (see needle()). */
const TAIL_CHAIN_MAX_CHARS = 32;

function anywhereMinChars(valueLength: number): number {
  return Math.max(ANYWHERE_MIN_CHARS, Math.ceil(valueLength / 2));
}

function needle(text: string, prefixMinGroups: number, anywhereMinGroups = Infinity): Needle {
  const groups = charGroups(text);
  const min = Math.min(prefixMinGroups, groups.length);
  // The value's start, then each further character optional in turn (greedy: the longest run that matches).
  // Only for values up to ALTERED_MAX_CHARS: a long token (a JWT) is plain base64 that no encoder alters, and
  // a nested needle per long value made every scrub several times slower.
  const altered =
    anywhereMinGroups >= groups.length || groups.length > ALTERED_MAX_CHARS
      ? undefined
      : groups.slice(0, anywhereMinGroups).join('') +
        groups.slice(anywhereMinGroups).reduceRight((inner, group) => `(?:${group}${inner})?`, '');
  // `(?:c|$)` for each character after the minimum: the fragment may stop after any of them (a flat chain,
  // not nested groups). Past TAIL_CHAIN_MAX_CHARS more characters of the value, whatever follows up to the end
  // is taken as part of the fragment: a regex per needle over a whole long value (a hundred JWTs held, each
  // with its base64 forms) took 19 s to compile, and that many characters of a value are the value.
  const chained = groups.slice(min, min + TAIL_CHAIN_MAX_CHARS);
  const rest = chained.map((group) => `(?:${group}|$)`).join('');
  const beyond = min + chained.length < groups.length ? '[\\s\\S]*' : '';
  return {
    full: groups.join(''),
    altered,
    prefix: `${groups.slice(0, min).join('')}${rest}${beyond}$`,
    length: text.length,
  };
}

/**
 * The start of an encoded character, cut off by the end of the text: `%2`, `%C3%A`, `\u00`, `\ud83d\u`,
 * `&#3`, `&am`, a U+FFFD (UTF-8 bytes cut), half a surrogate pair (a JS string cut), base64 padding.
 */
const CUT_ESCAPE =
  /^(?:(?:%(?:25)?[0-9A-Fa-f]{0,2})+|\\+u[dD][89abAB][0-9A-Fa-f]{2}(?:\\+(?:u[0-9A-Fa-f]{0,3})?)?|\\+(?:u[0-9A-Fa-f]{0,3})?|&#?[0-9A-Za-z]{0,7}|\uFFFD|[\uD800-\uDBFF]|=+)$/;
/** Longest cut-off escape looked for: a 4-byte character's escapes, each escaped again, less one. */
const MAX_CUT_ESCAPE_CHARS = 24;

/** Characters no encoder escapes: always matched literally. */
const PLAIN = /^[A-Za-z0-9_-]$/;

/** Regex source for each character of `text` (by code point); within a run of whitespace, all but the first optional. */
function charGroups(text: string): string[] {
  const groups: string[] = [];
  let previousWasSpace = false;
  for (const char of text) {
    const isSpace = /^\s$/.test(char);
    const group = charGroup(char);
    groups.push(isSpace && previousWasSpace ? `${group}?` : group);
    previousWasSpace = isSpace;
  }
  return groups;
}

/** JSON's short escapes (`/` is escaped by PHP's json_encode, among others). */
const JSON_ESCAPES: Readonly<Record<string, string>> = {
  '"': '"',
  '\\': '\\',
  '/': '/',
  '\b': 'b',
  '\f': 'f',
  '\n': 'n',
  '\r': 'r',
  '\t': 't',
};
const HTML_NAMED: Readonly<Record<string, string>> = {
  '&': 'amp',
  '<': 'lt',
  '>': 'gt',
  '"': 'quot',
  "'": 'apos',
  ' ': 'nbsp',
};

/** Regex source of one character in any of its encodings. */
function charGroup(char: string): string {
  if (PLAIN.test(char)) return char;
  const codePoint = char.codePointAt(0)!;
  const forms = [escapeRegex(char)];
  // JSON: a short or \u escape, behind any number of backslashes (a JSON string inside a JSON string).
  const short = JSON_ESCAPES[char];
  if (short !== undefined) forms.push(`\\\\+${escapeRegex(short)}`);
  let unicode = '';
  for (let i = 0; i < char.length; i++) unicode += `\\\\+u${hexDigits(char.charCodeAt(i), 4)}`;
  forms.push(unicode);
  // Percent-encoding of each UTF-8 byte, the escape itself escaped at most once; space may be `+` (forms).
  let percent = '';
  for (const byte of Buffer.from(char, 'utf8')) percent += `%(?:25)?${hexDigits(byte, 2)}`;
  forms.push(percent);
  // A space is `+` in a form, and `%2B` once that is escaped again.
  if (char === ' ') forms.push('\\+', '%(?:25)?2[bB]');
  if (/^\s$/.test(char)) forms.push('\\s');
  // HTML character references, decimal or hex, named for the usual five.
  forms.push(`&#(?:0*${codePoint}|[xX]0*${hexDigits(codePoint, 1)});?`);
  const named = HTML_NAMED[char];
  if (named !== undefined) forms.push(`&${named};`);
  return `(?:${forms.join('|')})`;
}

/** `value` in hex, at least `width` digits, as a regex source matching either case of each letter. */
function hexDigits(value: number, width: number): string {
  return value
    .toString(16)
    .padStart(width, '0')
    .replace(/[a-f]/g, (digit) => `[${digit}${digit.toUpperCase()}]`);
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
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
    if (offset === 0) forms.push(encoded, encoded.replace(/=+$/, ''));
  }
  return forms;
}
