import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Pool } from 'pg';
import { startRun } from '../../src/store/intake-start';
import { latestVersion } from '../../src/store/registry';
import { behindTheEnginesBack, cli, KEYS, orderSyncDefinition, publish, startDatabases, tempDir, TestDatabases } from './helpers';

/*
 * verify --all cuts a large project's runs into slices verified on threads side by side, in one snapshot. What it
 * reports must not depend on that: the same problems, the same counts, whichever slice a damaged run falls in.
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

/** enough for three slices of at least MIN_RUNS_A_SLICE runs */
const RUNS = 3_100;

/** A project of RUNS runs started through the intake's own path (each a RunStarted and a delivery record). */
async function manyRuns(): Promise<{ pool: Pool; env: NodeJS.ProcessEnv; ids: string[] }> {
  const { url, pool } = await dbs.fresh();
  const wf = await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
  const version = await latestVersion(pool, wf.projectId, wf.workflowId);
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let i = next++; i < RUNS; i = next++) {
        const input = { order: { id: `o-${i}`, sum: i } };
        await startRun(pool, { chain: KEYS.chainKey(), runId: randomUUID(), projectId: wf.projectId, projectSlug: 'acme', workflowSlug: wf.workflow, version, deliveryId: `evt_${i}`, input, at: new Date(), rawBody: JSON.stringify(input) });
      }
    }),
  );
  const ids = (await pool.query<{ id: string }>('SELECT id FROM runs ORDER BY id')).rows.map((r) => r.id);
  return { pool, env: { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() }, ids };
}

/** What verify --all printed, its one line of timing left out, in order. */
const findings = (out: string): string[] => out.split('\n').filter((l) => l && !l.startsWith('verified '));
const summary = (out: string): string => out.split('\n').find((l) => l.startsWith('verified '))!.replace(/ in [\d.]+ s( \(on \d+ threads\))?/, '');

describe('verify --all on threads', { timeout: 360_000 }, () => {
  it('names the same damage, whichever slice it is in, as the main thread alone does', async () => {
    const { pool, env, ids } = await manyRuns();
    const dir = tempDir('mh-verify-threads-');
    const clean = await cli(['verify', '--all', '--threads', '2'], env, dir);
    assert.equal(clean.code, 0, clean.out + clean.err);
    assert.match(clean.out, new RegExp(`^verified ${RUNS} runs, ${RUNS} events in [\\d.]+ s \\(on 3 threads\\): ${RUNS} ok, 0 NOT ok$`, 'm'));
    assert.equal((await cli(['checkpoint', '--out', 'cp.jsonl'], env, dir)).code, 0);

    // one run damaged in each third of the id order, so each of the three slices has one, and one gone altogether
    const [viewEdited, logEdited, rowGone, recordMoved, wholeGone] = [ids[100], ids[1_200], ids[1_800], ids[2_400], ids[2_900]];
    await behindTheEnginesBack(pool, async (c) => {
      await c.query(`UPDATE runs SET status = 'failed' WHERE id = $1`, [viewEdited]);
      await c.query(`UPDATE run_events SET payload = jsonb_set(payload, '{input,order,sum}', '9999') WHERE run_id = $1 AND seq = 1`, [logEdited]);
      await c.query('DELETE FROM runs WHERE id = $1', [rowGone]);
      await c.query('UPDATE deliveries SET run_id = $1 WHERE run_id = $2', [ids[5], recordMoved]);
      await c.query('DELETE FROM deliveries WHERE run_id = $1', [wholeGone]);
      await c.query('DELETE FROM run_events WHERE run_id = $1', [wholeGone]);
      await c.query('DELETE FROM runs WHERE id = $1', [wholeGone]);
    });

    const alone = await cli(['verify', '--all', '--threads', '0', '--checkpoints', 'cp.jsonl'], env, dir);
    const sliced = await cli(['verify', '--all', '--threads', '2', '--checkpoints', 'cp.jsonl'], env, dir);
    assert.equal(alone.code, 1, alone.out + alone.err);
    assert.equal(sliced.code, 1, sliced.out + sliced.err);
    assert.doesNotMatch(alone.out, /on \d+ threads/);
    assert.match(sliced.out, /in [\d.]+ s \(on 3 threads\)/);
    // each damaged run is named, in its slice, for what was done to it
    const line = (id: string, what: string) => new RegExp(`^NOT ok  acme  ${id}  .*${what}`, 'm');
    assert.match(sliced.out, line(viewEdited, 'run view differs'));
    assert.match(sliced.out, line(logEdited, 'hash chain broken at event 1'));
    assert.match(sliced.out, line(rowGone, 'its log \\(1 events\\) is in the database, but the run is not'));
    assert.match(sliced.out, line(recordMoved, 'delivery: '));
    assert.match(sliced.out, new RegExp(`^NOT ok  ${wholeGone}  a checkpoint taken .* and it no longer exists`, 'm'));
    assert.match(sliced.out, /^NOT ok  acme  delivery "evt_\d+" of order-sync is recorded as run/m);
    // and nothing else differs, line for line and in the same order
    assert.deepEqual(findings(sliced.out), findings(alone.out));
    assert.equal(summary(sliced.out), summary(alone.out));
  });
});
