import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bindingId, commitTimestamp, filterMatches, parseBinding, parseFilter, parsePgArray, walToJson } from '../../src/realtime/changes';
import { bigIntToLsn, lsnToBigInt } from '../../src/realtime/feed';
import { decodeFrame, encodeBroadcastBinary, encodeBroadcastPush, encodeFrame, negotiateVsn, reply } from '../../src/realtime/protocol';
import { parseDropSpec } from '../../src/realtime/server';
import { TokenError, signAnonKey, signProjectToken, signToken, verifyToken } from '../../src/realtime/tokens';

const SECRET = 'unit-test-secret-with-at-least-32-characters';

describe('realtime framing', () => {
  it('negotiates vsn: missing → 1.0.0, 1.0.0 and 2.0.0 accepted, others refused', () => {
    assert.equal(negotiateVsn(null), '1.0.0');
    assert.equal(negotiateVsn('1.0.0'), '1.0.0');
    assert.equal(negotiateVsn('2.0.0'), '2.0.0');
    assert.equal(negotiateVsn('3.0.0'), null);
    assert.equal(negotiateVsn('banana'), null);
  });

  it('decodes v2 arrays and v1 objects (heartbeat without join_ref)', () => {
    assert.deepEqual(decodeFrame('2.0.0', '["6","7","realtime:x","phx_join",{"a":1}]', false), {
      join_ref: '6',
      ref: '7',
      topic: 'realtime:x',
      event: 'phx_join',
      payload: { a: 1 },
    });
    assert.deepEqual(decodeFrame('1.0.0', '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"9"}', false), {
      join_ref: null,
      ref: '9',
      topic: 'phoenix',
      event: 'heartbeat',
      payload: {},
    });
    assert.throws(() => decodeFrame('2.0.0', '{"topic":"x"}', false));
    assert.throws(() => decodeFrame('1.0.0', '[1,2,3,4,5]', false));
  });

  it('encodes v2 as arrays and v1 as objects without join_ref', () => {
    const msg = reply({ join_ref: '6', ref: '6', topic: 'realtime:x' }, 'ok', { postgres_changes: [] });
    assert.equal(encodeFrame('2.0.0', msg), '["6","6","realtime:x","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]');
    assert.deepEqual(JSON.parse(encodeFrame('1.0.0', msg)), {
      topic: 'realtime:x',
      event: 'phx_reply',
      payload: { status: 'ok', response: { postgres_changes: [] } },
      ref: '6',
    });
  });

  it('decodes a binary kind-3 broadcast push (JSON and raw bytes) as the client builds it', () => {
    const json = encodeBroadcastPush({ joinRef: '6', ref: '7', topic: 'realtime:run:123', event: 'log', payload: { from: 'client' } });
    assert.equal(json[0], 3);
    assert.deepEqual(decodeFrame('2.0.0', json, true), {
      join_ref: '6',
      ref: '7',
      topic: 'realtime:run:123',
      event: 'broadcast',
      payload: { type: 'broadcast', event: 'log', payload: { from: 'client' } },
      raw: undefined,
    });
    const raw = decodeFrame('2.0.0', encodeBroadcastPush({ joinRef: '1', ref: '2', topic: 'realtime:t', event: 'bin', payload: Buffer.from([1, 2, 3]), meta: { k: 1 } }), true);
    assert.deepEqual(raw.raw, { event: 'bin', meta: { k: 1 }, bytes: Buffer.from([1, 2, 3]) });
    assert.throws(() => decodeFrame('1.0.0', json, true), /vsn 2/);
    assert.throws(() => decodeFrame('2.0.0', Buffer.from([4, 0, 0, 0, 0]), true), /kind 4/);
  });

  it('encodes a binary kind-4 broadcast the way the client decodes it', () => {
    const buf = encodeBroadcastBinary('realtime:t', 'bin', Buffer.from('xyz'), null);
    assert.deepEqual([...buf.subarray(0, 5)], [4, 10, 3, 0, 0]);
    assert.equal(buf.subarray(5, 15).toString(), 'realtime:t');
    assert.equal(buf.subarray(15, 18).toString(), 'bin');
    assert.equal(buf.subarray(18).toString(), 'xyz');
  });
});

describe('postgres_changes bindings and filters', () => {
  it('echoes the client entry with an integer id shared by identical bindings', () => {
    const a = parseBinding({ event: '*', schema: 'public', table: 'run_events', filter: 'run_id=eq.1' });
    const b = parseBinding({ event: '*', schema: 'public', table: 'run_events', filter: 'run_id=eq.1' });
    const c = parseBinding({ event: 'INSERT', schema: 'public', table: 'run_events', filter: 'run_id=eq.1' });
    assert.ok(Number.isInteger(a.id) && a.id > 0);
    assert.equal(a.id, b.id);
    assert.notEqual(a.id, c.id);
    assert.deepEqual(a.echo, { event: '*', schema: 'public', table: 'run_events', filter: 'run_id=eq.1', id: a.id });
    assert.equal(bindingId({ event: 'insert' }), bindingId({ event: 'insert' }));
  });

  it('matches events case-insensitively; unknown events mean *; table alone implies public', () => {
    assert.equal(parseBinding({ event: 'insert', table: 't' }).event, 'INSERT');
    assert.equal(parseBinding({ event: 'whatever', table: 't' }).event, '*');
    assert.equal(parseBinding({ event: '*', table: 't' }).schema, 'public');
    assert.equal(parseBinding({ event: '*', schema: '*' }).schema, null);
  });

  it('parses col=op.value with eq neq lt lte gt gte in, and refuses the rest', () => {
    assert.deepEqual(parseFilter('seq=gt.3'), { column: 'seq', op: 'gt', values: ['3'] });
    assert.deepEqual(parseFilter('type=in.(A,"B,C", D)'), { column: 'type', op: 'in', values: ['A', 'B,C', 'D'] });
    assert.throws(() => parseFilter('seq=like.3'));
    assert.throws(() => parseFilter('seq'));
    assert.match(String(parseBinding({ event: '*', table: 't', filter: 'nonsense' }).error), /Error parsing `filter`/);
    // Supabase's own limit for an in list
    assert.equal(parseFilter(`n=in.(${Array.from({ length: 100 }, (_, i) => i).join(',')})`).values.length, 100);
    assert.throws(() => parseFilter(`n=in.(${Array.from({ length: 101 }, (_, i) => i).join(',')})`), /at most 100 values/);
  });

  it('echoes only what names a binding, and takes only text for it', () => {
    const b = parseBinding({ event: 'INSERT', table: 't', filter: 'seq=gt.1', pad: 'x'.repeat(100), nested: { a: [1] } });
    assert.deepEqual(b.echo, { event: 'INSERT', table: 't', filter: 'seq=gt.1', id: b.id });
    const odd = parseBinding({ event: 'INSERT', table: 't', filter: { not: 'text' } });
    assert.equal(odd.filter, null);
    assert.equal(odd.id, parseBinding({ event: 'INSERT', table: 't' }).id);
  });

  it('compares by column type', () => {
    const f = (s: string) => parseFilter(s);
    assert.equal(filterMatches(f('seq=gt.9'), 'int4', '10'), true); // numeric, not lexicographic
    assert.equal(filterMatches(f('seq=lte.10'), 'int4', '10'), true);
    assert.equal(filterMatches(f('seq=lt.10'), 'int4', '10'), false);
    assert.equal(filterMatches(f('seq=neq.10'), 'int4', '11'), true);
    assert.equal(filterMatches(f('seq=gte.2'), 'int8', '1'), false);
    assert.equal(filterMatches(f('id=eq.AAAAAAAA-0000-0000-0000-000000000000'), 'uuid', 'aaaaaaaa-0000-0000-0000-000000000000'), true);
    assert.equal(filterMatches(f('type=in.(A,B)'), 'text', 'B'), true);
    assert.equal(filterMatches(f('type=in.(A,B)'), 'text', 'C'), false);
    assert.equal(filterMatches(f('done=eq.true'), 'bool', 't'), true);
    assert.equal(filterMatches(f('at=gt.2025-01-01T00:00:00Z'), 'timestamptz', '2025-06-01 10:00:00+00'), true);
    assert.equal(filterMatches(f('type=eq.A'), 'text', null), false);
  });
});

describe('WAL values as JSON (like to_jsonb)', () => {
  it('numbers, booleans and json are native, timestamps ISO, the rest text', () => {
    assert.equal(walToJson('int4', '42'), 42);
    assert.equal(walToJson('int8', '9007199254740993'), '9007199254740993'); // beyond 2^53 stays exact as text
    assert.equal(walToJson('int8', '7'), 7);
    assert.equal(walToJson('numeric', '1.5'), 1.5);
    assert.equal(walToJson('float8', 'NaN'), 'NaN');
    assert.equal(walToJson('bool', 'f'), false);
    assert.deepEqual(walToJson('jsonb', '{"a": [1, {"b": null}]}'), { a: [1, { b: null }] });
    assert.equal(walToJson('timestamptz', '2025-01-01 10:00:00.123456+00'), '2025-01-01T10:00:00.123456+00:00');
    assert.equal(walToJson('timestamptz', '2025-01-01 10:00:00+05:30'), '2025-01-01T10:00:00+05:30');
    assert.equal(walToJson('timestamp', '2025-01-01 10:00:00'), '2025-01-01T10:00:00');
    assert.equal(walToJson('uuid', 'abc'), 'abc');
    assert.equal(walToJson('text', null), null);
    assert.deepEqual(walToJson('_text', '{a,"b,c",NULL,"d\\"e"}'), ['a', 'b,c', null, 'd"e']);
    assert.deepEqual(walToJson('_int4', '{1,2,3}'), [1, 2, 3]);
    assert.equal(walToJson('_int4', '{{1,2},{3,4}}'), '{{1,2},{3,4}}');
    assert.deepEqual(parsePgArray('{}'), []);
  });

  it('formats the pgoutput commit time (µs since the Unix epoch) with millisecond precision in UTC', () => {
    assert.equal(commitTimestamp(1735725600123456n), '2025-01-01T10:00:00.123Z');
  });

  it('round-trips LSNs', () => {
    for (const l of ['0/0', '0/177B240', '16/B374D848']) assert.equal(bigIntToLsn(lsnToBigInt(l)), l);
    assert.ok(lsnToBigInt('00000000/0177B240') === lsnToBigInt('0/177B240'));
  });
});

describe('MESHHOOK_REALTIME_DROP', () => {
  it('parses table:column=value[,column=value] and matches records by text value', () => {
    const drop = parseDropSpec('run_events:seq=3,type=StepFailed');
    assert.equal(drop({ table: 'run_events', record: { seq: 3, type: 'StepFailed' } }), true);
    assert.equal(drop({ table: 'run_events', record: { seq: 3, type: 'RunStarted' } }), false);
    assert.equal(drop({ table: 'runs', record: { seq: 3, type: 'StepFailed' } }), false);
    const two = parseDropSpec('run_events:seq=3;public.runs:status=failed');
    assert.equal(two({ table: 'runs', record: { status: 'failed' } }), true);
    assert.throws(() => parseDropSpec('run_events'), /table:column=value/);
  });
});

describe('realtime tokens', () => {
  it('signs project tokens and anon keys that verify', async () => {
    const t = await signProjectToken({ secret: SECRET, projectId: 'p-1', ttlSec: 60 });
    const claims = await verifyToken(SECRET, t);
    assert.equal(claims.role, 'authenticated');
    assert.equal(claims.project_id, 'p-1');
    assert.equal(claims.exp - (claims.iat as number), 60);
    const anon = await verifyToken(SECRET, await signAnonKey({ secret: SECRET }));
    assert.equal(anon.role, 'anon');
    assert.ok(anon.exp > Date.now() / 1000 + 365 * 24 * 3600);
  });

  it('refuses with the real server reason strings', async () => {
    const reason = async (token: string) => {
      try {
        await verifyToken(SECRET, token);
        return 'accepted';
      } catch (e) {
        assert.ok(e instanceof TokenError);
        return e.reason;
      }
    };
    assert.match(await reason(await signProjectToken({ secret: SECRET, projectId: 'p', ttlSec: -30 })), /^InvalidJWTToken: Token has expired (29|30|31) seconds ago$/);
    assert.equal(await reason(await signProjectToken({ secret: 'another-secret-another-secret-another', projectId: 'p', ttlSec: 60 })), 'JwtSignatureError: Failed to validate JWT signature');
    assert.equal(await reason('not-a-jwt'), 'MalformedJWT: The token provided is not a valid JWT');
    assert.equal(await reason('a.b.c'), 'MalformedJWT: The token provided is not a valid JWT');
    assert.equal(await reason(await signToken(SECRET, { project_id: 'p', exp: Math.floor(Date.now() / 1000) + 60 })), 'InvalidJWTToken: Fields `role` and `exp` are required in JWT');
    assert.equal(await reason(await signToken(SECRET, { role: 'authenticated' })), 'InvalidJWTToken: Fields `role` and `exp` are required in JWT');
    const soon = Math.floor(Date.now() / 1000);
    assert.equal(await reason(await signToken(SECRET, { role: 'authenticated', exp: soon + 600, nbf: soon + 300 })), 'InvalidJWTToken: Token is not valid yet (nbf)');
    assert.equal(await reason(await signToken(SECRET, { role: 'authenticated', exp: soon + 600, nbf: soon - 5 })), 'accepted');
  });
});
