import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Pool } from 'pg';
import { startEngine } from '../../src/engine';
import { deliver } from '../../src/intake/sign';
import { startRun } from '../../src/store/intake-start';
import { latestVersion } from '../../src/store/registry';
import { Worker } from '../../src/worker/worker';
import { KEYS, publish, startDatabases, TestDatabases, waitFor } from './helpers';

/*
 * Workers take the projects with due work in turn (migration 033): one project's backlog does not hold up
 * another project's runs. Before, the due runs were taken oldest first across projects, and a run of another
 * project started just after a burst of 300 waited for all 300.
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

const label = {
  name: 'label',
  steps: [
    { id: 'label', type: 'transform', expression: "join('-', [order.id, 'LBL'])", next: 'done' },
    { id: 'done', type: 'terminate', status: 'succeeded' },
  ],
};
const remindLater = {
  name: 'remind',
  steps: [
    { id: 'wait', type: 'delay', durationMs: 3_600_000, next: 'done' },
    { id: 'done', type: 'terminate', status: 'succeeded' },
  ],
};

async function start(pool: Pool, project: string, definition: Record<string, unknown>, n: number): Promise<string[]> {
  const p = await publish(pool, project, definition);
  const version = await latestVersion(pool, p.projectId, p.workflowId);
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const runId = randomUUID();
    const input = { order: { id: `${project}-${i}` } };
    await startRun(pool, { chain: KEYS.chainKey(), runId, projectId: p.projectId, projectSlug: project, workflowSlug: p.workflow, version, deliveryId: `dlv_${project}_${i}`, input, at: new Date(), rawBody: JSON.stringify(input) });
    ids.push(runId);
  }
  return ids;
}

describe('due runs are taken project by project in turn', { timeout: 300_000 }, () => {
  it("a project's run started after another's burst of 300 is taken within the first turns, not after the burst", async () => {
    const { url, pool } = await dbs.fresh();
    const burst = await start(pool, 'acme', label, 300);
    const [late] = await start(pool, 'globex', label, 1);
    // a project whose runs all wait on a timer an hour away: found, and nothing of it taken
    const [waiting] = await start(pool, 'initech', remindLater, 1);
    const worker = new Worker({ pool, lockConnection: { connectionString: url }, pollMs: 10, concurrency: 1, id: 'fair-1', keyring: KEYS });
    worker.start();
    try {
      await waitFor('every run of the burst to finish', async () => (await pool.query(`SELECT count(*)::int AS n FROM runs WHERE status = 'succeeded'`)).rows[0].n === 301, 120_000);
      const { rows } = await pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM runs a, runs g WHERE a.id = ANY($1::uuid[]) AND g.id = $2 AND a.finished_at < g.finished_at`,
        [burst, late],
      );
      // a claim of one slot takes either busy project's oldest run, as likely one as the other: 20 or more of the
      // burst first is a chance of one in a million; all 300 came first when the due runs were taken oldest first
      assert.ok(rows[0].n < 20, `${rows[0].n} runs of the burst finished before the other project's run`);
      const timer = await pool.query(`SELECT status FROM runs WHERE id = $1`, [waiting]);
      assert.equal(timer.rows[0].status, 'waiting');
    } finally {
      await worker.stop();
    }
  });

  it("through the intake too: another project's webhook sent after a burst of 300 is carried on within a few runs", async () => {
    // the runs a process's intake hands to its own workers go before the due runs (src/worker/handover.ts)
    const { url, pool } = await dbs.fresh();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, concurrency: 2, pollMs: 20 });
    try {
      const acme = await publish(pool, 'acme', label);
      const globex = await publish(pool, 'globex', label);
      let next = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let i = next++; i < 300; i = next++) {
            const r = await deliver(engine.intake.url, 'acme', 'label', acme.signingSecret, JSON.stringify({ order: { id: `A-${i}` } }));
            assert.equal(r.status, 202);
          }
        }),
      );
      const late = await deliver(engine.intake.url, 'globex', 'label', globex.signingSecret, JSON.stringify({ order: { id: 'G-1' } }));
      assert.equal(late.status, 202);
      await waitFor('every run to finish', async () => (await pool.query(`SELECT count(*)::int AS n FROM runs WHERE status = 'succeeded'`)).rows[0].n === 301, 120_000);
      const { rows } = await pool.query<{ behind: number; ahead: number }>(
        `SELECT count(*) FILTER (WHERE a.finished_at > g.created_at AND a.finished_at < g.finished_at)::int AS ahead,
                count(*) FILTER (WHERE a.finished_at > g.finished_at)::int AS behind
         FROM runs a, runs g WHERE g.id = $1 AND a.project_id <> g.project_id`,
        [late.body.runId],
      );
      // a few runs of the burst finish while it waits (those already in flight, a turn or two); most of what was
      // still waiting when it came finishes after it
      assert.ok(rows[0].ahead < 20, `${rows[0].ahead} runs of the burst finished between the other project's webhook and its run's end (${rows[0].behind} after it)`);
    } finally {
      await engine.stop();
    }
  });

  it('the due runs of three projects come a turn at a time, oldest first within each project, and at most as many as asked', async () => {
    const { pool } = await dbs.fresh();
    const a = await start(pool, 'acme', label, 3);
    const g = await start(pool, 'globex', label, 2);
    const i = await start(pool, 'initech', label, 1);
    await start(pool, 'umbrella', remindLater, 0);
    const due = async (limit: number) => (await pool.query<{ id: string }>('SELECT id FROM meshhook_due_runs(now(), $1)', [limit])).rows.map((r) => r.id);
    const sorted = (ids: string[]) => [...ids].sort();
    for (let round = 0; round < 5; round++) {
      const all = await due(10);
      assert.equal(all.length, 6);
      assert.deepEqual(sorted(all.slice(0, 3)), sorted([a[0], g[0], i[0]]), 'the first turn: the oldest of each project');
      assert.deepEqual(sorted(all.slice(3, 5)), sorted([a[1], g[1]]), 'the second turn');
      assert.deepEqual(all.slice(5), [a[2]]);
      const four = await due(4);
      assert.deepEqual(sorted(four.slice(0, 3)), sorted([a[0], g[0], i[0]]));
      assert.ok([a[1], g[1]].includes(four[3]));
      assert.ok([a[0], g[0], i[0]].includes((await due(1))[0]));
    }
  });
});
