/**
 * The services file's flow graph (issue 16): enqueue targets, fallbacks and cycles of onFailure, then and
 * fallback edges, as one table over the pure check (src/core/services/flow-graph.ts).
 */
import { describe, expect, it } from 'vitest';

import {
  checkFlowGraph,
  type FlowEnqueue,
  type FlowGraphInput,
  MAX_FALLBACK_CHAIN,
} from '../../src/core/services/flow-graph.ts';
import { formatPath } from '../../src/core/services/load.ts';

/** `a.x -then-> b.y`, `a.x -onFailure-> b.y`, `a.* -onFailure-> b.y` (a service rule), `~` suffix: maxDepth set. */
function edge(spec: string, index = 0): FlowEnqueue {
  const match = /^([a-z0-9-]+)\.([A-Za-z*]+) -(then|onFailure)-> ([a-z0-9-]+)\.([A-Za-z]+)(~?)$/.exec(spec);
  if (match === null) throw new Error(`bad edge spec ${spec}`);
  const [, service, operation, kind, toService, toOperation, bounded] = match as unknown as string[];
  const from = {
    service: service as string,
    operation: operation === '*' ? undefined : (operation as string),
  };
  const path: PropertyKey[] =
    from.operation === undefined
      ? ['services', from.service, 'onFailure', index, 'enqueue']
      : kind === 'then'
        ? ['services', from.service, 'operations', from.operation, 'then', 'enqueue']
        : ['services', from.service, 'operations', from.operation, 'onFailure', index, 'enqueue'];
  return {
    kind: kind as 'then' | 'onFailure',
    from,
    to: { service: toService as string, operation: toOperation as string },
    bounded: bounded === '~',
    path,
  };
}

/** `services`: name → operations (and `>fallback`), e.g. `{ a: 'x y >b' }`. */
function graph(
  services: Record<string, string>,
  enqueues: readonly string[] = [],
  unchecked: readonly string[] = [],
): FlowGraphInput {
  return {
    services: new Map(
      Object.entries(services).map(([name, spec]) => {
        const words = spec.split(' ').filter((word) => word !== '');
        return [
          name,
          {
            operations: words.filter((word) => !word.startsWith('>')),
            fallback: words.find((word) => word.startsWith('>'))?.slice(1),
          },
        ];
      }),
    ),
    enqueues: enqueues.map((spec, index) => edge(spec, index)),
    unchecked: new Set(unchecked),
  };
}

function check(input: FlowGraphInput): string[] {
  return checkFlowGraph(input).map((issue) => `${formatPath(issue.path)}: ${issue.message}`);
}

const BOUND = '(set maxDepth on one of its enqueues to bound it)';

describe('checkFlowGraph', () => {
  it.each<[string, FlowGraphInput, string[]]>([
    ['no reactions', graph({ a: 'x', b: 'y' }), []],
    ['a chain a → b → c', graph({ a: 'x', b: 'y', c: 'z' }, ['a.x -then-> b.y', 'b.y -then-> c.z']), []],
    [
      'an unknown service, with a suggestion',
      graph({ billing: 'x', crm: 'y' }, ['crm.y -then-> biling.x']),
      ['services.crm.operations.y.then.enqueue.service: unknown service "biling" (did you mean billing?)'],
    ],
    [
      'an unknown service, listing the services',
      graph({ billing: 'x', crm: 'y' }, ['crm.y -onFailure-> zzzzzz.x']),
      [
        'services.crm.operations.y.onFailure[0].enqueue.service: unknown service "zzzzzz" (services: billing, crm)',
      ],
    ],
    [
      'an unknown operation, with a suggestion',
      graph({ billing: 'createCustomer', crm: 'y' }, ['crm.y -then-> billing.createCustomr']),
      [
        'services.crm.operations.y.then.enqueue.operation: service billing has no operation "createCustomr" ' +
          '(did you mean createCustomer?)',
      ],
    ],
    [
      "a service rule's unknown operation, reported once at the service",
      graph({ ops: 'alert', crm: 'a b c' }, ['crm.* -onFailure-> ops.page']),
      [
        'services.crm.onFailure[0].enqueue.operation: service ops has no operation "page" (its operations: alert)',
      ],
    ],
    [
      'a reference to a service that did not parse is not checked',
      graph({ crm: 'y' }, ['crm.y -then-> broken.x'], ['broken']),
      [],
    ],
    [
      'a self-loop without maxDepth',
      graph({ crm: 'sync' }, ['crm.sync -onFailure-> crm.sync']),
      [
        'services.crm.operations.sync.onFailure[0].enqueue: is on a cycle without maxDepth: ' +
          `crm.sync --onFailure--> crm.sync ${BOUND}`,
      ],
    ],
    ['a self-loop with maxDepth', graph({ crm: 'sync' }, ['crm.sync -onFailure-> crm.sync~']), []],
    [
      'a then/onFailure cycle across services',
      graph({ crm: 'create', billing: 'charge' }, [
        'crm.create -then-> billing.charge',
        'billing.charge -onFailure-> crm.create',
      ]),
      [
        'services.crm.operations.create.then.enqueue: is on a cycle without maxDepth: ' +
          `crm.create --then--> billing.charge --onFailure--> crm.create ${BOUND}`,
      ],
    ],
    [
      'the same cycle bounded on its second edge',
      graph({ crm: 'create', billing: 'charge' }, [
        'crm.create -then-> billing.charge',
        'billing.charge -onFailure-> crm.create~',
      ]),
      [],
    ],
    [
      'a bounded edge does not bound a parallel unbounded one',
      graph({ crm: 'create', billing: 'charge' }, [
        'crm.create -then-> billing.charge~',
        'crm.create -onFailure-> billing.charge',
        'billing.charge -then-> crm.create',
      ]),
      [
        'services.crm.operations.create.onFailure[1].enqueue: is on a cycle without maxDepth: ' +
          `crm.create --onFailure--> billing.charge --then--> crm.create ${BOUND}`,
      ],
    ],
    [
      'a service rule closes a cycle from every operation it covers, reported once per cycle',
      graph({ crm: 'a b', ops: 'alert' }, ['crm.* -onFailure-> crm.a', 'ops.alert -then-> ops.alert']),
      [
        `services.crm.onFailure[0].enqueue: is on a cycle without maxDepth: crm.a --onFailure--> crm.a ${BOUND}`,
        `services.ops.operations.alert.then.enqueue: is on a cycle without maxDepth: ops.alert --then--> ops.alert ${BOUND}`,
      ],
    ],
    [
      'a cycle through a fallback move',
      graph({ p: 'send >b', b: 'send' }, ['b.send -onFailure-> p.send']),
      [
        'services.b.operations.send.onFailure[0].enqueue: is on a cycle without maxDepth: ' +
          `p.send --fallback--> b.send --onFailure--> p.send ${BOUND}`,
      ],
    ],
    [
      'a three-step cycle is reported once, with every step',
      graph({ a: 'x', b: 'y', c: 'z' }, ['a.x -then-> b.y', 'b.y -then-> c.z', 'c.z -then-> a.x']),
      [
        'services.a.operations.x.then.enqueue: is on a cycle without maxDepth: ' +
          `a.x --then--> b.y --then--> c.z --then--> a.x ${BOUND}`,
      ],
    ],
    ['a fallback', graph({ p: 'send status >b', b: 'send status extra' }), []],
    [
      'a fallback to an unknown service',
      graph({ p: 'send >bakup', backup: 'send' }),
      ['services.p.fallback.service: unknown service "bakup" (did you mean backup?)'],
    ],
    [
      'a fallback to itself',
      graph({ p: 'send >p' }),
      ['services.p.fallback.service: must name another service (a service cannot fall back to itself)'],
    ],
    [
      'a fallback without every operation',
      graph({ p: 'send status refund >b', b: 'send' }),
      [
        'services.p.fallback.service: b has no operation "status", "refund" (a fallback must have every ' +
          'operation of p: a job moves to the operation of the same name)',
      ],
    ],
    [
      'a fallback cycle, reported once (not also as a flow cycle)',
      graph({ a: 'x >b', b: 'x >a' }),
      ['services.a.fallback.service: fallbacks form a cycle: a → b → a'],
    ],
    [
      'a service falling back into a cycle: the cycle is reported at its first member only',
      graph({ z: 'x >a', a: 'x >b', b: 'x >c', c: 'x >a' }),
      ['services.a.fallback.service: fallbacks form a cycle: a → b → c → a'],
    ],
    [`a chain of ${MAX_FALLBACK_CHAIN} fallbacks`, graph({ a: 'x >b', b: 'x >c', c: 'x >d', d: 'x' }), []],
    [
      `a chain of ${MAX_FALLBACK_CHAIN + 1} fallbacks`,
      graph({ a: 'x >b', b: 'x >c', c: 'x >d', d: 'x >e', e: 'x' }),
      [
        'services.a.fallback.service: the chain of fallbacks a → b → c → d → e is longer than 3 (a job moves to ' +
          'a fallback, then to its fallback, while their breakers are open)',
      ],
    ],
    ['a fallback to a service that did not parse is not checked', graph({ a: 'x >b' }, [], ['b']), []],
  ])('%s', (_name, input, expected) => {
    expect(check(input)).toEqual(expected);
  });

  it('a long chain of then steps is no cycle, and does not exhaust the stack', () => {
    const size = 20_000;
    const services: Record<string, string> = {};
    const enqueues: string[] = [];
    for (let i = 0; i < size; i++) {
      services[`s${i}`] = 'op';
      if (i > 0) enqueues.push(`s${i - 1}.op -then-> s${i}.op`);
    }
    expect(check(graph(services, enqueues))).toEqual([]);
    enqueues.push(`s${size - 1}.op -then-> s0.op`);
    const issues = check(graph(services, enqueues));
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(
      /^services\.s0\.operations\.op\.then\.enqueue: is on a cycle without maxDepth: s0\.op --then--> s1\.op/,
    );
  });
});
