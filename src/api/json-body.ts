/**
 * The API's JSON body parser: Fastify's own (secure-json-parse, `__proto__` and `constructor.prototype` keys
 * refused), behind a nesting-depth check. A body nested 10,000 levels parses fine but overflows the stack of
 * whoever walks it next (zod, BullMQ's JSON.stringify: a 500), and costs memory out of proportion to its size.
 * The check is one linear pass over the text before anything is built from it.
 */
import type { FastifyInstance } from 'fastify';

import { ValidationError } from '../core/errors.ts';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

/**
 * True when the JSON text opens more than `maxDepth` arrays or objects inside one another. Brackets inside
 * strings do not count. Text that is not JSON is left for JSON.parse to refuse.
 */
export function exceedsJsonDepth(text: string, maxDepth: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) {
      inString = true;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > maxDepth) return true;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--;
    }
  }
  return false;
}

/** Replaces the `application/json` parser with Fastify's default behind the depth check. */
export function registerJsonParser(app: FastifyInstance, maxDepth: number): void {
  const parse = app.getDefaultJsonParser(
    app.initialConfig.onProtoPoisoning ?? 'error',
    app.initialConfig.onConstructorPoisoning ?? 'error',
  );
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (exceedsJsonDepth(body as string, maxDepth)) {
      done(
        new ValidationError(
          `body: nested deeper than ${maxDepth} levels of arrays and objects (FERRY_API_MAX_JSON_DEPTH)`,
          { field: 'body' },
        ),
        undefined,
      );
      return;
    }
    void parse(request, body as string, done);
  });
}
