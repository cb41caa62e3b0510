import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkSignature, MAX_BODY_DEPTH, parseSignatureHeader, parseWebhookBody } from '../../src/intake/server';
import { computeSignature, signPayload } from '../../src/intake/sign';

const SECRET = 'whsec_test';
const NOW = new Date('2030-01-01T00:00:00Z');
const body = '{"order":{"id":"o-1"}}';

describe('webhook signatures', () => {
  it('a signed body checks out', () => {
    assert.equal(checkSignature(signPayload(SECRET, body, NOW), SECRET, Buffer.from(body), NOW, 300), null);
  });

  it('the header is t=<unix seconds>,v1=<hex hmac of "t.body">', () => {
    const t = Math.floor(NOW.getTime() / 1000);
    assert.equal(signPayload(SECRET, body, NOW), `t=${t},v1=${computeSignature(SECRET, t, body)}`);
    assert.deepEqual(parseSignatureHeader(`t=${t}, v1=${'a'.repeat(64)}, v0=zz`), { t, v1: ['a'.repeat(64)] });
  });

  it('any of several v1 signatures may match (secret rotation)', () => {
    const t = Math.floor(NOW.getTime() / 1000);
    const header = `t=${t},v1=${'0'.repeat(64)},v1=${computeSignature(SECRET, t, body)}`;
    assert.equal(checkSignature(header, SECRET, Buffer.from(body), NOW, 300), null);
  });

  it('refuses a missing, malformed, wrong, tampered or expired signature', () => {
    const good = signPayload(SECRET, body, NOW);
    assert.match(checkSignature(undefined, SECRET, Buffer.from(body), NOW, 300)!, /missing/);
    assert.match(checkSignature('sha256=abc', SECRET, Buffer.from(body), NOW, 300)!, /not of the form/);
    assert.match(checkSignature(good, 'whsec_other', Buffer.from(body), NOW, 300)!, /does not match/);
    assert.match(checkSignature(good, SECRET, Buffer.from(body + ' '), NOW, 300)!, /does not match/);
    const later = new Date(NOW.getTime() + 301_000);
    assert.match(checkSignature(good, SECRET, Buffer.from(body), later, 300)!, /outside the 300 s tolerance/);
    const earlier = new Date(NOW.getTime() - 301_000);
    assert.match(checkSignature(good, SECRET, Buffer.from(body), earlier, 300)!, /outside/);
    assert.equal(checkSignature(good, SECRET, Buffer.from(body), new Date(NOW.getTime() + 299_000), 300), null);
  });

  it('a refusal never contains the secret or the expected signature', () => {
    const t = Math.floor(NOW.getTime() / 1000);
    const expected = computeSignature(SECRET, t, body);
    const why = checkSignature(`t=${t},v1=${'f'.repeat(64)}`, SECRET, Buffer.from(body), NOW, 300)!;
    assert.ok(!why.includes(SECRET) && !why.includes(expected));
  });
});

describe('webhook bodies', () => {
  const refusal = (raw: string | Buffer): string => {
    try {
      parseWebhookBody(Buffer.isBuffer(raw) ? raw : Buffer.from(raw));
    } catch (e) {
      assert.equal((e as { code?: string }).code, 'malformed_body');
      return (e as Error).message;
    }
    assert.fail('accepted');
  };

  it('accepts JSON objects and arrays', () => {
    assert.deepEqual(parseWebhookBody(Buffer.from('{"a":[1,"x",null]}')), { a: [1, 'x', null] });
    assert.deepEqual(parseWebhookBody(Buffer.from('[]')), []);
    assert.deepEqual(parseWebhookBody(Buffer.from('{"emoji":"\\ud83d\\ude00"}')), { emoji: '😀' });
  });

  it('refuses invalid JSON, scalars and empty bodies', () => {
    assert.match(refusal('{"a":'), /not valid JSON/);
    assert.match(refusal(''), /not valid JSON/);
    assert.match(refusal('42'), /must be a JSON object or array/);
    assert.match(refusal('"text"'), /must be a JSON object or array/);
    assert.match(refusal('null'), /must be a JSON object or array/);
  });

  it('refuses a NUL anywhere (jsonb cannot store it), in values and keys', () => {
    assert.match(refusal('{"a":"x\\u0000y"}'), /NUL/);
    assert.match(refusal('{"a\\u0000":1}'), /NUL/);
    assert.match(refusal('[[["\\u0000"]]]'), /NUL/);
  });

  it('refuses unpaired surrogates, invalid UTF-8 and absurd nesting', () => {
    assert.match(refusal('{"a":"\\ud800"}'), /surrogate/);
    assert.match(refusal(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d])), /UTF-8/);
    assert.match(refusal('['.repeat(MAX_BODY_DEPTH + 1) + ']'.repeat(MAX_BODY_DEPTH + 1)), /nested deeper/);
    assert.doesNotThrow(() => parseWebhookBody(Buffer.from('['.repeat(MAX_BODY_DEPTH) + ']'.repeat(MAX_BODY_DEPTH))));
  });
});
