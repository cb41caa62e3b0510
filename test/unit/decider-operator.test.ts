import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { commandOf, createDecider, DecisionError, engineInfo, fold, idempotencyKeyFor, mergePatch, nextAction, stepsFrom, type Command } from '../../src/domain/decider';
import type { OperatorActed, RunEvent } from '../../src/domain/events';
import { validateDefinition } from '../../src/domain/definition';
import { specFor } from './decider-spec';
import { created, orderSync, RUN_ID, simulate, status, withDelay } from './fixtures';

/*
 * Manual intervention in the decider: every operator action, what it records,
 * what the run looks like afterwards, and every refusal with its reason.
 * (The acceptance features under features/intervention/ drive the same rules
 * through real workers; these pin them where mutation testing can see them.)
 */

const decider = createDecider(orderSync);
const { given } = specFor(decider);
const asEvents = (log: ReturnType<typeof simulate>): RunEvent[] => log.map((e) => ({ type: e.type, data: e.data }) as RunEvent);
const engine = engineInfo();

// order-sync as today's engine records it (semantics 2), at four places
const succeeded = asEvents(simulate(orderSync, [created()], { engine }));
const failed = asEvents(simulate(orderSync, [status(500), status(500), status(500)], { engine }));
const inFlight = asEvents(simulate(orderSync, [], { engine, maxBatches: 2 }));
const beforeSemantics2 = asEvents(simulate(orderSync, [], { maxBatches: 2 }));

const act = (action: OperatorActed['data']['action'], extra: Partial<OperatorActed['data']> = {}): Command => ({
  type: 'Operate',
  data: { action, by: 'ops@acme.example', reason: 'ticket OPS-1432', at: '2030-01-01T01:00:00.000Z', ...extra },
});
const acted = (c: Command): RunEvent => ({ type: 'OperatorActed', data: { ...(c.data as OperatorActed['data']) } });
const after = (past: RunEvent[], c: Command) => {
  const events = given(past).when(c).thenMatches(() => undefined);
  return { events, state: fold([...past, ...events]) };
};

describe('operator actions: what every action needs', () => {
  it('refuses a run that has not started', () => {
    given([]).when(act('cancel')).thenThrows(DecisionError, /cannot cancel run .*: it has not started/);
  });

  it('refuses a run started by an engine without operator actions', () => {
    given(beforeSemantics2).when(act('pause')).thenThrows(DecisionError, /semantics 1/);
  });

  it('refuses a step the workflow does not have', () => {
    given(failed).when(act('retry', { step: 'ghost' })).thenThrows(DecisionError, /workflow "order-sync" has no step "ghost"/);
  });
});

describe('operator actions: cancel', () => {
  it('ends a run in flight as canceled, naming who and why', () => {
    const c = act('cancel');
    given(inFlight)
      .when(c)
      .then([acted(c), { type: 'RunFinished', data: { status: 'canceled', reason: 'canceled by ops@acme.example: ticket OPS-1432', output: null } }]);
    const { state } = after(inFlight, c);
    assert.equal(state.status, 'canceled');
    assert.equal(state.pendingRequest, null);
    assert.deepEqual(nextAction(state), { kind: 'none' });
  });

  it('refuses a finished run, saying how it ended', () => {
    given(succeeded).when(act('cancel')).thenThrows(DecisionError, /it already succeeded/);
    given(failed).when(act('cancel')).thenThrows(DecisionError, /it already failed/);
    const canceled = after(inFlight, act('cancel'));
    given([...inFlight, ...canceled.events]).when(act('cancel')).thenThrows(DecisionError, /it already was canceled/);
  });
});

describe('operator actions: pause and unpause', () => {
  it('a paused run does nothing until it is unpaused', () => {
    const ready = asEvents(simulate(orderSync, [], { engine, maxBatches: 0 }));
    const paused = after(ready, act('pause'));
    assert.deepEqual(paused.events, [acted(act('pause')), { type: 'RunPaused', data: {} }]);
    assert.equal(paused.state.status, 'paused');
    assert.deepEqual(nextAction(paused.state), { kind: 'none' });
    const log = [...ready, ...paused.events];
    given(log).when({ type: 'ExecuteStep', data: { at: '2030-01-01T01:00:01.000Z' } }).thenThrows(DecisionError, /is paused/);
    given(log).when(act('pause')).thenThrows(DecisionError, /already paused/);
    const unpaused = after(log, act('unpause'));
    assert.deepEqual(unpaused.events, [acted(act('unpause')), { type: 'RunUnpaused', data: {} }]);
    assert.equal(unpaused.state.status, 'running');
    assert.deepEqual(nextAction(unpaused.state), { kind: 'execute-step' });
  });

  it('a run paused on a timer is waiting again when unpaused', () => {
    const d = createDecider(withDelay);
    const waiting = asEvents(simulate(withDelay, [], { engine, maxBatches: 1, input: { n: 1 } }));
    const paused = fold([...waiting, ...d.decide(act('pause'), fold(waiting))]);
    const events = d.decide(act('unpause'), paused);
    assert.equal(fold(events, paused).status, 'waiting');
    assert.equal(nextAction(fold(events, paused)).kind, 'fire-timer');
  });

  it('refuses to unpause a run that is not paused, or to pause a finished one', () => {
    given(inFlight).when(act('unpause')).thenThrows(DecisionError, /it is not paused/);
    given(succeeded).when(act('pause')).thenThrows(DecisionError, /it already succeeded/);
  });
});

describe('operator actions: retry', () => {
  it('sends the failed step back to work under the same key, with a fresh attempt budget', () => {
    const c = act('retry');
    given(failed).when(c).then([acted(c), { type: 'StepRescheduled', data: { step: 'push', mode: 'retry', cleared: [] } }]);
    const { state } = after(failed, c);
    assert.equal(state.status, 'running');
    assert.equal(state.phase, 'ready');
    assert.equal(state.cursor, 'push');
    assert.equal(state.failedStep, null);
    assert.equal(state.result, null);
    assert.equal(state.retryBase.push, 3);
    const next = decider.decide({ type: 'ExecuteStep', data: { at: '2030-01-01T01:00:01.000Z' } }, state);
    const prepared = next.find((e) => e.type === 'HttpRequestPrepared') as Extract<RunEvent, { type: 'HttpRequestPrepared' }>;
    assert.equal(prepared.data.attempt, 4);
    assert.equal(prepared.data.idempotencyKey, idempotencyKeyFor(RUN_ID, 'push'));
  });

  it('retries the call in flight when no step is named', () => {
    given(inFlight).when(act('retry')).thenMatches((events) => assert.deepEqual(events[1], { type: 'StepRescheduled', data: { step: 'push', mode: 'retry', cleared: [] } }));
  });

  it('refuses a succeeded or canceled run, a step that succeeded, and a step the run is not at', () => {
    given(succeeded).when(act('retry')).thenThrows(DecisionError, /succeeded; resume it from a step instead/);
    const canceled = [...inFlight, ...after(inFlight, act('cancel')).events];
    given(canceled).when(act('retry')).thenThrows(DecisionError, /was canceled; resume it from a step instead/);
    given(failed).when(act('retry', { step: 'map' })).thenThrows(DecisionError, /step "map" succeeded; resume from it to run it again/);
    given(failed).when(act('retry', { step: 'check' })).thenThrows(DecisionError, /step "check" is not the failed step or the one in flight \(push\)/);
  });
});

describe('operator actions: resume', () => {
  it('runs the step and everything after it again, as a new execution with a new key', () => {
    const c = act('resume', { step: 'map' });
    given(failed).when(c).then([acted(c), { type: 'StepRescheduled', data: { step: 'map', mode: 'resume', cleared: ['map', 'push'] } }]);
    const { state } = after(failed, c);
    assert.deepEqual(state.outputs, {});
    assert.equal(state.executions.map, 2);
    assert.equal(state.executions.push, 2);
    assert.equal(state.cursor, 'map');
    assert.notEqual(idempotencyKeyFor(RUN_ID, 'push', 2), idempotencyKeyFor(RUN_ID, 'push'));
  });

  it('refuses a succeeded run, a missing step name and a step never reached', () => {
    given(succeeded).when(act('resume', { step: 'map' })).thenThrows(DecisionError, /it succeeded; start a new run to do it again/);
    given(failed).when(act('resume')).thenThrows(DecisionError, /name the step to resume from/);
    given(inFlight).when(act('resume', { step: 'done' })).thenThrows(DecisionError, /step "done" was never reached in this run/);
  });
});

describe('operator actions: skip', () => {
  it('records the output the operator gives and moves on to the next step', () => {
    const c = act('skip', { output: { status: 201, body: { orderId: 'ord_manual' } } });
    given(failed)
      .when(c)
      .then([acted(c), { type: 'StepSkipped', data: { step: 'push', output: { status: 201, body: { orderId: 'ord_manual' } }, bytes: 46, next: 'check' } }]);
    const { state } = after(failed, c);
    assert.equal(state.status, 'running');
    assert.equal(state.cursor, 'check');
    assert.deepEqual(state.outputs.push, { status: 201, body: { orderId: 'ord_manual' } });
  });

  it('finishes the run when the skipped step was the last', () => {
    const notify = validateDefinition({
      name: 'notify',
      steps: [{ id: 'notify', type: 'http_call', method: 'POST', url: 'http://127.0.0.1:9090/notify', retry: { maxAttempts: 1, initialDelayMs: 100, multiplier: 2, maxDelayMs: 100, jitter: 0 } }],
    });
    const log = asEvents(simulate(notify, [status(500)], { engine }));
    assert.equal(fold(log).status, 'failed');
    const c = act('skip', { output: { status: 202 } });
    specFor(createDecider(notify))
      .given(log)
      .when(c)
      .then([
        acted(c),
        { type: 'StepSkipped', data: { step: 'notify', output: { status: 202 }, bytes: 14, next: null } },
        { type: 'RunFinished', data: { status: 'succeeded', reason: null, output: null } },
      ]);
  });

  it('refuses without an output, a branch, a terminate, a step elsewhere, and a finished run', () => {
    given(failed).when(act('skip')).thenThrows(DecisionError, /give the output the skipped step stands for/);
    given(failed).when(act('skip', { step: 'map', output: {} })).thenThrows(DecisionError, /step "map" is not the step the run is at \(push\)/);
    const atCheck = [...failed, ...after(failed, act('skip', { output: { status: 201 } })).events];
    given(atCheck).when(act('skip', { output: true })).thenThrows(DecisionError, /step "check" is a branch/);
    given(succeeded).when(act('skip', { output: {} })).thenThrows(DecisionError, /it succeeded/);
  });
});

describe('operator actions: patch', () => {
  it('merges the patch into the input (JSON merge patch)', () => {
    const c = act('patch', { patch: { order: { sum: 40 } } });
    given(failed).when(c).then([acted(c), { type: 'InputPatched', data: { patch: { order: { sum: 40 } } } }]);
    assert.deepEqual(after(failed, c).state.input, { order: { id: 'o-1', sum: 40 } });
  });

  it('refuses a patch that is not an object, and a finished run it can no longer change', () => {
    given(failed).when(act('patch', { patch: [1] })).thenThrows(DecisionError, /a patch is a JSON object/);
    given(failed).when(act('patch', { patch: 'sum=40' })).thenThrows(DecisionError, /a patch is a JSON object/);
    given(succeeded).when(act('patch', { patch: { a: 1 } })).thenThrows(DecisionError, /its input can change nothing any more/);
  });

  it('mergePatch follows RFC 7386', () => {
    assert.deepEqual(mergePatch({ a: 1, b: { c: 2, d: 3 } }, { b: { c: null, e: 4 }, f: [1] }), { a: 1, b: { d: 3, e: 4 }, f: [1] });
    assert.deepEqual(mergePatch([1, 2], { a: 1 }), { a: 1 });
    assert.deepEqual(mergePatch({ a: 1 }, [2]), [2]);
    assert.equal(mergePatch({ a: 1 }, null), null);
  });
});

describe('helpers the actions rest on', () => {
  it('stepsFrom lists every step reachable from one, in definition order', () => {
    assert.deepEqual(stepsFrom(orderSync, 'push'), ['push', 'check', 'done', 'failed']);
    assert.deepEqual(stepsFrom(orderSync, 'done'), ['done']);
  });

  it('nextAction reads what a worker does off the state', () => {
    assert.equal(nextAction(fold(inFlight)).kind, 'send-request');
    assert.deepEqual(nextAction(fold(succeeded)), { kind: 'none' });
  });
});

describe('operator actions: the edges of where a run is', () => {
  const upTo = (batches: number) => asEvents(simulate(orderSync, [created()], { engine, maxBatches: batches }));
  const atDone = upTo(4); // map, push prepared, push answered, check: the run is at its terminate step
  const refusedOrder = asEvents(simulate(orderSync, [status(200)], { engine })); // check takes else: the run ends failed by design
  const canceled = [...inFlight, ...after(inFlight, act('cancel')).events];

  it('the fixtures are where their names say', () => {
    assert.equal(fold(atDone).cursor, 'done');
    assert.equal(fold(atDone).phase, 'ready');
    assert.equal(fold(refusedOrder).status, 'failed');
    assert.equal(fold(refusedOrder).failedStep ?? null, null);
  });

  it('skips the first step of a run that has not begun it', () => {
    const start = asEvents(simulate(orderSync, [], { engine, maxBatches: 0 }));
    const c = act('skip', { step: 'map', output: { id: 'o-1', total: 40 } });
    given(start).when(c).then([acted(c), { type: 'StepSkipped', data: { step: 'map', output: { id: 'o-1', total: 40 }, bytes: 23, next: 'push' } }]);
  });

  it('refuses to skip a terminate step, a canceled run, or a run with nothing to skip', () => {
    given(atDone).when(act('skip', { output: {} })).thenThrows(DecisionError, /^cannot skip run .*: step "done" ends the run; cancel the run instead$/);
    given(canceled).when(act('skip', { output: {} })).thenThrows(DecisionError, /: it was canceled$/);
    given(refusedOrder).when(act('skip', { output: {} })).thenThrows(DecisionError, /: no step is waiting, failed or in flight$/);
  });

  it('refuses to retry when no step failed or is in flight', () => {
    given(refusedOrder).when(act('retry')).thenThrows(DecisionError, /: no step has failed or is in flight$/);
    given(atDone).when(act('retry', { step: 'push' })).thenThrows(DecisionError, /step "push" succeeded/);
  });

  it('resumes from any step the run reached: the one in flight, the one it is at, the failed one, the one it waits on', () => {
    const resumed = (log: RunEvent[], step: string, d = decider) => specFor(d).given(log).when(act('resume', { step })).thenMatches(() => undefined)[1];
    assert.deepEqual(resumed(inFlight, 'push'), { type: 'StepRescheduled', data: { step: 'push', mode: 'resume', cleared: ['push'] } });
    assert.deepEqual(resumed(atDone, 'done'), { type: 'StepRescheduled', data: { step: 'done', mode: 'resume', cleared: ['done'] } });
    assert.deepEqual(resumed(failed, 'push'), { type: 'StepRescheduled', data: { step: 'push', mode: 'resume', cleared: ['push'] } });
    const waiting = asEvents(simulate(withDelay, [], { engine, maxBatches: 1 }));
    assert.equal(fold(waiting).phase, 'awaiting_timer');
    assert.deepEqual(resumed(waiting, 'wait', createDecider(withDelay)), { type: 'StepRescheduled', data: { step: 'wait', mode: 'resume', cleared: ['wait'] } });
    given(atDone).when(act('resume', { step: 'failed' })).thenThrows(DecisionError, /step "failed" was never reached/);
  });

  it('refuses to patch or retry a canceled run, and to cancel it again', () => {
    given(canceled).when(act('patch', { patch: { a: 1 } })).thenThrows(DecisionError, /: it was canceled; its input can change nothing any more$/);
    given(canceled).when(act('retry')).thenThrows(DecisionError, /: it was canceled; resume it from a step instead$/);
    given(canceled).when(act('cancel')).thenThrows(DecisionError, /: it already was canceled$/);
    given(refusedOrder).when(act('cancel')).thenThrows(DecisionError, /: it already failed$/);
  });

  it('an operator action replays as the command that made it', () => {
    const c = act('patch', { patch: { order: { sum: 40 } } });
    const [event] = after(failed, c).events;
    assert.deepEqual(commandOf(event), c);
  });
});
