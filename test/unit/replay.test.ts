import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateDefinition } from '../../src/domain/definition';
import { UnknownEventTypeError, type RecordedEvent } from '../../src/domain/events';
import { describeDifference, replayLog, verifyLog } from '../../src/domain/replay';
import { created, orderSync, RUN_ID, simulate, status, withDelay } from './fixtures';

const changed = (patch: (steps: any[]) => void) => {
  const raw = JSON.parse(JSON.stringify(orderSync));
  patch(raw.steps);
  return validateDefinition(raw);
};

describe('replay and verifyLog', () => {
  it('a run re-decides to exactly its log', () => {
    const events = simulate(orderSync, [created()]);
    const report = verifyLog(RUN_ID, events, orderSync);
    assert.equal(report.ok, true, JSON.stringify(report.divergence));
    assert.equal(report.chainBreak, null);
    assert.equal(report.divergence, null);
    assert.equal(report.definitionChanged, false);
    assert.equal(report.state.status, 'succeeded');
    assert.deepEqual(report.state.result?.output, { orderId: 'ord_1' });
    assert.deepEqual(replayLog(events), report.state);
  });

  it('retries, timers and a failed run verify too', () => {
    for (const events of [
      simulate(orderSync, [status(503), { kind: 'error', code: 'TIMEOUT', message: 'slow' }, created()], { jitter: 0.73 }),
      simulate(orderSync, [status(500), status(500), status(500)]),
      simulate(orderSync, [status(422)]),
      simulate(withDelay, [], { input: { n: 5 } }),
    ]) {
      const def = events[0].data && (events[0].data as { workflow: string }).workflow === 'with-delay' ? withDelay : orderSync;
      const report = verifyLog(RUN_ID, events, def);
      assert.equal(report.ok, true, JSON.stringify(report.divergence));
      assert.equal(report.state.phase, 'done');
    }
  });

  it('a changed definition diverges at the first event it would decide differently', () => {
    const events = simulate(orderSync, [created()]);
    const def = changed((steps) => (steps[0].expression = '{id: input.order.id, total: input.order.sum, currency: `"EUR"`}'));
    const report = verifyLog(RUN_ID, events, def);
    assert.equal(report.ok, false);
    assert.equal(report.definitionChanged, true);
    assert.equal(report.divergence?.seq, 3, 'StepSucceeded of map is event 3');
    assert.match(report.divergence!.reason, /^data\.output\.currency: engine decides "EUR", log has nothing$/);
    assert.deepEqual((report.divergence!.expected as any).data.output, { currency: 'EUR', id: 'o-1', total: 42 });
    assert.deepEqual((report.divergence!.recorded as any).data.output, { id: 'o-1', total: 42 });
  });

  it('a changed branch target diverges at the branch decision', () => {
    const events = simulate(orderSync, [created()]);
    const def = changed((steps) => (steps[2].condition = 'steps.push.status == `200`'));
    const report = verifyLog(RUN_ID, events, def);
    const branchDecision = events.find((e) => e.type === 'StepSucceeded' && (e.data as { step: string }).step === 'check')!;
    assert.equal(report.divergence?.seq, branchDecision.seq);
    assert.match(report.divergence!.reason, /^data\.next: engine decides "failed", log has "done"$/);
  });

  it('a changed retry policy diverges where a retry would be decided differently', () => {
    const events = simulate(orderSync, [status(503), created()]);
    const def = changed((steps) => (steps[1].retry.maxAttempts = 1));
    const report = verifyLog(RUN_ID, events, def);
    const retry = events.find((e) => e.type === 'RetryScheduled')!;
    assert.equal(report.divergence?.seq, retry.seq);
    assert.match(report.divergence!.reason, /^type: engine decides "StepFailed", log has "RetryScheduled"$/);
  });

  it('a decision recorded where an input belongs is named', () => {
    const events = simulate(orderSync, [created()]);
    const spliced = [...events.slice(0, 1), ...events.slice(2)].map((e, i) => ({ ...e, seq: i + 1 }));
    const report = verifyLog(RUN_ID, spliced, orderSync);
    assert.equal(report.divergence?.seq, 2);
    assert.match(report.divergence!.reason, /StepSucceeded is recorded where the engine expects an input/);
  });

  it('a truncated log says what the engine would still record', () => {
    const events = simulate(orderSync, [created()]).slice(0, 2);
    const report = verifyLog(RUN_ID, events, orderSync);
    assert.equal(report.divergence?.seq, 3);
    assert.match(report.divergence!.reason, /the log ends, but the engine would record StepSucceeded/);
  });

  it('an unknown event type is a clear divergence, and a clear error when folding', () => {
    const events = simulate(orderSync, [created()]);
    const alien: RecordedEvent = { ...events[1], type: 'StepTeleported' as never };
    const log = [events[0], alien, ...events.slice(2)];
    const report = verifyLog(RUN_ID, log, orderSync);
    assert.equal(report.ok, false);
    assert.equal(report.divergence?.seq, 2);
    assert.equal(report.divergence?.reason, 'event 2 has type "StepTeleported", which this engine does not know');
    assert.throws(() => replayLog(log), (e: unknown) => e instanceof UnknownEventTypeError && e.seq === 2 && e.eventType === 'StepTeleported');
  });

  it('an event of an unknown schema version is refused by name', () => {
    const events = simulate(orderSync, [created()]);
    events[2] = { ...events[2], version: 2 };
    assert.throws(() => replayLog(events), /event 3 has type "StepSucceeded v2", which this engine does not know/);
  });

  it('a tampered log is reported as a chain break even when replay agrees', () => {
    const events = simulate(orderSync, [created()]);
    events[0] = { ...events[0], recordedAt: '2035-01-01T00:00:00.000Z' };
    const report = verifyLog(RUN_ID, events, orderSync);
    assert.equal(report.ok, false);
    assert.equal(report.chainBreak?.seq, 1);
    assert.equal(report.divergence, null);
  });

  it('describeDifference names the first differing path', () => {
    assert.equal(describeDifference({ a: 1, b: { c: 2 } }, { a: 1, b: { c: 3 } }), 'b.c: engine decides 2, log has 3');
    assert.equal(describeDifference([1, 2], [1, 2]), 'the events differ');
  });
});
