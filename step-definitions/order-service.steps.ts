import { Given, Then } from '@cucumber/cucumber';
import { expect } from 'expect';
import type { ReplayWorld } from '../support/world';

/* The order service: the target the workflows call, scriptable and watchful. */

function httpSteps(world: ReplayWorld): string[] {
  const r = world.run;
  return world.workflow(r.project, r.workflow).definition.steps.filter((s) => s.type === 'http_call').map((s) => s.id);
}

Given('the order service fails {int} times', async function (this: ReplayWorld, times: number) {
  const target = await this.orderService();
  target.script('*', { kind: 'fail', status: 503, times });
  this.recordFault(`order service answers 503 ${times} times`, async () =>
    target.requests.filter((r) => r.outcome === 'failed').length >= times ? 'answered 503' : null,
  );
});

Given('the order service answers every order with {int}', async function (this: ReplayWorld, status: number) {
  const target = await this.orderService();
  target.script('*', { kind: 'respond', status, body: { error: { code: status === 409 ? 'conflict' : 'refused', message: 'order refused' } }, times: 1000 });
});

Given('the order service stalls on the first attempt', async function (this: ReplayWorld) {
  const target = await this.orderService();
  target.script('*', { kind: 'stall', times: 1 });
  this.recordFault('order service stalls once', async () => (target.requests.some((r) => r.outcome === 'stalled') ? 'stalled' : null));
});

Given('the order service resets the connection {int} times', async function (this: ReplayWorld, times: number) {
  const target = await this.orderService();
  target.script('*', { kind: 'reset', times });
  this.recordFault(`order service resets ${times} connections`, async () =>
    target.requests.filter((r) => r.outcome === 'reset').length >= times ? 'reset' : null,
  );
});

Given('the order service takes the order but answers too late', async function (this: ReplayWorld) {
  const target = await this.orderService();
  // longer than the step's per-attempt timeout: the order is taken, the answer is lost
  target.script('*', { kind: 'slow', ms: 3_000, times: 1 });
  this.recordFault('order service answers after the timeout', async () =>
    target.requests.length >= 2 && target.effects().length >= 1 ? 'slow' : null,
  );
});

Then('the order service received the order exactly once', async function (this: ReplayWorld) {
  await this.waitUntilFinished();
  const target = await this.orderService();
  for (const step of httpSteps(this)) {
    const key = this.idempotencyKey(step);
    const attempts = target.requests.filter((r) => r.idempotencyKey === key).length;
    if (attempts === 0) continue; // a branch may skip a call
    expect({ step, effects: target.effects().filter((e) => e.idempotencyKey === key).length }).toEqual({ step, effects: 1 });
  }
  expect(target.effects().length).toBeGreaterThan(0);
});

Then('the order service saw {int} attempts but took the order once', async function (this: ReplayWorld, attempts: number) {
  await this.waitUntilFinished();
  const target = await this.orderService();
  const key = this.idempotencyKey(httpSteps(this)[0]);
  expect(target.requests.filter((r) => r.idempotencyKey === key).length).toBe(attempts);
  expect(target.effects().filter((e) => e.idempotencyKey === key).length).toBe(1);
});

Then('every order reached the order service exactly once', async function (this: ReplayWorld) {
  const target = await this.orderService();
  for (const r of this.runs) {
    await this.waitUntilFinished(r.runId);
    const key = this.idempotencyKey(httpSteps(this)[0], r.runId);
    expect({ run: r.runId, effects: target.effects().filter((e) => e.idempotencyKey === key).length }).toEqual({ run: r.runId, effects: 1 });
  }
});

