import type { z } from 'zod';
import { compile } from '@jmespath-community/jmespath';
import { canonicalJson, sha256 } from './canonical';
import type { definitionSchema, httpCallStep, retryPolicySchema, stepSchema } from './definition-schema';

/*
 * Workflow definitions: a DAG of five step types. A definition is data; once
 * published as a version it never changes, and a run is pinned to the version
 * it started on (its hash is recorded in RunStarted). The schema itself is in
 * definition-schema.ts, loaded only when a definition is validated.
 */

export type RetryPolicy = z.infer<typeof retryPolicySchema>;
export type WorkflowDefinition = z.infer<typeof definitionSchema>;
export type StepDefinition = z.infer<typeof stepSchema>;
export type StepType = StepDefinition['type'];
export type HttpCallStep = z.infer<typeof httpCallStep>;

export class InvalidDefinitionError extends Error {
  constructor(public readonly problems: string[]) {
    super(`invalid workflow definition: ${problems.join('; ')}`);
    this.name = 'InvalidDefinitionError';
  }
}

export function successorsOf(step: StepDefinition): string[] {
  switch (step.type) {
    case 'branch':
      return [step.then, step.else];
    case 'terminate':
      return [];
    default:
      return step.next ? [step.next] : [];
  }
}

export function expressionsOf(step: StepDefinition): Array<[string, string]> {
  switch (step.type) {
    case 'transform':
      return [['expression', step.expression]];
    case 'http_call':
      return step.body ? [['body', step.body]] : [];
    case 'branch':
      return [['condition', step.condition]];
    case 'terminate':
      return step.output ? [['output', step.output]] : [];
    default:
      return [];
  }
}

/**
 * One schema problem, at its path. An unknown step type also names the step and the type it was given
 * (`steps.1.type: step "mail" has type "email", which is not a step type (transform, …)`): zod's own words
 * (`Invalid discriminator value. Expected …`) name neither, so an author could not tell which row was wrong.
 */
function describeIssue(raw: unknown, issue: { path: PropertyKey[]; message: string; code: string; discriminator?: unknown; options?: unknown }): string {
  const at = issue.path.map(String).join('.') || '(root)';
  const [top, index, field, ...more] = issue.path;
  const steps = (raw as { steps?: unknown } | null)?.steps;
  const step = top === 'steps' && typeof index === 'number' && Array.isArray(steps) ? (steps[index] as Record<string, unknown> | null | undefined) : undefined;
  if (step && typeof step === 'object' && issue.code === 'invalid_union' && issue.discriminator === 'type' && field === 'type' && more.length === 0) {
    const who = typeof step.id === 'string' && step.id ? `step "${step.id}"` : `step ${Number(index) + 1}`;
    const kinds = Array.isArray(issue.options) ? issue.options.join(', ') : 'transform, http_call, branch, delay, terminate';
    const given = step.type === undefined ? 'has no type' : `has type ${JSON.stringify(step.type)}, which is not a step type`;
    return `${at}: ${who} ${given} (${kinds})`;
  }
  return `${at}: ${issue.message}`;
}

/**
 * How deep a compiled expression may nest (its syntax tree, literals included). The expression library evaluates
 * recursively: `a | a | … | a` 5,000 times, or a literal nested as deep, was published and then failed every run
 * with "Maximum call stack size exceeded"; and one of about 1,400 evaluated or not depending on how deep the stack
 * already was where it was called, so a worker and a later replay could decide the same step differently.
 * Far below what fails anywhere, far above what anyone writes.
 */
export const MAX_EXPRESSION_NESTING = 256;

/** How deep a compiled expression nests (objects and arrays of its tree), counted without recursion up to `max` + 1. */
function nestingOf(ast: unknown, max: number): number {
  let deepest = 0;
  const stack: Array<[unknown, number]> = [[ast, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth > deepest) deepest = depth;
    if (deepest > max) return deepest;
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
  }
  return deepest;
}

/** Parse and check a definition: schema, unique ids, edges, acyclic, reachable, expressions compile. */
export function validateDefinition(raw: unknown): WorkflowDefinition {
  const { definitionSchema } = require('./definition-schema') as typeof import('./definition-schema');
  const parsed = definitionSchema.safeParse(raw);
  if (!parsed.success) {
    throw new InvalidDefinitionError(parsed.error.issues.map((i) => describeIssue(raw, i)));
  }
  const def = parsed.data;
  const problems: string[] = [];
  const byId = new Map<string, StepDefinition>();
  for (const step of def.steps) {
    if (byId.has(step.id)) problems.push(`step "${step.id}" is defined twice`);
    byId.set(step.id, step);
  }
  const start = def.start ?? def.steps[0].id;
  if (!byId.has(start)) problems.push(`start step "${start}" does not exist`);
  for (const step of def.steps) {
    for (const next of successorsOf(step)) {
      if (!byId.has(next)) problems.push(`step "${step.id}" goes to "${next}", which does not exist`);
    }
    for (const [field, expr] of expressionsOf(step)) {
      let ast: unknown;
      try {
        ast = compile(expr);
      } catch (e) {
        problems.push(`step "${step.id}" ${field} is not valid JMESPath: ${(e as Error).message}`);
        continue;
      }
      if (nestingOf(ast, MAX_EXPRESSION_NESTING) > MAX_EXPRESSION_NESTING) {
        problems.push(`step "${step.id}" ${field} nests more than ${MAX_EXPRESSION_NESTING} levels deep (pipes, dots, brackets and literals count): write it flatter`);
        continue;
      }
      // JMESPath reads steps.map-invoice as steps.map minus invoice: a silent wrong answer at run time
      for (const id of byId.keys()) {
        if (id.includes('-') && new RegExp(`(^|[^\\w"])steps\\.${id.replace(/[-]/g, '\\-')}(?![\\w-])`).test(expr)) {
          problems.push(`step "${step.id}" ${field} reads steps.${id} as "steps.${id.split('-')[0]} minus …"; write steps."${id}"`);
        }
      }
    }
  }
  if (problems.length === 0) {
    // Depth-first search from the start: a grey node met again is a cycle.
    const colour = new Map<string, 'grey' | 'black'>();
    const visit = (id: string, path: string[]): void => {
      const c = colour.get(id);
      if (c === 'black') return;
      if (c === 'grey') {
        problems.push(`steps form a cycle: ${[...path.slice(path.indexOf(id)), id].join(' -> ')}`);
        return;
      }
      colour.set(id, 'grey');
      for (const next of successorsOf(byId.get(id)!)) visit(next, [...path, id]);
      colour.set(id, 'black');
    };
    visit(start, []);
    for (const step of def.steps) {
      if (!colour.has(step.id)) problems.push(`step "${step.id}" cannot be reached from "${start}"`);
    }
  }
  if (problems.length) throw new InvalidDefinitionError(problems);
  return { ...def, start };
}

export function definitionHash(def: WorkflowDefinition): string {
  return sha256(canonicalJson(def));
}

/** The vault secrets a definition's requests refer to. */
export function secretsUsedBy(def: WorkflowDefinition): string[] {
  const names = new Set<string>();
  for (const step of def.steps) {
    if (step.type !== 'http_call') continue;
    for (const v of Object.values(step.headers)) if (typeof v === 'object') names.add(v.secret);
  }
  return [...names].sort();
}

export function stepOf(def: WorkflowDefinition, id: string): StepDefinition {
  const step = def.steps.find((s) => s.id === id);
  if (!step) throw new Error(`workflow "${def.name}" has no step "${id}"`);
  return step;
}
