/**
 * The live call of a secret test (src/ops/secret-test.ts, which checks the request first): one attempt of a
 * service's operation through the worker's HTTP layer, as a job of that service would make it, with the
 * secrets it is given. It changes nothing: no job, no dead letter, no event, and no breaker (the call goes
 * around the service's circuit breaker on purpose: a wrong candidate value is expected to fail, and its 401
 * must neither open the breaker nor count toward opening it). Its own connection pool and token cache are
 * closed before it returns, so a token fetched with a candidate client secret is never cached where a worker
 * could use it.
 */
import { randomUUID } from 'node:crypto';

import { type FerryError, NetworkError } from '../core/errors.ts';
import { Scrubber } from '../secrets/scrub.ts';
import type { SecretProbe, SecretTestOutcome } from '../secrets/secret-test.ts';
import { egressScopeOf } from './http/egress.ts';
import { TokenCache } from './http/oauth2.ts';
import { PoolSet } from './http/pools.ts';
import { observeProxyEnv, type ProxyEnv, readProxyEnv } from './http/transport.ts';
import { runAttempt } from './processor.ts';

export interface SecretProbeOptions {
  /** HTTPS_PROXY / HTTP_PROXY / NO_PROXY; default: read from process.env at each call, as a worker does at start. */
  proxyEnv?: ProxyEnv;
}

/** The probe ops' testStagedSecret takes: the candidate is scrubbed from the body and the messages. */
export function createSecretProbe(options: SecretProbeOptions = {}): SecretProbe {
  return async ({ service, operation, data, secrets, candidate, clock }) => {
    const scrubber = new Scrubber();
    scrubber.add(candidate);
    // The test call takes the worker's route (issue 17): the process's proxy variables, the service's proxy: and tls:.
    const proxyEnv = options.proxyEnv ?? readProxyEnv(process.env);
    observeProxyEnv(proxyEnv, scrubber);
    const pools = new PoolSet({ connections: 1, egress: egressScopeOf(service), proxyEnv, scrubber });
    const tokens = new TokenCache({ observer: scrubber, clock, proxyEnv });
    try {
      const outcome = await runAttempt(
        { id: `secret-test-${randomUUID()}`, name: operation, data },
        { service, breaker: undefined, secrets, scrubber, pools, tokens, clock },
        undefined,
      );
      switch (outcome.kind) {
        case 'completed': {
          const { result } = outcome;
          return {
            outcome: 'completed',
            status: result.status,
            durationMs: outcome.durationMs,
            body: result.body,
            ...(result.bodyTruncated === true ? { bodyTruncated: true } : {}),
          };
        }
        case 'failed':
        case 'held':
          // Held: an open breaker (none here). A 429/503 with Retry-After is `failed`: a job would wait, a test
          // reports it.
          return failed(outcome.error, outcome.durationMs, scrubber);
        case 'interrupted':
          return failed(new NetworkError('the call was interrupted'), outcome.durationMs, scrubber);
        case 'deferred':
          // A secret test is given no tenant leases (tenantConcurrency): never deferred.
          throw new Error('a secret test was deferred');
        default:
          return assertNever(outcome);
      }
    } finally {
      await Promise.all([pools.close(), tokens.close()]);
    }
  };
}

function failed(error: FerryError, durationMs: number, scrubber: Scrubber): SecretTestOutcome {
  return {
    outcome: 'failed',
    error: {
      type: error.type,
      message: scrubber.scrub(error.message),
      ...(error.status === undefined ? {} : { status: error.status }),
    },
    durationMs,
  };
}

function assertNever(value: never): never {
  throw new Error(`unexpected attempt outcome ${JSON.stringify(value)}`);
}
