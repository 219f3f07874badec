/**
 * Error excerpts and result bodies are scrubbed before they are cut or their whitespace collapsed (issue 13,
 * item 2): a secret cut at the excerpt's 300 characters, at the 4 KiB an error body is read up to, or at a
 * result's 64 KiB cap leaves none of its characters, and a double space does not hide a password.
 */
import { describe, expect, it } from 'vitest';

import { Scrubber } from '../../src/secrets/scrub.ts';
import {
  bodyExcerpt,
  ERROR_BODY_MAX_BYTES,
  parseBody,
  RESULT_BODY_MAX_CHARS,
} from '../../src/worker/http/response.ts';

const KEY = "ak_9f!'()~ +/=é-d41c7e22b0a5";
const PASSWORD = 'correct  horse  battery';

function scrubber(): Scrubber {
  const scrubber = new Scrubber();
  scrubber.add(KEY);
  scrubber.add(PASSWORD);
  return scrubber;
}

/** Any start of `value` of 6 characters or more, as is or form-encoded (what an echoed query holds). */
function leaksStartOf(text: string, value: string): boolean {
  for (let k = 6; k <= value.length; k++) {
    const start = value.slice(0, k);
    const form = new URLSearchParams([['k', start]]).toString().slice(2);
    if (text.includes(start) || text.includes(form)) return true;
  }
  return false;
}

describe('bodyExcerpt', () => {
  it.each(Array.from({ length: KEY.length + 2 }, (_, i) => 300 - i))(
    'leaves no start of a key that straddles the 300-character cut (key at %i)',
    async (at) => {
      const page = `${'a'.repeat(at)}${KEY}${'b'.repeat(500)}`;
      const excerpt = bodyExcerpt(Buffer.from(page), scrubber());
      expect(leaksStartOf(excerpt, KEY)).toBe(false);
      expect(excerpt.endsWith('…')).toBe(true);
      expect(excerpt.startsWith('a'.repeat(Math.min(at, 250)))).toBe(true);
    },
  );

  it('leaves no start of a form-encoded key at the cut, even cut inside an escape', async () => {
    const form = new URLSearchParams([['api_key', KEY]]).toString();
    for (let at = 250; at <= 300; at++) {
      const excerpt = bodyExcerpt(Buffer.from(`${'p'.repeat(at)}${form}${'q'.repeat(400)}`), scrubber());
      expect(leaksStartOf(excerpt, KEY)).toBe(false);
    }
  });

  it('scrubs a password with a double space before the whitespace is collapsed', async () => {
    const excerpt = bodyExcerpt(Buffer.from(`<p>Wrong\n\npassword:   ${PASSWORD}</p>`), scrubber());
    expect(excerpt).toBe('<p>Wrong password: [redacted]</p>');
  });

  it('redacts the start of a key at the end of the bytes read of a long error body', async () => {
    for (const at of [ERROR_BODY_MAX_BYTES - 20, ERROR_BODY_MAX_BYTES - 8]) {
      // One line of spaces: collapsed, the excerpt's end is the read's end.
      const page = Buffer.from(`${' '.repeat(at - 4)}key=${KEY}${' '.repeat(5000)}`);
      const excerpt = bodyExcerpt(page, scrubber());
      expect(leaksStartOf(excerpt, KEY)).toBe(false);
      expect(excerpt).toBe('key=[redacted]');
    }
  });
});

describe('parseBody', () => {
  it.each([RESULT_BODY_MAX_CHARS - 20, RESULT_BODY_MAX_CHARS - 10, RESULT_BODY_MAX_CHARS - 1])(
    'leaves no start of a key that straddles the 64 KiB cap (key at %i)',
    async (at) => {
      const text = `${'x'.repeat(at)}${KEY}${'y'.repeat(1000)}`;
      const { body, truncated } = parseBody(Buffer.from(text), 'text/plain', scrubber());
      expect(truncated).toBe(true);
      // The key replaced whole; the cap then keeps what fits after it.
      const scrubbed = `${'x'.repeat(at)}[redacted]${'y'.repeat(1000)}`;
      expect(body).toBe(scrubbed.slice(0, Math.max(RESULT_BODY_MAX_CHARS, at + 10)));
    },
  );

  it('scrubs a JSON body, a key JSON-escaped in it included', async () => {
    const raw = `{"echo":"${KEY.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}"}`;
    expect(raw).not.toContain(KEY);
    expect(parseBody(Buffer.from(raw), 'application/json', scrubber())).toEqual({
      body: { echo: '[redacted]' },
      truncated: false,
    });
  });
});
