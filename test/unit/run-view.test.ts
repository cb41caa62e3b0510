import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { engineInfo, fold } from '../../src/domain/decider';
import type { RunEvent } from '../../src/domain/events';
import { compareViews, toRunView, type RunView } from '../../src/domain/run-view';
import { created, orderSync, RUN_ID, simulate, withDelay } from './fixtures';

/* The run view users see, as a projection of the log, and how a stored one is compared with a replayed one. */

const viewOf = (log: ReturnType<typeof simulate>) => toRunView(fold(log.map((e) => ({ type: e.type, data: e.data }) as RunEvent)), log.length);

describe('the run view', () => {
  it('of a finished run: no current step, its result, its last event', () => {
    const log = simulate(orderSync, [created()], { engine: engineInfo() });
    const v = viewOf(log);
    assert.equal(v.runId, RUN_ID);
    assert.equal(v.project, 'acme');
    assert.equal(v.workflow, 'order-sync');
    assert.equal(v.version, 1);
    assert.equal(v.status, 'succeeded');
    assert.equal(v.currentStep, null);
    assert.equal(v.wakeAt, null);
    assert.equal(v.lastSeq, log.length);
    assert.deepEqual(v.result?.output, { orderId: 'ord_1' });
    assert.deepEqual(v.attempts, { push: 1 });
    assert.deepEqual(Object.keys(v.outputs), ['map', 'push', 'check', 'done']);
    assert.equal(v.startedAt, '2030-01-01T00:00:00.000Z');
    assert.ok(v.finishedAt);
  });

  it('of a run waiting on a timer: its step and when it wakes', () => {
    const log = simulate(withDelay, [], { engine: engineInfo(), maxBatches: 1, input: { n: 1 } });
    const v = viewOf(log);
    assert.equal(v.status, 'waiting');
    assert.equal(v.currentStep, 'wait');
    assert.equal(v.wakeAt, '2030-01-01T00:01:00.010Z');
    assert.equal(v.finishedAt, null);
  });
});

describe('compareViews', () => {
  const base = viewOf(simulate(orderSync, [created()], { engine: engineInfo() }));
  it('equal views compare equal, whatever their key order', () => {
    assert.equal(compareViews(base, { ...base, outputs: Object.fromEntries(Object.entries(base.outputs).reverse()) }), null);
  });

  it('names the first differing field with both values', () => {
    const cases: Array<[Partial<RunView>, RegExp]> = [
      [{ status: 'failed' }, /^status: stored "failed", replayed "succeeded"$/],
      [{ currentStep: 'push' }, /^currentStep: stored "push", replayed null$/],
      [{ outputs: {} }, /^outputs: stored \{\}/],
      [{ attempts: { push: 2 } }, /^attempts: stored \{"push":2\}, replayed \{"push":1\}$/],
      [{ result: null }, /^result: stored null/],
      [{ wakeAt: '2030-01-01T00:00:00.000Z' }, /^wakeAt: /],
      [{ lastSeq: 3 }, /^lastSeq: stored 3, replayed \d+$/],
      [{ startedAt: null }, /^startedAt: stored null/],
      [{ finishedAt: null }, /^finishedAt: stored null/],
    ];
    for (const [change, expected] of cases) assert.match(compareViews({ ...base, ...change }, base) ?? 'equal', expected);
  });

  it('a missing field counts as null', () => {
    const withoutWake = { ...base } as Partial<RunView>;
    delete withoutWake.wakeAt;
    assert.equal(compareViews(withoutWake as RunView, base), null);
  });
});
