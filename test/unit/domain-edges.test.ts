import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { canonicalJson, deepEqualCanonical } from '../../src/domain/canonical';
import { engineInfo } from '../../src/domain/decider';
import type { RecordedEvent } from '../../src/domain/events';
import { checkHeadSignature, relink, signHead } from '../../src/domain/hash-chain';
import { describeDifference, verifyLog } from '../../src/domain/replay';
import { created, orderSync, RUN_ID, simulate } from './fixtures';

/* Edges of the pure domain that mutation testing found unpinned: signed heads, canonical JSON, replay's sentences. */

const key = { kid: 'k1', key: createHash('sha256').update('k1').digest() };
const keys = (kid: string) => (kid === 'k1' ? key.key : null);
const head = { projectId: 'p-1', runId: RUN_ID, seq: 12, hash: 'ab'.repeat(32) };

describe('signed run heads', () => {
  it('a head signed with a held key checks out, and any change to it does not', () => {
    const sig = signHead(key, head);
    assert.match(sig, /^k1:[0-9a-f]{64}$/);
    assert.equal(checkHeadSignature(keys, head, sig), null);
    for (const changed of [{ seq: 11 }, { hash: 'cd'.repeat(32) }, { runId: 'other' }, { projectId: 'p-2' }]) {
      assert.equal(checkHeadSignature(keys, { ...head, ...changed }, sig), 'its head signature does not match (the head was changed outside the engine)');
    }
  });

  it('names a missing signature, an unknown key and a signature with no key id', () => {
    assert.equal(checkHeadSignature(keys, head, null), 'the run has no signed head');
    assert.equal(checkHeadSignature(keys, head, ''), 'the run has no signed head');
    assert.equal(checkHeadSignature(keys, head, signHead({ ...key, kid: 'k9' }, head)), 'its head is signed with key "k9", which is not in the keyring');
    assert.match(checkHeadSignature(keys, head, signHead(key, head).slice(3)) ?? '', /^its head is signed with key "[0-9a-f]+", which is not in the keyring$/);
    assert.equal(checkHeadSignature(keys, head, ':' + signHead(key, head).slice(3)), 'its head is signed with key "", which is not in the keyring');
  });
});

describe('canonical JSON', () => {
  it('sorts keys at every depth, inside arrays too, and drops undefined members', () => {
    assert.equal(canonicalJson({ b: 1, a: [{ d: 1, c: undefined, b: 2 }], c: { z: null, y: 'x' } }), '{"a":[{"b":2,"d":1}],"b":1,"c":{"y":"x","z":null}}');
  });

  it('writes dates as ISO strings and keeps a __proto__ key as data', () => {
    assert.equal(canonicalJson({ at: new Date('2030-01-01T00:00:00Z') }), '{"at":"2030-01-01T00:00:00.000Z"}');
    assert.equal(canonicalJson(JSON.parse('{"__proto__":{"x":1},"a":2}')), '{"__proto__":{"x":1},"a":2}');
  });

  it('deepEqualCanonical ignores key order and nothing else', () => {
    assert.equal(deepEqualCanonical({ a: 1, b: [1, 2] }, { b: [1, 2], a: 1 }), true);
    assert.equal(deepEqualCanonical({ a: 1, b: [1, 2] }, { a: 1, b: [2, 1] }), false);
  });
});

describe("replay's sentences", () => {
  it('names the event type first when the engine would record another kind of event', () => {
    assert.equal(describeDifference({ type: 'StepSucceeded', data: { step: 'a' } }, { type: 'StepFailed', data: { step: 'b' } }), 'type: engine decides "StepSucceeded", log has "StepFailed"');
  });

  it("names an output that differs rather than its size, which differs with it (semantics 4)", () => {
    const engine = { type: 'StepSucceeded', data: { step: 'map', output: { currency: 'EUR', total: 42.5 }, bytes: 32, next: 'push' } };
    const log = { type: 'StepSucceeded', data: { step: 'map', output: { total: 42.5 }, bytes: 14, next: 'push' } };
    assert.equal(describeDifference(engine, log), 'data.output.currency: engine decides "EUR", log has nothing');
    assert.equal(describeDifference({ data: { bytes: 3 } }, { data: { bytes: 4 } }), 'data.bytes: engine decides 3, log has 4');
  });

  it('compares arrays and objects member by member, but an array and an object as wholes', () => {
    assert.equal(describeDifference({ data: { lines: [1, 2] } }, { data: { lines: [1, 3] } }), 'data.lines.1: engine decides 2, log has 3');
    assert.equal(describeDifference({ data: [1] }, { data: { 0: 1 } }), 'data: engine decides [1], log has {"0":1}');
    assert.equal(describeDifference({ a: 1 }, { a: 1, b: 2 }), 'b: engine decides nothing, log has 2');
  });

  it('shortens long values to 120 characters', () => {
    const long = 'x'.repeat(200);
    const line = describeDifference({ v: long }, { v: 'y' });
    assert.equal(line, `v: engine decides "${'x'.repeat(116)}..., log has "y"`);
    assert.equal(describeDifference({ v: 'x'.repeat(118) }, { v: 1 }), `v: engine decides "${'x'.repeat(118)}", log has 1`);
  });

  it('an input today\'s engine refuses is a divergence saying so', () => {
    const events = relink(RUN_ID, simulate(orderSync, [created()], { engine: engineInfo() }), key);
    // a second answer recorded after the run finished
    const response = events.find((e) => e.type === 'HttpResponseRecorded')!;
    const log: RecordedEvent[] = [...events, { ...response, seq: events.length + 1 }];
    const report = verifyLog(RUN_ID, relink(RUN_ID, log, key), orderSync, { keys });
    assert.equal(report.divergence?.seq, events.length + 1);
    assert.match(report.divergence!.reason, /^the engine refuses it today: run .* is not waiting for a response of push attempt 1$/);
  });

  it('says when the definition differs from the one the run started on', () => {
    const events = simulate(orderSync, [created()], { engine: engineInfo() });
    assert.equal(verifyLog(RUN_ID, events, orderSync).definitionChanged, false);
    const edited = { ...orderSync, steps: orderSync.steps.map((s) => (s.id === 'failed' ? { ...s, reason: 'changed' } : s)) } as typeof orderSync;
    assert.equal(verifyLog(RUN_ID, events, edited).definitionChanged, true);
  });
});
