/**
 * The reactions of the services file (issue 16): `onFailure` rules, `then` and `fallback` parse and compile, the
 * template roots each place may read, and every refusal with its exact path.
 */
import { describe, expect, it } from 'vitest';

import { matchFailureRule } from '../../src/core/delivery-policy.ts';
import { parseServicesConfig, parseServicesYaml } from '../../src/core/services/load.ts';
import { compileTemplate, TemplateCompileError } from '../../src/core/services/templates.ts';
import type { ServiceConfig, TemplateContext } from '../../src/core/services/types.ts';
import { servicesFileIssues } from '../helpers/services-issues.ts';

const issuesOf = servicesFileIssues;

function context(extra: Partial<TemplateContext> = {}): TemplateContext {
  return {
    input: { email: 'a@b.c', id: 'c-1' },
    secrets: new Map([['crm_key', 'not-for-redis']]),
    tenant: 'acme',
    job: { id: 'j1', idempotencyKey: 'k1' },
    ...extra,
  };
}

/** crm (createContact, getContact) and ops (rotateAlert), `extra` merged into crm and its createContact. */
function doc(
  service: Record<string, unknown> = {},
  operation: Record<string, unknown> = {},
  more: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    services: {
      crm: {
        baseUrl: 'https://api.crm.example.com',
        operations: {
          createContact: { method: 'POST', path: '/contacts', body: '{{ input }}', ...operation },
          getContact: { method: 'GET', path: '/contacts/{{ input.id }}' },
        },
        ...service,
      },
      ops: {
        baseUrl: 'https://ops.example.com',
        operations: { rotateAlert: { method: 'POST', path: '/alerts', body: '{{ input }}' } },
      },
      ...more,
    },
  };
}

const ALERT = { service: 'ops', operation: 'rotateAlert' };
const OPS = {
  baseUrl: 'https://ops.example.com',
  operations: { rotateAlert: { method: 'POST', path: '/alerts', body: '{{ input }}' } },
};

const YAML = `
defaults:
  onFailure:
    - enqueue: { service: ops, operation: rotateAlert, input: { from: defaults } }
services:
  crm:
    baseUrl: https://api.crm.example.com
    fallback: { service: crm-backup }
    onFailure:
      - when: { status: [500, 502, 502] }
        enqueue: { service: ops, operation: rotateAlert, input: '{{ deadLetter.id }}' }
    operations:
      createContact:
        method: POST
        path: /contacts
        body: '{{ input }}'
        onFailure:
          - when: { errorType: [AuthenticationError] }
            enqueue:
              service: ops
              operation: rotateAlert
              input: { job: '{{ job.id }}', error: '{{ error.message }}', status: '{{ error.status }}' }
          - enqueue: { service: crm-backup, operation: createContact, input: '{{ input }}' }
        then:
          enqueue:
            service: ops
            operation: rotateAlert
            maxDepth: 4
            input:
              contactId: '{{ result.body.id }}'
              first: '{{ result.body.tags.0 }}'
              where: '{{ result.headers.Location }}'
              status: '{{ result.status }}'
              email: '{{ input.email }}'
              tenant: '{{ tenant }}'
              key: '{{ job.idempotencyKey }}'
      getContact: { method: GET, path: '/contacts/{{ input.id }}' }
  crm-backup:
    baseUrl: https://backup.example.com
    onFailure: []
    operations:
      createContact:
        method: POST
        path: /contacts
        body: '{{ input }}'
        then: { enqueue: { service: ops, operation: rotateAlert, maxDepth: 4, input: '{{ result.body }}' } }
      getContact: { method: GET, path: '/contacts/{{ input.id }}' }
  ops:
    baseUrl: https://ops.example.com
    onFailure: null
    operations:
      rotateAlert: { method: POST, path: /alerts, body: '{{ input }}' }
`;

describe('onFailure, then and fallback compile', () => {
  const config = parseServicesYaml(YAML);
  const crm = config.services.get('crm') as ServiceConfig;
  const create = crm.operations.get('createContact');

  it("puts the operation's rules first, then the service's, in file order", () => {
    expect(
      create?.onFailure.map((rule) => [rule.when, rule.enqueue.service, rule.enqueue.operation]),
    ).toEqual([
      [{ errorTypes: ['AuthenticationError'], statuses: undefined }, 'ops', 'rotateAlert'],
      [undefined, 'crm-backup', 'createContact'],
      [{ errorTypes: undefined, statuses: [500, 502] }, 'ops', 'rotateAlert'],
    ]);
    // An operation without rules of its own gets the service's.
    expect(crm.operations.get('getContact')?.onFailure).toHaveLength(1);
    expect(matchFailureRule(create?.onFailure ?? [], { type: 'AuthenticationError', status: 401 })).toBe(0);
    expect(matchFailureRule(create?.onFailure ?? [], { type: 'ServerError', status: 500 })).toBe(1);
  });

  it('inherits service rules from defaults; [] and null drop them', () => {
    expect(config.services.get('crm-backup')?.operations.get('createContact')?.onFailure).toEqual([]);
    expect(config.services.get('ops')?.operations.get('rotateAlert')?.onFailure).toEqual([]);
    // crm sets its own list, which replaces the default one (lists are not merged).
    expect(crm.operations.get('getContact')?.onFailure[0]?.enqueue.input?.source).toBe('{{ deadLetter.id }}');
    const inherited = parseServicesConfig({
      defaults: { onFailure: [{ when: { errorType: 'ClientError' }, enqueue: ALERT }] },
      ...doc({}, { onFailure: [{ enqueue: ALERT }] }, { ops: { ...OPS, onFailure: [] } }),
    });
    expect(
      inherited.services
        .get('crm')
        ?.operations.get('createContact')
        ?.onFailure.map((rule) => rule.when),
    ).toEqual([undefined, { errorTypes: ['ClientError'], statuses: undefined }]);
  });

  it('renders an onFailure input with error.*, deadLetter.id, job and input (mode value)', () => {
    const rendered = create?.onFailure[0]?.enqueue.input?.render(
      context({ error: { type: 'AuthenticationError', status: 401, message: 'downstream answered 401' } }),
    );
    expect(rendered).toEqual({ job: 'j1', error: 'downstream answered 401', status: 401 });
    expect(create?.onFailure[1]?.enqueue.input?.render(context())).toEqual({ email: 'a@b.c', id: 'c-1' });
    expect(create?.onFailure[2]?.enqueue.input?.render(context({ deadLetter: { id: 'dl-9' } }))).toBe('dl-9');
  });

  it('renders a then input with result.status, result.body paths and allow-listed headers', () => {
    expect(create?.then?.service).toBe('ops');
    expect(create?.then?.maxDepth).toBe(4);
    const result = { status: 201, headers: { location: '/contacts/7' }, body: { id: 7, tags: ['vip'] } };
    expect(create?.then?.input?.render(context({ result }))).toEqual({
      contactId: 7,
      first: 'vip',
      where: '/contacts/7',
      status: 201,
      email: 'a@b.c',
      tenant: 'acme',
      key: 'k1',
    });
    expect(crm.operations.get('getContact')?.then).toBeUndefined();
  });

  it('keeps fallback, and leaves a service without one undefined', () => {
    expect(crm.fallback).toBe('crm-backup');
    expect(config.services.get('ops')?.fallback).toBeUndefined();
  });

  it('enqueue inputs add no secret names to the service', () => {
    expect(crm.secretNames).toEqual([]);
  });

  it('an enqueue without input has none, and without maxDepth has none', () => {
    const config2 = parseServicesConfig(doc({}, { then: { enqueue: ALERT } }));
    const then = config2.services.get('crm')?.operations.get('createContact')?.then;
    expect(then).toEqual({ service: 'ops', operation: 'rotateAlert', input: undefined });
  });
});

describe('refusals name the exact path', () => {
  const at = 'services.crm.operations.createContact';

  it.each([
    [
      'an unknown error type, with a suggestion',
      { onFailure: [{ when: { errorType: 'AuthenticationErorr' }, enqueue: ALERT }] },
      [
        `${at}.onFailure[0].when.errorType: unknown error type "AuthenticationErorr" (did you mean AuthenticationError?)`,
      ],
    ],
    [
      'an unknown error type in a list',
      { onFailure: [{ when: { errorType: ['ServerError', 'Nope'] }, enqueue: ALERT }] },
      [
        `${at}.onFailure[0].when.errorType[1]: unknown error type "Nope" (expected one of TimeoutError, ` +
          'NetworkError, ServerError, RateLimitedError, AuthenticationError, ClientError, CircuitOpenError, ' +
          'ResponseTooLargeError, ValidationError, ConfigurationError, EgressDeniedError, TlsError)',
      ],
    ],
    [
      'a status out of range',
      { onFailure: [{ when: { status: [404, 199, 600, 'x'] }, enqueue: ALERT }] },
      [1, 2, 3].map(
        (i) => `${at}.onFailure[0].when.status[${i}]: must be an HTTP status code between 200 and 599`,
      ),
    ],
    [
      'an empty list',
      { onFailure: [{ when: { errorType: [] }, enqueue: ALERT }] },
      [`${at}.onFailure[0].when.errorType: must not be an empty list (leave it out to match any)`],
    ],
    [
      'an empty when',
      { onFailure: [{ when: {}, enqueue: ALERT }] },
      [`${at}.onFailure[0].when: must name errorType, status or both (leave when out to match any error)`],
    ],
    [
      'an unknown key in when, with a suggestion',
      { onFailure: [{ when: { errorTypes: 'ServerError' }, enqueue: ALERT }] },
      [`${at}.onFailure[0].when.errorTypes: unknown option (did you mean errorType?)`],
    ],
    [
      'a rule without enqueue',
      { onFailure: [{ when: { status: 500 } }] },
      [`${at}.onFailure[0].enqueue: required`],
    ],
    [
      'onFailure that is not a list',
      { onFailure: { enqueue: ALERT } },
      [`${at}.onFailure: must be a list of rules ({ when?, enqueue })`],
    ],
    [
      'an enqueue without service, an unknown key and a bad maxDepth',
      { then: { enqueue: { operation: 'x', servce: 'ops', maxDepth: 0 } } },
      [
        `${at}.then.enqueue.servce: unknown option (did you mean service?)`,
        `${at}.then.enqueue.service: required (a service name)`,
        `${at}.then.enqueue.maxDepth: must be an integer >= 1`,
      ],
    ],
    [
      'then without enqueue',
      { then: { service: 'ops', operation: 'rotateAlert' } },
      [
        `${at}.then.service: unknown option (expected one of enqueue)`,
        `${at}.then.operation: unknown option (expected one of enqueue)`,
        `${at}.then.enqueue: required`,
      ],
    ],
  ])('%s', (_name, operation, expected) => {
    expect(issuesOf(() => parseServicesConfig(doc({}, operation))).sort()).toEqual([...expected].sort());
  });

  it('names the key other tools use for it', () => {
    expect(
      issuesOf(() =>
        parseServicesConfig(doc({ failover: { service: 'ops' }, onError: [] }, { next: {}, onError: [] })),
      ).sort(),
    ).toEqual([
      'services.crm.failover: unknown option (did you mean fallback?)',
      'services.crm.onError: unknown option (did you mean onFailure?)',
      `${at}.next: unknown option (did you mean then?)`,
      `${at}.onError: unknown option (did you mean onFailure?)`,
    ]);
  });

  it('fallback: a mapping with a service', () => {
    expect(issuesOf(() => parseServicesConfig(doc({ fallback: 'ops' })))).toEqual([
      'services.crm.fallback: must be a mapping',
    ]);
    expect(issuesOf(() => parseServicesConfig(doc({ fallback: { servic: 'ops' } }))).sort()).toEqual([
      'services.crm.fallback.servic: unknown option (did you mean service?)',
      'services.crm.fallback.service: required (a service name)',
    ]);
  });

  it('a service rule is refused at the service path, a defaults rule once under defaults', () => {
    expect(
      issuesOf(() => parseServicesConfig(doc({ onFailure: [{ when: { status: 99 }, enqueue: ALERT }] }))),
    ).toEqual(['services.crm.onFailure[0].when.status: must be an HTTP status code between 200 and 599']);
    const withDefaults = {
      defaults: { onFailure: [{ when: { errorType: 'Bogus' }, enqueue: ALERT }] },
      ...doc(),
    };
    expect(issuesOf(() => parseServicesConfig(withDefaults))).toEqual([
      'defaults.onFailure[0].when.errorType: unknown error type "Bogus" (expected one of TimeoutError, ' +
        'NetworkError, ServerError, RateLimitedError, AuthenticationError, ClientError, CircuitOpenError, ' +
        'ResponseTooLargeError, ValidationError, ConfigurationError, EgressDeniedError, TlsError)',
    ]);
  });
});

describe('template roots per place', () => {
  const at = 'services.crm.operations.createContact';
  const onFailureInput = (input: unknown) => ({ onFailure: [{ enqueue: { ...ALERT, input } }] });
  const thenInput = (input: unknown) => ({ then: { enqueue: { ...ALERT, input } } });
  const ONLY_ON_FAILURE = "which only an onFailure rule's enqueue input may read";
  const ONLY_THEN = "which only a then step's enqueue input may read";

  it.each([
    ['error.type', 'body', ONLY_ON_FAILURE],
    ['error.status', 'path', ONLY_ON_FAILURE],
    ['error.message', 'headers.X-Error', ONLY_ON_FAILURE],
    ['deadLetter.id', 'query.dl', ONLY_ON_FAILURE],
    ['result.status', 'body', ONLY_THEN],
    ['result.body.id', 'path', ONLY_THEN],
    ['result.headers.location', 'headers.X-Loc', ONLY_THEN],
  ])('{{ %s }} in an operation %s is refused', (root, place, message) => {
    const template = place === 'path' ? `/x/{{ ${root} }}` : `{{ ${root} }}`;
    const [key, sub] = place.split('.') as [string, string | undefined];
    const operation = sub === undefined ? { [key]: template } : { [key]: { [sub]: template } };
    expect(issuesOf(() => parseServicesConfig(doc({}, operation)))).toEqual([
      `${at}.${place}: ${JSON.stringify(template)} reads ${root}, ${message}`,
    ]);
  });

  it.each([
    ['onFailure', '{{ result.body.id }}', 'result.body.id', ONLY_THEN],
    ['onFailure', '{{ result.status }}', 'result.status', ONLY_THEN],
    ['then', '{{ error.type }}', 'error.type', ONLY_ON_FAILURE],
    ['then', '{{ deadLetter.id }}', 'deadLetter.id', ONLY_ON_FAILURE],
  ])("a %s input refuses the other reaction's root %s", (place, template, root, message) => {
    const operation = place === 'then' ? thenInput({ v: template }) : onFailureInput({ v: template });
    const where = place === 'then' ? 'then.enqueue' : 'onFailure[0].enqueue';
    expect(issuesOf(() => parseServicesConfig(doc({}, operation)))).toEqual([
      `${at}.${where}.input.v: ${JSON.stringify(template)} reads ${root}, ${message}`,
    ]);
  });

  it('refuses error.* in a service header and in baseUrl', () => {
    expect(issuesOf(() => parseServicesConfig(doc({ headers: { 'X-E': '{{ error.type }}' } })))).toEqual([
      `services.crm.headers.X-E: "{{ error.type }}" reads error.type, ${ONLY_ON_FAILURE}`,
    ]);
    expect(
      issuesOf(() => parseServicesConfig(doc({ baseUrl: 'https://{{ result.headers.location }}/v1' }))),
    ).toEqual([
      `services.crm.baseUrl: "https://{{ result.headers.location }}/v1" reads result.headers.location, ${ONLY_THEN}`,
    ]);
  });

  it('refuses secrets in any enqueue input, saying why', () => {
    const why =
      "which is not allowed in an enqueue input (the follow-up job's input is stored in Redis and shown by GET " +
      "and the dead-letter queue; read the secret in the follow-up operation's own templates instead)";
    expect(
      issuesOf(() => parseServicesConfig(doc({}, onFailureInput({ k: 'Bearer {{ secrets.crm_key }}' })))),
    ).toEqual([`${at}.onFailure[0].enqueue.input.k: "Bearer {{ secrets.crm_key }}" reads a secret, ${why}`]);
    expect(issuesOf(() => parseServicesConfig(doc({}, thenInput('{{ secrets.crm_key }}'))))).toEqual([
      `${at}.then.enqueue.input: "{{ secrets.crm_key }}" reads a secret, ${why}`,
    ]);
  });

  it.each([
    [
      'onFailure',
      '{{ error.code }}',
      'unknown error field in "{{ error.code }}" (expected error.type, error.status or error.message)',
    ],
    [
      'onFailure',
      '{{ error }}',
      'unknown error field in "{{ error }}" (expected error.type, error.status or error.message)',
    ],
    [
      'onFailure',
      '{{ deadLetter.at }}',
      'unknown deadLetter field in "{{ deadLetter.at }}" (expected deadLetter.id)',
    ],
    [
      'then',
      '{{ result.code }}',
      'unknown result field in "{{ result.code }}" (expected result.status, result.body(.field)* or ' +
        'result.headers.<name>)',
    ],
    [
      'then',
      '{{ result.headers }}',
      'unknown result field in "{{ result.headers }}" (expected result.status, result.body(.field)* or ' +
        'result.headers.<name>)',
    ],
    [
      'then',
      '{{ result.body.a-b }}',
      'invalid field "a-b" in "{{ result.body.a-b }}" (expected an identifier or an integer)',
    ],
    [
      'then',
      '{{ result.headers.set-cookie }}',
      '"{{ result.headers.set-cookie }}": a result keeps only the headers content-type, content-length, ' +
        'location, etag, last-modified, retry-after, x-request-id, request-id, x-correlation-id, ' +
        'x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, ratelimit-limit, ratelimit-remaining, ' +
        'ratelimit-reset (not "set-cookie")',
    ],
  ])('a %s input refuses %s', (place, template, message) => {
    const operation = place === 'then' ? thenInput([template]) : onFailureInput([template]);
    const where = place === 'then' ? 'then.enqueue' : 'onFailure[0].enqueue';
    expect(issuesOf(() => parseServicesConfig(doc({}, operation)))).toEqual([
      `${at}.${where}.input[0]: ${message}`,
    ]);
  });

  it('the unsupported-placeholder message lists the roots of the place', () => {
    expect(issuesOf(() => parseServicesConfig(doc({}, thenInput('{{ result.status + 1 }}'))))).toEqual([
      `${at}.then.enqueue.input: unsupported placeholder "{{ result.status + 1 }}": only input(.field)*, tenant, ` +
        'job.id, job.idempotencyKey, result.status, result.body(.field)* and result.headers.<name> (no ' +
        'expressions, filters or calls)',
    ]);
  });

  it('compileTemplate: error.* renders only with the onFailure reaction, undefined when absent', () => {
    const template = compileTemplate('{{ error.status }}', 'value', 'w', {
      input: true,
      reaction: 'onFailure',
    });
    expect(template.render(context({ error: { type: 'ServerError', status: 503, message: 'm' } }))).toBe(503);
    expect(template.render(context())).toBeUndefined();
    expect(() => compileTemplate('{{ error.status }}', 'value', 'w', { input: true })).toThrow(
      TemplateCompileError,
    );
    const header = compileTemplate('{{ result.headers.ETag }}', 'value', 'w', {
      input: true,
      reaction: 'then',
    });
    expect(header.render(context({ result: { status: 200, headers: { etag: '"v1"' }, body: null } }))).toBe(
      '"v1"',
    );
    expect(header.render(context({ result: { status: 200, headers: {}, body: null } }))).toBeUndefined();
  });
});

describe('graph checks at load (flow-graph.ts)', () => {
  it('refuses an unknown target, naming the path of the enqueue key', () => {
    expect(
      issuesOf(() =>
        parseServicesConfig(doc({}, { then: { enqueue: { service: 'ops', operation: 'rotate' } } })),
      ),
    ).toEqual([
      'services.crm.operations.createContact.then.enqueue.operation: service ops has no operation "rotate" ' +
        '(its operations: rotateAlert)',
    ]);
  });

  it('checks a rule inherited from defaults at each service that inherits it', () => {
    const withDefaults = {
      defaults: { onFailure: [{ enqueue: { service: 'pager', operation: 'page' } }] },
      ...doc(),
    };
    expect(issuesOf(() => parseServicesConfig(withDefaults))).toEqual([
      'services.crm.onFailure[0].enqueue.service: unknown service "pager" (services: crm, ops)',
      'services.ops.onFailure[0].enqueue.service: unknown service "pager" (services: crm, ops)',
    ]);
  });

  it('refuses a self-loop, and loads it with maxDepth', () => {
    const loop = (maxDepth?: number) =>
      doc(
        {},
        {},
        {
          ops: {
            baseUrl: 'https://ops.example.com',
            operations: {
              rotateAlert: {
                method: 'POST',
                path: '/alerts',
                onFailure: [
                  {
                    enqueue: {
                      ...ALERT,
                      input: '{{ input }}',
                      ...(maxDepth === undefined ? {} : { maxDepth }),
                    },
                  },
                ],
              },
            },
          },
        },
      );
    expect(issuesOf(() => parseServicesConfig(loop()))).toEqual([
      'services.ops.operations.rotateAlert.onFailure[0].enqueue: is on a cycle without maxDepth: ' +
        'ops.rotateAlert --onFailure--> ops.rotateAlert (set maxDepth on one of its enqueues to bound it)',
    ]);
    const config = parseServicesConfig(loop(5));
    expect(config.services.get('ops')?.operations.get('rotateAlert')?.onFailure[0]?.enqueue.maxDepth).toBe(5);
  });

  it('refuses a fallback without the operations, or to itself; a fallback in defaults reaches every service', () => {
    expect(issuesOf(() => parseServicesConfig(doc({ fallback: { service: 'ops' } })))).toEqual([
      'services.crm.fallback.service: ops has no operation "createContact", "getContact" (a fallback must have ' +
        'every operation of crm: a job moves to the operation of the same name)',
    ]);
    expect(
      issuesOf(() => parseServicesConfig({ defaults: { fallback: { service: 'crm' } }, ...doc() })),
    ).toEqual([
      'services.crm.fallback.service: must name another service (a service cannot fall back to itself)',
      'services.ops.fallback.service: crm has no operation "rotateAlert" (a fallback must have every operation ' +
        'of ops: a job moves to the operation of the same name)',
    ]);
  });

  it("refuses a then the fallback's operation lacks: a routed job would skip the next step", () => {
    const backup = (then?: unknown) => ({
      'crm-backup': {
        baseUrl: 'https://backup.example.com',
        operations: {
          createContact: {
            method: 'POST',
            path: '/c',
            body: '{{ input }}',
            ...(then === undefined ? {} : { then }),
          },
          getContact: { method: 'GET', path: '/c/{{ input.id }}' },
        },
      },
    });
    const then = { enqueue: ALERT };
    expect(
      issuesOf(() => parseServicesConfig(doc({ fallback: { service: 'crm-backup' } }, { then }, backup()))),
    ).toEqual([
      'services.crm.operations.createContact.then: a job routed to the fallback crm-backup runs ' +
        'crm-backup.createContact, which has no then: its next step (ops.rotateAlert) would be skipped while ' +
        "crm's breaker is open; give crm-backup.createContact a then too",
    ]);
    const config = parseServicesConfig(doc({ fallback: { service: 'crm-backup' } }, { then }, backup(then)));
    expect(config.services.get('crm-backup')?.operations.get('createContact')?.then?.service).toBe('ops');
  });

  it('does not check references to a service that did not parse', () => {
    const broken = doc({ fallback: { service: 'ops' } }, {}, { ops: { baseUrl: 'ftp://x', operations: {} } });
    expect(issuesOf(() => parseServicesConfig(broken)).sort()).toEqual([
      'services.ops.baseUrl: must be an http(s) URL',
      'services.ops.operations: must define at least one operation',
    ]);
  });
});
