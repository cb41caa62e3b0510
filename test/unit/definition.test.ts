import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { definitionHash, InvalidDefinitionError, validateDefinition } from '../../src/domain/definition';

function problemsOf(raw: unknown): string[] {
  try {
    validateDefinition(raw);
  } catch (e) {
    assert.ok(e instanceof InvalidDefinitionError, `expected InvalidDefinitionError, got ${(e as Error).name}`);
    return e.problems;
  }
  assert.fail('the definition was accepted');
}

const t = (id: string, next?: string) => ({ id, type: 'transform', expression: 'input', ...(next ? { next } : {}) });
const end = (id: string) => ({ id, type: 'terminate', status: 'succeeded' });

describe('definition validation', () => {
  it('accepts a good definition and defaults start to the first step', () => {
    const def = validateDefinition({ name: 'ok', steps: [t('a', 'b'), end('b')] });
    assert.equal(def.start, 'a');
  });

  it('fills http_call defaults (retry policy, timeout, headers)', () => {
    const def = validateDefinition({ name: 'h', steps: [{ id: 'call', type: 'http_call', method: 'GET', url: 'http://x.test/a' }] });
    const call = def.steps[0];
    assert.equal(call.type, 'http_call');
    if (call.type !== 'http_call') return;
    assert.deepEqual(call.headers, {});
    assert.equal(call.timeoutMs, 10_000);
    assert.equal(call.retry.maxAttempts, 3);
  });

  it('names a duplicate step id', () => {
    assert.deepEqual(problemsOf({ name: 'd', steps: [t('a', 'b'), t('b'), t('b')] }), ['step "b" is defined twice']);
  });

  it('names a next step that does not exist', () => {
    assert.deepEqual(problemsOf({ name: 'm', steps: [t('a', 'ghost')] }), ['step "a" goes to "ghost", which does not exist']);
  });

  it('names the missing targets of a branch and a missing start', () => {
    const problems = problemsOf({ name: 'b', start: 'nope', steps: [{ id: 'a', type: 'branch', condition: 'input', then: 'x', else: 'y' }] });
    assert.deepEqual(problems, ['start step "nope" does not exist', 'step "a" goes to "x", which does not exist', 'step "a" goes to "y", which does not exist']);
  });

  it('shows a cycle as a path', () => {
    assert.deepEqual(problemsOf({ name: 'c', steps: [t('a', 'b'), t('b', 'c'), t('c', 'a')] }), ['steps form a cycle: a -> b -> c -> a']);
  });

  it('names unreachable steps', () => {
    assert.deepEqual(problemsOf({ name: 'u', steps: [t('a'), t('island', 'a')] }), ['step "island" cannot be reached from "a"']);
  });

  it('names a bad JMESPath expression with its step and field', () => {
    const problems = problemsOf({ name: 'j', steps: [{ id: 'a', type: 'transform', expression: 'foo[' }] });
    assert.equal(problems.length, 1);
    assert.match(problems[0], /^step "a" expression is not valid JMESPath: /);
    const branch = problemsOf({ name: 'j', steps: [{ id: 'a', type: 'branch', condition: '==', then: 'a', else: 'a' }] });
    assert.match(branch[0], /^step "a" condition is not valid JMESPath/);
  });

  it('reports schema errors with their path', () => {
    const problems = problemsOf({ name: 'Bad Name', steps: [{ id: 'a', type: 'http_call', method: 'FETCH', url: 'not a url' }, { id: 'b', type: 'teleport' }] });
    assert.ok(problems.some((p) => p.startsWith('name: workflow names are lower-case slugs')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('steps.0.method:')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('steps.0.url:')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('steps.1.type:')), problems.join('\n'));
  });

  it('refuses an empty definition and a non-object', () => {
    assert.ok(problemsOf({ name: 'e', steps: [] }).some((p) => p.startsWith('steps:')));
    assert.ok(problemsOf(null).length > 0);
    assert.ok(problemsOf({ name: 'e', steps: [{ id: 'Upper', type: 'transform', expression: 'x' }] }).some((p) => /step ids are lower-case/.test(p)));
  });

  it('the error message lists every problem', () => {
    assert.throws(() => validateDefinition({ name: 'm', steps: [t('a', 'x'), t('a')] }), /invalid workflow definition: step "a" is defined twice; step "a" goes to "x"/);
  });

  it('hashes definitions canonically: key order does not matter', () => {
    const a = validateDefinition({ name: 'k', steps: [{ id: 'a', type: 'transform', expression: 'input' }] });
    const b = validateDefinition({ steps: [{ expression: 'input', type: 'transform', id: 'a' }], name: 'k' });
    assert.equal(definitionHash(a), definitionHash(b));
    assert.notEqual(definitionHash(a), definitionHash(validateDefinition({ name: 'k', steps: [{ id: 'a', type: 'transform', expression: 'input.x' }] })));
  });
});
