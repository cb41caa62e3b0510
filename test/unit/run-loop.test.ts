import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createDecider, initialState, RunState } from '../../src/domain/decider';
import { Ask, DecidedBatch, driveLoopSync, LoopHost, runLoop } from '../../src/domain/run-loop';
import { at, created, INPUT, orderSync, runStarted, withDelay } from './fixtures';

/*
 * The run loop the Worker, the bench's baseline and the simulator share:
 * what it commits together, what it commits before asking the outside world,
 * and where it stops.
 */

function started(def = orderSync, input: unknown = INPUT): RunState {
  const decider = createDecider(def);
  return decider.decide({ type: 'StartRun', data: (runStarted(def, input) as unknown as { data: never }).data }, initialState()).reduce(decider.evolve, initialState());
}

function host(overrides: Partial<LoopHost<false>> = {}): { host: LoopHost<false>; batches: DecidedBatch[]; asks: Ask['kind'][] } {
  const batches: DecidedBatch[] = [];
  const asks: Ask['kind'][] = [];
  let clock = 0;
  const base: LoopHost<false> = {
    now: () => new Date(at((clock += 10))),
    send: () => ({ outcome: created(), durationMs: 4 }),
    jitter: () => 0.1234567,
    due: () => false,
    moment: () => undefined,
    commit: ({ batch }) => {
      batches.push(batch);
      return batch.stateAfter;
    },
  };
  const merged = { ...base, ...overrides };
  const recorded = Object.fromEntries(
    Object.entries(merged).map(([k, f]) => [k, (a: Ask) => (asks.push(a.kind), (f as (x: Ask) => unknown)(a))]),
  ) as unknown as LoopHost<false>;
  return { host: recorded, batches, asks };
}

describe('the run loop', () => {
  it('merges steps that need nothing from outside, and commits a request before sending it', () => {
    const h = host();
    const end = driveLoopSync(runLoop(createDecider(orderSync), started(), { merge: true }), h.host);
    assert.equal(end.status, 'succeeded');
    // map and the prepared request | the response, check and done
    assert.deepEqual(
      h.batches.map((b) => b.events.map((e) => e.type)),
      [
        ['StepStarted', 'StepSucceeded', 'StepStarted', 'HttpRequestPrepared'],
        ['HttpResponseRecorded', 'StepSucceeded', 'StepStarted', 'StepSucceeded', 'StepStarted', 'StepSucceeded', 'RunFinished'],
      ],
    );
    assert.ok(h.asks.indexOf('commit') < h.asks.indexOf('send'), 'the prepared request is recorded before it is sent');
  });

  it('without merging, commits every decision on its own', () => {
    const h = host();
    driveLoopSync(runLoop(createDecider(orderSync), started(), { merge: false }), h.host);
    assert.equal(h.batches.length, 5);
  });

  it('records the jitter it was handed to six places', () => {
    const h = host();
    driveLoopSync(runLoop(createDecider(orderSync), started(), { merge: false }), h.host);
    const response = h.batches.flatMap((b) => b.events).find((e) => e.type === 'HttpResponseRecorded')!;
    assert.equal((response.data as { jitter: number }).jitter, 0.123457);
  });

  it('stops at a timer not yet due when the host will not wait, and fires it when the host moves its clock', () => {
    const waiting = host();
    const stopped = driveLoopSync(runLoop(createDecider(withDelay), started(withDelay, { n: 1 }), { merge: true }), waiting.host);
    assert.equal(stopped.phase, 'awaiting_timer');
    let clock = 0;
    const moving = host({
      now: () => new Date(at(clock)),
      due: ({ dueAt }) => ((clock = Date.parse(dueAt) - Date.parse(at(0))), true),
    });
    const end = driveLoopSync(runLoop(createDecider(withDelay), started(withDelay, { n: 1 }), { merge: true }), moving.host);
    assert.equal(end.status, 'succeeded');
  });

  it('commits what it decided and stops once told to', () => {
    let stop = false;
    const h = host({
      commit: ({ batch }) => {
        stop = true;
        return batch.stateAfter;
      },
    });
    const end = driveLoopSync(runLoop(createDecider(orderSync), started(), { merge: true, stopping: () => stop }), h.host);
    assert.equal(end.phase, 'awaiting_response');
    assert.ok(!h.asks.includes('send'));
  });
});
