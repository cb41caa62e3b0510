import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from 'pg';
import { openEnginePool } from '../../src/db/pool';
import { startEngine } from '../../src/engine';
import { loadSecretValues, putSecret } from '../../src/store/secrets';
import { deliver } from '../../src/intake/sign';
import { startRealtimeServer } from '../../src/realtime/server';
import { tokenSecret } from '../../src/security/keyring';
import { eventHash, genesisHash } from '../../src/domain/hash-chain';
import { cli, KEYS, oneOrderVerified, tamperWithVersions, runStatus, orderSyncDefinition, projectId, publish, startDatabases, startTarget, tempDir, TestDatabases, waitFor } from './helpers';

/*
 * What a database superuser without the engine's keys could do unnoticed (eighth round).
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

describe('a database superuser, round 8', { timeout: 360_000 }, () => {
  it('a run forged in the database as one of the first releases (unkeyed links, no signed head) is not carried on by a worker', async () => {
    const { url, pool } = await dbs.fresh();
    const target = await startTarget();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    try {
      const wf = await publish(pool, 'acme', orderSyncDefinition(target.url));
      // no webhook was ever sent: the superuser writes a run of their own, in the shape of the first releases
      const runId = randomUUID();
      const recordedAt = new Date().toISOString();
      const data = {
        runId, project: wf.projectId, workflow: wf.workflowId, version: wf.version, definitionHash: wf.definitionHash,
        deliveryId: 'forged-1', input: { order: { id: 'forged', sum: 1_000_000 } }, at: recordedAt,
      };
      const prev = genesisHash(runId);
      const hash = eventHash(prev, { runId, seq: 1, type: 'RunStarted', version: 1, data, recordedAt });
      await pool.query(
        `INSERT INTO runs (id, project_id, workflow_id, version, status, current_step, last_seq, head_hash, started_at)
         VALUES ($1, $2, $3, $4, 'running', 'map', 1, $5, now())`,
        [runId, wf.projectId, wf.workflowId, wf.version, hash],
      );
      await pool.query(
        `INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash)
         VALUES ($1, $2, 1, 'RunStarted', 1, $3, $4, $5, $6)`,
        [wf.projectId, runId, JSON.stringify(data), recordedAt, prev, hash],
      );
      // and its delivery's record, so that nothing but the head is missing
      await pool.query(
        `INSERT INTO deliveries (project_id, workflow_id, delivery_id, run_id, body_sha256, received_at) VALUES ($1, $2, 'forged-1', $3, 'x', now())`,
        [wf.projectId, wf.workflowId, runId],
      );
      const before = await cli(['verify', '--all'], env);
      assert.equal(before.code, 1, 'the control: verify --all names a run with no signed head');
      assert.match(before.out, new RegExp(`NOT ok  acme  ${runId}  .*no signed head`));

      const logged: Array<Record<string, unknown>> = [];
      const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20, log: (e) => logged.push(e) });
      try {
        await waitFor('the worker to refuse the forged run', async () => logged.some((e) => JSON.stringify(e).includes(runId)));
      } finally {
        await engine.stop();
      }
      // without the fix the order went out, and the worker signed the run's head: verify --all then passed it
      assert.deepEqual(target.requests.map((r) => r.body), [], 'the order service was called for a run nobody sent');
      const after = await cli(['verify', '--all'], env);
      assert.equal(after.code, 1, after.out + after.err);
      assert.match(after.out, new RegExp(`NOT ok  acme  ${runId}  .*no signed head`));
    } finally {
      await target.close();
    }
  });

  it("a view put into pg_catalog under an engine table's name (searched before public, whatever the search_path) is named by verify --all", async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
    const project = await projectId(pool);
    await putSecret(pool, KEYS, project, 'api-token', 'the-old-token-revoked');
    const earlier = (await pool.query<{ sealed: string }>(`SELECT sealed FROM project_secrets WHERE name = 'api-token'`)).rows[0].sealed;
    await new Promise((r) => setTimeout(r, 5));
    await putSecret(pool, KEYS, project, 'api-token', 'the-new-token-in-use');
    const cp = path.join(tempDir('mh-r8-'), 'cp.jsonl');
    assert.equal((await cli(['checkpoint', '--out', cp], env)).code, 0);
    assert.equal((await cli(['verify', '--all', '--checkpoints', cp], env)).code, 0, 'the control');

    // Postgres searches pg_catalog before the path it is given: the engine's pinned search_path=public does not keep a
    // relation there from answering for public.project_secrets. This one tells its readers apart by their query's text:
    // the worker's read (no ORDER BY) is handed the revoked value, verify's the current one
    const superuser = async (sql: string): Promise<void> => {
      const c = new Client({ connectionString: url });
      await c.connect();
      try {
        await c.query('SET allow_system_table_mods = on');
        await c.query(sql);
      } finally {
        await c.end();
      }
    };
    await superuser(
      `CREATE VIEW pg_catalog.project_secrets AS
         SELECT s.project_id, s.name,
                CASE WHEN s.name = 'api-token' AND pg_catalog.current_query() NOT LIKE '%ORDER BY%' THEN '${earlier}' ELSE s.sealed END AS sealed,
                s.created_at, s.updated_at
         FROM public.project_secrets s;
       GRANT SELECT ON pg_catalog.project_secrets TO meshhook_engine`,
    );
    const engine = openEnginePool(url, { max: 1 });
    try {
      // what a worker sends with its next call
      assert.deepEqual(await loadSecretValues(engine, KEYS, project), [{ name: 'api-token', value: 'the-old-token-revoked' }]);
      const seen = await cli(['verify', '--all', '--checkpoints', cp], env);
      assert.equal(seen.code, 1, seen.out + seen.err);
      assert.match(seen.out, /NOT ok {2}schema {2}relations added to pg_catalog were added behind the engine's back \(project_secrets\(v\)\)/);
      await superuser('DROP VIEW pg_catalog.project_secrets');
      assert.deepEqual(await loadSecretValues(engine, KEYS, project), [{ name: 'api-token', value: 'the-new-token-in-use' }]);
      const back = await cli(['verify', '--all', '--checkpoints', cp], env);
      assert.equal(back.code, 0, 'quiet once put back: ' + back.out + back.err);
    } finally {
      await engine.end();
    }
  });

  it("a number in the log given digits beyond what a double holds (the same double, so every hash still holds) is named by verify --all", async () => {
    const { url, pool } = await dbs.fresh();
    const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
    // an order service whose ids are 64-bit (past what a double holds exactly)
    const target = await startTarget(() => ({ status: 201, body: { orderId: 1234567890123456800 } }));
    const definition = {
      name: 'order-sync',
      steps: [
        { id: 'push', type: 'http_call', method: 'POST', url: `${target.url}/orders`, body: 'input', next: 'done' },
        { id: 'done', type: 'terminate', status: 'succeeded', output: 'steps.push.body' },
      ],
    };
    const wf = await publish(pool, 'acme', definition);
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    let runId: string;
    try {
      const sent = await deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, JSON.stringify({ order: { id: 'o-1', sum: 42 } }));
      runId = sent.body.runId;
      await waitFor('the run to succeed', async () => (await runStatus(pool, runId)) === 'succeeded');
    } finally {
      await engine.stop();
      await target.close();
    }
    const recorded = `SELECT count(*)::int AS n FROM run_events WHERE run_id = $1 AND payload::text LIKE '%1234567890123456800%'`;
    assert.equal((await pool.query(recorded, [runId])).rows[0].n, 3, 'the control: the answer, the step and the run record the id');
    assert.equal((await cli(['verify', '--all'], env)).code, 0, 'the control');

    // the id made another in the run view, where SQL readers (a dashboard, a reconciliation job) read a run's result
    const forge = (column: string) => `replace(${column}::text, '1234567890123456800', '1234567890123456801')::jsonb`;
    await pool.query(`UPDATE runs SET outputs = ${forge('outputs')}, result = ${forge('result')} WHERE id = $1`, [runId]);
    const view = await cli(['verify', '--all'], env);
    assert.equal(view.code, 1, view.out + view.err);
    assert.match(view.out, new RegExp(`NOT ok  acme  ${runId}  .*stored with the number 1234567890123456801, which the log never recorded`));

    // and in the log itself: every link still holds over the doubles the numbers read as
    const c = await pool.connect();
    try {
      await c.query('ALTER TABLE run_events DISABLE TRIGGER run_events_no_update_delete');
      await c.query(`UPDATE run_events SET payload = ${forge('payload')} WHERE run_id = $1`, [runId]);
    } finally {
      await c.query('ALTER TABLE run_events ENABLE TRIGGER run_events_no_update_delete');
      c.release();
    }
    const seen = await cli(['verify', '--all'], env);
    assert.equal(seen.code, 1, seen.out + seen.err);
    assert.match(seen.out, new RegExp(`NOT ok  acme  ${runId}  .*event 4.*holds the number 1234567890123456801, which the engine never wrote`));
  });

  it("an event inserted into a run's log (the log takes any next event) is not shown by tail as the run's own", async () => {
    const { url, pool, env } = await oneOrderVerified(dbs);
    const { runId, last } = (await pool.query(`SELECT run_id AS "runId", max(seq)::int AS last FROM run_events GROUP BY run_id`)).rows[0];
    // no trigger to switch off: the next event of the run, of the superuser's writing, saying the order went through
    await pool.query(
      `INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash)
       SELECT project_id, run_id, seq + 1, 'RunFinished', 1, '{"status": "succeeded", "output": {"orderId": "ord_forged"}, "reason": null}', now(), hash, 'x'
       FROM run_events WHERE run_id = $1 AND seq = $2`,
      [runId, last],
    );
    const realtime = await startRealtimeServer({ databaseUrl: url, jwtSecret: tokenSecret(KEYS, env) });
    try {
      const seen = await cli(['tail', runId, '--project', 'acme', '--json', '--url', realtime.url], env);
      const shown = seen.out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { seq: number; type: string });
      assert.deepEqual(shown.map((e) => e.seq), Array.from({ length: last }, (_, i) => i + 1), `only the engine's events: ${seen.out}`);
      assert.equal(seen.code, 1, seen.out + seen.err);
      assert.match(seen.err, new RegExp(`run ${runId}: event ${last + 1} is not as the engine wrote it`));
    } finally {
      await realtime.close();
    }
    const verified = await cli(['verify', '--all'], env);
    assert.equal(verified.code, 1, 'verify names it too');
  });

  it('a number in a published definition given digits beyond what a double holds (its hash and signature still hold) is named by verify --all', async () => {
    const { pool, env } = await oneOrderVerified(dbs);
    // the retry's three attempts, as SQL shows them, made 3.0000000000000001: read as the double 3, as signed
    await tamperWithVersions(pool, `UPDATE workflow_versions SET definition = replace(definition::text, '"maxAttempts": 3', '"maxAttempts": 3.0000000000000001')::jsonb`);
    assert.equal((await pool.query(`SELECT count(*)::int AS n FROM workflow_versions WHERE definition::text LIKE '%3.0000000000000001%'`)).rows[0].n, 1);
    const seen = await cli(['verify', '--all'], env);
    assert.equal(seen.code, 1, seen.out + seen.err);
    assert.match(seen.out, /NOT ok  acme  .*holds the number 3\.0000000000000001, which reads as 3/);
  });
});
