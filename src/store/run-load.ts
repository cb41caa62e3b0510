import type { Pool, PoolClient } from 'pg';
import { assertProjectId } from '../db/scope';
import type { RunState } from '../domain/decider';
import type { RecordedEvent } from '../domain/events';
import { ChainKeys, checkChain, checkHeadSignature, genesisHash } from '../domain/hash-chain';
import { replayLog } from '../domain/replay';
import { eventTypes, RowEvent, rowToEvent } from './log-read';

/*
 * Loading a run for the engine to act on: its head and its whole log in one
 * round trip, folded into its state, and the checks that the log is genuine
 * before anything is decided from it.
 */

export interface LoadedRun {
  runId: string;
  projectId: string;
  workflowId: string;
  version: number;
  events: RecordedEvent[];
  state: RunState;
  lastSeq: number;
  lastHash: string;
  /** the head stored with the run view: what the engine last signed */
  head: { seq: number; hash: string | null; mac: string | null };
}

export class TamperedRunError extends Error {
  constructor(readonly runId: string, readonly problem: string) {
    super(`run ${runId} fails its integrity check (${problem}); the engine will not act on it until it is investigated`);
    this.name = 'TamperedRunError';
  }
}

/**
 * Before the engine acts on a run, its log must be genuine: every link signed
 * and unbroken, and the signed head the last event. A log cut short, edited
 * or forged behind the engine's back is never acted on (a worker would
 * otherwise send a cut call again, or decide from forged data).
 */
export function assertIntact(run: LoadedRun, keys: ChainKeys): void {
  const semantics = run.state.semantics;
  const broken = checkChain(run.runId, run.events, keys, { requireKeyed: semantics >= 2 });
  if (broken) throw new TamperedRunError(run.runId, `event ${broken.seq}: ${broken.reason}`);
  // a run of the first releases (semantics 1, unkeyed links) is no exception: its links are plain SHA-256, which
  // anyone who can write the table can compute, so without a signed head nothing but the database vouches for it.
  // A run written in the database in that shape, on a genuine signed version, was carried on (its calls sent for
  // input nobody sent) and then signed by the worker's own head, after which verify --all passed it.
  if (!run.head.mac)
    throw new TamperedRunError(
      run.runId,
      semantics < 2
        ? 'it has no signed head: its links are unkeyed (semantics 1), so nothing but the database vouches for it (written there behind the engine\'s back, or left unfinished by an engine before 0.2)'
        : 'the run has no signed head',
    );
  const head = { projectId: run.projectId, runId: run.runId, seq: run.head.seq, hash: run.head.hash ?? '' };
  const forged = checkHeadSignature(keys, head, run.head.mac);
  if (forged) throw new TamperedRunError(run.runId, forged);
  if (run.head.seq !== run.lastSeq || run.head.hash !== run.lastHash) {
    throw new TamperedRunError(run.runId, `its signed head is event ${run.head.seq}, but the log ends at event ${run.lastSeq}`);
  }
}

export async function loadRun(db: Pool | PoolClient, projectId: string, runId: string): Promise<LoadedRun | null> {
  assertProjectId(projectId);
  // one round trip, one snapshot: the run's head and its log (migrations/004_commit_batch.sql)
  const { rows } = await db.query<RowEvent & { r_project_id: string; r_workflow_id: string; r_version: number; r_last_seq: number; r_head_hash: string | null; r_head_mac: string | null }>(
    { text: 'SELECT * FROM meshhook_load_run($1, $2)', values: [projectId, runId], types: eventTypes() },
  );
  if (rows.length === 0) return null;
  const head = rows[0];
  const events = rows.filter((r) => r.seq !== null).map((r) => rowToEvent(r));
  const last = events[events.length - 1];
  return {
    runId,
    projectId: head.r_project_id,
    workflowId: head.r_workflow_id,
    version: head.r_version,
    events,
    state: replayLog(events),
    lastSeq: last?.seq ?? 0,
    lastHash: last?.hash ?? genesisHash(runId),
    head: { seq: head.r_last_seq, hash: head.r_head_hash, mac: head.r_head_mac },
  };
}
