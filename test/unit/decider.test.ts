import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backoffDelayMs } from '../../src/domain/backoff';
import { createDecider, DecisionError, idempotencyKeyFor, nextAction } from '../../src/domain/decider';
import { validateDefinition } from '../../src/domain/definition';
import type { RunEvent } from '../../src/domain/events';
import { specFor } from './decider-spec';
import { at, created, INPUT, orderSync, RUN_ID, runStarted, status, T0, withDelay } from './fixtures';

const given = specFor(createDecider(orderSync)).given;
const delayed = specFor(createDecider(withDelay)).given;
const retry = orderSync.steps[1].type === 'http_call' ? orderSync.steps[1].retry : (undefined as never);
const KEY = idempotencyKeyFor(RUN_ID, 'push');

// the log of order-sync up to each point
const started = [runStarted(orderSync)];
const mapped: RunEvent[] = [
  ...started,
  { type: 'StepStarted', data: { step: 'map', stepType: 'transform', at: at(10) } },
  { type: 'StepSucceeded', data: { step: 'map', output: { id: 'o-1', total: 42 }, next: 'push' } },
];
const prepared = (attempt: number): RunEvent => ({
  type: 'HttpRequestPrepared',
  data: { step: 'push', attempt, idempotencyKey: KEY, method: 'POST', url: 'http://127.0.0.1:9090/orders', headers: {}, body: { id: 'o-1', total: 42 }, timeoutMs: 10_000 },
});
const pushing: RunEvent[] = [...mapped, { type: 'StepStarted', data: { step: 'push', stepType: 'http_call', at: at(20) } }, prepared(1)];
const response = (attempt: number, outcome = created(), jitter = 0.5, ms = 30) => ({
  type: 'RecordHttpResult' as const,
  data: { step: 'push', attempt, at: at(ms), durationMs: 7, jitter, outcome },
});
const recorded = (attempt: number, outcome = created(), jitter = 0.5, ms = 30): RunEvent => ({ type: 'HttpResponseRecorded', data: response(attempt, outcome, jitter, ms).data });
const pushed: RunEvent[] = [
  ...pushing,
  recorded(1),
  { type: 'StepSucceeded', data: { step: 'push', output: { status: 201, body: { orderId: 'ord_1' } }, next: 'check' } },
];
const execute = (ms: number) => ({ type: 'ExecuteStep' as const, data: { at: at(ms) } });

describe('decider: starting a run', () => {
  it('records RunStarted carrying the webhook input', () => {
    const e = runStarted(orderSync) as Extract<RunEvent, { type: 'RunStarted' }>;
    given([]).when({ type: 'StartRun', data: e.data }).then([e]);
  });

  it('refuses to start a run twice', () => {
    const e = runStarted(orderSync) as Extract<RunEvent, { type: 'RunStarted' }>;
    given(started).when({ type: 'StartRun', data: e.data }).thenThrows(DecisionError, /already started/);
  });
});

describe('decider: transform', () => {
  it('evaluates the JMESPath expression over the input and moves to next', () => {
    given(started).when(execute(10)).then(mapped.slice(1));
  });

  it('a last transform finishes the run successfully', () => {
    const d = createDecider(validateDefinition({ name: 'one', steps: [{ id: 'only', type: 'transform', expression: 'input.n' }] }));
    specFor(d)
      .given([runStarted(d.definition, { n: 7 })])
      .when(execute(1))
      .then([
        { type: 'StepStarted', data: { step: 'only', stepType: 'transform', at: at(1) } },
        { type: 'StepSucceeded', data: { step: 'only', output: 7, next: null } },
        { type: 'RunFinished', data: { status: 'succeeded', reason: null, output: null } },
      ]);
  });

  it('an expression that fails at run time fails the step and the run', () => {
    const d = createDecider(validateDefinition({ name: 'bad', steps: [{ id: 'calc', type: 'transform', expression: 'abs(input.n)' }] }));
    specFor(d)
      .given([runStarted(d.definition, { n: 'not a number' })])
      .when(execute(1))
      .thenMatches((events) => {
        assert.deepEqual(events.map((e) => e.type), ['StepStarted', 'StepFailed', 'RunFinished']);
        const finished = events[2] as Extract<RunEvent, { type: 'RunFinished' }>;
        assert.equal(finished.data.status, 'failed');
        assert.match(finished.data.reason!, /step "calc" could not be evaluated/);
      });
  });

  it('refuses to execute a step when none is ready', () => {
    given(pushing).when(execute(25)).thenThrows(DecisionError, /no step ready/);
  });
});

describe('decider: http_call', () => {
  it('prepares the request with a stable idempotency key and the evaluated body', () => {
    given(mapped).when(execute(20)).then(pushing.slice(mapped.length));
    assert.equal(KEY, idempotencyKeyFor(RUN_ID, 'push'), 'the key depends on run and step only');
  });

  it('a 2xx response succeeds the step with status and body', () => {
    given(pushing).when(response(1)).then(pushed.slice(pushing.length));
  });

  it('a 5xx schedules a retry with the backoff of the recorded jitter draw', () => {
    const delay = backoffDelayMs(retry, 2, 0.25);
    given(pushing)
      .when(response(1, status(503), 0.25))
      .then([
        recorded(1, status(503), 0.25),
        { type: 'RetryScheduled', data: { step: 'push', attempt: 2, timerId: 'push:retry:2', delayMs: delay, dueAt: at(30 + delay), reason: 'HTTP 503' } },
      ]);
  });

  it('the jitter draw is recorded, so a different draw gives a different (replayable) delay', () => {
    const low = given(pushing).when(response(1, status(503), 0)).thenMatches(() => undefined);
    const high = given(pushing).when(response(1, status(503), 0.99)).thenMatches(() => undefined);
    const delayOf = (events: RunEvent[]) => (events[1] as Extract<RunEvent, { type: 'RetryScheduled' }>).data.delayMs;
    assert.equal((low[0] as Extract<RunEvent, { type: 'HttpResponseRecorded' }>).data.jitter, 0);
    assert.ok(delayOf(low) < delayOf(high), `${delayOf(low)} < ${delayOf(high)}`);
  });

  it('a network error is retryable', () => {
    given(pushing)
      .when(response(1, { kind: 'error', code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' }))
      .thenMatches((events) => {
        assert.equal(events[1].type, 'RetryScheduled');
        assert.match((events[1] as Extract<RunEvent, { type: 'RetryScheduled' }>).data.reason, /ECONNREFUSED/);
      });
  });

  it('429 and 408 are retried', () => {
    for (const code of [429, 408]) {
      given(pushing).when(response(1, status(code))).thenMatches((events) => assert.equal(events[1].type, 'RetryScheduled'));
    }
  });

  it('a 4xx is refused at once: no retry, the run fails', () => {
    const reason = 'step "push" was refused: HTTP 400';
    given(pushing)
      .when(response(1, status(400)))
      .then([
        recorded(1, status(400)),
        { type: 'StepFailed', data: { step: 'push', reason, attempts: 1 } },
        { type: 'RunFinished', data: { status: 'failed', reason, output: null } },
      ]);
  });

  it('409 is a refusal unless the conflictIsSuccess flag is set', () => {
    given(pushing).when(response(1, status(409))).thenMatches((events) => assert.equal(events[1].type, 'StepFailed'));
    specFor(createDecider(orderSync, { conflictIsSuccess: true }))
      .given(pushing)
      .when(response(1, status(409)))
      .thenMatches((events) => assert.equal(events[1].type, 'StepSucceeded'));
  });

  it('firing the retry timer prepares the next attempt with the same idempotency key', () => {
    const delay = backoffDelayMs(retry, 2, 0.5);
    const waiting: RunEvent[] = [
      ...pushing,
      recorded(1, status(503)),
      { type: 'RetryScheduled', data: { step: 'push', attempt: 2, timerId: 'push:retry:2', delayMs: delay, dueAt: at(30 + delay), reason: 'HTTP 503' } },
    ];
    given(waiting)
      .when({ type: 'FireTimer', data: { timerId: 'push:retry:2', at: at(30 + delay) } })
      .then([{ type: 'TimerFired', data: { step: 'push', timerId: 'push:retry:2', at: at(30 + delay) } }, prepared(2)]);
  });

  it('retries until maxAttempts, then gives up and fails the run', () => {
    const third: RunEvent[] = [...pushing];
    let ms = 30;
    for (const attempt of [1, 2]) {
      const delay = backoffDelayMs(retry, attempt + 1, 0.5);
      third.push(recorded(attempt, status(503), 0.5, ms), {
        type: 'RetryScheduled',
        data: { step: 'push', attempt: attempt + 1, timerId: `push:retry:${attempt + 1}`, delayMs: delay, dueAt: at(ms + delay), reason: 'HTTP 503' },
      });
      ms += delay;
      third.push({ type: 'TimerFired', data: { step: 'push', timerId: `push:retry:${attempt + 1}`, at: at(ms) } }, prepared(attempt + 1));
      ms += 10;
    }
    const reason = 'step "push" gave up after 3 attempts: HTTP 503';
    given(third)
      .when(response(3, status(503), 0.5, ms))
      .then([
        recorded(3, status(503), 0.5, ms),
        { type: 'StepFailed', data: { step: 'push', reason, attempts: 3 } },
        { type: 'RunFinished', data: { status: 'failed', reason, output: null } },
      ]);
  });

  it('refuses a stale response: wrong attempt, wrong step, or nothing pending', () => {
    given(pushing).when(response(2)).thenThrows(DecisionError, /not waiting for a response of push attempt 2/);
    given(pushing).when({ type: 'RecordHttpResult', data: { ...response(1).data, step: 'map' } }).thenThrows(DecisionError, /not waiting/);
    given(pushed).when(response(1)).thenThrows(DecisionError, /not waiting/);
  });
});

describe('decider: branch and terminate', () => {
  it('a truthy condition takes then', () => {
    given(pushed)
      .when(execute(40))
      .then([
        { type: 'StepStarted', data: { step: 'check', stepType: 'branch', at: at(40) } },
        { type: 'StepSucceeded', data: { step: 'check', output: { condition: true, next: 'done' }, next: 'done' } },
      ]);
  });

  it('a falsy condition takes else', () => {
    const accepted: RunEvent[] = [
      ...pushing,
      recorded(1, { kind: 'response', status: 202, headers: {}, body: null }),
      { type: 'StepSucceeded', data: { step: 'push', output: { status: 202, body: null }, next: 'check' } },
    ];
    given(accepted)
      .when(execute(40))
      .thenMatches((events) => assert.deepEqual(events[1].data, { step: 'check', output: { condition: false, next: 'failed' }, next: 'failed' }));
  });

  const branched: RunEvent[] = [
    ...pushed,
    { type: 'StepStarted', data: { step: 'check', stepType: 'branch', at: at(40) } },
    { type: 'StepSucceeded', data: { step: 'check', output: { condition: true, next: 'done' }, next: 'done' } },
  ];

  it('terminate finishes the run with its status and evaluated output', () => {
    given(branched)
      .when(execute(50))
      .then([
        { type: 'StepStarted', data: { step: 'done', stepType: 'terminate', at: at(50) } },
        { type: 'StepSucceeded', data: { step: 'done', output: { status: 'succeeded' }, next: null } },
        { type: 'RunFinished', data: { status: 'succeeded', reason: null, output: { orderId: 'ord_1' } } },
      ]);
  });

  it('a failed terminate carries its reason', () => {
    const toFailed: RunEvent[] = [...pushed, { type: 'StepStarted', data: { step: 'check', stepType: 'branch', at: at(40) } }, { type: 'StepSucceeded', data: { step: 'check', output: { condition: false, next: 'failed' }, next: 'failed' } }];
    given(toFailed)
      .when(execute(50))
      .thenMatches((events) => assert.deepEqual(events[2], { type: 'RunFinished', data: { status: 'failed', reason: 'not created', output: null } }));
  });

  it('a finished run has nothing left to do', () => {
    const done = given(branched).when(execute(50)).thenMatches(() => undefined);
    const finished = [...branched, ...done];
    given(finished).when(execute(60)).thenThrows(DecisionError, /phase done/);
    assert.deepEqual(nextAction(finished.reduce(createDecider(orderSync).evolve, createDecider(orderSync).initialState())), { kind: 'none' });
  });
});

describe('decider: delay and timers', () => {
  const begun = [runStarted(withDelay, { n: 3 })];
  const scheduled: RunEvent[] = [
    ...begun,
    { type: 'StepStarted', data: { step: 'wait', stepType: 'delay', at: T0 } },
    { type: 'TimerScheduled', data: { step: 'wait', timerId: 'wait:delay', dueAt: at(60_000) } },
  ];

  it('a delay step schedules a durable timer at start + duration', () => {
    delayed(begun).when({ type: 'ExecuteStep', data: { at: T0 } }).then(scheduled.slice(1));
  });

  it('a timer that is not due yet is refused', () => {
    delayed(scheduled).when({ type: 'FireTimer', data: { timerId: 'wait:delay', at: at(59_999) } }).thenThrows(DecisionError, /is due at .* not yet/);
  });

  it('an unknown timer is refused', () => {
    delayed(scheduled).when({ type: 'FireTimer', data: { timerId: 'other', at: at(60_000) } }).thenThrows(DecisionError, /no pending timer other/);
  });

  it('a due timer completes the delay and the run moves on', () => {
    delayed(scheduled)
      .when({ type: 'FireTimer', data: { timerId: 'wait:delay', at: at(60_001) } })
      .then([
        { type: 'TimerFired', data: { step: 'wait', timerId: 'wait:delay', at: at(60_001) } },
        { type: 'StepSucceeded', data: { step: 'wait', output: { waitedMs: 60_000 }, next: 'after' } },
      ]);
  });

  it('the waiting state says when to wake', () => {
    const d = createDecider(withDelay);
    const state = scheduled.reduce(d.evolve, d.initialState());
    assert.equal(state.status, 'waiting');
    assert.deepEqual(nextAction(state), { kind: 'fire-timer', timerId: 'wait:delay', dueAt: at(60_000) });
  });
});

describe('decider: purity', () => {
  it('the same history and command always give the same events', () => {
    const a = createDecider(orderSync).decide(execute(10), started.reduce(createDecider(orderSync).evolve, createDecider(orderSync).initialState()));
    const b = createDecider(orderSync).decide(execute(10), started.reduce(createDecider(orderSync).evolve, createDecider(orderSync).initialState()));
    assert.deepEqual(a, b);
    assert.deepEqual(INPUT, { order: { id: 'o-1', sum: 42 } }, 'the input is not mutated');
  });
});
