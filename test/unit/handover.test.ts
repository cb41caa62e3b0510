import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { initialState } from '../../src/domain/decider';
import { Handover } from '../../src/worker/handover';

const run = (n: number, projectId = 'p') => ({ run: { runId: `run-${n}`, projectId, workflowId: 'w', version: 1, state: initialState(), seq: 1 } });

describe('the handover of runs from the intake to the workers of its process', () => {
  it('gives runs oldest first, each once', () => {
    const h = new Handover(10);
    for (let i = 1; i <= 4; i++) assert.equal(h.offer(run(i)), true);
    assert.deepEqual(h.take(3).map((x) => x.run.runId), ['run-1', 'run-2', 'run-3']);
    assert.deepEqual(h.waitingIds(), ['run-4']);
    assert.deepEqual(h.take(3).map((x) => x.run.runId), ['run-4']);
    assert.deepEqual(h.take(3), []);
  });

  it('leaves a run to the claims when the queue is full', () => {
    const h = new Handover(2);
    assert.equal(h.offer(run(1)), true);
    assert.equal(h.offer(run(2)), true);
    assert.equal(h.offer(run(3)), false);
    assert.equal(h.size, 2);
  });

  it('keeps the waiting runs\' webhook bodies within a byte budget: a burst of large orders is left to the claims', () => {
    const h = new Handover(100, 5 * 1024 * 1024);
    const big = (n: number) => ({ ...run(n), bytes: 2 * 1024 * 1024 });
    assert.equal(h.offer(big(1)), true);
    assert.equal(h.offer(big(2)), true);
    assert.equal(h.offer(big(3)), false, 'a third 2 MiB body would pass 5 MiB');
    assert.equal(h.offer(run(4)), true, 'a run of a small body still fits');
    h.take(1);
    assert.equal(h.offer(big(3)), true, 'taken runs give their bytes back');
    h.hold('run-2');
    assert.equal(h.offer(big(5)), true, 'and so do runs a worker took from the due runs');
  });

  it('takes the projects in turn, oldest first within each: a burst does not go ahead of another project\'s run', () => {
    const h = new Handover(100);
    for (let i = 1; i <= 5; i++) h.offer(run(i, 'acme'));
    h.offer(run(6, 'globex'));
    h.offer(run(7, 'initech'));
    h.offer(run(8, 'globex'));
    assert.deepEqual(h.take(4).map((x) => x.run.runId), ['run-1', 'run-6', 'run-7', 'run-2']);
    assert.deepEqual(h.take(10).map((x) => x.run.runId), ['run-3', 'run-8', 'run-4', 'run-5']);
    assert.equal(h.size, 0);
  });

  it('lets one project fill at most three quarters of the queue: another project\'s run still finds room', () => {
    const h = new Handover(8);
    for (let i = 1; i <= 6; i++) assert.equal(h.offer(run(i, 'acme')), true);
    assert.equal(h.offer(run(7, 'acme')), false, 'the burst has its three quarters');
    assert.equal(h.offer(run(8, 'globex')), true);
    h.take(2);
    assert.equal(h.offer(run(7, 'acme')), true, 'room comes back as its runs are taken');
  });

  it('never hands over a run a worker of the process holds, nor one waiting already', () => {
    const h = new Handover(10);
    h.hold('run-1');
    assert.equal(h.offer(run(1)), false, 'held: it is claimed already');
    h.release('run-1');
    assert.equal(h.offer(run(1)), true);
    assert.equal(h.offer(run(1)), false, 'waiting already');
    h.hold('run-1');
    assert.deepEqual(h.waitingIds(), [], 'a run a worker takes from the due runs leaves the queue');
  });
});
