import assert from 'node:assert/strict';
import os from 'node:os';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../../src/cli/main';
import { checkSchema } from '../../src/integrity/schema-seal';
import { Keyring } from '../../src/security/keyring';
import { KEYS, startDatabases, TestDatabases } from './helpers';

/*
 * The engine's schema, sealed when it was migrated: switching off what keeps
 * projects apart and the log whole (row-level security, a trigger), adding a
 * permissive policy, replacing an engine function or widening a grant is named
 * by `verify --all`; putting it back makes verify quiet again.
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

async function cli(argv: string[], env: NodeJS.ProcessEnv) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { out: (l) => out.push(l), err: (l) => err.push(l), env, cwd: os.tmpdir() });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const sabotage: Array<{ what: string; change: string; undo: string; named: RegExp }> = [
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
];

describe("the engine's schema, sealed", { timeout: 60_000 }, () => {
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
      assert.equal(seen.code, 1, seen.out);
      assert.match(seen.out, s.named);
      assert.match(seen.out, /NOT ok {2}schema {2}/);
      assert.match(seen.out, /the engine's schema NOT as it sealed it \(1 difference\)/);
      await pool.query(s.undo || saved);
      const back = await cli(['verify', '--all'], env);
      assert.equal(back.code, 0, back.out);
      assert.doesNotMatch(back.out, /schema/);
    });
  }

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
