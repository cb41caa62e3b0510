import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { createDecider, engineInfo, fold, type RunState } from '../../src/domain/decider';
import { validateDefinition, type WorkflowDefinition } from '../../src/domain/definition';
import type { RecordedEvent, RunEvent } from '../../src/domain/events';
import { relink } from '../../src/domain/hash-chain';
import { toRunView } from '../../src/domain/run-view';
import { verifyLog } from '../../src/domain/replay';
import { created, RUN_ID, runStarted, simulate, status, T0 } from './fixtures';

/*
 * A workflow's timeoutMs (semantics 5): each run has a deadline, its start (or an operator's sending it back to
 * work) plus timeoutMs. A run still unfinished then fails, decided from the time it was seen to have passed, and
 * nothing starts or fires after it; a request already sent has its answer recorded first.
 */

type Of<T extends RunEvent['type']> = Extract<RunEvent, { type: T }>['data'];
const plain = (events: RecordedEvent[]): RunEvent[] => events.map((e) => ({ type: e.type, data: e.data }) as RunEvent);
const first = <T extends RunEvent['type']>(events: RunEvent[], type: T): Of<T> => {
  const e = events.find((x) => x.type === type);
  assert.ok(e, `no ${type} in ${events.map((x) => x.type).join(', ')}`);
  return e.data as Of<T>;
};
const ms = (iso: string): number => Date.parse(iso) - Date.parse(T0);

/** A reminder that waits a day before it sends, due within five seconds. */
const reminder = (timeoutMs: number | null = 5_000): WorkflowDefinition =>
  validateDefinition({
    name: 'send-reminder',
    ...(timeoutMs === null ? {} : { timeoutMs }),
    steps: [
      { id: 'wait', type: 'delay', durationMs: 86_400_000, next: 'send' },
      { id: 'send', type: 'transform', expression: '{sent: order.id}' },
    ],
  });

/** An order pushed to a service that may ask to be tried again an hour later. */
const push = (timeoutMs = 5_000): WorkflowDefinition =>
  validateDefinition({
    name: 'push-order',
    timeoutMs,
    steps: [
      { id: 'push', type: 'http_call', method: 'POST', url: 'https://orders.example.com/v1/orders', body: 'order', retry: { maxAttempts: 3, initialDelayMs: 3_600_000, jitter: 0 } },
    ],
  });

const semantics = (n: number) => ({ engine: { ...engineInfo(), semantics: n } });

describe('a run deadline (a workflow timeoutMs, semantics 5)', () => {
  it('a run records its deadline, its start plus timeoutMs', () => {
    const events = plain(simulate(reminder(), [], semantics(5)));
    assert.equal(first(events, 'RunStarted').deadline, '2030-01-01T00:00:05.000Z');
  });

  it('a run waiting past its deadline fails at the deadline, in the step it waits in', () => {
    const events = plain(simulate(reminder(), [], semantics(5)));
    assert.deepEqual(events.map((e) => e.type), ['RunStarted', 'StepStarted', 'TimerScheduled', 'DeadlinePassed', 'StepFailed', 'RunFinished']);
    const passed = first(events, 'DeadlinePassed');
    assert.equal(passed.deadline, '2030-01-01T00:00:05.000Z');
    assert.ok(ms(passed.at) >= 5_000 && ms(passed.at) < 86_400_000, `passed at ${passed.at}`);
    const reason = 'the run did not finish within its 5000 ms: its deadline 2030-01-01T00:00:05.000Z passed while it was waiting in step "wait"';
    assert.deepEqual(first(events, 'StepFailed'), { step: 'wait', reason, attempts: 0 });
    assert.deepEqual(first(events, 'RunFinished'), { status: 'failed', reason, output: null });
    assert.equal(fold(events).failedStep, 'wait');
  });

  it('a waiting run is woken by its deadline when that comes before its timer', () => {
    const events = plain(simulate(reminder(), [], { ...semantics(5), maxBatches: 1 }));
    const state = fold(events);
    assert.equal(state.phase, 'awaiting_timer');
    assert.equal(toRunView(state, events.length).wakeAt, '2030-01-01T00:00:05.000Z');
    const later = plain(simulate(reminder(100_000_000), [], { ...semantics(5), maxBatches: 1 }));
    assert.equal(toRunView(fold(later), later.length).wakeAt, state.pendingTimer!.dueAt, 'a deadline after the timer leaves the timer to wake it');
  });

  it('a run waiting to try a call again fails at its deadline, the call not sent again', () => {
    const events = plain(simulate(push(), [status(503)], semantics(5)));
    assert.deepEqual(events.map((e) => e.type), ['RunStarted', 'StepStarted', 'HttpRequestPrepared', 'HttpResponseRecorded', 'RetryScheduled', 'DeadlinePassed', 'StepFailed', 'RunFinished']);
    assert.match(first(events, 'StepFailed').reason, /passed while it was waiting to try step "push" again$/);
    assert.equal(first(events, 'StepFailed').attempts, 1);
  });

  it('a run of semantics 4 has no deadline, whatever its definition says', () => {
    const events = plain(simulate(reminder(), [], semantics(4)));
    assert.equal(first(events, 'RunStarted').deadline, undefined);
    assert.equal(events.at(-1)!.type, 'RunFinished');
    assert.equal(first(events, 'RunFinished').status, 'succeeded');
  });

  it('a definition without timeoutMs gives no deadline', () => {
    const events = plain(simulate(reminder(null), [], semantics(5)));
    assert.equal(first(events, 'RunStarted').deadline, undefined);
    assert.equal(first(events, 'RunFinished').status, 'succeeded');
  });

  it('timeoutMs is at least 100 ms and at most 30 days', () => {
    assert.throws(() => reminder(99), /timeoutMs/);
    assert.throws(() => reminder(30 * 86_400_000 + 1), /timeoutMs/);
    assert.throws(() => reminder(1.5), /timeoutMs/);
  });
});

describe('a run deadline: what the decider refuses and allows', () => {
  const def = push();
  const decider = createDecider(def);
  const start = (): RunState => fold([runStarted(def)]);
  const startEvent = (runStarted(def) as Extract<RunEvent, { type: 'RunStarted' }>).data;
  const started = (): RunState => fold(decider.decide({ type: 'StartRun', data: { ...startEvent, engine: engineInfo() } }, fold([])));
  const after = (state: RunState, events: RunEvent[]): RunState => events.reduce(decider.evolve, state);
  const atMs = (n: number): string => new Date(Date.parse(T0) + n).toISOString();

  it('works the deadline out itself: a deadline given with the start is not taken', () => {
    const events = decider.decide({ type: 'StartRun', data: { ...startEvent, engine: engineInfo(), deadline: '2099-01-01T00:00:00.000Z' } }, fold([]));
    assert.equal(first(events, 'RunStarted').deadline, atMs(5_000));
    assert.equal(start().deadline, null, 'a start without semantics 5 (the first releases) has none');
  });

  it('starts no step and fires no timer at or after its deadline, and does not pass it before', () => {
    const s = started();
    assert.throws(() => decider.decide({ type: 'ExecuteStep', data: { at: atMs(5_000) } }, s), /passed its deadline 2030-01-01T00:00:05.000Z: it starts a step no more/);
    assert.throws(() => decider.decide({ type: 'PassDeadline', data: { at: atMs(4_999) } }, s), /deadline is 2030-01-01T00:00:05.000Z, not yet at/);
    assert.equal(decider.decide({ type: 'ExecuteStep', data: { at: atMs(4_999) } }, s)[0].type, 'StepStarted');
  });

  it('records the answer to a call sent before the deadline, then fails the run', () => {
    const sent = after(started(), decider.decide({ type: 'ExecuteStep', data: { at: atMs(10) } }, started()));
    const answered = decider.decide({ type: 'RecordHttpResult', data: { step: 'push', attempt: 1, at: atMs(6_000), durationMs: 5_990, jitter: 0, outcome: created() } }, sent);
    assert.deepEqual(answered.map((e) => e.type), ['HttpResponseRecorded', 'StepSucceeded', 'RunFinished'], 'a call that was answered counts, even late');
    const refused = decider.decide({ type: 'RecordHttpResult', data: { step: 'push', attempt: 1, at: atMs(6_000), durationMs: 5_990, jitter: 0, outcome: status(503) } }, sent);
    const waiting = after(sent, refused);
    assert.equal(waiting.phase, 'awaiting_timer');
    assert.throws(() => decider.decide({ type: 'FireTimer', data: { timerId: waiting.pendingTimer!.timerId, at: atMs(4_000_000) } }, waiting), /it fires a timer no more/);
  });

  it('leaves a paused run alone until it is unpaused, and a finished one for good', () => {
    const s = started();
    const paused = after(s, decider.decide({ type: 'Operate', data: { action: 'pause', by: 'ops@acme.example', reason: 'checking the order', at: atMs(1_000) } }, s));
    assert.throws(() => decider.decide({ type: 'PassDeadline', data: { at: atMs(9_000) } }, paused), /is paused: its deadline waits until it is unpaused/);
    const canceled = after(s, decider.decide({ type: 'Operate', data: { action: 'cancel', by: 'ops@acme.example', reason: 'duplicate order', at: atMs(1_000) } }, s));
    assert.throws(() => decider.decide({ type: 'PassDeadline', data: { at: atMs(9_000) } }, canceled), /has finished/);
  });

  it("an operator's retry of a run that ran out of time gives it a full timeoutMs again", () => {
    const s = started();
    const timedOut = after(s, decider.decide({ type: 'PassDeadline', data: { at: atMs(5_000) } }, s));
    assert.equal(timedOut.status, 'failed');
    const retried = decider.decide({ type: 'Operate', data: { action: 'retry', by: 'ops@acme.example', reason: 'the order service is back', at: atMs(60_000) } }, timedOut);
    assert.equal(first(retried, 'StepRescheduled').deadline, atMs(65_000));
    const again = after(timedOut, retried);
    assert.equal(again.deadline, atMs(65_000));
    assert.equal(decider.decide({ type: 'ExecuteStep', data: { at: atMs(60_010) } }, again)[0].type, 'StepStarted');
  });
});

describe('a run deadline on replay', () => {
  const key = { kid: 'k1', key: createHash('sha256').update('k1').digest() };
  const keys = (kid: string) => (kid === 'k1' ? key.key : null);
  const timedOut = () => relink(RUN_ID, simulate(reminder(), [], semantics(5)), key);

  it('a run that ran out of time verifies against its definition', () => {
    const report = verifyLog(RUN_ID, timedOut(), reminder(), { keys });
    assert.equal(report.ok, true, JSON.stringify(report));
    assert.equal(report.state.status, 'failed');
  });

  it('the same log replayed against a longer timeoutMs diverges at its start, naming the deadline', () => {
    const report = verifyLog(RUN_ID, timedOut(), reminder(10_000), { keys });
    assert.equal(report.divergence?.seq, 1);
    assert.equal(report.divergence?.reason, 'data.deadline: engine decides "2030-01-01T00:00:10.000Z", log has "2030-01-01T00:00:05.000Z"');
  });

  it('a deadline passed before its time is refused on replay', () => {
    const log = simulate(reminder(), [], semantics(5)).map((e) => (e.type === 'DeadlinePassed' ? ({ ...e, data: { ...e.data, at: '2030-01-01T00:00:04.000Z' } } as RecordedEvent) : e));
    const report = verifyLog(RUN_ID, relink(RUN_ID, log, key), reminder(), { keys });
    assert.equal(report.divergence?.seq, 4);
    assert.match(report.divergence!.reason, /^the engine refuses it today: run .*'s deadline is 2030-01-01T00:00:05.000Z, not yet at 2030-01-01T00:00:04.000Z$/);
  });
});
