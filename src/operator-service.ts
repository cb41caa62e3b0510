import type { Pool } from 'pg';
import { createDecider, DecisionError, RunState } from './domain/decider';
import type { OperatorAction, OperatorActed, RecordedEvent } from './domain/events';
import { Failpoints } from './faults/failpoints';
import type { HeadJournal } from './integrity/checkpoints';
import type { Keyring } from './security/keyring';
import { loadVersion, NotFoundError, TamperedDefinitionError } from './store/registry';
import { commitBatch, Committed, ConcurrencyError, takeAppendTurn } from './store/log-append';
import { inProject } from './db/scope';
import { assertIntact, loadRun, TamperedRunError } from './store/run-load';
import { Clock, systemClock } from './worker/clock';

/*
 * Operator actions: cancel, pause, unpause, retry, resume, skip, patch. Each
 * is a command through the decider that appends an OperatorActed event (who,
 * when, why, what) and its consequences, never an UPDATE; the run then
 * replays and verifies like any other. An action that makes no sense for the
 * run's state is refused with the decider's reason and changes nothing.
 *
 * An action races workers safely: both append at the sequence they expect,
 * so one of them loses and tries again on the new state. If the action no
 * longer makes sense then (the run finished meanwhile), it is refused.
 */

export interface OperatorRequest {
  action: OperatorAction;
  /** who acts: a name or an e-mail address */
  by: string;
  /** why, in the operator's words */
  reason: string;
  step?: string;
  output?: unknown;
  patch?: unknown;
}

export class OperatorActionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OperatorActionError';
  }
}

export const OPERATOR_ACTIONS: readonly OperatorAction[] = ['cancel', 'pause', 'unpause', 'retry', 'resume', 'skip', 'patch'];
const MAX_BY = 100;
const MAX_REASON = 500;
const MAX_JSON_BYTES = 64 * 1024;
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/** Why a request cannot be an operator action at all (before any run is read), or null. */
export function checkRequest(req: OperatorRequest): string | null {
  if (!OPERATOR_ACTIONS.includes(req.action)) return `"${String(req.action).slice(0, 40)}" is not an operator action (${OPERATOR_ACTIONS.join(', ')})`;
  if (typeof req.by !== 'string' || !req.by.trim() || req.by.length > MAX_BY || CONTROL.test(req.by)) {
    return `say who acts: 1 to ${MAX_BY} characters without control characters`;
  }
  if (typeof req.reason !== 'string' || !req.reason.trim() || req.reason.length > MAX_REASON || CONTROL.test(req.reason)) {
    return `give a reason: 1 to ${MAX_REASON} characters without control characters or line breaks`;
  }
  if (req.step !== undefined && !/^[a-z][a-z0-9_-]{0,62}$/.test(req.step)) return 'a step is named by its id (lower-case letters, digits, - and _)';
  for (const [name, value] of [['output', req.output], ['patch', req.patch]] as const) {
    if (value === undefined) continue;
    const text = JSON.stringify(value);
    if (text === undefined || Buffer.byteLength(text) > MAX_JSON_BYTES) return `the ${name} must be JSON of at most ${MAX_JSON_BYTES / 1024} KiB`;
    if (/\\u0000/.test(text)) return `the ${name} contains a NUL character, which cannot be stored`;
  }
  return null;
}

export interface OperatorContext {
  keyring: Keyring;
  clock?: Clock;
  /** attempts when a worker keeps appending first */
  maxRaces?: number;
  /**
   * Where the head an action commits is written outside the database, as workers write theirs: without it,
   * someone with the database could put back the signed head a worker wrote just before the action, and the
   * action would vanish from the log without a trace any checkpoint could show.
   */
  journal?: HeadJournal | null;
}

export interface ActionResult {
  runId: string;
  recorded: RecordedEvent[];
  state: RunState;
  /** the action is committed, but its head could not be written to the journal: why */
  journalProblem?: string;
}

/** Apply an operator action to a run of a project. Throws NotFoundError, OperatorActionError. */
export async function operate(db: Pool, ctx: OperatorContext, projectId: string, runId: string, req: OperatorRequest): Promise<ActionResult> {
  const invalid = checkRequest(req);
  if (invalid) throw new OperatorActionError(invalid);
  const clock = ctx.clock ?? systemClock;
  const races = ctx.maxRaces ?? 10;
  for (let attempt = 1; ; attempt++) {
    let committed: Committed;
    let at: Date;
    try {
      // the run's turn to append, held from reading it to committing the action: a worker's batch in flight
      // is waited for, and the worker's next one waits for the action, then finds the run moved on and
      // decides again on it (migrations/017_appends_take_turns.sql). Without it a worker racing through
      // quick steps could win every round, and the action come too late.
      ({ committed, at } = await inProject(db, projectId, async (c) => {
        await takeAppendTurn(c, runId);
        const run = await loadRun(c, projectId, runId);
        if (!run) throw new NotFoundError(`run ${runId} not found`);
        try {
          assertIntact(run, ctx.keyring.chainKeys());
        } catch (e) {
          if (e instanceof TamperedRunError) throw new OperatorActionError(e.message);
          throw e;
        }
        const version = await loadVersion(db, projectId, run.workflowId, run.version, { keys: ctx.keyring.chainKeys() });
        if (run.state.definitionHash && run.state.definitionHash !== version.definitionHash) throw new TamperedDefinitionError(run.workflowId, run.version);
        const decider = createDecider(version.definition);
        const now = clock.now();
        const data: OperatorActed['data'] = { action: req.action, by: req.by.trim(), reason: req.reason.trim(), at: now.toISOString() };
        if (req.step !== undefined) data.step = req.step;
        if (req.output !== undefined) data.output = req.output;
        if (req.patch !== undefined) data.patch = req.patch;
        let events;
        try {
          events = decider.decide({ type: 'Operate', data }, run.state);
        } catch (e) {
          if (e instanceof DecisionError) throw new OperatorActionError(e.message);
          throw e;
        }
        const batch = { runId, projectId, expectedSeq: run.lastSeq, prevHash: run.lastHash, stateBefore: run.state, recordedAt: now, chain: ctx.keyring.chainKey(), failpoints: Failpoints.none(), step: req.step ?? null };
        return { committed: await commitBatch(db, batch, events, c), at: now };
      }));
    } catch (e) {
      // another writer still got in first (one that takes no turn, or a deadlock Postgres broke): decide again
      if ((e instanceof ConcurrencyError || (e as { code?: string }).code === '40P01') && attempt < races) continue;
      throw e;
    }
    // a run retried, resumed or unpaused is due now: wake the workers rather than wait for their poll
    // (best effort: the action is committed, and a worker finds the run at its next poll anyway)
    await db.query(`SELECT pg_notify('meshhook_due', '')`).catch(() => undefined);
    const result: ActionResult = { runId, recorded: committed.recorded, state: committed.state };
    // before the operator is told the action is recorded, its head is outside the database too
    await ctx.journal?.write({ projectId, runId, seq: committed.lastSeq, hash: committed.lastHash }, at).catch((e: Error) => (result.journalProblem = e.message));
    return result;
  }
}

export interface AuditEntry {
  seq: number;
  at: string;
  what: string;
  by: string | null;
  reason: string | null;
  step: string | null;
  detail: unknown;
}

/**
 * A run's audit trail, in order: its start, every operator action with who,
 * when, why and what it led to, and how it finished (each time, when an
 * operator sent it back to work).
 */
export function auditTrail(events: readonly RecordedEvent[]): AuditEntry[] {
  const out: AuditEntry[] = [];
  for (const [i, e] of events.entries()) {
    const d = e.data as Record<string, any>;
    if (e.type === 'RunStarted') {
      out.push({ seq: e.seq, at: d.at, what: 'run started', by: null, reason: null, step: null, detail: { delivery: d.deliveryId, version: d.version } });
    } else if (e.type === 'OperatorActed') {
      const next = events[i + 1];
      const led = next && next.type !== 'OperatorActed' && next.type !== 'StepStarted' ? next.type : null;
      out.push({
        seq: e.seq,
        at: d.at,
        what: d.action,
        by: d.by,
        reason: d.reason,
        step: d.step ?? null,
        detail: { ...(d.output !== undefined ? { output: d.output } : {}), ...(d.patch !== undefined ? { patch: d.patch } : {}), ...(led ? { then: led } : {}) },
      });
    } else if (e.type === 'RunFinished') {
      out.push({ seq: e.seq, at: e.recordedAt, what: `run ${d.status}`, by: null, reason: d.reason ?? null, step: null, detail: null });
    }
  }
  return out;
}
