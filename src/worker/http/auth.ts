import { ConfigurationError } from '../../core/errors.ts';
import type { AuthConfig, TemplateContext } from '../../core/services/types.ts';

export interface AuthParts {
  headers: [string, string][];
  query: [string, string][];
}

const NONE: AuthParts = Object.freeze({ headers: [], query: [] }) as AuthParts;

/** The header or query parameter a service's auth adds. OAuth2 is resolved by its own token cache (later). */
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
      throw new ConfigurationError('oauth2 auth is not supported by this version of Ferry yet');
  }
}
