/**
 * The Scrubber against every form a value takes on the wire (issue 13, items 1 and 2). The forms are written
 * here with the platform's own encoders, not taken from src/secrets/scrub.ts: the code under test is never its
 * own oracle.
 */
import { describe, expect, it } from 'vitest';

import { Scrubber } from '../../src/secrets/scrub.ts';

/** Values with the characters encoders disagree about: `!'()~`, space, `+`, `/`, `=`, non-ASCII, double spaces. */
const VALUES = [
  "k3y!'()~_sk-live*0x",
  'pass  word  2024 with spaces',
  'a+b/c=d==e+/f=',
  'clé-été ü 😀 ∑ ok',
  "k!'()~ +/=é  mix 😀*",
];

/** Every wire form of `value` (by name), with the platform's encoders. */
function wireForms(value: string): Map<string, string> {
  const form = new URLSearchParams([['k', value]]).toString().slice(2);
  const base64 = Buffer.from(value).toString('base64');
  return new Map([
    ['raw', value],
    ['json', JSON.stringify(value).slice(1, -1)],
    [
      'json ascii (\\u escapes)',
      JSON.stringify(value)
        .slice(1, -1)
        .replace(/[^\x20-\x7e]/g, unicodeEscape),
    ],
    ['json in json', JSON.stringify(JSON.stringify(value)).slice(3, -3)],
    ['encodeURIComponent', encodeURIComponent(value)],
    ['encodeURIComponent, lower-case hex', lowerHex(encodeURIComponent(value))],
    ['form (URLSearchParams)', form],
    ['form, lower-case hex', lowerHex(form)],
    ['form, escaped again', encodeURIComponent(form)],
    ['base64', base64],
    ['base64 unpadded', base64.replace(/=+$/, '')],
    ['base64url', Buffer.from(value).toString('base64url')],
  ]);
}

function unicodeEscape(char: string): string {
  let out = '';
  for (let i = 0; i < char.length; i++) out += `\\u${char.charCodeAt(i).toString(16).padStart(4, '0')}`;
  return out;
}

function lowerHex(text: string): string {
  return text.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase());
}

function scrubberFor(...values: string[]): Scrubber {
  const scrubber = new Scrubber();
  for (const value of values) scrubber.add(value);
  return scrubber;
}

/**
 * Where `text` still holds the first `minChars` or more characters of `value` in one of its forms: the value's
 * prefix in that form (base64: only the characters that depend on the prefix's bytes alone).
 */
function prefixLeaks(text: string, value: string, minChars: number): string[] {
  const chars = [...value];
  const hits: string[] = [];
  for (let k = minChars; k <= chars.length; k++) {
    const prefix = chars.slice(0, k).join('');
    const forms = wireForms(prefix);
    for (const name of ['base64', 'base64 unpadded', 'base64url']) {
      const encoded = forms.get(name)!.replace(/=+$/, '');
      forms.set(name, encoded.slice(0, Math.floor((Buffer.byteLength(prefix) * 8) / 6)));
    }
    for (const [name, form] of forms) if (text.includes(form)) hits.push(`${k} chars, ${name}`);
  }
  return hits;
}

describe('Scrubber: every wire form', () => {
  for (const value of VALUES) {
    it.each([...wireForms(value)])(`scrubs ${JSON.stringify(value)} as %s`, async (_name, form) => {
      const scrubber = scrubberFor(value);
      expect(scrubber.scrub(`before ${form} after`)).toBe('before [redacted] after');
      expect(scrubber.scrubValue({ echo: `url?api_key=${form}&x=1` })).toEqual({
        echo: 'url?api_key=[redacted]&x=1',
      });
    });

    it(`scrubs ${JSON.stringify(value)} inside base64 and base64url at every alignment`, async () => {
      const scrubber = scrubberFor(value);
      for (const before of ['', 'u', 'us', 'user:', 'apiuser:']) {
        for (const after of ['', '!', '!!', '!!!']) {
          for (const encoding of ['base64', 'base64url'] as const) {
            const encoded = Buffer.from(`${before}${value}${after}`).toString(encoding);
            const scrubbed = scrubber.scrub(`Basic ${encoded}`);
            // What is left are the characters that also encode the bytes around the value.
            expect(scrubbed).toMatch(/^Basic [A-Za-z0-9+/_-]{0,11}\[redacted\][A-Za-z0-9+/_-]{0,5}=*$/);
          }
        }
      }
    });

    it(`scrubs ${JSON.stringify(value)} after a downstream collapsed its whitespace`, async () => {
      const scrubber = scrubberFor(value);
      expect(scrubber.scrub(`<p>${value.replace(/\s+/g, ' ')}</p>`)).toBe('<p>[redacted]</p>');
    });
  }

  it('scrubs a value echoed in an HTML page', async () => {
    const value = `it's <a> & "b"`;
    const scrubber = scrubberFor(value);
    const html = value
      .replace(/&/g, '&amp;')
      .replace(/</g, '&lt;')
      .replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;')
      .replace(/'/g, '&#39;');
    expect(scrubber.scrub(`<p>${html}</p>`)).toBe('<p>[redacted]</p>');
  });

  it('leaves ordinary text alone: the letters of a value are case-sensitive, only escape digits are not', async () => {
    const scrubber = scrubberFor('AbCdEf/Gh12', 'secret value');
    expect(scrubber.scrub('abcdef/gh12 ABCDEF/GH12 AbCdEf/ 100% sure')).toBe(
      'abcdef/gh12 ABCDEF/GH12 AbCdEf/ 100% sure',
    );
    expect(scrubber.scrub('AbCdEf%2fGh12 AbCdEf%2FGh12')).toBe('[redacted] [redacted]');
    expect(scrubber.scrub('a secret-value, secretvalue')).toBe('a secret-value, secretvalue');
  });

  it('scrubs nothing of a value shorter than 4 characters', async () => {
    const scrubber = scrubberFor('abc');
    expect(scrubber.size).toBe(0);
    expect(scrubber.scrub('abc')).toBe('abc');
  });

  it('forgets an expired token on the next add, and keeps a secret for ever', async () => {
    let now = 0;
    const scrubber = new Scrubber({ now: () => now });
    scrubber.add('token-one-1234', 100);
    scrubber.add('a secret 1234');
    expect(scrubber.scrub('token-one-1234 a secret 1234')).toBe('[redacted] [redacted]');
    now = 200;
    scrubber.add('token-two-5678', 300);
    expect(scrubber.scrub('token-one-1234 token-two-5678 a secret 1234')).toBe(
      'token-one-1234 [redacted] [redacted]',
    );
  });

  it('scrubs each of many long tokens (its needles spread over several regexes)', async () => {
    const tokens = Array.from({ length: 120 }, (_, i) =>
      Buffer.from(`{"tenant":${i},"scope":"a b/c+d"}`.repeat(20)).toString('base64url'),
    );
    const scrubber = scrubberFor(...tokens);
    for (const i of [0, 59, 119]) {
      const token = tokens[i]!;
      const text = `Bearer ${token} /x?t=${encodeURIComponent(token)} ${Buffer.from(`u:${token}`).toString('base64')}`;
      expect(scrubber.scrub(text)).toMatch(
        /^Bearer \[redacted\] \/x\?t=\[redacted\] [A-Za-z0-9+/]{0,3}\[redacted\]/,
      );
      expect(scrubber.redactCutTail(`cut: ${token.slice(0, 40)}`)).toBe('cut: [redacted]');
    }
  });

  it('replaces the longer of two overlapping values whole', async () => {
    const scrubber = scrubberFor('abcd1234', 'abcd1234efgh5678');
    expect(scrubber.scrub('x abcd1234efgh5678 y')).toBe('x [redacted] y');
  });
});

describe('Scrubber: values a downstream altered', () => {
  it('redacts a start of half the value or more (8 characters at least) wherever it stands', async () => {
    const key = 'Kq7xPzR2mW9t  éLs4vN8bYc';
    const scrubber = scrubberFor(key);
    // A Latin-1 header byte read back as UTF-8: `é` became U+FFFD, the rest of the echo is intact.
    const mangled = key.replace('é', '\uFFFD');
    expect(scrubber.scrub(`you sent ${mangled}.`)).toBe('you sent [redacted]\uFFFDLs4vN8bYc.');
    // The same in a JSON echo and percent-encoded: each character still matches in any of its forms.
    expect(scrubber.scrub(JSON.stringify({ key: mangled }))).not.toContain('Kq7xPzR2mW9t');
    expect(scrubber.scrub(encodeURIComponent(mangled))).not.toContain('Kq7xPzR2mW9t');
    // Under half stays: it gives away less than it keeps hidden.
    expect(scrubber.scrub('Kq7xPzR2mW9 then')).toBe('Kq7xPzR2mW9 then');
  });

  it('scrubs each whole value before any altered start, so values that share a start stay apart', async () => {
    const scrubber = scrubberFor('tenant-one-secret-1', 'tenant-one-secret-22');
    expect(scrubber.scrub('a=tenant-one-secret-1 b=tenant-one-secret-22 c=tenant-one-secXX')).toBe(
      'a=[redacted] b=[redacted] c=[redacted]XX',
    );
  });
});

describe('Scrubber: values cut short', () => {
  for (const value of VALUES) {
    it(`redacts the start of ${JSON.stringify(value)} left at the end of a cut text, in every form`, async () => {
      const scrubber = scrubberFor(value);
      for (const [name, form] of wireForms(value)) {
        for (let cut = 1; cut < form.length; cut++) {
          const text = scrubber.redactCutTail(`The page said: ${form.slice(0, cut)}`);
          expect(prefixLeaks(text, value, 6), `${name} cut after ${cut}: ${text}`).toEqual([]);
          expect(text.startsWith('The page said: ')).toBe(true);
        }
      }
    });

    it(`cuts a text that ${JSON.stringify(value)} straddles after scrubbing it`, async () => {
      const scrubber = scrubberFor(value);
      for (const [name, form] of wireForms(value)) {
        const text = `${'x'.repeat(50)}${form}${'y'.repeat(50)}`;
        for (let maxChars = 45; maxChars < 50 + form.length + 5; maxChars++) {
          const { text: cut, truncated } = scrubber.scrubAndCut(text, maxChars);
          // Not cut when the text fits once scrubbed.
          expect(truncated).toBe(!cut.endsWith('y'.repeat(50)));
          expect(prefixLeaks(cut, value, 6), `${name} cut at ${maxChars}: ${cut}`).toEqual([]);
          // At most maxChars, unless a whole `[redacted]` straddles the cut.
          expect(cut.length).toBeLessThanOrEqual(maxChars + 9);
          expect(cut.startsWith('x'.repeat(Math.min(45, maxChars)))).toBe(true);
        }
      }
    });
  }

  it('keeps a text that was not cut whole, even when it ends like a value begins', async () => {
    const scrubber = scrubberFor('sk_live_0123456789abcdef');
    // 11 of 24 characters: under the half that is redacted anywhere (ANYWHERE_MIN_CHARS), over the cut-tail minimum.
    expect(scrubber.scrubAndCut('key prefix: sk_live_012', 100)).toEqual({
      text: 'key prefix: sk_live_012',
      truncated: false,
    });
    expect(scrubber.scrubAndCut('key prefix: sk_live_012', 100, true)).toEqual({
      text: 'key prefix: [redacted]',
      truncated: true,
    });
  });

  it('redacts a long cut-off start whole, past the characters it matches one by one', async () => {
    const value = Array.from({ length: 100 }, (_, i) => 'Zq7!xW-9 '[i % 9]).join('');
    const scrubber = scrubberFor(value);
    for (const kept of [7, 38, 39, 40, 80, 99]) {
      expect(scrubber.redactCutTail(`token: ${value.slice(0, kept)}`), `${kept} characters`).toBe(
        'token: [redacted]',
      );
    }
  });

  it('leaves fewer characters than the minimum, and ordinary endings, alone', async () => {
    const scrubber = scrubberFor('sk_live_0123456789abcdef');
    // 5 characters of a 24-character value: the minimum is 6 (docs/secrets.md).
    expect(scrubber.redactCutTail('it ended with sk_li')).toBe('it ended with sk_li');
    expect(scrubber.redactCutTail('it ended with sk_liv')).toBe('it ended with [redacted]');
    expect(scrubber.redactCutTail('see you tomorrow')).toBe('see you tomorrow');
    // A short value: half of it is enough (at least 3 characters).
    const short = scrubberFor('pw-0c7e');
    expect(short.redactCutTail('password pw-0')).toBe('password [redacted]');
    expect(short.redactCutTail('password pw')).toBe('password pw');
  });

  it('scrubs a 1 MiB text cut to 64 KiB and looks at no more of it than the cut needs', async () => {
    const value = "big!'()~ +/=é  value";
    const scrubber = scrubberFor(value);
    const cap = 64 * 1024;
    const text = `${'a'.repeat(cap - 7)}${value}${'b'.repeat(1024 * 1024)}`;
    const { text: cut, truncated } = scrubber.scrubAndCut(text, cap);
    expect(truncated).toBe(true);
    expect(cut).toBe(`${'a'.repeat(cap - 7)}[redacted]`);
  });
});
