import net from 'node:net';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { RealtimeChannel, SupabaseClient } from '@supabase/supabase-js';
import { Client, Pool } from 'pg';
import { WebSocket } from 'ws';
import { freePort, provisionPostgres, type PostgresServer } from '../../src/db/postgres';
import { closeRealtimeClient, LiveLog, openRealtimeClient } from '../../src/realtime/live-log';
import { encodeBroadcastPush } from '../../src/realtime/protocol';
import { RealtimeServer } from '../../src/realtime/server';
import { createRealtimeTestSchema, RawSocket } from '../../src/realtime/testing';
import { signAnonKey, signProjectToken, signToken } from '../../src/realtime/tokens';

/*
 * The compatible Realtime server against the real @supabase/supabase-js client (ws transport) and
 * a raw websocket for exact frames, on an embedded Postgres with wal_level=logical.
 */

const SECRET = 'realtime-protocol-test-secret-32-characters-plus';
const A = randomUUID();
const B = randomUUID();

let pg: PostgresServer;
let dbUrl: string;
let pool: Pool;
let server: RealtimeServer;
let anon: string;
let tokA: string;
let tokB: string;
const logs: Array<Record<string, unknown>> = [];
const clients: SupabaseClient[] = [];
const sockets: RawSocket[] = [];

async function sql<T extends Record<string, unknown> = Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> {
  for (let attempt = 0; ; attempt++) {
    try {
      return (await pool.query(text, params)).rows as T[];
    } catch (e) {
      // a pooled connection that died with a Postgres crash fails once; a fresh one then works
      if (attempt >= 3 || (e as { code?: string }).code) throw e;
    }
  }
}

async function until<T>(what: string, probe: () => T | null | undefined | false | Promise<T | null | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function insertEvent(project: string, run: string, seq: number, type = 'StepSucceeded', payload: unknown = { seq }): Promise<void> {
  await sql('INSERT INTO run_events (project_id, run_id, seq, type, payload, hash) VALUES ($1, $2, $3, $4, $5, $6)', [
    project,
    run,
    seq,
    type,
    JSON.stringify(payload),
    `h-${run.slice(0, 4)}-${seq}`,
  ]);
}

/**
 * A supabase-js client. `timeout` shortens its push timeout: pushes the server never answers (broadcasts
 * without ack, access_token) keep a ref'd 10 s timer each in supabase-js, which would hold the test
 * process open after the last test.
 */
async function client(
  accessToken: string | (() => Promise<string>),
  extra: { vsn?: '1.0.0' | '2.0.0'; anonKey?: string; timeout?: number } = {},
): Promise<SupabaseClient> {
  const c = await openRealtimeClient({ url: server.url, anonKey: extra.anonKey ?? anon, accessToken, vsn: extra.vsn, timeout: extra.timeout });
  clients.push(c);
  return c;
}

async function raw(params: Record<string, string> = { apikey: anon }, vsn: '1.0.0' | '2.0.0' = '2.0.0', url = server.url): Promise<RawSocket> {
  const s = await RawSocket.open(url, params, vsn);
  sockets.push(s);
  return s;
}

interface Sub {
  ch: RealtimeChannel;
  changes: any[];
  systems: any[];
  statuses: Array<{ status: string; error?: string }>;
  subscribed(): number;
}

/** subscribe with postgres_changes bindings; resolves once the status is `expect` */
async function subscribe(
  c: SupabaseClient,
  name: string,
  bindings: Array<Record<string, string>>,
  expect: 'SUBSCRIBED' | 'CHANNEL_ERROR' | null = 'SUBSCRIBED',
  config?: Record<string, unknown>,
): Promise<Sub> {
  const ch = c.channel(name, config ? { config } : undefined);
  const sub: Sub = {
    ch,
    changes: [],
    systems: [],
    statuses: [],
    subscribed: () => sub.statuses.filter((s) => s.status === 'SUBSCRIBED').length,
  };
  for (const b of bindings) ch.on('postgres_changes', b as any, (p: any) => sub.changes.push(p));
  ch.on('system', {}, (p: any) => sub.systems.push(p));
  ch.subscribe((status, err) => sub.statuses.push({ status, error: err?.message }));
  if (expect) await until(`channel ${name} ${expect}`, () => sub.statuses.some((s) => s.status === expect));
  if (expect === 'SUBSCRIBED' && bindings.length > 0) await until(`system ok on ${name}`, () => sub.systems.some((s) => s.extension === 'postgres_changes' && s.status === 'ok'));
  return sub;
}

const ISO_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

before(async () => {
  pg = await provisionPostgres();
  const admin = new Client({ connectionString: pg.urlFor('postgres') });
  await admin.connect();
  const name = `rt_proto_${process.pid}`;
  await admin.query(`DROP DATABASE IF EXISTS ${name}`);
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  dbUrl = pg.urlFor(name);
  pool = new Pool({ connectionString: dbUrl, max: 4 });
  pool.on('error', () => undefined);
  const c = await pool.connect();
  await createRealtimeTestSchema(c);
  c.release();
  server = new RealtimeServer({ databaseUrl: dbUrl, jwtSecret: SECRET, log: (e) => logs.push(e) });
  await server.start();
  anon = await signAnonKey({ secret: SECRET });
  tokA = await signProjectToken({ secret: SECRET, projectId: A, ttlSec: 3600 });
  tokB = await signProjectToken({ secret: SECRET, projectId: B, ttlSec: 3600 });
});

after(async () => {
  for (const s of sockets) s.close();
  await Promise.all(clients.map((c) => closeRealtimeClient(c)));
  await server?.close();
  await pool?.end().catch(() => undefined);
  await pg?.stop();
});

describe('realtime server: supabase-js compatibility', { timeout: 360_000 }, () => {
  it('vsn 2.0.0 on the wire: join reply echoes every binding with an integer id, then system ok; changes have the documented shape', async () => {
    const s = await raw();
    const bindings = [
      { event: 'INSERT', schema: 'public', table: 'run_events', filter: `project_id=eq.${A}` },
      { event: '*', schema: 'public', table: 'items' },
    ];
    const { joinRef, reply } = await s.join('realtime:wire', {
      config: { broadcast: { ack: false, self: false }, presence: { key: '', enabled: false }, postgres_changes: bindings, private: false },
      access_token: tokA,
    });
    assert.equal(reply.join_ref, joinRef);
    assert.equal(reply.ref, joinRef);
    assert.equal(reply.payload.status, 'ok');
    const echoed = reply.payload.response.postgres_changes as Array<Record<string, unknown>>;
    assert.equal(echoed.length, 2);
    echoed.forEach((e, i) => {
      const { id, ...rest } = e;
      assert.deepEqual(rest, bindings[i]);
      assert.ok(Number.isInteger(id), 'binding ids are integers');
    });
    const system = await s.next((m) => m.event === 'system');
    assert.deepEqual(system, {
      join_ref: joinRef,
      ref: null,
      topic: 'realtime:wire',
      event: 'system',
      payload: { extension: 'postgres_changes', status: 'ok', message: 'Subscribed to PostgreSQL', channel: 'wire' },
    });

    const run = randomUUID();
    await insertEvent(A, run, 1, 'RunStarted', { n: 1, nested: { a: [1, 2] } });
    const f = await s.next((m) => m.event === 'postgres_changes');
    assert.equal(f.join_ref, null);
    assert.equal(f.ref, null);
    assert.equal(f.topic, 'realtime:wire');
    assert.deepEqual(f.payload.ids, [echoed[0].id]);
    const d = f.payload.data;
    assert.deepEqual(Object.keys(d), ['schema', 'table', 'commit_timestamp', 'type', 'columns', 'record', 'errors']);
    assert.equal(d.schema, 'public');
    assert.equal(d.table, 'run_events');
    assert.equal(d.type, 'INSERT');
    assert.equal(d.errors, null);
    assert.match(d.commit_timestamp, ISO_MS);
    assert.ok(Math.abs(Date.parse(d.commit_timestamp) - Date.now()) < 60_000);
    assert.deepEqual(d.columns, [
      { name: 'project_id', type: 'uuid' },
      { name: 'run_id', type: 'uuid' },
      { name: 'seq', type: 'int4' },
      { name: 'type', type: 'text' },
      { name: 'payload', type: 'jsonb' },
      { name: 'hash', type: 'text' },
      { name: 'recorded_at', type: 'timestamptz' },
    ]);
    const [db] = await sql<{ at: string }>(`SELECT to_jsonb(recorded_at) #>> '{}' AS at FROM run_events WHERE run_id = $1`, [run]);
    assert.deepEqual(d.record, {
      project_id: A,
      run_id: run,
      seq: 1,
      type: 'RunStarted',
      payload: { n: 1, nested: { a: [1, 2] } },
      hash: `h-${run.slice(0, 4)}-1`,
      recorded_at: db.at, // the same text as the real server's to_jsonb cast
    });

    // UPDATE and DELETE shapes on a table without RLS (default replica identity: old_record is the key)
    await sql(`INSERT INTO items (id, label, tags, done, score) VALUES (1, 'a', '{x,"y z"}', false, 1.5)`);
    const ins = await s.next((m) => m.event === 'postgres_changes' && m.payload.data.table === 'items');
    assert.deepEqual(ins.payload.ids, [echoed[1].id]);
    assert.deepEqual(ins.payload.data.record, { id: 1, label: 'a', tags: ['x', 'y z'], done: false, score: 1.5 });
    await sql(`UPDATE items SET done = true WHERE id = 1`);
    const upd = await s.next((m) => m.event === 'postgres_changes' && m.payload.data.type === 'UPDATE');
    assert.deepEqual(Object.keys(upd.payload.data), ['schema', 'table', 'commit_timestamp', 'type', 'columns', 'record', 'old_record', 'errors']);
    assert.deepEqual(upd.payload.data.record, { id: 1, label: 'a', tags: ['x', 'y z'], done: true, score: 1.5 });
    assert.deepEqual(upd.payload.data.old_record, { id: 1 });
    await sql(`DELETE FROM items WHERE id = 1`);
    const del = await s.next((m) => m.event === 'postgres_changes' && m.payload.data.type === 'DELETE');
    assert.deepEqual(Object.keys(del.payload.data), ['schema', 'table', 'commit_timestamp', 'type', 'columns', 'old_record', 'errors']);
    assert.deepEqual(del.payload.data.old_record, { id: 1 });
    assert.equal(s.messages((m) => m.event === 'postgres_changes').length, 4, 'one frame per change');
  });

  it('vsn 1.0.0 frames are objects without join_ref; supabase-js receives typed rows over 1.0.0 and 2.0.0', async () => {
    const s = await raw({ apikey: anon }, '1.0.0');
    const { reply } = await s.join('realtime:v1wire', { config: { postgres_changes: [] } });
    assert.equal(reply.payload.status, 'ok');
    assert.deepEqual(Object.keys(JSON.parse(s.texts[0])).sort(), ['event', 'payload', 'ref', 'topic']);
    assert.deepEqual(reply.payload.response, { postgres_changes: [] });

    const run = randomUUID();
    const filter = { event: 'INSERT', schema: 'public', table: 'run_events', filter: `run_id=eq.${run}` };
    const v2 = await subscribe(await client(tokA), 'typed-v2', [filter]);
    const v1 = await subscribe(await client(tokA, { vsn: '1.0.0' }), 'typed-v1', [filter]);
    assert.ok(logs.some((l) => l.msg === 'realtime socket open' && l.vsn === '2.0.0'), 'supabase-js defaults to vsn 2.0.0');
    assert.ok(logs.some((l) => l.msg === 'realtime socket open' && l.vsn === '1.0.0'));
    await insertEvent(A, run, 1, 'RunStarted', { big: { list: [1, 'two'] } });
    for (const sub of [v2, v1]) {
      await until('the insert', () => sub.changes.length === 1);
      const p = sub.changes[0];
      assert.equal(p.eventType, 'INSERT');
      assert.equal(p.schema, 'public');
      assert.equal(p.table, 'run_events');
      assert.match(p.commit_timestamp, ISO_MS);
      assert.deepEqual(p.old, {});
      assert.equal(p.new.seq, 1);
      assert.equal(p.new.run_id, run);
      assert.deepEqual(p.new.payload, { big: { list: [1, 'two'] } });
      assert.equal(p.errors, null);
    }
  });

  it("a project's token gets only its project's rows even with the table's policy made permissive", async () => {
    const s = await raw();
    const { reply } = await s.join('realtime:second-wall', { config: { postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'run_events' }] }, access_token: tokA });
    assert.equal(reply.payload.status, 'ok');
    await s.next((m) => m.event === 'system');
    // as the database's owner: the policy now lets every row through
    await sql('ALTER POLICY run_events_of_project ON public.run_events USING (true)');
    try {
      const other = randomUUID();
      const mine = randomUUID();
      await insertEvent(B, other, 1);
      await insertEvent(A, mine, 1);
      await s.next((m) => m.event === 'postgres_changes' && m.payload.data.record?.run_id === mine);
      await new Promise((r) => setTimeout(r, 300));
      const runs = s.messages((m) => m.event === 'postgres_changes').map((m) => m.payload.data.record.run_id);
      assert.deepEqual(runs, [mine], "project B's row never reached project A's token");
    } finally {
      await sql(`ALTER POLICY run_events_of_project ON public.run_events USING (project_id = (current_setting('request.jwt.claims', true)::jsonb ->> 'project_id')::uuid)`);
    }
  });

  it('filters eq neq lt lte gt gte in and event filters pick the matching bindings; one frame per change', async () => {
    const s = await raw();
    const bindings = [
      { event: 'INSERT', schema: 'public', table: 'items', filter: 'id=gt.100' },
      { event: 'UPDATE', schema: 'public', table: 'items' },
      { event: 'delete', schema: 'public', table: 'items', filter: 'id=eq.101' },
      { event: '*', schema: 'public', table: 'items', filter: 'label=in.(x,y)' },
      { event: 'INSERT', schema: 'public', table: 'items', filter: 'id=lte.100' },
      { event: 'INSERT', schema: 'public', table: 'items', filter: 'label=neq.x' },
      { event: '*', table: 'items', filter: 'id=lt.50' },
      { event: 'INSERT', schema: 'public', table: 'items', filter: 'id=gte.200' },
    ];
    const { reply } = await s.join('realtime:filters', { config: { postgres_changes: bindings }, access_token: tokA });
    const ids = (reply.payload.response.postgres_changes as Array<{ id: number; event: string }>).map((b) => b.id);
    assert.equal(reply.payload.response.postgres_changes[2].event, 'delete', 'the echo keeps the client spelling');
    await s.next((m) => m.event === 'system');
    await sql(`INSERT INTO items (id, label) VALUES (101, 'x')`);
    await sql(`INSERT INTO items (id, label) VALUES (7, 'z')`);
    await sql(`UPDATE items SET label = 'y' WHERE id = 101`);
    await sql(`DELETE FROM items WHERE id = 101`);
    await sql(`DELETE FROM items WHERE id = 7`);
    await sql(`INSERT INTO items (id, label) VALUES (200, 'q')`);
    const last = await s.next((m) => m.event === 'postgres_changes' && m.payload.data.record?.id === 200);
    const frames = s.messages((m) => m.event === 'postgres_changes');
    assert.equal(frames[frames.length - 1], last);
    const seen = frames.map((f) => [f.payload.data.type, [...f.payload.ids].sort()]);
    const sorted = (xs: number[]) => [...xs].sort();
    assert.deepEqual(seen, [
      ['INSERT', sorted([ids[0], ids[3]])],
      ['INSERT', sorted([ids[4], ids[5], ids[6]])],
      ['UPDATE', sorted([ids[1], ids[3]])],
      ['DELETE', sorted([ids[2]])],
      ['DELETE', sorted([ids[6]])],
      ['INSERT', sorted([ids[0], ids[5], ids[7]])],
    ]);
    await sql('DELETE FROM items');
  });

  it('a binding on an unpublished table or with a bad filter gets SUBSCRIBED and a system error', async () => {
    const s = await raw();
    const { reply } = await s.join('realtime:unpublished', {
      config: { postgres_changes: [{ event: '*', schema: 'public', table: 'not_published' }] },
      access_token: tokA,
    });
    assert.equal(reply.payload.status, 'ok');
    const sys = await s.next((m) => m.event === 'system');
    assert.equal(sys.payload.status, 'error');
    assert.match(sys.payload.message, /^Unable to subscribe to changes with given parameters/);
    await s.join('realtime:bad-filter', { config: { postgres_changes: [{ event: '*', schema: 'public', table: 'items', filter: 'id=like.1' }] }, access_token: tokA });
    const bad = await s.next((m) => m.event === 'system' && m.topic === 'realtime:bad-filter');
    assert.equal(bad.payload.status, 'error');
    assert.match(bad.payload.message, /Error parsing `filter` params: id=like\.1/);
  });

  it('a subscriber that stops reading is cut off; the feed and the other subscribers go on', async () => {
    const slowServer = new RealtimeServer({ databaseUrl: dbUrl, jwtSecret: SECRET, maxBufferedBytes: 256 * 1024, log: (e) => logs.push(e) });
    await slowServer.start();
    try {
      const join = { config: { postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'items', filter: 'id=gte.1000' }] }, access_token: tokA };
      const slow = await raw({ apikey: anon }, '2.0.0', slowServer.url);
      const fast = await raw({ apikey: anon }, '2.0.0', slowServer.url);
      await slow.join('realtime:slow', join);
      await fast.join('realtime:fast', join);
      await slow.next((m) => m.event === 'system');
      await fast.next((m) => m.event === 'system');
      (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause(); // stops reading: the kernel buffers fill, then ours
      const rows = 300;
      await sql(
        `INSERT INTO items (id, label) SELECT 999 + i, (SELECT string_agg(md5(i::text || ':' || j::text), '') FROM generate_series(1, 1500) j) FROM generate_series(1, $1::int) i`,
        [rows],
      );
      await fast.next((m) => m.event === 'postgres_changes' && m.payload.data.record.id === 999 + rows, 20_000);
      assert.equal(fast.messages((m) => m.event === 'postgres_changes').length, rows);
      assert.equal(slowServer.stats.slowSocketsClosed, 1);
      assert.ok(logs.some((l) => l.msg === 'realtime slow subscriber closed'));
    } finally {
      await slowServer.close();
      await sql('DELETE FROM items');
    }
  });

  it('many slow subscribers together are cut off at the budget of all sockets, each under its own limit; a reader goes on', async () => {
    const budgetServer = new RealtimeServer({ databaseUrl: dbUrl, jwtSecret: SECRET, maxBufferedBytes: 64 * 1024 * 1024, maxTotalBufferedBytes: 2 * 1024 * 1024, log: (e) => logs.push(e) });
    await budgetServer.start();
    try {
      const join = { config: { postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'items', filter: 'id=gte.1000' }] }, access_token: tokA };
      const slow = [await raw({ apikey: anon }, '2.0.0', budgetServer.url), await raw({ apikey: anon }, '2.0.0', budgetServer.url), await raw({ apikey: anon }, '2.0.0', budgetServer.url)];
      const fast = await raw({ apikey: anon }, '2.0.0', budgetServer.url);
      for (const [i, s] of [...slow, fast].entries()) {
        await s.join(`realtime:budget-${i}`, join);
        await s.next((m) => m.event === 'system');
      }
      for (const s of slow) (s.ws as unknown as { _socket: { pause(): void } })._socket.pause();
      const rows = 300;
      await sql(
        `INSERT INTO items (id, label) SELECT 999 + i, (SELECT string_agg(md5(i::text || ':' || j::text), '') FROM generate_series(1, 1500) j) FROM generate_series(1, $1::int) i`,
        [rows],
      );
      await fast.next((m) => m.event === 'postgres_changes' && m.payload.data.record.id === 999 + rows, 20_000);
      assert.equal(fast.messages((m) => m.event === 'postgres_changes').length, rows, 'the reader got every change');
      // counted every half second: a slow reader's backlog stays, and two counts later it is let go
      for (const until = Date.now() + 5_000; budgetServer.stats.slowSocketsClosed < 3 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 100));
      assert.equal(budgetServer.stats.slowSocketsClosed, 3, 'the three slow readers, and not the one that kept up');
      assert.ok(logs.some((l) => l.msg === 'realtime slow subscriber closed' && l.why === 'all sockets together over the budget'));
    } finally {
      await budgetServer.close();
      await sql('DELETE FROM items');
    }
  });

  it('a request whose path is not a URL path gets 400, one with a token too long for its headers 431, and the server stays up; a null broadcast message is skipped', async () => {
    const { port } = new URL(server.url);
    const ask = (bytes: string) =>
      new Promise<string>((resolve) => {
        const socket = net.connect(Number(port), '127.0.0.1');
        let answer = '';
        socket.on('data', (d) => (answer += d));
        socket.on('error', () => resolve(answer));
        socket.on('close', () => resolve(answer));
        socket.write(bytes);
        setTimeout(() => socket.destroy(), 1_500);
      });
    assert.match(await ask('GET //%%%/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(
      await ask('GET //%%%/realtime/v1/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'),
      /^HTTP\/1\.1 400 /,
    );
    // a token too long for the headers this server reads: a status that says so, not a connection that just ends
    const longKey = `GET /realtime/v1/websocket?vsn=1.0.0&apikey=${'x'.repeat(60_000)} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;
    assert.match(await ask(longKey), /^HTTP\/1\.1 431 [^]*larger than this server reads/);
    assert.equal((await fetch(`${server.url}/realtime/v1/healthcheck`)).status, 200, 'still serving');
    const nulls = await fetch(`${server.url}/realtime/v1/api/broadcast`, { method: 'POST', headers: { apikey: anon, 'content-type': 'application/json' }, body: '{"messages":[null,5,{"topic":"t","event":"e","payload":{}}]}' });
    assert.equal(nulls.status, 202);
  });

  it('delivers only committed data: a rolled-back insert never appears, an open transaction appears at its commit', async () => {
    const run = randomUUID();
    const sub = await subscribe(await client(tokA), 'commits', [{ event: 'INSERT', schema: 'public', table: 'run_events', filter: `run_id=eq.${run}` }]);
    const tx = new Client({ connectionString: dbUrl });
    await tx.connect();
    try {
      await tx.query('BEGIN');
      await tx.query(`INSERT INTO run_events (project_id, run_id, seq, type) VALUES ($1, $2, 1, 'RolledBack')`, [A, run]);
      await tx.query('ROLLBACK');
      await tx.query('BEGIN');
      await tx.query(`INSERT INTO run_events (project_id, run_id, seq, type) VALUES ($1, $2, 2, 'CommittedLate')`, [A, run]);
      await insertEvent(A, run, 3, 'Marker'); // committed while seq 2 is still open
      await until('the marker', () => sub.changes.length >= 1);
      assert.deepEqual(sub.changes.map((c) => c.new.type), ['Marker']);
      await tx.query('COMMIT');
      await until('the late commit', () => sub.changes.length >= 2);
      assert.deepEqual(sub.changes.map((c) => c.new.type), ['Marker', 'CommittedLate'], 'commit order, not statement order');
    } finally {
      await tx.end();
    }
  });

  it("per-project isolation under RLS: a project A token never receives project B's rows (positive controls on the same socket)", async () => {
    const runA = randomUUID();
    const runB = randomUUID();
    const all = { event: 'INSERT', schema: 'public', table: 'run_events' };
    const cA = await client(tokA);
    const everything = await subscribe(cA, 'iso-all', [all]);
    const askForB = await subscribe(cA, 'iso-ask-b', [{ ...all, filter: `project_id=eq.${B}` }]);
    const bSub = await subscribe(await client(tokB), 'iso-b', [{ ...all, filter: `project_id=eq.${B}` }]);
    // a raw socket with a channel joined on the anon apikey only (no access_token) next to one with A's token
    const s = await raw();
    await s.join('realtime:iso-anon', { config: { postgres_changes: [all] } });
    const { joinRef: jrA } = await s.join('realtime:iso-tok-a', { config: { postgres_changes: [all] }, access_token: tokA });
    await s.next((m) => m.event === 'system' && m.topic === 'realtime:iso-tok-a');

    await insertEvent(B, runB, 1, 'SecretOfB');
    await insertEvent(A, runA, 1, 'OwnOfA');
    await until("A's row on A's channel", () => everything.changes.some((c) => c.new.run_id === runA));
    await until("B's row on B's channel", () => bSub.changes.some((c) => c.new.run_id === runB));
    await s.next((m) => m.event === 'postgres_changes' && m.topic === 'realtime:iso-tok-a' && m.payload.data.record.run_id === runA);
    // frames for one socket go out in commit order: B's row, had it been sent, would have come first
    assert.deepEqual(everything.changes.filter((c) => c.new.run_id === runA || c.new.run_id === runB).map((c) => c.new.type), ['OwnOfA']);
    assert.deepEqual(askForB.changes, []);
    assert.equal(askForB.subscribed(), 1, 'a foreign filter still gets SUBSCRIBED');
    assert.deepEqual(s.messages((m) => m.event === 'postgres_changes' && m.topic === 'realtime:iso-anon'), [], 'role anon has no SELECT grant');
    assert.deepEqual(
      s.messages((m) => m.event === 'postgres_changes' && m.topic === 'realtime:iso-tok-a' && [runA, runB].includes(m.payload.data.record.run_id)).map((m) => m.payload.data.record.type),
      ['OwnOfA'],
    );
    assert.ok(jrA);
  });

  it('refuses expired, forged, claim-less and malformed channel tokens with the Supabase reason words', async () => {
    const cases: Array<[string, string, RegExp]> = [
      ['expired', await signProjectToken({ secret: SECRET, projectId: A, ttlSec: -120 }), /InvalidJWTToken: Token has expired \d+ seconds ago/],
      ['forged', await signProjectToken({ secret: 'a-different-secret-also-32-characters-long', projectId: A, ttlSec: 600 }), /JwtSignatureError: Failed to validate JWT signature/],
      ['no role', await signToken(SECRET, { project_id: A, exp: Math.floor(Date.now() / 1000) + 600 }), /InvalidJWTToken: Fields `role` and `exp` are required in JWT/],
      ['no exp', await signToken(SECRET, { project_id: A, role: 'authenticated' }), /InvalidJWTToken: Fields `role` and `exp` are required in JWT/],
      ['malformed', 'this-is-not-a-jwt', /MalformedJWT: The token provided is not a valid JWT/],
    ];
    for (const [what, token, words] of cases) {
      const c = await client(token);
      const sub = await subscribe(c, `refused-${what.replace(' ', '-')}`, [{ event: 'INSERT', schema: 'public', table: 'run_events' }], 'CHANNEL_ERROR');
      const err = sub.statuses.find((s) => s.status === 'CHANNEL_ERROR')!;
      assert.match(String(err.error), words, what);
      assert.equal(sub.subscribed(), 0, what);
      await closeRealtimeClient(c);
    }
  });

  it('refuses the upgrade with 401 and a JSON error for a bad apikey (supabase-js never subscribes); 400 for an unknown vsn', async () => {
    const status = (url: string) =>
      new Promise<{ code: number; body: any }>((resolve, reject) => {
        const ws = new WebSocket(url);
        ws.on('open', () => reject(new Error('upgrade accepted')));
        ws.on('error', () => undefined);
        ws.on('unexpected-response', (_req, res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve({ code: res.statusCode ?? 0, body: JSON.parse(text) }));
        });
      });
    const ws = server.url.replace('http', 'ws');
    const forged = await signAnonKey({ secret: 'a-different-secret-also-32-characters-long' });
    assert.deepEqual(await status(`${ws}/realtime/v1/websocket?apikey=${forged}&vsn=2.0.0`), { code: 401, body: { error: 'JwtSignatureError: Failed to validate JWT signature' } });
    assert.equal((await status(`${ws}/realtime/v1/websocket?vsn=2.0.0`)).code, 401);
    const expiredKey = await signToken(SECRET, { role: 'anon', exp: Math.floor(Date.now() / 1000) - 5 });
    assert.match((await status(`${ws}/socket/websocket?apikey=${expiredKey}`)).body.error, /^InvalidJWTToken: Token has expired/);
    assert.equal((await status(`${ws}/realtime/v1/websocket?apikey=${anon}&vsn=3.0.0`)).code, 400);
    assert.equal((await status(`${ws}/elsewhere/websocket?apikey=${anon}`)).code, 404);
    // x-api-key header in place of the query parameter; no vsn means 1.0.0 (JSON objects)
    const viaHeader = new WebSocket(`${ws}/socket/websocket`, { headers: { 'x-api-key': anon } });
    await new Promise((resolve, reject) => (viaHeader.on('open', resolve), viaHeader.on('unexpected-response', () => reject(new Error('refused')))));
    const answer = new Promise<string>((resolve) => viaHeader.once('message', (d) => resolve(String(d))));
    viaHeader.send(JSON.stringify({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: '3' }));
    assert.deepEqual(JSON.parse(await answer), { topic: 'phoenix', event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: '3' });
    viaHeader.terminate();

    const c = await client(tokA, { anonKey: forged });
    const sub = await subscribe(c, 'bad-apikey', [], 'CHANNEL_ERROR');
    assert.equal(sub.subscribed(), 0);
    await closeRealtimeClient(c);
  });

  it('answers heartbeats and closes a socket that stays silent for heartbeatTimeoutMs', async () => {
    const hb = new RealtimeServer({ databaseUrl: dbUrl, jwtSecret: SECRET, heartbeatTimeoutMs: 400 });
    await hb.start();
    try {
      const s = await raw({ apikey: anon }, '2.0.0', hb.url);
      const v1 = await raw({ apikey: anon }, '1.0.0', hb.url);
      s.send({ join_ref: null, ref: '1', topic: 'phoenix', event: 'heartbeat', payload: {} });
      v1.send({ join_ref: null, ref: '1', topic: 'phoenix', event: 'heartbeat', payload: {} });
      await s.next((m) => m.event === 'phx_reply');
      await v1.next((m) => m.event === 'phx_reply');
      assert.equal(s.texts[0], '[null,"1","phoenix","phx_reply",{"status":"ok","response":{}}]');
      assert.deepEqual(JSON.parse(v1.texts[0]), { topic: 'phoenix', event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: '1' });
      // heartbeats keep it open past the timeout; then silence closes it
      for (let i = 2; i <= 5; i++) {
        await new Promise((r) => setTimeout(r, 150));
        s.send({ join_ref: null, ref: String(i), topic: 'phoenix', event: 'heartbeat', payload: {} });
      }
      assert.equal(s.closeCode, null);
      const silentFrom = Date.now();
      const code = await s.closed;
      const after = Date.now() - silentFrom;
      assert.equal(code, 1000);
      assert.ok(after >= 350 && after < 3000, `closed ${after} ms after the last heartbeat`);
      await until('the server to forget both sockets', () => hb.stats.sockets === 0);
    } finally {
      await hb.close();
    }
  });

  it('broadcast: binary kind-3 and JSON pushes fan out honouring self and ack; REST broadcast answers 202; presence tracks', async () => {
    const room = `room-${randomUUID().slice(0, 8)}`;
    const got = { x: [] as any[], y: [] as any[] };
    // x and y: two dashboards of project A
    const cx = await client(tokA, { timeout: 2000 });
    const cy = await client(tokA, { timeout: 2000 });
    const xch = cx.channel(room, { config: { broadcast: { self: true, ack: true }, presence: { key: 'x-key' } } });
    const ych = cy.channel(room);
    xch.on('broadcast', { event: 'msg' }, (p) => got.x.push(p));
    ych.on('broadcast', { event: 'msg' }, (p) => got.y.push(p));
    let xSynced = 0;
    xch.on('presence', { event: 'sync' }, () => xSynced++);
    const joined = (ch: RealtimeChannel) => new Promise<void>((resolve) => ch.subscribe((st) => st === 'SUBSCRIBED' && resolve()));
    await Promise.all([joined(xch), joined(ych)]);
    const v1 = await raw({ apikey: tokA }, '1.0.0');
    await v1.join(`realtime:${room}`, { config: { broadcast: { self: false, ack: false } } });
    const w = await raw({ apikey: tokA });
    const { joinRef: wj } = await w.join(`realtime:${room}`, { config: { broadcast: { self: false, ack: true } } });
    // the same room name under project B's token and under the public anon key: other spaces, which hear nothing
    const otherProject = await raw({ apikey: tokB });
    await otherProject.join(`realtime:${room}`, { config: { broadcast: { self: false, ack: false }, presence: { key: 'b-key' } } });
    const anonymous = await raw({ apikey: anon });
    await anonymous.join(`realtime:${room}`, { config: { broadcast: { self: false, ack: false } } });

    assert.equal(await xch.send({ type: 'broadcast', event: 'msg', payload: { from: 'x' } }), 'ok', 'acknowledged');
    await until('x to reach everyone', () => got.x.length === 1 && got.y.length === 1 && v1.messages((m) => m.event === 'broadcast').length === 1);
    assert.deepEqual(got.y[0], { type: 'broadcast', event: 'msg', payload: { from: 'x' } });
    assert.deepEqual(got.x[0], got.y[0], 'self: true delivers to the sender');
    assert.deepEqual(v1.messages((m) => m.event === 'broadcast')[0], { join_ref: null, ref: null, topic: `realtime:${room}`, event: 'broadcast', payload: { type: 'broadcast', event: 'msg', payload: { from: 'x' } } });

    assert.equal(await ych.send({ type: 'broadcast', event: 'msg', payload: { from: 'y' } }), 'ok');
    // a raw kind-3 frame with ack: the reply echoes its join_ref and ref
    w.sendBinary(encodeBroadcastPush({ joinRef: wj, ref: '77', topic: `realtime:${room}`, event: 'msg', payload: { from: 'w' } }));
    const ack = await w.next((m) => m.event === 'phx_reply' && m.ref === '77');
    assert.deepEqual(ack, { join_ref: wj, ref: '77', topic: `realtime:${room}`, event: 'phx_reply', payload: { status: 'ok', response: {} } });
    await until('y and w to reach x, and w to reach y', () => got.x.length === 3 && got.y.length === 2);
    assert.deepEqual(got.x.map((p) => p.payload.from), ['x', 'y', 'w']);
    assert.deepEqual(got.y.map((p) => p.payload.from), ['x', 'w'], 'self: false (the default) leaves the sender out');

    // vsn 1.0.0 pushes broadcasts as JSON objects
    v1.send({ join_ref: v1.messages((m) => m.event === 'phx_reply')[0].ref, ref: '90', topic: `realtime:${room}`, event: 'broadcast', payload: { type: 'broadcast', event: 'msg', payload: { from: 'v1' } } });
    await until('the v1 broadcast', () => got.x.length === 4 && got.y.length === 3);
    assert.deepEqual(got.y[2], { type: 'broadcast', event: 'msg', payload: { from: 'v1' } });
    // raw bytes (kind 3, encoding 0) reach vsn 2 clients as binary kind 4, which supabase-js decodes
    const bins: any[] = [];
    xch.on('broadcast', { event: 'bin' }, (p) => bins.push(p));
    w.sendBinary(encodeBroadcastPush({ joinRef: wj, ref: '78', topic: `realtime:${room}`, event: 'bin', payload: Buffer.from([1, 2, 3]) }));
    await until('the binary broadcast', () => bins.length === 1);
    assert.deepEqual([...new Uint8Array(bins[0].payload as ArrayBuffer)], [1, 2, 3]);

    const res = await fetch(`${server.url}/realtime/v1/api/broadcast`, {
      method: 'POST',
      headers: { apikey: anon, authorization: `Bearer ${tokA}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ topic: room, event: 'msg', payload: { from: 'rest' } }] }),
    });
    assert.equal(res.status, 202);
    await until('the REST broadcast', () => got.x.length === 5 && got.y.length === 4);
    assert.deepEqual(got.y.map((p) => p.payload.from), ['x', 'w', 'v1', 'rest']);
    const refused = await fetch(`${server.url}/realtime/v1/api/broadcast`, { method: 'POST', headers: { apikey: 'nope', 'content-type': 'application/json' }, body: '{"messages":[]}' });
    assert.equal(refused.status, 401);
    // the public anon key alone broadcasts into the anonymous space only: project A's dashboards never see it
    const byAnon = await fetch(`${server.url}/realtime/v1/api/broadcast`, {
      method: 'POST',
      headers: { apikey: anon, 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ topic: room, event: 'msg', payload: { from: 'anon' } }] }),
    });
    assert.equal(byAnon.status, 202);
    await until('the anonymous broadcast to reach the anonymous space', () => anonymous.messages((m) => m.event === 'broadcast').length === 1);
    assert.deepEqual(anonymous.messages((m) => m.event === 'broadcast').map((m) => (m.payload as any).payload.from), ['anon']);

    assert.equal(await xch.track({ online: true }), 'ok');
    await until('presence state with x-key', () => (xch.presenceState() as Record<string, unknown[]>)['x-key']?.length === 1 && xSynced > 0);
    assert.equal((xch.presenceState() as any)['x-key'][0].online, true);
    // another project in a room of the same name heard none of it, presence included; nor did the anon key
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(otherProject.messages((m) => m.event === 'broadcast' || m.event === 'presence_diff'), []);
    assert.equal(got.x.filter((p) => p.payload.from === 'anon').length + got.y.filter((p) => p.payload.from === 'anon').length, 0);
    assert.equal(anonymous.messages((m) => m.event === 'broadcast').length, 1, 'the anonymous space got only its own broadcast');
  });

  it('hostile clients: no signed token, no broadcast; bounded channels and presence; roles above row-level security refused', async () => {
    const post = (path: string, headers: Record<string, string>, body: string) => fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    const forged = JSON.stringify({ messages: [{ topic: 'acme-runs', event: 'run_event', payload: { run_id: 'forged' } }] });
    // an `sb_` key is a label beside a signed apikey, never a credential by itself
    assert.equal((await post('/realtime/v1/api/broadcast', { authorization: 'Bearer sb_publishable_x' }, forged)).status, 401);
    assert.equal((await post('/realtime/v1/api/broadcast/acme-runs/events/run_event', { authorization: 'Bearer sb_x' }, '{}')).status, 401);
    assert.equal((await post('/realtime/v1/api/broadcast', { apikey: anon, authorization: 'Bearer sb_publishable_x' }, forged)).status, 202, 'positive control');
    const badPath = await post('/realtime/v1/api/broadcast/%E0%A4%A/events/x', { apikey: anon }, '{}');
    assert.equal(badPath.status, 400);
    const big = await post('/realtime/v1/api/broadcast', { apikey: anon }, JSON.stringify({ messages: [], pad: 'x'.repeat(1_100_000) })).catch((e) => e as Error);
    assert.equal(big instanceof Error ? big.message : big.status, 413, 'a body over the limit is answered 413, not reset');

    // a socket holds at most 100 channels
    const s = await raw();
    for (let i = 0; i < 100; i++) await s.join(`realtime:room-${i}`, { config: {}, access_token: tokA });
    const over = await s.join('realtime:room-100', { config: {}, access_token: tokA });
    assert.deepEqual(over.reply.payload, { status: 'error', response: { reason: 'Too many channels: a socket may join at most 100' } });
    const again = await s.join('realtime:room-7', { config: {}, access_token: tokA });
    assert.equal((again.reply.payload as { status: string }).status, 'ok', 'joining a topic it holds again still works');
    s.close();

    // presence beyond 32 kB is refused; within it, tracked
    const p = await raw();
    const { joinRef } = await p.join('realtime:lobby', { config: { presence: { key: 'k' } }, access_token: tokA });
    p.send({ join_ref: joinRef, ref: 'big', topic: 'realtime:lobby', event: 'presence', payload: { type: 'presence', event: 'track', payload: { blob: 'x'.repeat(40_000) } } });
    assert.deepEqual((await p.next((m) => m.ref === 'big')).payload, { status: 'error', response: { reason: 'presence payload over 32768 bytes' } });
    p.send({ join_ref: joinRef, ref: 'small', topic: 'realtime:lobby', event: 'presence', payload: { type: 'presence', event: 'track', payload: { online: true } } });
    assert.deepEqual((await p.next((m) => m.ref === 'small')).payload, { status: 'ok', response: {} });
    p.close();

    // a token naming a superuser role, even one signed with the real secret, sees nothing: its join is refused
    const su = await signToken(SECRET, { role: 'postgres', project_id: A, exp: Math.floor(Date.now() / 1000) + 600 });
    const c = await client(su);
    const sub = await subscribe(c, 'superuser', [{ event: 'INSERT', schema: 'public', table: 'run_events' }], 'CHANNEL_ERROR');
    assert.match(String(sub.statuses.find((x) => x.status === 'CHANNEL_ERROR')!.error), /role "postgres" is not bound by row-level security/);
    await closeRealtimeClient(c);
    // nor can a channel joined as a bound role be moved above row-level security by refreshing its token
    const r = await raw();
    const joined = await r.join('realtime:refresh', { config: { postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'run_events' }] }, access_token: tokA });
    r.send({ join_ref: joined.joinRef, ref: 'su', topic: 'realtime:refresh', event: 'access_token', payload: { access_token: su } });
    const stopped = await r.next((m) => m.topic === 'realtime:refresh' && m.event === 'system' && (m.payload as { status?: string }).status === 'error');
    assert.match(String((stopped.payload as { message?: string }).message), /role "postgres" is not bound by row-level security/);
    r.close();
  });

  it('hostile bindings and broadcasts: bounded postgres_changes bindings, a join that cannot be read answered, a broadcast that cannot be sent refused whole', async () => {
    const binding = (filter?: string) => ({ event: 'INSERT', schema: 'public', table: 'run_events', ...(filter ? { filter } : {}) });
    const ids = (n: number) => Array.from({ length: n }, () => randomUUID()).join(',');
    const s = await raw();
    const refused = async (topic: string, payload: Record<string, unknown>) => ((await s.join(topic, payload)).reply.payload as { status: string; response: { reason?: string } });
    // more bindings than a channel may have, a filter longer than any real one, extra fields not echoed
    assert.deepEqual(await refused('realtime:many', { config: { postgres_changes: Array.from({ length: 101 }, () => binding()) }, access_token: tokA }), {
      status: 'error',
      response: { reason: 'Too many postgres_changes bindings: a channel may have at most 100' },
    });
    assert.match(String((await refused('realtime:long', { config: { postgres_changes: [binding(`run_id=in.(${ids(200)})`)] }, access_token: tokA })).response.reason), /filter too long: at most 4096/);
    const ok = await refused('realtime:ok', { config: { postgres_changes: [{ ...binding(`run_id=in.(${ids(100)})`), pad: 'x'.repeat(10_000) }] }, access_token: tokA });
    assert.equal(ok.status, 'ok');
    assert.deepEqual(Object.keys((ok.response as { postgres_changes: Array<Record<string, unknown>> }).postgres_changes[0]).sort(), ['event', 'filter', 'id', 'schema', 'table']);
    // a socket's bindings together are bounded: 100 channels of 100 long filters each would hold 40 MB
    let joined = 0;
    let reason = '';
    for (let i = 0; i < 99 && !reason; i++) {
      const r = await refused(`realtime:heavy-${i}`, { config: { postgres_changes: Array.from({ length: 100 }, (_, j) => binding(`run_id=in.(${ids(20)},${j})`)) }, access_token: tokA });
      if (r.status === 'ok') joined++;
      else reason = String(r.response.reason);
    }
    assert.ok(joined >= 1 && joined < 10, `joined ${joined} heavy channels`);
    assert.match(reason, /Too many postgres_changes bindings on this socket: their filters may weigh at most 512 KiB/);
    // a join nested too deep to read is answered, and does not hold a channel's place
    // names every frame and every member's diff repeats are short
    assert.deepEqual(await refused(`realtime:${'t'.repeat(300)}`, { config: {}, access_token: tokA }), { status: 'error', response: { reason: 'Topic too long: at most 255 bytes' } });
    assert.deepEqual(await refused('realtime:lobby-keys', { config: { presence: { key: 'k'.repeat(300) } }, access_token: tokA }), {
      status: 'error',
      response: { reason: 'Presence key too long: at most 255 bytes' },
    });
    s.sendText(`["d","d","realtime:deep","phx_join",{"config":{"postgres_changes":[{"filter":${'['.repeat(20_000) + ']'.repeat(20_000)}}]},"access_token":"${tokA}"}]`);
    const deep = (await s.next((m) => m.event === 'phx_reply' && m.ref === 'd')).payload as { status: string };
    assert.equal(deep.status, 'ok', 'a filter that is not text is no filter');
    s.close();

    // broadcasts: a binary one with a topic over 255 bytes, a JSON one nested too deep, a batch with one of them
    const post = (path: string, headers: Record<string, string>, body: string | Buffer) => fetch(`${server.url}${path}`, { method: 'POST', headers: { apikey: anon, ...headers }, body });
    assert.equal((await post(`/realtime/v1/api/broadcast/${'t'.repeat(300)}/events/e`, { 'content-type': 'application/octet-stream' }, Buffer.from([1, 2, 3]))).status, 400);
    const nested = '{"messages":[{"topic":"room","event":"e","payload":{"a":"before"}},{"topic":"room","event":"e","payload":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}]}';
    const deepAnswer = await post('/realtime/v1/api/broadcast', { 'content-type': 'application/json' }, nested);
    assert.equal(deepAnswer.status, 400);
    assert.match(String(((await deepAnswer.json()) as { error: string }).error), /nested too deep/);
    assert.equal((await fetch(`${server.url}/realtime/v1/healthcheck`)).status, 200, 'still serving');
  });

  it('access_token: a valid refresh keeps the channel, an invalid one closes it, and an expiring token closes it at exp', async () => {
    const run = randomUUID();
    const c = await client(tokA, { timeout: 2000 });
    const sub = await subscribe(c, 'refresh', [{ event: 'INSERT', schema: 'public', table: 'run_events', filter: `run_id=eq.${run}` }]);
    await c.realtime.setAuth(await signProjectToken({ secret: SECRET, projectId: A, ttlSec: 7200 }));
    await insertEvent(A, run, 1);
    await until('a row after the refresh', () => sub.changes.length === 1);
    assert.deepEqual(sub.statuses.map((s) => s.status), ['SUBSCRIBED']);

    await c.realtime.setAuth(await signProjectToken({ secret: 'a-different-secret-also-32-characters-long', projectId: A, ttlSec: 600 }));
    await until('the channel to close', () => sub.statuses.some((s) => s.status === 'CLOSED'));
    assert.ok(sub.systems.some((s) => s.extension === 'system' && s.status === 'error' && /JwtSignatureError/.test(s.message)));

    const short = await client(await signProjectToken({ secret: SECRET, projectId: A, ttlSec: 2 }));
    const expiring = await subscribe(short, 'expiring', [{ event: 'INSERT', schema: 'public', table: 'run_events' }]);
    await until('the expired channel to close', () => expiring.statuses.some((s) => s.status === 'CLOSED'), 5000);
    assert.ok(expiring.systems.some((s) => s.status === 'error' && /^InvalidJWTToken: Token has expired \d+ seconds ago$/.test(s.message)));
  });

  it('phx_leave is acknowledged; pushes to unjoined or unknown topics get "unmatched topic"', async () => {
    const s = await raw();
    const { joinRef } = await s.join('realtime:leave-me', { config: {} });
    s.send({ join_ref: joinRef, ref: '50', topic: 'realtime:leave-me', event: 'phx_leave', payload: {} });
    assert.deepEqual((await s.next((m) => m.ref === '50')).payload, { status: 'ok', response: {} });
    s.send({ join_ref: joinRef, ref: '51', topic: 'realtime:leave-me', event: 'broadcast', payload: { type: 'broadcast', event: 'e', payload: {} } });
    assert.deepEqual((await s.next((m) => m.ref === '51')).payload, { status: 'error', response: { reason: 'unmatched topic' } });
    const { reply } = await s.join('elsewhere:topic', {});
    assert.deepEqual(reply.payload, { status: 'error', response: { reason: 'unmatched topic' } });
    s.send({ join_ref: null, ref: '52', topic: 'realtime:never-joined', event: 'phx_leave', payload: {} });
    assert.equal((await s.next((m) => m.ref === '52')).payload.status, 'ok');
    // a re-join replaces the subscription: one channel, and the old join_ref gets phx_close
    const first = await s.join('realtime:twice', { config: {} });
    const before = server.stats.channels;
    const second = await s.join('realtime:twice', { config: {} });
    assert.equal(second.reply.payload.status, 'ok');
    assert.equal(server.stats.channels, before);
    assert.ok(s.messages((m) => m.event === 'phx_close' && m.join_ref === first.joinRef).length === 1);

    const c = await client(tokA);
    const sub = await subscribe(c, 'to-remove', []);
    assert.equal(await c.removeChannel(sub.ch), 'ok');
    assert.ok(sub.statuses.some((st) => st.status === 'CLOSED'));
  });

  it('holds postgres_changes joins while the feed is down and answers with an error after joinTimeoutMs; close() is quick', async () => {
    const deadPort = await freePort();
    const down = new RealtimeServer({ databaseUrl: `postgres://postgres:x@127.0.0.1:${deadPort}/none`, jwtSecret: SECRET, joinTimeoutMs: 300 });
    await down.start();
    const s = await raw({ apikey: anon }, '2.0.0', down.url);
    const plain = await s.join('realtime:plain', { config: {} });
    assert.equal(plain.reply.payload.status, 'ok', 'channels without postgres_changes do not need the feed');
    const started = Date.now();
    const held = await s.join('realtime:held', { config: { postgres_changes: [{ event: '*', schema: 'public', table: 'run_events' }] } });
    assert.ok(Date.now() - started >= 250);
    assert.deepEqual(held.reply.payload, { status: 'error', response: { reason: 'UnableToConnectToProject: Realtime was unable to connect to the project database' } });
    const t = Date.now();
    await down.close();
    assert.ok(Date.now() - t < 1000, `close took ${Date.now() - t} ms`);
    await s.closed;
  });

  it('the dropChange failpoint drops exactly one change and records it', async () => {
    const run = randomUUID();
    const fp = new RealtimeServer({
      databaseUrl: dbUrl,
      jwtSecret: SECRET,
      dropChange: (c) => c.table === 'run_events' && c.record.run_id === run && c.record.seq === 3,
    });
    await fp.start();
    try {
      const s = await raw({ apikey: anon }, '2.0.0', fp.url);
      await s.join('realtime:fp', { config: { postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'run_events', filter: `run_id=eq.${run}` }] }, access_token: tokA });
      await s.next((m) => m.event === 'system');
      for (let seq = 1; seq <= 5; seq++) await insertEvent(A, run, seq);
      await s.next((m) => m.event === 'postgres_changes' && m.payload.data.record.seq === 5);
      assert.deepEqual(
        s.messages((m) => m.event === 'postgres_changes').map((m) => m.payload.data.record.seq),
        [1, 2, 4, 5],
      );
      assert.equal(fp.stats.dropped.length, 1);
      assert.equal(fp.stats.dropped[0].record.seq, 3);
      assert.equal(fp.stats.dropped[0].table, 'run_events');
    } finally {
      await fp.close();
    }
  });

  it('survives a Postgres crash and restart: channels get phx_error, rejoin once the feed is back, and the live log catches up without a gap', async () => {
    const run = randomUUID();
    const logCountBefore = logs.filter((l) => l.msg === 'realtime feed down').length;
    const live = new LiveLog({
      client: await client(tokA),
      scope: { projectId: A },
      // what the engine's history API would answer: every run of the project, after what is known
      catchUp: async (known) => {
        const rows = await sql<{ run_id: string; seq: number; type: string; payload: unknown; hash: string }>(
          'SELECT run_id::text, seq, type, payload, hash FROM run_events WHERE project_id = $1 ORDER BY run_id, seq',
          [A],
        );
        return rows.filter((r) => r.seq > (known.get(r.run_id) ?? 0)).map((r) => ({ runId: r.run_id, seq: r.seq, type: r.type, data: r.payload, hash: r.hash }));
      },
    });
    await live.ready();
    await insertEvent(A, run, 1);
    await insertEvent(A, run, 2);
    await live.waitUntilHolds(run, 2);

    const pidBefore = pg.pid();
    await pg.kill();
    await until('the channel error', () => live.status === 'CHANNEL_ERROR');
    await pg.restart();
    assert.notEqual(pg.pid(), pidBefore);
    await insertEvent(A, run, 3); // likely before the feed is back: only a catch-up can bring these
    await insertEvent(A, run, 4);
    await until('the rejoin', () => live.subscribedCount >= 2, 20_000);
    await live.settled();
    await live.waitUntilHolds(run, 4);
    await insertEvent(A, run, 5);
    await live.waitUntilHolds(run, 5);
    assert.equal(live.eventsOf(run)[4].via, 'live', 'inserts after the restart arrive live again');
    assert.deepEqual(live.gaps, [], 'a reconnect catch-up is not a gap');
    const log = await sql<{ seq: number; type: string; hash: string }>('SELECT seq, type, hash FROM run_events WHERE run_id = $1 ORDER BY seq', [run]);
    assert.equal(live.compareWith(run, log), null);
    assert.equal(server.stats.feed, 'live');
    assert.equal(logs.filter((l) => l.msg === 'realtime feed down').length, logCountBefore + 1, 'one log line per state change, not per attempt');
    await live.close();
  });

  it('a server restart on the same permanent slot delivers what was committed while it was down; close({ dropSlot }) removes the slot', async () => {
    const port = await freePort();
    const slotName = `mh_rt_test_${process.pid}`;
    const run = randomUUID();
    const s1 = new RealtimeServer({ databaseUrl: dbUrl, jwtSecret: SECRET, port, slotName });
    await s1.start();
    let s2: RealtimeServer | null = null;
    try {
      const c = await openRealtimeClient({ url: s1.url, anonKey: anon, accessToken: tokA });
      clients.push(c);
      const sub = await subscribe(c, 'slot', [{ event: 'INSERT', schema: 'public', table: 'run_events', filter: `run_id=eq.${run}` }]);
      await insertEvent(A, run, 1);
      await until('seq 1', () => sub.changes.length === 1);
      let t = Date.now();
      await s1.close();
      assert.ok(Date.now() - t < 1000, `close took ${Date.now() - t} ms`);
      // the walsender lets go of the slot a moment after the connection ends
      const slot = await until('the slot to be released', async () => {
        const [row] = await sql<{ active: boolean; temporary: boolean }>('SELECT active, temporary FROM pg_replication_slots WHERE slot_name = $1', [slotName]);
        return row && !row.active ? row : null;
      });
      assert.deepEqual(slot, { active: false, temporary: false }, 'the permanent slot outlives the server (and retains WAL)');
      await insertEvent(A, run, 2); // committed while no server runs

      s2 = new RealtimeServer({ databaseUrl: dbUrl, jwtSecret: SECRET, port, slotName });
      await s2.start();
      await until('the rejoin on the new server', () => sub.subscribed() >= 2, 15_000);
      await until('seq 2, replayed from the slot', () => sub.changes.length >= 2);
      await insertEvent(A, run, 3);
      await until('seq 3', () => sub.changes.length >= 3);
      assert.deepEqual(sub.changes.map((ch) => ch.new.seq), [1, 2, 3]);
      await closeRealtimeClient(c);
      t = Date.now();
      await s2.close({ dropSlot: true });
      assert.ok(Date.now() - t < 1000, `close({ dropSlot }) took ${Date.now() - t} ms`);
      assert.deepEqual(await sql('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [slotName]), []);
    } finally {
      await s1.close();
      await s2?.close({ dropSlot: true });
    }
  });
});
