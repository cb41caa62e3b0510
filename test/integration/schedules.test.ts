import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cron } from 'croner';
import { openEnginePool } from '../../src/db/pool';
import { startEngine } from '../../src/engine';
import { MAX_CATCH_UP, Scheduler } from '../../src/intake/scheduler';
import { systemClock } from '../../src/worker/clock';
import { KEYS, publish, startDatabases, TestDatabases, waitFor } from './helpers';

/*
 * Workflows started by the clock (a definition's `schedule`): one run a tick, however many schedulers tick at
 * once, none before the version was published, missed ticks caught up to a bound, and a webhook cannot take a
 * tick's place.
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

const report = (schedule: string) => ({
  name: 'nightly-report',
  schedule,
  steps: [
    { id: 'stamp', type: 'transform', expression: '{for: scheduledAt}', next: 'done' },
    { id: 'done', type: 'terminate', status: 'succeeded', output: 'steps.stamp' },
  ],
});

describe('scheduled workflows', { timeout: 180_000 }, () => {
  it('publish refuses a schedule that is not a cron pattern, naming it', async () => {
    const { pool } = await dbs.fresh();
    await assert.rejects(publish(pool, 'acme', report('every 15 minutes')), /schedule: a schedule is a cron pattern of 5 fields .* "every 15 minutes" has 3/);
    await assert.rejects(publish(pool, 'acme', report('*/15 25 * * *')), /schedule: the schedule "\*\/15 25 \* \* \*" is not a cron pattern/);
  });

  it('starts each tick once, however many schedulers tick at once, and none before the version was published', async () => {
    const { url, pool } = await dbs.fresh();
    const wf = await publish(pool, 'acme', report('*/15 * * * *'));
    const published: Date = (await pool.query('SELECT published_at FROM workflow_versions WHERE workflow_id = $1', [wf.workflowId])).rows[0].published_at;
    const [t1, t2, t3] = new Cron('*/15 * * * *', { timezone: 'UTC', paused: true }).nextRuns(3, published);
    const engine = openEnginePool(url, { max: 4 });
    try {
      const a = new Scheduler({ pool: engine, keyring: KEYS, clock: systemClock });
      const b = new Scheduler({ pool: engine, keyring: KEYS, clock: systemClock });
      assert.equal(await a.tick(new Date(t1.getTime() - 1)), 0, 'nothing before the first tick after publication');
      const [byA, byB] = await Promise.all([a.tick(t2), b.tick(t2)]);
      assert.equal(byA + byB, 2, `two ticks, started once between them (${byA} + ${byB})`);
      assert.equal(await a.tick(t2), 0, 'a tick already started is not started again');
      assert.equal(await b.tick(t3), 1);
      const runs = (
        await pool.query(
          `SELECT d.delivery_id, e.payload->'input' AS input FROM deliveries d JOIN run_events e ON e.run_id = d.run_id AND e.seq = 1 WHERE d.workflow_id = $1 ORDER BY d.delivery_id COLLATE "C"`,
          [wf.workflowId],
        )
      ).rows;
      assert.deepEqual(
        runs,
        [t1, t2, t3].map((t) => ({ delivery_id: `schedule@${t.toISOString()}`, input: { scheduledAt: t.toISOString() } })),
      );
    } finally {
      await engine.end();
    }
  });

  it(`a scheduler coming back after a day starts the latest ${MAX_CATCH_UP} missed ticks, not all of them`, async () => {
    const { url, pool } = await dbs.fresh();
    const wf = await publish(pool, 'acme', report('*/15 * * * *'));
    const published: Date = (await pool.query('SELECT published_at FROM workflow_versions WHERE workflow_id = $1', [wf.workflowId])).rows[0].published_at;
    const engine = openEnginePool(url, { max: 4 });
    try {
      const logged: Array<Record<string, unknown>> = [];
      const s = new Scheduler({ pool: engine, keyring: KEYS, clock: systemClock, log: (e) => logged.push(e) });
      const dayLater = new Date(published.getTime() + 86_400_000);
      assert.equal(await s.tick(dayLater), MAX_CATCH_UP);
      const last = new Cron('*/15 * * * *', { timezone: 'UTC', paused: true }).previousRuns(1, dayLater)[0];
      const newest = (await pool.query(`SELECT max(delivery_id COLLATE "C") AS id FROM deliveries WHERE workflow_id = $1`, [wf.workflowId])).rows[0].id;
      assert.equal(newest, `schedule@${last.toISOString()}`, 'the latest missed tick is among those started');
      assert.ok(logged.some((e) => e.msg === 'scheduled ticks missed and skipped' && Number(e.skipped) > 80), JSON.stringify(logged));
    } finally {
      await engine.end();
    }
  });

  it('meshhook up runs a workflow scheduled every second', async () => {
    const { url, pool } = await dbs.fresh();
    const wf = await publish(pool, 'acme', report('* * * * * *'));
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20, schedules: true });
    try {
      const done = await waitFor('a scheduled run to succeed', async () =>
        (await pool.query(`SELECT result FROM runs WHERE workflow_id = $1 AND status = 'succeeded' LIMIT 1`, [wf.workflowId])).rows[0],
      );
      assert.match(String((done.result as { output: { for: string } }).output.for), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/);
    } finally {
      await engine.stop();
    }
  });
});
