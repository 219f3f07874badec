/**
 * A service's transport per job (issue 17 items 1 and 2): which forward proxy its call goes through and the TLS
 * material of its connections, rendered from `proxy:` and `tls:` (src/core/services/transport.ts) with the
 * job's resolved secrets. The pool set (pools.ts) keys its pools by `key`, a hash of the rendered values,
 * never the values themselves: a rotated certificate or proxy password makes a new pool at the next job.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContextOptions } from 'node:tls';

import { AuthenticationError, ConfigurationError, type FerryError, TlsError } from '../../core/errors.ts';
import { checkProxyUrl } from '../../core/services/schema.ts';
import { TLS_TEMPLATE_FIELDS, type TlsMinVersion } from '../../core/services/transport.ts';
import type { ServiceConfig, TemplateContext } from '../../core/services/types.ts';
import type { SecretObserver } from '../../secrets/resolver.ts';

/** The TLS options of a pool's connections (undici `connect` / ProxyAgent `requestTls`). */
export interface RenderedTls {
  ca?: string;
  cert?: string;
  key?: string;
  passphrase?: string;
  servername?: string;
  minVersion?: TlsMinVersion;
}

/** What a job's call uses beside its origin. */
export interface Transport {
  /** A hash of everything below: pools are keyed by it (never by the material). */
  readonly key: string;
  /** `env`: the worker's proxy environment decides per origin; `none`: direct; a URL: that proxy. */
  readonly proxy: 'env' | 'none' | string;
  readonly tls: RenderedTls | undefined;
}

/** The transport of a service without `proxy:` and `tls:`: today's pools, the env's proxy. */
export const DEFAULT_TRANSPORT: Transport = Object.freeze({ key: '', proxy: 'env', tls: undefined });
const DIRECT_TRANSPORT: Transport = Object.freeze({ key: 'none', proxy: 'none', tls: undefined });

/** The last transport rendered per service: the hash is computed only when a value changed. */
const lastRendered = new WeakMap<
  ServiceConfig,
  { values: readonly (string | undefined)[]; transport: Transport }
>();

/**
 * Renders the service's `proxy:` and `tls:` for one job. Secrets are already resolved (and registered with the
 * scrubber) in `context`. Throws ConfigurationError for a proxy URL or PEM value that is not usable, naming the
 * field and never the value.
 */
export function renderTransport(service: ServiceConfig, context: TemplateContext): Transport {
  const proxy = service.proxy;
  const tls = service.tls;
  if (tls === undefined && (proxy === undefined || proxy.kind === 'env')) return DEFAULT_TRANSPORT;
  if (tls === undefined && proxy?.kind === 'none') return DIRECT_TRANSPORT;
  const values: (string | undefined)[] = [
    proxy === undefined || proxy.kind === 'env'
      ? 'env'
      : proxy.kind === 'none'
        ? 'none'
        : renderProxy(proxy.url.render(context)),
  ];
  for (const field of TLS_TEMPLATE_FIELDS) {
    const template = tls?.[field];
    values.push(template === undefined ? undefined : renderTlsValue(field, template.render(context)));
  }
  values.push(tls?.minVersion);
  const last = lastRendered.get(service);
  if (last !== undefined && last.values.every((value, i) => value === values[i])) return last.transport;
  const hash = createHash('sha256');
  for (const value of values) hash.update(value === undefined ? '\u0000' : `\u0001${value}\u0000`);
  const rendered: RenderedTls = {};
  TLS_TEMPLATE_FIELDS.forEach((field, i) => {
    const value = values[i + 1];
    if (value !== undefined) rendered[field] = value;
  });
  if (tls?.minVersion !== undefined) rendered.minVersion = tls.minVersion;
  const transport: Transport = {
    key: hash.digest('base64url').slice(0, 32),
    proxy: values[0]!,
    tls: tls === undefined ? undefined : rendered,
  };
  lastRendered.set(service, { values, transport });
  return transport;
}

function renderProxy(value: unknown): string {
  if (typeof value !== 'string' || value === '')
    throw new ConfigurationError('proxy: rendered to an empty value', { field: 'proxy' });
  // Never the value in the message: it may hold the proxy's password.
  const problem = checkProxyUrl(value);
  if (problem !== undefined)
    throw new ConfigurationError(`proxy: the rendered URL ${problem}`, { field: 'proxy' });
  return value;
}

function renderTlsValue(field: string, value: unknown): string {
  if (typeof value !== 'string' || value === '')
    throw new ConfigurationError(`tls.${field}: rendered to an empty or non-text value`, {
      field: `tls.${field}`,
    });
  return value;
}

/**
 * Checks the rendered TLS material once per new pool, so a bad PEM fails the job as a ConfigurationError naming
 * the field (undici would report it as a connect error, retried as a NetworkError). The message carries the
 * OpenSSL error code only, never the PEM or a line of it.
 */
export function checkTlsMaterial(tls: RenderedTls): void {
  const attempt = (
    field: string,
    options: SecureContextOptions,
    problem = 'not usable PEM material',
  ): void => {
    try {
      createSecureContext(options);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      const text = typeof code === 'string' ? code : '';
      // A wrong passphrase shows as a key that does not decrypt.
      const at =
        field === 'key' && tls.passphrase !== undefined && /BAD_DECRYPT/.test(text) ? 'passphrase' : field;
      throw new ConfigurationError(
        `tls.${at}: ${at === 'passphrase' ? 'does not decrypt tls.key' : problem}${text === '' ? '' : ` (${text})`}`,
        { field: `tls.${at}` },
      );
    }
  };
  if (tls.ca !== undefined) {
    // Node skips what it cannot parse in `ca` without a word (the server then looks untrusted): check each.
    const blocks = tls.ca.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    const unusable = blocks.length === 0 || blocks.some((block) => !isCertificate(block));
    if (unusable)
      throw new ConfigurationError('tls.ca: not PEM certificates (-----BEGIN CERTIFICATE----- blocks)', {
        field: 'tls.ca',
      });
    attempt('ca', { ca: tls.ca });
  }
  if (tls.cert !== undefined) attempt('cert', { cert: tls.cert });
  if (tls.key !== undefined) {
    const withPassphrase = tls.passphrase === undefined ? {} : { passphrase: tls.passphrase };
    attempt('key', { key: tls.key, ...withPassphrase });
    // Both usable, but not a pair: named after the key (the certificate is what the partner registered).
    if (tls.cert !== undefined)
      attempt('key', { cert: tls.cert, key: tls.key, ...withPassphrase }, 'is not the key of tls.cert');
  }
}

function isCertificate(pem: string): boolean {
  try {
    new X509Certificate(pem);
    return true;
  } catch {
    return false;
  }
}

/**
 * Registers the secret parts of a transport with the scrubber: each line of a PEM private key (a log line or
 * error may hold one line of it, which the whole value does not match) and the proxy URL's credentials.
 */
export function observeTransport(transport: Transport, observer: SecretObserver): void {
  if (transport.proxy !== 'env' && transport.proxy !== 'none') observeProxyUrl(transport.proxy, observer);
  const tls = transport.tls;
  if (tls?.key !== undefined) observePem(tls.key, observer);
  if (tls?.passphrase !== undefined) observer.add(tls.passphrase);
}

/** A PEM's whole text and each of its base64 lines (headers and short lines left out). */
export function observePem(pem: string, observer: SecretObserver): void {
  observer.add(pem);
  observer.add(pem.trim());
  for (const line of pem.split(/\r?\n/)) {
    const trimmed = line.trim();
    if (trimmed.length >= 16 && !trimmed.startsWith('-----') && !trimmed.includes(':')) observer.add(trimmed);
  }
}

/**
 * A proxy URL's credentials: the password, `user:pass` (whose base64 is the Proxy-Authorization Basic value,
 * which the scrubber's base64 forms cover), both raw and decoded, and the whole URL.
 */
export function observeProxyUrl(value: string, observer: SecretObserver): void {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return;
  }
  if (url.username === '' && url.password === '') return;
  observer.add(value);
  observer.add(url.href);
  for (const [user, pass] of [
    [url.username, url.password],
    [safeDecode(url.username), safeDecode(url.password)],
  ] as const) {
    if (pass !== '') observer.add(pass);
    observer.add(`${user}:${pass}`);
  }
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** A proxy URL without its credentials, for messages and logs. */
export function redactProxyUrl(value: string): string {
  try {
    const url = new URL(value);
    if (url.username !== '' || url.password !== '') {
      url.username = '';
      url.password = '';
      return `${url.origin} (with credentials)`;
    }
    return url.origin;
  } catch {
    return '(unparsable proxy URL)';
  }
}

// ---- The worker's proxy environment, read once at start (undici's EnvHttpProxyAgent rules).

export interface NoProxyEntry {
  readonly hostname: string;
  /** 0: any port. */
  readonly port: number;
}

export interface ProxyEnv {
  /** For http:// targets (HTTP_PROXY / http_proxy). */
  readonly httpProxy: string | undefined;
  /** For https:// targets (HTTPS_PROXY / https_proxy; else the HTTP proxy). */
  readonly httpsProxy: string | undefined;
  /** NO_PROXY / no_proxy entries; `*` sets `noProxyAll`. */
  readonly noProxy: readonly NoProxyEntry[];
  readonly noProxyAll: boolean;
}

export const NO_PROXY_ENV: ProxyEnv = Object.freeze({
  httpProxy: undefined,
  httpsProxy: undefined,
  noProxy: [],
  noProxyAll: false,
});

/**
 * HTTPS_PROXY, HTTP_PROXY and NO_PROXY the way undici's EnvHttpProxyAgent reads them: the lower-case name wins
 * over the upper-case one; HTTPS_PROXY falls back to HTTP_PROXY; NO_PROXY is a comma- or space-separated list of
 * host names (a leading `.` or `*.` matches sub-domains, which every entry matches anyway), optionally with
 * `:port`, or `*`. Throws ConfigurationError for a proxy URL that is not http(s) without a path (never echoing
 * it: it may hold a password).
 */
export function readProxyEnv(env: NodeJS.ProcessEnv): ProxyEnv {
  const pick = (lower: string, upper: string): string | undefined => {
    const value = env[lower] ?? env[upper];
    if (value === undefined || value === '') return undefined;
    const problem = checkProxyUrl(value);
    if (problem !== undefined) throw new ConfigurationError(`${upper}: ${problem}`, { field: upper });
    return value;
  };
  const httpProxy = pick('http_proxy', 'HTTP_PROXY');
  const httpsProxy = pick('https_proxy', 'HTTPS_PROXY') ?? httpProxy;
  const noProxyValue = env['no_proxy'] ?? env['NO_PROXY'] ?? '';
  const noProxy: NoProxyEntry[] = [];
  for (const entry of noProxyValue.split(/[,\s]/)) {
    if (entry === '') continue;
    const parsed = /^(.+):(\d+)$/.exec(entry);
    noProxy.push({
      hostname: (parsed === null ? entry : parsed[1]!).replace(/^\*?\./, '').toLowerCase(),
      port: parsed === null ? 0 : Number.parseInt(parsed[2]!, 10),
    });
  }
  return { httpProxy, httpsProxy, noProxy, noProxyAll: noProxyValue.trim() === '*' };
}

const DEFAULT_PORTS: Readonly<Record<string, number>> = { 'http:': 80, 'https:': 443 };

/** The env's proxy for a target origin, or undefined when it goes direct. */
export function envProxyFor(env: ProxyEnv, origin: string): string | undefined {
  if (env.httpProxy === undefined && env.httpsProxy === undefined) return undefined;
  const url = new URL(origin);
  if (env.noProxyAll) return undefined;
  const hostname = url.host.replace(/:\d*$/, '').toLowerCase();
  const port = Number.parseInt(url.port, 10) || DEFAULT_PORTS[url.protocol] || 0;
  for (const entry of env.noProxy) {
    if (entry.port !== 0 && entry.port !== port) continue;
    if (hostname === entry.hostname || hostname.endsWith(`.${entry.hostname}`)) return undefined;
  }
  return url.protocol === 'https:' ? env.httpsProxy : env.httpProxy;
}

/** Registers the env's proxy credentials with the scrubber (at worker start). */
export function observeProxyEnv(env: ProxyEnv, observer: SecretObserver): void {
  for (const value of [env.httpProxy, env.httpsProxy])
    if (value !== undefined) observeProxyUrl(value, observer);
}

// ---- TLS failures.

/** The server's certificate is not trusted: OpenSSL's verify codes and Node's host name check. */
const SERVER_TRUST_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_REVOKED',
  'CERT_SIGNATURE_FAILURE',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** The server refused our client certificate (or wanted one): a TLS alert it sent. */
const CLIENT_CERT_ALERT =
  /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(?:BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_REQUIRED|CERTIFICATE_UNKNOWN|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED|DECRYPT_ERROR)$/;

/**
 * A TLS failure as its Ferry error, or undefined when `error` is not one: an untrusted server certificate is a
 * TlsError naming the code and what to set; a refused client certificate an AuthenticationError.
 */
export function classifyTlsError(error: unknown): FerryError | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current !== null && typeof current === 'object'; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') {
      if (SERVER_TRUST_CODES.has(code)) {
        const what =
          code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'HOSTNAME_MISMATCH'
            ? 'the certificate names another host (fix it, or set tls.servername to a name it holds)'
            : code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID'
              ? 'the certificate is outside its validity period'
              : "set the service's tls.ca to the CA that issued it";
        return new TlsError(`TLS: the server's certificate is not trusted (${code}): ${what}`, {
          cause: error,
        });
      }
      if (CLIENT_CERT_ALERT.test(code)) {
        return new AuthenticationError(
          `TLS: the server refused the client certificate (${code}); check tls.cert and tls.key`,
          { cause: error },
        );
      }
    }
    current = (current as { cause?: unknown }).cause;
  }
  // undici's tunnel: `Proxy response (407) !== 200 when HTTP Tunneling`.
  const message = error instanceof Error ? error.message : '';
  if (/^Proxy response \(407\)/.test(message))
    return new AuthenticationError(
      'the forward proxy refused its credentials (407 Proxy Authentication Required)',
      {
        cause: error,
      },
    );
  return undefined;
}
