/**
 * Compiles the reactions of the services file (issue 16, docs/services-file.md § Reactions): `onFailure` rules,
 * a `then` step and the enqueue each names. The schema (schema.ts) already checked their shape and templates;
 * whether the services and operations they name exist, and whether they form an unbounded cycle, is checked on
 * the whole file by flow-graph.ts.
 */
import type { FlowEnqueue, FlowGraphInput, FlowService } from './flow-graph.ts';
import type { EnqueueDocument, FailureRuleDocument, ServiceDocument } from './schema.ts';
import type { CompiledEnqueue, CompiledTemplate, FailureRule } from './types.ts';

/** Compiles an enqueue's input template (mode `value`, no secrets, the reaction's roots) at `path`. */
export type CompileEnqueueInput = (
  value: unknown,
  path: PropertyKey[],
  reaction: 'onFailure' | 'then',
) => CompiledTemplate;

export function compileEnqueue(
  doc: EnqueueDocument,
  reaction: 'onFailure' | 'then',
  path: PropertyKey[],
  compile: CompileEnqueueInput,
): CompiledEnqueue {
  return {
    service: doc.service,
    operation: doc.operation,
    input: doc.input === undefined ? undefined : compile(doc.input, [...path, 'input'], reaction),
    ...(doc.maxDepth === undefined ? {} : { maxDepth: doc.maxDepth }),
  };
}

/** `onFailure:` at `path` (an operation's or a service's), in file order; lists lose their duplicates. */
export function compileFailureRules(
  rules: readonly FailureRuleDocument[] | undefined,
  path: PropertyKey[],
  compile: CompileEnqueueInput,
): FailureRule[] {
  return (rules ?? []).map((rule, index) => ({
    when:
      rule.when === undefined
        ? undefined
        : {
            errorTypes: rule.when.errorType === undefined ? undefined : [...new Set(rule.when.errorType)],
            statuses: rule.when.status === undefined ? undefined : [...new Set(rule.when.status)],
          },
    enqueue: compileEnqueue(rule.enqueue, 'onFailure', [...path, index, 'enqueue'], compile),
  }));
}

/** The flow graph of the services that parsed (flow-graph.ts checks it); `unchecked`: those that did not. */
export function flowGraphOf(
  documents: ReadonlyMap<string, ServiceDocument>,
  unchecked: ReadonlySet<string>,
): FlowGraphInput {
  const services = new Map<string, FlowService>();
  const enqueues: FlowEnqueue[] = [];
  const add = (
    kind: 'onFailure' | 'then',
    from: FlowEnqueue['from'],
    enqueue: EnqueueDocument,
    path: PropertyKey[],
  ): void => {
    enqueues.push({
      kind,
      from,
      to: { service: enqueue.service, operation: enqueue.operation },
      bounded: enqueue.maxDepth !== undefined,
      path,
    });
  };
  for (const [service, doc] of documents) {
    const sensitive = Object.entries(doc.operations)
      .filter(([, op]) => (op.sensitive ?? doc.sensitive) === true)
      .map(([operation]) => operation);
    services.set(service, {
      operations: Object.keys(doc.operations),
      fallback: doc.fallback?.service,
      ...(sensitive.length === 0 ? {} : { sensitive }),
    });
    (doc.onFailure ?? []).forEach((rule, index) => {
      add('onFailure', { service, operation: undefined }, rule.enqueue, [
        'services',
        service,
        'onFailure',
        index,
        'enqueue',
      ]);
    });
    for (const [operation, op] of Object.entries(doc.operations)) {
      const at = ['services', service, 'operations', operation];
      (op.onFailure ?? []).forEach((rule, index) => {
        add('onFailure', { service, operation }, rule.enqueue, [...at, 'onFailure', index, 'enqueue']);
      });
      if (op.then !== undefined)
        add('then', { service, operation }, op.then.enqueue, [...at, 'then', 'enqueue']);
    }
  }
  return { services, enqueues, unchecked };
}
