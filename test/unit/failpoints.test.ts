import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { FailpointError, Failpoints, formatFailpoint, parseFailpoints } from '../../src/faults/failpoints';

describe('failpoint specs', () => {
  it('parses name, step, occurrence and action', () => {
    assert.deepEqual(parseFailpoints('after-append@map#1=crash;after-request-sent@push=delay:500'), [
      { name: 'after-append', step: 'map', eventType: undefined, occurrence: 1, action: 'crash', delayMs: undefined },
      { name: 'after-request-sent', step: 'push', eventType: undefined, occurrence: undefined, action: 'delay', delayMs: 500 },
    ]);
  });

  it('parses an event-type filter for append sites', () => {
    assert.deepEqual(parseFailpoints('after-append@push+StepSucceeded#1=crash'), [
      { name: 'after-append', step: 'push', eventType: 'StepSucceeded', occurrence: 1, action: 'crash', delayMs: undefined },
    ]);
  });

  it('accepts commas and newlines as separators and ignores blanks', () => {
    assert.equal(parseFailpoints('before-append=trace, timer-fired=throw\n\n during-recovery=hang ').length, 3);
    assert.deepEqual(parseFailpoints(''), []);
    assert.deepEqual(parseFailpoints(undefined), []);
  });

  it('a bare delay has no explicit duration', () => {
    assert.deepEqual(parseFailpoints('before-append=delay'), [{ name: 'before-append', step: undefined, eventType: undefined, occurrence: undefined, action: 'delay', delayMs: undefined }]);
  });

  it('names an unknown failpoint and lists the known ones', () => {
    assert.throws(() => parseFailpoints('after-lunch=crash'), /unknown failpoint "after-lunch"; known: before-append, /);
  });

  it('explains the syntax of an unreadable spec', () => {
    assert.throws(() => parseFailpoints('before-append'), /cannot read failpoint "before-append": expected name\[@step\]/);
    assert.throws(() => parseFailpoints('before-append=explode'), /cannot read failpoint/);
  });

  it('formats back to the same text', () => {
    const text = 'after-append@map#2=crash;before-view-update=delay:25;timer-fired@wait=throw;after-append@push+RunFinished=trace';
    assert.equal(parseFailpoints(text).map(formatFailpoint).join(';'), text);
  });
});

describe('failpoints at run time', () => {
  it('unarmed failpoints are not armed', () => {
    assert.equal(Failpoints.none().armed, false);
    assert.equal(Failpoints.fromEnv({}).armed, false);
  });

  it('fires on the n-th matching hit only, and writes each firing down first', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'fp-'));
    const file = path.join(dir, 'fired.log');
    const fp = Failpoints.fromEnv({ MESHHOOK_FAILPOINTS: 'before-append@push#2=throw', MESHHOOK_FAILPOINT_LOG: file });
    assert.equal(fp.armed, true);
    await fp.hit({ name: 'before-append', runId: 'r', step: 'map' });
    await fp.hit({ name: 'before-append', runId: 'r', step: 'push' });
    await assert.rejects(fp.hit({ name: 'before-append', runId: 'r', step: 'push' }), FailpointError);
    await fp.hit({ name: 'before-append', runId: 'r', step: 'push' });
    assert.equal(fp.fired.length, 1);
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 1);
    assert.equal(lines[0].name, 'before-append');
    assert.equal(lines[0].step, 'push');
    assert.equal(lines[0].occurrence, 2);
    assert.equal(lines[0].action, 'throw');
    assert.equal(lines[0].pid, process.pid);
  });

  it('crash in-process throws instead of killing the test runner', async () => {
    const fp = new Failpoints(parseFailpoints('after-append=crash'), { inProcess: true });
    await assert.rejects(fp.hit({ name: 'after-append', runId: 'r', step: null }), /failpoint after-append fired/);
  });

  it('an event-type filter matches only batches holding that event', async () => {
    const fp = new Failpoints(parseFailpoints('after-append+RunFinished=throw'), { inProcess: true });
    await fp.hit({ name: 'after-append', runId: 'r', step: 'map', events: ['StepStarted', 'StepSucceeded'] });
    await assert.rejects(fp.hit({ name: 'after-append', runId: 'r', step: 'done', events: ['StepStarted', 'StepSucceeded', 'RunFinished'] }), FailpointError);
  });

  it('delay waits and trace only records', async () => {
    const fp = new Failpoints(parseFailpoints('before-append=delay:20;after-append=trace'));
    const t0 = Date.now();
    await fp.hit({ name: 'before-append', runId: 'r', step: null });
    await fp.hit({ name: 'after-append', runId: 'r', step: null });
    assert.ok(Date.now() - t0 >= 15);
    assert.deepEqual(fp.fired.map((f) => f.action), ['delay', 'trace']);
  });

  it('counts a site once per hit however many specs watch it', async () => {
    const fp = new Failpoints(parseFailpoints('after-append@map#1=trace;after-append@map#2=throw'), { inProcess: true });
    await fp.hit({ name: 'after-append', runId: 'r', step: 'map' });
    await assert.rejects(fp.hit({ name: 'after-append', runId: 'r', step: 'map' }), FailpointError);
    assert.deepEqual(fp.fired.map((f) => [f.action, f.occurrence]), [['trace', 1], ['throw', 2]]);
  });
});
