import type { Pool, PoolClient } from 'pg';
import { inProject } from '../db/scope';
import { canonicalJson } from '../domain/canonical';
import { evolve, RunState } from '../domain/decider';
import { EVENT_VERSION, RecordedEvent, RunEvent } from '../domain/events';
import { ChainKey, eventHash } from '../domain/hash-chain';
import { toRunView } from '../domain/run-view';
import { Failpoints } from '../faults/failpoints';
import { headOf, SignedHead, viewColumns, writeView } from './run-views';

/*
 * Appending to the run log. One transaction per batch: append the events
 * (named by the sequence the writer expects) and update the run view, whose
 * wake_at holds when a waiting run is next due. A writer holding a stale
 * sequence loses and rolls back. Every transaction acts for the run's
 * project (row-level security shows it no other).
 */

/** Appends to one run take turns under this transaction lock (migrations/017_appends_take_turns.sql): "MA". */
export const APPEND_LOCK_CLASS = 0x4d41;

/** Wait for, then hold until the transaction ends, the run's turn to append. */
export async function takeAppendTurn(client: PoolClient, runId: string): Promise<void> {
  await client.query('SELECT pg_catalog.pg_advisory_xact_lock($1, pg_catalog.hashtext($2))', [APPEND_LOCK_CLASS, runId]);
}

export class ConcurrencyError extends Error {
  constructor(public readonly runId: string, public readonly expectedSeq: number) {
    super(`run ${runId} moved past event ${expectedSeq}: another writer appended first`);
    this.name = 'ConcurrencyError';
  }
}

export interface BatchContext {
  runId: string;
  projectId: string;
  expectedSeq: number;
  prevHash: string;
  stateBefore: RunState;
  recordedAt: Date;
  /** signs the new links and the run's head (null only for logs of the first releases, in tests) */
  chain: ChainKey | null;
  failpoints: Failpoints;
  /** the step the batch is about, for failpoint matching */
  step: string | null;
  /** the state after the events, when the caller has already folded them (saves folding twice) */
  stateAfter?: RunState;
  /** commits this batch together with other runs' batches (src/store/group-commit.ts); unused while failpoints are armed */
  group?: BatchGroup;
}

/** A batch ready to append: its log entries and the run view after them, in the columns the store writes. */
export interface PreparedBatch {
  projectId: string;
  runId: string;
  expectedSeq: number;
  /** meshhook_commit_batch's arguments after the first three, in order */
  columns: unknown[];
}

/** Somewhere batches of many runs are committed together: resolves when this one is, rejects with ConcurrencyError when another writer won. */
export interface BatchGroup {
  append(batch: PreparedBatch): Promise<void>;
}

export interface Committed {
  recorded: RecordedEvent[];
  state: RunState;
  lastSeq: number;
  lastHash: string;
}

/** Turn domain events into hashed, numbered log entries following `prevHash`, signed with the chain key when one is given. */
export function numberEvents(
  runId: string,
  projectId: string,
  expectedSeq: number,
  prevHash: string,
  events: RunEvent[],
  recordedAt: string,
  chain: ChainKey | null = null,
): RecordedEvent[] {
  let prev = prevHash;
  return events.map((e, i) => {
    const seq = expectedSeq + i + 1;
    // a JSON round trip makes the hashed content exactly what jsonb gives back
    const data = JSON.parse(JSON.stringify(e.data));
    const text = canonicalJson(data);
    const hash = eventHash(prev, { runId, project: projectId, seq, type: e.type, version: EVENT_VERSION, data, recordedAt }, chain?.key, text);
    const rec: RecordedEvent = { runId, project: projectId, seq, type: e.type, version: EVENT_VERSION, data, recordedAt, prevHash: prev, hash, kid: chain?.kid ?? null };
    payloadText.set(rec, text);
    prev = hash;
    return rec;
  });
}

// the canonical text of each numbered event's data, made once for its hash and stored as it is
const payloadText = new WeakMap<RecordedEvent, string>();
export const payloadOf = (e: RecordedEvent): string => payloadText.get(e) ?? canonicalJson(e.data);

async function insertEvents(client: PoolClient, recorded: RecordedEvent[]): Promise<void> {
  const values: unknown[] = [];
  const tuples = recorded.map((e, i) => {
    values.push(e.project, e.runId, e.seq, e.type, e.version, payloadOf(e), e.recordedAt, e.prevHash, e.hash, e.kid ?? null);
    const b = i * 10;
    return `($${b + 1}, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}, $${b + 6}, $${b + 7}, $${b + 8}, $${b + 9}, $${b + 10})`;
  });
  await client.query(
    `INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid) VALUES ${tuples.join(', ')}`,
    values,
  );
}

function prepared(ctx: BatchContext, recorded: RecordedEvent[], state: RunState, lastSeq: number, head: SignedHead): PreparedBatch {
  return { projectId: ctx.projectId, runId: ctx.runId, expectedSeq: ctx.expectedSeq, columns: [...eventColumns(recorded), ...viewColumns(toRunView(state, lastSeq), head)] };
}

/** One batch, one call, its own transaction (migrations/004_commit_batch.sql). Throws ConcurrencyError when another writer won. */
export async function appendBatch(db: Pool | PoolClient, b: PreparedBatch): Promise<void> {
  try {
    await db.query(`SELECT meshhook_commit_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)`, [b.projectId, b.runId, b.expectedSeq, ...b.columns]);
  } catch (e) {
    if (isRetryableConflict(e)) throw new ConcurrencyError(b.runId, b.expectedSeq);
    throw e;
  }
}

const BATCH_FIELDS = ['seqs', 'types', 'versions', 'payloads', 'recordedAt', 'prevHashes', 'hashes', 'kids', 'status', 'currentStep', 'outputs', 'attempts', 'result', 'wakeAt', 'lastSeq', 'startedAt', 'finishedAt', 'headHash', 'headMac'] as const;

/**
 * Many runs' batches in one call and one transaction (migrations/007_commit_batches.sql):
 * for each, true when it was kept, false when another writer had moved its run on.
 * Any other error fails them all.
 */
export async function appendBatches(db: Pool, batches: PreparedBatch[]): Promise<boolean[]> {
  const doc = batches.map((b) => {
    const o: Record<string, unknown> = { project: b.projectId, run: b.runId, expectedSeq: b.expectedSeq };
    BATCH_FIELDS.forEach((f, i) => {
      const v = b.columns[i];
      // arrays travel as texts (the function casts them back); everything else as its text or null
      o[f] = Array.isArray(v) ? v.map((x) => (x === null || x === undefined ? null : String(x))) : v === null || v === undefined ? null : String(v);
    });
    return o;
  });
  const { rows } = await db.query<{ ok: boolean }>('SELECT ok FROM meshhook_commit_batches($1::jsonb) AS ok', [JSON.stringify(doc)]);
  return rows.map((r) => r.ok);
}

function isRetryableConflict(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  // unique violation on (run_id, seq) or the gap-free trigger: someone else appended
  return code === '23505' || code === '40001';
}

/** Append one decided batch and update the run view (its status and when it is next due), in one transaction. */
export async function commitBatch(db: Pool, ctx: BatchContext, events: RunEvent[], inTransaction?: PoolClient): Promise<Committed> {
  const recordedAt = ctx.recordedAt.toISOString();
  const recorded = numberEvents(ctx.runId, ctx.projectId, ctx.expectedSeq, ctx.prevHash, events, recordedAt, ctx.chain);
  const state = ctx.stateAfter ?? events.reduce(evolve, ctx.stateBefore);
  const lastSeq = ctx.expectedSeq + events.length;
  const fp = ctx.failpoints;
  const hit = { runId: ctx.runId, step: ctx.step, events: events.map((e) => e.type) };

  if (inTransaction && fp.armed) throw new Error('commitBatch: failpoints stop a batch statement by statement in a transaction of its own, never in the caller\'s');
  if (fp.armed) await fp.hit({ name: 'before-append', ...hit });
  const last = recorded[recorded.length - 1];
  const head = headOf(ctx.projectId, ctx.runId, last.seq, last.hash, ctx.chain);
  if (!fp.armed) {
    // one round trip: the batch and the view in one call, its own transaction (migrations/004_commit_batch.sql).
    // With failpoints armed the statements below run one by one instead, so a failpoint can stop a worker
    // between them, inside the open transaction, as the crash-point scenarios need.
    const batch = prepared(ctx, recorded, state, lastSeq, head);
    // inTransaction: the caller's own transaction, which already holds the run's turn (an operator's action)
    await (ctx.group ? ctx.group.append(batch) : appendBatch(inTransaction ?? db, batch));
    return { recorded, state, lastSeq, lastHash: last.hash };
  }
  try {
    await inProject(db, ctx.projectId, async (client) => {
      await takeAppendTurn(client, ctx.runId);
      await insertEvents(client, recorded);
      if (fp.armed) await fp.hit({ name: 'before-view-update', ...hit });
      const updated = await writeView(client, state, lastSeq, ctx.expectedSeq, head);
      if (updated !== 1) throw new ConcurrencyError(ctx.runId, ctx.expectedSeq);
      if (fp.armed) await fp.hit({ name: 'scheduling-next', ...hit });
    });
  } catch (e) {
    if (isRetryableConflict(e)) throw new ConcurrencyError(ctx.runId, ctx.expectedSeq);
    throw e;
  }
  if (fp.armed) await fp.hit({ name: 'after-append', ...hit });
  return { recorded, state, lastSeq, lastHash: last.hash };
}

/** The columns of a batch's events, as meshhook_commit_batch and meshhook_start_run take them. */
export function eventColumns(recorded: RecordedEvent[]): unknown[] {
  return [
    recorded.map((e) => e.seq),
    recorded.map((e) => e.type),
    recorded.map((e) => e.version),
    recorded.map(payloadOf),
    recorded[0].recordedAt,
    recorded.map((e) => e.prevHash),
    recorded.map((e) => e.hash),
    recorded.map((e) => e.kid ?? null),
  ];
}
