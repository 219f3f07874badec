/**
 * The checks of the services file that need every service at once (issue 16): the reactions' graph. Pure: it
 * reads a description of the services, their `fallback` and every `enqueue` of an `onFailure` rule or a `then`
 * step, and returns the issues, each at the path of the key at fault. `load.ts` runs it after every service
 * parsed, so `ferry worker` start-up and `ferry config check` refuse the same files.
 *
 * - An enqueue must name a service of the file and an operation that service has.
 * - A fallback must name another service of the file, which has every operation of the service it stands in
 *   for; a chain of fallbacks may be at most MAX_FALLBACK_CHAIN long, and may not loop.
 * - The nodes of the flow graph are operations (service, operation); its edges are the enqueues (from the
 *   operation, or from every operation of a service for a service's rule) and the fallbacks (from each
 *   operation to the same operation of the fallback). A cycle is refused unless one of its enqueues sets
 *   `maxDepth`: the runtime then stops the cycle at that depth (a job's `origin.depth` grows by one at each
 *   edge, fallback moves included).
 */
import { suggest } from './schema.ts';

/** A fallback may fall back in turn; a job may move at most this many times while breakers are open. */
export const MAX_FALLBACK_CHAIN = 3;

export interface FlowService {
  readonly operations: readonly string[];
  /** `fallback.service`, if set. */
  readonly fallback: string | undefined;
  /** Its `sensitive: true` operations (issue 17: sealed input), if any. */
  readonly sensitive?: readonly string[];
}

/** One `enqueue:` of an `onFailure` rule or a `then` step. */
export interface FlowEnqueue {
  readonly kind: 'onFailure' | 'then';
  /** The service it belongs to, and its operation; undefined for a service's rule (every operation's). */
  readonly from: { readonly service: string; readonly operation: string | undefined };
  readonly to: { readonly service: string; readonly operation: string };
  /** `maxDepth` is set: a cycle through this enqueue is bounded. */
  readonly bounded: boolean;
  /** Where the enqueue is: `['services', 'crm', 'operations', 'create', 'then', 'enqueue']`. */
  readonly path: readonly PropertyKey[];
}

export interface FlowGraphInput {
  /** Every service that parsed, in file order. */
  readonly services: ReadonlyMap<string, FlowService>;
  readonly enqueues: readonly FlowEnqueue[];
  /** Services of the file that did not parse (already reported): references to them are not checked. */
  readonly unchecked: ReadonlySet<string>;
}

export interface FlowIssue {
  readonly path: readonly PropertyKey[];
  readonly message: string;
}

interface Edge {
  readonly to: number;
  /** The enqueue, or undefined for a fallback move. */
  readonly enqueue: FlowEnqueue | undefined;
}

export function checkFlowGraph(input: FlowGraphInput): FlowIssue[] {
  return [
    ...checkEnqueueTargets(input),
    ...checkFallbacks(input),
    ...checkCycles(input),
    ...checkSensitiveFlows(input),
  ];
}

/**
 * A sensitive operation's job is sealed; a follow-up or a fallback move made from it into an operation that is
 * not sensitive would be stored in plaintext (its input may render the source's input or result). Refused:
 * every enqueue from a sensitive operation, and its fallback's operation, must be sensitive too.
 */
function checkSensitiveFlows(input: FlowGraphInput): FlowIssue[] {
  const issues: FlowIssue[] = [];
  const isSensitive = (service: string, operation: string): boolean =>
    input.services.get(service)?.sensitive?.includes(operation) === true;
  for (const enqueue of input.enqueues) {
    const { service, operation } = enqueue.from;
    const sources =
      operation === undefined
        ? (input.services.get(service)?.sensitive ?? [])
        : isSensitive(service, operation)
          ? [operation]
          : [];
    const target = enqueue.to;
    if (sources.length === 0 || input.unchecked.has(target.service)) continue;
    if (!input.services.get(target.service)?.operations.includes(target.operation)) continue; // reported
    if (isSensitive(target.service, target.operation)) continue;
    issues.push({
      path: enqueue.path,
      message:
        `${service}.${sources[0]!} is sensitive (sealed input), and ${target.service}.${target.operation} is not: ` +
        `its follow-up would be stored in plaintext; mark ${target.service}.${target.operation} sensitive: true`,
    });
  }
  for (const [name, service] of input.services) {
    const fallback = validFallback(name, input);
    if (fallback === undefined || input.unchecked.has(fallback)) continue;
    const exposed = (service.sensitive ?? []).filter(
      (operation) =>
        input.services.get(fallback)?.operations.includes(operation) === true &&
        !isSensitive(fallback, operation),
    );
    if (exposed.length > 0)
      issues.push({
        path: ['services', name, 'fallback', 'service'],
        message:
          `${name}.${exposed[0]!} is sensitive (sealed input), and ${fallback}.${exposed[0]!} is not: a job moved ` +
          `there would be stored in plaintext; mark it sensitive: true`,
      });
  }
  return issues;
}

function checkEnqueueTargets(input: FlowGraphInput): FlowIssue[] {
  const issues: FlowIssue[] = [];
  for (const enqueue of input.enqueues) {
    const { service, operation } = enqueue.to;
    if (input.unchecked.has(service)) continue;
    const target = input.services.get(service);
    if (target === undefined) {
      issues.push({ path: [...enqueue.path, 'service'], message: unknownService(service, input) });
    } else if (!target.operations.includes(operation)) {
      issues.push({
        path: [...enqueue.path, 'operation'],
        message: `service ${service} has no operation "${operation}" (${didYouMean(operation, target.operations, 'its operations')})`,
      });
    }
  }
  return issues;
}

/** The fallback of `name` when it is valid (another known service), else undefined. */
function validFallback(name: string, input: FlowGraphInput): string | undefined {
  const fallback = input.services.get(name)?.fallback;
  return fallback === undefined || fallback === name || !input.services.has(fallback) ? undefined : fallback;
}

function checkFallbacks(input: FlowGraphInput): FlowIssue[] {
  const issues: FlowIssue[] = [];
  const order = [...input.services.keys()];
  for (const [name, service] of input.services) {
    const fallback = service.fallback;
    if (fallback === undefined || input.unchecked.has(fallback)) continue;
    const path = ['services', name, 'fallback', 'service'];
    const target = input.services.get(fallback);
    if (fallback === name) {
      issues.push({ path, message: 'must name another service (a service cannot fall back to itself)' });
      continue;
    }
    if (target === undefined) {
      issues.push({ path, message: unknownService(fallback, input) });
      continue;
    }
    const missing = service.operations.filter((operation) => !target.operations.includes(operation));
    if (missing.length > 0) {
      issues.push({
        path,
        message:
          `${fallback} has no operation ${missing.map((operation) => `"${operation}"`).join(', ')} ` +
          `(a fallback must have every operation of ${name}: a job moves to the operation of the same name)`,
      });
    }
    // A moved job runs the fallback's operation, and that one's reactions: a `then` the fallback's operation
    // lacks would be skipped silently during every failover (create-then-bill would not bill).
    for (const step of input.enqueues) {
      if (step.kind !== 'then' || step.from.service !== name || step.from.operation === undefined) continue;
      const operation = step.from.operation;
      if (!target.operations.includes(operation)) continue; // reported above
      const covered = input.enqueues.some(
        (other) =>
          other.kind === 'then' && other.from.service === fallback && other.from.operation === operation,
      );
      if (!covered)
        issues.push({
          path: ['services', name, 'operations', operation, 'then'],
          message:
            `a job routed to the fallback ${fallback} runs ${fallback}.${operation}, which has no then: its next ` +
            `step (${step.to.service}.${step.to.operation}) would be skipped while ${name}'s breaker is open; ` +
            `give ${fallback}.${operation} a then too`,
        });
    }
    const chain = [name];
    for (let next = validFallback(name, input); next !== undefined; next = validFallback(next, input)) {
      const seen = chain.indexOf(next);
      if (seen !== -1) {
        const loop = [...chain.slice(seen), next];
        // Reported once, at the cycle's first service in file order.
        const first = loop.reduce((a, b) => (order.indexOf(b) < order.indexOf(a) ? b : a));
        if (seen === 0 && first === name)
          issues.push({ path, message: `fallbacks form a cycle: ${loop.join(' → ')}` });
        break;
      }
      chain.push(next);
      if (chain.length - 1 > MAX_FALLBACK_CHAIN) {
        issues.push({
          path,
          message:
            `the chain of fallbacks ${chain.join(' → ')} is longer than ${MAX_FALLBACK_CHAIN} ` +
            '(a job moves to a fallback, then to its fallback, while their breakers are open)',
        });
        break;
      }
    }
  }
  return issues;
}

/** One issue per strongly connected part of the graph without maxDepth, at an enqueue on one of its cycles. */
function checkCycles(input: FlowGraphInput): FlowIssue[] {
  const nodes: { service: string; operation: string }[] = [];
  const ids = new Map<string, Map<string, number>>();
  for (const [service, { operations }] of input.services) {
    const byOperation = new Map<string, number>();
    for (const operation of operations) {
      byOperation.set(operation, nodes.length);
      nodes.push({ service, operation });
    }
    ids.set(service, byOperation);
  }
  const edges: Edge[][] = nodes.map(() => []);
  for (const enqueue of input.enqueues) {
    if (enqueue.bounded) continue;
    const to = ids.get(enqueue.to.service)?.get(enqueue.to.operation);
    const from = ids.get(enqueue.from.service);
    if (to === undefined || from === undefined) continue;
    const sources =
      enqueue.from.operation === undefined ? [...from.values()] : [from.get(enqueue.from.operation)];
    for (const source of sources) if (source !== undefined) edges[source]?.push({ to, enqueue });
  }
  for (const [service, { operations }] of input.services) {
    const fallback = validFallback(service, input);
    if (fallback === undefined) continue;
    for (const operation of operations) {
      const from = ids.get(service)?.get(operation);
      const to = ids.get(fallback)?.get(operation);
      if (from !== undefined && to !== undefined) edges[from]?.push({ to, enqueue: undefined });
    }
  }

  const issues: FlowIssue[] = [];
  for (const component of stronglyConnected(edges)) {
    const start = Math.min(...component);
    const members = new Set(component);
    const cycle = cycleThrough(start, edges, members);
    if (cycle === undefined) continue; // a single node without a loop
    const report = cycle.find((edge) => edge.enqueue !== undefined)?.enqueue;
    if (report === undefined) continue; // fallbacks only: checkFallbacks reports it
    let text = label(nodes[start]);
    for (const edge of cycle)
      text += ` --${edge.enqueue === undefined ? 'fallback' : edge.enqueue.kind}--> ${label(nodes[edge.to])}`;
    issues.push({
      path: report.path,
      message: `is on a cycle without maxDepth: ${text} (set maxDepth on one of its enqueues to bound it)`,
    });
  }
  return issues;
}

function label(node: { service: string; operation: string } | undefined): string {
  return node === undefined ? '?' : `${node.service}.${node.operation}`;
}

/** Tarjan's algorithm, iterative (no recursion depth to exhaust): the components, in discovery order. */
function stronglyConnected(edges: readonly (readonly Edge[])[]): number[][] {
  const index: number[] = edges.map(() => -1);
  const low: number[] = edges.map(() => 0);
  const onStack: boolean[] = edges.map(() => false);
  const stack: number[] = [];
  const components: number[][] = [];
  let counter = 0;
  for (let root = 0; root < edges.length; root++) {
    if (index[root] !== -1) continue;
    const work: [node: number, next: number][] = [[root, 0]];
    index[root] = low[root] = counter++;
    stack.push(root);
    onStack[root] = true;
    while (work.length > 0) {
      const frame = work[work.length - 1] as [number, number];
      const [node, next] = frame;
      const out = edges[node] as readonly Edge[];
      if (next < out.length) {
        frame[1] = next + 1;
        const to = (out[next] as Edge).to;
        if (index[to] === -1) {
          index[to] = low[to] = counter++;
          stack.push(to);
          onStack[to] = true;
          work.push([to, 0]);
        } else if (onStack[to] === true) {
          low[node] = Math.min(low[node] as number, index[to] as number);
        }
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent !== undefined) low[parent[0]] = Math.min(low[parent[0]] as number, low[node] as number);
      if (low[node] === index[node]) {
        const component: number[] = [];
        let member: number;
        do {
          member = stack.pop() as number;
          onStack[member] = false;
          component.push(member);
        } while (member !== node);
        components.push(component);
      }
    }
  }
  return components;
}

/** The shortest cycle from `start` back to it inside `members` (breadth-first), as its edges; or undefined. */
function cycleThrough(
  start: number,
  edges: readonly (readonly Edge[])[],
  members: ReadonlySet<number>,
): Edge[] | undefined {
  const via = new Map<number, { from: number; edge: Edge }>();
  const queue = [start];
  for (let head = 0; head < queue.length; head++) {
    const node = queue[head] as number;
    for (const edge of edges[node] ?? []) {
      if (!members.has(edge.to)) continue;
      if (edge.to === start) {
        const cycle = [edge];
        for (let at = node; at !== start;) {
          const step = via.get(at) as { from: number; edge: Edge };
          cycle.unshift(step.edge);
          at = step.from;
        }
        return cycle;
      }
      if (via.has(edge.to)) continue;
      via.set(edge.to, { from: node, edge });
      queue.push(edge.to);
    }
  }
  return undefined;
}

function unknownService(name: string, input: FlowGraphInput): string {
  return `unknown service "${name}" (${didYouMean(name, [...input.services.keys(), ...input.unchecked], 'services')})`;
}

function didYouMean(name: string, known: readonly string[], what: string): string {
  const suggestion = suggest(name, known);
  return suggestion === undefined ? `${what}: ${known.join(', ')}` : `did you mean ${suggestion}?`;
}
