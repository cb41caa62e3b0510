import { Then } from '@cucumber/cucumber';
import { expect } from 'expect';
import type { ReplayWorld } from '../support/world';

/* What users see about a run once it settles. */

Then('the run {outcome}', async function (this: ReplayWorld, status: string) {
  const view = await this.waitUntilFinished();
  // on failure, say why it ended as it did, not only how
  expect({ status: view.status, ...(view.status !== status && view.result?.reason ? { because: view.result.reason } : {}) }).toEqual({ status });
});

Then('the run fails because {string}', async function (this: ReplayWorld, reason: string) {
  const view = await this.waitUntilFinished();
  expect(view.status).toBe('failed');
  expect(view.result?.reason ?? '').toContain(reason);
});

Then('every run succeeds', async function (this: ReplayWorld) {
  expect(this.runs.length).toBeGreaterThan(0);
  for (const r of this.runs) {
    const view = await this.waitUntilFinished(r.runId);
    expect({ run: r.runId, status: view.status, ...(view.status !== 'succeeded' && view.result?.reason ? { because: view.result.reason } : {}) }).toEqual({
      run: r.runId,
      status: 'succeeded',
    });
  }
});

/*
 * "Went through" a step means the step has a result the run went on from: it succeeded, or an operator skipped it
 * (the output they gave stands for it). A step that failed, was only started, or was never reached was not gone
 * through: a run that failed at "push" did not go through "push". The step must be one of the run's pinned
 * workflow, so a misspelt name fails instead of making the negative check always hold.
 */
Then('the run went through {step}', async function (this: ReplayWorld, step: string) {
  await this.expectStepOfRun(step);
  const view = await this.waitUntilFinished();
  expect(Object.keys(view.outputs)).toContain(step);
});

Then('the run did not go through {step}', async function (this: ReplayWorld, step: string) {
  await this.expectStepOfRun(step);
  const view = await this.waitUntilFinished();
  expect(Object.keys(view.outputs)).not.toContain(step);
});

Then('the run is waiting in {step}', async function (this: ReplayWorld, step: string) {
  // a finished run, or one resting elsewhere, never gets there by itself: said at once, with where it is
  await this.waitUntilRunStands(`wait in "${step}"`, (v) => v.status === 'waiting' && v.currentStep === step);
});

Then('the run is pinned to version {int}', async function (this: ReplayWorld, version: number) {
  const view = await this.view();
  expect(view.version).toBe(version);
});

Then('the output of {step} is:', async function (this: ReplayWorld, step: string, expected: string) {
  const view = await this.waitUntilFinished();
  expect(view.outputs[step]).toEqual(JSON.parse(expected));
});

Then('{step} was attempted {int} time(s)', async function (this: ReplayWorld, step: string, attempts: number) {
  await this.expectStepOfRun(step);
  const view = await this.waitUntilFinished();
  expect({ step, attempts: view.attempts[step] ?? 0 }).toEqual({ step, attempts });
});
