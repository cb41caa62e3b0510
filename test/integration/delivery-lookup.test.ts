import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startDatabases, TestDatabases } from './helpers';

/*
 * Migration 020 looks for a delivery with no record among its project's first events, "one probe of a partial
 * index". As the engine (row-level security on run_events) `payload->>'deliveryId' = …` is not leakproof, so it
 * could not be an index condition: every new delivery read the whole of run_events. The probe must use the index.
 */
let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

describe('a delivery with no record is looked for among first events', { timeout: 270_000 }, () => {
  it('through the partial index, not by reading every event of the project', async () => {
    const { pool } = await dbs.fresh();
    const c = await pool.connect();
    try {
      const project = (await c.query<{ id: string }>(`SELECT meshhook_ensure_project('lookup', 'lookup') AS id`)).rows[0].id;
      const workflow = '00000000-0000-0000-0000-0000000000aa';
      // many runs, written as the owner around the engine's triggers (only their first events matter here)
      await c.query('SET session_replication_role = replica');
      await c.query(
        `INSERT INTO runs (id, project_id, workflow_id, version, status, last_seq)
         SELECT md5(i::text)::uuid, $1, $2, 1, 'running', 1 FROM generate_series(1, 30000) i`,
        [project, workflow],
      );
      await c.query(
        `INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash)
         SELECT $1, md5(i::text)::uuid, 1, 'RunStarted', 1, jsonb_build_object('deliveryId', 'd' || i, 'bodySha256', 'sha' || i), now(), 'x', 'y'
         FROM generate_series(1, 30000) i`,
        [project],
      );
      await c.query('SET session_replication_role = origin');
      await c.query('ANALYZE runs; ANALYZE run_events');
      await c.query('SET stats_fetch_consistency = none');
      const scans = async (): Promise<{ seq: number; idx: number }> => {
        await c.query('SELECT pg_stat_force_next_flush()');
        await c.query('SELECT 1');
        const { rows } = await c.query<{ seq: string; idx: string }>(
          `SELECT (SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'run_events') AS seq,
                  (SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'run_events_first_by_delivery') AS idx`,
        );
        return { seq: Number(rows[0].seq), idx: Number(rows[0].idx) };
      };
      const call = async (delivery: string) => {
        await c.query('BEGIN');
        try {
          await c.query('SET LOCAL ROLE meshhook_engine');
          const nulls = Array.from({ length: 19 }, (_, i) => `$${i + 8}`).join(', ');
          const { rows } = await c.query(
            `SELECT * FROM meshhook_start_run($1, $2, $3, $4, $5, $6, $7, ${nulls})`,
            [project, workflow, 1, delivery, 'new-sha', new Date(), '00000000-0000-0000-0000-0000000000bb', ...Array(19).fill(null)],
          );
          return rows[0];
        } finally {
          await c.query('ROLLBACK');
        }
      };
      const before = await scans();
      const found = await call('d17');
      const run17 = (await c.query<{ id: string }>(`SELECT md5('17')::uuid::text AS id`)).rows[0].id;
      assert.deepEqual(found, { run_id: run17, body_sha256: 'sha17', duplicate: true }, 'answered as the run that names it');
      const afterIt = await scans();
      assert.equal(afterIt.seq - before.seq, 0, 'run_events was read through, not probed');
      assert.ok(afterIt.idx > before.idx, 'the partial index was probed');
    } finally {
      c.release();
    }
  });
});
