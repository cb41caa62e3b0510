import { inProject } from '../db/scope';
import type { Pool } from 'pg';
import type { RunState } from '../domain/decider';
import type { DecidedBatch } from '../domain/run-loop';
import type { Failpoints } from '../faults/failpoints';
import { checkAgainstCheckpoint, type CheckpointIndex, type HeadJournal } from '../integrity/checkpoints';
import type { Keyring } from '../security/keyring';
import { BatchGroup, commitBatch } from './log-append';
import { assertIntact, loadRun, TamperedRunError } from './run-load';

/** how many runs' last committed heads a repository remembers (the oldest are forgotten first) */
const REMEMBERED_HEADS = 50_000;

/*
 * Where a worker keeps its runs. The Worker (src/worker/worker.ts) claims due
 * runs, drives each through the run loop (src/domain/run-loop.ts) and hands
 * every decided batch to a repository; it writes no table itself. The
 * engine's repository is the signed event log below. The bench's
 * state-stored baseline (bench/state-stored.ts) is another one behind the
 * same interface, so the bench runs one Worker against both and they differ
 * only in how a run is kept. The unit tests' simulator keeps its log in
 * memory behind the same load-and-append contract, synchronously
 * (test/unit/fixtures.ts).
 */

/** A run as a worker holds it between two batches. */
export interface StoredRun {
  readonly runId: string;
  readonly projectId: string;
  readonly workflowId: string;
  readonly version: number;
  readonly state: RunState;
  /** how far the run's record goes (its last event's number): the next append names it and loses to any writer that moved it on */
  readonly seq: number;
}

/** Keeping runs: load one, record a batch after it. Asynchronous for a database, synchronous in memory. */
export interface RunKeeper<R extends StoredRun = StoredRun, Async extends boolean = true> {
  /** The run as last recorded; null when its project holds no such run. Throws TamperedRunError for a run that must not be acted on. */
  load(projectId: string, runId: string): Async extends true ? Promise<R | null> : R | null;
  /** Record a decided batch after `run` and give the run after it. Throws ConcurrencyError when another writer moved the run on first. */
  append(run: R, batch: DecidedBatch, recordedAt: Date): Async extends true ? Promise<R> : R;
}

/** What a Worker needs of where its runs are kept. */
export interface RunRepository<R extends StoredRun = StoredRun> extends RunKeeper<R, true> {
  /**
   * The set-returning SQL function of (now timestamptz, max integer) that gives the (id, project_id) of the
   * runs due at `now`, oldest first, across projects. The worker takes its advisory locks on what it returns.
   */
  readonly dueRuns: string;
  /** Write out what is still held back (the head journal's last lines) before the worker stops. */
  flush(): Promise<void>;
  /** Whether the run's record still ends where `run` says: nobody (an operator's action, another worker) moved it on since. */
  stillAt(run: R): Promise<boolean>;
  /**
   * Whether a run just started by this process may be acted on as it was committed, without a load: nothing this
   * repository checks a loaded run against (a checkpoint, a head committed before) knows of it. Without this method
   * no run is.
   */
  unknown?(runId: string): boolean;
}

/** A run of the event log: where its chain stands too. */
export interface LoggedRun extends StoredRun {
  readonly lastHash: string;
}

export interface EventLogOptions {
  pool: Pool;
  failpoints: Failpoints;
  /** checks each run's chain before it is acted on and signs what is appended (without it: the unsigned links of the first releases, tests only) */
  keyring?: Keyring;
  /** commits batches of many runs together (src/store/group-commit.ts) */
  group?: BatchGroup;
  /** a signed checkpoint of every head committed, outside the database */
  journal?: HeadJournal | null;
  /**
   * Heads kept outside the database (workers' and operators' journals, `meshhook checkpoint` files), read when
   * the worker starts: a run whose log no longer reaches the head one of them saw was rolled back behind the
   * engine's back, and is refused instead of carried on from the earlier state (which would undo what came
   * after, an operator's pause, say, and repeat its calls).
   */
  checkpoints?: CheckpointIndex | null;
}

/** Every repository of the process shares what it committed (see EventLogRepository.committed); run ids are unique everywhere. */
const COMMITTED_HEADS = new Map<string, { seq: number; hash: string }>();

/** The engine's repository: the run log in Postgres, loaded and checked before a run is acted on, appended batch by batch. */
export class EventLogRepository implements RunRepository<LoggedRun> {
  readonly dueRuns = 'meshhook_due_runs';

  /**
   * The head this process last committed for each run. A database that later shows a run short of it lost
   * what COMMIT confirmed (a rollback, or a commit function made to say yes without writing, or an earlier
   * genuine head put back by someone with the database): acting on that run again would repeat its calls.
   * Such a run is refused instead. One memory for every worker of the process (`meshhook up` runs several),
   * so a run another of them committed is held to it too.
   */
  private readonly committed = COMMITTED_HEADS;

  constructor(private readonly o: EventLogOptions) {}

  async load(projectId: string, runId: string): Promise<LoggedRun | null> {
    const run = await loadRun(this.o.pool, projectId, runId);
    if (!run) return null;
    if (this.o.keyring) assertIntact(run, this.o.keyring.chainKeys());
    const behind = checkAgainstCheckpoint(this.o.checkpoints?.of(runId) ?? null, run.events);
    if (behind) throw new TamperedRunError(runId, `${behind}; acting on it would carry the run on from an earlier state`);
    const mine = this.committed.get(runId);
    if (mine && (run.lastSeq < mine.seq || (run.lastSeq === mine.seq && run.lastHash !== mine.hash)))
      throw new TamperedRunError(
        runId,
        `the database holds its log up to event ${run.lastSeq}, but a worker of this process committed up to event ${mine.seq} (${mine.hash.slice(0, 12)}): ` +
          'what COMMIT confirmed is gone, and acting again would repeat its calls',
      );
    return { runId, projectId: run.projectId, workflowId: run.workflowId, version: run.version, state: run.state, seq: run.lastSeq, lastHash: run.lastHash };
  }

  async append(run: LoggedRun, batch: DecidedBatch, recordedAt: Date): Promise<LoggedRun> {
    const committed = await commitBatch(
      this.o.pool,
      {
        runId: run.runId,
        projectId: run.projectId,
        expectedSeq: run.seq,
        prevHash: run.lastHash,
        stateBefore: batch.stateBefore,
        recordedAt,
        chain: this.o.keyring?.chainKey() ?? null,
        failpoints: this.o.failpoints,
        step: batch.step,
        stateAfter: batch.stateAfter,
        group: this.o.group,
      },
      batch.events,
    );
    this.o.journal?.record({ projectId: run.projectId, runId: run.runId, seq: committed.lastSeq, hash: committed.lastHash }, new Date());
    this.committed.delete(run.runId); // re-inserted last: the map's order is the order of use
    this.committed.set(run.runId, { seq: committed.lastSeq, hash: committed.lastHash });
    if (this.committed.size > REMEMBERED_HEADS) this.committed.delete(this.committed.keys().next().value!);
    return { ...run, state: committed.state, seq: committed.lastSeq, lastHash: committed.lastHash };
  }

  unknown(runId: string): boolean {
    // a run id derives from its delivery: a delivery sent again after the database was put back behind its run is
    // started afresh under the same id, and only a load compares it with the heads seen before
    return !this.committed.has(runId) && !this.o.checkpoints?.of(runId);
  }

  async flush(): Promise<void> {
    await this.o.journal?.flush();
  }

  async stillAt(run: LoggedRun): Promise<boolean> {
    const { rows } = await inProject(this.o.pool, run.projectId, (c) => c.query<{ last_seq: number }>('SELECT last_seq FROM runs WHERE id = $1', [run.runId]));
    return rows[0]?.last_seq === run.seq;
  }
}
