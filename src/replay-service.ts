import type { Pool, PoolClient } from 'pg';
import { inProject } from './db/scope';
import { EngineFlags, evolveInPlace, initialState, RunState } from './domain/decider';
import { definitionHash, WorkflowDefinition } from './domain/definition';
import type { RecordedEvent } from './domain/events';
import { ChainKeys, checkHeadSignature } from './domain/hash-chain';
import { LogVerifier, replayLog, toDomainEvent, VerifyReport } from './domain/replay';
import { compareViews, RunView, toRunView } from './domain/run-view';
import { Checkpoint, CheckpointIndex, checkpointProblem } from './integrity/checkpoints';
import { loadVersion, NotFoundError, readVersion } from './store/registry';
import { exactJsonTypes, loadEvents, rangeCondition, readEvents, RunRange, streamEvents, streamFoldedEvents } from './store/log-read';
import { headOf, viewFromRow, writeRebuiltView } from './store/run-views';

/*
 * Replay, verify and rebuild runs straight from the run log in Postgres.
 *
 * verify answers "is this run's log genuine and does it still replay?": the
 * log is not empty; every link of its hash chain holds (signed links need the
 * keyring); the run's signed head is genuine and is the log's last event (a
 * log cut short no longer reaches it); the furthest checkpoint taken outside
 * the database is still in the log (a rollback of both tables no longer
 * reaches it); every decision re-made from the log's inputs matches it,
 * against the version the run was pinned to; and the stored run view is what
 * the log folds to. rebuild repairs only the last of these, and only for a
 * run that passes all the others.
 */

export interface StoredRunView extends RunView {
  projectId: string;
  workflowId: string;
}

interface StoredRow {
  view: StoredRunView;
  headHash: string | null;
  headMac: string | null;
}

async function readStored(c: PoolClient, projectId: string, runId: string, lock = false): Promise<StoredRow | null> {
  const { rows } = await c.query({
    text: `SELECT r.*, p.slug AS project_slug, w.slug AS workflow_slug FROM runs r
     JOIN projects p ON p.id = r.project_id JOIN workflows w ON w.id = r.workflow_id
     WHERE r.id = $1 AND r.project_id = $2 ${lock ? 'FOR UPDATE OF r' : ''}`,
    values: [runId, projectId],
    types: exactJsonTypes(),
  });
  const r = rows[0];
  if (!r) return null;
  return {
    view: { ...viewFromRow(r, r.project_slug, r.workflow_slug), projectId: r.project_id, workflowId: r.workflow_id },
    headHash: r.head_hash,
    headMac: r.head_mac,
  };
}

/** A run's stored view, or null when the project holds no such run (another project's run is "not found" too). */
export async function readRunView(db: Pool, projectId: string, runId: string): Promise<StoredRunView | null> {
  return (await inProject(db, projectId, (c) => readStored(c, projectId, runId)))?.view ?? null;
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

/**
 * Replay a run straight from Postgres without holding its log: the events
 * stream through a cursor (in one snapshot) and fold in place, so memory
 * stays flat however long the run is. What `replayRun` gives, less the events.
 */
export async function replayRunState(db: Pool, projectId: string, runId: string): Promise<Omit<ReplayResult, 'events'> & { eventCount: number }> {
  const folded = await inProject(
    db,
    projectId,
    async (c) => {
      if (!(await readStored(c, projectId, runId))) return null;
      const state = initialState();
      const eventCount = await streamFoldedEvents(c, runId, (page) => {
        for (const e of page) evolveInPlace(state, toDomainEvent(e));
      });
      return { state, eventCount };
    },
    { snapshot: true },
  );
  if (!folded) throw new NotFoundError(`run ${runId} not found`);
  return { ...folded, view: toRunView(folded.state, folded.eventCount) };
}

export interface RunVerification extends VerifyReport {
  /** the log holds no event at all */
  empty: boolean;
  /** what is wrong with the run's signed head, or null when it is genuine and is the log's last event */
  headProblem: string | null;
  /** what a checkpoint taken outside the database shows is missing, or null */
  checkpointProblem: string | null;
  /** the stored run view equals the view replayed from the log */
  viewMatches: boolean;
  viewDifference: string | null;
  /** why the published version the run is pinned to is not as the engine published it (unsigned, edited), or null */
  versionProblem: string | null;
  /** the run has no signed head and was let through only because unsigned runs were allowed */
  unsignedAccepted: boolean;
  /**
   * what is wrong with the record of the delivery that started the run (gone, or naming another run), or null:
   * that record is what keeps a delivery sent again from starting a second run
   */
  deliveryProblem: string | null;
  /** the SHA-256 of the webhook's bytes as the run's signed first event names it (null: it names none) */
  bodySha256: string | null;
}

export interface VerifyRunOptions {
  /** the chain keys (keyring.chainKeys()); without them a signed log cannot be checked and fails */
  keys?: ChainKeys | null;
  /** decide with these flags instead of the ones the run recorded (a what-if) */
  flags?: EngineFlags;
  /** replay against this definition instead of the pinned version (a what-if) */
  definition?: WorkflowDefinition;
  checkpoints?: CheckpointIndex | null;
  /** accept a run with no signed head (written by an engine before 0.2) */
  allowUnsignedHead?: boolean;
}

/**
 * Everything verify checks, fed the log one event at a time: it holds the
 * run's state, its last event and the event a checkpoint names, never the
 * log, so a run of any length is judged in flat memory.
 */
class RunJudge {
  private readonly verifier: LogVerifier;
  private readonly checkpoint: Checkpoint | null;
  private count = 0;
  private last: RecordedEvent | null = null;
  private atCheckpoint: RecordedEvent | null = null;
  private bodySha256: unknown = null;

  constructor(
    readonly runId: string,
    private readonly stored: StoredRow,
    definition: WorkflowDefinition | null,
    private readonly opts: VerifyRunOptions,
    private readonly whatIf: boolean,
    definitionHash?: string,
    private readonly versionProblem: string | null = null,
  ) {
    this.verifier = new LogVerifier(runId, definition, { flags: opts.flags, keys: opts.keys ?? null, definitionHash });
    this.checkpoint = opts.checkpoints?.of(runId) ?? null;
  }

  push(e: RecordedEvent): void {
    this.verifier.push(e);
    if (e.seq === 1 && e.type === 'RunStarted') this.bodySha256 = (e.data as { bodySha256?: unknown }).bodySha256 ?? null;
    this.count++;
    this.last = e;
    if (this.count === this.checkpoint?.seq) this.atCheckpoint = e;
  }

  finish(): RunVerification {
    const { runId, stored, opts, last } = this;
    const report = this.verifier.finish();
    const empty = last === null;
    let headProblem: string | null = null;
    const signedRun = report.state.semantics >= 2;
    const headChecked = last !== null && (!!stored.headMac || signedRun || !opts.allowUnsignedHead);
    if (headChecked) {
      const head = { projectId: stored.view.projectId, runId, seq: stored.view.lastSeq, hash: stored.headHash ?? '' };
      headProblem = opts.keys ? checkHeadSignature(opts.keys, head, stored.headMac) : 'the keyring is needed to check its signed head';
      if (!headProblem && (stored.view.lastSeq !== last.seq || stored.headHash !== last.hash)) {
        headProblem =
          stored.view.lastSeq > last.seq
            ? `its signed head is event ${stored.view.lastSeq}, but the log ends at event ${last.seq}: events ${last.seq + 1}-${stored.view.lastSeq} are missing`
            : `its signed head is event ${stored.view.lastSeq} (${(stored.headHash ?? '').slice(0, 12)}), but the log's last event is ${last.seq} (${last.hash.slice(0, 12)})`;
      }
    }
    const cpProblem = this.checkpoint ? checkpointProblem(this.checkpoint, this.atCheckpoint, this.count) : null;
    const replayed = empty ? null : toRunView(report.state, this.count);
    const viewDifference = replayed ? compareViews(stored.view, replayed) : 'the log is empty, so no view can be replayed';
    // a definition handed in is a deliberate what-if; the stored one must be the one the run was pinned to
    const pinnedIntact = this.whatIf || !report.definitionChanged;
    const versionProblem = this.whatIf ? null : this.versionProblem;
    // written out rather than spread: verify --all makes one per run, and the spread took V8's slow path
    return {
      runId: report.runId,
      eventCount: report.eventCount,
      chainBreak: report.chainBreak,
      divergence: report.divergence,
      definitionChanged: report.definitionChanged,
      state: report.state,
      ok: report.ok && !empty && !headProblem && !cpProblem && !viewDifference && pinnedIntact && !versionProblem,
      empty,
      headProblem,
      checkpointProblem: cpProblem,
      viewMatches: !viewDifference,
      viewDifference,
      versionProblem,
      unsignedAccepted: last !== null && !headChecked,
      deliveryProblem: null,
      bodySha256: typeof this.bodySha256 === 'string' ? this.bodySha256 : null,
    };
  }
}

/**
 * The run's verification with what its delivery record says: `recorded` is the run the deliveries table holds
 * for the delivery id the run's signed first event names (undefined: no such record). Runs without a delivery
 * id (written before they were recorded) are not judged on it.
 */
function withDelivery(v: RunVerification, recorded: { runId: string; bodySha: string } | undefined): RunVerification {
  const id = v.state.deliveryId;
  if (!id || v.empty) return v;
  const deliveryProblem =
    recorded === undefined
      ? `the record of delivery "${id}", which started it, is gone: deleted outside the engine (the intake still finds the run by its first event, so the same delivery sent again starts no second run)`
      : recorded.runId !== v.runId
        ? `delivery "${id}", which started it, is recorded as run ${recorded.runId}'s: one delivery started two runs`
        : v.bodySha256 !== null && recorded.bodySha !== v.bodySha256
          ? `the record of delivery "${id}" names other bytes than the run's signed first event: the same delivery sent again would be refused as an id reused for another body`
          : null;
  return deliveryProblem ? { ...v, deliveryProblem, ok: false } : v;
}

const deliveryKey = (workflowId: string, deliveryId: string): string => `${workflowId}\u0000${deliveryId}`;

/**
 * A delivery's record that no run's first event names: written outside the engine. The intake answers a
 * webhook sent with that id as a re-delivery of the run it points at, so the webhook would never run.
 */
export interface StrayDelivery {
  workflowId: string;
  workflow: string;
  deliveryId: string;
  runId: string;
}

/**
 * The version a run is pinned to, as verify reads it: a tampered one with what is wrong with it, and a deleted
 * one as no definition (the log is then checked link by link and folded, not decided again) with why.
 */
async function readPinned(
  c: PoolClient,
  workflowId: string,
  version: number,
  opts: VerifyRunOptions,
): Promise<{ definition: WorkflowDefinition | null; tampered: string | null }> {
  try {
    return await readVersion(c, workflowId, version, { allowTampered: true, keys: opts.keys ?? undefined });
  } catch (e) {
    if (!(e instanceof NotFoundError)) throw e;
    return { definition: null, tampered: 'is gone (deleted outside the engine), so its decisions cannot be made again' };
  }
}

/**
 * What is wrong with the name the run's workflow goes by, or null: the signed definition names its workflow,
 * so a workflow renamed (or two swapped) in the database shows here.
 */
function workflowNameProblem(definition: WorkflowDefinition | null, workflowSlug: string): string | null {
  if (!definition || definition.name === workflowSlug) return null;
  return `was published for workflow "${definition.name}", but the run's workflow is called "${workflowSlug}" in the database (renamed behind the engine's back)`;
}

/** Everything verify checks, from a log already read and the run's stored row. */
function judge(
  runId: string,
  stored: StoredRow,
  events: RecordedEvent[],
  definition: WorkflowDefinition,
  opts: VerifyRunOptions,
  whatIf: boolean,
  versionProblem: string | null = null,
): RunVerification {
  const j = new RunJudge(runId, stored, definition, opts, whatIf, undefined, versionProblem);
  for (const e of events) j.push(e);
  return j.finish();
}

/**
 * Verify one run of a project (see the top of this file for what that covers).
 * The log streams through a cursor, never held whole, in one snapshot: the
 * run's head and every page of its log agree even while a worker appends.
 */
export async function verifyRun(db: Pool, projectId: string, runId: string, opts: VerifyRunOptions = {}): Promise<RunVerification> {
  const verification = await inProject(
    db,
    projectId,
    async (c) => {
      const stored = await readStored(c, projectId, runId);
      if (!stored) return null;
      const version = await readPinned(c, stored.view.workflowId, stored.view.version, opts);
      const tampered = version.tampered ?? workflowNameProblem(version.definition, stored.view.workflow);
      const j = new RunJudge(runId, stored, opts.definition ?? version.definition, opts, opts.definition !== undefined, undefined, tampered);
      await streamEvents(c, { projectId, runId }, (page) => {
        for (const e of page) j.push(e);
      });
      const v = j.finish();
      if (!v.state.deliveryId) return v;
      const { rows } = await c.query<{ run_id: string; body_sha256: string }>('SELECT run_id, body_sha256 FROM deliveries WHERE project_id = $1 AND workflow_id = $2 AND delivery_id = $3', [
        projectId,
        stored.view.workflowId,
        v.state.deliveryId,
      ]);
      return withDelivery(v, rows[0] ? { runId: rows[0].run_id, bodySha: rows[0].body_sha256 } : undefined);
    },
    { snapshot: true },
  );
  if (!verification) throw new NotFoundError(`run ${runId} not found`);
  return verification;
}

export interface VerifiedRun {
  verification: RunVerification;
  events: RecordedEvent[];
  /** the version the run is pinned to */
  definition: WorkflowDefinition;
}

/** A run's log and pinned definition with its verification, read once: what export-history writes. */
export async function readVerifiedRun(db: Pool, projectId: string, runId: string, opts: VerifyRunOptions = {}): Promise<VerifiedRun> {
  return readAndJudge(db, projectId, runId, opts);
}

async function readAndJudge(db: Pool, projectId: string, runId: string, opts: VerifyRunOptions): Promise<VerifiedRun> {
  const read = await inProject(db, projectId, async (c) => {
    const stored = await readStored(c, projectId, runId);
    return stored ? { stored, events: await readEvents(c, projectId, runId) } : null;
  });
  if (!read) throw new NotFoundError(`run ${runId} not found`);
  const version = await loadVersion(db, projectId, read.stored.view.workflowId, read.stored.view.version, { allowTampered: true, keys: opts.keys ?? undefined });
  const definition = opts.definition ?? version.definition;
  const verification = judge(runId, read.stored, read.events, definition, opts, opts.definition !== undefined, version.tampered);
  return { verification, events: read.events, definition };
}

/** One line per problem of a verification, for reports and refusals. */
export function problemsOf(v: RunVerification): string[] {
  const out: string[] = [];
  if (v.empty) out.push('the run has no events');
  if (v.chainBreak) out.push(`hash chain broken at event ${v.chainBreak.seq}: ${v.chainBreak.reason}`);
  if (v.headProblem) out.push(`head: ${v.headProblem}`);
  if (v.checkpointProblem) out.push(`checkpoint: ${v.checkpointProblem}`);
  if (v.divergence) out.push(`replay diverges at event ${v.divergence.seq}: ${v.divergence.reason}`);
  if (v.definitionChanged) out.push('the definition differs from the version the run was pinned to');
  if (v.versionProblem) out.push(`version ${v.state.version ?? '?'}: ${v.versionProblem}`);
  if (!v.empty && v.viewDifference) out.push(`run view differs: ${v.viewDifference}`);
  if (v.deliveryProblem) out.push(`delivery: ${v.deliveryProblem}`);
  return out;
}

/** What verifying a slice of a project's runs found, before the delivery records no run names are worked out. */
export interface RunsVerified {
  runs: number;
  events: number;
  /** bad runs, orphaned logs included */
  bad: number;
  orphans: Array<{ runId: string; events: number }>;
  /** the delivery records (workflow id and delivery id, see deliveryKey) that some run of the slice names */
  named: string[];
  /** the project's delivery records, as the slice's snapshot read them */
  deliveries: DeliveryRecords;
}

/**
 * Verify the runs of a project whose ids fall in `range` (all of them without one), inside the snapshot
 * transaction `c` already opened for the project: the log streamed through a cursor in run order and judged as
 * it passes, so memory holds one run's state and a page of events, whatever the length of the logs. Calls
 * `onRun` with each verification. Slices of one snapshot can be verified side by side (src/integrity/verify-threads.ts).
 */
export async function verifyRunsIn(
  c: PoolClient,
  projectId: string,
  range: RunRange | undefined,
  opts: VerifyRunOptions & { onRun?: (v: RunVerification) => void; pageSize?: number },
): Promise<RunsVerified> {
  // the slugs once, not joined onto every run: a project has one and a handful of workflows
  const projectSlug: string = (await c.query('SELECT slug FROM projects WHERE id = $1', [projectId])).rows[0]?.slug ?? '';
  const workflowSlug = new Map<string, string>(
    (await c.query('SELECT id, slug FROM workflows WHERE project_id = $1', [projectId])).rows.map((w) => [w.id, w.slug]),
  );
  const { rows } = await c.query({
    text: `SELECT id, workflow_id, version, status, current_step, outputs, attempts, result, wake_at, last_seq, started_at, finished_at, head_hash, head_mac
     FROM runs WHERE project_id = $1${rangeCondition('id', range)} ORDER BY id`,
    values: [projectId],
    types: exactJsonTypes(),
  });
  const stored = rows.map((r): StoredRow => {
    const view = viewFromRow(r, projectSlug, workflowSlug.get(r.workflow_id) ?? '');
    return { view: Object.assign(view, { projectId, workflowId: r.workflow_id }), headHash: r.head_hash, headMac: r.head_mac };
  });
  // each version read and hashed once, however many runs it has
  const definitions = new Map<string, { definition: WorkflowDefinition | null; hash: string | undefined; tampered: string | null }>();
  for (const s of stored) {
    const key = `${s.view.workflowId}:${s.view.version}`;
    if (definitions.has(key)) continue;
    const { definition, tampered } = await readPinned(c, s.view.workflowId, s.view.version, opts);
    definitions.set(key, { definition, hash: definition ? definitionHash(definition) : undefined, tampered: tampered ?? workflowNameProblem(definition, s.view.workflow) });
  }
  // which run each delivery started, as the table that refuses a second start records it (all of the project's:
  // a run of this slice may name a record that names a run of another)
  const deliveries = await readDeliveries(c, projectId);
  const workflowOf = new Map(stored.map((s) => [s.view.runId, s.view.workflowId]));
  // the records some run's first event names; any other was written outside the engine
  const named: string[] = [];
  let bad = 0;
  let i = 0;
  let open: RunJudge | null = null;
  const close = (): void => {
    if (!open) return;
    const judged = open.finish();
    const key = judged.state.deliveryId ? deliveryKey(workflowOf.get(judged.runId)!, judged.state.deliveryId) : null;
    if (key && deliveries.get(key)?.runId === judged.runId) named.push(key);
    const v = key ? withDelivery(judged, deliveries.get(key)) : judged;
    if (!v.ok) bad++;
    opts.onRun?.(v);
    open = null;
  };
  // runs and events come in the same order (by run id): a merge, each run judged as its last event passes
  const advanceTo = (runId: string | null): void => {
    while (i < stored.length && (runId === null || stored[i].view.runId <= runId)) {
      if (open) close();
      const s = stored[i++];
      const version = definitions.get(`${s.view.workflowId}:${s.view.version}`)!;
      open = new RunJudge(s.view.runId, s, version.definition, opts, false, version.hash, version.tampered);
      if (s.view.runId === runId) return;
      close(); // a run with no events at all
    }
  };
  let current: string | null = null;
  // events whose run has no row any more: someone deleted the run behind the engine's back, and its log remains
  const orphans: Array<{ runId: string; events: number }> = [];
  const events = await streamEvents(
    c,
    { projectId, range },
    (page) => {
      for (const e of page) {
        if (e.runId !== current) {
          current = e.runId;
          if (open) close();
          advanceTo(e.runId);
        }
        if (open && (open as RunJudge).runId === e.runId) (open as RunJudge).push(e);
        else if (orphans.at(-1)?.runId === e.runId) orphans.at(-1)!.events++;
        else orphans.push({ runId: e.runId, events: 1 });
      }
    },
    opts.pageSize,
  );
  if (open) close();
  advanceTo(null);
  return { runs: stored.length, events, bad: bad + orphans.length, orphans, named, deliveries };
}

export type DeliveryRecords = Map<string, { runId: string; bodySha: string }>;

async function readDeliveries(c: PoolClient, projectId: string): Promise<DeliveryRecords> {
  const deliveries: DeliveryRecords = new Map();
  for (const d of (await c.query('SELECT workflow_id, delivery_id, run_id, body_sha256 FROM deliveries WHERE project_id = $1', [projectId])).rows)
    deliveries.set(deliveryKey(d.workflow_id, d.delivery_id), { runId: d.run_id, bodySha: d.body_sha256 });
  return deliveries;
}

/** The delivery records of a project that no run names (given what every slice found): written outside the engine. */
export async function strayDeliveriesOf(c: PoolClient, projectId: string, deliveries: DeliveryRecords, named: Iterable<string>): Promise<StrayDelivery[]> {
  const workflowSlug = new Map<string, string>(
    (await c.query('SELECT id, slug FROM workflows WHERE project_id = $1', [projectId])).rows.map((w) => [w.id, w.slug]),
  );
  const isNamed = new Set(named);
  const strays: StrayDelivery[] = [];
  for (const [key, { runId }] of deliveries) {
    if (isNamed.has(key)) continue;
    const [workflowId, deliveryId] = key.split('\u0000');
    strays.push({ workflowId, workflow: workflowSlug.get(workflowId) ?? workflowId, deliveryId, runId });
  }
  return strays;
}

/**
 * Verify every run of a project in one snapshot (see verifyRunsIn), then the delivery records no run names.
 * Returns the counts.
 */
export async function verifyProject(
  db: Pool,
  projectId: string,
  opts: VerifyRunOptions & { onRun?: (v: RunVerification) => void; pageSize?: number },
): Promise<{ runs: number; events: number; bad: number; orphans: Array<{ runId: string; events: number }>; strayDeliveries: StrayDelivery[] }> {
  return inProject(
    db,
    projectId,
    async (c) => {
      const r = await verifyRunsIn(c, projectId, undefined, opts);
      return { runs: r.runs, events: r.events, bad: r.bad, orphans: r.orphans, strayDeliveries: await strayDeliveriesOf(c, projectId, r.deliveries, r.named) };
    },
    { snapshot: true },
  );
}

export interface RebuildResult {
  runs: number;
  repaired: string[];
  /** runs whose log is not genuine or cannot be folded: reported, their views left as they were */
  refused: Array<{ runId: string; reason: string }>;
}

/**
 * Recompute a project's run views from their logs and repair the ones that
 * differ, but only for runs whose logs pass verification: a tampered log is
 * reported and refused, never used to repair. Without `force`, a repair never
 * lowers a run's last event, and moves a finished run back to unfinished only
 * when the run's signed head vouches that its log is whole.
 */
export async function rebuildViews(
  db: Pool,
  opts: VerifyRunOptions & { projectId: string; runId?: string; force?: boolean },
): Promise<RebuildResult> {
  const { projectId } = opts;
  const ids = await inProject(db, projectId, async (c) =>
    (await c.query(`SELECT id FROM runs WHERE project_id = $1 AND ($2::uuid IS NULL OR id = $2) ORDER BY created_at`, [projectId, opts.runId ?? null])).rows.map(
      (r) => r.id as string,
    ),
  );
  const repaired: string[] = [];
  const refused: RebuildResult['refused'] = [];
  const FINISHED = ['succeeded', 'failed', 'canceled'];
  for (const id of ids) {
    // the view row is locked so a worker's append cannot interleave with the rebuild
    await inProject(db, projectId, async (client) => {
      const stored = (await readStored(client, projectId, id, true))!;
      const events = await readEvents(client, projectId, id);
      let v: RunVerification;
      try {
        const definition = (await loadVersion(db, projectId, stored.view.workflowId, stored.view.version, { allowTampered: true })).definition;
        v = judge(id, stored, events, definition, opts, false);
      } catch (e) {
        refused.push({ runId: id, reason: (e as Error).message });
        return;
      }
      if (v.ok) return;
      // only the view may be wrong; anything else means the log itself cannot be trusted
      const problems = problemsOf({ ...v, viewDifference: null });
      if (problems.length > 0) {
        refused.push({ runId: id, reason: problems.join('; ') });
        return;
      }
      const replayed = toRunView(v.state, events.length);
      // A signed head that names the log's last event (checked by judge above) vouches that the log holds all
      // the engine committed: a finished view over an unfinished log is then the view's own forgery, and the
      // log's state is put back without --force (a waiting run would otherwise never be picked up again). Only a
      // head accepted unsigned leaves the log's completeness in doubt, and the move back to --force.
      if (!opts.force && v.unsignedAccepted && FINISHED.includes(stored.view.status) && !FINISHED.includes(replayed.status)) {
        refused.push({ runId: id, reason: `it would move a ${stored.view.status} run back to ${replayed.status} (use --force if that is what the log says)` });
        return;
      }
      if (!opts.force && stored.view.lastSeq > events.length) {
        refused.push({ runId: id, reason: `it would lower the run's last event from ${stored.view.lastSeq} to ${events.length} (use --force)` });
        return;
      }
      const last = events[events.length - 1];
      await writeRebuiltView(client, v.state, events.length, { hash: last.hash, mac: stored.headMac });
      repaired.push(id);
    });
  }
  return { runs: ids.length, repaired, refused };
}

export { compareViews, headOf };
