import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { checkSignature, isConnectionError, MAX_BODY_DEPTH, parseSignatureHeader, parseWebhookBody, plainlyKept } from '../../src/intake/server';
import { computeSignature, signPayload } from '../../src/intake/sign';
import { BodyBlocks, MIN_PIECE_BYTES } from '../../src/security/http-limits';

const SECRET = 'whsec_test';
const NOW = new Date('2030-01-01T00:00:00Z');
const body = '{"order":{"id":"o-1"}}';

describe('webhook signatures', () => {
  const target = { deliveryId: 'dlv_1', project: 'acme', workflow: 'order-sync' };
  const check = (header: string | undefined, opts: { secret?: string; raw?: string; now?: Date; to?: typeof target } = {}) =>
    checkSignature(header, opts.secret ?? SECRET, opts.to ?? target, Buffer.from(opts.raw ?? body), opts.now ?? NOW, 300);

  it('a signed delivery checks out', () => {
    assert.equal(check(signPayload(SECRET, target, body, NOW)), null);
  });

  it('the header is t=<unix seconds>,v2=<hex hmac of "t.delivery.project/workflow.body">', () => {
    const t = Math.floor(NOW.getTime() / 1000);
    assert.equal(signPayload(SECRET, target, body, NOW), `t=${t},v2=${computeSignature(SECRET, t, target, body)}`);
    const expected = createHmac('sha256', SECRET).update(`${t}.dlv_1.acme/order-sync.${body}`).digest('hex');
    assert.equal(computeSignature(SECRET, t, target, body), expected);
    assert.deepEqual(parseSignatureHeader(`t=${t}, v2=${'a'.repeat(64)}, v0=zz`), { t, v2: ['a'.repeat(64)], v1: false });
  });

  it('any of several v2 signatures may match (secret rotation)', () => {
    const t = Math.floor(NOW.getTime() / 1000);
    assert.equal(check(`t=${t},v2=${'0'.repeat(64)},v2=${computeSignature(SECRET, t, target, body)}`), null);
  });

  it('refuses a missing, malformed, wrong, tampered or expired signature', () => {
    const good = signPayload(SECRET, target, body, NOW);
    assert.match(check(undefined)!, /missing/);
    assert.match(check('sha256=abc')!, /not of the form/);
    assert.match(check(good, { secret: 'whsec_other' })!, /does not match/);
    assert.match(check(good, { raw: body + ' ' })!, /does not match/);
    assert.match(check(good, { now: new Date(NOW.getTime() + 301_000) })!, /outside the 300 s tolerance/);
    assert.match(check(good, { now: new Date(NOW.getTime() - 301_000) })!, /outside/);
    assert.equal(check(good, { now: new Date(NOW.getTime() + 299_000) }), null);
  });

  it('a captured webhook cannot be re-sent under another delivery id or to another workflow', () => {
    const captured = signPayload(SECRET, target, body, NOW);
    assert.match(check(captured, { to: { ...target, deliveryId: 'dlv_2' } })!, /does not match/);
    assert.match(check(captured, { to: { ...target, workflow: 'invoice-sync' } })!, /does not match/);
    assert.match(check(captured, { to: { ...target, project: 'globex' } })!, /does not match/);
  });

  it('old v1 signatures (over the body alone) are refused with the reason', () => {
    const t = Math.floor(NOW.getTime() / 1000);
    const v1 = createHmac('sha256', SECRET).update(`${t}.${body}`).digest('hex');
    assert.match(check(`t=${t},v1=${v1}`)!, /v1 signatures .* are no longer accepted/);
  });

  it('a refusal never contains the secret or the expected signature', () => {
    const t = Math.floor(NOW.getTime() / 1000);
    const expected = computeSignature(SECRET, t, target, body);
    const why = check(`t=${t},v2=${'f'.repeat(64)}`)!;
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

  it('refuses a key given twice in one object, wherever it is, and accepts the same key in different objects', () => {
    assert.match(refusal('{"order":{"id":"a"},"order":{"id":"b"}}'), /gives a key twice/);
    assert.match(refusal('{"a":[{"x":1,"x":2}]}'), /gives a key twice/);
    assert.match(refusal('{"__proto__":1,"__proto__":2}'), /gives a key twice/);
    assert.deepEqual(parseWebhookBody(Buffer.from('{"a":{"x":1},"b":{"x":":"},"c:d":"e\\":"}')), { a: { x: 1 }, b: { x: ':' }, 'c:d': 'e":' });
  });

  it('refuses a number with more digits than a double keeps, and accepts any spelling of one it keeps', () => {
    assert.match(refusal('{"sum":0.10000000000000000001}'), /more digits than can be kept \(it would become 0\.1\)/);
    assert.match(refusal('{"sum":12.3456789012345678}'), /more digits than can be kept/);
    assert.match(refusal('{"tiny":1e-400}'), /it would become 0/);
    assert.match(refusal('[123456789.123456789]'), /more digits/);
    const kept = parseWebhookBody(Buffer.from('{"a":0.1,"b":1.50,"c":15e-1,"d":-0,"e":1E2,"f":0.30000000000000004,"g":5e-324,"h":"0.10000000000000000001"}'));
    assert.deepEqual(kept, { a: 0.1, b: 1.5, c: 1.5, d: -0, e: 100, f: 0.30000000000000004, g: 5e-324, h: '0.10000000000000000001' });
    // exponents at the edges of a double's range take the exact check; within it, the quick one
    assert.deepEqual(parseWebhookBody(Buffer.from('[1.5e-200,-9.99999999999999e-280,123456789012345e-280,1e-307,2.5E+3]')), [1.5e-200, -9.99999999999999e-280, 123456789012345e-280, 1e-307, 2500]);
    assert.match(refusal('[1e-330]'), /more digits than can be kept/);
    assert.match(refusal('[1.00000000000000000001e5]'), /more digits than can be kept/);
    // numbers plainly kept skip the slow exact check (2 MiB of `1e5` taking it held the event loop 2 s); no
    // clock here: which numbers take the quick way is what is checked
    for (const t of ['1e5', '-2.5E+3', '0.1', '123456789012345', '123456789012345e-280', '1e280']) assert.ok(plainlyKept(t), t);
    for (const t of ['1e-330', '1e281', '1.00000000000000000001e5', '1234567890123456', '-0.1234567890123456']) assert.ok(!plainlyKept(t), t);
    assert.equal((parseWebhookBody(Buffer.from(`[${Array(500_000).fill('1e5').join(',')}]`)) as number[]).length, 500_000);
  });

  it('refuses invalid JSON, scalars and empty bodies', () => {
    assert.match(refusal('{"a":'), /not valid JSON/);
    assert.match(refusal(''), /the body is empty/);
    assert.match(refusal('  \n'), /the body is empty/);
    assert.match(refusal('42'), /must be a JSON object or array/);
    assert.match(refusal('"text"'), /must be a JSON object or array/);
    assert.match(refusal('null'), /must be a JSON object or array/);
  });

  it('refuses a NUL anywhere (jsonb cannot store it), in values and keys', () => {
    assert.match(refusal('{"a":"x\\u0000y"}'), /NUL/);
    assert.match(refusal('{"a\\u0000":1}'), /NUL/);
    assert.match(refusal('[[["\\u0000"]]]'), /NUL/);
  });

  it('refuses numbers it could not keep as sent, and keeps the rest exactly', () => {
    assert.match(refusal('{"order":{"sum":1e400}}'), /too large to keep/);
    assert.match(refusal('{"id":12345678901234567890123}'), /beyond 9007199254740991/);
    assert.match(refusal('[-9007199254740993]'), /beyond/);
    assert.deepEqual(parseWebhookBody(Buffer.from('{"id":9007199254740991,"sum":125000.5,"tiny":1e-300,"neg":-3.5}')), { id: 9007199254740991, sum: 125000.5, tiny: 1e-300, neg: -3.5 });
  });

  it('refuses unpaired surrogates, invalid UTF-8 and absurd nesting', () => {
    assert.match(refusal('{"a":"\\ud800"}'), /surrogate/);
    assert.match(refusal(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d])), /UTF-8/);
    assert.match(refusal('['.repeat(MAX_BODY_DEPTH + 1) + ']'.repeat(MAX_BODY_DEPTH + 1)), /nested deeper/);
    assert.doesNotThrow(() => parseWebhookBody(Buffer.from('['.repeat(MAX_BODY_DEPTH) + ']'.repeat(MAX_BODY_DEPTH))));
  });
});

describe('a database that went away answers 503, not 500', () => {
  it('knows the ways pg says the connection died', () => {
    for (const e of [
      Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }),
      Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }),
      new Error('Connection terminated unexpectedly'),
      // out of file descriptors under a flood of connections: for now, not for good
      Object.assign(new Error('connect EMFILE 127.0.0.1:5432 - Local (undefined:undefined)'), { code: 'EMFILE' }),
      // what a pooled client throws when the postmaster was SIGKILLed mid-request (found by npm run chaos)
      new Error('Client has encountered a connection error and is not queryable'),
    ]) {
      assert.equal(isConnectionError(e), true, e.message);
    }
    assert.equal(isConnectionError(Object.assign(new Error('duplicate key value'), { code: '23505' })), false);
    assert.equal(isConnectionError(new Error('Cannot read properties of undefined')), false);
  });
});

describe('a body gathered in blocks (BodyBlocks)', () => {
  it('holds a body cut into one-byte pieces in a few blocks, byte for byte', () => {
    const body = Buffer.from(JSON.stringify({ pad: 'x'.repeat(50_000) }));
    const blocks = new BodyBlocks();
    const out: Buffer[] = [];
    for (let i = 0; i < body.length; i++) out.push(...blocks.add(body.subarray(i, i + 1)));
    const rest = blocks.rest();
    if (rest) out.push(rest);
    assert.ok(out.length <= Math.ceil(body.length / (16 * 1024)), `${out.length} blocks`);
    assert.ok(Buffer.concat(out).equals(body));
    assert.equal(blocks.fragmented, true, 'one-byte pieces past the first thousand are too fine');
  });

  it('passes large pieces on as they are, and finds socket-sized pieces not fragmented', () => {
    const blocks = new BodyBlocks();
    const big = Buffer.alloc(64 * 1024, 1);
    assert.deepEqual(blocks.add(big), [big]);
    for (let i = 0; i < 5_000; i++) blocks.add(Buffer.alloc(MIN_PIECE_BYTES, 2));
    assert.equal(blocks.fragmented, false);
  });
});
