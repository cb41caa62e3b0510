import { randomUUID } from 'node:crypto';
import { FAILPOINTS } from '../src/faults/failpoints';
import { problemsOf, verifyRun } from '../src/replay-service';
import type { StoredRunView } from '../src/replay-service';
import { landedDuringStall, Stall, STALL_MS, strike } from './faults';
import type { Fault } from './parameter-types';
import { normalise } from './normalise';
import { readFailpointLog, type WorkerProcess } from './worker-process';
import { lanesHaveOwnServers } from './cluster';
import { FINISHED, ReplayWorld } from './world';

/*
 * The crash-point sweep. A reference run on a worker that traces every
 * failpoint lists each place the engine can die during that workflow
 * (name@step+EventType#occurrence). Each of those places then gets a run of
 * its own, on a worker armed to die exactly there, and a new worker takes
 * over. A new failpoint in the engine shows up in the trace, and so in the
 * sweep, without touching the specs.
 */

/** How often a sweep looks at its run: a sweep runs hundreds of them on 2 cores, and a fault needs only land inside a 2 s stall. */
const SWEEP_POLL_MS = 50;

export const TRACE_ALL = FAILPOINTS.map((name) => `${name}=trace`);

export interface TraceRecord {
  name: string;
  runId: string;
  step: string | null;
  events?: string[];
  occurrence: number;
  pid: number;
  action: string;
  at: string;
}

export interface CrashPoint {
  /** position in the reference trace */
  index: number;
  /** failpoint without action or occurrence, e.g. before-view-update@push+StepSucceeded */
  base: string;
  /** the n-th hit of base in a worker that runs the whole order from the start */
  occurrence: number;
  /** e.g. before-view-update@push+StepSucceeded#1 */
  spec: string;
  /** a point of the worker that took a run over: its occurrence counts from that worker's start, and only it is armed there */
  afterTakeover?: boolean;
}

export interface Reference {
  project: string;
  workflow: string;
  body: string;
  runId: string;
  view: StoredRunView;
  shape: string[];
  points: CrashPoint[];
  /** how many effects the order service took for each call step of the reference (0 when it refused every attempt) */
  effects: Record<string, number>;
  /** a takeover reference: its first worker died here, and `points` are those of the worker that took the run over */
  firstWorkerDied?: CrashPoint;
}

export type FaultKind = 'crash' | 'kill' | 'sever' | 'blackhole' | 'drop-connections' | 'db-restart';

export interface PlannedFault {
  point: CrashPoint;
  kind: FaultKind;
}

export interface FaultedRun {
  label: string;
  runId: string | null;
  faults: Array<{ label: string; proof: string | null }>;
  recovered: boolean;
  sameAsReference: string | null;
  replay: string | null;
  effects: string | null;
  error: string | null;
}

/** The batch's last event type names it best: HttpRequestPrepared, StepSucceeded, RunFinished, TimerScheduled… */
export function baseOf(r: Pick<TraceRecord, 'name' | 'step' | 'events'>): string {
  const type = r.events && r.events.length ? `+${r.events[r.events.length - 1]}` : '';
  return `${r.name}${r.step ? `@${r.step}` : ''}${type}`;
}

/** Matches like the engine's Failpoints.hit: same name and step, and the batch holds the event type. */
function matches(base: string, r: TraceRecord): boolean {
  const m = /^([a-z-]+)(?:@([a-z0-9_-]+))?(?:\+([A-Za-z]+))?$/.exec(base)!;
  return r.name === m[1] && (!m[2] || r.step === m[2]) && (!m[3] || (r.events ?? []).includes(m[3]));
}

export function crashPointsFrom(trace: TraceRecord[]): CrashPoint[] {
  return trace.map((r, index) => {
    const base = baseOf(r);
    const occurrence = trace.slice(0, index + 1).filter((t) => matches(base, t)).length;
    return { index, base, occurrence, spec: `${base}#${occurrence}` };
  });
}

export function shapeOf(events: Array<{ type: string; data: unknown }>): string[] {
  return events.map((e) => `${e.type}${(e.data as { step?: string }).step ? `(${(e.data as { step?: string }).step})` : ''}`);
}

function pick(v: StoredRunView): unknown {
  return normalise({ status: v.status, outputs: v.outputs, attempts: v.attempts, result: v.result, currentStep: v.currentStep });
}

async function readView(world: ReplayWorld, runId: string): Promise<StoredRunView | null> {
  return world.readView(runId);
}

/** Move the clock past a timer the run waits for, so delays and retry backoffs fire without waiting. */
async function nudgeClock(world: ReplayWorld, view: StoredRunView | null): Promise<void> {
  if (view?.status !== 'waiting' || !view.wakeAt) return;
  const due = Date.parse(view.wakeAt) - world.clock.now().getTime();
  if (due > 0) world.advanceClock(due + 1_000);
}

/** Wait until the run has finished, moving the clock past any timer it waits for. */
export async function settle(world: ReplayWorld, runId: string, until: () => boolean = () => false): Promise<StoredRunView | null> {
  return settleOrReach(world, () => runId, until);
}

async function stopAll(world: ReplayWorld): Promise<void> {
  await Promise.all(world.aliveWorkers.map((w) => w.stop(2_000)));
}

/** What one worker's failpoints recorded (its own log only: a lane's many workers are not re-read on every poll). */
function firedBy(worker: WorkerProcess): TraceRecord[] {
  return readFailpointLog(worker.opts.failpointLog) as unknown as TraceRecord[];
}

function fired(worker: WorkerProcess, action: string): TraceRecord | null {
  return firedBy(worker).find((f) => f.action === action) ?? null;
}

/** The reference: a fault-free run of the workflow on a worker that notes every failpoint it passes. */
export async function traceReference(world: ReplayWorld, project: string, workflow: string, body: string): Promise<Reference> {
  await stopAll(world);
  const tracer = await world.startWorker({ failpoints: TRACE_ALL, intake: true });
  const answer = await world.deliver(project, workflow, body, { via: tracer.intakeUrl! });
  if (answer.status !== 202) throw new Error(`the reference delivery was refused: ${JSON.stringify(answer)}`);
  const runId: string = answer.body.runId;
  const view = await settle(world, runId);
  await tracer.stop();
  const trace = firedBy(tracer).filter((r) => r.runId === runId);
  return { project, workflow, body, runId, view: view!, shape: shapeOf(await world.events(runId)), points: crashPointsFrom(trace), effects: await effectsOf(world, project, workflow, runId) };
}

/**
 * A takeover reference: the order's first worker dies at `site` (a moment that
 * leaves the run mid-step), and a tracing worker takes the run over. Its crash
 * points — from picking the run up (during-recovery) to the end — are the
 * ones a sweep of this reference strikes, each after the same first death.
 */
export async function traceTakeoverReference(world: ReplayWorld, project: string, workflow: string, body: string, site: string): Promise<Reference> {
  await stopAll(world);
  const first = await world.startWorker({ failpoints: [`${site}#1=crash`], intake: true });
  const answer = await world.deliver(project, workflow, body, { via: first.intakeUrl! });
  if (answer.status !== 202) throw new Error(`the reference delivery was refused: ${JSON.stringify(answer)}`);
  const runId: string = answer.body.runId;
  // a delay before the moment: move the clock past its timer
  await settleOrReach(world, () => runId, () => !first.alive).catch(() => undefined);
  const exit = first.exitStatus;
  if (!exit || exit.signal !== 'SIGKILL' || !fired(first, 'crash')) throw new Error(`the reference's first worker did not die at ${site} (${await world.describeRun(runId)})`);
  await world.acknowledgeCommitted();
  const tracer = await world.startWorker({ failpoints: TRACE_ALL });
  const view = await settle(world, runId);
  await tracer.stop();
  const trace = firedBy(tracer).filter((r) => r.runId === runId);
  if (!trace.some((r) => r.name === 'during-recovery')) throw new Error(`the worker taking over never recovered the run: ${site} did not leave it mid-step`);
  return {
    project,
    workflow,
    body,
    runId,
    view: view!,
    shape: shapeOf(await world.events(runId)),
    points: crashPointsFrom(trace).map((p) => ({ ...p, afterTakeover: true })),
    effects: await effectsOf(world, project, workflow, runId),
    firstWorkerDied: { index: -1, base: site, occurrence: 1, spec: `${site}#1` },
  };
}

/** The faults of one run of the sweep: the fault at the point, after the reference's own first death if it had one. */
export function planFor(ref: Reference, point: CrashPoint, kind: FaultKind): PlannedFault[] {
  return ref.firstWorkerDied ? [{ point: ref.firstWorkerDied, kind: 'crash' }, { point, kind }] : [{ point, kind }];
}

/** The effects the order service took for each call step of a run, by the run's idempotency keys. */
async function effectsOf(world: ReplayWorld, project: string, workflow: string, runId: string): Promise<Record<string, number>> {
  const target = await world.orderService();
  const steps = world.workflow(project, workflow).definition.steps.filter((s) => s.type === 'http_call').map((s) => s.id);
  return Object.fromEntries(steps.map((s) => [s, target.effects().filter((e) => e.idempotencyKey === world.idempotencyKey(s, runId)).length]));
}

/** The checks every faulted run must pass, each as a problem sentence or null. */
async function judge(world: ReplayWorld, ref: Reference, run: FaultedRun): Promise<void> {
  const runId = run.runId!;
  const view = await readView(world, runId);
  const diffs: string[] = [];
  if (!view || !FINISHED.includes(view.status)) diffs.push(`did not finish (${view?.status ?? 'no view'})`);
  else if (JSON.stringify(pick(view)) !== JSON.stringify(pick(ref.view))) diffs.push(`view ${JSON.stringify(pick(view))} differs from ${JSON.stringify(pick(ref.view))}`);
  const shape = shapeOf(await world.events(runId));
  if (shape.join(' ') !== ref.shape.join(' ')) diffs.push(`events [${shape.join(', ')}] differ from [${ref.shape.join(', ')}]`);
  // one delivery, one run: a start the sender was never told about would be a second run of the order
  const { rows } = await world.db.query<{ id: string }>('SELECT id::text FROM runs');
  const unknown = rows.filter((r) => !world.runs.some((t) => t.runId === r.id));
  if (unknown.length) diffs.push(`${unknown.length} run(s) started that no sender was told about: ${unknown.map((r) => r.id).join(', ')}`);
  run.sameAsReference = diffs.length ? diffs.join('; ') : null;
  const v = await verifyRun(world.engineDb, await world.projectIdOf(runId), runId, world.verifyOptions());
  run.replay = v.ok ? null : problemsOf(v).join('; ');
  const took = await effectsOf(world, ref.project, ref.workflow, runId);
  const wrong = Object.entries(took)
    .filter(([s, n]) => n !== ref.effects[s])
    .map(([s, n]) => `${s} took effect ${n} times, the reference ${ref.effects[s]}`);
  run.effects = wrong.length ? wrong.join('; ') : null;
}

/** One run per crash point (or per sampled crash point): the fault strikes exactly there, a new worker takes over when one died. */
export async function sweepCrashPoints(world: ReplayWorld, ref: Reference, kind: FaultKind = 'crash', points: CrashPoint[] = ref.points): Promise<FaultedRun[]> {
  return sideBySide(world, kind === 'db-restart' && !lanesHaveOwnServers(), points, (lane, point) => runWithFaults(lane, ref, planFor(ref, point, kind)));
}

/**
 * One faulted run per item, on as many lanes as the world allows, each lane
 * taking the next item when its run is over. A lane is a database on a
 * Postgres of its own, so one lane's database crash touches no other; on a
 * server the lanes share, runs that crash it go one at a time.
 */
export async function sideBySide<T>(world: ReplayWorld, oneAtATime: boolean, items: T[], runOne: (lane: ReplayWorld, item: T) => Promise<FaultedRun>): Promise<FaultedRun[]> {
  const lanes = oneAtATime ? [world] : await world.openLanes(Math.min(world.sweepLanes, items.length));
  const results: FaultedRun[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    lanes.map(async (lane) => {
      while (next < items.length) {
        const i = next++;
        results[i] = await runOne(lane, items[i]);
      }
    }),
  );
  return results;
}

/**
 * `share` of the crash points, at least one, chosen by a seeded shuffle: the
 * ci profile samples the fault matrix on every run, the sweep profile takes
 * every point (share 1).
 */
export function samplePoints(points: CrashPoint[], share: number, seed: number): CrashPoint[] {
  if (share >= 1) return points;
  const k = Math.max(1, Math.round(points.length * share));
  let a = seed >>> 0;
  const random = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const order = points.map((p) => ({ p, r: random() })).sort((x, y) => x.r - y.r);
  return order
    .slice(0, k)
    .map((x) => x.p)
    .sort((x, y) => x.index - y.index);
}

/**
 * One run of the reference order under a schedule of faults, in the order the
 * run reaches their crash points. A worker that survives a fault keeps going
 * and meets the next one itself; a worker that dies is replaced by one armed
 * for the faults still to come.
 */
export async function runWithFaults(world: ReplayWorld, ref: Reference, plan: PlannedFault[]): Promise<FaultedRun> {
  const label = plan.map((f) => `${f.kind} at ${f.point.spec}`).join(', then ');
  const run: FaultedRun = { label, runId: null, faults: [], recovered: false, sameAsReference: null, replay: null, effects: null, error: null };
  await stopAll(world);
  const armFor = (rest: PlannedFault[], fromStart: boolean): string[] =>
    rest
      // a takeover's points belong to the worker that takes over, never to the first
      .filter((f) => !(fromStart && f.point.afterTakeover))
      .map((f) => {
        // from the start of the run (or of a takeover reference's second worker), occurrences count exactly as in
        // the trace; a worker taking over at a random schedule's fault counts afresh
        const where = fromStart || f.point.afterTakeover ? f.point.spec : `${f.point.base}#1`;
        return `${where}=${f.kind === 'crash' ? 'crash' : `delay:${STALL_MS}`}`;
      });
  try {
    // every worker serves the intake too, so the start of the run has crash points like any step
    let worker = await world.startWorker({ failpoints: armFor(plan, true), intake: true });
    let deliveryFailed = false;
    const delivered = deliverUntilAcknowledged(world, ref, () => worker).then(
      (id) => (run.runId = id),
      (e: Error) => {
        deliveryFailed = true;
        throw e;
      },
    );
    delivered.catch(() => undefined);
    // the armed points this worker has hit and the schedule has already dealt with: a worker may reach its next
    // point while the fault before is still being applied, and that hit is the next fault's, not one to wait past
    let handled = 0;
    for (let i = 0; i < plan.length; i++) {
      const fault = plan[i];
      const armedHits = () => firedBy(worker).filter((f) => f.action !== 'trace');
      const before = handled;
      const reached = () => armedHits().length > before || !worker.alive || deliveryFailed;
      await settleOrReach(world, () => run.runId, reached);
      // the last crash points come after the run is recorded as finished: give the worker a moment to reach them
      if (!reached()) await world.waitUntil('the worker to reach its crash point', async () => reached(), 3_000).catch(() => undefined);
      const hit = armedHits()[before];
      if (!hit) {
        run.faults.push({ label: `${fault.kind} at ${fault.point.spec}`, proof: null });
        break;
      }
      const at = `${baseOf(hit)}#${hit.occurrence}`;
      const proof = await inject(world, worker, fault.kind, at, hit);
      run.faults.push({ label: `${fault.kind} at ${fault.point.spec}`, proof });
      handled = before + 1;
      if (!worker.alive) {
        await world.acknowledgeCommitted();
        worker = await world.startWorker({ failpoints: [...armFor(plan.slice(i + 1), false), ...TRACE_ALL], intake: true });
        handled = 0;
      }
    }
    if (world.aliveWorkers.length === 0) worker = await world.startWorker({ failpoints: TRACE_ALL, intake: true });
    await delivered;
    await finishAndJudge(world, ref, run);
  } catch (e) {
    run.error = (e as Error).message;
    await stopAll(world).catch(() => undefined);
  }
  return run;
}

/**
 * Deliver the order as a webhook sender does: to the intake of whichever
 * worker is up, and until it is acknowledged, the same delivery (id and
 * exact bytes) again. A fault at the start of the run leaves the sender with
 * no answer or a 503; a refusal of any other kind is a defect.
 */
async function deliverUntilAcknowledged(world: ReplayWorld, ref: Reference, current: () => WorkerProcess): Promise<string> {
  const deliveryId = `dlv_${randomUUID().slice(0, 13)}`;
  const deadline = Date.now() + world.timeoutMs;
  let last = 'no worker with an intake was up';
  while (Date.now() < deadline) {
    const w = current();
    if (w.alive && w.intakeUrl) {
      const answer = await world.deliver(ref.project, ref.workflow, ref.body, { deliveryId, via: w.intakeUrl }).catch((e: Error) => e);
      if (answer instanceof Error) last = `${answer.message}${answer.cause ? ` (${(answer.cause as Error).message})` : ''}`;
      else if (answer.status === 202 || answer.status === 200) return answer.body.runId;
      else if (answer.status === 503) last = `503 ${JSON.stringify(answer.body)}`;
      else throw new Error(`the delivery was refused: ${answer.status} ${JSON.stringify(answer.body)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the delivery was never acknowledged (last: ${last})`);
}

/**
 * Until the run (once the intake has started it) has finished, or `until`
 * holds; moves the clock past any timer it waits for. Resolves to the finished
 * run's view, or null when `until` ended the wait first.
 */
async function settleOrReach(world: ReplayWorld, runId: () => string | null, until: () => boolean): Promise<StoredRunView | null> {
  let finished: StoredRunView | null = null;
  await world.waitUntil(
    `the order to finish or the worker to reach its crash point (${runId() ? await world.describeRun(runId()!) : 'not started yet'})`,
    async () => {
      const id = runId();
      if (id) {
        const v = await readView(world, id);
        if (v && FINISHED.includes(v.status)) finished = v;
        else await nudgeClock(world, v);
      }
      return finished !== null || until();
    },
    world.timeoutMs,
    SWEEP_POLL_MS,
  );
  return finished;
}

/** Let the run finish on the workers now running, note whether one had to recover it, and judge it against the reference. */
async function finishAndJudge(world: ReplayWorld, ref: Reference, run: FaultedRun): Promise<void> {
  const runId = run.runId!;
  await settle(world, runId);
  run.recovered = world.firedFailpoints().some((f) => f.runId === runId && f.name === 'during-recovery');
  await stopAll(world);
  await judge(world, ref, run);
}

/** Apply one fault at the moment the worker reached (it crashed there by itself, or it stalls there now). */
async function inject(world: ReplayWorld, worker: WorkerProcess, kind: FaultKind, at: string, hit: TraceRecord): Promise<string | null> {
  switch (kind) {
    case 'crash': {
      const exit = await worker.exited;
      return fired(worker, 'crash') && exit.signal === 'SIGKILL' ? `${worker.opts.id} died by SIGKILL at ${at}` : null;
    }
    case 'kill': {
      const exit = await worker.kill();
      return exit.signal === 'SIGKILL' ? `${worker.opts.id} SIGKILLed while stalled at ${at}` : null;
    }
    default: {
      // database and network faults: the same ones the @db-faults scenarios name
      const fault: Fault = {
        sever: { kind: 'sever' as const, text: 'the network to the database is cut' },
        blackhole: { kind: 'silence' as const, text: 'the network to the database goes silent', ms: STALL_MS + 500 },
        'drop-connections': { kind: 'drop-connections' as const, text: "the database drops the engine's connections" },
        'db-restart': { kind: 'db-crash' as const, text: 'the database crashes and restarts' },
      }[kind];
      // the same proof as the scenarios: it must land while the worker is still paused at its point
      const stall: Stall = { worker, site: baseOf(hit), firedAt: new Date(hit.at) };
      const { injectedAt, proof } = await strike(world, fault, stall);
      const landed = landedDuringStall(stall, injectedAt, proof);
      return landed ? `${landed} at ${at}` : null;
    }
  }
}

/** How long a paced worker pauses at every failpoint, so that a run lasts long enough for a random moment to land inside it. */
export const PACE_MS = 30;

/**
 * One run of the reference order whose worker is SIGKILLed from outside
 * `delayMs` after it started on the run (wall time, not a named moment), then replaced
 * by a new worker. The worker pauses PACE_MS at every failpoint, so the run
 * lasts at least PACE_MS × the reference's crash points; callers pick delays
 * inside that span. The kill proves something only if the run was unfinished
 * when it landed: with one worker and that worker dead, a view read after
 * the kill shows exactly what the kill interrupted.
 */
export async function runWithTimedKill(world: ReplayWorld, ref: Reference, delayMs: number): Promise<FaultedRun> {
  const label = `SIGKILL ${delayMs} ms into the run`;
  const run: FaultedRun = { label, runId: null, faults: [], recovered: false, sameAsReference: null, replay: null, effects: null, error: null };
  await stopAll(world);
  try {
    const worker = await world.startWorker({ failpoints: FAILPOINTS.map((name) => `${name}=delay:${PACE_MS}`) });
    const answer = await world.deliver(ref.project, ref.workflow, ref.body);
    if (answer.status !== 202) throw new Error(`delivery refused: ${JSON.stringify(answer)}`);
    const runId: string = answer.body.runId;
    run.runId = runId;
    // time counts from the worker's first failpoint on this run, so the kill lands while it works on it
    await world.waitUntil('the worker to start on the run', async () => firedBy(worker).some((f) => f.runId === runId));
    await new Promise((r) => setTimeout(r, delayMs));
    const exit = await worker.kill();
    const interrupted = await readView(world, runId);
    const unfinished = interrupted !== null && !FINISHED.includes(interrupted.status);
    run.faults.push({
      label,
      proof:
        exit.signal === 'SIGKILL' && unfinished
          ? `${worker.opts.id} died by SIGKILL with the run at event ${interrupted.lastSeq}${interrupted.currentStep ? `, in step ${interrupted.currentStep}` : ', before its first step'}`
          : null,
    });
    await world.acknowledgeCommitted();
    await world.startWorker({ failpoints: TRACE_ALL });
    await finishAndJudge(world, ref, run);
  } catch (e) {
    run.error = (e as Error).message;
    await stopAll(world).catch(() => undefined);
  }
  return run;
}

export function report(runs: FaultedRun[]): string {
  const lines = runs.map((r, i) => {
    const problems = [
      ...r.faults.filter((f) => !f.proof).map((f) => `NOT FIRED: ${f.label}`),
      r.error && `error: ${r.error}`,
      r.sameAsReference && `differs: ${r.sameAsReference}`,
      r.replay && `replay: ${r.replay}`,
      r.effects && `effects: ${r.effects}`,
    ].filter(Boolean);
    const proofs = r.faults.map((f) => f.proof ?? '-').join('; ');
    return `${String(i + 1).padStart(3)}. ${r.label}${r.recovered ? ' (recovered)' : ''}: ${problems.length ? problems.join(' | ') : `ok — ${proofs}`}`;
  });
  return lines.join('\n');
}
