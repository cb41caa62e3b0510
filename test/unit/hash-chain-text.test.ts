import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { EVENT_TYPES, UnknownEventTypeError, assertKnownEvent } from '../../src/domain/events';
import { eventHash, hmacSha256Hex } from '../../src/domain/hash-chain';

/*
 * What a link covers, pinned to exact bytes: the hash is written out by hand
 * (a fast path) rather than by canonicalJson, so a test that only compares the
 * engine's hash with itself would not notice a changed separator or field.
 * Recorded logs elsewhere were hashed over exactly these texts.
 */

const content = { runId: 'r-1', seq: 3, type: 'StepSucceeded', version: 1, data: { b: 1, a: [1, 'x'] }, recordedAt: '2026-01-01T00:00:00.000Z' };
const TEXT = '{"data":{"a":[1,"x"],"b":1},"recordedAt":"2026-01-01T00:00:00.000Z","runId":"r-1","seq":3,"type":"StepSucceeded","version":1}';
const KEYED_TEXT = '{"data":{"a":[1,"x"],"b":1},"project":"p-9","recordedAt":"2026-01-01T00:00:00.000Z","runId":"r-1","seq":3,"type":"StepSucceeded","version":1}';
const KEY = Buffer.from('0123456789abcdef0123456789abcdef');
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const hmac = (s: string) => createHmac('sha256', KEY).update(s).digest('hex');

describe('what a link covers, byte for byte', () => {
  it('a plain link is sha256 of the previous hash, a newline and the sorted JSON of the event', () => {
    assert.equal(eventHash('prev', content), sha(`prev\n${TEXT}`));
  });

  it('a keyed link is an HMAC over the same text with the project added in its sorted place', () => {
    assert.equal(eventHash('prev', { ...content, project: 'p-9' }, KEY), hmac(`prev\n${KEYED_TEXT}`));
  });

  it('a keyed link of an event without a project names the project as null', () => {
    assert.equal(eventHash('prev', content, KEY), hmac(`prev\n${KEYED_TEXT.replace('"p-9"', 'null')}`));
  });

  it('the data text made by the caller is used as it is', () => {
    assert.equal(eventHash('prev', content, null, '{"a":[1,"x"],"b":1}'), sha(`prev\n${TEXT}`));
    assert.notEqual(eventHash('prev', content, null, '{"b":1,"a":[1,"x"]}'), sha(`prev\n${TEXT}`));
  });

  it('unusual content takes the general path and covers the same fields', () => {
    // no data at all: the general canonical form leaves the field out
    const { data: _data, ...bare } = content;
    assert.equal(eventHash('prev', { ...bare, data: undefined }), sha(`prev\n${TEXT.replace('"data":{"a":[1,"x"],"b":1},', '')}`));
  });

  it('the previous hash is part of the text, so a link cannot be moved to another place in the chain', () => {
    assert.notEqual(eventHash('prev-a', content), eventHash('prev-b', content));
  });
});

describe('the event types this engine knows', () => {
  it('names every operator event among them', () => {
    for (const t of ['OperatorActed', 'RunPaused', 'RunUnpaused', 'StepRescheduled', 'StepSkipped', 'InputPatched', 'RunStarted', 'HttpRequestPrepared']) {
      assert.doesNotThrow(() => assertKnownEvent(1, t, 1), t);
    }
    assert.equal(new Set(EVENT_TYPES).size, EVENT_TYPES.length, 'no type twice');
  });

  it('refuses a type it does not know, and a known type of another payload version', () => {
    assert.throws(() => assertKnownEvent(4, 'StepTeleported', 1), (e: unknown) => e instanceof UnknownEventTypeError && e.name === 'UnknownEventTypeError' && /event 4 has type "StepTeleported"/.test(e.message));
    assert.throws(() => assertKnownEvent(5, 'StepStarted', 2), /"StepStarted v2"/);
  });
});

describe('the HMAC written out over the one-shot hash', () => {
  it('equals node:crypto Hmac for keys of every length and texts of every kind', () => {
    const texts = ['', 'a', 'prev\n' + TEXT, 'ünïcødé ✓ 🚀'.repeat(50), 'x'.repeat(5000)];
    for (const len of [1, 16, 32, 63, 64, 65, 100]) {
      const key = Buffer.alloc(len, 7);
      for (let i = 0; i < len; i++) key[i] = (i * 31 + len) & 0xff;
      for (const t of texts) assert.equal(hmacSha256Hex(key, t), createHmac('sha256', key).update(t).digest('hex'), `key ${len} bytes, text ${t.length} units`);
    }
  });
});
