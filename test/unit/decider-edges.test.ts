import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { contextOf, createDecider, CURRENT_SEMANTICS, engineInfo, fold, foldInPlace, idempotencyKeyFor, MAX_EXPRESSION_RESULT_BYTES, MAX_RUN_OUTPUTS_BYTES } from '../../src/domain/decider';
import { validateDefinition, type WorkflowDefinition } from '../../src/domain/definition';
import type { HttpOutcome, RunEvent } from '../../src/domain/events';
import { RUN_ID, runStarted, simulate, status } from './fixtures';

/*
 * The decider's edges, one rule per test: where a response counts as done,
 * which values a branch takes as true, which bytes and headers a request
 * carries, and what an expression sees. Each pins a boundary mutation testing
 * found unguarded (npm run mutation).
 */

const engine = engineInfo();
type Of<T extends RunEvent['type']> = Extract<RunEvent, { type: T }>['data'];
const eventsOf = (def: WorkflowDefinition, outcomes: HttpOutcome[] = [], opts: Parameters<typeof simulate>[2] = {}): RunEvent[] =>
  simulate(def, outcomes, { engine, ...opts }).map((e) => ({ type: e.type, data: e.data }) as RunEvent);
const first = <T extends RunEvent['type']>(events: RunEvent[], type: T): Of<T> => {
  const e = events.find((x) => x.type === type);
  assert.ok(e, `no ${type} in ${events.map((x) => x.type).join(', ')}`);
  return e.data as Of<T>;
};

const call = (headers: Record<string, unknown> = {}, body?: string): WorkflowDefinition =>
  validateDefinition({
    name: 'push-order',
    steps: [{ id: 'push', type: 'http_call', method: 'POST', url: 'https://orders.example.com/v1/orders', headers, ...(body ? { body } : {}), retry: { maxAttempts: 2, initialDelayMs: 10, jitter: 0 } }],
  });

describe('decider edges: which responses finish a step', () => {
  const outcome = (s: number) => eventsOf(call(), [status(s), status(s)]);

  it('200 and 299 succeed, with the status as their reason', () => {
    for (const s of [200, 299]) {
      const events = outcome(s);
      assert.deepEqual(first(events, 'StepSucceeded').output, { status: s, body: null });
      assert.equal(first(events, 'RunFinished').status, 'succeeded');
    }
  });

  it('300 and 199 are refusals, not retried', () => {
    for (const s of [300, 199]) {
      const events = outcome(s);
      assert.equal(events.filter((e) => e.type === 'RetryScheduled').length, 0, String(s));
      assert.equal(first(events, 'StepFailed').reason, `step "push" was refused: HTTP ${s}`);
    }
  });

  it('with conflictIsSuccess a 409 finishes the step as done', () => {
    const events = simulate(call(), [status(409)], { engine, decider: createDecider(call(), { conflictIsSuccess: true }) }).map((e) => ({ type: e.type, data: e.data }) as RunEvent);
    assert.equal(first(events, 'RunFinished').status, 'succeeded');
    assert.deepEqual(first(events, 'StepSucceeded').output, { status: 409, body: null });
  });

  it('a target the engine may not call is refused at once, naming the code', () => {
    const forbidden: HttpOutcome = { kind: 'error', code: 'TARGET_FORBIDDEN', message: '10.0.0.5 is a private address' };
    const events = eventsOf(call(), [forbidden]);
    assert.equal(events.filter((e) => e.type === 'RetryScheduled').length, 0);
    assert.match(first(events, 'StepFailed').reason, /TARGET_FORBIDDEN: 10\.0\.0\.5 is a private address/);
  });

  it('a network error is retried with the error as its reason', () => {
    const reset: HttpOutcome = { kind: 'error', code: 'ECONNRESET', message: 'socket hang up' };
    const events = eventsOf(call(), [reset, status(201)]);
    assert.equal(first(events, 'RetryScheduled').reason, 'ECONNRESET: socket hang up');
    assert.equal(first(events, 'RunFinished').status, 'succeeded');
  });
});

describe('decider edges: JMESPath truthiness in a branch', () => {
  const branch = validateDefinition({
    name: 'vip-check',
    steps: [
      { id: 'check', type: 'branch', condition: 'input.v', then: 'yes', else: 'no' },
      { id: 'yes', type: 'terminate', status: 'succeeded' },
      { id: 'no', type: 'terminate', status: 'failed', reason: 'took else' },
    ],
  });
  const takes = (v: unknown): boolean => {
    const out = first(eventsOf(branch, [], { input: { v } }), 'StepSucceeded').output as { condition: boolean; next: string };
    assert.equal(out.next, out.condition ? 'yes' : 'no');
    return out.condition;
  };

  it('false, null, "", [] and {} (and a missing field) take else', () => {
    for (const v of [false, null, '', [], {}, undefined]) assert.equal(takes(v), false, JSON.stringify(v));
  });

  it('true, 0, "0", a non-empty list and a non-empty object take then', () => {
    for (const v of [true, 0, '0', 'no', [0], [false], { a: null }]) assert.equal(takes(v), true, JSON.stringify(v));
  });
});

describe('decider edges: the request a step prepares', () => {
  const prepared = (def: WorkflowDefinition) => first(eventsOf(def, [status(201)], { input: { order: { sku: 'A-1', qty: 2 } } }), 'HttpRequestPrepared') as Of<'HttpRequestPrepared'> & { bodyText?: string | null };

  it('a JSON body is sent as canonical bytes, labelled application/json', () => {
    const p = prepared(call({ 'X-Trace': 'abc' }, 'input.order'));
    assert.equal(p.bodyText, '{"qty":2,"sku":"A-1"}');
    assert.deepEqual(p.headers, { 'X-Trace': 'abc', 'content-type': 'application/json' });
  });

  it("a Content-Type the workflow sets (in any case) is kept, not doubled", () => {
    const p = prepared(call({ 'Content-Type': 'application/vnd.orders+json' }, 'input.order'));
    assert.deepEqual(p.headers, { 'Content-Type': 'application/vnd.orders+json' });
  });

  it('without a body there are no bytes and no content type', () => {
    const p = prepared(call({ 'X-Trace': 'abc' }));
    assert.equal(p.bodyText, null);
    assert.deepEqual(p.headers, { 'X-Trace': 'abc' });
  });

  it('the definition keeps its own headers: preparing a request does not write into them', () => {
    const def = call({ 'X-Trace': 'abc' }, 'input.order');
    prepared(def);
    assert.deepEqual((def.steps[0] as { headers: unknown }).headers, { 'X-Trace': 'abc' });
  });

  it('the key of a first execution hashes run and step; a later execution adds its number', () => {
    const sha = (s: string) => `mh_${createHash('sha256').update(s).digest('hex').slice(0, 40)}`;
    assert.equal(idempotencyKeyFor(RUN_ID, 'push'), sha(`${RUN_ID}:push`));
    assert.equal(idempotencyKeyFor(RUN_ID, 'push', 1), sha(`${RUN_ID}:push`));
    assert.equal(idempotencyKeyFor(RUN_ID, 'push', 2), sha(`${RUN_ID}:push:2`));
    assert.equal(prepared(call()).idempotencyKey, sha(`${RUN_ID}:push`));
  });
});

describe('decider edges: what an expression sees', () => {
  it('an object body spreads its fields, and input and steps win over fields of the same name', () => {
    const state = fold([runStarted(call(), { order: { id: 'o-1' }, steps: 'spoofed', input: 'spoofed' })]);
    const ctx = contextOf(state);
    assert.deepEqual(ctx.order, { id: 'o-1' });
    assert.deepEqual(ctx.steps, {});
    assert.deepEqual(ctx.input, { order: { id: 'o-1' }, steps: 'spoofed', input: 'spoofed' });
  });

  it('a list or a scalar body is only seen as input', () => {
    for (const input of [['a', 'b'], 'text', 7, null]) {
      assert.deepEqual(contextOf(fold([runStarted(call(), input)])), { input, steps: {} }, JSON.stringify(input));
    }
  });
});

describe('decider edges: how much an expression may give (semantics 3)', () => {
  // a few bytes of input made into more than the bound: the run fails at its step, nothing that large recorded
  const padded = validateDefinition({
    name: 'label-order',
    steps: [
      { id: 'label', type: 'transform', expression: "pad_left('x', input.width)", next: 'done' },
      { id: 'done', type: 'terminate', status: 'succeeded' },
    ],
  });
  const run = (width: number, semantics: number) =>
    simulate(padded, [], { input: { width }, engine: { ...engine, semantics } }).map((e) => ({ type: e.type, data: e.data }) as RunEvent);

  it('a result over 4 MiB of JSON fails its step, naming its size', () => {
    const events = run(MAX_EXPRESSION_RESULT_BYTES, 3); // the quotes make it two bytes over
    assert.equal(first(events, 'StepFailed').reason, `step "label" could not be evaluated: its result is ${MAX_EXPRESSION_RESULT_BYTES + 2} bytes of JSON, more than the ${MAX_EXPRESSION_RESULT_BYTES} a result may be`);
    assert.equal(first(events, 'RunFinished').status, 'failed');
    assert.ok(JSON.stringify(events).length < 10_000, 'nothing that large is recorded');
  });

  it('a result of exactly 4 MiB is kept', () => {
    const events = run(MAX_EXPRESSION_RESULT_BYTES - 2, 3);
    assert.equal((first(events, 'StepSucceeded').output as string).length, MAX_EXPRESSION_RESULT_BYTES - 2);
    assert.equal(first(events, 'RunFinished').status, 'succeeded');
  });

  it('a run started under semantics 2 is decided as it was then: no bound', () => {
    const events = run(MAX_EXPRESSION_RESULT_BYTES, 2);
    assert.equal(first(events, 'RunFinished').status, 'succeeded');
  });

  it('new runs start under the current semantics, 5', () => {
    assert.equal(engineInfo().semantics, 5);
    assert.equal(CURRENT_SEMANTICS, 5);
  });
});

describe('decider edges: how much a run\'s outputs may hold together (semantics 4)', () => {
  // four steps of 4 MiB of JSON each fill the 16 MiB a run may hold; widths are given as input, so the
  // definition stays a few bytes
  const MiB4 = MAX_EXPRESSION_RESULT_BYTES;
  const labels = (extra: { id: string; type: 'transform'; expression: string }[]) =>
    validateDefinition({
      name: 'label-order',
      steps: [
        ...['a', 'b', 'c', 'd'].map((id, i, all) => ({ id, type: 'transform' as const, expression: `pad_left('x', input.${id})`, next: all[i + 1] ?? extra[0]?.id ?? 'done' })),
        ...extra.map((step, i) => ({ ...step, next: extra[i + 1]?.id ?? 'done' })),
        { id: 'done', type: 'terminate', status: 'succeeded' },
      ],
    });
  const run = (def: WorkflowDefinition, input: Record<string, number>, semantics = 4) =>
    simulate(def, [], { input, engine: { ...engine, semantics } }).map((e) => ({ type: e.type, data: e.data }) as RunEvent);
  // a width w pads to a string of w characters: w + 2 bytes of JSON
  const full = { a: MiB4 - 2, b: MiB4 - 2, c: MiB4 - 2, d: MiB4 - 2 };

  it('every output records its size in bytes of JSON', () => {
    const events = run(labels([]), { a: 1, b: 2, c: 3, d: 4 });
    assert.deepEqual(events.filter((e) => e.type === 'StepSucceeded').map((e) => (e.data as Of<'StepSucceeded'>).bytes), [3, 4, 5, 6, Buffer.byteLength('{"status":"succeeded"}')]);
    assert.deepEqual(fold(events).outputBytes, { a: 3, b: 4, c: 5, d: 6, done: 22 });
  });

  it('the output that would take them past 16 MiB fails its step, naming the sizes', () => {
    const events = run(labels([{ id: 'e', type: 'transform', expression: "pad_left('x', `1`)" }]), full);
    const reason = `step "e" succeeded, but its output of 3 bytes of JSON would take the run's step outputs to ${MAX_RUN_OUTPUTS_BYTES + 3}, more than the ${MAX_RUN_OUTPUTS_BYTES} a run may hold`;
    assert.equal(first(events, 'StepFailed').reason, reason);
    assert.deepEqual(first(events, 'RunFinished'), { status: 'failed', reason, output: null });
    assert.equal(fold(events).outputs.e, undefined);
  });

  it('outputs of exactly 16 MiB together are kept', () => {
    const events = run(labels([]), { ...full, d: MiB4 - 2 - 22 }); // the terminate step's output is 22 bytes
    assert.equal(first(events, 'RunFinished').status, 'succeeded');
    assert.equal(Object.values(fold(events).outputBytes).reduce((a, b) => a + b), MAX_RUN_OUTPUTS_BYTES);
  });

  it('a response the run cannot hold fails its step once recorded, with no retry', () => {
    const def = validateDefinition({
      name: 'label-order',
      steps: [
        ...['a', 'b', 'c', 'd'].map((id) => ({ id, type: 'transform' as const, expression: `pad_left('x', input.${id})`, next: id === 'd' ? 'push' : String.fromCharCode(id.charCodeAt(0) + 1) })),
        { id: 'push', type: 'http_call', method: 'POST', url: 'https://orders.example.com/v1/orders', retry: { maxAttempts: 3, initialDelayMs: 10, jitter: 0 } },
      ],
    });
    const events = simulate(def, [status(200)], { input: full, engine }).map((e) => ({ type: e.type, data: e.data }) as RunEvent);
    assert.deepEqual(events.slice(-3).map((e) => e.type), ['HttpResponseRecorded', 'StepFailed', 'RunFinished']);
    assert.match(first(events, 'StepFailed').reason, /^step "push" succeeded, but its output of 26 bytes of JSON would take the run's step outputs to 16777242, more than the 16777216 a run may hold$/);
    assert.equal(first(events, 'StepFailed').attempts, 1);
  });

  it('an operator cannot skip a step with an output the run cannot hold', () => {
    const def = labels([{ id: 'e', type: 'transform', expression: "pad_left('x', `1`)" }]);
    const events = run(def, full);
    const decider = createDecider(def);
    assert.throws(
      () => decider.decide({ type: 'Operate', data: { action: 'skip', by: 'ops@acme.example', reason: 'ticket OPS-1432', at: '2030-01-01T01:00:00.000Z', output: 'y' } }, fold(events)),
      /^DecisionError: cannot skip run .*: the output given for step "e": its output of 3 bytes of JSON would take the run's step outputs to 16777219, more than the 16777216 a run may hold$/,
    );
  });

  it('a resume gives back the room of the outputs it clears', () => {
    const def = labels([{ id: 'e', type: 'transform', expression: "pad_left('x', `1`)" }]);
    const events = run(def, full);
    const decider = createDecider(def);
    const resumed = decider.decide({ type: 'Operate', data: { action: 'resume', step: 'c', by: 'ops@acme.example', reason: 'ticket OPS-1433', at: '2030-01-01T01:00:00.000Z' } }, fold(events));
    for (const state of [fold([...events, ...resumed]), foldInPlace([...events, ...resumed])]) assert.deepEqual(Object.keys(state.outputBytes), ['a', 'b']);
  });

  it('a run started under semantics 3 records no sizes and has no bound on its outputs together', () => {
    const events = run(labels([{ id: 'e', type: 'transform', expression: "pad_left('x', `1`)" }]), full, 3);
    assert.equal(first(events, 'RunFinished').status, 'succeeded');
    assert.ok(events.every((e) => !('bytes' in (e.data as object))));
  });
});

describe('decider edges: a run started by a later release', () => {
  it('is not decided by an engine that does not know its semantics', () => {
    const def = validateDefinition({ name: 'label-order', steps: [{ id: 'done', type: 'terminate', status: 'succeeded' }] });
    const decider = createDecider(def);
    const later = fold(decider.decide({ type: 'StartRun', data: { ...(runStarted(def) as Extract<RunEvent, { type: 'RunStarted' }>).data, engine: { ...engine, semantics: engine.semantics + 1 } } }, fold([])));
    assert.throws(() => decider.decide({ type: 'ExecuteStep', data: { at: '2026-12-07T10:00:00.000Z' } } as never, later), new RegExp(`started under semantics ${CURRENT_SEMANTICS + 1}, newer than this engine's ${CURRENT_SEMANTICS}`));
  });
});
