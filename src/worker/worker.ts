import { randomUUID } from 'node:crypto';
import { Client, ClientConfig, Pool } from 'pg';
import { createDecider, DecisionError, RunDecider, RunState } from '../domain/decider';
import { privateTargetsGranted } from '../domain/hash-chain';
import { driveLoop, runLoop } from '../domain/run-loop';
import { PINNED_SETTINGS, withOptions } from '../db/pool';
import { ENGINE_ROLE, inProject } from '../db/scope';
import { CheckpointIndex, HeadJournal } from '../integrity/checkpoints';
import { Keyring } from '../security/keyring';
import { loadSecretValues } from '../store/secrets';
import { Failpoints, FailpointError, FailpointName } from '../faults/failpoints';
import { loadVersion, LoadedVersion, TamperedDefinitionError } from '../store/registry';
import { GroupCommit } from '../store/group-commit';
import { ConcurrencyError } from '../store/log-append';
import { TamperedRunError } from '../store/run-load';
import { EventLogRepository, RunRepository, StoredRun } from '../store/run-repository';
import { Clock, systemClock } from './clock';
import { Handover, type HandedRun } from './handover';
import { SendContext, sendRequest } from './http-client';

/*
 * A stateless worker: claims runnable runs from Postgres, executes each run's
 * next step and appends what happened to its repository (the event log;
 * src/store/run-repository.ts). Ownership is a session advisory lock,
 * so a worker that dies (or loses its connection) lets go at once and any
 * other worker resumes from the log. Correctness never rests on the lock:
 * appends name the sequence they expect, and a stale writer simply loses.
 */

export interface WorkerOptions {
  pool: Pool;
  /** connection for the advisory-lock session (same database as the pool) */
  lockConnection: ClientConfig;
  clock?: Clock;
  failpoints?: Failpoints;
  id?: string;
  /**
   * how often an idle worker looks for work (default 50 ms). A new run and a freed slot wake a worker at
   * once (LISTEN/NOTIFY, the end of an advance), so this only bounds how late a due timer is noticed.
   */
  pollMs?: number;
  /**
   * runs advanced at once by this worker (default 4). Measured (`npm run bench:dbos -- --scaling`): two
   * workers of 4 outrun one of 8 and four of 4 on two cores, so `meshhook up` starts two.
   */
  concurrency?: number;
  /**
   * Signs the log's links and run heads, and opens the projects' secrets
   * (header references are resolved at send time). Without it the worker
   * writes the unsigned links of the first releases (tests of old logs only).
   */
  keyring?: Keyring;
  /** append a signed checkpoint of every head this worker commits to this file (outside the database) */
  headJournal?: string;
  /** heads kept outside the database, read at start: a run rolled back behind one of them is refused (EventLogOptions.checkpoints) */
  checkpoints?: CheckpointIndex | null;
  /** jitter draws for retry backoff; recorded in the log, so replay needs no randomness */
  random?: () => number;
  log?: (entry: Record<string, unknown>) => void;
  /**
   * Test-only: claim runs without the advisory lock, so two workers really
   * race on one run. It shows correctness rests on the expected-sequence
   * append, not on the lock.
   */
  ignoreLocks?: boolean;
  /** commit the batches of runs decided meanwhile together, one transaction for many (default on; src/store/group-commit.ts) */
  groupCommit?: boolean;
  /**
   * Where runs are kept (default: the engine's event log, with the keyring, journal and group commit above).
   * The bench's state-stored baseline passes its own.
   */
  repository?: RunRepository;
  /** runs the process's intake hands to its workers, shared by them (default: this worker's own; src/worker/handover.ts) */
  handover?: Handover;
}

export interface WorkerStats {
  batches: number;
  runsFinished: number;
  conflicts: number;
  errors: number;
  recoveries: number;
  /** runs this process's intake had just started, carried on from the state it committed (no claim, no load) */
  adopted: number;
}

export const DEFAULT_POLL_MS = 50;
export const DEFAULT_CONCURRENCY = 4;
const LOCK_CLASS = 0x4d48; // "MH": keeps our advisory locks apart from anyone else's
/** a secret added or a project setting changed reaches workers within this long */
const SEND_CONTEXT_TTL_MS = 2_000;

/** how long a worker woken by a new run's notification waits before it looks (see lock()) */
const NOTIFIED_AFTER_MS = 2;

/**
 * Runs handed over by the intake kept waiting for a free slot, per slot; beyond them, claims find the rest among
 * the due runs and load them. A burst the workers cannot keep up with waits here (a run's first state, its input
 * as big as its webhook body: the bodies together are kept within HANDOVER_BYTES). Measured in a bench:e2e trial (1,000 webhooks from 16 senders, 8 slots): 2 a slot left 474 runs to be
 * loaded, 32 a slot 286.
 */
export const HANDED_PER_SLOT = 32;

/** A request sent later than this after the worker last knew where its run's record ends is checked still due first. */
const STALE_AFTER_MS = 100;

/** The run's record moved on past where this worker committed its request: the request is not sent. */
class RunMovedOnError extends Error {
  constructor(readonly runId: string, readonly seq: number) {
    super(`run ${runId} moved on past event ${seq} before its request was sent`);
    this.name = 'RunMovedOnError';
  }
}

export class Worker {
  readonly id: string;
  readonly stats: WorkerStats = { batches: 0, runsFinished: 0, conflicts: 0, errors: 0, recoveries: 0, adopted: 0 };
  private readonly pool: Pool;
  private readonly clock: Clock;
  private readonly failpoints: Failpoints;
  private readonly pollMs: number;
  private readonly concurrency: number;
  private readonly random: () => number;
  private readonly log: (entry: Record<string, unknown>) => void;
  /** each version loaded once: runs of one version claimed together (a fresh worker's first claim) share one load */
  private readonly versions = new Map<string, Promise<LoadedVersion>>();
  /** per project: its opened secrets and whether it may call private addresses, read again after SEND_CONTEXT_TTL_MS */
  private readonly sendContexts = new Map<string, { at: number; ctx: Promise<SendContext> }>();
  private readonly inFlight = new Set<string>();
  /** the advances under way (awaited when the worker stops) */
  private readonly running = new Set<Promise<void>>();
  /** runs handed over by the process's intake (adopt), waiting for a worker of the process: a claim takes them first */
  private readonly handover: Handover;
  private lockClient: Client | null = null;
  /** pg allows one query at a time per client: lock and unlock calls queue here */
  private lockOps: Promise<unknown> = Promise.resolve();
  /** runs released and not yet unlocked, and the queued statement that will unlock them */
  private unlocks: string[] = [];
  private unlocking: Promise<void> | null = null;
  /** runs that failed for an unexpected reason wait before they are tried again, instead of hot-looping */
  private readonly backoffUntil = new Map<string, { at: number; delayMs: number }>();
  /** batches of many runs in one transaction; with failpoints armed commitBatch goes batch by batch instead */
  readonly group: GroupCommit | undefined;
  private readonly repository: RunRepository;
  private loop: Promise<void> | null = null;
  private stopping = false;
  private wake: (() => void) | null = null;
  /** a wake-up that came while the loop was not waiting (a claim in flight): the next wait is skipped */
  private woken = false;

  constructor(private readonly opts: WorkerOptions) {
    this.id = opts.id ?? `worker-${randomUUID().slice(0, 8)}`;
    this.pool = opts.pool;
    this.clock = opts.clock ?? systemClock;
    this.failpoints = opts.failpoints ?? Failpoints.none();
    this.pollMs = opts.pollMs ?? DEFAULT_POLL_MS;
    this.concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY;
    this.handover = opts.handover ?? new Handover(this.concurrency * HANDED_PER_SLOT);
    this.random = opts.random ?? Math.random;
    this.log = opts.log ?? (() => undefined);
    this.group = opts.groupCommit === false || opts.repository ? undefined : new GroupCommit(this.pool);
    this.repository =
      opts.repository ??
      new EventLogRepository({
        pool: this.pool,
        failpoints: this.failpoints,
        keyring: opts.keyring,
        group: this.group,
        journal: opts.headJournal && opts.keyring ? new HeadJournal(opts.headJournal, opts.keyring.chainKey()) : null,
        checkpoints: opts.checkpoints,
      });
    // the claim names the repository's function in its SQL: only a plain (optionally schema-qualified) name will do
    if (!/^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$/.test(this.repository.dueRuns)) throw new Error(`not a function name: ${this.repository.dueRuns}`);
  }

  start(): void {
    if (this.loop) return;
    this.stopping = false;
    this.loop = this.run();
  }

  /** Finish the batches in flight, release every run, close the lock session. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.nudge();
    await this.loop;
    this.loop = null;
    await this.closeLockClient();
  }

  /** Look for due work now instead of at the next poll. */
  poke(): void {
    this.nudge();
  }

  private nudge(): void {
    this.woken = true;
    this.wake?.();
  }

  /**
   * Carry on a run this process's intake has just started, from the state its first events left it in, instead of
   * finding it among the due runs and reading it back with a load (the log parsed and its chain checked again for
   * what this process has just written). The run waits here for a free slot, and the next claim locks it before
   * any other run, as it locks those. False, and nothing done, when this worker already holds as many as it can
   * take soon, is stopping, or keeps runs where their first state cannot be taken on trust: the run stays due,
   * and a claim (this worker's or any other's) takes it as before. Correctness does not rest on this: the first
   * append names the sequence the intake committed, and loses to anyone who moved the run on since (an
   * operator, another process's worker).
   */
  adopt(handed: HandedRun): boolean {
    if (this.opts.ignoreLocks || !this.loop || this.stopping || !this.repository.unknown?.(handed.run.runId)) return false;
    if (!this.handover.offer(handed)) return false;
    this.nudge();
    return true;
  }

  /** Runs this worker could take on now. */
  get freeSlots(): number {
    return this.concurrency - this.inFlight.size;
  }

  private hold(runId: string): void {
    this.inFlight.add(runId);
    this.handover.hold(runId);
  }

  /** Advance a run this worker holds, counted among the runs under way. */
  private spawn(runId: string, projectId: string, adopted?: StoredRun): void {
    const p = this.advance(runId, projectId, adopted).finally(() => {
      this.running.delete(p);
      // a slot is free: look for more work now rather than at the next poll
      this.nudge();
    });
    this.running.add(p);
  }

  private async run(): Promise<void> {
    this.warmPool();
    // while the database is away: one line when claims start failing, one when they work again,
    // and a backoff between tries (doubling from pollMs, at most a second) instead of a line per poll
    let failing = 0;
    let firstFailure = 0;
    while (!this.stopping) {
      let claimed = 0;
      let failed = false;
      try {
        const free = this.concurrency - this.inFlight.size;
        if (free > 0) {
          for (const { id: runId, projectId, adopted } of await this.claim(free)) {
            claimed++;
            this.spawn(runId, projectId, adopted);
          }
        }
      } catch (e) {
        this.stats.errors++;
        failed = true;
        if (failing === 0) {
          firstFailure = Date.now();
          this.log({ level: 'warn', worker: this.id, msg: 'claim failed', error: (e as Error).message });
        }
        failing++;
        await this.closeLockClient();
      }
      if (!failed && failing > 0) {
        this.log({ level: 'info', worker: this.id, msg: 'claims work again', failedTries: failing, afterMs: Date.now() - firstFailure });
        failing = 0;
      }
      if (claimed === 0 && !this.stopping && !(this.woken && failing === 0)) {
        const wait = failing > 0 ? Math.min(1000, this.pollMs * 2 ** Math.min(failing, 10)) : this.pollMs;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, wait);
          this.wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.wake = null;
      }
      this.woken = false;
    }
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
    await this.repository.flush();
  }

  /*
   * Open the connections the first claim's runs will need while the lock
   * session connects and claims, instead of one at a time after it. A new
   * connection costs a server process and a login (about 13 ms here, 70 ms and
   * more when every worker starts at once, as after a crash). Traced in
   * npm run bench:recovery, a fresh worker's first run load then began at
   * 263 ms after its process started instead of 299 ms.
   */
  private warmPool(): void {
    // as many as this worker has slots, within what the pool (perhaps shared with other workers) has left;
    // counted before the loop, as each connect adds to the pool's count at once
    const max = (this.pool.options as { max?: number }).max ?? 10;
    const n = Math.min(this.concurrency, max - this.pool.totalCount);
    for (let i = 0; i < n; i++) {
      this.pool.connect().then(
        (c) => c.release(),
        () => undefined, // the first query reports a database that is away
      );
    }
  }

  private async lock(): Promise<Client> {
    if (this.lockClient) return this.lockClient;
    const c = new Client({
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      ...this.opts.lockConnection,
      ...withOptions(this.opts.lockConnection.connectionString ?? '', [this.opts.lockConnection.options, `-c role=${ENGINE_ROLE}`, PINNED_SETTINGS]),
      ...(this.opts.lockConnection.connectionString ? {} : { connectionString: undefined }),
      application_name: `meshhook-lock-${this.id}`,
    });
    c.on('error', (e) => {
      this.log({ level: 'warn', worker: this.id, msg: 'lock session lost', error: e.message });
      if (this.lockClient === c) this.lockClient = null;
    });
    // a new run wakes this worker (migrations/006_wake_workers.sql); polling remains the fallback. The wake-up waits
    // a moment: a run this process's intake started is told about as its commit returns, about when the
    // notification comes, and handed over (adopt) it needs no load; claimed first from the notification, it does
    c.on('notification', () => setTimeout(() => this.nudge(), NOTIFIED_AFTER_MS));
    await c.connect();
    try {
      await c.query('LISTEN meshhook_due');
    } catch (e) {
      await c.end().catch(() => undefined);
      throw e;
    }
    this.lockClient = c;
    return c;
  }

  private onLock<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.lockOps.then(fn);
    this.lockOps = p.catch(() => undefined);
    return p;
  }

  private async closeLockClient(): Promise<void> {
    const c = this.lockClient;
    this.lockClient = null;
    if (c) await c.end().catch(() => undefined);
  }

  /**
   * Runs that are due, of any project, locked for this worker: one round trip
   * on the lock session, which takes each lock as it finds a due run it does
   * not hold yet and stops at `max`.
   */
  private async claim(max: number): Promise<Array<{ id: string; projectId: string; adopted?: StoredRun }>> {
    const now = this.clock.now();
    const wall = Date.now();
    const backedOff: string[] = [];
    for (const [id, b] of this.backoffUntil) if (b.at > wall) backedOff.push(id);
    if (this.opts.ignoreLocks) {
      const skip = [...this.inFlight, ...backedOff];
      const { rows } = await this.pool.query<{ id: string; project_id: string }>(`SELECT id, project_id FROM ${this.repository.dueRuns}($1, $2) WHERE NOT (id = ANY($3::uuid[])) LIMIT $4`, [now, max * 4, skip, max]);
      for (const { id } of rows) this.hold(id);
      return rows.map(({ id, project_id }) => ({ id, projectId: project_id }));
    }
    const lock = await this.lock();
    // the inner query is fenced (OFFSET 0) so runs this worker holds are left out before a lock is tried:
    // session locks are re-entrant, and a second hold of one would never be released. What it holds, and what was
    // handed over, is read when the statement takes its turn on the lock session
    return this.onLock(async () => {
      const room = Math.min(max, this.concurrency - this.inFlight.size);
      if (room <= 0) return [];
      // runs handed over come first (oldest first), then the due runs less those, the ones still waiting to be
      // handed over, and the ones held or backed off (a run the process's workers hold is never handed over)
      const handed = this.handover.take(room);
      const skip = [...this.inFlight, ...backedOff, ...handed.map((h) => h.run.runId), ...this.handover.waitingIds()];
      const { rows } = await lock.query<{ id: string; project_id: string }>(
        `SELECT id, project_id FROM (
           SELECT h.id, h.project_id FROM meshhook_runs_still_at($6::uuid[], $7::integer[]) h
           UNION ALL
           (SELECT id, project_id FROM ${this.repository.dueRuns}($1, $2) WHERE NOT (id = ANY($3::uuid[])))
           OFFSET 0
         ) due WHERE pg_try_advisory_lock($4, hashtext(id::text)) LIMIT $5`,
        [now, room * 4, skip, LOCK_CLASS, room, handed.map((h) => h.run.runId), handed.map((h) => h.run.seq)],
      );
      const byId = new Map(handed.map((h) => [h.run.runId, h]));
      const mine: Array<{ id: string; projectId: string; adopted?: StoredRun }> = [];
      for (const { id, project_id } of rows) {
        // (found among the due runs while it was being handed over, it is taken here, from a load)
        this.hold(id);
        const h = byId.get(id);
        if (h) {
          this.stats.adopted++;
          if (h.version && !this.versions.has(versionKey(h.run))) this.versions.set(versionKey(h.run), Promise.resolve(h.version));
        }
        mine.push({ id, projectId: project_id, adopted: h?.run });
      }
      // a run handed over and not taken is held by another worker, or another process's worker moved it on since the
      // intake started it (meshhook_runs_still_at, migration 030): it is theirs
      return mine;
    });
  }

  /**
   * Runs given back together: every run released before the unlock statement
   * reaches the lock session goes in the same statement. The unlock is queued
   * on the lock session at once, so a claim made after this release runs
   * after the unlock (a session lock is re-entrant: claiming a run still held
   * would hold it twice and one unlock would not free it).
   */
  private release(runId: string): Promise<void> {
    this.inFlight.delete(runId);
    this.handover.release(runId);
    if (!this.lockClient) return Promise.resolve();
    this.unlocks.push(runId);
    this.unlocking ??= this.onLock(async () => {
      const ids = this.unlocks;
      this.unlocks = [];
      this.unlocking = null;
      // the session as it is now: if it was replaced since, the old one's locks went with it
      const c = this.lockClient;
      if (!c) return;
      await c.query('SELECT pg_advisory_unlock($1, hashtext(id)) FROM unnest($2::text[]) AS id', [LOCK_CLASS, ids]);
    }).then(
      () => undefined,
      () => undefined,
    );
    return this.unlocking;
  }

  private async deciderFor(run: StoredRun): Promise<RunDecider> {
    const key = versionKey(run);
    let loading = this.versions.get(key);
    if (!loading) {
      loading = loadVersion(this.pool, run.projectId, run.workflowId, run.version, { keys: this.opts.keyring?.chainKeys() });
      this.versions.set(key, loading);
      loading.catch(() => this.versions.delete(key));
    }
    const v = await loading;
    // the run's first event pins the definition's hash: a version rewritten with a matching hash is still not it
    if (run.state.definitionHash && run.state.definitionHash !== v.definitionHash) throw new TamperedDefinitionError(run.workflowId, run.version);
    // decisions follow the flags the run recorded when it started, not this worker's
    return createDecider(v.definition);
  }

  /** What sending a request of this project needs: its secrets (opened) and its leave to call private addresses. */
  private sendContext(projectId: string): Promise<SendContext> {
    const cached = this.sendContexts.get(projectId);
    if (cached && Date.now() - cached.at < SEND_CONTEXT_TTL_MS) return cached.ctx;
    const ctx = (async (): Promise<SendContext> => {
      const allow = await inProject(
        this.pool,
        projectId,
        async (c) => (await c.query('SELECT allow_private_targets, allow_private_targets_mac FROM projects WHERE id = $1', [projectId])).rows[0],
      );
      const secrets = this.opts.keyring ? await loadSecretValues(this.pool, this.opts.keyring, projectId) : [];
      // only the engine grants the leave to call private addresses: a flag switched on in the table alone is not it
      const flagged = allow?.allow_private_targets === true;
      const granted = flagged && (!this.opts.keyring || privateTargetsGranted(this.opts.keyring.chainKeys(), projectId, allow.allow_private_targets_mac));
      if (flagged && !granted)
        this.log({ level: 'warn', worker: this.id, msg: 'a project may call private addresses by its row only, not by a grant the engine signed: refused', projectId });
      return { secrets, allowPrivateTargets: granted };
    })();
    this.sendContexts.set(projectId, { at: Date.now(), ctx });
    ctx.catch(() => this.sendContexts.delete(projectId));
    return ctx;
  }

  private async hit(name: FailpointName, runId: string, step: string | null): Promise<void> {
    if (this.failpoints.armed) await this.failpoints.hit({ name, runId, step });
  }

  /** Drive one run as far as it can go now. */
  private async advance(runId: string, projectId: string, adopted?: StoredRun): Promise<void> {
    try {
      // the repository checks the run may be acted on (its log genuine) before giving it; a run adopted from this
      // process's intake is as it committed it
      // when this worker last knew where the run's record ends: the read its state came from, then each commit it asks
      // for (a stall between them, in loading the run's version or recovering it, counts)
      let knownAt = performance.now();
      const loaded = adopted ?? (await this.repository.load(projectId, runId));
      if (!loaded) return;
      let run: StoredRun = loaded;
      const decider = await this.deciderFor(run);
      if (isRecovery(run.state)) {
        this.stats.recoveries++;
        this.log({ level: 'info', worker: this.id, run: runId, msg: 'resuming a run another worker left', seq: run.seq });
        await this.hit('during-recovery', runId, run.state.pendingRequest?.step ?? run.state.cursor);
      }
      // the run moves as src/domain/run-loop.ts says; this worker answers with the clock, real HTTP and the repository.
      // With failpoints armed every step is its own batch, so each crash point stays addressable.
      const loop = runLoop(decider, run.state, { merge: !this.failpoints.armed, stopping: () => this.stopping });
      await driveLoop(loop, {
        now: () => this.clock.now(),
        send: async ({ request }) => {
          const context = await this.sendContext(projectId);
          // A request is committed before it is sent, and an operator's action can land in between (workers hold no
          // lock that actions wait for). Sent at once, the gap is a moment and a check would leave one as long after it;
          // but a worker held up since (its process stopped or starved, a long pause of the collector, a failpoint's
          // stall) must not send for a run canceled or paused meanwhile: it asks where the record ends first
          if (performance.now() - knownAt > STALE_AFTER_MS && !(await this.repository.stillAt(run))) throw new RunMovedOnError(runId, run.seq);
          return sendRequest(request, context);
        },
        jitter: () => this.random(),
        due: () => false, // wake_at is already stored; a later claim fires it
        moment: ({ name, step }) => this.hit(name, runId, step),
        commit: async ({ batch }) => {
          knownAt = performance.now();
          run = await this.repository.append(run, batch, this.clock.now());
          this.stats.batches++;
          this.backoffUntil.delete(runId);
          if (run.state.phase === 'done') {
            this.stats.runsFinished++;
            this.log({ level: 'info', worker: this.id, run: runId, msg: `run ${run.state.status}`, seq: run.seq });
          }
          return run.state;
        },
      });
    } catch (e) {
      if (e instanceof RunMovedOnError) {
        this.stats.conflicts++;
        this.log({ level: 'info', worker: this.id, run: runId, msg: 'the run moved on while its request waited to be sent (an operator\'s action or another worker): not sending it', seq: e.seq });
      } else if (e instanceof ConcurrencyError) {
        this.stats.conflicts++;
        this.log({ level: 'info', worker: this.id, run: runId, msg: 'another worker appended first; leaving the run to it' });
      } else {
        // back off this run only, so a run that keeps failing cannot starve the others
        this.stats.errors++;
        const prev = this.backoffUntil.get(runId)?.delayMs ?? 0;
        const delayMs = Math.min(30_000, prev ? prev * 2 : 250);
        this.backoffUntil.set(runId, { at: Date.now() + delayMs, delayMs });
        const expected = e instanceof DecisionError || e instanceof FailpointError || e instanceof TamperedRunError;
        this.log({
          level: expected ? 'warn' : 'error',
          worker: this.id,
          run: runId,
          msg: expected ? e.message : 'run could not advance',
          ...(expected ? {} : { error: (e as Error).message }),
          retryInMs: delayMs,
        });
      }
    } finally {
      await this.release(runId);
    }
  }
}

function versionKey(run: Pick<StoredRun, 'workflowId' | 'version'>): string {
  return `${run.workflowId}:${run.version}`;
}

/** A run found mid-step was left by a worker that stopped without finishing it. */
export function isRecovery(state: RunState): boolean {
  return state.phase === 'awaiting_response' || (state.phase === 'ready' && Object.keys(state.outputs).length > 0);
}
