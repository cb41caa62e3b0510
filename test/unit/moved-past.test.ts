import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { movedPastStep } from '../../support/moved-past';

/*
 * Whether an armed moment of a step can still come, judged from the run's log: a step an operator opened again
 * (a retry, a resume) is ahead of the run, not behind it.
 */

type Ev = [type: string, data?: Record<string, unknown>];
const log = (events: Ev[]) => events.map(([type, data], i) => ({ seq: i + 1, type, data: data ?? {} })) as never;

const failedAtPush: Ev[] = [
  ['RunStarted'],
  ['StepStarted', { step: 'map' }],
  ['StepSucceeded', { step: 'map' }],
  ['StepStarted', { step: 'push' }],
  ['HttpRequestPrepared', { step: 'push' }],
  ['HttpResponseRecorded', { step: 'push' }],
  ['StepFailed', { step: 'push' }],
  ['RunFinished'],
  ['OperatorActed', { step: 'push' }],
];

describe('a run that moved past a step', () => {
  it('has not, for a step an operator retried, though its earlier attempt failed', () => {
    assert.equal(movedPastStep(log([...failedAtPush, ['StepRescheduled', { step: 'push', mode: 'retry', cleared: [] }]]), 'push'), false);
  });

  it('has not, for the steps a resume from an earlier step clears', () => {
    const resumed = log([...failedAtPush, ['StepRescheduled', { step: 'map', mode: 'resume', cleared: ['map', 'push'] }]]);
    assert.equal(movedPastStep(resumed, 'map'), false);
    assert.equal(movedPastStep(resumed, 'push'), false);
  });

  it('has, for a step it went on from that nobody opened again', () => {
    assert.equal(movedPastStep(log(failedAtPush.slice(0, 5)), 'map'), true);
    assert.equal(movedPastStep(log([...failedAtPush, ['StepRescheduled', { step: 'push', mode: 'retry', cleared: [] }]]), 'map'), true);
  });

  it('has not, for a step with no result yet', () => {
    assert.equal(movedPastStep(log(failedAtPush.slice(0, 5)), 'push'), false);
  });
});
