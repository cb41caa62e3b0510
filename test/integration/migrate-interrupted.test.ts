import assert from 'node:assert/strict';
import { cpSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { migrate, MIGRATIONS_DIR } from '../../src/db/migrate';
import { checkSchema } from '../../src/integrity/schema-seal';
import { KEYS, startDatabases, TestDatabases, tempDir } from './helpers';

/*
 * An upgrade stopped part of the way (a migration failing, or the process killed between two migrations'
 * commits, or between the last one and its seal) must leave the schema as its latest seal: otherwise the next
 * migrate refuses the engine's own migration as "changed behind the engine's back" and `up` never comes back
 * (or, after the last one, `verify --all` names a schema without a seal for ever). Found by a kill-while-
 * webhooks-flow run: SIGKILL of `up` between the commits of 017 and 018 left `up` refusing to start.
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

describe('an upgrade stopped part of the way', { timeout: 270_000 }, () => {
  it('leaves nothing applied and unsealed: the next migrate applies all of it and seals', async () => {
    const { pool } = await dbs.fresh();
    const opts = { seal: KEYS.chainKey(), keys: KEYS.chainKeys() };
    const dir = tempDir('mh-mig-stop-');
    cpSync(MIGRATIONS_DIR, dir, { recursive: true });
    // the release's first new migration changes what the seal covers; its second fails (or the process dies there)
    writeFileSync(path.join(dir, '900_upgrade_a.sql'), 'CREATE FUNCTION public.upgrade_a() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n');
    writeFileSync(path.join(dir, '901_upgrade_b.sql'), 'SELECT 1/0;\n');
    await assert.rejects(migrate(pool, { dir, ...opts }), /migration 901_upgrade_b\.sql failed/);
    const recorded = (await pool.query<{ name: string }>(`SELECT name FROM schema_migrations WHERE name LIKE '90%'`)).rows;
    assert.deepEqual(recorded, [], 'nothing of the stopped upgrade is recorded');
    assert.deepEqual((await checkSchema(pool, KEYS.chainKeys())).problems, [], 'the schema is still as its latest seal');
    // the release fixed (or the process started again): the whole upgrade goes through and is sealed
    writeFileSync(path.join(dir, '901_upgrade_b.sql'), "COMMENT ON FUNCTION public.upgrade_a() IS 'b';\n");
    assert.deepEqual(await migrate(pool, { dir, ...opts }), ['900_upgrade_a.sql', '901_upgrade_b.sql']);
    assert.deepEqual((await checkSchema(pool, KEYS.chainKeys())).problems, []);
    const seal = (await pool.query<{ migration: string }>('SELECT migration FROM schema_seals ORDER BY sealed_at DESC LIMIT 1')).rows[0];
    assert.equal(seal.migration, '901_upgrade_b.sql');
    // and the read that sealed left no setting behind in the connection's transaction (search_path, timezone)
    assert.deepEqual(await migrate(pool, { dir, ...opts }), []);
  });
});
