import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { migrate, MIGRATIONS_DIR } from '../../src/db/migrate';
import { sha256 } from '../../src/domain/canonical';
import { sealSchema } from '../../src/integrity/schema-seal';
import { startEngine } from '../../src/engine';
import { Keyring } from '../../src/security/keyring';
import { resealAll } from '../../src/store/secrets';
import { KEYS, orderSyncDefinition, publish, runStatus, startDatabases, startTarget, TestDatabases, waitFor, cli, tempDir } from './helpers';

/*
 * What a database superuser without the engine's keys could do unnoticed (third round): delete a whole project
 * behind a checkpoint, have a migration seal a schema weakened behind the engine's back, and write back a vault
 * secret a checkpoint saw deleted. Each is now named (or refused).
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});


describe('a database superuser, round 3', { timeout: 270_000 }, () => {
  it('a whole project deleted (its runs, workflows and the project itself) is named by verify --all behind a checkpoint', async () => {
    const { url, pool } = await dbs.fresh();
    const target = await startTarget();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const cp = path.join(tempDir('mh-su3-'), 'cp.jsonl');
    try {
      await publish(pool, 'acme', orderSyncDefinition(target.url));
      const beta = await publish(pool, 'beta', orderSyncDefinition(target.url));
      const sent = await cli(['deliver', 'beta', 'order-sync', '--body', '{"order":{"id":"b-1","sum":7}}', '--url', engine.intake.url], env);
      assert.equal(sent.code, 0, sent.out + sent.err);
      const runId = /run ([0-9a-f-]{36}) started/.exec(sent.out)![1];
      await waitFor('the run to finish', async () => (await runStatus(pool, runId, 'beta')) === 'succeeded');
      assert.equal((await cli(['checkpoint', '--out', cp], env)).code, 0);
      assert.equal((await cli(['verify', '--all', '--checkpoints', cp], env)).code, 0, 'the control');

      const c = await pool.connect();
      try {
        await c.query('BEGIN');
        await c.query('SET LOCAL session_replication_role = replica');
        for (const table of ['run_events', 'deliveries', 'runs', 'workflow_versions', 'project_secrets', 'workflows']) {
          await c.query(`DELETE FROM ${table} WHERE project_id = $1`, [beta.projectId]);
        }
        await c.query('DELETE FROM projects WHERE id = $1', [beta.projectId]);
        await c.query('COMMIT');
      } finally {
        c.release();
      }
      const seen = await cli(['verify', '--all', '--checkpoints', cp], env);
      assert.equal(seen.code, 1, seen.out);
      assert.match(seen.out, new RegExp(`NOT ok  ${runId}  .*neither the run nor its project exists any more`));
      assert.match(seen.out, new RegExp(`NOT ok  ${beta.projectId}  a checkpoint saw this project`));
      // --project names only that project's runs: the control stays quiet
      assert.equal((await cli(['verify', '--all', '--project', 'acme', '--checkpoints', cp], env)).code, 0);
    } finally {
      await engine.stop();
      await target.close();
    }
  });

  it("a migration does not seal a schema changed behind the engine's back, nor one whose schema_migrations was edited", async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    await pool.query('CREATE POLICY open_door ON run_events TO meshhook_engine USING (true)');
    // an idempotent migration forgotten on purpose: the next `publish` or `up` would apply it again and seal the door
    const saved = (await pool.query(`DELETE FROM schema_migrations WHERE name = '016_seal_covers_more.sql' RETURNING *`)).rows[0];
    await assert.rejects(migrate(pool, { seal: KEYS.chainKey(), keys: KEYS.chainKeys() }), /schema_migrations was edited/);
    await pool.query('INSERT INTO schema_migrations (name, checksum, applied_at) VALUES ($1, $2, $3)', [saved.name, saved.checksum, saved.applied_at]);
    // the last one forgotten is no gap, but the schema is not as sealed: nothing is applied or sealed
    const last = (await pool.query<{ name: string }>('DELETE FROM schema_migrations WHERE name = (SELECT max(name) FROM schema_migrations) RETURNING name')).rows[0].name;
    await assert.rejects(migrate(pool, { seal: KEYS.chainKey(), keys: KEYS.chainKeys() }), /policy open_door on run_events was added/);
    // a genuine upgrade (a new migration) over the weakened schema is refused too, and the change stays named
    const dir = tempDir('mh-su3-mig-');
    cpSync(MIGRATIONS_DIR, dir, { recursive: true });
    await pool.query('INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)', [last, sha256(readFileSync(path.join(dir, last), 'utf8'))]);
    writeFileSync(path.join(dir, '999_upgrade.sql'), "COMMENT ON TABLE runs IS 'the run view';\n");
    await assert.rejects(migrate(pool, { dir, seal: KEYS.chainKey(), keys: KEYS.chainKeys() }), /policy open_door on run_events was added/);
    const named = await cli(['verify', '--all'], env);
    assert.equal(named.code, 1, named.out);
    assert.match(named.out, /policy open_door on run_events was added behind the engine's back/);
    // put back, the upgrade goes through and seals
    await pool.query('DROP POLICY open_door ON run_events');
    assert.deepEqual(await migrate(pool, { dir, seal: KEYS.chainKey(), keys: KEYS.chainKeys() }), ['999_upgrade.sql']);
    assert.equal((await cli(['verify', '--all'], env)).code, 0);
  });

  it("a migration does not seal an object of a kind the seal held none of (a table inheriting from the log)", async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const dir = tempDir('mh-su3-kind-');
    cpSync(MIGRATIONS_DIR, dir, { recursive: true });
    writeFileSync(path.join(dir, '999_upgrade.sql'), "COMMENT ON TABLE runs IS 'the run view';\n");
    // the seal has no "tables inheriting from …" entry at all: nothing inherited from an engine table when it was made
    await pool.query('CREATE TABLE public.more_events () INHERITS (run_events)');
    await assert.rejects(migrate(pool, { dir, seal: KEYS.chainKey(), keys: KEYS.chainKeys() }), /tables inheriting from run_events were added/);
    assert.equal((await cli(['verify', '--all'], env)).code, 1);
    await pool.query('DROP TABLE public.more_events');
    assert.deepEqual(await migrate(pool, { dir, seal: KEYS.chainKey(), keys: KEYS.chainKeys() }), ['999_upgrade.sql']);
    assert.equal((await cli(['verify', '--all'], env)).code, 0);
  });

  it('a migration does not seal an index added behind its back under a seal that covers indexes but names an older migration', async () => {
    const { pool } = await dbs.fresh();
    const dir = tempDir('mh-su3-named-');
    cpSync(MIGRATIONS_DIR, dir, { recursive: true });
    writeFileSync(path.join(dir, '999_upgrade.sql'), "COMMENT ON TABLE runs IS 'the run view';\n");
    // `seal-schema --confirm` by this release on a database whose last migration was 017: every kind, 017's name
    await sealSchema(pool, KEYS.chainKey(), '017_appends_take_turns.sql');
    await pool.query('CREATE INDEX sneaky ON public.runs (status)');
    await assert.rejects(migrate(pool, { dir, seal: KEYS.chainKey(), keys: KEYS.chainKeys() }), /index sneaky on runs was added/);
  });

  it('a vault secret a checkpoint saw deleted, written back from a copy, is named; one set again is not', async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const cp = path.join(tempDir('mh-su3-'), 'cp.jsonl');
    // published only: no call is made, so the order service's address needs nothing listening
    await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
    assert.equal((await cli(['secrets', 'set', 'orders-api', '--project', 'acme', '--value', 'sk_live_revoked'], env)).code, 0);
    assert.equal((await cli(['checkpoint', '--out', cp], env)).code, 0);
    const copy = (await pool.query(`SELECT * FROM project_secrets WHERE name = 'orders-api'`)).rows[0];
    assert.equal((await cli(['secrets', 'rm', 'orders-api', '--project', 'acme'], env)).code, 0);
    assert.equal((await cli(['checkpoint', '--out', cp], env)).code, 0);
    assert.equal((await cli(['verify', '--all', '--checkpoints', cp], env)).code, 0, 'the control');
    await pool.query('INSERT INTO project_secrets (project_id, name, sealed) VALUES ($1, $2, $3)', [copy.project_id, copy.name, copy.sealed]);
    const seen = await cli(['verify', '--all', '--checkpoints', cp], env);
    assert.equal(seen.code, 1, seen.out);
    assert.match(seen.out, /saw no vault secret orders-api, but it holds a value sealed .* before that checkpoint: a deleted secret written back/);
    // the owner sets it again, anew: that is not a write-back
    await pool.query(`DELETE FROM project_secrets WHERE name = 'orders-api'`);
    assert.equal((await cli(['secrets', 'set', 'orders-api', '--project', 'acme', '--value', 'sk_live_new'], env)).code, 0);
    assert.equal((await cli(['verify', '--all', '--checkpoints', cp], env)).code, 0);
  });
});

describe('the seal covers columns, indexes and inheritance', { timeout: 180_000 }, () => {
  const cases = [
    {
      what: "a primary key's index made not unique in pg_index (its constraint unchanged: duplicates go through)",
      change: `UPDATE pg_catalog.pg_index SET indisunique = false WHERE indexrelid = 'public.deliveries_pkey'::regclass`,
      undo: `UPDATE pg_catalog.pg_index SET indisunique = true WHERE indexrelid = 'public.deliveries_pkey'::regclass`,
      named: /index deliveries_pkey on deliveries changed: unique is off \(it was on\)/,
    },
    {
      what: 'a column added with a default that runs as whoever inserts',
      change: `ALTER TABLE runs ADD COLUMN note text DEFAULT pg_catalog.set_config('meshhook.project', '', true)`,
      undo: 'ALTER TABLE runs DROP COLUMN note',
      named: /columns of runs were changed/,
    },
    {
      what: 'NOT NULL dropped from a column a composite foreign key needs',
      change: 'ALTER TABLE run_events ALTER COLUMN project_id DROP NOT NULL',
      undo: 'ALTER TABLE run_events ALTER COLUMN project_id SET NOT NULL',
      named: /columns of run_events were changed/,
    },
    {
      what: 'a table inheriting from the log (its rows read with the log, outside its triggers and keys)',
      change: 'CREATE TABLE public.more_events () INHERITS (run_events)',
      undo: 'DROP TABLE public.more_events',
      named: /tables inheriting from run_events were added/,
    },
  ];
  for (const c of cases) {
    it(`verify --all names ${c.what}`, async () => {
      const { url, pool } = await dbs.fresh();
      const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
      assert.equal((await cli(['verify', '--all'], env)).code, 0);
      await pool.query(c.change);
      const seen = await cli(['verify', '--all'], env);
      assert.equal(seen.code, 1, seen.out);
      assert.match(seen.out, c.named);
      await pool.query(c.undo);
      assert.equal((await cli(['verify', '--all'], env)).code, 0);
    });
  }
});

describe('the seal covers server-wide settings that switch the defences off', { timeout: 180_000 }, () => {
  it("verify --all names session_replication_role = replica set with ALTER SYSTEM (every trigger and foreign key off in every engine session)", async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    assert.equal((await cli(['verify', '--all'], env)).code, 0);
    const reload = async () => {
      await pool.query('SELECT pg_catalog.pg_reload_conf()');
      await new Promise((r) => setTimeout(r, 300));
    };
    await pool.query(`ALTER SYSTEM SET session_replication_role = 'replica'`);
    await reload();
    try {
      const seen = await cli(['verify', '--all'], env);
      assert.equal(seen.code, 1, seen.out);
      assert.match(seen.out, /NOT ok  schema  server setting session_replication_role is replica \(it was origin\)/);
    } finally {
      await pool.query('ALTER SYSTEM RESET session_replication_role');
      await reload();
    }
    assert.equal((await cli(['verify', '--all'], env)).code, 0);
  });
});

describe('a migration recorded ahead of an upgrade', { timeout: 180_000 }, () => {
  it('is named by verify --all: the fix it carries never ran, and the seal is older than what schema_migrations says', async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const dir = tempDir('mh-su3-fix-');
    cpSync(MIGRATIONS_DIR, dir, { recursive: true });
    // the next release's migration, public like the rest of the engine's code: a fix the intruder wants kept out
    const fix = 'ALTER TABLE run_events FORCE ROW LEVEL SECURITY;\n';
    writeFileSync(path.join(dir, '999_fix.sql'), fix);
    await pool.query('INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)', ['999_fix.sql', sha256(fix)]);
    assert.deepEqual(await migrate(pool, { dir, seal: KEYS.chainKey(), keys: KEYS.chainKeys() }), [], 'the upgrade applies nothing');
    assert.equal((await pool.query(`SELECT relforcerowsecurity AS f FROM pg_class WHERE oid = 'public.run_events'::regclass`)).rows[0].f, false);
    const seen = await cli(['verify', '--all'], env);
    assert.equal(seen.code, 1, seen.out);
    assert.match(seen.out, /NOT ok  schema  migration 999_fix.sql is recorded as applied, but the schema was last sealed after \d{3}_/);
  });
});

describe('keys rotate', { timeout: 180_000 }, () => {
  it('keeps the time each vault value was sealed, so an earlier value written back is still named after the rotation', async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const cp = path.join(tempDir('mh-su3-'), 'cp.jsonl');
    // published only: no call is made, so the order service's address needs nothing listening
    await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
    assert.equal((await cli(['secrets', 'set', 'pay', '--project', 'acme', '--value', 'sk_live_revoked_one'], env)).code, 0);
    const revoked = (await pool.query(`SELECT sealed FROM project_secrets WHERE name = 'pay'`)).rows[0].sealed;
    assert.equal((await cli(['secrets', 'set', 'pay', '--project', 'acme', '--value', 'sk_live_current_two'], env)).code, 0);
    assert.equal((await cli(['checkpoint', '--out', cp], env)).code, 0);
    await pool.query(`UPDATE project_secrets SET sealed = $1 WHERE name = 'pay'`, [revoked]);
    assert.equal((await cli(['verify', '--all', '--checkpoints', cp], env)).code, 1, 'named before the rotation');
    const rotated = Keyring.parse(`next:${randomBytes(32).toString('base64')},${KEYS.toEnv()}`);
    const { rows } = await pool.query('SELECT id FROM projects');
    assert.ok((await resealAll(pool, rotated, rows)).resealed >= 1);
    assert.match((await pool.query(`SELECT sealed FROM project_secrets WHERE name = 'pay'`)).rows[0].sealed, /^mh2\.next\./);
    const seen = await cli(['verify', '--all', '--checkpoints', cp], { DATABASE_URL: url, MESHHOOK_KEYS: rotated.toEnv() });
    assert.equal(seen.code, 1, seen.out);
    assert.match(seen.out, /saw vault secret pay sealed .* but its value now was sealed .*: an earlier value written back/);
  });
});
