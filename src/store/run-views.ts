import type { PoolClient } from 'pg';
import { canonicalJson } from '../domain/canonical';
import type { RunState } from '../domain/decider';
import { ChainKey, signHead } from '../domain/hash-chain';
import { RunView, toRunView } from '../domain/run-view';

/*
 * The run view: one `runs` row per run, the projection of its log that claims
 * (wake_at), the API and the dashboard read. It is written in the same
 * transaction as the events it follows, together with the run's signed head,
 * and can always be rebuilt from a verified log.
 */

/** The run's head as stored with its view: the last event, signed (null without a chain key). */
export interface SignedHead {
  hash: string;
  mac: string | null;
}

export function headOf(projectId: string, runId: string, seq: number, hash: string, chain: ChainKey | null): SignedHead {
  return { hash, mac: chain ? signHead(chain, { projectId, runId, seq, hash }) : null };
}

export async function writeView(client: PoolClient, state: RunState, lastSeq: number, expectedSeq: number | null, head: SignedHead): Promise<number> {
  const v = toRunView(state, lastSeq);
  const res = await client.query(
    `UPDATE runs SET status = $2, current_step = $3, outputs = $4, attempts = $5, result = $6, wake_at = $7,
       last_seq = $8, started_at = $9, finished_at = $10, head_hash = $11, head_mac = $12, updated_at = now()
     WHERE id = $1 ${expectedSeq === null ? '' : 'AND last_seq = $13'}`,
    [
      v.runId,
      ...viewColumns(v, head),
      ...(expectedSeq === null ? [] : [expectedSeq]),
    ],
  );
  return res.rowCount ?? 0;
}

/** The run view's columns after a batch, as meshhook_commit_batch and meshhook_start_run take them. */
export function viewColumns(v: RunView, head: SignedHead): unknown[] {
  return [
    v.status,
    v.currentStep,
    canonicalJson(v.outputs),
    canonicalJson(v.attempts),
    v.result ? canonicalJson(v.result) : null,
    v.wakeAt,
    v.lastSeq,
    v.startedAt,
    v.finishedAt,
    head.hash,
    head.mac,
  ];
}

/** A `runs` row as the view users see (slugs come from the caller: the row holds ids). */
export function viewFromRow(r: any, project: string, workflow: string): RunView {
  return {
    runId: r.id,
    project,
    workflow,
    version: r.version,
    status: r.status,
    currentStep: r.current_step,
    outputs: r.outputs,
    attempts: r.attempts,
    result: r.result,
    wakeAt: r.wake_at ? r.wake_at.toISOString() : null,
    lastSeq: r.last_seq,
    startedAt: r.started_at ? r.started_at.toISOString() : null,
    finishedAt: r.finished_at ? r.finished_at.toISOString() : null,
  };
}

/** Write a view recomputed from a verified log (rebuild); the head stays the one the engine signed. */
export async function writeRebuiltView(client: PoolClient, state: RunState, lastSeq: number, head: SignedHead): Promise<void> {
  await writeView(client, state, lastSeq, null, head);
}
