import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';

import { listenOnFreePort } from './listen.ts';

/** One request to the token endpoint, decoded. */
export interface TokenRequest {
  headers: IncomingHttpHeaders;
  /** The form body's fields. */
  form: Record<string, string>;
  /** Client credentials from a Basic Authorization header, form-decoded as RFC 6749 §2.3.1 says. */
  basic: { clientId: string; clientSecret: string } | undefined;
  at: number;
}

/** What the endpoint answers to one request. Default: a fresh bearer token valid for an hour. */
export interface TokenStep {
  status?: number;
  /** JSON body (a string is sent as is). Default: `{ access_token: <new>, token_type: 'Bearer', expires_in }`. */
  body?: unknown;
  headers?: Record<string, string>;
  /** `expires_in` of the default body, seconds. Default 3600. */
  expiresIn?: number;
  /** Wait before answering. */
  delayMs?: number;
}

export type TokenScript = (request: TokenRequest, index: number) => TokenStep;

/** A token the endpoint issued, and to whom. */
export interface IssuedToken {
  token: string;
  clientId: string | undefined;
  clientSecret: string | undefined;
  expiresAtMs: number;
}

export interface TokenEndpoint {
  /** The token URL (`…/oauth/token`). */
  readonly url: string;
  readonly requests: TokenRequest[];
  readonly issued: IssuedToken[];
  script(script: TokenScript): void;
  /** The token, if this endpoint issued it and it has not expired. */
  isValid(token: string): boolean;
  close(): Promise<void>;
}

/** A real OAuth2 token endpoint on 127.0.0.1:0 (client-credentials grant) that records every request. */
export async function startTokenEndpoint(initial: TokenScript = () => ({})): Promise<TokenEndpoint> {
  let script = initial;
  const requests: TokenRequest[] = [];
  const issued: IssuedToken[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
      const request: TokenRequest = {
        headers: req.headers,
        form,
        basic: decodeBasic(req.headers),
        at: Date.now(),
      };
      const index = requests.push(request) - 1;
      const step = script(request, index);
      const answer = (): void => {
        if (res.destroyed) return;
        let body = step.body;
        if (body === undefined) {
          const token = `at_${randomBytes(12).toString('hex')}`;
          const expiresIn = step.expiresIn ?? 3600;
          issued.push({
            token,
            clientId: request.basic?.clientId ?? form['client_id'],
            clientSecret: request.basic?.clientSecret ?? form['client_secret'],
            expiresAtMs: Date.now() + expiresIn * 1000,
          });
          body = { access_token: token, token_type: 'Bearer', expires_in: expiresIn };
        }
        res.writeHead(step.status ?? 200, {
          'content-type': 'application/json',
          'cache-control': 'no-store',
          ...step.headers,
        });
        res.end(typeof body === 'string' ? body : JSON.stringify(body));
      };
      if (step.delayMs !== undefined) setTimeout(answer, step.delayMs);
      else answer();
    });
  });
  const { url, close } = await listenOnFreePort(server);
  return {
    url: `${url}/oauth/token`,
    requests,
    issued,
    script(next) {
      script = next;
    },
    isValid(token) {
      const found = issued.find((each) => each.token === token);
      return found !== undefined && found.expiresAtMs > Date.now();
    },
    close,
  };
}

function decodeBasic(headers: IncomingHttpHeaders): TokenRequest['basic'] {
  const match = /^Basic (.+)$/.exec(headers.authorization ?? '');
  if (match === null) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const formDecode = (text: string): string => decodeURIComponent(text.replace(/\+/g, ' '));
  return {
    clientId: formDecode(decoded.slice(0, colon)),
    clientSecret: formDecode(decoded.slice(colon + 1)),
  };
}

/** The bearer token of a request's Authorization header. */
export function bearerOf(headers: IncomingHttpHeaders): string | undefined {
  return /^Bearer (.+)$/.exec(headers.authorization ?? '')?.[1];
}
