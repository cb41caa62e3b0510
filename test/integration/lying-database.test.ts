import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from 'pg';
import { startEngine } from '../../src/engine';
import { openEnginePool } from '../../src/db/pool';
import { deliver } from '../../src/intake/sign';
import { orderSyncDefinition, publish, runStatus, startDatabases, startTarget, TestDatabases, waitFor, KEYS } from './helpers';

/*
 * A database whose owner replaced the engine's functions with ones that say yes without doing it. The log
 * stays genuine (nothing is forged), so the harm is in what the engine does next: a worker told a batch
 * was committed, finding the run short of it, must not act on the run again (each pass would repeat its
 * calls, for ever, against a service that ignores idempotency keys).
 */

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

const ORDER = JSON.stringify({ order: { id: 'o-1', sum: 42 } });

describe('a database that lies about its writes', { timeout: 270_000 }, () => {
  it("a URL's own options cannot take away the engine's role or its pinned search_path", async () => {
    const { url } = await dbs.fresh();
    const withOwn = (options: string) => `${url}${url.includes('?') ? '&' : '?'}options=${encodeURIComponent(options)}`;
    for (const own of ['-c statement_timeout=60000', '-c search_path=evil,public -c role=postgres']) {
      const pool = openEnginePool(withOwn(own), { max: 1 });
      try {
        const { rows } = await pool.query(`SELECT current_user AS who, current_setting('search_path') AS path, current_setting('statement_timeout') AS timeout`);
        assert.deepEqual([rows[0].who, rows[0].path], ['meshhook_engine', 'public'], own);
        if (own.includes('statement_timeout')) assert.equal(rows[0].timeout, '1min', "the URL's own setting still applies");
      } finally {
        await pool.end();
      }
    }
  });

  it("a search_path set on the database cannot put someone's empty views in front of the engine's tables", async () => {
    const { url, pool: owner } = await dbs.fresh();
    const target = await startTarget();
    await owner.query(`CREATE SCHEMA evil;
      GRANT USAGE ON SCHEMA evil TO PUBLIC;
      CREATE VIEW evil.workflow_versions AS SELECT * FROM public.workflow_versions WHERE false;
      CREATE VIEW evil.runs AS SELECT * FROM public.runs WHERE false;
      GRANT SELECT ON evil.workflow_versions, evil.runs TO PUBLIC;
      ALTER DATABASE ${JSON.stringify(new URL(url).pathname.slice(1))} SET search_path = evil, public`);
    // the control: a connection that does not name its schema now reads the empty views
    const plain = new Client({ connectionString: url });
    await plain.connect();
    try {
      assert.equal((await plain.query('SHOW search_path')).rows[0].search_path, 'evil, public');
      assert.equal((await plain.query('SELECT count(*)::int AS n FROM workflow_versions')).rows[0].n, 0);
    } finally {
      await plain.end();
    }
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    try {
      const wf = await publish(engine.pool, 'acme', orderSyncDefinition(target.url));
      // the intake finds the published version, the worker runs it, and a read of the run finds it
      const res = await deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, ORDER, { deliveryId: 'dlv-path' });
      assert.equal(res.status, 202, JSON.stringify(res.body));
      await waitFor('the run to succeed', async () => (await runStatus(engine.pool, res.body.runId)) === 'succeeded');
      assert.equal(target.requests.length, 1);
    } finally {
      await engine.stop();
      await target.close();
    }
  });

  it('a commit function that reports success without writing costs one call, not one a pass', async () => {
    const { url, pool: owner } = await dbs.fresh();
    const target = await startTarget();
    const logs: Array<Record<string, unknown>> = [];
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20, log: (e) => logs.push(e as Record<string, unknown>) });
    try {
      const wf = await publish(engine.pool, 'acme', orderSyncDefinition(target.url));
      // as the database's owner: every batch after the run's start is acknowledged and dropped
      const { rows } = await owner.query(`SELECT pg_get_functiondef('meshhook_commit_batch'::regproc) AS def`);
      const lying = (rows[0].def as string).replace(/\bBEGIN\b/, 'BEGIN\n  IF p_expected_seq > 0 THEN RETURN p_last_seq; END IF;');
      assert.notEqual(lying, rows[0].def, 'the function was changed');
      await owner.query(lying);
      const res = await deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, ORDER, { deliveryId: 'dlv-lie' });
      assert.equal(res.status, 202);
      await waitFor('the worker to refuse the run', async () => logs.some((l) => String(l.msg ?? '').includes('what COMMIT confirmed is gone')));
      // the lie holds for a while longer: the worker keeps its refusal (with backoff) and sends nothing more
      await new Promise((r) => setTimeout(r, 2_000));
      assert.equal(target.requests.length, 1, `the order was sent ${target.requests.length} times`);
      assert.equal(await runStatus(engine.pool, res.body.runId), 'running', 'the database still shows the run where its start left it');
    } finally {
      await engine.stop();
      await target.close();
    }
  });
});
