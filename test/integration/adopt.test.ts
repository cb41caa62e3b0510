import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openEnginePool } from '../../src/db/pool';
import { startEngine } from '../../src/engine';
import { deliver } from '../../src/intake/sign';
import { verifyRun } from '../../src/replay-service';
import { startRun } from '../../src/store/intake-start';
import { latestVersion } from '../../src/store/registry';
import { Worker } from '../../src/worker/worker';
import { KEYS, orderSyncDefinition, projectId, publish, runStatus, startDatabases, startTarget, TestDatabases, waitFor, tempDir } from './helpers';

/*
 * A run the intake has just started is carried on by a worker of the same process from the state the intake
 * committed (Worker.adopt), without a claim and a load. What a claimed run gets must hold for it too: its log
 * genuine and whole, each call sent once, and a run the engine has seen further before never carried on from
 * the start again.
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

describe('runs handed from the intake to a worker of its process', { timeout: 270_000 }, () => {
  it('are carried on at once, each call sent once, their logs as a claimed run keeps them', async () => {
    const { url, pool } = await dbs.fresh();
    const target = await startTarget();
    // one worker of 2 slots, 12 webhooks at once: more than it takes at a time, and than wait handed over
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, concurrency: 2, pollMs: 20 });
    try {
      const wf = await publish(pool, 'acme', orderSyncDefinition(target.url));
      const sent = await Promise.all(
        Array.from({ length: 12 }, (_, i) => deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, JSON.stringify({ order: { id: `o-${i}`, sum: 10 + i } }))),
      );
      assert.deepEqual(sent.map((r) => r.status), Array(12).fill(202));
      for (const r of sent) await waitFor(`run ${r.body.runId} to succeed`, async () => (await runStatus(pool, r.body.runId)) === 'succeeded', 20_000);
      const stats = engine.workers[0].stats;
      assert.ok(stats.adopted >= 1, `some runs were handed over (${JSON.stringify(stats)})`);
      assert.equal(target.requests.length, 12, 'one order placed a webhook');
      assert.equal(new Set(target.requests.map((q) => q.headers['idempotency-key'])).size, 12);
      const project = await projectId(pool);
      for (const r of sent) {
        const report = await verifyRun(pool, project, r.body.runId, { keys: KEYS.chainKeys() });
        assert.equal(report.ok, true, JSON.stringify({ chain: report.chainBreak, div: report.divergence, view: report.viewDifference }));
      }
    } finally {
      await engine.stop();
      await target.close();
    }
  });

  it('never carries on from its start a run the engine saw further before (the database put back behind it)', async () => {
    const { url, pool } = await dbs.fresh();
    const journal = path.join(tempDir('mh-adopt-'), 'heads.jsonl');
    const followUp = { name: 'follow-up', steps: [{ id: 'wait', type: 'delay', durationMs: 3_600_000, next: 'done' }, { id: 'done', type: 'terminate', status: 'succeeded' }] };
    const wf = await publish(pool, 'acme', followUp);
    const body = JSON.stringify({ order: { id: 'o-7', sum: 7 } });
    const first = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20, headJournal: journal });
    let runId: string;
    try {
      const res = await deliver(first.intake.url, 'acme', 'follow-up', wf.signingSecret, body, { deliveryId: 'dlv_put_back' });
      assert.equal(res.status, 202);
      runId = res.body.runId;
      await waitFor('the run to wait on its timer', async () => (await runStatus(pool, runId)) === 'waiting', 20_000);
    } finally {
      await first.stop();
    }
    // the database put back to before the delivery came: its run and record gone, as from an older backup
    const c = await pool.connect();
    try {
      await c.query('SET session_replication_role = replica');
      await c.query('DELETE FROM run_events WHERE run_id = $1', [runId]);
      await c.query('DELETE FROM deliveries WHERE run_id = $1', [runId]);
      await c.query('DELETE FROM runs WHERE id = $1', [runId]);
    } finally {
      await c.query('RESET session_replication_role').catch(() => undefined);
      c.release();
    }
    const logs: Array<Record<string, unknown>> = [];
    const second = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20, headJournal: journal, log: (e) => logs.push(e) });
    try {
      // the sender retries: the same delivery starts its run again, under the same id
      const again = await deliver(second.intake.url, 'acme', 'follow-up', wf.signingSecret, body, { deliveryId: 'dlv_put_back' });
      assert.equal(again.status, 202);
      assert.equal(again.body.runId, runId);
      await waitFor('the worker to refuse the run', async () => logs.some((l) => l.run === runId && /checkpoint .* the log was cut back/.test(String(l.msg))), 20_000);
      assert.equal(second.workers[0].stats.adopted, 0, 'not handed over: a run the journal knows is loaded and checked first');
      const { rows } = await pool.query('SELECT array_agg(type ORDER BY seq) AS types FROM run_events WHERE run_id = $1', [runId]);
      assert.deepEqual(rows[0].types, ['RunStarted'], 'the run was not carried on from its start');
    } finally {
      await second.stop();
    }
  });

  it('are left to the claims when someone moved them on meanwhile, instead of decided from where the intake left them', async () => {
    const { url, pool } = await dbs.fresh();
    const quick = { name: 'quick', steps: [{ id: 'map', type: 'transform', expression: 'order.id', next: 'done' }, { id: 'done', type: 'terminate', status: 'succeeded' }] };
    const published = await publish(pool, 'acme', quick);
    const version = await latestVersion(pool, published.projectId, published.workflowId);
    const runId = '0193e0c8-5a1e-8a00-8000-00000000a001';
    const input = { order: { id: 'A-1001' } };
    const started = await startRun(pool, { runId, projectId: published.projectId, projectSlug: 'acme', workflowSlug: 'quick', version, deliveryId: 'dlv_moved_on', input, rawBody: JSON.stringify(input), at: new Date(), chain: KEYS.chainKey() });
    // handed over as the intake would, but as if another process's worker had moved the run on since: where the
    // worker would take it up is one event behind the run's record
    const behind = { runId, projectId: published.projectId, workflowId: published.workflowId, version: version.version, state: started.state!, seq: started.head!.seq - 1, lastHash: started.head!.hash };
    const engine = openEnginePool(url, { max: 4 });
    const worker = new Worker({ pool: engine, lockConnection: { connectionString: url }, pollMs: 20, concurrency: 2, keyring: KEYS });
    try {
      worker.start();
      assert.equal(worker.adopt({ run: behind, version }), true);
      await waitFor('the run to succeed', async () => (await runStatus(pool, runId)) === 'succeeded', 20_000);
      assert.equal(worker.stats.adopted, 0, 'not taken up from where the intake left it');
      assert.equal(worker.stats.conflicts, 0, 'no batch decided from a state the run had left, to lose at its append');
      assert.equal(worker.stats.runsFinished, 1, 'found among the due runs and carried on from a load');
    } finally {
      await worker.stop();
      await engine.end();
    }
  });
});
