import { createHash, createHmac } from 'node:crypto';
import type { Pool } from 'pg';
import { assertProjectId, inProject } from '../db/scope';
import { sha256 } from '../domain/canonical';
import { createDecider, engineInfo, fold, initialState, type RunState } from '../domain/decider';
import type { EngineInfo, RunEvent } from '../domain/events';
import { ChainKey, ChainKeys, checkLink, genesisHash } from '../domain/hash-chain';
import { toRunView } from '../domain/run-view';
import { Failpoints } from '../faults/failpoints';
import { eventColumns, numberEvents } from './log-append';
import { eventTypes, rowToEvent, type Queryable, type RowEvent } from './log-read';
import type { LoadedVersion } from './registry';
import { headOf, viewColumns } from './run-views';

/*
 * Starting a run from a webhook delivery: the delivery, the run, its first
 * events and its view in one transaction. A delivery id names one body, so a
 * re-delivery finds its run and writes nothing.
 */

export interface StartRunInput {
  runId: string;
  projectId: string;
  projectSlug: string;
  workflowSlug: string;
  version: LoadedVersion;
  deliveryId: string;
  input: unknown;
  rawBody: Buffer | string;
  at: Date;
  /** what the run is decided under from now on (the current semantics and no flags unless given) */
  engine?: EngineInfo;
  /** signs the run's first link and head */
  chain: ChainKey | null;
  /** check the first event of the run a re-delivery is answered with (every key of the keyring, old ones too) */
  keys?: ChainKeys | null;
  /** before-start-run and after-start-run, where the intake can be made to fail on purpose */
  failpoints?: Failpoints;
}

/**
 * The run a delivery starts has an id derived from the delivery (keyed, so ids cannot be guessed), not a random
 * one. The delivery's record and its run's first event are found through text indexes, and a superuser can make
 * those lookups miss without touching a sealed object (the database's collation changed under them, an index's
 * file swapped): a re-delivery then used to start a second run, with new idempotency keys, and the order was
 * placed again. With the id fixed by the delivery, the second run collides with the first on the runs' primary
 * key (uuids, no collation) and the re-delivery is answered with the first run; even where that index lies too,
 * the second run would send the first one's idempotency keys. The key is the keyring's oldest (Keyring.runIdKey),
 * so a rotation does not change the id a delivery derives to.
 */
export function runIdOfDelivery(key: ChainKey | null, projectId: string, workflowId: string, deliveryId: string): string {
  const text = `meshhook-run-id\n${projectId}\n${workflowId}\n${deliveryId}`;
  const h = (key ? createHmac('sha256', key.key).update(text).digest() : createHash('sha256').update(text).digest()).subarray(0, 16);
  h[6] = (h[6] & 0x0f) | 0x80; // version 8: custom (RFC 9562)
  h[8] = (h[8] & 0x3f) | 0x80; // the RFC's variant
  const x = h.toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

export interface StartedRun {
  runId: string;
  duplicate: boolean;
  /** the head the new run's first events committed (not for a duplicate) */
  head?: { seq: number; hash: string };
  /** the new run as its first events left it (not for a duplicate): what a worker of this process can carry on from without loading it */
  state?: RunState;
}

/** A run's first events: the engine's StartRun decision for a delivery, made at `at`. */
export function startEvents(
  s: Pick<StartRunInput, 'runId' | 'projectSlug' | 'workflowSlug' | 'version' | 'deliveryId' | 'input' | 'engine'>,
  at: string,
  bodySha256?: string,
): RunEvent[] {
  return createDecider(s.version.definition).decide(
    {
      type: 'StartRun',
      data: {
        runId: s.runId,
        project: s.projectSlug,
        workflow: s.workflowSlug,
        version: s.version.version,
        definitionHash: s.version.definitionHash,
        deliveryId: s.deliveryId,
        input: s.input,
        at,
        engine: s.engine ?? engineInfo(),
        ...(bodySha256 ? { bodySha256 } : {}),
      },
    },
    initialState(),
  );
}

/**
 * Record a delivery and its run's first event in one transaction. A delivery
 * id seen before returns the run it started and writes nothing.
 */
export async function startRun(db: Pool, s: StartRunInput): Promise<StartedRun> {
  assertProjectId(s.projectId);
  const bodySha = sha256(String(s.rawBody));
  const at = s.at.toISOString();
  const events = startEvents(s, at, bodySha);
  const recorded = numberEvents(s.runId, s.projectId, 0, genesisHash(s.runId), events, at, s.chain);
  const state = fold(events);
  const last = recorded[recorded.length - 1];
  const head = headOf(s.projectId, s.runId, last.seq, last.hash, s.chain);
  const v = toRunView(state, recorded.length);
  const fp = s.failpoints;
  const hit = { runId: s.runId, step: null, events: recorded.map((e) => e.type) };
  if (fp?.armed) await fp.hit({ name: 'before-start-run', ...hit });
  try {
    // one round trip: the delivery seen before, or the delivery, the run, its first events and its view
    // (migrations/005_start_run.sql)
    const { rows } = await db.query<{ run_id: string; body_sha256: string; duplicate: boolean }>(
      `SELECT * FROM meshhook_start_run($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)`,
      [
        s.projectId,
        s.version.workflowId,
        s.version.version,
        s.deliveryId,
        bodySha,
        at,
        s.runId,
        ...eventColumns(recorded),
        ...viewColumns(v, head),
      ],
    );
    const r = rows[0];
    if (r.duplicate) return await checkedDuplicate(db, s, { runId: r.run_id, bodySha: r.body_sha256 }, bodySha);
    if (fp?.armed) await fp.hit({ name: 'after-start-run', ...hit });
    return { runId: s.runId, duplicate: false, head: { seq: last.seq, hash: last.hash }, state };
  } catch (e) {
    const code = (e as { code?: string }).code;
    // the run this delivery's id derives to is there already: a concurrent re-delivery committed it first, or the
    // lookups of the delivery missed it (its record and first event found through indexes that were made to lie).
    // Answered as that run, as far as its signed first event says it is this delivery's (else 503, nothing written)
    if (code === '23505') return await checkedDuplicate(db, s, { runId: s.runId, bodySha: '' }, bodySha);
    if (code !== '40001') throw e;
    // a concurrent re-delivery won the race: keep its run
    const winner = await inProject(db, s.projectId, (c) => findDelivery(c, s.projectId, s.version.workflowId, s.deliveryId));
    return await checkedDuplicate(db, s, winner!, bodySha);
  }
}

/**
 * A delivery's record points at a run that does not name that delivery (its first event says which delivery
 * started it): the record was written outside the engine. Answering "duplicate" would drop the webhook for
 * good; refusing it without recording anything lets the sender's retries through once the record is fixed.
 * Also a delivery whose record is gone, found by the first event of an early run that did not sign its bytes.
 */
export class DeliveryRecordBrokenError extends Error {
  constructor(readonly deliveryId: string) {
    super(`the record of delivery ${deliveryId} does not match the run it points at`);
    this.name = 'DeliveryRecordBrokenError';
  }
}

/**
 * A re-delivery is answered with its run only when that run's first event names the delivery and its workflow;
 * and only for the same bytes, as the run's first event names them (its hash is signed there; runs started before
 * it was recorded are judged by the delivery's record).
 */
async function checkedDuplicate(db: Pool, s: StartRunInput, found: { runId: string; bodySha: string }, bodySha: string): Promise<StartedRun> {
  const { rows } = await inProject(db, s.projectId, (c) =>
    c.query<RowEvent & { delivery: string | null; body_sha: string | null; workflow_id: string }>({
      text: `SELECT e.*, e.payload->>'deliveryId' AS delivery, e.payload->>'bodySha256' AS body_sha, r.workflow_id
         FROM runs r JOIN run_events e ON e.run_id = r.id AND e.seq = 1
       WHERE r.id = $1 AND r.project_id = $2`,
      values: [found.runId, s.projectId],
      types: eventTypes(),
    }),
  );
  if (rows[0]?.delivery !== s.deliveryId || rows[0].workflow_id !== s.version.workflowId) throw new DeliveryRecordBrokenError(s.deliveryId);
  // the first event is trusted only as the engine wrote it, keyed: a run and a first event forged to name a
  // delivery that has not arrived yet would otherwise drop that webhook as "sent before" (a run from before links
  // were keyed cannot be told from such a forgery, so its re-delivery is held back too)
  if (s.keys !== undefined && checkLink(genesisHash(found.runId), 1, rowToEvent(rows[0]), s.keys, true)) throw new DeliveryRecordBrokenError(s.deliveryId);
  // found by its run's first event alone (the record deleted) in a run from before the event signed the body's
  // hash: which bytes it was cannot be told, so it is held back rather than answered either way
  const sent = rows[0].body_sha ?? found.bodySha;
  if (!sent) throw new DeliveryRecordBrokenError(s.deliveryId);
  return sameDelivery({ runId: found.runId, bodySha: sent }, s.deliveryId, bodySha);
}

/** A delivery id names one body: a re-delivery must carry the same bytes. */
export class DeliveryReusedError extends Error {
  constructor(readonly deliveryId: string, readonly runId: string) {
    // the run id stays out of the message: a refusal must not tell a sender which run an id belongs to
    super(`delivery id ${deliveryId} was already used for a different body; give each new event its own delivery id`);
    this.name = 'DeliveryReusedError';
  }
}

function sameDelivery(found: { runId: string; bodySha: string }, deliveryId: string, bodySha: string): StartedRun {
  if (found.bodySha !== bodySha) throw new DeliveryReusedError(deliveryId, found.runId);
  return { runId: found.runId, duplicate: true };
}

async function findDelivery(
  db: Queryable,
  projectId: string,
  workflowId: string,
  deliveryId: string,
): Promise<{ runId: string; bodySha: string } | null> {
  const { rows } = await db.query(
    'SELECT run_id, body_sha256 FROM deliveries WHERE project_id = $1 AND workflow_id = $2 AND delivery_id = $3',
    [projectId, workflowId, deliveryId],
  );
  return rows[0] ? { runId: rows[0].run_id, bodySha: rows[0].body_sha256 } : null;
}
