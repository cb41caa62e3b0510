import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { inProject } from '../../src/db/scope';
import { secretRemovedAt } from '../../src/domain/hash-chain';
import { cli, KEYS, orderSyncDefinition, projectId, publish, startDatabases, TestDatabases } from './helpers';

/*
 * A vault secret deleted from project_secrets by someone with the database (who has no key): every call that
 * needs it fails with SECRET_MISSING. The engine signs each removal its owner makes (`secrets rm`) and keeps it
 * in project_secret_removals, a table kept to its project and sealed like the engine's others.
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

describe('vault secret removals', { timeout: 90_000 }, () => {
  it('secrets rm records its removal signed over the project, the name and the time; set again clears it', async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
    const acme = await projectId(pool, 'acme');
    const record = async () => (await pool.query(`SELECT removal FROM project_secret_removals WHERE name = 'orders-api'`)).rows[0]?.removal as string | undefined;
    assert.equal((await cli(['secrets', 'set', 'orders-api', '--project', 'acme', '--value', 'sk_live_first_000000'], env)).code, 0);
    assert.equal((await cli(['secrets', 'rm', 'orders-api', '--project', 'acme'], env)).code, 0);
    const removal = (await record())!;
    const removedAt = secretRemovedAt(KEYS.chainKeys(), acme, 'orders-api', removal);
    assert.ok(removedAt && Math.abs(Date.parse(removedAt) - Date.now()) < 60_000, removal);
    assert.equal(secretRemovedAt(KEYS.chainKeys(), acme, 'invoices-api', removal), null, 'not a removal of another name');
    assert.equal(secretRemovedAt(KEYS.chainKeys(), '00000000-0000-4000-8000-000000000000', 'orders-api', removal), null, "not another project's");
    assert.equal((await cli(['secrets', 'set', 'orders-api', '--project', 'acme', '--value', 'sk_live_again_000000'], env)).code, 0);
    assert.equal(await record(), undefined, 'a secret set again has no removal');
  });

  it('a removal record is kept to its project by row-level security, which the seal covers', async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
    await publish(pool, 'beta', orderSyncDefinition('http://127.0.0.1:9'));
    const [acme, beta] = [await projectId(pool, 'acme'), await projectId(pool, 'beta')];
    await pool.query(`INSERT INTO project_secret_removals (project_id, name, removal) VALUES ($1, 'orders-api', 'removed:x')`, [beta]);
    // acting for acme, the engine's role neither sees beta's record nor writes one for beta
    const asEngine = <T>(fn: (c: import('pg').PoolClient) => Promise<T>) =>
      inProject(pool, acme, async (c) => {
        await c.query('SET LOCAL ROLE meshhook_engine');
        return fn(c);
      });
    assert.equal((await asEngine((c) => c.query('SELECT * FROM project_secret_removals'))).rows.length, 0);
    assert.equal((await asEngine((c) => c.query(`UPDATE project_secret_removals SET removal = 'removed:y'`))).rowCount, 0);
    await assert.rejects(
      asEngine((c) => c.query(`INSERT INTO project_secret_removals (project_id, name, removal) VALUES ($1, 'other', 'removed:x')`, [beta])),
      /row-level security/,
    );
    // its own project's, it may
    await asEngine((c) => c.query(`INSERT INTO project_secret_removals (project_id, name, removal) VALUES ($1, 'other', 'removed:x')`, [acme]));
    assert.equal((await asEngine((c) => c.query('SELECT * FROM project_secret_removals'))).rows.length, 1);
    // the table is sealed with the engine's others: its row-level security switched off is named
    assert.equal((await cli(['verify', '--all'], env)).code, 0, 'the control');
    await pool.query('ALTER TABLE project_secret_removals DISABLE ROW LEVEL SECURITY');
    const unsealed = await cli(['verify', '--all'], env);
    assert.equal(unsealed.code, 1, unsealed.out);
    assert.match(unsealed.out, /NOT ok  schema  table project_secret_removals changed/);
  });
});
