/**
 * The egress guard at dial time (issue 13 item 3; rules in src/core/egress.ts). Two checks, before any byte
 * leaves:
 * - an origin whose host is an IP literal is checked before its request is dispatched (net.connect does not
 *   look literals up, so the lookup below never sees them);
 * - a host name is resolved by our own `lookup`, handed to net/tls.connect through undici's `connect`
 *   options: every address it resolves to is checked, and the socket connects to the address that passed, so
 *   a DNS answer that changes between a check and the connect (rebinding) cannot slip through. This is how
 *   Stripe's smokescreen (used by Svix) and Convoy guard webhook egress, done in-process.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions } from 'node:dns';
import type { LookupFunction } from 'node:net';

import {
  decideEgress,
  describeRefusal,
  type EgressRules,
  type EgressSubject,
  NO_EGRESS_ALLOWANCES,
  parseIpAddress,
} from '../../core/egress.ts';
import { EgressDeniedError } from '../../core/errors.ts';
import { serviceUrlEnvName } from '../../core/services/load.ts';
import type { ServiceConfig } from '../../core/services/types.ts';

/** What the guard knows of the service a pool calls for. */
export interface EgressScope {
  readonly service: string;
  readonly rules: EgressRules;
  /** The origin the services file writes literally (ServiceConfig.literalOrigin). */
  readonly literalOrigin: string | undefined;
  /** How to name a non-literal host in messages, without its value (`the host of baseUrl "…"`). */
  readonly hostLabel: string;
  /** Every host this scope reaches is written literally in the file (token endpoints): default false. */
  readonly isEveryHostLiteral?: boolean;
}

/**
 * OAuth2 token endpoints: `tokenUrl` is always a static URL in the services file (no template, no env
 * override), so only the always-refused ranges (link-local, metadata) apply.
 */
export const TOKEN_ENDPOINT_SCOPE: EgressScope = Object.freeze({
  service: '(oauth2 token endpoint)',
  rules: NO_EGRESS_ALLOWANCES,
  literalOrigin: undefined,
  hostLabel: 'the token endpoint host',
  isEveryHostLiteral: true,
});

/** A service's scope: its rules, its literal origin, and how its baseUrl's host is named in refusals. */
export function egressScopeOf(service: ServiceConfig): EgressScope {
  return {
    service: service.name,
    rules: service.egress,
    literalOrigin: service.literalOrigin,
    hostLabel:
      service.baseUrlFrom === 'env'
        ? `the host ${serviceUrlEnvName(service.name)} names`
        : `the host of baseUrl ${JSON.stringify(service.baseUrl.source)}`,
  };
}

/** The subject and label for one origin of a scope. */
function subjectOf(scope: EgressScope, origin: string, hostname: string): [EgressSubject, string] {
  const isLiteralHost = scope.isEveryHostLiteral === true || origin === scope.literalOrigin;
  return [{ hostname, isLiteralHost }, isLiteralHost ? `host ${hostname}` : scope.hostLabel];
}

/**
 * Throws EgressDeniedError when `origin`'s host is an IP literal the scope refuses; a host name passes here
 * and is checked by the lookup when a connection is opened.
 */
export function checkOriginHost(scope: EgressScope, origin: string): void {
  const hostname = new URL(origin).hostname;
  const address = parseIpAddress(hostname);
  if (address === undefined) return;
  const [subject, label] = subjectOf(scope, origin, hostname);
  const verdict = decideEgress(address, subject, scope.rules);
  if (!verdict.allowed)
    throw new EgressDeniedError(describeRefusal(scope.service, label, verdict), { field: 'baseUrl' });
}

/** The `lookup` for net/tls.connect of one origin: resolves, refuses unless every address passes. */
export function guardedLookup(scope: EgressScope, origin: string): LookupFunction {
  return (hostname, options, callback) => {
    const all: LookupAllOptions = { ...options, all: true };
    dnsLookup(hostname, all, (error, addresses: LookupAddress[]) => {
      if (error !== null) {
        callback(error, '', 0);
        return;
      }
      const [subject, label] = subjectOf(scope, origin, hostname);
      for (const { address } of addresses) {
        const parsed = parseIpAddress(address);
        const verdict =
          parsed === undefined
            ? ({ allowed: false, range: 'reserved', address } as const)
            : decideEgress(parsed, subject, scope.rules);
        if (!verdict.allowed) {
          // Node passes this error on as the socket's; undici fails the queued requests with it unchanged.
          callback(
            new EgressDeniedError(describeRefusal(scope.service, label, verdict), { field: 'baseUrl' }),
            '',
            0,
          );
          return;
        }
      }
      const first = addresses[0];
      if (options.all === true) callback(null, addresses);
      else if (first === undefined)
        callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '', 0);
      else callback(null, first.address, first.family);
    });
  };
}
