import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compile, TreeInterpreter } from '@jmespath-community/jmespath';
import { engineInfo, MAX_EXPRESSION_RESULT_BYTES } from '../../src/domain/decider';
import { jsonLengthAtLeast, withBound } from '../../src/domain/expression-bounds';
import { validateDefinition } from '../../src/domain/definition';
import type { RunEvent } from '../../src/domain/events';
import { simulate } from './fixtures';

/*
 * What an expression may make on the way to its result (semantics 4), and that runs of earlier semantics get
 * exactly what the library gave them. The library's own interpreter, made afresh, is the reference: the engine
 * replaces three of its functions on the shared one.
 */

const library = new (TreeInterpreter.constructor as new () => typeof TreeInterpreter)();
const theirs = (expr: string, data: unknown): unknown => library.search(compile(expr), data as never);
const ours = (expr: string, data: unknown, limit: number | null = null): unknown => withBound(limit, () => TreeInterpreter.search(compile(expr), data as never));
const outcome = (f: () => unknown): unknown => {
  try {
    return { value: f() };
  } catch (e) {
    return { error: `${(e as Error).name}: ${(e as Error).message}` };
  }
};

const failure = (expression: string, input: unknown, semantics = 4): string => {
  const def = validateDefinition({
    name: 'label-order',
    steps: [
      { id: 'label', type: 'transform', expression, next: 'done' },
      { id: 'done', type: 'terminate', status: 'succeeded' },
    ],
  });
  const events = simulate(def, [], { input, engine: { ...engineInfo(), semantics } }).map((e) => ({ type: e.type, data: e.data }) as RunEvent);
  const failed = events.find((e) => e.type === 'StepFailed');
  return failed ? (failed.data as { reason: string }).reason : 'succeeded';
};

describe('expression bounds: earlier runs get what the library gave', () => {
  const data = { s: 'a-b-a', e: '', n: 'ab$&c', u: 'ü€😀' };
  const cases = [
    "pad_left(s, `8`)", "pad_left(s, `8`, '*')", "pad_right(s, `8`, '*')", "pad_left(s, `2`)", "pad_left(e, `5`)", "pad_right(u, `9`, '.')",
    "pad_left(s, `0`)", "pad_left(s, `-1`)", "pad_left(s, `1.5`)", "pad_left(s, `8`, '**')", "pad_left(s, `8`, '')",
    "replace(s, 'a', 'xy')", "replace(s, '', '+')", "replace(e, '', '+')", "replace(s, '-', '')", "replace(n, '$', '$$')",
    "replace(s, 'a', 'xy', `1`)", "replace(s, 'a', 'xy', `0`)", "replace(s, 'a', 'aa', `3`)", "replace(s, 'a', '$&$&', `2`)",
    "replace(s, '', '+', `4`)", "replace(s, '-', '-', `5`)", "replace(s, 'a', 'b', `-1`)", "replace(s, 'a', 'b', `2.5`)",
    "replace(s, 'a', 'b', `4294967296`)",
  ];

  for (const expr of cases) {
    it(expr, () => assert.deepEqual(outcome(() => ours(expr, data)), outcome(() => theirs(expr, data))));
  }

  it('a count the library could not spread without ending the process gives the same string, at once', () => {
    // the library spread 300,000,000 numbers first ("JavaScript heap out of memory"); nothing changes after the first round
    assert.equal(ours("replace(s, 'b', 'c', `300000000`)", data), 'a-c-a');
    assert.equal(ours("replace(s, 'b', 'c', `300000000`)", data, MAX_EXPRESSION_RESULT_BYTES), 'a-c-a');
  });
});

describe('expression bounds: semantics 4 makes nothing larger than a result may be', () => {
  const max = MAX_EXPRESSION_RESULT_BYTES;

  it('pad_left and pad_right refuse a width past it before making the string', () => {
    assert.equal(failure('pad_left(order.id, order.width)', { order: { id: 'A-1001', width: 100_000_000 } }), `step "label" could not be evaluated: pad_left would make a string of 100000000 characters, more than the ${max} a result may be`);
    assert.equal(failure("pad_right('x', order.width)", { order: { width: max + 1 } }), `step "label" could not be evaluated: pad_right would make a string of ${max + 1} characters, more than the ${max} a result may be`);
    assert.equal((ours("pad_left('x', `" + max + '`)', {}, max) as string).length, max);
  });

  it('replace refuses what splitting and joining would make, counted before it is made', () => {
    const s = 'x'.repeat(3000); // 2,999 gaps filled with 3,000 characters each
    assert.equal(failure("replace(s, '', s)", { s }), `step "label" could not be evaluated: replace would make a string of ${3000 + 2999 * 3000} characters, more than the ${max} a result may be`);
    assert.equal(failure("replace(s, 'x', s)", { s }), `step "label" could not be evaluated: replace would make a string of ${3000 * 3000} characters, more than the ${max} a result may be`);
    assert.equal((ours("replace(s, 'x', 'yy')", { s }, max) as string).length, 6000);
  });

  it('replace with a count stops where its string would grow past it, or its searching would go on too long', () => {
    // the first round makes 3,999,999 characters, the second would make 5,999,998
    assert.equal(failure("replace(s, 'x', s, `1000`)", { s: 'x'.repeat(2_000_000) }), `step "label" could not be evaluated: replace would make a string of 5999998 characters, more than the ${max} a result may be`);
    assert.equal(failure("replace('a', 'a', 'aa', `1000000000`)", {}), `step "label" could not be evaluated: replace with a count of 1000000000 would search more than ${16 * max} characters`);
    assert.equal(failure("replace(s, 'a', 'b', `1000000`)", { s: 'a'.repeat(1_000_000) }), `step "label" could not be evaluated: replace with a count of 1000000 would search more than ${16 * max} characters`);
  });

  it('a result that repeats a large part of the input is measured from below and refused before it is written', () => {
    const input = { items: Array.from({ length: 1000 }, (_, i) => i), note: 'n'.repeat(100_000) };
    const reason = failure('items[*].{note: $.note}', input);
    assert.match(reason, new RegExp(`^step "label" could not be evaluated: its result would be at least \\d+ bytes of JSON, more than the ${max} a result may be$`));
    assert.ok(Number(/at least (\d+)/.exec(reason)![1]) < max + 200_000, 'the count stops soon after the limit');
    // under semantics 3 the same result is written whole first, then measured exactly
    assert.equal(failure('items[*].{note: $.note}', input, 3), `step "label" could not be evaluated: its result is ${1000 * (100_000 + 11) + 999 + 2} bytes of JSON, more than the ${max} a result may be`);
  });

  it('the count from below never passes what JSON.stringify writes', () => {
    const values: unknown[] = [null, true, false, 0, -0, 1.5e300, -12, 'plain', 'quote " and \\ and \u0001', [], {}, [1, [2, [3]]], { a: 1, b: undefined, c: [null, 'x'] }, { 'k"ey': 'ü€😀' }, [undefined, 1]];
    for (const v of values) assert.ok(jsonLengthAtLeast(v, Infinity) <= JSON.stringify(v).length, JSON.stringify(v));
    for (const v of [null, true, 0, 'plain', [1, [2, [3]]], { a: 1, c: [null, 'x'] }]) assert.equal(jsonLengthAtLeast(v, Infinity), JSON.stringify(v).length, JSON.stringify(v));
  });

  it('a run of semantics 4 still gets results within the bound exactly', () => {
    assert.equal(failure("pad_left(order.id, `12`, '0')", { order: { id: 'A-1001' } }), 'succeeded');
    assert.equal(ours("replace(s, '-', '+', `1`)", { s: 'a-b-a' }, max), 'a+b-a');
  });
});
