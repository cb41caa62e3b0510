/*
 * The bench's BASELINE: a state-stored executor with no replay machinery.
 *
 * It does the same work as the engine's Worker (src/worker/worker.ts) for the
 * same workflows, so the bench can say what event sourcing costs:
 *   - the same pure step logic: createDecider / decide / evolve from src/domain, driven by the
 *     engine's own run loop (src/domain/run-loop.ts), pure steps merged into one batch
 *   - the same claim pattern: a SELECT of due runs, then pg_try_advisory_lock per candidate
 *     on a dedicated lock session, `concurrency` runs in flight, idle polling every `pollMs`
 *   - the same HTTP client (src/worker/http-client.ts) and the same recorded jitter draw
 *   - one transaction per batch, with an optimistic "revision" check like the engine's
 *     expected-sequence check
 * but per batch it only UPDATEs one bench_runs_state row (status, current step,
 * outputs as jsonb, the whole state as a jsonb blob). No run_events insert, no
 * hash chain, no numbering, no recorded inputs kept, no run-view projection, no
 * fold of a log when a run is picked up: the state is read back as it was stored.
 *
 * Bench-only code: nothing in src/ depends on it.
 */
import { randomUUID } from 'node:crypto';
import { Client, ClientConfig, Pool } from 'pg';
import { createDecider, evolve, initialState, RunDecider, RunState } from '../src/domain/decider';
import { driveLoop, runLoop } from '../src/domain/run-loop';
import type { LoadedVersion } from '../src/store/registry';
import { loadVersion } from '../src/store/registry';
import { sendRequest } from '../src/worker/http-client';

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
`;

export class StaleStateError extends Error {
  constructor(public readonly runId: string, public readonly revision: number) {
    super(`run ${runId} moved past revision ${revision}: another writer updated it first`);
    this.name = 'StaleStateError';
  }
}

export interface StateStoredStartInput {
  runId: string;
  projectId: string;
  projectSlug: string;
  workflowSlug: string;
  version: LoadedVersion;
  deliveryId: string;
  input: unknown;
  at: Date;
}

/** Create a run: the same StartRun decision as the engine, stored as one state row. */
export async function startStateStoredRun(db: Pool, s: StateStoredStartInput): Promise<void> {
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
      },
    },
    initialState(),
  );
  const state = events.reduce(evolve, initialState());
  await db.query(
    `INSERT INTO bench_runs_state (id, project_id, workflow_id, version, status, current_step, outputs, state, revision, started_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
    [s.runId, s.projectId, s.version.workflowId, s.version.version, state.status, state.cursor, JSON.stringify(state.outputs), JSON.stringify(state), state.eventCount, at],
  );
}

export interface StateStoredWorkerOptions {
  pool: Pool;
  lockConnection: ClientConfig;
  id?: string;
  pollMs?: number;
  concurrency?: number;
  random?: () => number;
  log?: (entry: Record<string, unknown>) => void;
}

export interface StateStoredStats {
  batches: number;
  runsFinished: number;
  conflicts: number;
  errors: number;
}

// not the engine's class: the two executors never share advisory locks
const LOCK_CLASS = 0x4253; // "BS"

/** The engine Worker's loop, claim and advance, minus the event log. */
export class StateStoredWorker {
  readonly id: string;
  readonly stats: StateStoredStats = { batches: 0, runsFinished: 0, conflicts: 0, errors: 0 };
  private readonly pool: Pool;
  private readonly pollMs: number;
  private readonly concurrency: number;
  private readonly random: () => number;
  private readonly log: (entry: Record<string, unknown>) => void;
  private readonly versions = new Map<string, LoadedVersion>();
  private readonly inFlight = new Set<string>();
  private lockClient: Client | null = null;
  private lockOps: Promise<unknown> = Promise.resolve();
  private readonly backoffUntil = new Map<string, { at: number; delayMs: number }>();
  private loop: Promise<void> | null = null;
  private stopping = false;
  private wake: (() => void) | null = null;

  constructor(private readonly opts: StateStoredWorkerOptions) {
    this.id = opts.id ?? `state-${randomUUID().slice(0, 8)}`;
    this.pool = opts.pool;
    this.pollMs = opts.pollMs ?? 100;
    this.concurrency = opts.concurrency ?? 4;
    this.random = opts.random ?? Math.random;
    this.log = opts.log ?? (() => undefined);
  }

  start(): void {
    if (this.loop) return;
    this.stopping = false;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
    this.loop = null;
    const c = this.lockClient;
    this.lockClient = null;
    if (c) await c.end().catch(() => undefined);
  }

  private async run(): Promise<void> {
    const running = new Set<Promise<void>>();
    while (!this.stopping) {
      let claimed = 0;
      try {
        const free = this.concurrency - this.inFlight.size;
        if (free > 0) {
          for (const runId of await this.claim(free)) {
            claimed++;
            const p = this.advance(runId).finally(() => running.delete(p));
            running.add(p);
          }
        }
      } catch (e) {
        this.stats.errors++;
        this.log({ level: 'warn', worker: this.id, msg: 'claim failed', error: (e as Error).message });
      }
      if (claimed === 0 && !this.stopping) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, this.pollMs);
          this.wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.wake = null;
      }
    }
    await Promise.allSettled([...running]);
  }

  private async lock(): Promise<Client> {
    if (this.lockClient) return this.lockClient;
    const c = new Client({ ...this.opts.lockConnection, application_name: `bench-state-lock-${this.id}` });
    c.on('error', () => {
      if (this.lockClient === c) this.lockClient = null;
    });
    await c.connect();
    this.lockClient = c;
    return c;
  }

  private onLock<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.lockOps.then(fn);
    this.lockOps = p.catch(() => undefined);
    return p;
  }

  /** The engine's claim, on the baseline's table. */
  private async claim(max: number): Promise<string[]> {
    const now = new Date();
    const { rows } = await this.pool.query<{ id: string }>(
      `SELECT id FROM bench_runs_state WHERE status IN ('running', 'waiting') AND (wake_at IS NULL OR wake_at <= $1)
       ORDER BY wake_at NULLS FIRST, created_at LIMIT $2`,
      [now, max * 4],
    );
    const got: string[] = [];
    const wall = Date.now();
    const candidates = rows.filter(({ id }) => !this.inFlight.has(id) && (this.backoffUntil.get(id)?.at ?? 0) <= wall);
    const lock = await this.lock();
    for (const { id } of candidates) {
      if (got.length >= max) break;
      const r = await this.onLock(() => lock.query('SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok', [LOCK_CLASS, id]));
      if (r.rows[0].ok) {
        this.inFlight.add(id);
        got.push(id);
      }
    }
    return got;
  }

  private async release(runId: string): Promise<void> {
    this.inFlight.delete(runId);
    const c = this.lockClient;
    if (!c) return;
    await this.onLock(() => c.query('SELECT pg_advisory_unlock($1, hashtext($2))', [LOCK_CLASS, runId])).catch(() => undefined);
  }

  private async deciderFor(projectId: string, workflowId: string, version: number): Promise<RunDecider> {
    const key = `${workflowId}:${version}`;
    let v = this.versions.get(key);
    if (!v) {
      v = await loadVersion(this.pool, projectId, workflowId, version);
      this.versions.set(key, v);
    }
    return createDecider(v.definition);
  }

  /** Drive one run as far as it can go now: the engine's loop, state read and written as a row. */
  private async advance(runId: string): Promise<void> {
    try {
      const { rows } = await this.pool.query<{ project_id: string; workflow_id: string; version: number; state: RunState; revision: number }>(
        'SELECT project_id, workflow_id, version, state, revision FROM bench_runs_state WHERE id = $1',
        [runId],
      );
      if (!rows[0]) return;
      const decider = await this.deciderFor(rows[0].project_id, rows[0].workflow_id, rows[0].version);
      let revision = rows[0].revision;
      // the engine's own loop (src/domain/run-loop.ts), pure steps merged into one batch as the engine does,
      // answered with the state row instead of the log
      await driveLoop(runLoop(decider, rows[0].state, { merge: true, stopping: () => this.stopping }), {
        now: () => new Date(),
        send: ({ request }) => sendRequest(request),
        jitter: () => this.random(),
        due: () => false,
        moment: () => undefined,
        commit: async ({ batch }) => {
          const next = batch.stateAfter;
          await this.commit(runId, revision, next, new Date());
          this.stats.batches++;
          this.backoffUntil.delete(runId);
          revision = next.eventCount;
          if (next.phase === 'done') {
            this.stats.runsFinished++;
            this.log({ level: 'info', worker: this.id, run: runId, msg: `run ${next.status}`, revision });
          }
          return next;
        },
      });
    } catch (e) {
      if (e instanceof StaleStateError) {
        this.stats.conflicts++;
      } else {
        this.stats.errors++;
        const prev = this.backoffUntil.get(runId)?.delayMs ?? 0;
        const delayMs = Math.min(30_000, prev ? prev * 2 : 250);
        this.backoffUntil.set(runId, { at: Date.now() + delayMs, delayMs });
        this.log({ level: 'error', worker: this.id, run: runId, msg: 'run could not advance', error: (e as Error).message });
      }
    } finally {
      await this.release(runId);
    }
  }

  /** One transaction per batch, like commitBatch: here a single UPDATE of the state row. */
  private async commit(runId: string, expectedRevision: number, state: RunState, recordedAt: Date): Promise<void> {
    const client = await this.pool.connect();
    let broken = false;
    const onLost = (): void => {
      broken = true;
    };
    client.on('error', onLost);
    try {
      await client.query('BEGIN');
      const res = await client.query(
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
      if (res.rowCount !== 1) throw new StaleStateError(runId, expectedRevision);
      await client.query('COMMIT');
    } catch (e) {
      await client.query('ROLLBACK').catch(() => {
        broken = true;
      });
      throw e;
    } finally {
      client.off('error', onLost);
      client.release(broken ? true : undefined);
    }
  }
}
