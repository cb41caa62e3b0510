import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startEngine } from '../../src/engine';
import { inProject } from '../../src/db/scope';
import { secretRemovedAt } from '../../src/domain/hash-chain';
import { cli, KEYS, orderSyncDefinition, projectId, publish, runStatus, startDatabases, startTarget, TestDatabases, waitFor, tempDir } from './helpers';

/*
 * A vault secret deleted from project_secrets by someone with the database (who has no key): every call that
 * needs it fails with SECRET_MISSING. The engine signs each removal its owner makes (`secrets rm`), so
 * `verify --all --checkpoints` names a secret a checkpoint saw that is gone without a genuine removal made
 * after that checkpoint, and not one its owner removed.
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

const GONE = /NOT ok  acme  a checkpoint taken \S+ saw vault secret orders-api, but it is gone now without its owner's signed removal \((.*)\): deleted behind the engine's back \(calls that need it fail with SECRET_MISSING\)/;

/** The order-sync workflow, its call carrying the vault secret "orders-api". */
function withSecret(targetUrl: string): Record<string, unknown> {
  const d = orderSyncDefinition(targetUrl) as { steps: Array<Record<string, unknown>> };
  d.steps = d.steps.map((s) => (s.id === 'push' ? { ...s, headers: { Authorization: { secret: 'orders-api', prefix: 'Bearer ' } } } : s));
  return d;
}

describe('a vault secret removed behind the engine\'s back', { timeout: 270_000 }, () => {
  it('is named by verify --all --checkpoints, however its removal record was forged, until its owner removes it', async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const dir = tempDir('mh-vault-rm-');
    const cp = path.join(dir, 'cp.jsonl');
    const verify = () => cli(['verify', '--all', '--checkpoints', cp], env, dir);
    await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
    await publish(pool, 'beta', orderSyncDefinition('http://127.0.0.1:9'));
    const acme = await projectId(pool, 'acme');
    const removals = async () => (await pool.query(`SELECT project_id, name, removal FROM project_secret_removals ORDER BY project_id, name`)).rows;

    // genuine removals the owner made, to copy from: an earlier one of this secret, one of another, one of another project's
    assert.equal((await cli(['secrets', 'set', 'orders-api', '--project', 'acme', '--value', 'sk_live_first_000000'], env, dir)).code, 0);
    assert.equal((await cli(['secrets', 'rm', 'orders-api', '--project', 'acme'], env, dir)).code, 0);
    const earlier = (await removals()).find((r) => r.name === 'orders-api')!.removal as string;
    assert.match(earlier, /^removed:test:\d{4}-\d\d-\d\dT[\d:.]+Z:[0-9a-f]{64}$/, 'the removal is signed with its time');
    for (const [project, name] of [['acme', 'invoices-api'], ['beta', 'orders-api']]) {
      assert.equal((await cli(['secrets', 'set', name, '--project', project, '--value', 'sk_live_other_000000'], env, dir)).code, 0);
      assert.equal((await cli(['secrets', 'rm', name, '--project', project], env, dir)).code, 0);
    }
    const otherName = (await removals()).find((r) => r.project_id === acme && r.name === 'invoices-api')!.removal as string;
    const otherProject = (await removals()).find((r) => r.project_id !== acme && r.name === 'orders-api')!.removal as string;
    await new Promise((r) => setTimeout(r, 5));
    // set again: its earlier removal no longer stands
    assert.equal((await cli(['secrets', 'set', 'orders-api', '--project', 'acme', '--value', 'sk_live_current_0000'], env, dir)).code, 0);
    assert.equal((await removals()).filter((r) => r.project_id === acme && r.name === 'orders-api').length, 0, 'a secret set again has no removal');
    await new Promise((r) => setTimeout(r, 5));
    assert.equal((await cli(['checkpoint', '--out', cp], env, dir)).code, 0);
    const control = await verify();
    assert.equal(control.code, 0, control.out);

    // as the database's superuser, without the keys: the row deleted
    await pool.query(`DELETE FROM project_secrets WHERE project_id = $1 AND name = 'orders-api'`, [acme]);
    const deleted = await verify();
    assert.equal(deleted.code, 1, deleted.out);
    assert.equal(GONE.exec(deleted.out)?.[1], 'no removal recorded', deleted.out);
    assert.match(deleted.out, /; 1 vault secret a checkpoint saw gone without a signed removal$/);
    const json = await cli(['verify', '--all', '--checkpoints', cp, '--json'], env, dir);
    assert.equal(json.code, 1);
    assert.match(json.out, /\{"project":"acme","secret":"orders-api","problems":\["a checkpoint taken .* saw vault secret orders-api, but it is gone now/);

    // a removal record beside it: forged, copied from another secret or another project, or the owner's earlier one written back
    const forged = earlier.replace(/[0-9a-f]{64}$/, '0'.repeat(64));
    for (const [what, record, named] of [
      ['a made-up signature', forged, "a removal record that is not the engine's for it"],
      ['another secret of the project', otherName, "a removal record that is not the engine's for it"],
      ["another project's removal of the same name", otherProject, "a removal record that is not the engine's for it"],
      ["the owner's earlier removal", earlier, `a removal signed ${earlier.split(':').slice(2, -1).join(':')}, before that checkpoint`],
    ]) {
      await pool.query(
        `INSERT INTO project_secret_removals (project_id, name, removal) VALUES ($1, 'orders-api', $2)
         ON CONFLICT (project_id, name) DO UPDATE SET removal = EXCLUDED.removal`,
        [acme, record],
      );
      const seen = await verify();
      assert.equal(seen.code, 1, `${what}: ${seen.out}`);
      assert.equal(GONE.exec(seen.out)?.[1], named, what);
    }

    // the next routine checkpoint sees the secret gone: the one that saw it held still counts
    await new Promise((r) => setTimeout(r, 5));
    assert.equal((await cli(['checkpoint', '--out', cp], env, dir)).code, 0);
    const later = await verify();
    assert.equal(later.code, 1, later.out);
    assert.match(later.out, GONE);

    // the owner, told, says the removal is theirs: signed now, after the checkpoint, so no longer a finding
    await new Promise((r) => setTimeout(r, 5));
    const owned = await cli(['secrets', 'rm', 'orders-api', '--project', 'acme'], env, dir);
    assert.equal(owned.code, 1, 'there was no such secret');
    assert.match(owned.out, /acme has no secret orders-api \(its removal is recorded as yours/);
    const accepted = await verify();
    assert.equal(accepted.code, 0, accepted.out);
  });

  it("is not a finding when its owner removed it; the worker sends nothing without it, and a secret set again is sent", async () => {
    const { url, pool } = await dbs.fresh();
    const target = await startTarget();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    const dir = tempDir('mh-vault-owner-');
    const cp = path.join(dir, 'cp.jsonl');
    const deliver = async (id: string): Promise<string> => {
      const sent = await cli(['deliver', 'acme', 'order-sync', '--body', `{"order":{"id":"${id}","sum":7}}`, '--url', engine.intake.url], env, dir);
      assert.equal(sent.code, 0, sent.out + sent.err);
      const runId = /run ([0-9a-f-]{36}) started/.exec(sent.out)![1];
      await waitFor(`run ${id} to finish`, async () => ['succeeded', 'failed'].includes((await runStatus(pool, runId)) ?? '') && runId);
      return runId;
    };
    try {
      await publish(pool, 'acme', withSecret(target.url));
      const acme = await projectId(pool, 'acme');
      assert.equal((await cli(['secrets', 'set', 'orders-api', '--project', 'acme', '--value', 'sk_live_first_000000'], env, dir)).code, 0);
      const first = await deliver('o-1');
      assert.equal(await runStatus(pool, first), 'succeeded');
      assert.equal(target.requests.length, 1);
      assert.equal(target.requests[0].headers.authorization, 'Bearer sk_live_first_000000');
      assert.equal((await cli(['checkpoint', '--out', cp], env, dir)).code, 0);

      // removed by its owner through the engine: signed, so not a finding
      await new Promise((r) => setTimeout(r, 5));
      const removed = await cli(['secrets', 'rm', 'orders-api', '--project', 'acme'], env, dir);
      assert.equal(removed.code, 0, removed.out);
      assert.match((await pool.query(`SELECT removal FROM project_secret_removals WHERE name = 'orders-api'`)).rows[0].removal, /^removed:test:/);
      const verified = await cli(['verify', '--all', '--checkpoints', cp], env, dir);
      assert.equal(verified.code, 0, verified.out);

      // a removed secret is missing to the worker (once its opened secrets are read again): the call fails closed and nothing is sent
      await new Promise((r) => setTimeout(r, 2_100));
      const second = await deliver('o-2');
      assert.equal(await runStatus(pool, second), 'failed');
      const events = await inProject(pool, acme, async (c) => (await c.query('SELECT payload::text AS p FROM run_events WHERE run_id = $1 ORDER BY seq', [second])).rows);
      assert.match(events.map((e) => e.p).join('\n'), /SECRET_MISSING/);
      assert.equal(target.requests.length, 1, 'nothing was sent');

      // set again: its removal is cleared, and the new key is sent
      assert.equal((await cli(['secrets', 'set', 'orders-api', '--project', 'acme', '--value', 'sk_live_again_000000'], env, dir)).code, 0);
      assert.equal((await pool.query(`SELECT count(*)::int AS n FROM project_secret_removals`)).rows[0].n, 0);
      await new Promise((r) => setTimeout(r, 2_100));
      const third = await deliver('o-3');
      assert.equal(await runStatus(pool, third), 'succeeded');
      assert.equal(target.requests.at(-1)!.headers.authorization, 'Bearer sk_live_again_000000');
      assert.equal((await cli(['verify', '--all', '--checkpoints', cp], env, dir)).code, 0);
    } finally {
      await engine.stop();
      await target.close();
    }
  });

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
