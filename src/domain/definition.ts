import { z } from 'zod';
import { compile } from '@jmespath-community/jmespath';
import { canonicalJson, sha256 } from './canonical';

/*
 * Workflow definitions: a DAG of five step types. A definition is data; once
 * published as a version it never changes, and a run is pinned to the version
 * it started on (its hash is recorded in RunStarted).
 */

const stepId = z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'step ids are lower-case letters, digits, - and _');
const jmes = z.string().min(1);

const transformStep = z.object({
  id: stepId,
  type: z.literal('transform'),
  /** JMESPath over the run context: { input, steps: { <id>: output } } */
  expression: jmes,
  next: stepId.optional(),
});

export const retryPolicySchema = z.object({
  maxAttempts: z.number().int().min(1).max(100).default(3),
  initialDelayMs: z.number().int().min(0).default(500),
  multiplier: z.number().min(1).max(10).default(2),
  maxDelayMs: z.number().int().min(0).default(60_000),
  /** 0 = no jitter; 0.2 = ±20 % around the exponential delay */
  jitter: z.number().min(0).max(1).default(0.2),
});
export type RetryPolicy = z.infer<typeof retryPolicySchema>;

const headerName = z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$/, 'header names are HTTP tokens (letters, digits and !#$%&\'*+.^_`|~-)');
const headerText = z.string().max(4096).refine((v) => !/[\u0000\r\n]/.test(v), 'header values may not contain line breaks or NUL');
/** a literal value, or a secret of the project's vault by name (the value is never written into the run log) */
const headerValue = z.union([
  headerText,
  z.object({ secret: z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'secret names are lower-case letters, digits, - and _'), prefix: headerText.optional() }).strict(),
]);

const httpCallStep = z.object({
  id: stepId,
  type: z.literal('http_call'),
  method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']),
  url: z.string().url().refine((u) => /^https?:\/\//i.test(u), 'only http and https URLs can be called'),
  headers: z.record(headerName, headerValue).default({}),
  /** JMESPath over the run context giving the JSON body; omitted = no body */
  body: jmes.optional(),
  timeoutMs: z.number().int().min(1).max(600_000).default(10_000),
  retry: retryPolicySchema.default({ maxAttempts: 3, initialDelayMs: 500, multiplier: 2, maxDelayMs: 60_000, jitter: 0.2 }),
  next: stepId.optional(),
});

const branchStep = z.object({
  id: stepId,
  type: z.literal('branch'),
  /** JMESPath; a truthy result (JMESPath truthiness) takes `then` */
  condition: jmes,
  then: stepId,
  else: stepId,
});

const delayStep = z.object({
  id: stepId,
  type: z.literal('delay'),
  durationMs: z.number().int().min(0).max(366 * 24 * 3600 * 1000),
  next: stepId.optional(),
});

const terminateStep = z.object({
  id: stepId,
  type: z.literal('terminate'),
  status: z.enum(['succeeded', 'failed']),
  reason: z.string().max(500).optional(),
  /** JMESPath giving the run's output */
  output: jmes.optional(),
});

export const stepSchema = z.discriminatedUnion('type', [transformStep, httpCallStep, branchStep, delayStep, terminateStep]);

export const definitionSchema = z.object({
  name: z.string().regex(/^[a-z][a-z0-9-]{0,62}$/, 'workflow names are lower-case slugs'),
  description: z.string().max(2000).optional(),
  /** first step; defaults to the first in the list */
  start: stepId.optional(),
  steps: z.array(stepSchema).min(1).max(200),
});

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

/** Parse and check a definition: schema, unique ids, edges, acyclic, reachable, expressions compile. */
export function validateDefinition(raw: unknown): WorkflowDefinition {
  const parsed = definitionSchema.safeParse(raw);
  if (!parsed.success) {
    throw new InvalidDefinitionError(parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`));
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
      try {
        compile(expr);
      } catch (e) {
        problems.push(`step "${step.id}" ${field} is not valid JMESPath: ${(e as Error).message}`);
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
