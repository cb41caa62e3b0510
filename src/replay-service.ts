import type { Pool } from 'pg';
import { inProject } from './db/scope';
import type { EngineFlags, RunState } from './domain/decider';
import type { WorkflowDefinition } from './domain/definition';
import type { RecordedEvent } from './domain/events';
import { replayLog, verifyLog, VerifyReport } from './domain/replay';
import { compareViews, RunView, toRunView } from './domain/run-view';
import { loadVersion, NotFoundError } from './store/registry';
import { loadEvents, viewFromRow } from './store/run-store';

/* Replay and verify runs straight from the run log in Postgres. */

export interface StoredRunView extends RunView {
  projectId: string;
  workflowId: string;
}

/** A run's stored view, or null when the project holds no such run (another project's run is "not found" too). */
export async function readRunView(db: Pool, projectId: string, runId: string): Promise<StoredRunView | null> {
  const { rows } = await inProject(db, projectId, (c) =>
    c.query(
      `SELECT r.*, p.slug AS project_slug, w.slug AS workflow_slug FROM runs r
       JOIN projects p ON p.id = r.project_id JOIN workflows w ON w.id = r.workflow_id
       WHERE r.id = $1 AND r.project_id = $2`,
      [runId, projectId],
    ),
  );
  const r = rows[0];
  if (!r) return null;
  return { ...viewFromRow(r, r.project_slug, r.workflow_slug), projectId: r.project_id, workflowId: r.workflow_id };
}

export interface ReplayResult {
  events: RecordedEvent[];
  state: RunState;
  view: RunView;
}

export async function replayRun(db: Pool, projectId: string, runId: string): Promise<ReplayResult> {
  const stored = await readRunView(db, projectId, runId);
  if (!stored) throw new NotFoundError(`run ${runId} not found`);
  const events = await loadEvents(db, projectId, runId);
  const state = replayLog(events);
  return { events, state, view: toRunView(state, events.length) };
}

export interface RunVerification extends VerifyReport {
  /** the stored run view equals the view replayed from the log */
  viewMatches: boolean;
  viewDifference: string | null;
}

/** Re-decide every step of a run against its pinned definition (or the one given) and check the hash chain. */
export async function verifyRun(
  db: Pool,
  projectId: string,
  runId: string,
  opts: { flags?: EngineFlags; definition?: WorkflowDefinition } = {},
): Promise<RunVerification> {
  const stored = await readRunView(db, projectId, runId);
  if (!stored) throw new NotFoundError(`run ${runId} not found`);
  const events = await loadEvents(db, projectId, runId);
  const definition = opts.definition ?? (await loadVersion(db, projectId, stored.workflowId, stored.version, { allowTampered: true })).definition;
  const report = verifyLog(runId, events, definition, opts.flags);
  const replayed = toRunView(report.state, events.length);
  const diff = compareViews(stored, replayed);
  // a definition handed in is a deliberate what-if; the stored one must be the one the run was pinned to
  const pinnedIntact = opts.definition !== undefined || !report.definitionChanged;
  return { ...report, ok: report.ok && !diff && pinnedIntact, viewMatches: !diff, viewDifference: diff };
}

export { compareViews };
