import assert from 'node:assert/strict';
import { cpSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from 'pg';
import { migrate, MIGRATIONS_DIR } from '../../src/db/migrate';
import { checkSchema, sealSchema } from '../../src/integrity/schema-seal';
import { Keyring } from '../../src/security/keyring';
import { KEYS, startDatabases, TestDatabases, cli, tempDir } from './helpers';

/*
 * The engine's schema, sealed when it was migrated: switching off what keeps
 * projects apart and the log whole (row-level security, a trigger, a foreign
 * key), adding a permissive policy, a rule, a schema or a function, replacing
 * an engine function, widening a grant or a role, or setting what connections
 * start with is named by `verify --all`; putting it back makes verify quiet
 * again. The cases after the first five each passed verify before the seal
 * covered them (or, for `||`, before it stopped resolving operators in SQL).
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});


/** Run as one statement list: the database's own name, for ALTER DATABASE. */
const inThisDatabase = (sql: string) => `DO $$ BEGIN EXECUTE pg_catalog.format('ALTER DATABASE %I ${sql}', pg_catalog.current_database()); END $$`;

const sabotage: Array<{ what: string; change: string; undo: string; named: RegExp | RegExp[] }> = [
  {
    what: 'row-level security switched off',
    change: 'ALTER TABLE runs DISABLE ROW LEVEL SECURITY',
    undo: 'ALTER TABLE runs ENABLE ROW LEVEL SECURITY',
    named: /table runs changed: row-level security is off \(it was on\)/,
  },
  {
    what: 'a second policy that lets every project through',
    change: 'CREATE POLICY open_door ON run_events TO meshhook_engine USING (true)',
    undo: 'DROP POLICY open_door ON run_events',
    named: /policy open_door on run_events was added behind the engine's back/,
  },
  {
    what: 'the append-only trigger switched off',
    change: 'ALTER TABLE run_events DISABLE TRIGGER run_events_no_update_delete',
    undo: 'ALTER TABLE run_events ENABLE TRIGGER run_events_no_update_delete',
    named: /trigger run_events_no_update_delete on run_events is disabled \(it was enabled\)/,
  },
  {
    what: "an engine function replaced (the gap-free check made to pass anything)",
    change: `CREATE OR REPLACE FUNCTION run_events_check_seq() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`,
    undo: '', // put back from the definition saved before
    named: /function run_events_check_seq\(\) was replaced/,
  },
  {
    what: 'a grant to everyone',
    change: 'GRANT SELECT ON project_secrets TO PUBLIC',
    undo: 'REVOKE SELECT ON project_secrets FROM PUBLIC',
    named: /table project_secrets changed: its grants are/,
  },
  {
    // an exact-type `||` beats pg_catalog's: one remembers which table the row is about, the other prints its RLS as on
    what: "row-level security switched off behind an `||` operator that prints it on (the seal's own query, hijacked)",
    change: `CREATE FUNCTION public.remembers_table(text, name) RETURNS text LANGUAGE sql VOLATILE
               AS $$ SELECT pg_catalog.textcat($1, pg_catalog.set_config('probe.relname', $2::text, true)) $$;
             CREATE FUNCTION public.claims_rls(text, boolean) RETURNS text LANGUAGE sql VOLATILE
               AS $$ SELECT pg_catalog.textcat($1, (CASE WHEN $1 = 'rls=' AND pg_catalog.current_setting('probe.relname', true) = 'runs' THEN true ELSE $2 END)::text) $$;
             CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = name, FUNCTION = public.remembers_table);
             CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = boolean, FUNCTION = public.claims_rls);
             ALTER TABLE runs DISABLE ROW LEVEL SECURITY`,
    undo: `ALTER TABLE runs ENABLE ROW LEVEL SECURITY; DROP OPERATOR public.|| (text, boolean); DROP OPERATOR public.|| (text, name);
           DROP FUNCTION public.claims_rls(text, boolean); DROP FUNCTION public.remembers_table(text, name)`,
    named: [
      /table runs changed: row-level security is off \(it was on\)/,
      /operator public\.\|\|\(text,boolean\) was added behind the engine's back/,
      /operator public\.\|\|\(text,name\) was added behind the engine's back/,
      /function claims_rls\(text, boolean\) was added behind the engine's back/,
      /function remembers_table\(text, name\) was added behind the engine's back/,
    ],
  },
  {
    what: "the engine's role let past row-level security",
    change: 'ALTER ROLE meshhook_engine BYPASSRLS',
    undo: 'ALTER ROLE meshhook_engine NOBYPASSRLS',
    named: /role meshhook_engine changed: bypassing row-level security is on \(it was off\)/,
  },
  {
    what: "the engine's role made a member of the superuser",
    change: 'GRANT postgres TO meshhook_engine',
    undo: 'REVOKE postgres FROM meshhook_engine',
    named: /role meshhook_engine changed: the roles it is a member of are (.*,)?postgres\(/,
  },
  {
    what: 'a column grant that lets the engine rewrite recorded events',
    change: 'GRANT UPDATE (payload) ON run_events TO meshhook_engine',
    undo: 'REVOKE UPDATE (payload) ON run_events FROM meshhook_engine',
    named: /column grants on run_events were added behind the engine's back/,
  },
  {
    what: "a column grant that shows webhook signing secrets to anyone's token",
    change: 'GRANT SELECT (signing_secret_sealed) ON workflows TO anon',
    undo: 'REVOKE SELECT (signing_secret_sealed) ON workflows FROM anon',
    named: /column grants on workflows are .*signing_secret_sealed=\{[^}]*anon=r\/postgres/,
  },
  {
    what: 'the foreign key tying events to their run dropped',
    change: 'ALTER TABLE run_events DROP CONSTRAINT run_events_run_fkey',
    undo: 'ALTER TABLE run_events ADD CONSTRAINT run_events_run_fkey FOREIGN KEY (project_id, run_id) REFERENCES runs (project_id, id)',
    named: /constraint run_events_run_fkey on run_events is gone/,
  },
  {
    what: 'the foreign key tying events to their run left standing with its check switched off',
    change: `DO $$ DECLARE t text; BEGIN
               SELECT tgname INTO t FROM pg_trigger WHERE tgrelid = 'run_events'::regclass AND tgisinternal ORDER BY tgname LIMIT 1;
               EXECUTE format('ALTER TABLE run_events DISABLE TRIGGER %I', t); END $$`,
    undo: 'ALTER TABLE run_events ENABLE TRIGGER ALL',
    named: /constraint run_events_run_fkey on run_events is enforced by triggers disabled,enabled,enabled,enabled \(they were enabled,enabled,enabled,enabled\)/,
  },
  {
    what: 'a rule that swallows every change to the run views',
    change: 'CREATE RULE keep_quiet AS ON UPDATE TO runs DO INSTEAD NOTHING',
    undo: 'DROP RULE keep_quiet ON runs',
    named: /rule keep_quiet on runs was added behind the engine's back/,
  },
  {
    what: "a search_path for the database that puts another schema before the engine's",
    change: inThisDatabase('SET search_path = evil, public'),
    undo: inThisDatabase('RESET search_path'),
    named: /settings for the database were added behind the engine's back/,
  },
  {
    what: "row_security switched off for the engine's role",
    change: 'ALTER ROLE meshhook_engine SET row_security = off',
    undo: 'ALTER ROLE meshhook_engine RESET row_security',
    named: /settings for role meshhook_engine were added behind the engine's back/,
  },
  {
    what: 'a new schema with a view shadowing the run views',
    change: 'CREATE SCHEMA evil; CREATE VIEW evil.runs AS SELECT * FROM public.runs WHERE false',
    undo: 'DROP SCHEMA evil CASCADE',
    named: /schema evil was added behind the engine's back/,
  },
  {
    what: 'a new function in public',
    change: `CREATE FUNCTION public.project_for(p_slug text) RETURNS uuid LANGUAGE sql AS $$ SELECT NULL::uuid $$`,
    undo: 'DROP FUNCTION public.project_for(text)',
    named: /function project_for\(p_slug text\) was added behind the engine's back/,
  },
  {
    what: "a built-in operator's row edited in place (uuid's `=` made to call `<=`, no DDL at all)",
    change: "UPDATE pg_catalog.pg_operator SET oprcode = 'pg_catalog.uuid_le'::regproc WHERE oid = 'pg_catalog.=(uuid,uuid)'::regoperator",
    undo: "UPDATE pg_catalog.pg_operator SET oprcode = 'pg_catalog.uuid_eq'::regproc WHERE oid = 'pg_catalog.=(uuid,uuid)'::regoperator",
    named: /built-in operators of pg_catalog were changed: a row of the catalog was edited in place/,
  },
  {
    what: "a built-in type's row edited in place",
    change: "UPDATE pg_catalog.pg_type SET typispreferred = NOT typispreferred WHERE oid = 'pg_catalog.money'::regtype",
    undo: "UPDATE pg_catalog.pg_type SET typispreferred = NOT typispreferred WHERE oid = 'pg_catalog.money'::regtype",
    named: /built-in types of pg_catalog were changed/,
  },
  {
    // found by a tampering probe: text indexes built in C order searched in another, a re-delivery's lookups missed
    what: "the database's locale changed under its text indexes (a row of pg_database, no DDL)",
    change: "UPDATE pg_catalog.pg_database SET datcollate = 'POSIX' WHERE datname = pg_catalog.current_database()",
    undo: "UPDATE pg_catalog.pg_database SET datcollate = 'C' WHERE datname = pg_catalog.current_database()",
    named: /database locale changed: collate is POSIX \(it was C\)/,
  },
  {
    // found by a tampering probe: a catalog renamed and a view that lies put under its name blinded the whole seal
    what: 'a catalog the seal reads renamed, and a view that hides rows put under its name',
    change: `SET allow_system_table_mods = on; ALTER TABLE pg_catalog.pg_cast RENAME TO pg_cast_real;
             CREATE VIEW pg_catalog.pg_cast AS SELECT * FROM pg_catalog.pg_cast_real WHERE oid < 16384; GRANT SELECT ON pg_catalog.pg_cast TO PUBLIC`,
    undo: 'SET allow_system_table_mods = on; DROP VIEW pg_catalog.pg_cast; ALTER TABLE pg_catalog.pg_cast_real RENAME TO pg_cast',
    // (the rename renames the catalog's row type too, a built-in type)
    // (and the view is a relation initdb did not make in pg_catalog, which is searched before any path)
    named: [
      /catalogs the seal reads are not the ones initdb made: pg_catalog\.pg_cast \(oid \d+\)/,
      /built-in types of pg_catalog were changed/,
      /relations added to pg_catalog were added behind the engine's back \(pg_cast\(v\)\)/,
    ],
  },
  {
    what: "a built-in collation's row edited in place",
    change: "UPDATE pg_catalog.pg_collation SET collname = 'posix_moved' WHERE collname = 'POSIX' AND collnamespace = 'pg_catalog'::regnamespace",
    undo: "UPDATE pg_catalog.pg_collation SET collname = 'POSIX' WHERE collname = 'posix_moved' AND collnamespace = 'pg_catalog'::regnamespace",
    named: /collations built into pg_catalog were changed/,
  },
  {
    // what Postgres advises after a libc or ICU upgrade is not a tampering (the collation's version is left out)
    what: 'nothing, when a collation\'s version is refreshed (the control)',
    change: "UPDATE pg_catalog.pg_collation SET collversion = 'refreshed' WHERE collname = 'POSIX' AND collnamespace = 'pg_catalog'::regnamespace",
    undo: "UPDATE pg_catalog.pg_collation SET collversion = NULL WHERE collname = 'POSIX' AND collnamespace = 'pg_catalog'::regnamespace",
    named: [],
  },
  {
    what: "a built-in cast's row edited in place (int4 to int8 made assignment-only)",
    change: "UPDATE pg_catalog.pg_cast SET castcontext = 'a' WHERE castsource = 'pg_catalog.int4'::regtype AND casttarget = 'pg_catalog.int8'::regtype",
    undo: "UPDATE pg_catalog.pg_cast SET castcontext = 'i' WHERE castsource = 'pg_catalog.int4'::regtype AND casttarget = 'pg_catalog.int8'::regtype",
    named: /casts built into pg_catalog were changed/,
  },
  {
    what: "a system view's query row edited in place (pg_roles, which the seal reads)",
    change: "UPDATE pg_catalog.pg_rewrite SET ev_enabled = 'D' WHERE ev_class = 'pg_catalog.pg_roles'::regclass",
    undo: "UPDATE pg_catalog.pg_rewrite SET ev_enabled = 'O' WHERE ev_class = 'pg_catalog.pg_roles'::regclass",
    named: /system views of pg_catalog were changed/,
  },
];

/** The kinds of object (a name's first word) each migration brought under the seal: a release before it sealed none. */
const SEALED_SINCE: Array<[migration: string, kinds: string[]]> = [
  ['018_seal_covers_columns_and_indexes.sql', ['columns', 'index', 'tables', 'server']],
  ['019_seal_covers_built_in_rows.sql', ['built-in']],
  ['022_seal_covers_locale_and_catalogs.sql', ['catalogs', 'database', 'collations', 'casts', 'system']],
  ['025_seal_covers_trigger_firing.sql', ['firing', 'enforcement', 'aggregates', 'languages', 'access']],
  ['029_seal_covers_checks_and_key_comparisons.sql', ['checking', 'comparisons', 'definitions', 'parameter']],
  ['031_seal_covers_catalog_column_names.sql', ['names']],
  ['032_seal_covers_preloaded_libraries.sql', ['preloaded']],
];

describe('an upgrade', { timeout: 360_000 }, () => {
  // each release since seals existed, upgraded to today's: a kind of object a later migration seals must not read as
  // added behind the engine's back (which would make migrate refuse every upgrade). The release's own seal is
  // written as it made it: without the kinds sealed only since
  const files = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).sort();
  for (const last of files.filter((f) => f >= '015' && f !== files.at(-1))) {
    it(`applies on a database migrated and sealed up to ${last}, and verify is clean after it`, async () => {
      const admin = new Client({ connectionString: dbs.server.urlFor('postgres') });
      await admin.connect();
      const name = `mh_upgrade_${last.slice(0, 3)}_${process.pid}`;
      try {
        await admin.query(`DROP DATABASE IF EXISTS ${name}`);
        await admin.query(`CREATE DATABASE ${name}`);
      } finally {
        await admin.end();
      }
      const dir = tempDir('mh-release-');
      for (const f of files.filter((f) => f <= last)) cpSync(path.join(MIGRATIONS_DIR, f), path.join(dir, f));
      const c = new Client({ connectionString: dbs.server.urlFor(name) });
      await c.connect();
      try {
        await migrate(c, { dir, seal: KEYS.chainKey(), keys: KEYS.chainKeys() });
        const later = new Set(SEALED_SINCE.filter(([m]) => m > last).flatMap(([, kinds]) => kinds));
        if (later.size) await sealSchema(c, KEYS.chainKey(), last, false, (name) => later.has(name.split(' ')[0]));
        const applied = await migrate(c, { seal: KEYS.chainKey(), keys: KEYS.chainKeys() });
        assert.deepEqual(applied, files.filter((f) => f > last));
      } finally {
        await c.end();
      }
      const env = { DATABASE_URL: dbs.server.urlFor(name), MESHHOOK_KEYS: KEYS.toEnv() };
      const verified = await cli(['verify', '--all'], env);
      assert.equal(verified.code, 0, verified.out + verified.err);
    });
  }
});

describe("the engine's schema, sealed", { timeout: 720_000 }, () => {
  it('a freshly migrated schema is as sealed', async () => {
    const { pool } = await dbs.fresh();
    const check = await checkSchema(pool, KEYS.chainKeys());
    assert.deepEqual(check.problems, []);
    assert.ok(check.sealedAt);
  });

  for (const s of sabotage) {
    it(`verify --all names ${s.what}, and is quiet once it is put back`, async () => {
      const { url, pool } = await dbs.fresh();
      const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
      const control = await cli(['verify', '--all'], env);
      assert.equal(control.code, 0, control.out + control.err);
      const saved = (await pool.query<{ def: string }>(`SELECT pg_get_functiondef('run_events_check_seq'::regproc) AS def`)).rows[0].def;
      await pool.query(s.change);
      const seen = await cli(['verify', '--all'], env);
      const named = Array.isArray(s.named) ? s.named : [s.named];
      assert.equal(seen.code, named.length ? 1 : 0, seen.out);
      const lines = seen.out.split('\n').filter((l) => l.startsWith('NOT ok  schema  '));
      for (const n of named) assert.ok(lines.some((l) => n.test(l)), `${n} not in:\n${seen.out}${seen.err}`);
      assert.equal(lines.length, named.length, seen.out);
      if (named.length) assert.match(seen.out, new RegExp(`the engine's schema NOT as it sealed it \\(${named.length} differences?\\)`));
      await pool.query(s.undo || saved);
      const back = await cli(['verify', '--all'], env);
      assert.equal(back.code, 0, back.out);
      assert.doesNotMatch(back.out, /schema/);
    });
  }

  it('the latest seal is the one sealed last, whatever its id; an earlier seal made the latest by deleting later ones is named behind a checkpoint', async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const dir = tempDir('mh-seal-cp-');
    const cp = path.join(dir, 'cp.jsonl');
    // a trigger the owner drops on purpose, and seals the schema again without it
    await pool.query('ALTER TABLE run_events DISABLE TRIGGER run_events_no_update_delete');
    const resealed = await cli(['seal-schema', '--confirm'], env);
    assert.equal(resealed.code, 0, resealed.out + resealed.err);
    await pool.query('ALTER TABLE run_events ENABLE TRIGGER run_events_no_update_delete');
    // ...thinks better of it and seals again; a checkpoint then sees that latest seal
    assert.equal((await cli(['seal-schema', '--confirm'], env)).code, 0);
    assert.equal((await cli(['checkpoint', '--out', cp], env)).code, 0);
    assert.match(readFileSync(cp, 'utf8'), /"kind":"seal"/);
    assert.equal((await cli(['verify', '--all', '--checkpoints', cp], env)).code, 0, 'the control: all is as sealed');
    // the intruder copies the middle seal under a higher id, and switches the trigger off again: the latest seal is
    // the one with the latest signed time, whatever its id, so the trigger is named
    await pool.query('INSERT INTO schema_seals (id, migration, objects, mac, sealed_at) SELECT 1000000000000, migration, objects, mac, sealed_at FROM schema_seals ORDER BY id DESC OFFSET 1 LIMIT 1');
    await pool.query('ALTER TABLE run_events DISABLE TRIGGER run_events_no_update_delete');
    try {
      const copied = await cli(['verify', '--all'], env);
      assert.equal(copied.code, 1, copied.out);
      assert.match(copied.out, /NOT ok  schema  trigger run_events_no_update_delete on run_events is disabled/);
      // ...then deletes the latest seal instead, so that the middle one is the latest: every signature holds
      await pool.query('DELETE FROM schema_seals WHERE sealed_at = (SELECT max(sealed_at) FROM schema_seals)');
      const plain = await cli(['verify', '--all'], env);
      assert.equal(plain.code, 0, 'without a checkpoint the earlier seal passes: every signature holds');
      const seen = await cli(['verify', '--all', '--checkpoints', cp], env);
      assert.equal(seen.code, 1, seen.out);
      assert.match(seen.out, /NOT ok  schema  a checkpoint taken .* saw the schema sealed .*, but the seal now is from .*: an earlier seal written back behind the engine's back/);
    } finally {
      await pool.query('ALTER TABLE run_events ENABLE TRIGGER run_events_no_update_delete');
    }
  });

  it('a seal edited, deleted or signed with another key is named, and seal-schema seals again only with --confirm', async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    await pool.query('ALTER TABLE runs DISABLE ROW LEVEL SECURITY');
    // the intruder writes the weakened schema into the seal: its MAC no longer holds
    await pool.query(`UPDATE schema_seals SET objects = jsonb_set(objects, '{table runs}', to_jsonb(replace(objects->>'table runs', 'rls=true', 'rls=false')))`);
    const edited = await cli(['verify', '--all'], env);
    assert.equal(edited.code, 1);
    assert.match(edited.out, /the schema's seal is not as the engine signed it/);

    const other = Keyring.generate('elsewhere');
    await pool.query('DELETE FROM schema_seals');
    const gone = await cli(['verify', '--all'], env);
    assert.equal(gone.code, 1);
    assert.match(gone.out, /the engine's schema carries no seal/);

    // seal-schema shows, and seals only when told to; a seal under a key this keyring lacks is named as such
    const shown = await cli(['seal-schema'], { DATABASE_URL: url, MESHHOOK_KEYS: other.toEnv() });
    assert.equal(shown.code, 1);
    assert.match(shown.out, /seal-schema --confirm/);
    assert.equal((await pool.query('SELECT count(*)::int AS n FROM schema_seals')).rows[0].n, 0);
    const sealed = await cli(['seal-schema', '--confirm'], { DATABASE_URL: url, MESHHOOK_KEYS: other.toEnv() });
    assert.equal(sealed.code, 0, sealed.out + sealed.err);
    const foreign = await cli(['verify', '--all'], env);
    assert.equal(foreign.code, 1);
    assert.match(foreign.out, /the schema's seal is signed with key "elsewhere[^"]*", which is not in the keyring/);
  });
});
