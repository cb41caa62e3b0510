import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Client, Pool } from 'pg';
import { freePort, provisionPostgres, type PostgresServer } from '../../src/db/postgres';
import { Visibility } from '../../src/realtime/auth';
import { LiveLog, type CaughtUpEvent } from '../../src/realtime/live-log';
import { RealtimeServer } from '../../src/realtime/server';
import { createRealtimeTestSchema } from '../../src/realtime/testing';
import { signAnonKey, signProjectToken } from '../../src/realtime/tokens';
import { ChainKeys, eventHash, genesisHash } from '../../src/domain/hash-chain';
import { Keyring } from '../../src/security/keyring';

/*
 * The live-log subscriber (real supabase-js underneath) against the compatible server: a change
 * the server silently drops is reported as a gap, while events missed across a reconnect are
 * caught up without being called a gap.
 */

const SECRET = 'realtime-live-log-test-secret-32-characters-plus';
const A = randomUUID();

let pg: PostgresServer;
let dbUrl: string;
let pool: Pool;
let anon: string;
let tokA: string;
const toClose: Array<{ close(): Promise<void> }> = [];

async function until<T>(what: string, probe: () => T | null | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function append(run: string, seq: number, type = 'StepSucceeded'): Promise<void> {
  await pool.query('INSERT INTO run_events (project_id, run_id, seq, type, payload, hash) VALUES ($1, $2, $3, $4, $5, $6)', [
    A,
    run,
    seq,
    type,
    JSON.stringify({ seq }),
    `hash-${run.slice(0, 8)}-${seq}`,
  ]);
}

async function runLog(run: string): Promise<Array<{ seq: number; type: string; hash: string }>> {
  return (await pool.query('SELECT seq, type, hash FROM run_events WHERE run_id = $1 ORDER BY seq', [run])).rows;
}

/** stands in for the engine's history API: every run of the project, after what the caller knows */
let catchUpCalls = 0;
async function catchUp(known: Map<string, number>): Promise<CaughtUpEvent[]> {
  catchUpCalls++;
  const { rows } = await pool.query('SELECT run_id::text, seq, type, payload, hash FROM run_events WHERE project_id = $1 ORDER BY run_id, seq', [A]);
  return rows
    .filter((r) => r.seq > (known.get(r.run_id) ?? 0))
    .map((r) => ({ runId: r.run_id, seq: r.seq, type: r.type, data: r.payload, hash: r.hash }));
}

async function server(extra: { port?: number; dropChange?: (c: { table: string; record: Record<string, unknown> }) => boolean; chainKeys?: ChainKeys } = {}): Promise<RealtimeServer> {
  const s = new RealtimeServer({ databaseUrl: dbUrl, jwtSecret: SECRET, ...extra });
  await s.start();
  toClose.push(s);
  return s;
}

async function liveLog(url: string, scope: { projectId: string } | { runId: string } = { projectId: A }): Promise<LiveLog> {
  const live = await LiveLog.open({ url, anonKey: anon, accessToken: tokA, scope, catchUp });
  toClose.unshift(live);
  await live.ready();
  return live;
}

before(async () => {
  pg = await provisionPostgres();
  const admin = new Client({ connectionString: pg.urlFor('postgres') });
  await admin.connect();
  const name = `rt_live_${process.pid}`;
  await admin.query(`DROP DATABASE IF EXISTS ${name}`);
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  dbUrl = pg.urlFor(name);
  pool = new Pool({ connectionString: dbUrl, max: 4 });
  pool.on('error', () => undefined);
  const c = await pool.connect();
  await createRealtimeTestSchema(c);
  c.release();
  anon = await signAnonKey({ secret: SECRET });
  tokA = await signProjectToken({ secret: SECRET, projectId: A, ttlSec: 3600 });
});

after(async () => {
  for (const x of toClose) await x.close().catch(() => undefined);
  await pool?.end().catch(() => undefined);
  await pg?.stop();
});

describe('live log', { timeout: 180_000 }, () => {
  it("a row the engine did not write is not sent by a server with the chain keys; a subscriber holding one lets it go when the log's own event comes under its number", async () => {
    await pool.query(`ALTER TABLE run_events ADD COLUMN IF NOT EXISTS version smallint NOT NULL DEFAULT 1, ADD COLUMN IF NOT EXISTS prev_hash text NOT NULL DEFAULT '', ADD COLUMN IF NOT EXISTS kid text`);
    const keys = Keyring.generate('rt-live');
    const run = randomUUID();
    const genuine = async (seq: number, prev: string, type: string): Promise<string> => {
      const recordedAt = new Date().toISOString();
      const hash = eventHash(prev, { runId: run, project: A, seq, type, version: 1, data: { seq }, recordedAt }, keys.chainKey().key);
      await pool.query('INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid) VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9)', [
        A, run, seq, type, JSON.stringify({ seq }), recordedAt, prev, hash, keys.chainKey().kid,
      ]);
      return hash;
    };
    const signedServer = await server({ chainKeys: keys.chainKeys() });
    const plainServer = await server();
    const signedLive = await liveLog(signedServer.url, { runId: run });
    const plainLive = await liveLog(plainServer.url, { runId: run });
    const first = await genuine(1, genesisHash(run), 'RunStarted');
    await signedLive.waitUntilHolds(run, 1);
    await plainLive.waitUntilHolds(run, 1);
    // someone with the database writes a finished event of their own, and takes it out again a moment later
    await pool.query(`INSERT INTO run_events (project_id, run_id, seq, type, payload, hash, prev_hash) VALUES ($1, $2, 2, 'RunFinished', '{"status":"failed","reason":"FORGED"}', 'ffff', $3)`, [A, run, first]);
    await plainLive.waitUntilHolds(run, 2);
    assert.equal(plainLive.eventsOf(run)[1].type, 'RunFinished', 'the server without keys sent it, as the real one would');
    await until('the signed server to refuse the forged row', () => signedServer.stats.unsignedNotSent === 1);
    await pool.query('DELETE FROM run_events WHERE run_id = $1 AND seq = 2', [run]);
    const second = await genuine(2, first, 'OperatorActed');
    await until('the real event 2 on both', () => signedLive.eventsOf(run)[1]?.hash === second && plainLive.eventsOf(run)[1]?.hash === second);
    assert.deepEqual(signedLive.eventsOf(run).map((e) => e.type), ['RunStarted', 'OperatorActed']);
    assert.deepEqual(signedLive.conflicts, [], 'the forged row never reached it');
    assert.deepEqual(plainLive.eventsOf(run).map((e) => e.type), ['RunStarted', 'OperatorActed']);
    assert.deepEqual(plainLive.conflicts.map((c) => [c.seq, c.held, c.got]), [[2, 'ffff', second]]);
  });

  it('reports a change the server dropped while subscribed as a gap, and still ends complete through a catch-up', async () => {
    const run = randomUUID();
    const other = randomUUID();
    const fp = await server({ dropChange: (c) => c.table === 'run_events' && c.record.run_id === run && c.record.seq === 3 });
    const live = await liveLog(fp.url);
    for (let seq = 1; seq <= 4; seq++) {
      await append(run, seq, seq === 1 ? 'RunStarted' : 'StepSucceeded');
      if (seq <= 3) await append(other, seq);
    }
    await live.waitUntilHolds(run, 4);
    await live.settled();
    await append(run, 5, 'RunSucceeded');
    await live.waitUntilHolds(run, 5);
    await live.waitUntilHolds(other, 3);

    assert.equal(fp.stats.dropped.length, 1, 'the failpoint fired once');
    assert.deepEqual(live.gaps, [{ runId: run, expectedSeq: 3, gotSeq: 4 }]);
    assert.deepEqual(
      live.eventsOf(run).map((e) => [e.seq, e.via]),
      [
        [1, 'live'],
        [2, 'live'],
        [3, 'catch-up'],
        [4, 'live'],
        [5, 'live'],
      ],
    );
    const log = await runLog(run);
    assert.equal(live.compareWith(run, log), `run ${run}: gap while subscribed: event 3 never arrived live (event 4 came next; catch-up filled it)`);
    assert.equal(live.compareWith(other, await runLog(other)), null, 'the other run is intact');
    assert.deepEqual(live.eventsOf(run)[4].data, { seq: 5 });

    // and the first difference in content is named
    assert.match(String(live.compareWith(run, [...log, { seq: 6, type: 'Extra', hash: 'x' }])), /missing event 6 \(Extra\)$/);
    assert.match(String(live.compareWith(run, log.slice(0, 4))), /holds event 5 \(RunSucceeded\) that the run log does not have$/);
    assert.match(String(live.compareWith(run, log.map((e) => (e.seq === 2 ? { ...e, hash: 'forged-hash' } : e)))), /event 2 \(StepSucceeded\) has hash hash-\w+… in the live log but forged-hash in the run log$/);
    assert.match(String(live.compareWith(run, log.map((e) => (e.seq === 1 ? { ...e, type: 'Other' } : e)))), /event 1 is RunStarted in the live log but Other in the run log$/);
  });

  it('does not count what a reconnect catch-up brings as a gap', async () => {
    const run = randomUUID();
    const port = await freePort();
    const s1 = await server({ port });
    const live = await liveLog(s1.url);
    await append(run, 1, 'RunStarted');
    await append(run, 2);
    await live.waitUntilHolds(run, 2);
    const callsBefore = catchUpCalls;

    await s1.close(); // the socket drops: supabase-js reconnects on its own (1 s, 2 s, 5 s, 10 s)
    await until('the channel to notice', () => live.status !== 'SUBSCRIBED');
    await append(run, 3); // committed while no server is listening
    await append(run, 4);
    await server({ port });
    await until('the rejoin', () => live.subscribedCount >= 2, 15_000);
    await live.settled();
    await live.waitUntilHolds(run, 4);
    await append(run, 5, 'RunSucceeded');
    await live.waitUntilHolds(run, 5);

    assert.ok(catchUpCalls > callsBefore, 'the rejoin caught up');
    assert.deepEqual(live.gaps, []);
    assert.deepEqual(
      live.eventsOf(run).map((e) => [e.seq, e.via]),
      [
        [1, 'live'],
        [2, 'live'],
        [3, 'catch-up'],
        [4, 'catch-up'],
        [5, 'live'],
      ],
    );
    assert.equal(live.compareWith(run, await runLog(run)), null);
  });

  it('a run-scoped live log holds only its run', async () => {
    const s = await server();
    const mine = randomUUID();
    const notMine = randomUUID();
    const live = await liveLog(s.url, { runId: mine });
    await append(notMine, 1);
    await append(mine, 1, 'RunStarted');
    await append(mine, 2);
    await live.waitUntilHolds(mine, 2);
    assert.deepEqual(live.runIds(), [mine]);
    assert.equal(live.compareWith(mine, await runLog(mine)), null);
    assert.deepEqual(live.gaps, []);
  });
});

describe('a decoded commit and the running set', { timeout: 90_000 }, () => {
  // Postgres streams a commit before it leaves the running set; the server waits for that
  // moment before asking whether the rows are visible to a subscriber's role.
  it('awaitCommitted waits while the transaction runs and returns once it has committed', async () => {
    const vis = new Visibility(pool);
    const open = await pool.connect();
    try {
      await open.query('BEGIN');
      const xid = Number((await open.query("SELECT (pg_current_xact_id()::text::numeric % 4294967296)::text AS x")).rows[0].x);
      let t0 = Date.now();
      await vis.awaitCommitted(xid, 300);
      assert.ok(Date.now() - t0 >= 300, 'an in-progress transaction is waited for until the cap');
      const done = vis.awaitCommitted(xid, 10_000);
      t0 = Date.now();
      setTimeout(() => void open.query('COMMIT'), 200);
      await done;
      const waited = Date.now() - t0;
      assert.ok(waited >= 150 && waited < 5_000, `returned ${waited} ms after the commit was scheduled`);
    } finally {
      open.release();
    }
  });
});
