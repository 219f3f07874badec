/**
 * Compiles the reactions of the services file (issue 16, docs/services-file.md § Reactions): `onFailure` rules,
 * a `then` step and the enqueue each names. The schema (schema.ts) already checked their shape and templates;
 * whether the services and operations they name exist, and whether they form an unbounded cycle, is checked on
 * the whole file by flow-graph.ts.
 */
import type { EnqueueDocument, FailureRuleDocument } from './schema.ts';
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
