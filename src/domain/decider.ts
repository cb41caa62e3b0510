import { search } from '@jmespath-community/jmespath';
import { backoffDelayMs } from './backoff';
import { sha256 } from './canonical';
import type { HttpCallStep, StepDefinition, WorkflowDefinition } from './definition';
import { stepOf } from './definition';
import type { HttpOutcome, HttpRequestPrepared, RunEvent, RunStatus } from './events';

/*
 * The run decider, Emmett-shaped: `initialState`, `evolve(state, event)` and
 * `decide(command, state)`. It is pure: no clock, no randomness, no I/O. The
 * workflow definition is the "code" being run, so a decider is made per
 * definition; evolve never needs it, which is why a log folds without one.
 */

export type Phase = 'new' | 'ready' | 'awaiting_response' | 'awaiting_timer' | 'done';

export interface PendingTimer {
  timerId: string;
  step: string;
  purpose: 'delay' | 'retry';
  dueAt: string;
  attempt?: number;
}

export interface RunState {
  runId: string | null;
  project: string | null;
  workflow: string | null;
  version: number | null;
  definitionHash: string | null;
  deliveryId: string | null;
  input: unknown;
  status: RunStatus | 'new';
  phase: Phase;
  /** the step being executed, or to execute next when phase = ready */
  cursor: string | null;
  outputs: Record<string, unknown>;
  attempts: Record<string, number>;
  pendingRequest: HttpRequestPrepared['data'] | null;
  pendingTimer: PendingTimer | null;
  lastResponse: HttpOutcome | null;
  result: { status: 'succeeded' | 'failed' | 'canceled'; reason: string | null; output: unknown } | null;
  startedAt: string | null;
  finishedAt: string | null;
  lastEventAt: string | null;
  eventCount: number;
}

export const initialState = (): RunState => ({
  runId: null,
  project: null,
  workflow: null,
  version: null,
  definitionHash: null,
  deliveryId: null,
  input: null,
  status: 'new',
  phase: 'new',
  cursor: null,
  outputs: {},
  attempts: {},
  pendingRequest: null,
  pendingTimer: null,
  lastResponse: null,
  result: null,
  startedAt: null,
  finishedAt: null,
  lastEventAt: null,
  eventCount: 0,
});

export function evolve(state: RunState, event: RunEvent): RunState {
  const s: RunState = { ...state, eventCount: state.eventCount + 1 };
  switch (event.type) {
    case 'RunStarted': {
      const d = event.data;
      return {
        ...s,
        runId: d.runId,
        project: d.project,
        workflow: d.workflow,
        version: d.version,
        definitionHash: d.definitionHash,
        deliveryId: d.deliveryId,
        input: d.input,
        status: 'running',
        phase: 'ready',
        startedAt: d.at,
        lastEventAt: d.at,
        // the start step is chosen by the first ExecuteStep
        cursor: null,
      };
    }
    case 'StepStarted':
      return { ...s, cursor: event.data.step, lastEventAt: event.data.at };
    case 'StepSucceeded':
      return {
        ...s,
        outputs: { ...s.outputs, [event.data.step]: event.data.output },
        cursor: event.data.next,
        phase: event.data.next ? 'ready' : s.phase,
        status: 'running',
        pendingRequest: null,
        pendingTimer: null,
      };
    case 'StepFailed':
      return { ...s, pendingRequest: null, pendingTimer: null };
    case 'HttpRequestPrepared':
      return {
        ...s,
        phase: 'awaiting_response',
        status: 'running',
        pendingRequest: event.data,
        pendingTimer: null,
        attempts: { ...s.attempts, [event.data.step]: event.data.attempt },
      };
    case 'HttpResponseRecorded':
      return { ...s, lastResponse: event.data.outcome, lastEventAt: event.data.at };
    case 'RetryScheduled':
      return {
        ...s,
        phase: 'awaiting_timer',
        status: 'waiting',
        pendingRequest: null,
        pendingTimer: {
          timerId: event.data.timerId,
          step: event.data.step,
          purpose: 'retry',
          dueAt: event.data.dueAt,
          attempt: event.data.attempt,
        },
      };
    case 'TimerScheduled':
      return {
        ...s,
        phase: 'awaiting_timer',
        status: 'waiting',
        pendingTimer: { timerId: event.data.timerId, step: event.data.step, purpose: 'delay', dueAt: event.data.dueAt },
      };
    case 'TimerFired':
      return { ...s, status: 'running', lastEventAt: event.data.at };
    case 'RunFinished':
      return {
        ...s,
        status: event.data.status,
        phase: 'done',
        result: { ...event.data },
        finishedAt: s.lastEventAt,
        pendingRequest: null,
        pendingTimer: null,
      };
  }
}

export function fold(events: readonly RunEvent[], from: RunState = initialState()): RunState {
  return events.reduce(evolve, from);
}

// ───── Commands

export type Command =
  | {
      type: 'StartRun';
      data: {
        runId: string;
        project: string;
        workflow: string;
        version: number;
        definitionHash: string;
        deliveryId: string;
        input: unknown;
        at: string;
      };
    }
  | { type: 'ExecuteStep'; data: { at: string } }
  | {
      type: 'RecordHttpResult';
      data: { step: string; attempt: number; at: string; durationMs: number; jitter: number; outcome: HttpOutcome };
    }
  | { type: 'FireTimer'; data: { timerId: string; at: string } };

/** Raised when a command does not fit the run's state: a stale worker, a replayed delivery, a timer not yet due. */
export class DecisionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecisionError';
  }
}

/** Optional engine behaviour switches; replay with other flags shows where decisions would change. */
export interface EngineFlags {
  /** treat an HTTP 409 Conflict as success (an idempotent "already done") */
  conflictIsSuccess?: boolean;
}

export interface RunDecider {
  definition: WorkflowDefinition;
  initialState: () => RunState;
  evolve: typeof evolve;
  decide: (command: Command, state: RunState) => RunEvent[];
}

export function idempotencyKeyFor(runId: string, step: string): string {
  return `mh_${sha256(`${runId}:${step}`).slice(0, 40)}`;
}

/**
 * What JMESPath expressions see: the webhook body's fields at the top level
 * (so `order.id` reads naturally), plus `input` (the whole body) and `steps`
 * (each finished step's output), which win over body fields of the same name.
 */
export function contextOf(state: RunState): Record<string, unknown> {
  const body = state.input && typeof state.input === 'object' && !Array.isArray(state.input) ? (state.input as Record<string, unknown>) : {};
  return { ...body, input: state.input, steps: state.outputs };
}

function evaluate(expr: string, state: RunState): unknown {
  // JMESPath cannot see undefined; normalise so the output is JSON.
  const result = search(contextOf(state) as never, expr);
  return result === undefined ? null : JSON.parse(JSON.stringify(result));
}

function truthy(v: unknown): boolean {
  // JMESPath truthiness: false, null, "", [] and {} are false.
  if (v === null || v === false || v === '' || v === undefined) return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v as object).length > 0;
  return true;
}

function addMs(iso: string, ms: number): string {
  return new Date(Date.parse(iso) + ms).toISOString();
}

export function createDecider(definition: WorkflowDefinition, flags: EngineFlags = {}): RunDecider {
  const startStep = definition.start ?? definition.steps[0].id;

  const finishIfLast = (next: string | null, _state: RunState): RunEvent[] =>
    next ? [] : [{ type: 'RunFinished', data: { status: 'succeeded', reason: null, output: null } }];

  const executeStep = (step: StepDefinition, at: string, state: RunState): RunEvent[] => {
    const started: RunEvent = { type: 'StepStarted', data: { step: step.id, stepType: step.type, at } };
    try {
      switch (step.type) {
        case 'transform': {
          const output = evaluate(step.expression, state);
          const next = step.next ?? null;
          return [started, { type: 'StepSucceeded', data: { step: step.id, output, next } }, ...finishIfLast(next, state)];
        }
        case 'branch': {
          const value = evaluate(step.condition, state);
          const next = truthy(value) ? step.then : step.else;
          return [started, { type: 'StepSucceeded', data: { step: step.id, output: { condition: truthy(value), next }, next } }];
        }
        case 'terminate': {
          const output = step.output ? evaluate(step.output, state) : null;
          return [
            started,
            { type: 'StepSucceeded', data: { step: step.id, output: { status: step.status }, next: null } },
            { type: 'RunFinished', data: { status: step.status, reason: step.reason ?? null, output } },
          ];
        }
        case 'http_call':
          return [started, prepareRequest(step, 1, state)];
        case 'delay':
          return [
            started,
            { type: 'TimerScheduled', data: { step: step.id, timerId: `${step.id}:delay`, dueAt: addMs(at, step.durationMs) } },
          ];
      }
    } catch (e) {
      const reason = `step "${step.id}" could not be evaluated: ${(e as Error).message}`;
      return [
        started,
        { type: 'StepFailed', data: { step: step.id, reason, attempts: 1 } },
        { type: 'RunFinished', data: { status: 'failed', reason, output: null } },
      ];
    }
  };

  const prepareRequest = (step: HttpCallStep, attempt: number, state: RunState): RunEvent => ({
    type: 'HttpRequestPrepared',
    data: {
      step: step.id,
      attempt,
      idempotencyKey: idempotencyKeyFor(state.runId!, step.id),
      method: step.method,
      url: step.url,
      headers: step.headers,
      body: step.body ? evaluate(step.body, state) : null,
      timeoutMs: step.timeoutMs,
    },
  });

  const classify = (outcome: HttpOutcome): { ok: boolean; retryable: boolean; reason: string } => {
    if (outcome.kind === 'error') return { ok: false, retryable: true, reason: `${outcome.code}: ${outcome.message}` };
    const { status } = outcome;
    if (status >= 200 && status < 300) return { ok: true, retryable: false, reason: `HTTP ${status}` };
    if (status === 409 && flags.conflictIsSuccess) return { ok: true, retryable: false, reason: 'HTTP 409 treated as done' };
    const retryable = status >= 500 || status === 429 || status === 408;
    return { ok: false, retryable, reason: `HTTP ${status}` };
  };

  const decide = (command: Command, state: RunState): RunEvent[] => {
    switch (command.type) {
      case 'StartRun': {
        if (state.status !== 'new') throw new DecisionError(`run ${state.runId} has already started`);
        return [{ type: 'RunStarted', data: { ...command.data } }];
      }
      case 'ExecuteStep': {
        if (state.phase !== 'ready') throw new DecisionError(`run ${state.runId} has no step ready to execute (phase ${state.phase})`);
        const id = state.cursor ?? (Object.keys(state.outputs).length === 0 ? startStep : null);
        if (!id) throw new DecisionError(`run ${state.runId} has no next step`);
        return executeStep(stepOf(definition, id), command.data.at, state);
      }
      case 'RecordHttpResult': {
        const pending = state.pendingRequest;
        const d = command.data;
        if (state.phase !== 'awaiting_response' || !pending || pending.step !== d.step || pending.attempt !== d.attempt) {
          throw new DecisionError(`run ${state.runId} is not waiting for a response of ${d.step} attempt ${d.attempt}`);
        }
        const step = stepOf(definition, d.step);
        if (step.type !== 'http_call') throw new DecisionError(`step "${d.step}" is not an http_call`);
        const recorded: RunEvent = { type: 'HttpResponseRecorded', data: { ...d } };
        const verdict = classify(d.outcome);
        if (verdict.ok) {
          const o = d.outcome as Extract<HttpOutcome, { kind: 'response' }>;
          const next = step.next ?? null;
          return [
            recorded,
            { type: 'StepSucceeded', data: { step: step.id, output: { status: o.status, body: o.body }, next } },
            ...finishIfLast(next, state),
          ];
        }
        if (verdict.retryable && d.attempt < step.retry.maxAttempts) {
          const nextAttempt = d.attempt + 1;
          const delayMs = backoffDelayMs(step.retry, nextAttempt, d.jitter);
          return [
            recorded,
            {
              type: 'RetryScheduled',
              data: {
                step: step.id,
                attempt: nextAttempt,
                timerId: `${step.id}:retry:${nextAttempt}`,
                delayMs,
                dueAt: addMs(d.at, delayMs),
                reason: verdict.reason,
              },
            },
          ];
        }
        const reason = verdict.retryable
          ? `step "${step.id}" gave up after ${d.attempt} attempts: ${verdict.reason}`
          : `step "${step.id}" was refused: ${verdict.reason}`;
        return [
          recorded,
          { type: 'StepFailed', data: { step: step.id, reason, attempts: d.attempt } },
          { type: 'RunFinished', data: { status: 'failed', reason, output: null } },
        ];
      }
      case 'FireTimer': {
        const timer = state.pendingTimer;
        const d = command.data;
        if (state.phase !== 'awaiting_timer' || !timer || timer.timerId !== d.timerId) {
          throw new DecisionError(`run ${state.runId} has no pending timer ${d.timerId}`);
        }
        if (Date.parse(d.at) < Date.parse(timer.dueAt)) {
          throw new DecisionError(`timer ${d.timerId} is due at ${timer.dueAt}, not yet at ${d.at}`);
        }
        const fired: RunEvent = { type: 'TimerFired', data: { step: timer.step, timerId: timer.timerId, at: d.at } };
        const step = stepOf(definition, timer.step);
        if (timer.purpose === 'retry') {
          if (step.type !== 'http_call') throw new DecisionError(`retry timer on non-http step "${step.id}"`);
          return [fired, prepareRequest(step, timer.attempt!, state)];
        }
        if (step.type !== 'delay') throw new DecisionError(`delay timer on non-delay step "${step.id}"`);
        const next = step.next ?? null;
        return [
          fired,
          { type: 'StepSucceeded', data: { step: step.id, output: { waitedMs: step.durationMs }, next } },
          ...finishIfLast(next, state),
        ];
      }
    }
  };

  return { definition, initialState, evolve, decide };
}

/** The command a batch's input event was decided from: how replay re-asks the decider. */
export function commandOf(event: RunEvent): Command | null {
  switch (event.type) {
    case 'RunStarted':
      return { type: 'StartRun', data: { ...event.data } };
    case 'StepStarted':
      return { type: 'ExecuteStep', data: { at: event.data.at } };
    case 'HttpResponseRecorded':
      return { type: 'RecordHttpResult', data: { ...event.data } };
    case 'TimerFired':
      return { type: 'FireTimer', data: { timerId: event.data.timerId, at: event.data.at } };
    default:
      return null;
  }
}

/** What a worker should do next for a run, read off its state alone. */
export type NextAction =
  | { kind: 'execute-step' }
  | { kind: 'send-request'; request: HttpRequestPrepared['data'] }
  | { kind: 'fire-timer'; timerId: string; dueAt: string }
  | { kind: 'none' };

export function nextAction(state: RunState): NextAction {
  switch (state.phase) {
    case 'ready':
      return { kind: 'execute-step' };
    case 'awaiting_response':
      return { kind: 'send-request', request: state.pendingRequest! };
    case 'awaiting_timer':
      return { kind: 'fire-timer', timerId: state.pendingTimer!.timerId, dueAt: state.pendingTimer!.dueAt };
    default:
      return { kind: 'none' };
  }
}
