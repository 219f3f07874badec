import { EgressDeniedError, ValidationError } from '../../core/errors.ts';
import type { CompiledOperation, ServiceConfig, TemplateContext } from '../../core/services/types.ts';
import { renderAuth } from './auth.ts';

export interface OutboundRequest {
  origin: string;
  /** Path and query, ready for undici. */
  path: string;
  method: CompiledOperation['method'];
  headers: Record<string, string>;
  body: string | undefined;
}

const USER_AGENT = 'ferry/0.1';

interface ParsedBase {
  origin: string;
  basePath: string;
}

/** baseUrl rarely changes per job (only when it reads a per-tenant secret): parse each distinct one once. */
const parsedBases = new Map<string, ParsedBase>();
const MAX_PARSED_BASES = 1_000;

function parseBase(baseUrl: string): ParsedBase {
  let parsed = parsedBases.get(baseUrl);
  if (parsed === undefined) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new ValidationError('baseUrl did not render to a valid URL', { field: 'baseUrl' });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ValidationError('baseUrl must be http or https', { field: 'baseUrl' });
    }
    // A whole-URL secret or env value may not add credentials, a query or a fragment (issue 13): the file
    // refuses them in a static baseUrl, and `user@host` has served to hide the real host from a reader.
    if (url.username !== '' || url.password !== '') {
      throw new EgressDeniedError('baseUrl rendered with userinfo (user:password@); refused (use auth)', {
        field: 'baseUrl',
      });
    }
    if (baseUrl.includes('?') || baseUrl.includes('#')) {
      throw new EgressDeniedError('baseUrl rendered with a query or fragment; refused', { field: 'baseUrl' });
    }
    parsed = { origin: url.origin, basePath: url.pathname.replace(/\/+$/, '') };
    if (parsedBases.size >= MAX_PARSED_BASES) parsedBases.clear();
    parsedBases.set(baseUrl, parsed);
  }
  return parsed;
}

/** Renders a compiled operation for one job. Throws ValidationError / ConfigurationError. */
export function buildRequest(
  service: ServiceConfig,
  operation: CompiledOperation,
  context: TemplateContext,
): OutboundRequest {
  const base = parseBase(String(service.baseUrl.render(context)));
  const renderedPath = String(operation.path.render(context));
  let path = base.basePath + (renderedPath.startsWith('/') ? renderedPath : `/${renderedPath}`);

  const auth = renderAuth(service.auth, context);
  if (operation.query.size > 0 || auth.query.length > 0) {
    const query: [string, string][] = [];
    for (const [name, template] of operation.query) {
      const value = template.render(context);
      if (value !== undefined && value !== null)
        query.push([name, typeof value === 'string' ? value : JSON.stringify(value)]);
    }
    for (const pair of auth.query) query.push(pair);
    if (query.length > 0) path += (path.includes('?') ? '&' : '?') + new URLSearchParams(query).toString();
  }

  const headers: Record<string, string> = { 'user-agent': USER_AGENT };
  for (const [name, template] of service.headers)
    headers[name.toLowerCase()] = String(template.render(context));
  for (const [name, template] of operation.headers)
    headers[name.toLowerCase()] = String(template.render(context));
  for (const [name, value] of auth.headers) headers[name] = value;
  // The same key on every attempt and replay makes at-least-once delivery safe downstream.
  headers['idempotency-key'] = context.job.idempotencyKey;

  let body: string | undefined;
  if (operation.body !== undefined) {
    const rendered = operation.body.render(context);
    if (typeof rendered === 'string') {
      body = rendered;
      headers['content-type'] ??= 'text/plain; charset=utf-8';
    } else if (rendered !== undefined) {
      body = JSON.stringify(rendered);
      headers['content-type'] ??= 'application/json';
    }
  }
  return { origin: base.origin, path, method: operation.method, headers, body };
}
