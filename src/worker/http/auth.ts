import type { AuthConfig, TemplateContext } from '../../core/services/types.ts';

export interface AuthParts {
  headers: [string, string][];
  query: [string, string][];
}

const NONE: AuthParts = Object.freeze({ headers: [], query: [] }) as AuthParts;

/**
 * The header or query parameter a service's auth adds. OAuth2 adds nothing here: its token comes from the
 * token cache (oauth2.ts) once the request has rendered, so a bad job never costs a token request, and the
 * processor sets it with `authorizeBearer`.
 */
export function renderAuth(auth: AuthConfig, context: TemplateContext): AuthParts {
  switch (auth.type) {
    case 'none':
      return NONE;
    case 'bearer':
      return { headers: [['authorization', `Bearer ${String(auth.token.render(context))}`]], query: [] };
    case 'basic': {
      const credentials = `${String(auth.username.render(context))}:${String(auth.password.render(context))}`;
      return {
        headers: [['authorization', `Basic ${Buffer.from(credentials).toString('base64')}`]],
        query: [],
      };
    }
    case 'apiKey': {
      const value = String(auth.value.render(context));
      if (auth.header !== undefined) return { headers: [[auth.header.toLowerCase(), value]], query: [] };
      return { headers: [], query: [[auth.query ?? 'api_key', value]] };
    }
    case 'oauth2':
      return NONE;
  }
}

/** The request with `Authorization: Bearer <token>` (RFC 6750 §2.1), over any configured Authorization. */
export function authorizeBearer<R extends { headers: Record<string, string> }>(request: R, token: string): R {
  return { ...request, headers: { ...request.headers, authorization: `Bearer ${token}` } };
}
