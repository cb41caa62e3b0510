import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startEngine } from '../../src/engine';
import { sealSchema } from '../../src/integrity/schema-seal';
import { KEYS, cli, orderSyncDefinition, publish, runStatus, startDatabases, startTarget, TestDatabases, waitFor } from './helpers';

/*
 * What a database superuser without the engine's keys could do unnoticed (fifth round): switch a table's triggers
 * (append-only, gap-free, every foreign key) off with a plain UPDATE of pg_class or pg_trigger, or edit a built-in
 * aggregate in pg_aggregate, none of which the schema seal printed; and set DateStyle server-wide, which stopped every run and verify with it.
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

describe('a database superuser, round 5', { timeout: 360_000 }, () => {
  it("a table's triggers switched off in pg_class, a foreign key's trigger edited in pg_trigger, or a built-in aggregate edited, is named by verify --all", async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const control = await cli(['verify', '--all'], env);
    assert.equal(control.code, 0, control.out + control.err);

    const c = await pool.connect();
    try {
      // no DDL: pg_trigger still lists run_events_no_update_delete, run_events_gap_free and the foreign keys enabled
      await c.query("UPDATE pg_catalog.pg_class SET relhastriggers = false WHERE oid = 'public.run_events'::regclass");
      // a new session reads the table's description afresh: the append-only trigger no longer fires
      const other = await pool.connect();
      try {
        await other.query('BEGIN');
        await other.query('DELETE FROM run_events');
        await other.query('ROLLBACK');
      } finally {
        other.release();
      }
      const seen = await cli(['verify', '--all'], env);
      assert.equal(seen.code, 1, seen.out);
      assert.match(seen.out, /NOT ok  schema  firing on run_events changed: whether Postgres fires its triggers at all \(pg_class.relhastriggers\) is off \(it was on\)/);
      await c.query("UPDATE pg_catalog.pg_class SET relhastriggers = true WHERE oid = 'public.run_events'::regclass");
      assert.equal((await cli(['verify', '--all'], env)).code, 0, 'quiet once put back');

      // the foreign key tying an event to its run made to fire on UPDATE only: it no longer checks an insert
      const { rows } = await c.query<{ oid: number; tgtype: number }>(
        `SELECT t.oid, t.tgtype FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_constraint k ON k.oid = t.tgconstraint
         WHERE t.tgrelid = 'public.run_events'::regclass AND k.conname = 'run_events_run_fkey' AND t.tgisinternal AND t.tgtype & 4 <> 0`,
      );
      assert.equal(rows.length, 1);
      await c.query('UPDATE pg_catalog.pg_trigger SET tgtype = 17 WHERE oid = $1', [rows[0].oid]);
      const again = await cli(['verify', '--all'], env);
      assert.equal(again.code, 1, again.out);
      assert.match(again.out, /NOT ok  schema  enforcement of constraint run_events_run_fkey on run_events was edited in pg_trigger/);
      await c.query('UPDATE pg_catalog.pg_trigger SET tgtype = $2 WHERE oid = $1', [rows[0].oid, rows[0].tgtype]);
      assert.equal((await cli(['verify', '--all'], env)).code, 0, 'quiet once put back');

      // a built-in aggregate edited in place: max(integer) told to sort by `<`, so the gap-free check's max(seq),
      // answered from the primary key's index, is the least seq (pg_proc's row, which the seal hashed, is untouched)
      const max = "pg_catalog.max(integer)";
      await c.query(`UPDATE pg_catalog.pg_aggregate SET aggsortop = 'pg_catalog.<(integer,integer)'::pg_catalog.regoperator WHERE aggfnoid = '${max}'::pg_catalog.regprocedure`);
      const agg = await cli(['verify', '--all'], env);
      assert.equal(agg.code, 1, agg.out);
      assert.match(agg.out, /NOT ok  schema  aggregates built into pg_catalog were changed: a row of the catalog was edited in place/);
      await c.query(`UPDATE pg_catalog.pg_aggregate SET aggsortop = 'pg_catalog.>(integer,integer)'::pg_catalog.regoperator WHERE aggfnoid = '${max}'::pg_catalog.regprocedure`);
      assert.equal((await cli(['verify', '--all'], env)).code, 0, 'quiet once put back');
    } finally {
      c.release();
    }
  });

  it('DateStyle set server-wide neither stops runs nor verify', async () => {
    const { url, pool } = await dbs.fresh();
    const target = await startTarget();
    const admin = async (sql: string) => {
      const c = await pool.connect();
      try {
        await c.query(sql);
        await c.query('SELECT pg_catalog.pg_reload_conf()');
      } finally {
        c.release();
      }
    };
    // not a setting of the database or of a role (those are sealed): postgresql.auto.conf, every session of the server
    await admin("ALTER SYSTEM SET DateStyle = 'SQL, DMY'");
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      await new Promise((r) => setTimeout(r, 300)); // the reload reaches every backend
      await publish(pool, 'acme', orderSyncDefinition(target.url));
      const sent = await cli(['deliver', 'acme', 'order-sync', '--body', '{"order":{"id":"d-1","sum":7}}', '--url', engine.intake.url], env);
      assert.equal(sent.code, 0, sent.out + sent.err);
      const runId = /run ([0-9a-f-]{36}) started/.exec(sent.out)![1];
      await waitFor('the run to finish', async () => (await runStatus(pool, runId)) === 'succeeded');
      assert.equal(target.requests.length, 1);
      const verified = await cli(['verify', '--all'], env);
      assert.equal(verified.code, 0, verified.out + verified.err);
    } finally {
      await engine.stop();
      await target.close();
      await admin('ALTER SYSTEM RESET DateStyle');
    }
  });

  it("the seal's id sequence run to its end does not keep the schema from being sealed again", async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    await pool.query(`SELECT setval('schema_seals_id_seq', 9223372036854775807)`);
    // what the next migration does once it is applied: seal the schema again
    const latest = (await pool.query<{ m: string }>('SELECT migration AS m FROM schema_seals ORDER BY sealed_at DESC LIMIT 1')).rows[0].m;
    await sealSchema(pool, KEYS.chainKey(), latest);
    const verified = await cli(['verify', '--all'], env);
    assert.equal(verified.code, 0, verified.out + verified.err);
  });
});
