import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { PoolClient } from 'pg';
import { startIntake } from '../../src/intake/server';
import { deliver } from '../../src/intake/sign';
import { cli, KEYS, orderSyncDefinition, publish, startDatabases, TestDatabases } from './helpers';

/*
 * An index made to lie changes no sealed object (found by a tampering probe): entries left out while indisready
 * was off, or its file swapped for another table's. Lookups through it miss rows that are there (a re-delivery's
 * record, the latest version). verify --all checks every index of the engine's tables against its table.
 */
let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

const ORDER = JSON.stringify({ order: { id: 'o-1', sum: 42 } });

/**
 * The latest version hidden from lookups through the primary key: the index's file swapped for that of an index of a
 * copy of the table without it (pg_class edited, as a superuser can), while the table still holds it.
 */
async function hideLatestVersion(c: PoolClient): Promise<void> {
  await c.query('VACUUM FULL workflow_versions');
  await c.query('CREATE TABLE public.wv_shadow (LIKE public.workflow_versions)');
  await c.query('INSERT INTO public.wv_shadow SELECT * FROM public.workflow_versions ORDER BY ctid');
  await c.query('DELETE FROM public.wv_shadow WHERE version = 2');
  await c.query('CREATE UNIQUE INDEX wv_shadow_pk ON public.wv_shadow (workflow_id, version)');
  await c.query(`UPDATE pg_catalog.pg_class c SET relfilenode = CASE c.oid WHEN 'public.workflow_versions_pkey'::regclass
                   THEN (SELECT relfilenode FROM pg_class WHERE oid = 'public.wv_shadow_pk'::regclass)
                   ELSE (SELECT relfilenode FROM pg_class WHERE oid = 'public.workflow_versions_pkey'::regclass) END
                 WHERE c.oid IN ('public.workflow_versions_pkey'::regclass, 'public.wv_shadow_pk'::regclass)`);
  await c.query('DROP TABLE public.wv_shadow');
}

describe('indexes checked against their tables', { timeout: 360_000 }, () => {
  it('an index that lost a row (indisready off while it was written) is named by verify --all', async (t) => {
    const { url, pool } = await dbs.fresh();
    if ((await pool.query(`SELECT 1 FROM pg_extension WHERE extname = 'amcheck'`)).rowCount === 0) return t.skip('no amcheck on this Postgres');
    const intake = await startIntake({ pool, keyring: KEYS });
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      const wf = await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
      assert.equal((await deliver(intake.url, 'acme', 'order-sync', wf.signingSecret, ORDER, { deliveryId: 'evt_1' })).status, 202);
      const control = await cli(['verify', '--all'], env);
      assert.equal(control.code, 0, control.out + control.err);
      assert.doesNotMatch(control.out + control.err, /index/);

      const c = await pool.connect();
      try {
        await c.query('SET session_replication_role = replica');
        await c.query(`UPDATE pg_index SET indisready = false WHERE indexrelid = 'deliveries_pkey'::regclass`);
        await c.query(`CREATE TEMP TABLE saved AS SELECT * FROM deliveries`);
        await c.query(`DELETE FROM deliveries`);
        await c.query(`INSERT INTO deliveries SELECT * FROM saved`);
        await c.query(`UPDATE pg_index SET indisready = true WHERE indexrelid = 'deliveries_pkey'::regclass`);
      } finally {
        c.release();
      }
      const seen = await cli(['verify', '--all'], env);
      assert.equal(seen.code, 1, seen.out + seen.err);
      assert.match(seen.out, /NOT ok {2}index {2}index deliveries_pkey on deliveries does not hold what its table holds/);
      assert.match(seen.out, /1 index NOT holding what its table holds/);
    } finally {
      await intake.close();
    }
  });

  it("an index whose file was swapped for another table's, hiding the latest version, is named by verify --all", async (t) => {
    const { url, pool } = await dbs.fresh();
    if ((await pool.query(`SELECT 1 FROM pg_extension WHERE extname = 'amcheck'`)).rowCount === 0) return t.skip('no amcheck on this Postgres');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
    await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:10'));
    const c = await pool.connect();
    try {
      await hideLatestVersion(c);
    } finally {
      c.release();
    }
    const seen = await cli(['verify', '--all'], env);
    assert.equal(seen.code, 1, seen.out + seen.err);
    assert.match(seen.out, /NOT ok {2}index {2}index workflow_versions_pkey on workflow_versions does not hold what its table holds/);
  });

  it("a bt_index_check of the superuser's own, in pg_toast and read before amcheck's, does not hide an index that lies", async (t) => {
    const { url, pool } = await dbs.fresh();
    if ((await pool.query(`SELECT 1 FROM pg_extension WHERE extname = 'amcheck'`)).rowCount === 0) return t.skip('no amcheck on this Postgres');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
    await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:10'));
    const c = await pool.connect();
    try {
      // pg_toast is a system schema the seal passes over: functions there are no engine object. The extension
      // dropped and made again (same version, schema and grants: the seal sees the same objects) puts amcheck's own
      // functions after these in pg_proc, so a lookup by name alone found these first
      for (const args of ['regclass', 'regclass, boolean', 'regclass, boolean, boolean']) {
        await c.query(`CREATE FUNCTION pg_toast.bt_index_check(${args}) RETURNS void LANGUAGE sql AS 'SELECT'`);
      }
      await c.query('GRANT USAGE ON SCHEMA pg_toast TO PUBLIC');
      const { rows } = await c.query<{ schema: string }>(`SELECT n.nspname AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'`);
      await c.query(`DROP EXTENSION amcheck; CREATE EXTENSION amcheck SCHEMA "${rows[0].schema}"`);
      for (const f of (await c.query<{ f: string }>(`SELECT oid::regprocedure::text AS f FROM pg_proc WHERE proname = 'bt_index_check' AND pronamespace = '"${rows[0].schema}"'::regnamespace AND pronargs > 1`)).rows) {
        await c.query(`GRANT EXECUTE ON FUNCTION ${f.f} TO meshhook_engine`);
      }
      // and the latest version hidden, as in the test before
      await hideLatestVersion(c);
    } finally {
      c.release();
    }
    const seen = await cli(['verify', '--all'], env);
    assert.equal(seen.code, 1, seen.out + seen.err);
    assert.match(seen.out, /NOT ok {2}index {2}index workflow_versions_pkey on workflow_versions does not hold what its table holds/);
  });

  it("amcheck's bt_index_check replaced by one that checks nothing is named by verify --all", async (t) => {
    const { url, pool } = await dbs.fresh();
    if ((await pool.query(`SELECT 1 FROM pg_extension WHERE extname = 'amcheck'`)).rowCount === 0) return t.skip('no amcheck on this Postgres');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const { rows } = await pool.query<{ schema: string }>(`SELECT n.nspname AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'`);
    // (in public the seal names it too; in a schema of its own only this check would)
    await pool.query(`CREATE OR REPLACE FUNCTION "${rows[0].schema}".bt_index_check(index regclass, heapallindexed boolean) RETURNS void LANGUAGE sql AS 'SELECT'`);
    // (and the one that also checks uniqueness, amcheck 1.4 and later, which is the one called where it exists)
    if ((await pool.query(`SELECT 1 FROM pg_proc WHERE proname = 'bt_index_check' AND pronargs = 3`)).rowCount) {
      await pool.query(`CREATE OR REPLACE FUNCTION "${rows[0].schema}".bt_index_check(index regclass, heapallindexed boolean, checkunique boolean) RETURNS void LANGUAGE sql AS 'SELECT'`);
    }
    const seen = await cli(['verify', '--all'], env);
    assert.equal(seen.code, 1, seen.out + seen.err);
    assert.match(seen.out, /NOT ok {2}index {2}amcheck's bt_index_check is not the extension's own/);
  });
});
