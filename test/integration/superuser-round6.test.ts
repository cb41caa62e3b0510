import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from 'pg';
import path from 'node:path';
import { loadSecretValues, putSecret } from '../../src/store/secrets';
import { cli, KEYS, orderSyncDefinition, projectId, publish, startDatabases, TestDatabases, tempDir, letThrough, oneOrderVerified } from './helpers';

/*
 * What a database superuser without the engine's keys could do unnoticed (sixth round): plain UPDATEs of the
 * catalogs, no DDL, that switched a defence off or changed a built-in while nothing the schema seal printed
 * changed. pg_class.relchecks = 0 (no CHECK constraint of the table is checked), pg_constraint.conpfeqop edited
 * (a foreign key compares with `<>`), and a built-in function's default argument or SQL body edited in pg_proc.
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});


describe('a database superuser, round 6', { timeout: 360_000 }, () => {
  it("a table's CHECK constraints switched off in pg_class, and a foreign key made to compare with <> in pg_constraint, are named by verify --all", async () => {
    const { url, pool, env } = await oneOrderVerified(dbs);
    // what a new session is let through, in a transaction rolled back (a session's foreign key keeps the plan of
    // its check for the session's life: the edit reaches sessions opened after it, as the engine's pool renews its own)
    const badSlug = `INSERT INTO projects (id, slug, name) VALUES (gen_random_uuid(), 'NOT A SLUG!', 'x')`;
    assert.equal(await letThrough(url, badSlug), false, 'the control: the slug CHECK refuses it');
    const orphan = `INSERT INTO run_events (project_id, run_id, seq, version, type, payload, prev_hash, hash, recorded_at)
                    SELECT project_id, gen_random_uuid(), 1, 1, 'RunStarted', '{}', 'x', 'y', now() FROM runs LIMIT 1`;
    assert.equal(await letThrough(url, orphan), false, 'the control: the foreign key refuses an event of no run');

    // no DDL: pg_constraint still lists the CHECK, pg_get_constraintdef prints the foreign key as it was
    await pool.query("UPDATE pg_catalog.pg_class SET relchecks = 0 WHERE oid = 'public.projects'::regclass");
    await pool.query(
      `UPDATE pg_catalog.pg_constraint SET conpfeqop = ARRAY['pg_catalog.=(uuid,uuid)'::regoperator::oid, 'pg_catalog.<>(uuid,uuid)'::regoperator::oid]::oid[]
       WHERE conname = 'run_events_run_fkey' AND conrelid = 'public.run_events'::regclass`,
    );
    assert.equal(await letThrough(url, badSlug), true, 'the CHECK no longer checks');
    assert.equal(await letThrough(url, orphan), true, 'the foreign key no longer checks');

    const seen = await cli(['verify', '--all'], env);
    assert.equal(seen.code, 1, seen.out + seen.err);
    assert.match(seen.out, /NOT ok {2}schema {2}checking on projects changed: how many CHECK constraints Postgres loads for it \(pg_class.relchecks; 0: none is checked\) is 0 \(it was 1\)/);
    assert.match(seen.out, /NOT ok {2}schema {2}comparisons of constraint run_events_run_fkey on run_events were edited in pg_constraint/);

    await pool.query("UPDATE pg_catalog.pg_class SET relchecks = 1 WHERE oid = 'public.projects'::regclass");
    await pool.query(
      `UPDATE pg_catalog.pg_constraint SET conpfeqop = ARRAY['pg_catalog.=(uuid,uuid)'::regoperator::oid, 'pg_catalog.=(uuid,uuid)'::regoperator::oid]::oid[]
       WHERE conname = 'run_events_run_fkey' AND conrelid = 'public.run_events'::regclass`,
    );
    const back = await cli(['verify', '--all'], env);
    assert.equal(back.code, 0, back.out + back.err);
  });

  it("a built-in function's default argument or SQL body edited in pg_proc is named by verify --all", async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const answers = async () => (await pool.query<{ set: unknown; pad: string }>(`SELECT pg_catalog.jsonb_set('{}', '{a}', '1') AS set, pg_catalog.lpad('x', 3) AS pad`)).rows[0];
    assert.deepEqual(await answers(), { set: { a: 1 }, pad: '  x' });
    // jsonb_set's create_if_missing made false by default (jsonb_strip_nulls' default), lpad given rpad's body
    await pool.query(`UPDATE pg_catalog.pg_proc SET proargdefaults = (SELECT proargdefaults FROM pg_proc WHERE oid = 'pg_catalog.jsonb_strip_nulls(jsonb,boolean)'::regprocedure)
                      WHERE oid = 'pg_catalog.jsonb_set(jsonb,text[],jsonb,boolean)'::regprocedure`);
    await pool.query(`UPDATE pg_catalog.pg_proc SET prosqlbody = (SELECT prosqlbody FROM pg_proc WHERE oid = 'pg_catalog.rpad(text,integer)'::regprocedure)
                      WHERE oid = 'pg_catalog.lpad(text,integer)'::regprocedure`);
    assert.deepEqual(await answers(), { set: {}, pad: 'x  ' }, 'the built-ins answer otherwise');
    const seen = await cli(['verify', '--all'], env);
    assert.equal(seen.code, 1, seen.out + seen.err);
    assert.match(seen.out, /NOT ok {2}schema {2}definitions of pg_catalog's built-in functions were changed: a row of pg_proc was edited in place/);
  });

  it("a setting for every role (ALTER ROLE ALL SET) is named beside the database's own setting, whichever row Postgres reads last", async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const [{ db }] = (await pool.query<{ db: string }>('SELECT current_database() AS db')).rows;
    // the deployment's own setting of its database (a provider's, say), reviewed and sealed by its owner
    await pool.query(`ALTER DATABASE ${db} SET "app.settings.jwt_exp" = '3600'`);
    const sealed = await cli(['seal-schema', '--confirm'], env);
    assert.equal(sealed.code, 0, sealed.out + sealed.err);
    assert.equal((await cli(['verify', '--all'], env)).code, 0);
    try {
      // every session in every database commits without waiting for its WAL to reach the disk: a crash loses what
      // the engine was told was committed. Then the database's own setting set again, so its row is read last
      await pool.query(`ALTER ROLE ALL SET synchronous_commit = off`);
      await pool.query(`ALTER DATABASE ${db} SET "app.settings.jwt_exp" = '3600'`);
      const seen = await cli(['verify', '--all'], env);
      assert.equal(seen.code, 1, seen.out + seen.err);
      assert.match(seen.out, /NOT ok {2}schema {2}settings for the database are app\.settings\.jwt_exp=3600; synchronous_commit=off \(they were app\.settings\.jwt_exp=3600\)/);
    } finally {
      await pool.query('ALTER ROLE ALL RESET ALL');
    }
    assert.equal((await cli(['verify', '--all'], env)).code, 0, 'quiet once put back');
  });

  it("the right to set session_replication_role granted to the engine's role is named by verify --all", async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    if (Number((await pool.query<{ server_version_num: string }>('SHOW server_version_num')).rows[0].server_version_num) < 150000) return;
    const asEngine = async (): Promise<boolean> => {
      const c = new Client({ connectionString: url });
      await c.connect();
      try {
        await c.query('SET ROLE meshhook_engine');
        // replica: no trigger of the log fires in this session (append-only, gap-free, the foreign keys)
        await c.query('SET session_replication_role = replica');
        return true;
      } catch {
        return false;
      } finally {
        await c.end();
      }
    };
    assert.equal(await asEngine(), false, "the control: the engine's role may not switch its triggers off");
    try {
      await pool.query('GRANT SET ON PARAMETER session_replication_role TO meshhook_engine');
      assert.equal(await asEngine(), true, 'now it may');
      const seen = await cli(['verify', '--all'], env);
      assert.equal(seen.code, 1, seen.out + seen.err);
      assert.match(seen.out, /NOT ok {2}schema {2}parameter session_replication_role was added behind the engine's back \(acl=\{.*meshhook_engine=s\/.*\}\)/);
    } finally {
      await pool.query('REVOKE SET ON PARAMETER session_replication_role FROM meshhook_engine');
    }
    assert.equal((await cli(['verify', '--all'], env)).code, 0, 'quiet once put back');
  });

  it("an earlier value of a vault secret written back beside the current one (the primary key's uniqueness switched off meanwhile) is named behind a checkpoint", async (t) => {
    const { url, pool } = await dbs.fresh();
    if ((await pool.query(`SELECT 1 FROM pg_extension WHERE extname = 'amcheck'`)).rowCount === 0) return t.skip('no amcheck on this Postgres');
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
    const project = await projectId(pool);
    await putSecret(pool, KEYS, project, 'api-token', 'the-old-token-revoked');
    const earlier = (await pool.query<{ sealed: string }>(`SELECT sealed FROM project_secrets WHERE name = 'api-token'`)).rows[0].sealed;
    await new Promise((r) => setTimeout(r, 5));
    await putSecret(pool, KEYS, project, 'api-token', 'the-new-token-in-use');
    const dir = tempDir('mh-r6-');
    const cp = path.join(dir, 'cp.jsonl');
    assert.equal((await cli(['checkpoint', '--out', cp], env)).code, 0);
    assert.equal((await cli(['verify', '--all', '--checkpoints', cp], env)).code, 0, 'the control');

    // no sealed object changed once it is over: the key's index made not unique for a moment, the earlier value
    // written back beside the current one, and the current one written again after it
    const c = new Client({ connectionString: url });
    await c.connect();
    try {
      await c.query(`UPDATE pg_catalog.pg_index SET indisunique = false WHERE indexrelid = 'public.project_secrets_pkey'::regclass`);
    } finally {
      await c.end();
    }
    const d = new Client({ connectionString: url });
    await d.connect();
    try {
      await d.query('BEGIN');
      await d.query(`CREATE TEMP TABLE current_row ON COMMIT DROP AS SELECT * FROM project_secrets WHERE name = 'api-token'`);
      await d.query(`DELETE FROM project_secrets WHERE name = 'api-token'`);
      await d.query(`INSERT INTO project_secrets SELECT project_id, name, $1, created_at, updated_at FROM current_row`, [earlier]);
      await d.query(`INSERT INTO project_secrets SELECT * FROM current_row`);
      await d.query('COMMIT');
    } finally {
      await d.end();
    }
    await pool.query(`UPDATE pg_catalog.pg_index SET indisunique = true WHERE indexrelid = 'public.project_secrets_pkey'::regclass`);
    // a worker would have read the earlier value first (the rows in the order they come): it opens no value of it
    await assert.rejects(loadSecretValues(pool, KEYS, project), /holds secret "api-token" more than once/);

    const seen = await cli(['verify', '--all', '--checkpoints', cp], env);
    assert.equal(seen.code, 1, seen.out + seen.err);
    // the earlier value is judged, not whichever row came last
    assert.match(seen.out, /NOT ok {2}acme {2}a checkpoint taken .* saw vault secret api-token sealed .*, but its value now was sealed .*: an earlier value written back/);
    // and where amcheck checks uniqueness (1.4, Postgres 17 and later), the key's index holding it twice
    const unique = (await pool.query(`SELECT 1 FROM pg_proc WHERE proname = 'bt_index_check' AND pronargs = 3`)).rowCount;
    if (unique) assert.match(seen.out, /NOT ok {2}index {2}index project_secrets_pkey on project_secrets does not hold what its table holds.*uniqueness/);
  });
});
