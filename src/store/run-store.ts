import { types as pgTypes, type Pool, type PoolClient } from 'pg';
import { assertProjectId, beginInProject, inProject } from '../db/scope';
import { canonicalJson, sha256 } from '../domain/canonical';
import { createDecider, engineInfo, evolve, fold, initialState, RunState } from '../domain/decider';
import { EngineInfo, EVENT_VERSION, RecordedEvent, RunEvent } from '../domain/events';
import { ChainKey, ChainKeys, checkChain, checkHeadSignature, eventHash, genesisHash, signHead } from '../domain/hash-chain';
import { replayLog } from '../domain/replay';
import { compareViews, RunView, toRunView } from '../domain/run-view';
import { Failpoints } from '../faults/failpoints';
import type { LoadedVersion } from './registry';

/*
 * The run log and its projection. One transaction per batch: append the
 * events (named by the sequence the writer expects) and update the run view,
 * whose wake_at holds when a waiting run is next due. A writer holding a
 * stale sequence loses and rolls back. Every transaction acts for the run's
 * project (row-level security shows it no other).
 */

export class ConcurrencyError extends Error {
  constructor(public readonly runId: string, public readonly expectedSeq: number) {
    super(`run ${runId} moved past event ${expectedSeq}: another writer appended first`);
    this.name = 'ConcurrencyError';
  }
}

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
  if (semantics < 2 && !run.head.mac) return;
  const head = { projectId: run.projectId, runId: run.runId, seq: run.head.seq, hash: run.head.hash ?? '' };
  const forged = checkHeadSignature(keys, head, run.head.mac);
  if (forged) throw new TamperedRunError(run.runId, forged);
  if (run.head.seq !== run.lastSeq || run.head.hash !== run.lastHash) {
    throw new TamperedRunError(run.runId, `its signed head is event ${run.head.seq}, but the log ends at event ${run.lastSeq}`);
  }
}

export interface RowEvent {
  project_id: string;
  run_id: string;
  seq: number;
  type: string;
  version: number;
  payload: unknown;
  /** as text in ISO form when read with eventTypes(), else as pg parses it */
  recorded_at: Date | string;
  prev_hash: string;
  hash: string;
  kid: string | null;
}

/** A log row as an event; the run and project may be given when the query did not read them for every row. */
export function rowToEvent(r: RowEvent, runId: string = r.run_id, project: string = r.project_id): RecordedEvent {
  return {
    runId,
    project,
    seq: r.seq,
    type: r.type as RecordedEvent['type'],
    version: r.version,
    data: r.payload as RecordedEvent['data'],
    recordedAt: typeof r.recorded_at === 'string' ? r.recorded_at : r.recorded_at.toISOString(),
    prevHash: r.prev_hash,
    hash: r.hash,
    kid: r.kid,
  };
}

const TIMESTAMPTZ = 1184;
const parseTimestamptz = pgTypes.getTypeParser(TIMESTAMPTZ, 'text') as (text: string) => Date;

/*
 * How event rows are read: as pg reads them, except that a timestamp comes as
 * the ISO text an event holds. The events of one batch share their time, so
 * the text of the row before is kept and a repeat costs no Date and no text.
 */
function eventTypes(): { getTypeParser: typeof pgTypes.getTypeParser } {
  let lastText = '';
  let lastIso = '';
  const isoOf = (text: string): string => {
    if (text !== lastText) {
      lastIso = parseTimestamptz(text).toISOString();
      lastText = text;
    }
    return lastIso;
  };
  return {
    getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
      oid === TIMESTAMPTZ && format !== 'binary' ? isoOf : pgTypes.getTypeParser(oid, format as 'text')) as typeof pgTypes.getTypeParser,
  };
}

type Queryable = Pool | PoolClient;

/** A run's events, read inside a transaction that already acts for the run's project. */
export async function readEvents(db: Queryable, runId: string): Promise<RecordedEvent[]> {
  const { rows } = await db.query<RowEvent>({ text: `SELECT ${EVENT_COLUMNS} FROM run_events WHERE run_id = $1 ORDER BY seq`, values: [runId], types: eventTypes() });
  return rows.map((r) => rowToEvent(r));
}

const EVENT_COLUMNS = 'project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid';

/**
 * Read a log page by page through a cursor, inside a transaction that already
 * acts for the project: one run's events in order, or (without `runId`)
 * every event of the project ordered by run and number. Each page is handed
 * to `onPage` while the next is already on its way, so memory holds about two
 * pages however long the log is. Returns how many events were read.
 */
export async function streamEvents(
  c: PoolClient,
  which: { projectId: string; runId?: string },
  onPage: (events: RecordedEvent[]) => void | Promise<void>,
  pageSize = PAGE_SIZE,
): Promise<number> {
  const { projectId, runId } = which;
  // the project (and the run, when it is one run) is known: it is not read again for every row
  const columns = `${runId ? '' : 'run_id, '}seq, type, version, payload, recorded_at, prev_hash, hash, kid`;
  return streamRows<RowEvent>(
    c,
    // the project is named even for one run: an event whose project was changed behind the engine's back is then
    // missing from its run (a break verify reports) even for a caller whose role is not held to one project
    { runId, projectId },
    columns,
    (rows) => onPage(rows.map((r) => rowToEvent(r, runId ?? r.run_id, projectId))),
    pageSize,
    eventTypes(),
  );
}

/** What folding a log needs of each event: no chain, no time (replay recomputes neither). */
export type FoldedEvent = Pick<RecordedEvent, 'seq' | 'type' | 'version' | 'data'>;

/**
 * One run's events as `streamEvents` reads them, but only the columns a fold
 * needs: replay reads no ids, hashes or timestamps, and turns no timestamp into text.
 */
export async function streamFoldedEvents(c: PoolClient, runId: string, onPage: (events: FoldedEvent[]) => void): Promise<number> {
  return streamRows<FoldedEvent>(c, { runId }, 'seq, type, version, payload AS data', onPage);
}

/*
 * 1,000 rows a page: with the next page asked for while this one is worked on,
 * larger pages were no faster (npm run bench:replay) and live longer, so more
 * of them outlive a young-generation collection and wait for a full one.
 */
const PAGE_SIZE = 1_000;

async function streamRows<R>(
  c: PoolClient,
  which: { runId?: string; projectId?: string },
  columns: string,
  onPage: (rows: R[]) => void | Promise<void>,
  pageSize = PAGE_SIZE,
  types?: ReturnType<typeof eventTypes>,
): Promise<number> {
  // ids are checked to be UUIDs, so they are safe to inline (DECLARE takes no parameters)
  const { runId, projectId } = which;
  if (runId) assertProjectId(runId);
  if (projectId) assertProjectId(projectId);
  const where = runId ? `run_id = '${runId}'${projectId ? ` AND project_id = '${projectId}'` : ''} ORDER BY seq` : `project_id = '${projectId}' ORDER BY run_id, seq`;
  await c.query(`DECLARE meshhook_log NO SCROLL CURSOR FOR SELECT ${columns} FROM run_events WHERE ${where}`);
  const fetch = (): Promise<{ rows: R[] }> => c.query({ text: `FETCH ${pageSize} FROM meshhook_log`, types }) as unknown as Promise<{ rows: R[] }>;
  let read = 0;
  const ask = (): Promise<{ rows: R[] }> => {
    const p = fetch();
    // awaited below; marked handled so a failure while the last page is worked on is not an unhandled rejection
    p.catch(() => undefined);
    return p;
  };
  let next = ask();
  for (;;) {
    const { rows } = await next;
    const more = rows.length === pageSize;
    // ask for the next page before working on this one: Postgres prepares it meanwhile
    if (more) next = ask();
    read += rows.length;
    await onPage(rows);
    if (!more) break;
  }
  await c.query('CLOSE meshhook_log');
  return read;
}

/** A run's events; an empty list when the project holds no such run. */
export async function loadEvents(db: Pool, projectId: string, runId: string): Promise<RecordedEvent[]> {
  return inProject(db, projectId, (c) => readEvents(c, runId));
}

export async function loadRun(db: Pool, projectId: string, runId: string): Promise<LoadedRun | null> {
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
const payloadOf = (e: RecordedEvent): string => payloadText.get(e) ?? canonicalJson(e.data);

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

/** The run's head as stored with its view: the last event, signed (null without a chain key). */
export interface SignedHead {
  hash: string;
  mac: string | null;
}

export function headOf(projectId: string, runId: string, seq: number, hash: string, chain: ChainKey | null): SignedHead {
  return { hash, mac: chain ? signHead(chain, { projectId, runId, seq, hash }) : null };
}

async function writeView(client: PoolClient, state: RunState, lastSeq: number, expectedSeq: number | null, head: SignedHead): Promise<number> {
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

function prepared(ctx: BatchContext, recorded: RecordedEvent[], state: RunState, lastSeq: number, head: SignedHead): PreparedBatch {
  return { projectId: ctx.projectId, runId: ctx.runId, expectedSeq: ctx.expectedSeq, columns: [...eventColumns(recorded), ...viewColumns(toRunView(state, lastSeq), head)] };
}

/** One batch, one call, its own transaction (migrations/004_commit_batch.sql). Throws ConcurrencyError when another writer won. */
export async function appendBatch(db: Pool, b: PreparedBatch): Promise<void> {
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
export async function commitBatch(db: Pool, ctx: BatchContext, events: RunEvent[]): Promise<Committed> {
  const recordedAt = ctx.recordedAt.toISOString();
  const recorded = numberEvents(ctx.runId, ctx.projectId, ctx.expectedSeq, ctx.prevHash, events, recordedAt, ctx.chain);
  const state = ctx.stateAfter ?? events.reduce(evolve, ctx.stateBefore);
  const lastSeq = ctx.expectedSeq + events.length;
  const fp = ctx.failpoints;
  const hit = { runId: ctx.runId, step: ctx.step, events: events.map((e) => e.type) };

  if (fp.armed) await fp.hit({ name: 'before-append', ...hit });
  const last = recorded[recorded.length - 1];
  const head = headOf(ctx.projectId, ctx.runId, last.seq, last.hash, ctx.chain);
  if (!fp.armed) {
    // one round trip: the batch and the view in one call, its own transaction (migrations/004_commit_batch.sql).
    // With failpoints armed the statements below run one by one instead, so a failpoint can stop a worker
    // between them, inside the open transaction, as the crash-point scenarios need.
    const batch = prepared(ctx, recorded, state, lastSeq, head);
    await (ctx.group ? ctx.group.append(batch) : appendBatch(db, batch));
    return { recorded, state, lastSeq, lastHash: last.hash };
  }
  const client = await db.connect();
  let broken = false;
  // a connection cut while checked out emits 'error' on the client; unhandled, it would end the worker process
  const onLost = (): void => {
    broken = true;
  };
  client.on('error', onLost);
  try {
    await client.query(beginInProject(ctx.projectId));
    await insertEvents(client, recorded);
    if (fp.armed) await fp.hit({ name: 'before-view-update', ...hit });
    const updated = await writeView(client, state, lastSeq, ctx.expectedSeq, head);
    if (updated !== 1) throw new ConcurrencyError(ctx.runId, ctx.expectedSeq);
    if (fp.armed) await fp.hit({ name: 'scheduling-next', ...hit });
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    if (isRetryableConflict(e)) throw new ConcurrencyError(ctx.runId, ctx.expectedSeq);
    throw e;
  } finally {
    // a connection that failed mid-transaction is not given back to the pool
    client.off('error', onLost);
    client.release(broken ? true : undefined);
  }
  if (fp.armed) await fp.hit({ name: 'after-append', ...hit });
  return { recorded, state, lastSeq, lastHash: last.hash };
}

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
  /** before-start-run and after-start-run, where the intake can be made to fail on purpose */
  failpoints?: Failpoints;
}

export interface StartedRun {
  runId: string;
  duplicate: boolean;
}

/**
 * Record a delivery and its run's first event in one transaction. A delivery
 * id seen before returns the run it started and writes nothing.
 */
export async function startRun(db: Pool, s: StartRunInput): Promise<StartedRun> {
  assertProjectId(s.projectId);
  const bodySha = sha256(String(s.rawBody));
  const decider = createDecider(s.version.definition);
  const at = s.at.toISOString();
  const events = decider.decide(
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
      },
    },
    initialState(),
  );
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
    if (r.duplicate) return sameDelivery({ runId: r.run_id, bodySha: r.body_sha256 }, s.deliveryId, bodySha);
    if (fp?.armed) await fp.hit({ name: 'after-start-run', ...hit });
    return { runId: s.runId, duplicate: false };
  } catch (e) {
    if ((e as { code?: string }).code !== '40001') throw e;
    // a concurrent re-delivery won the race: keep its run
    const winner = await inProject(db, s.projectId, (c) => findDelivery(c, s.projectId, s.version.workflowId, s.deliveryId));
    return sameDelivery(winner!, s.deliveryId, bodySha);
  }
}

/** The run view's columns after a batch, as meshhook_commit_batch and meshhook_start_run take them. */
function viewColumns(v: RunView, head: SignedHead): unknown[] {
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

/** The columns of a batch's events, as meshhook_commit_batch and meshhook_start_run take them. */
function eventColumns(recorded: RecordedEvent[]): unknown[] {
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

/** Every project, one at a time: the engine never sees two projects in one transaction. */
export async function listProjects(db: Pool): Promise<Array<{ id: string; slug: string }>> {
  return (await db.query<{ id: string; slug: string }>('SELECT id, slug FROM meshhook_projects()')).rows;
}
