import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from 'pg';
import { cli, KEYS, orderSyncDefinition, publish, startDatabases, TestDatabases, letThrough, oneOrderVerified } from './helpers';

/*
 * What a database superuser without the engine's keys could do unnoticed (seventh round).
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});


/** Two columns of a catalog swap names in pg_attribute (a plain UPDATE, no DDL; Postgres itself reads columns by position). */
async function swapColumnNames(pool: { query: (sql: string) => Promise<unknown> }, catalog: string, a: string, b: string): Promise<void> {
  const rename = (from: string, to: string) =>
    pool.query(`UPDATE pg_catalog.pg_attribute SET attname = '${to}' WHERE attrelid = 'pg_catalog.${catalog}'::pg_catalog.regclass AND attname = '${from}'`);
  await rename(a, 'meshhook_r7_swap');
  await rename(b, a);
  await rename('meshhook_r7_swap', b);
}

describe('a database superuser, round 7', { timeout: 360_000 }, () => {
  it("two columns of a catalog the seal reads swapping names in pg_attribute (a foreign key's operators edited behind them) are named by verify --all", async () => {
    const { url, pool, env } = await oneOrderVerified(dbs);
    const orphan = `INSERT INTO run_events (project_id, run_id, seq, version, type, payload, prev_hash, hash, recorded_at)
                    SELECT project_id, gen_random_uuid(), 1, 1, 'RunStarted', '{}', 'x', 'y', now() FROM runs LIMIT 1`;
    assert.equal(await letThrough(url, orphan), false, 'the control: the foreign key refuses an event of no run');

    // round 6 sealed conpfeqop. Here every foreign key's genuine operators are copied into conexclop (which a foreign
    // key never reads), this key's conpfeqop is set to (=, <>), and the two columns swap names: whoever asks pg_constraint for
    // "conpfeqop" by name is now answered from conexclop, the genuine operators, while Postgres checks the key by
    // the column's position, with <>
    const fk = `conname = 'run_events_run_fkey' AND conrelid = 'public.run_events'::regclass`;
    await pool.query(`UPDATE pg_catalog.pg_constraint SET conexclop = conpfeqop WHERE contype = 'f'`);
    await pool.query(
      `UPDATE pg_catalog.pg_constraint SET conpfeqop = ARRAY['pg_catalog.=(uuid,uuid)'::regoperator::oid, 'pg_catalog.<>(uuid,uuid)'::regoperator::oid]::oid[] WHERE ${fk}`,
    );
    await swapColumnNames(pool, 'pg_constraint', 'conpfeqop', 'conexclop');
    try {
      assert.equal(await letThrough(url, orphan), true, 'the foreign key no longer checks');
      const named = (await pool.query(`SELECT conpfeqop::text AS ops FROM pg_catalog.pg_constraint WHERE ${fk}`)).rows[0].ops;
      assert.doesNotMatch(named, new RegExp(`\\b${(await pool.query(`SELECT 'pg_catalog.<>(uuid,uuid)'::regoperator::oid AS o`)).rows[0].o}\\b`), 'asked by name, the column shows the genuine operators');

      const seen = await cli(['verify', '--all'], env);
      assert.equal(seen.code, 1, seen.out + seen.err);
      assert.match(seen.out, /NOT ok {2}schema {2}names of pg_constraint's columns were changed: pg_attribute was edited/);
    } finally {
      await swapColumnNames(pool, 'pg_constraint', 'conpfeqop', 'conexclop');
      await pool.query(`UPDATE pg_catalog.pg_constraint SET conpfeqop = conexclop WHERE ${fk}`);
      await pool.query(`UPDATE pg_catalog.pg_constraint SET conexclop = NULL WHERE contype = 'f'`);
    }
    const back = await cli(['verify', '--all'], env);
    assert.equal(back.code, 0, back.out + back.err);
  });
  it("two columns of a system view the seal reads swapping names (pg_settings: setting and boot_val, while every session runs as a replica) are named by verify --all", async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
    assert.equal((await cli(['verify', '--all'], env)).code, 0, 'the control');
    const orphan = `INSERT INTO run_events (project_id, run_id, seq, version, type, payload, prev_hash, hash, recorded_at)
                    SELECT id, gen_random_uuid(), 5, 1, 'RunStarted', '{}', 'x', 'y', now() FROM projects LIMIT 1`;
    assert.equal(await letThrough(url, orphan), false, 'the control: the foreign key (and the gap-free check) refuse it');
    const engineSetting = async (): Promise<string> => {
      const c = new Client({ connectionString: url, options: '-c role=meshhook_engine' });
      await c.connect();
      try {
        return (await c.query<{ session_replication_role: string }>('SHOW session_replication_role')).rows[0].session_replication_role;
      } finally {
        await c.end();
      }
    };
    // sealed since 018, read from pg_settings by name: the view's "setting" and "boot_val" swap names in this
    // database's pg_attribute, and the seal is shown each setting's boot value
    await swapColumnNames(pool, 'pg_settings', 'setting', 'boot_val');
    await pool.query(`ALTER SYSTEM SET session_replication_role = replica`);
    await pool.query('SELECT pg_catalog.pg_reload_conf()');
    try {
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await engineSetting(), 'replica', "every engine session fires no trigger of the log's");
      assert.equal(await letThrough(url, orphan), true, 'no foreign key and no gap-free check');
      const seen = await cli(['verify', '--all'], env);
      assert.equal(seen.code, 1, seen.out + seen.err);
      assert.match(seen.out, /NOT ok {2}schema {2}names of pg_settings's columns were changed: pg_attribute was edited/);
    } finally {
      await pool.query('ALTER SYSTEM RESET session_replication_role');
      await pool.query('SELECT pg_catalog.pg_reload_conf()');
      await swapColumnNames(pool, 'pg_settings', 'setting', 'boot_val');
      await new Promise((r) => setTimeout(r, 300));
    }
    assert.equal((await cli(['verify', '--all'], env)).code, 0, 'quiet once put back');
  });

  it('a library preloaded into every session server-wide (ALTER SYSTEM SET session_preload_libraries) is named by verify --all', async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    assert.equal((await cli(['verify', '--all'], env)).code, 0, 'the control');
    // a session as the engine opens its own: does it run the library's code? (auto_explain defines its settings when loaded)
    const loadedInEngineSession = async (): Promise<boolean> => {
      const c = new Client({ connectionString: url, options: '-c role=meshhook_engine' });
      await c.connect();
      try {
        return (await c.query(`SELECT pg_catalog.current_setting('auto_explain.log_min_duration', true) AS v`)).rows[0].v !== null;
      } finally {
        await c.end();
      }
    };
    assert.equal(await loadedInEngineSession(), false, 'the control: no library loaded');
    // auto_explain ships with Postgres; a superuser's own library, written to the server's disk, would do as they please
    await pool.query(`ALTER SYSTEM SET session_preload_libraries = 'auto_explain'`);
    await pool.query('SELECT pg_catalog.pg_reload_conf()');
    try {
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await loadedInEngineSession(), true, "the library runs in every engine session");
      const seen = await cli(['verify', '--all'], env);
      assert.equal(seen.code, 1, seen.out + seen.err);
      assert.match(seen.out, /NOT ok {2}schema {2}preloaded libraries are .*session_preload_libraries=auto_explain.* \(they were .*session_preload_libraries= .*\)/);
    } finally {
      await pool.query('ALTER SYSTEM RESET session_preload_libraries');
      await pool.query('SELECT pg_catalog.pg_reload_conf()');
      await new Promise((r) => setTimeout(r, 300));
    }
    assert.equal((await cli(['verify', '--all'], env)).code, 0, 'quiet once put back');
  });
});
