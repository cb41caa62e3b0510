import type { RecordedEvent } from '../src/domain/events';
import type { Moment } from './parameter-types';
import { movedPastStep } from './moved-past';
import { StopWaiting } from './wait';
import type { WorkerProcess } from './worker-process';
import { FINISHED, ReplayWorld } from './world';

/*
 * Whether a {moment} can still happen. A scenario that arms a worker to crash
 * or stall at a moment the run will never reach — a step the workflow does not
 * have, a request of a step that sends none, a run that finished or moved past
 * it — fails at once with that sentence, instead of waiting out its timeout.
 */

type StepType = 'transform' | 'http_call' | 'branch' | 'delay' | 'terminate';

/** Which kinds of step a moment can happen in (all, when absent). */
const KINDS: Array<[RegExp, StepType[], string]> = [
  [/^(after-append@[^+]+\+HttpRequestPrepared|after-request-sent@|before-view-update@[^+]+\+HttpResponseRecorded)/, ['http_call'], 'sends no request'],
  [/^after-append@[^+]+\+TimerScheduled/, ['delay'], 'sets no timer (only a delay does; a call waits between attempts with a retry)'],
  [/^timer-fired@/, ['delay', 'http_call'], 'waits on no timer'],
];

/** The step a moment belongs to, if any. */
export function stepOfMoment(moment: Moment): string | null {
  return /@([a-z0-9_-]+)/.exec(moment.site)?.[1] ?? null;
}

/**
 * Why the moment cannot happen in any workflow the scenario set up, or null.
 * Checked as soon as the moment is armed, when the workflows are known.
 */
export function whyNeverPossible(world: ReplayWorld, moment: Moment): string | null {
  const step = stepOfMoment(moment);
  const workflows = [...world.workflows.values()];
  if (!step || workflows.length === 0) return null;
  const holders = workflows.flatMap((w) => w.definition.steps.filter((s) => s.id === step).map((s) => ({ w, type: s.type as StepType })));
  if (holders.length === 0) {
    const names = workflows.map((w) => `${w.workflow} (${w.definition.steps.map((s) => s.id).join(', ')})`).join('; ');
    return `no workflow of this scenario has a step "${step}": ${names}`;
  }
  const rule = KINDS.find(([re]) => re.test(moment.site));
  if (rule && !holders.some((h) => rule[1].includes(h.type))) {
    return `step "${step}" is a ${holders[0].type} step, which ${rule[2]}`;
  }
  return null;
}

/** A moment no workflow of the scenario can reach is refused when it is armed, before anything starts. */
export function expectReachable(world: ReplayWorld, moment: Moment): void {
  const never = whyNeverPossible(world, moment);
  if (never) throw new Error(`a worker cannot crash or stall ${moment.text}: ${never}`);
}

const stepOfEvent = (e: RecordedEvent): string | undefined => (e.data as { step?: string }).step;

/** Where a run is, for a message: status, step, and its last events. */
function whereRunIs(status: string, currentStep: string | null | undefined, events: RecordedEvent[]): string {
  const tail = events
    .slice(-4)
    .map((e) => `${e.seq} ${e.type}${stepOfEvent(e) ? `(${stepOfEvent(e)})` : ''}`)
    .join(', ');
  return `the run is ${status}${currentStep ? ` at "${currentStep}"` : ''}, its log ends ${tail}`;
}

/**
 * Why the moment can no longer happen for any of the scenario's runs, or null
 * while one of them may still reach it. A run cannot reach it once it finished,
 * once it holds the step's result (it moved past it), or while it waits on a
 * timer longer than the scenario is prepared to wait.
 */
export async function whyNoLongerPossible(world: ReplayWorld, moment: Moment): Promise<string | null> {
  const never = whyNeverPossible(world, moment);
  if (never) return never;
  if (world.runs.length === 0) return null;
  const step = stepOfMoment(moment);
  const reasons: string[] = [];
  for (const run of world.runs) {
    const view = await world.readView(run.runId);
    if (!view) return null; // not started yet
    const events = await world.events(run.runId);
    const where = whereRunIs(view.status, view.currentStep, events);
    if (FINISHED.includes(view.status)) {
      reasons.push(`run ${run.runId} finished without reaching it (${where})`);
      continue;
    }
    const moved = step !== null && movedPastStep(events, step);
    if (moved) {
      reasons.push(`run ${run.runId} moved past it (${where})`);
      continue;
    }
    if (view.status === 'paused') {
      reasons.push(`run ${run.runId} is paused and nobody unpauses it (${where})`);
      continue;
    }
    if (view.status === 'waiting' && view.wakeAt) {
      const due = Date.parse(view.wakeAt) - world.clock.now().getTime();
      if (due > world.timeoutMs) {
        reasons.push(
          `run ${run.runId} waits on a timer due in ${Math.round(due / 1000)} s and nobody moves the clock (${where}); with a worker armed, ` +
            '"the clock moves forward" moves it at once, so to move it past a timer, say first that the run is waiting in its delay step',
        );
        continue;
      }
    }
    return null;
  }
  return reasons.join('; ');
}

/** A reason must hold this long before it counts, so a worker that is just reaching its moment gets there. */
const GRACE_MS = 300;

/**
 * Waits until `reached()` says the armed worker got to its moment; fails at
 * once, naming the moment and where the run is, when it no longer can.
 */
export async function waitForMoment(
  world: ReplayWorld,
  worker: WorkerProcess,
  moment: Moment,
  doing: 'crash' | 'stall',
  reached: () => boolean,
): Promise<void> {
  let since: number | null = null;
  await world.waitUntil(`worker ${worker.opts.id} to ${doing} ${moment.text}`, async () => {
    if (reached()) return true;
    const why = await whyNoLongerPossible(world, moment);
    if (why === null) {
      since = null;
      return false;
    }
    since ??= Date.now();
    if (Date.now() - since < GRACE_MS) return false;
    if (reached()) return true;
    throw new StopWaiting(`worker ${worker.opts.id} was set to ${doing} ${moment.text}, but that can no longer happen: ${why}`);
  });
}

/**
 * Waits until every worker armed to crash has died, so the next worker starts
 * after the crash; one armed at a named moment fails fast when its run can no
 * longer reach it.
 */
export async function untilArmedWorkersCrashed(world: ReplayWorld, also: 'and any other armed worker died' | 'only' = 'only'): Promise<void> {
  const isArmed = (w: WorkerProcess) => (also === 'only' ? /=crash/.test(w.opts.failpoints ?? '') : Boolean(w.opts.failpoints));
  const armed = world.workers.filter((w) => w.alive && isArmed(w));
  for (const worker of armed) {
    const moment = world.armedAt.get(worker.opts.id);
    if (moment && /=crash/.test(worker.opts.failpoints ?? '')) await waitForMoment(world, worker, moment, 'crash', () => !worker.alive);
  }
  await world
    .waitUntil(`the crashing worker(s) to die (${armed.map((w) => w.opts.id).join(', ')})`, async () => world.workers.every((w) => !w.alive || !isArmed(w)))
    .catch(async (e) => {
      throw new Error(`${(e as Error).message}; run: ${await world.describeRun()}`);
    });
}

/**
 * Until no worker is, or can still be, held at an armed stall: each worker armed with a delay failpoint is dead,
 * or its delay fired and has run out (plus a few polls, so the worker is past it), or the moment it was armed at
 * can no longer happen. Returns the workers waited for.
 */
export async function untilStallsEnded(world: ReplayWorld): Promise<string[]> {
  const ended: string[] = [];
  for (const worker of world.workers.filter((w) => /=delay:/.test(w.opts.failpoints ?? ''))) {
    const delays = (worker.opts.failpoints ?? '').split(';').filter((f) => /=delay:/.test(f));
    const longest = Math.max(...delays.map((f) => Number(/=delay:(\d+)/.exec(f)?.[1] ?? 1000)));
    const moment = world.armedAt.get(worker.opts.id);
    await world.waitUntil(
      `worker ${worker.opts.id}'s stall (${worker.opts.failpoints}) to end or become impossible`,
      async () => {
        if (!worker.alive) return true;
        const fired = world.firedFailpoints().filter((f) => f.pid === worker.pid && f.action === 'delay');
        if (fired.length > 0) return fired.every((f) => Date.now() >= Date.parse(String(f.at)) + longest + 300);
        if (moment) return (await whyNoLongerPossible(world, moment)) !== null;
        return false;
      },
      world.timeoutMs + longest,
    );
    ended.push(worker.opts.id);
  }
  return ended;
}

/**
 * Why a moment a live worker is armed at, and has not reached, can no longer come for any run, or null. Steps that
 * wait for a run to finish ask it, so a scenario whose crash or stall will never happen fails within a second with
 * this sentence instead of waiting out its timeout.
 */
export async function whyArmedMomentCannotCome(world: ReplayWorld): Promise<string | null> {
  for (const [id, moment] of world.armedAt) {
    const worker = world.workers.find((w) => w.opts.id === id);
    if (!worker || !worker.alive) continue;
    if (world.firedFailpoints().some((f) => f.pid === worker.pid && (f.action === 'crash' || f.action === 'delay'))) continue;
    const why = await whyNoLongerPossible(world, moment);
    if (why) return `worker ${id} was set to ${/=crash/.test(worker.opts.failpoints ?? '') ? 'crash' : 'stall'} ${moment.text}, but that can no longer happen: ${why}`;
  }
  return null;
}
