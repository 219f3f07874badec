/**
 * A service's transport (issue 17 items 1 and 2): how its calls reach the downstream. `proxy:` says whether a
 * forward proxy is used (HTTPS_PROXY/HTTP_PROXY/NO_PROXY by default), `tls:` the CA, client certificate and
 * TLS limits of its connections. Values are templates over secrets, rendered per job (so a rotated secret
 * reaches new connections); the worker keys its pools by a hash of what they rendered to
 * (src/worker/http/transport.ts).
 */
import type { CompiledTemplate } from './types.ts';

/** `proxy:` of a service. */
export type ProxySetting =
  /** Unset: the worker's HTTPS_PROXY / HTTP_PROXY / NO_PROXY (read at start). */
  | { readonly kind: 'env' }
  /** `proxy: none`: always direct, whatever the environment says. */
  | { readonly kind: 'none' }
  /** A URL template (secrets only: never input or the tenant) naming an http(s) proxy. */
  | { readonly kind: 'url'; readonly url: CompiledTemplate };

export const PROXY_NONE = 'none';
export const TLS_MIN_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
export type TlsMinVersion = (typeof TLS_MIN_VERSIONS)[number];

/** `tls:` of a service: each value a template (mode `value`) that may read secrets, never input. */
export interface CompiledTls {
  /** PEM of the CA certificates trusted for the downstream (instead of Node's bundled roots). */
  readonly ca: CompiledTemplate | undefined;
  /** PEM client certificate (chain) presented to the downstream. */
  readonly cert: CompiledTemplate | undefined;
  /** PEM private key of `cert`. */
  readonly key: CompiledTemplate | undefined;
  readonly passphrase: CompiledTemplate | undefined;
  /** Server name sent in SNI and checked against the certificate (default the URL's host). */
  readonly servername: CompiledTemplate | undefined;
  readonly minVersion: TlsMinVersion | undefined;
}

/** The TLS fields that hold templates, in a fixed order (rendering and hashing walk it). */
export const TLS_TEMPLATE_FIELDS = ['ca', 'cert', 'key', 'passphrase', 'servername'] as const;
export type TlsTemplateField = (typeof TLS_TEMPLATE_FIELDS)[number];
