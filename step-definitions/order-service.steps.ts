import { Given, Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import { untilStallsEnded } from '../support/moments';
import type { ReplayWorld } from '../support/world';

/* The order service: the target the workflows call, scriptable and watchful. */

function httpSteps(world: ReplayWorld): string[] {
  const r = world.run;
  return world.workflow(r.project, r.workflow).definition.steps.filter((s) => s.type === 'http_call').map((s) => s.id);
}

Given('the order service fails {int} time(s)', async function (this: ReplayWorld, times: number) {
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

When('the order service answers normally again', async function (this: ReplayWorld) {
  // every scripted trouble not yet spent (refusals, failures, stalls, resets) is dropped
  (await this.orderService()).clearScripts();
});

Given('the order service stalls on the first attempt', async function (this: ReplayWorld) {
  const target = await this.orderService();
  target.script('*', { kind: 'stall', times: 1 });
  this.recordFault('order service stalls once', async () => (target.requests.some((r) => r.outcome === 'stalled') ? 'stalled' : null));
});

Given('the order service resets the connection {int} time(s)', async function (this: ReplayWorld, times: number) {
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

/**
 * Exactly one effect for every call the run's log says the service took (a
 * 2xx output), none for calls it did not take, no key reused for a different
 * request, and no effect under a key that belongs to no run at all.
 * Returns how many effects the run was expected to have.
 */
async function expectOneEffectPerTakenCall(world: ReplayWorld, runId: string): Promise<number> {
  // finished, or at rest (paused, or waiting on a timer not yet due): the calls made so far are all there will be for now
  const view = await world.waitUntilAtRest(runId);
  const tracked = world.runs.find((r) => r.runId === runId)!;
  const target = await world.orderService();
  const steps = world.workflow(tracked.project, tracked.workflow).definition.steps.filter((s) => s.type === 'http_call').map((s) => s.id);
  let expected = 0;
  for (const step of steps) {
    // the key of the step's current execution (an operator's resume starts a new one)
    const key = world.idempotencyKey(step, runId, await world.executionsOf(step, runId));
    const output = view.outputs[step] as { status?: number } | undefined;
    const taken = output?.status !== undefined && output.status >= 200 && output.status < 300 ? 1 : 0;
    expected += taken;
    expect({ step, effects: target.effects().filter((e) => e.idempotencyKey === key).length }).toEqual({ step, effects: taken });
  }
  const reused = target.requests.filter((r) => r.keyMismatch).map((r) => r.idempotencyKey);
  expect({ keysReusedForOtherRequests: reused }).toEqual({ keysReusedForOtherRequests: [] });
  await expectEveryEffectBelongsToARun(world);
  return expected;
}

async function expectEveryEffectBelongsToARun(world: ReplayWorld): Promise<void> {
  const target = await world.orderService();
  const { rows } = await world.db.query('SELECT id FROM runs');
  const known = new Set<string>();
  for (const { id } of rows) {
    for (const w of world.workflows.values()) {
      for (const s of w.definition.steps) {
        const executions = await world.executionsOf(s.id, id);
        for (let n = 1; n <= executions; n++) known.add(world.idempotencyKey(s.id, id, n));
      }
    }
  }
  const strays = target.effects().filter((e) => !e.idempotencyKey || !known.has(e.idempotencyKey)).map((e) => e.idempotencyKey);
  expect({ effectsWithoutARun: strays }).toEqual({ effectsWithoutARun: [] });
}

Then('the order service received the order exactly once', async function (this: ReplayWorld) {
  const expected = await expectOneEffectPerTakenCall(this, this.run.runId);
  // the phrase promises the order arrived: a run that never reached the service cannot pass it
  expect(expected).toBeGreaterThan(0);
});

Then('the order service saw {int} attempt(s) but took the order once', async function (this: ReplayWorld, attempts: number) {
  // a run someone tampered with is never finished by the engine: count what happened
  if (!this.logBeforeTampering) await this.waitUntilAtRest();
  const target = await this.orderService();
  // every execution of the call, an operator's resume included (each under its own key): the attempts are all the
  // requests the service received for the run's call, not only those of its first execution
  const step = httpSteps(this)[0];
  const executions = await this.executionsOf(step);
  const keys = new Set(Array.from({ length: executions }, (_, i) => this.idempotencyKey(step, this.run.runId, i + 1)));
  const mine = (k: string | null): boolean => k !== null && keys.has(k);
  expect({ attemptsReceived: target.requests.filter((r) => mine(r.idempotencyKey)).length, ordersTaken: target.effects().filter((e) => mine(e.idempotencyKey)).length }).toEqual({
    attemptsReceived: attempts,
    ordersTaken: 1,
  });
});

Then('every order reached the order service exactly once', async function (this: ReplayWorld) {
  expect(this.runs.length).toBeGreaterThan(0);
  for (const r of this.runs) {
    expect({ run: r.runId, orders: await expectOneEffectPerTakenCall(this, r.runId) }).toEqual({ run: r.runId, orders: 1 });
  }
});


/** The amount an order carries, wherever the workflow put it (a mapped `total` or the raw `order.sum`). */
function amountOf(body: unknown): number | undefined {
  if (body === null || typeof body !== 'object') return undefined;
  const b = body as Record<string, unknown>;
  for (const field of ['total', 'sum']) if (typeof b[field] === 'number') return b[field] as number;
  for (const v of Object.values(b)) {
    const found = amountOf(v);
    if (found !== undefined) return found;
  }
  return undefined;
}

Then('the order service received an order worth {float}', async function (this: ReplayWorld, amount: number) {
  await this.waitUntilAtRest();
  const target = await this.orderService();
  const amounts = target.effects().map((e) => amountOf(e.body));
  // the last order the service took is the one that counts: an earlier, refused attempt may carry the old amount
  expect({ ordersTaken: amounts.length, lastWorth: amounts.at(-1) }).toEqual({ ordersTaken: amounts.length || 1, lastWorth: amount });
});

/**
 * Checked once nothing can still call: every worker armed to stall is past its stall (or can no longer reach it),
 * every run of the scenario is at rest (finished, paused, or waiting on a timer not yet due), and then several
 * polls of every worker have gone by. A worker released from a stall after a cancel would have called by then.
 */
Then('the order service was never called', async function (this: ReplayWorld) {
  await untilStallsEnded(this);
  for (const r of this.runs) await this.waitUntilAtRest(r.runId);
  // several polls of every worker after the last change: a call that was going to happen has happened
  await new Promise((r) => setTimeout(r, 500));
  const target = await this.orderService();
  // when each request came, so a call made after a stall ended reads as such
  expect(target.requests.map((r) => `${r.method} ${r.path} at ${r.at.toISOString()}`)).toEqual([]);
});

Given('the order service ignores idempotency keys', async function (this: ReplayWorld) {
  // a service with no idempotency: each request it takes is a new order, key or not
  (await this.orderService()).ignoreIdempotencyKeys();
});

/** Orders the service acted on for the run's call, over every execution of it (an operator's resume is a new one, under a new key). */
Then('the order service took the order {int} time(s)', async function (this: ReplayWorld, times: number) {
  await this.waitUntilAtRest();
  const target = await this.orderService();
  // every execution of the call, an operator's resume included: each under its own key
  const keys = await this.keysSentFor(httpSteps(this)[0]);
  // every attempt under one key carried the same bytes; only the service decided to act twice
  for (const key of keys) expect(new Set(target.requests.filter((r) => r.idempotencyKey === key).map((r) => r.raw)).size).toBe(1);
  const took = target.effects().filter((e) => e.idempotencyKey !== null && keys.includes(e.idempotencyKey)).length;
  // named, so a failure reads 'took the order 1 time(s) under 1 key(s)' rather than a bare 'Expected: 2, Received: 1'
  expect({ tookTheOrder: `${took} time(s)`, underKeys: keys.length }).toEqual({ tookTheOrder: `${times} time(s)`, underKeys: keys.length });
});
