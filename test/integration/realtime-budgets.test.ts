import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Client } from 'pg';
import { provisionPostgres, type PostgresServer } from '../../src/db/postgres';
import { bindingWeight, RealtimeServer } from '../../src/realtime/server';
import { createRealtimeTestSchema, RawSocket } from '../../src/realtime/testing';
import { signAnonKey, signProjectToken } from '../../src/realtime/tokens';

/*
 * postgres_changes bindings are budgeted per project: whoever holds the public anon key (or another project's
 * token) cannot fill the server's budget and lock every project out of its live logs.
 */

const SECRET = 'realtime-budget-test-secret-32-characters-plus';
const A = randomUUID();
let pg: PostgresServer;
let server: RealtimeServer;
let dbUrl: string;
const sockets: RawSocket[] = [];

before(async () => {
  pg = await provisionPostgres();
  const admin = new Client({ connectionString: pg.urlFor('postgres') });
  await admin.connect();
  const name = `rt_budget_${process.pid}`;
  await admin.query(`DROP DATABASE IF EXISTS ${name}`);
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const c = new Client({ connectionString: pg.urlFor(name) });
  await c.connect();
  await createRealtimeTestSchema(c as never);
  await c.end();
  dbUrl = pg.urlFor(name);
  server = new RealtimeServer({ databaseUrl: dbUrl, jwtSecret: SECRET });
  await server.start();
});

after(async () => {
  for (const s of sockets) s.close();
  await server?.close();
  await pg?.stop();
});

describe('postgres_changes budgets', { timeout: 120_000 }, () => {
  it('a binding weighs about what it holds in the heap', () => {
    assert.ok(bindingWeight('seq=eq.5') >= 560);
    assert.ok(bindingWeight(`type=eq.${'a'.repeat(4000)}`) >= 4000);
  });

  it('the anon key filling its budget from many sockets leaves every project its own', async () => {
    const anon = await signAnonKey({ secret: SECRET });
    const tokA = await signProjectToken({ secret: SECRET, projectId: A, ttlSec: 600 });
    const heavy = Array.from({ length: 60 }, () => ({ event: '*', schema: 'public', table: 'run_events', filter: `type=eq.${'a'.repeat(4000)}` }));
    let refusal = '';
    let joined = 0;
    for (let i = 0; i < 200 && !refusal; i++) {
      const s = await RawSocket.open(server.url, { apikey: anon });
      sockets.push(s);
      const reply = (await s.join('realtime:flood', { config: { postgres_changes: heavy } })).reply.payload as { status: string; response: { reason?: string } };
      if (reply.status === 'ok') joined++;
      else refusal = String(reply.response.reason);
    }
    assert.match(refusal, /Too many postgres_changes subscriptions for this key/);
    assert.ok(joined >= 10 && joined <= 40, `the anon key joined ${joined} heavy channels`);
    // a project's dashboard still subscribes
    const s = await RawSocket.open(server.url, { apikey: anon });
    sockets.push(s);
    const mine = (await s.join('realtime:acme-runs', { access_token: tokA, config: { postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'run_events', filter: `project_id=eq.${A}` }] } })).reply.payload as { status: string };
    assert.equal(mine.status, 'ok');
  });

  it('a large change reaches every channel of a socket whole, both protocol versions, without a copy per channel', async () => {
    const tokA = await signProjectToken({ secret: SECRET, projectId: A, ttlSec: 600 });
    const anon = await signAnonKey({ secret: SECRET });
    const run = randomUUID();
    const channels = 20;
    const socks = await Promise.all((['1.0.0', '2.0.0'] as const).map((vsn) => RawSocket.open(server.url, { apikey: anon }, vsn)));
    sockets.push(...socks);
    for (const s of socks)
      for (let i = 0; i < channels; i++) {
        const r = (await s.join(`realtime:big-${i}`, { access_token: tokA, config: { postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'run_events', filter: `run_id=eq.${run}` }] } })).reply.payload as { status: string };
        assert.equal(r.status, 'ok');
      }
    const big = { pad: 'é'.repeat(100_000), n: 1 };
    const small = { n: 2 };
    const c = new Client({ connectionString: dbUrl });
    await c.connect();
    const stats = { before: server.stats.framesSent, shared: server.stats.sharedDataFrames };
    await c.query('INSERT INTO run_events (project_id, run_id, seq, type, payload) VALUES ($1, $2, 1, $3, $4), ($1, $2, 2, $3, $5)', [A, run, 'Big', JSON.stringify(big), JSON.stringify(small)]);
    await c.end();
    for (const s of socks) {
      const changes = await (async () => {
        for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 20))) {
          const got = s.frames.filter((f): f is any => !Buffer.isBuffer(f) && f.event === 'postgres_changes');
          if (got.length >= 2 * channels) return got;
        }
        throw new Error(`${s.vsn}: not every channel got both changes`);
      })();
      assert.deepEqual(new Set(changes.map((f) => f.topic)).size, channels);
      for (const f of changes) {
        assert.equal(typeof f.payload.ids[0], 'number');
        assert.deepEqual(f.payload.data.record.payload, f.payload.data.record.seq === 1 ? big : small);
        assert.equal(f.payload.data.type, 'INSERT');
      }
    }
    assert.ok(server.stats.framesSent - stats.before >= 4 * channels);
    // the big change went to every channel of both sockets as the one shared buffer (sockets of the tests before
    // may hold a binding it matches too)
    assert.ok(server.stats.sharedDataFrames - stats.shared >= 2 * channels, `${server.stats.sharedDataFrames - stats.shared} frames shared`);
  });
});
