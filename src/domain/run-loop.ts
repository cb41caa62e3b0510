import { Command, nextAction, RunDecider, RunState } from './decider';
import type { HttpOutcome, HttpRequestPrepared, RunEvent } from './events';

/*
 * How a run moves forward, written once: what to decide next, in what order,
 * and when to commit. It does no I/O. It asks for what it needs from outside
 * (the time, a target's answer, a jitter draw, a batch recorded) by yielding
 * an `Ask`, and whoever drives it answers: the engine's Worker with the
 * clock, real HTTP and its run repository (src/store/run-repository.ts: the
 * event log, or the bench's state-stored baseline), the replay bench's
 * recorder, and the unit tests' simulator synchronously from a script. So
 * they cannot drift apart in how a run advances; they differ only in where
 * its batches go.
 */

export interface SendResult {
  outcome: HttpOutcome;
  durationMs: number;
}

/** A batch of decided events, ready to be recorded after `stateBefore`. */
export interface DecidedBatch {
  events: RunEvent[];
  /** the step the batch's first decision was about (failpoints name it) */
  step: string | null;
  stateBefore: RunState;
  stateAfter: RunState;
}

/** Moments a host may want to act at (the Worker's failpoints of the same names). */
export type LoopMoment = 'after-request-sent' | 'timer-fired';

export type Ask =
  | { kind: 'now' }
  | { kind: 'send'; request: HttpRequestPrepared['data'] }
  | { kind: 'jitter' }
  /** a timer is not due yet: true when the host has moved its clock to `dueAt` (fire it now), false to stop here */
  | { kind: 'due'; dueAt: string }
  | { kind: 'moment'; name: LoopMoment; step: string | null }
  /** record this batch; the answer is the state as recorded */
  | { kind: 'commit'; batch: DecidedBatch };

interface Answers {
  now: Date;
  send: SendResult;
  jitter: number;
  due: boolean;
  moment: void;
  commit: RunState;
}

/** How a host answers each kind of ask. */
export type LoopHost<Async extends boolean = true> = {
  [K in Ask['kind']]: (ask: Extract<Ask, { kind: K }>) => Async extends true ? Answers[K] | Promise<Answers[K]> : Answers[K];
};

export interface LoopOptions {
  /** decide steps that need nothing from outside (transforms, branches, the end) together and commit them as one batch */
  merge: boolean;
  /** checked before each decision: stop (committing what is decided) once it says so */
  stopping?: () => boolean;
}

/** at most this many events of pure steps are decided before they are committed together */
const MAX_MERGED_EVENTS = 64;

function* ask<K extends Ask['kind']>(q: Extract<Ask, { kind: K }>): Generator<Ask, Answers[K], unknown> {
  return (yield q) as Answers[K];
}

/**
 * Drive a run from `state` as far as it can go now. Whatever needs the
 * outside world (a request to send, a timer) is committed before it is
 * asked for; steps that need nothing from outside are decided one after
 * another and, with `merge`, committed together, the way the log would hold
 * them anyway. Returns the state last committed.
 */
export function* runLoop(decider: RunDecider, state: RunState, opts: LoopOptions): Generator<Ask, RunState, unknown> {
  let committed = state;
  let working = state;
  let pending: RunEvent[] = [];
  let pendingStep: string | null = null;
  const commit = function* (): Generator<Ask, void, unknown> {
    const batch: DecidedBatch = { events: pending, step: pendingStep, stateBefore: committed, stateAfter: working };
    pending = [];
    committed = yield* ask<'commit'>({ kind: 'commit', batch });
    working = committed;
  };
  while (!opts.stopping?.()) {
    const action = nextAction(working);
    if (action.kind === 'none') break;
    let command: Command;
    let step: string | null;
    // a run with a deadline (semantics 5) is failed once it has passed, instead of whatever it would do next
    const deadline = working.deadline;
    const deadlineMs = deadline === null ? Infinity : Date.parse(deadline);
    if (action.kind === 'execute-step') {
      step = working.cursor ?? decider.definition.start ?? decider.definition.steps[0].id;
      const now = yield* ask<'now'>({ kind: 'now' });
      command = now.getTime() >= deadlineMs ? passDeadline(now) : { type: 'ExecuteStep', data: { at: now.toISOString() } };
    } else if (action.kind === 'send-request') {
      const req = action.request;
      step = req.step;
      const before = deadline !== null ? yield* ask<'now'>({ kind: 'now' }) : null;
      if (before && before.getTime() >= deadlineMs) {
        // not sent: the request is recorded, but the run's time is up
        command = passDeadline(before);
      } else {
        const { outcome, durationMs } = yield* ask<'send'>({ kind: 'send', request: req });
        yield* ask<'moment'>({ kind: 'moment', name: 'after-request-sent', step });
        const at = (yield* ask<'now'>({ kind: 'now' })).toISOString();
        const jitter = round6(yield* ask<'jitter'>({ kind: 'jitter' }));
        command = { type: 'RecordHttpResult', data: { step, attempt: req.attempt, at, durationMs, jitter, outcome } };
      }
    } else {
      let now = yield* ask<'now'>({ kind: 'now' });
      // the timer's time, or the deadline's when that comes first
      const wakeAt = deadlineMs < Date.parse(action.dueAt) ? deadline! : action.dueAt;
      if (now.getTime() < Date.parse(wakeAt)) {
        // not due: the host either stops here (its wake_at holds when to come back) or moves its clock on
        if (!(yield* ask<'due'>({ kind: 'due', dueAt: wakeAt }))) break;
        now = yield* ask<'now'>({ kind: 'now' });
      }
      step = working.pendingTimer!.step;
      if (now.getTime() >= deadlineMs) command = passDeadline(now);
      else {
        yield* ask<'moment'>({ kind: 'moment', name: 'timer-fired', step });
        command = { type: 'FireTimer', data: { timerId: action.timerId, at: now.toISOString() } };
      }
    }
    const events = decider.decide(command, working);
    if (pending.length === 0) pendingStep = step;
    pending.push(...events);
    working = events.reduce(decider.evolve, working);
    const more = opts.merge && !opts.stopping?.() && pending.length < MAX_MERGED_EVENTS && nextAction(working).kind === 'execute-step';
    if (!more) yield* commit();
  }
  if (pending.length > 0) yield* commit();
  return committed;
}

/** Drive a loop with a host whose answers may take time (a database, the network). */
export async function driveLoop(loop: Generator<Ask, RunState, unknown>, host: LoopHost): Promise<RunState> {
  let r = loop.next();
  while (!r.done) r = loop.next(await (host[r.value.kind] as (a: Ask) => unknown)(r.value));
  return r.value;
}

/** Drive a loop with a host that answers at once (a script, in tests). */
export function driveLoopSync(loop: Generator<Ask, RunState, unknown>, host: LoopHost<false>): RunState {
  let r = loop.next();
  while (!r.done) r = loop.next((host[r.value.kind] as (a: Ask) => unknown)(r.value));
  return r.value;
}

/** The command that fails a run whose deadline has passed, decided from the moment it was seen to have. */
function passDeadline(now: Date): Command {
  return { type: 'PassDeadline', data: { at: now.toISOString() } };
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}
