/*
 * The bench's BASELINE: the engine's own Worker (src/worker/worker.ts) with
 * a state-stored repository instead of the event log.
 *
 * Everything but how a run is kept is the engine's, so the bench can say
 * what event sourcing costs: the same claims, locks, wake-ups and polling,
 * the same run loop and decider (pure steps merged into one batch), the same
 * HTTP client and recorded jitter draw, one transaction per batch with an
 * optimistic "revision" check like the engine's expected-sequence check.
 * But per batch it only UPDATEs one bench_runs_state row (status, current
 * step, outputs as jsonb, the whole state as a jsonb blob). No run_events
 * insert, no hash chain, no numbering, no recorded inputs kept, no run-view
 * projection, no group commit, no fold of a log when a run is picked up: the
 * state is read back as it was stored.
 *
 * Bench-only code: nothing in src/ depends on it.
 */
import type { Pool } from 'pg';
import { evolve, initialState, RunState } from '../src/domain/decider';
import type { DecidedBatch } from '../src/domain/run-loop';
import { startEvents, StartRunInput } from '../src/store/intake-start';
import { ConcurrencyError } from '../src/store/log-append';
import type { RunRepository, StoredRun } from '../src/store/run-repository';

/** The baseline's own table, created in the bench database next to the engine's. */
export const STATE_STORED_SCHEMA = `
CREATE TABLE IF NOT EXISTS bench_runs_state (
  id            uuid PRIMARY KEY,
  project_id    uuid NOT NULL,
  workflow_id   uuid NOT NULL,
  version       integer NOT NULL,
  status        text NOT NULL CHECK (status IN ('running', 'waiting', 'succeeded', 'failed', 'canceled')),
  current_step  text,
  outputs       jsonb NOT NULL DEFAULT '{}',
  state         jsonb NOT NULL,
  -- optimistic concurrency: the writer names the revision it read (like the engine's last_seq)
  revision      integer NOT NULL,
  wake_at       timestamptz,
  -- timestamps for the latency figures, taken exactly where the engine takes its recorded_at
  started_at    timestamptz NOT NULL,
  first_step_at timestamptz,
  finished_at   timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
-- the same claim index as the engine's runs_claimable
CREATE INDEX IF NOT EXISTS bench_runs_state_claimable ON bench_runs_state (wake_at NULLS FIRST, created_at)
  WHERE status IN ('running', 'waiting');
-- the Worker acts as the engine's role, as it does on the engine's tables
GRANT SELECT, UPDATE ON bench_runs_state TO meshhook_engine;
-- the runs due, as the Worker's claim asks for them (the engine's meshhook_due_runs, on this table);
-- the worker's lock session acts as the engine's role, so the function reads as its owner
CREATE OR REPLACE FUNCTION bench_due_runs(p_now timestamptz, p_max integer)
RETURNS TABLE (id uuid, project_id uuid) LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT id, project_id FROM bench_runs_state
   WHERE status IN ('running', 'waiting') AND (wake_at IS NULL OR wake_at <= p_now)
   ORDER BY wake_at NULLS FIRST, created_at LIMIT p_max
$$;
`;

/** What the engine's startRun takes, less what only the log needs (the raw body, the chain key, failpoints). */
export type StateStoredStartInput = Pick<StartRunInput, 'runId' | 'projectId' | 'projectSlug' | 'workflowSlug' | 'version' | 'deliveryId' | 'input' | 'at'>;

/** Create a run: the engine's StartRun decision, stored as one state row. */
export async function startStateStoredRun(db: Pool, s: StateStoredStartInput): Promise<void> {
  const at = s.at.toISOString();
  const events = startEvents(s, at);
  const state = events.reduce(evolve, initialState());
  await db.query(
    `INSERT INTO bench_runs_state (id, project_id, workflow_id, version, status, current_step, outputs, state, revision, started_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
    [s.runId, s.projectId, s.version.workflowId, s.version.version, state.status, state.cursor, JSON.stringify(state.outputs), JSON.stringify(state), state.eventCount, at],
  );
}

/** Runs kept as one state row each, for the engine's Worker. */
export class StateStoredRepository implements RunRepository {
  readonly dueRuns = 'bench_due_runs';

  constructor(private readonly pool: Pool) {}

  async load(_projectId: string, runId: string): Promise<StoredRun | null> {
    const { rows } = await this.pool.query<{ project_id: string; workflow_id: string; version: number; state: RunState; revision: number }>(
      'SELECT project_id, workflow_id, version, state, revision FROM bench_runs_state WHERE id = $1',
      [runId],
    );
    const r = rows[0];
    return r ? { runId, projectId: r.project_id, workflowId: r.workflow_id, version: r.version, state: r.state, seq: r.revision } : null;
  }

  async append(run: StoredRun, batch: DecidedBatch, recordedAt: Date): Promise<StoredRun> {
    const state = batch.stateAfter;
    await this.commit(run.runId, run.seq, state, recordedAt);
    return { ...run, state, seq: state.eventCount };
  }

  async flush(): Promise<void> {}

  async stillAt(run: StoredRun): Promise<boolean> {
    const { rows } = await this.pool.query<{ revision: number }>('SELECT revision FROM bench_runs_state WHERE id = $1', [run.runId]);
    return rows[0]?.revision === run.seq;
  }

  /** One transaction per batch in one round trip, like commitBatch: here a single UPDATE of the state row. */
  private async commit(runId: string, expectedRevision: number, state: RunState, recordedAt: Date): Promise<void> {
    const res = await this.pool.query(
      `UPDATE bench_runs_state SET status = $3, current_step = $4, outputs = $5, state = $6, revision = $7, wake_at = $8,
         first_step_at = coalesce(first_step_at, $9), finished_at = $10, updated_at = now()
       WHERE id = $1 AND revision = $2`,
      [
        runId,
        expectedRevision,
        state.status,
        state.cursor,
        JSON.stringify(state.outputs),
        JSON.stringify(state),
        state.eventCount,
        state.pendingTimer?.dueAt ?? null,
        recordedAt,
        state.phase === 'done' ? recordedAt : null,
      ],
    );
    if (res.rowCount !== 1) throw new ConcurrencyError(runId, expectedRevision);
  }
}
