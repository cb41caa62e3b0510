import { IWorldOptions, setWorldConstructor, World } from '@cucumber/cucumber';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Pool } from 'pg';
import { openEnginePool, openPool } from '../src/db/pool';
import { idempotencyKeyFor } from '../src/domain/decider';
import type { WorkflowDefinition } from '../src/domain/definition';
import type { RecordedEvent } from '../src/domain/events';
import { TcpProxy } from '../src/faults/tcp-proxy';
import { startIntake } from '../src/intake/server';
import { deliver } from '../src/intake/sign';
import { readRunView, RebuildResult, RunVerification, StoredRunView, VerifyRunOptions } from '../src/replay-service';
import { CheckpointIndex, HeadJournal } from '../src/integrity/checkpoints';
import { loadVersion, NotFoundError, publishWorkflow, setAllowPrivateTargets } from '../src/store/registry';
import { operate, OperatorActionError } from '../src/operator-service';
import { replayLog, VerifyReport } from '../src/domain/replay';
import type { ActionPhrase, Moment, Reach, Weakening } from './parameter-types';
import type { RecordedHistory } from './histories';
import type { FaultedRun, Reference } from './sweep';
import { Keyring, tokenSecret } from '../src/security/keyring';
import { parseDropSpec } from '../src/realtime/server';
import { LiveLogs } from './live-logs';
import type { SecretValue } from '../src/security/redact';
import { loadEvents } from '../src/store/log-read';
import { putSecret } from '../src/store/secrets';
import { ControlledClock } from '../src/worker/clock';
import { Scheduler } from '../src/intake/scheduler';
import { inProject } from '../src/db/scope';
import { createScenarioDatabase, dropScenarioDatabase, getCluster } from './cluster';
import { TargetService } from './target-service';
import { whyArmedMomentCannotCome } from './moments';
import { StopWaiting, waitFor } from './wait';
import { readFailpointLog, WorkerProcess } from './worker-process';

/*
 * One World per scenario. It owns everything the scenario starts — a fresh
 * database cloned from the migrated template, a TCP proxy the engine talks
 * to the database through, the order service, the webhook intake, worker
 * processes — and stops all of it afterwards.
 */


/** a timer due within this long fires on its own while a step waits (a retry's backoff): the run is not at rest */
const SOON_MS = 5_000;
export interface ReplayParameters {
  /** how long a step waits for a run to settle before it fails, in ms */
  runTimeoutMs: number;
  /** the share of crash points the fault matrix runs: 1 in the sweep profile, a seeded sample elsewhere */
  sweepShare?: number;
  /** faulted runs of the sweep that go side by side, each on its own database */
  sweepLanes?: number;
}

export interface PublishedWorkflow {
  project: string;
  workflow: string;
  projectId: string;
  workflowId: string;
  version: number;
  secret: string;
  definition: WorkflowDefinition;
}

export interface TrackedRun {
  runId: string;
  project: string;
  projectId: string;
  workflow: string;
  body: string;
  deliveryId: string;
}

export interface InjectedFault {
  at: Date;
  label: string;
  /** resolves to a sentence when the fault can be shown to have fired, null otherwise */
  proof: () => Promise<string | null>;
}

export const FINISHED = ['succeeded', 'failed', 'canceled'];

export class ReplayWorld extends World<ReplayParameters> {
  // ───── every field the scenario keeps lives here, grouped by concept; step files add none of their own

  // the database
  dbName = '';
  /** which of this cucumber worker's Postgres servers the database is on: 0, or a sweep lane's own */
  clusterSlot = 0;
  /**
   * The scenario's own connection as the database's owner, straight to Postgres
   * (never through the proxy): what an inspector — or an intruder with DBA
   * rights — sees. Row-level security does not apply to it.
   */
  db!: Pool;
  keyring!: Keyring;
  /** the engine's view of the database (role meshhook_engine, one project at a time), for the intake and engine calls */
  engineDb!: Pool;
  /** the database as the engine reaches it: through the fault proxy */
  proxy!: TcpProxy;
  engineDbUrl = '';
  directDbUrl = '';
  /** the engine's database URL without the proxy (for the CLI the scenario runs) */
  engineDirectUrl = '';
  private scratchDir: string | null = null;
  /** the scenario's own directory for files (journals, checkpoints); made on first use, so a dry run leaves none behind */
  get scratch(): string {
    return (this.scratchDir ??= mkdtempSync(path.join(os.tmpdir(), 'meshhook-scenario-')));
  }

  // time
  readonly clock = new ControlledClock();

  // projects, workflows and deliveries
  target: TargetService | null = null;
  intake: { url: string; close(): Promise<void> } | null = null;
  readonly workflows = new Map<string, PublishedWorkflow>();
  readonly runs: TrackedRun[] = [];
  /** the engines' schedulers of this scenario (src/intake/scheduler.ts), ticked each time the clock moves */
  readonly schedulers: Scheduler[] = [];
  lastAnswer: { status: number; body: any } | null = null;
  /** a delivery sent again under its id (`the same delivery arrives again`): the run it was for, and its answer */
  redelivery: { runId: string; deliveryId: string; answer: { status: number; body: any } } | null = null;
  /** row counts before a refused webhook (features/intake): a refusal writes nothing */
  countsBefore?: Record<string, number>;
  /** the workflow a refused webhook was meant for: where "a correct webhook sent afterwards" goes */
  refusedTarget?: { project: string; workflow: string };
  /** the workflow `tries to publish the workflow …` sent, for `publishing is refused because …` */
  triedToPublish?: string;
  /** the run whose worker `the worker running the order is killed` killed while its request was unanswered */
  killedMidRequest?: { runId: string; victim: string };
  /** a delivery's record written behind the engine's back before its webhook arrives */
  plantedDelivery?: { project: string; workflow: string; deliveryId: string; body: string };

  // workers, moments and faults
  readonly workers: WorkerProcess[] = [];
  /** failpoints the next worker is started with, and the moment they stand for */
  pendingFailpoints: string[] = [];
  pendingMoment: Moment | null = null;
  /** the moment each armed worker is to crash or stall at, by worker id */
  readonly armedAt = new Map<string, Moment>();
  readonly faults: InjectedFault[] = [];
  /** events committed before a fault, by run: none of them may go missing */
  acknowledged = new Map<string, Array<{ seq: number; hash: string }>>();
  /** the crash-point sweep: the fault-free reference run and the runs faulted at each of its points */
  reference?: Reference;
  faultedRuns?: FaultedRun[];
  /**
   * The sweep's other lanes: worlds of their own (database, proxy, live logs,
   * workers) that share this scenario's order service, so faulted runs go
   * side by side without claiming each other's orders.
   */
  readonly lanes: ReplayWorld[] = [];
  private sharesOrderService = false;

  // replay, recorded histories and the run log
  /** the last replay and verification of a run */
  verification?: RunVerification;
  /** a golden history the scenario loaded, and what replaying it found */
  history?: RecordedHistory;
  historyReport?: VerifyReport;
  /** the run view as it was before a rebuild, and what the rebuild did */
  viewSnapshot?: unknown;
  rebuilt?: RebuildResult;

  // operator actions and tampering
  /** the last operator action the scenario tried: the log before it, and its refusal if it was refused */
  /** `duringPause`: asked for while a worker stalled (`tries to … during that pause`), so the run may go on after it */
  lastAction: { phrase: ActionPhrase; before: string[]; refusal: string | null; duringPause?: boolean } | null = null;
  /** the run log as it was before someone tampered with it, so places keep naming the events they named */
  logBeforeTampering: RecordedEvent[] | null = null;
  /** what `meshhook verify --all` said */
  verified: { code: number; out: string[] } | null = null;
  /** a checkpoint file `meshhook checkpoint` wrote for the scenario, handed to verify with the workers' journals */
  checkpointFile: string | null = null;
  /** a project's signed leave to call private addresses as it stood before the project took it back */
  grantTakenBack: { project: string; signature: string } | null = null;
  /** the database's defences weakened behind the engine's back, and what verification must name */
  weakened: Weakening | null = null;
  lastError: Error | null = null;

  // live logs
  /**
   * The realtime handles: a supabase-js client per project the scenario sets
   * up, subscribed to its live log before any of its runs starts.
   */
  realtime!: LiveLogs;
  /** a scenario that planted a gap in a live log and checked it was caught */
  liveGapPlanted = false;
  /** viewers whose connection a scenario stalled: told the bytes delivered when it recovers */
  readonly stalledViewers = new Map<string, (bytesDownAtRecovery: number) => void>();

  // tenancy and secrets
  /** vault secrets the scenario gave its projects: the leak check looks for them everywhere */
  readonly vaultSecrets: SecretValue[] = [];
  /** the order service's API key each project keeps in its vault */
  readonly apiKeys = new Map<string, string>();
  /** what each project keeps in its vault, so a lane the sweep opens keeps it too */
  private readonly vaultEntries: Array<{ project: string; name: string; value: string }> = [];
  /** the last time a project tried to reach a run (features/security) */
  reached: { actor: string; reach: Reach; owner: string; run: TrackedRun; before: string; result: { found: boolean; detail: string } } | null = null;
  /** what the scenario attached to the report, as text, so the leak check reads it too */
  readonly attachments: Array<{ name: string; text: string }> = [];
  private workerCount = 0;

  constructor(options: IWorldOptions<ReplayParameters>) {
    super(options);
    // every attachment passes through here on its way into the report
    const attach = this.attach.bind(this);
    Object.defineProperty(this, 'attach', {
      value: (data: unknown, opts?: unknown) => {
        const name = typeof opts === 'object' && opts && 'fileName' in opts ? String((opts as { fileName?: string }).fileName) : String(opts ?? 'attachment');
        this.attachments.push({ name, text: Buffer.isBuffer(data) ? data.toString('utf8') : String(data) });
        return attach(data as never, opts as never);
      },
    });
  }

  /** Every secret value in use in the scenario: workflow signing secrets and vault secrets. */
  secretsInUse(): SecretValue[] {
    return [...[...this.workflows.values()].map((w) => ({ name: `signing secret of ${w.project}/${w.workflow}`, value: w.secret })), ...this.vaultSecrets];
  }

  /** The live-log frames the scenario's subscribers received, as text. */
  liveFrames(): string[] {
    return this.realtime?.frames() ?? [];
  }

  get timeoutMs(): number {
    return this.parameters.runTimeoutMs ?? 20_000;
  }

  get sweepShare(): number {
    return this.parameters.sweepShare ?? 1;
  }

  /** how many faulted runs of the sweep go side by side, each on a database of its own */
  get sweepLanes(): number {
    return Math.max(1, this.parameters.sweepLanes ?? 1);
  }

  /** The Postgres server (and its admin pool) this world's database lives on. */
  cluster(): ReturnType<typeof getCluster> {
    return getCluster(this.clusterSlot);
  }

  /** Seal a value in a project's vault, and remember it for the leak check and for every lane opened later. */
  async keepSecret(project: string, name: string, value: string): Promise<void> {
    await putSecret(this.engineDb, this.keyring, this.projectIdFor(project), name, value);
    this.vaultEntries.push({ project, name, value });
    this.vaultSecrets.push({ name: `the vault secret "${name}" of ${project}`, value });
  }

  /** This world and every lane the sweep opened. */
  get allLanes(): ReplayWorld[] {
    return [this, ...this.lanes];
  }

  /**
   * This world and `count - 1` more lanes, each a fresh database with the
   * scenario's workflows published again and the same order service behind it.
   */
  async openLanes(count: number): Promise<ReplayWorld[]> {
    const target = await this.orderService();
    const opening: Array<Promise<void>> = [];
    while (this.lanes.length < count - 1) {
      const quiet = () => undefined;
      const lane = new ReplayWorld({ parameters: this.parameters, attach: quiet as never, log: quiet, link: quiet });
      // listed before it opens, so teardown covers a lane that failed half way
      this.lanes.push(lane);
      // a Postgres of its own, so the lane can crash its database while the others run on
      lane.clusterSlot = this.lanes.length;
      opening.push(
        (async () => {
          await lane.init();
          lane.target = target;
          lane.sharesOrderService = true;
          for (const w of this.workflows.values()) await lane.publish(w.project, w.definition);
          // the vault too: a lane without it would fail a keyed call as SECRET_MISSING, not as the reference did
          for (const v of this.vaultEntries) await lane.keepSecret(v.project, v.name, v.value);
        })(),
      );
    }
    await Promise.all(opening);
    return this.allLanes;
  }

  async init(): Promise<void> {
    const { server, keyring } = await this.cluster();
    this.keyring = keyring;
    const db = await createScenarioDatabase(this.clusterSlot);
    this.dbName = db.name;
    this.directDbUrl = db.url;
    this.db = openPool(db.url, { max: 4 });
    this.engineDb = openEnginePool(db.engineUrl, { max: 4 });
    this.engineDirectUrl = db.engineUrl;
    this.proxy = new TcpProxy({ targetHost: server.host, targetPort: server.port });
    const port = await this.proxy.start();
    const u = new URL(db.engineUrl);
    u.host = `127.0.0.1:${port}`;
    u.searchParams.delete('host'); // through the proxy's TCP port, never the embedded Postgres's Unix socket
    this.engineDbUrl = u.toString();
    const drop = process.env.MESHHOOK_REALTIME_DROP;
    this.realtime = new LiveLogs({
      ownerUrl: db.url,
      jwtSecret: tokenSecret(keyring),
      chainKeys: keyring.chainKeys(),
      engineDb: this.engineDb,
      drop: drop ? parseDropSpec(drop) : undefined,
    });
    await this.realtime.start();
  }

  // ───── the order service and the webhook intake

  async orderService(): Promise<TargetService> {
    if (!this.target) {
      this.target = new TargetService();
      await this.target.start();
    }
    return this.target;
  }

  async ensureIntake(): Promise<string> {
    if (!this.intake) {
      // the intake talks to the database directly: faults in these specs target the workers
      this.intake = await startIntake({ pool: this.engineDb, keyring: this.keyring, clock: this.clock });
    }
    return this.intake.url;
  }

  // ───── workflows and deliveries

  async publish(project: string, definition: WorkflowDefinition): Promise<PublishedWorkflow> {
    const key = `${project}/${definition.name}`;
    const existing = this.workflows.get(key);
    const secret = existing?.secret ?? `whsec_${randomUUID().replace(/-/g, '')}`;
    const p = await publishWorkflow(this.engineDb, this.keyring, project, definition, { signingSecret: secret });
    // the order service listens on loopback: this project is allowed to call it, as a team would allow its own network
    await setAllowPrivateTargets(this.engineDb, this.keyring.chainKey(), p.projectId, true);
    const published: PublishedWorkflow = {
      project,
      workflow: p.workflow,
      projectId: p.projectId,
      workflowId: p.workflowId,
      version: p.version,
      secret: p.signingSecret,
      definition: p.definition,
    };
    this.workflows.set(key, published);
    // listen before any run of the project starts, as a dashboard would be open already
    await this.realtime.watch(p.projectId);
    return published;
  }

  /** The id of a project the scenario set up. */
  projectIdFor(project: string): string {
    const w = [...this.workflows.values()].find((x) => x.project === project);
    if (!w) throw new Error(`the scenario has not set up the project "${project}": declare it first, with "Given the project \"${project}\" with the workflow …:"`);
    return w.projectId;
  }

  /** The project that has a workflow of this name (the first one set up). */
  projectWith(workflow: string): string {
    const w = [...this.workflows.values()].find((x) => x.workflow === workflow);
    if (!w) throw new Error(`the scenario has not set up a workflow "${workflow}"`);
    return w.project;
  }

  workflow(project: string, workflow: string): PublishedWorkflow {
    const w = this.workflows.get(`${project}/${workflow}`);
    if (!w) throw new Error(`the scenario has not set up the workflow "${workflow}" for "${project}"`);
    return w;
  }

  /** Send a signed webhook over real HTTP; starts a worker first if the scenario has none. */
  async deliver(
    project: string,
    workflow: string,
    body: string,
    opts: { deliveryId?: string; secret?: string; signature?: string; track?: boolean; via?: string } = {},
  ): Promise<{ status: number; body: any }> {
    // `via`: another intake than the scenario's own (a worker process's)
    const url = opts.via ?? (await this.ensureIntake());
    if (this.workers.length === 0) await this.startWorker();
    const w = this.workflows.get(`${project}/${workflow}`);
    const deliveryId = opts.deliveryId ?? `dlv_${randomUUID().slice(0, 13)}`;
    const answer = await deliver(url, project, workflow, opts.secret ?? w?.secret ?? 'whsec_unknown', body, {
      deliveryId,
      at: this.clock.now(),
      signature: opts.signature,
    });
    this.lastAnswer = answer;
    if (answer.body?.runId && opts.track !== false && !this.runs.some((r) => r.runId === answer.body.runId)) {
      this.runs.push({ runId: answer.body.runId, project, projectId: w!.projectId, workflow, body, deliveryId });
    }
    return answer;
  }

  get run(): TrackedRun {
    const r = this.runs[this.runs.length - 1];
    if (!r) throw new Error(`no run has been started in this scenario (last answer: ${JSON.stringify(this.lastAnswer)})`);
    return r;
  }

  /** The project a run belongs to, as the database's owner sees it (the engine must be told). */
  async projectIdOf(runId: string): Promise<string> {
    const tracked = this.runs.find((r) => r.runId === runId);
    if (tracked) return tracked.projectId;
    const { rows } = await this.db.query<{ project_id: string }>('SELECT project_id FROM runs WHERE id = $1', [runId]);
    if (!rows[0]) throw new Error(`there is no run ${runId}`);
    return rows[0].project_id;
  }

  /** The run view as the engine reads it for the run's project. */
  async view(runId = this.run.runId): Promise<StoredRunView> {
    const v = await readRunView(this.engineDb, await this.projectIdOf(runId), runId);
    if (!v) throw new Error(`run ${runId} has no run view`);
    return v;
  }

  async readView(runId: string): Promise<StoredRunView | null> {
    return readRunView(this.engineDb, await this.projectIdOf(runId), runId);
  }

  async events(runId = this.run.runId): Promise<RecordedEvent[]> {
    return loadEvents(this.engineDb, await this.projectIdOf(runId), runId);
  }

  /** The workflow definition the run is pinned to (the version it started on, not the latest published). */
  async pinnedDefinition(runId = this.run.runId): Promise<WorkflowDefinition> {
    const { rows } = await this.db.query<{ workflow_id: string; version: number }>('SELECT workflow_id::text, version FROM runs WHERE id = $1', [runId]);
    if (!rows[0]) throw new Error(`there is no run ${runId}`);
    return (await loadVersion(this.engineDb, await this.projectIdOf(runId), rows[0].workflow_id, rows[0].version)).definition;
  }

  /** Fails, naming the steps it has, when the run's pinned workflow has no such step: a misspelt name never passes a negative check. */
  async expectStepOfRun(step: string, runId = this.run.runId): Promise<void> {
    const def = await this.pinnedDefinition(runId);
    if (!def.steps.some((s) => s.id === step)) {
      throw new Error(`workflow "${def.name}" has no step "${step}" (its steps: ${def.steps.map((s) => s.id).join(', ')})`);
    }
  }

  /** `moveClock`: jump the clock past any timer the run waits on (for reference runs nobody else drives). */
  async waitUntilFinished(runId = this.run.runId, timeoutMs = this.timeoutMs, moveClock = false): Promise<StoredRunView> {
    // a moment a worker is armed at that can no longer come: said within a second (after a short grace, so a
    // worker just reaching it gets there), not after the timeout
    let unreachableSince: number | null = null;
    try {
      return await waitFor(
        async () => {
          const v = await this.readView(runId);
          if (moveClock && v?.status === 'waiting' && v.wakeAt) {
            const due = Date.parse(v.wakeAt) - this.clock.now().getTime();
            if (due > 0) this.advanceClock(due + 1_000);
          }
          if (v && FINISHED.includes(v.status)) return v;
          if (!moveClock && this.armedAt.size > 0) {
            const why = await whyArmedMomentCannotCome(this);
            if (why === null) unreachableSince = null;
            else if (Date.now() - (unreachableSince ??= Date.now()) >= 300) throw new StopWaiting(why);
          }
          return null;
        },
        { what: `run ${runId} to finish`, timeoutMs },
      );
    } catch (e) {
      throw new Error(`${(e as Error).message}; last seen: ${await this.describeRun(runId)}`);
    }
  }

  /** Until the run has finished, or rests: paused, or waiting for a timer nobody moves the clock past. */
  async waitUntilSettled(runId = this.run.runId): Promise<StoredRunView> {
    let settled: StoredRunView | null = null;
    await this.waitUntil(`run ${runId} to finish or rest`, async () => {
      const v = await this.readView(runId);
      settled = v && [...FINISHED, 'paused', 'waiting'].includes(v.status) ? v : null;
      return settled !== null;
    }).catch(async (e) => {
      throw new Error(`${(e as Error).message}; last seen: ${await this.describeRun(runId)}`);
    });
    return settled!;
  }

  /**
   * Until the run is at rest and stays so: finished, paused, or waiting on a timer that is not yet due by the
   * scenario's clock (a timer a clock step made due is about to fire, so that run is not at rest). The state must
   * hold for a few polls of every worker, so a run a worker is just taking on is seen moving.
   */
  async waitUntilAtRest(runId = this.run.runId): Promise<StoredRunView> {
    let rest: StoredRunView | null = null;
    let since: { seq: number; at: number } | null = null;
    await this.waitUntil(`run ${runId} to finish or rest (paused, or waiting on a timer not yet due)`, async () => {
      const v = await this.readView(runId);
      const resting = v !== null && this.isAtRest(v);
      if (!resting) {
        since = null;
        return false;
      }
      if (!since || since.seq !== v!.lastSeq) since = { seq: v!.lastSeq, at: Date.now() };
      rest = v;
      return Date.now() - since.at >= 200;
    }).catch(async (e) => {
      throw new Error(`${(e as Error).message}; last seen: ${await this.describeRun(runId)}`);
    });
    return rest!;
  }

  /** Whether the run goes nowhere by itself: finished, paused, or waiting on a timer nobody has made due. */
  isAtRest(v: StoredRunView): boolean {
    return (
      FINISHED.includes(v.status) ||
      v.status === 'paused' ||
      // a due timer is about to fire, and so is one due within seconds (a retry's backoff, which fires in real
      // time without the scenario moving its clock), unless no worker is left to fire it or the run was tampered
      // with (the engine refuses to carry such a run on, so it stays where it is)
      (v.status === 'waiting' &&
        (!v.wakeAt || Date.parse(v.wakeAt) > this.clock.now().getTime() + SOON_MS || this.aliveWorkers.length === 0 || this.logBeforeTampering !== null))
    );
  }

  /**
   * Until the run stands where `holds` says (`where` in words: "be paused", "wait in \"wait\""). A run that can no
   * longer get there fails at once, saying where it is: one that finished (only an operator's step reopens a finished
   * run, and it does so before it returns), or one that has rested elsewhere for a second (paused, or waiting on a
   * timer nobody moves: nothing but a later step moves it on).
   */
  async waitUntilRunStands(where: string, holds: (v: StoredRunView) => boolean, runId = this.run.runId, timeoutMs?: number): Promise<StoredRunView> {
    let restingElsewhere: { seq: number; status: string; since: number } | null = null;
    try {
      return await waitFor(
        async () => {
          const v = await this.readView(runId);
          if (!v) return null;
          if (holds(v)) return v;
          if (FINISHED.includes(v.status)) throw new StopWaiting(`the run ${v.status} and will never ${where}`);
          if (!this.isAtRest(v)) {
            restingElsewhere = null;
            return null;
          }
          if (!restingElsewhere || restingElsewhere.seq !== v.lastSeq || restingElsewhere.status !== v.status) {
            restingElsewhere = { seq: v.lastSeq, status: v.status, since: Date.now() };
          } else if (Date.now() - restingElsewhere.since >= 1_000) {
            throw new StopWaiting(`the run rests ${v.status === 'paused' ? 'paused' : 'waiting on a timer nobody moves the clock past'} and will not ${where} by itself`);
          }
          return null;
        },
        { what: `the run to ${where}`, ...(timeoutMs ? { timeoutMs } : {}) },
      );
    } catch (e) {
      throw new Error(`${(e as Error).message}; last seen: ${await this.describeRun(runId)}`);
    }
  }

  async waitUntil(
    what: string,
    predicate: () => Promise<boolean>,
    timeoutMs = this.timeoutMs,
    intervalMs?: number,
  ): Promise<void> {
    await waitFor(async () => ((await predicate()) ? true : null), { what, timeoutMs, intervalMs });
  }

  async describeRun(runId = this.run.runId): Promise<string> {
    const v = await this.readView(runId).catch(() => null);
    const alive = this.workers.filter((w) => w.alive).length;
    return v ? `status ${v.status}, step ${v.currentStep ?? '-'}, ${v.lastSeq} events, ${alive} worker(s) alive` : 'no run view yet';
  }

  idempotencyKey(step: string, runId = this.run.runId, execution = 1): string {
    return idempotencyKeyFor(runId, step, execution);
  }

  /** Which execution of a step the run is on (2 after an operator resumed it once). */
  async executionsOf(step: string, runId = this.run.runId): Promise<number> {
    return replayLog(await this.events(runId)).executions[step] ?? 1;
  }

  /** The idempotency keys the order service saw for a step of the run, in the order they first arrived. */
  async keysSentFor(step: string, runId = this.run.runId): Promise<string[]> {
    const target = await this.orderService();
    const executions = await this.executionsOf(step, runId);
    const mine = new Set(Array.from({ length: executions }, (_, i) => this.idempotencyKey(step, runId, i + 1)));
    return [...new Set(target.requests.map((r) => r.idempotencyKey).filter((k): k is string => k !== null && mine.has(k)))];
  }

  // ───── operator actions

  /**
   * Act on the current run as an operator would, through the engine; a
   * refusal is kept, not thrown. Workers carry the action out: if none is
   * running (the last one crashed), one is started.
   */
  async act(who: string, phrase: ActionPhrase, reason: string, extra: { output?: unknown; patch?: unknown } = {}): Promise<void> {
    const run = this.run;
    const before = (await this.events(run.runId)).map((e) => `${e.seq} ${e.type}`);
    this.lastAction = { phrase, before, refusal: null };
    try {
      // the operator's command journals the head it commits, as a worker does (src/cli/main.ts: --journal)
      const journal = new HeadJournal(this.operatorJournal, this.keyring.chainKey());
      const result = await operate(this.engineDb, { keyring: this.keyring, clock: this.clock, journal }, run.projectId, run.runId, {
        action: phrase.action,
        by: who,
        reason,
        step: phrase.step,
        output: phrase.action === 'skip' ? extra.output : undefined,
        patch: phrase.action === 'patch' ? extra.patch : undefined,
      });
      if (result.journalProblem) throw new Error(`the operator's head was not journaled: ${result.journalProblem}`);
    } catch (e) {
      if (!(e instanceof OperatorActionError) && !(e instanceof NotFoundError)) throw e;
      this.lastAction.refusal = e.message;
      return;
    }
    if (this.aliveWorkers.length === 0) await this.startWorker();
  }

  expectActed(): void {
    if (this.lastAction?.refusal) throw new Error(`the operator's "${this.lastAction.phrase.text}" was refused: ${this.lastAction.refusal}`);
  }

  // ───── workers

  /** `moment`: what the failpoints stand for, so a wait for it can tell when it can no longer happen. */
  /** `intake`: the worker process serves a webhook intake of its own too (its `intakeUrl`), under the same failpoints. */
  async startWorker(opts: { failpoints?: string[]; moment?: Moment; env?: Record<string, string>; intake?: boolean } = {}): Promise<WorkerProcess> {
    const id = `w${++this.workerCount}`;
    const failpoints = opts.failpoints ?? this.pendingFailpoints;
    const moment = opts.failpoints ? opts.moment : (this.pendingMoment ?? undefined);
    if (moment) this.armedAt.set(id, moment);
    this.pendingFailpoints = [];
    this.pendingMoment = null;
    const worker = new WorkerProcess({
      id,
      databaseUrl: this.engineDbUrl,
      clockOffsetMs: this.clock.offset,
      failpoints: failpoints.join(';'),
      failpointLog: path.join(this.scratch, `failpoints-${id}.log`),
      keys: this.keyring.toEnv(),
      // the heads kept outside the database so far: a run rolled back behind one is refused, as in production
      extraEnv: { MESHHOOK_HEAD_JOURNAL: this.journalOf(id), MESHHOOK_CHECKPOINTS: this.checkpointFiles().join(','), ...(opts.intake ? { MESHHOOK_INTAKE_PORT: '0' } : {}), ...opts.env },
    });
    this.workers.push(worker);
    await worker.whenReady();
    return worker;
  }

  /**
   * Before a worker armed at a moment starts: the workers running with no moment armed (the one that brought a
   * run to its situation, say) are stopped cleanly, or they would carry the run on themselves and the moment
   * would never come. Armed workers and dead ones are left as they are.
   */
  async retireUnarmedWorkers(): Promise<void> {
    const unarmed = this.aliveWorkers.filter((w) => !w.opts.failpoints);
    await Promise.all(unarmed.map((w) => w.stop()));
  }

  /** Where a worker writes a signed checkpoint of every head it commits (outside the database). */
  journalOf(workerId: string): string {
    return path.join(this.scratch, `heads-${workerId}.jsonl`);
  }

  /** Where operators' commands journal the heads their actions commit. */
  get operatorJournal(): string {
    return path.join(this.scratch, 'heads-operators.jsonl');
  }

  /** Every file of signed heads kept outside the database: the workers' and operators' journals, and a checkpoint taken. */
  checkpointFiles(): string[] {
    const files = [...this.workers.map((w) => this.journalOf(w.opts.id)), this.operatorJournal, ...(this.checkpointFile ? [this.checkpointFile] : [])];
    return files.filter((f) => existsSync(f));
  }

  /** How the scenario verifies runs: with the engine's keys, and against every checkpoint kept outside the database. */
  verifyOptions(): VerifyRunOptions {
    return { keys: this.keyring.chainKeys(), checkpoints: CheckpointIndex.load(this.checkpointFiles(), this.keyring.chainKeys()) };
  }

  get aliveWorkers(): WorkerProcess[] {
    return this.workers.filter((w) => w.alive);
  }

  firedFailpoints(): Array<Record<string, any>> {
    return this.workers.flatMap((w) => readFailpointLog(w.opts.failpointLog));
  }

  advanceClock(ms: number): void {
    this.clock.advance(ms);
    for (const w of this.aliveWorkers) w.setClockOffset(this.clock.offset);
  }

  /** One more engine ticking the scenario's schedules, on the scenario's clock. */
  addScheduler(): Scheduler {
    const s = new Scheduler({ pool: this.engineDb, keyring: this.keyring, clock: this.clock });
    this.schedulers.push(s);
    return s;
  }

  /**
   * Every scheduler looks for due ticks at once, as engines ticking at the same moment do; the runs they start are
   * tracked like delivered ones, and a worker is started for them if the scenario has none.
   */
  async tickSchedules(): Promise<void> {
    if (this.schedulers.length === 0) return;
    if (this.aliveWorkers.length === 0) await this.startWorker();
    await Promise.all(this.schedulers.map((s) => s.tick()));
    for (const w of this.workflows.values()) {
      const { rows } = await inProject(this.engineDb, w.projectId, (c) =>
        c.query<{ run_id: string; delivery_id: string }>(
          `SELECT run_id, delivery_id FROM deliveries WHERE workflow_id = $1 AND delivery_id LIKE 'schedule@%' ORDER BY delivery_id COLLATE "C"`,
          [w.workflowId],
        ),
      );
      for (const r of rows) {
        if (this.runs.some((t) => t.runId === r.run_id)) continue;
        this.runs.push({ runId: r.run_id, project: w.project, projectId: w.projectId, workflow: w.workflow, body: JSON.stringify({ scheduledAt: r.delivery_id.slice('schedule@'.length) }), deliveryId: r.delivery_id });
      }
    }
  }

  // ───── faults

  recordFault(label: string, proof: () => Promise<string | null>): void {
    this.faults.push({ at: new Date(), label, proof });
  }

  /**
   * Every head a worker was told was committed: its journal line is written
   * only after COMMIT returned (a line cut short by a kill is not counted).
   */
  headsToldCommitted(): Array<{ worker: string; runId: string; seq: number; hash: string }> {
    return this.workers.flatMap((w) => {
      const file = this.journalOf(w.opts.id);
      if (!existsSync(file)) return [];
      const text = readFileSync(file, 'utf8');
      const whole = text.slice(0, text.lastIndexOf('\n') + 1);
      return whole
        .split('\n')
        .filter(Boolean)
        .map((l) => {
          const cp = JSON.parse(l) as { runId: string; seq: number; hash: string };
          return { worker: w.opts.id, runId: cp.runId, seq: cp.seq, hash: cp.hash };
        });
    });
  }

  /** Remember every event committed so far: none of them may be lost later. */
  async acknowledgeCommitted(): Promise<void> {
    const { rows } = await this.db.query<{ run_id: string; seq: number; hash: string }>('SELECT run_id, seq, hash FROM run_events ORDER BY run_id, seq');
    this.acknowledged = new Map();
    for (const r of rows) {
      const list = this.acknowledged.get(r.run_id) ?? [];
      list.push({ seq: r.seq, hash: r.hash });
      this.acknowledged.set(r.run_id, list);
    }
  }

  // ───── teardown

  async cleanup(): Promise<void> {
    await Promise.allSettled(this.lanes.map((l) => l.cleanup()));
    await Promise.allSettled(this.workers.map((w) => w.stop(2_000)));
    await this.intake?.close().catch(() => undefined);
    if (!this.sharesOrderService) await this.target?.close().catch(() => undefined);
    await this.proxy?.close().catch(() => undefined);
    // before the database is dropped: the server's replication connection holds it open
    await this.realtime?.close().catch(() => undefined);
    // a weakened role outlives the scenario's database: later scenarios must find it as the migrations left it
    if (this.weakened && 'undo' in this.weakened) await this.db?.query(this.weakened.undo).catch(() => undefined);
    await this.db?.end().catch(() => undefined);
    await this.engineDb?.end().catch(() => undefined);
    if (this.dbName) await dropScenarioDatabase(this.dbName, this.clusterSlot).catch(() => undefined);
    if (this.scratchDir) rmSync(this.scratchDir, { recursive: true, force: true });
  }
}

setWorldConstructor(ReplayWorld);
