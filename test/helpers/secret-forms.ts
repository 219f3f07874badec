/**
 * What a leak search looks for: every form a secret value takes on the wire, written here with the platform's
 * encoders (never with src/secrets/scrub.ts: the code under test must not be its own oracle).
 */

/** base64 (or base64url) of `value` after `offset` other bytes: only the characters its own bytes decide. */
function embeddedBase64(value: string, offset: number, encoding: 'base64' | 'base64url'): string {
  const bytes = Buffer.byteLength(value);
  const encoded = Buffer.concat([Buffer.alloc(offset, 0x21), Buffer.from(value)]).toString(encoding);
  return encoded.slice(Math.ceil((offset * 8) / 6), Math.floor(((offset + bytes) * 8) / 6));
}

function lowerHex(text: string): string {
  return text.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase());
}

/**
 * The six encodings of issue 13 (raw, JSON-escaped, `encodeURIComponent`, form as `URLSearchParams` writes it,
 * base64 and base64url at the three byte alignments), the percent-encoded ones also with lower-case hex, and
 * the value with its whitespace runs collapsed (an error excerpt's normalisation). Forms shorter than 4
 * characters are left out (they would match anything).
 */
export function secretForms(value: string): Map<string, string> {
  const forms = new Map<string, string>([
    ['raw', value],
    ['json', JSON.stringify(value).slice(1, -1)],
    ['encodeURIComponent', encodeURIComponent(value)],
    ['encodeURIComponent (lower-case hex)', lowerHex(encodeURIComponent(value))],
    ['form', new URLSearchParams([['k', value]]).toString().slice(2)],
    ['form (lower-case hex)', lowerHex(new URLSearchParams([['k', value]]).toString().slice(2))],
    ['whitespace collapsed', value.replace(/\s+/g, ' ')],
  ]);
  for (const encoding of ['base64', 'base64url'] as const) {
    forms.set(encoding, Buffer.from(value).toString(encoding));
    for (let offset = 0; offset < 3; offset++)
      forms.set(`${encoding} after ${offset} bytes`, embeddedBase64(value, offset, encoding));
  }
  for (const [name, form] of forms) if (form.length < 4) forms.delete(name);
  return forms;
}

/**
 * The forms of the value and of each of its starts of `minChars` characters or more: what a value cut by a
 * truncation leaves behind. Keys read `<form>` or `<form> of the first <k> characters`.
 */
export function secretAndPrefixForms(value: string, minChars: number): Map<string, string> {
  const all = new Map(secretForms(value));
  const chars = [...value];
  for (let k = minChars; k < chars.length; k++) {
    for (const [name, form] of secretForms(chars.slice(0, k).join('')))
      all.set(`${name} of the first ${k} characters`, form);
  }
  return all;
}

/** `<label> (<form name>) in <place>` for every form found in every place. */
export function findSecretForms(
  label: string,
  forms: Map<string, string>,
  places: Record<string, string>,
): string[] {
  const hits: string[] = [];
  for (const [name, form] of forms) {
    for (const [place, text] of Object.entries(places))
      if (text.includes(form)) hits.push(`${label} (${name}) in ${place}`);
  }
  return hits;
}
