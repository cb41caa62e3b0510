import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createDecider, initialState, RunState } from '../../src/domain/decider';
import { Ask, DecidedBatch, driveLoopSync, LoopHost, runLoop } from '../../src/domain/run-loop';
import { checkChain } from '../../src/domain/hash-chain';
import { ConcurrencyError } from '../../src/store/log-append';
import { at, created, InMemoryRunLog, INPUT, orderSync, PROJECT_ID, RUN_ID, runStarted, withDelay } from './fixtures';

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

  it('driven into a run log behind the repository contract, leaves a chained log that loads back as the state it reached, and refuses a stale append', () => {
    const log = new InMemoryRunLog();
    const decider = createDecider(orderSync);
    const empty = log.empty(decider);
    const start = decider.decide({ type: 'StartRun', data: (runStarted(orderSync) as Extract<ReturnType<typeof runStarted>, { type: 'RunStarted' }>).data }, empty.state);
    let run = log.append(empty, { events: start, step: null, stateBefore: empty.state, stateAfter: start.reduce(decider.evolve, empty.state) }, new Date(at(0)));
    const first = run;
    driveLoopSync(runLoop(decider, run.state, { merge: true }), {
      now: () => new Date(at(10)),
      send: () => ({ outcome: created(), durationMs: 5 }),
      jitter: () => 0.5,
      due: () => false,
      moment: () => undefined,
      commit: ({ batch }) => {
        run = log.append(run, batch, new Date(at(10)));
        return run.state;
      },
    });
    assert.equal(run.state.status, 'succeeded');
    assert.equal(checkChain(RUN_ID, log.events), null, 'the chain is unbroken');
    const loaded = log.load(PROJECT_ID, RUN_ID)!;
    assert.deepEqual({ seq: loaded.seq, lastHash: loaded.lastHash, state: loaded.state }, { seq: run.seq, lastHash: run.lastHash, state: run.state });
    assert.throws(() => log.append(first, { events: start, step: null, stateBefore: first.state, stateAfter: first.state }, new Date(at(20))), ConcurrencyError);
  });
});
