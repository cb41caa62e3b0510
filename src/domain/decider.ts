import { compile, TreeInterpreter } from '@jmespath-community/jmespath';
import { backoffDelayMs } from './backoff';
import { canonicalJson, sha256 } from './canonical';
import { jsonLengthAtLeast, withBound } from './expression-bounds';
import type { HttpCallStep, StepDefinition, WorkflowDefinition } from './definition';
import { stepOf, successorsOf } from './definition';
import type { EngineInfo, HttpOutcome, HttpRequestPrepared, OperatorActed, RunEvent, RunStatus } from './events';

/*
 * The run decider, Emmett-shaped: `initialState`, `evolve(state, event)` and
 * `decide(command, state)`. It is pure: no clock, no randomness, no I/O. The
 * workflow definition is the "code" being run, so a decider is made per
 * definition; evolve never needs it, which is why a log folds without one.
 *
 * A run carries the semantics it started under (RunStarted.engine): a later
 * engine keeps deciding an old run the way it was decided then, so old logs
 * replay exactly. Semantics 1 (no `engine` recorded): the request body is
 * recorded as JSON. Semantics 2: the exact body text, secret references in
 * headers, idempotency keys per execution of a step, operator actions.
 * Semantics 3: what an expression gives is at most MAX_EXPRESSION_RESULT_BYTES
 * of JSON; more fails its step instead of being recorded. Semantics 4: a
 * step's output records its size, and a run's outputs together are at most
 * MAX_RUN_OUTPUTS_BYTES; an output that would take them past it fails its
 * step. Nothing an expression makes on the way is larger than a result may be
 * either (expression-bounds.ts). Semantics 5: a definition's `timeoutMs` gives
 * each run a deadline (its start, or an operator's sending it back to work,
 * plus timeoutMs); a run still unfinished then fails, decided from the time
 * it was seen to have passed (DeadlinePassed), and no step starts or timer
 * fires after it.
 */

/** The engine release written into every new run's RunStarted. */
export const ENGINE_VERSION = '0.2.0';
/** The decision semantics new runs start under. */
export const CURRENT_SEMANTICS = 5;

/**
 * Semantics 3: the most JSON an expression may give (a step's output, a request's body, a run's result). A webhook
 * body is at most 2 MiB, but an expression can make much more of a few bytes (`pad_left('x', input.n)` made a
 * 100 MB output of a 20-byte webhook, recorded as one event, and took the process to 1 GB).
 */
export const MAX_EXPRESSION_RESULT_BYTES = 4 * 1024 * 1024;

/**
 * Semantics 4: the most JSON a run's step outputs may hold together. Each output was bounded (an expression's by
 * semantics 3, a response's body at 1 MiB), but not their number: 200 steps of 4 MiB each made a run view of
 * 800 MB, written again at every step, and a target answering 1 MiB to every call of a long workflow did the same.
 * The outputs are what every later step's expressions see and what the run view holds, so they are what is bounded.
 */
export const MAX_RUN_OUTPUTS_BYTES = 16 * 1024 * 1024;

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
  /** 1 for runs started before semantics were recorded */
  semantics: number;
  flags: EngineFlags;
  status: RunStatus | 'new';
  phase: Phase;
  /** the step being executed, or to execute next when phase = ready */
  cursor: string | null;
  outputs: Record<string, unknown>;
  /** per step with an output, its size in bytes of JSON as recorded (semantics 4; empty for earlier runs) */
  outputBytes: Record<string, number>;
  /** the number of the last attempt per step (numbers keep rising across operator retries) */
  attempts: Record<string, number>;
  /** per step, the attempts already used when an operator last retried it: the retry budget counts from there */
  retryBase: Record<string, number>;
  /** per step, which execution it is on (1 unless an operator resumed from it or before it) */
  executions: Record<string, number>;
  /** the step whose failure ended the run, while it is failed */
  failedStep: string | null;
  paused: boolean;
  pendingRequest: HttpRequestPrepared['data'] | null;
  pendingTimer: PendingTimer | null;
  lastResponse: HttpOutcome | null;
  result: { status: 'succeeded' | 'failed' | 'canceled'; reason: string | null; output: unknown } | null;
  startedAt: string | null;
  finishedAt: string | null;
  lastEventAt: string | null;
  /** when the run fails unless finished (semantics 5, a definition with timeoutMs), or null */
  deadline: string | null;
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
  semantics: 1,
  flags: {},
  status: 'new',
  phase: 'new',
  cursor: null,
  outputs: {},
  outputBytes: {},
  attempts: {},
  retryBase: {},
  executions: {},
  failedStep: null,
  paused: false,
  pendingRequest: null,
  pendingTimer: null,
  lastResponse: null,
  result: null,
  startedAt: null,
  finishedAt: null,
  lastEventAt: null,
  deadline: null,
  eventCount: 0,
});

/** The status users see while a run is not finished. */
function liveStatus(s: RunState, waiting: boolean): RunStatus {
  if (s.paused) return 'paused';
  return waiting ? 'waiting' : 'running';
}

/**
 * The pure evolve: a new state, the old one untouched. It copies the state
 * and only the maps this event changes (copy on write), so folding a long log
 * does not copy every growing map at every event.
 */
export function evolve(state: RunState, event: RunEvent): RunState {
  const s = { ...state };
  apply(s, event, false);
  return s;
}

/**
 * Fold a log into a state of one's own, changing it in place: no copy per
 * event, so replay costs the same per event however long the log is. Only for
 * a state nobody else holds (a fresh `initialState()` that the fold owns);
 * a property test checks that it ends where the pure `evolve` does.
 */
export function foldInPlace(events: Iterable<RunEvent>, owned: RunState = initialState()): RunState {
  for (const e of events) apply(owned, e, true);
  return owned;
}

/** evolve one event into a state the caller owns (see foldInPlace). */
export function evolveInPlace(owned: RunState, event: RunEvent): RunState {
  apply(owned, event, true);
  return owned;
}

/** A map to change: itself when the fold owns it, else a copy (the caller's stays as it was). */
function writable<T>(map: Record<string, T>, owned: boolean): Record<string, T> {
  return owned ? map : { ...map };
}

function apply(s: RunState, event: RunEvent, owned: boolean): void {
  s.eventCount++;
  switch (event.type) {
    case 'RunStarted': {
      const d = event.data;
      s.runId = d.runId;
      s.project = d.project;
      s.workflow = d.workflow;
      s.version = d.version;
      s.definitionHash = d.definitionHash;
      s.deliveryId = d.deliveryId;
      s.input = d.input;
      s.semantics = d.engine?.semantics ?? 1;
      s.flags = d.engine?.flags ?? {};
      s.status = 'running';
      s.phase = 'ready';
      s.startedAt = d.at;
      s.lastEventAt = d.at;
      s.deadline = d.deadline ?? null;
      // the start step is chosen by the first ExecuteStep
      s.cursor = null;
      return;
    }
    case 'StepStarted':
      s.cursor = event.data.step;
      s.lastEventAt = event.data.at;
      return;
    case 'StepSucceeded':
      s.outputs = setKey(s.outputs, event.data.step, event.data.output, owned);
      if (event.data.bytes !== undefined) s.outputBytes = setKey(s.outputBytes, event.data.step, event.data.bytes, owned);
      s.cursor = event.data.next;
      if (event.data.next) s.phase = 'ready';
      s.status = liveStatus(s, false);
      s.pendingRequest = null;
      s.pendingTimer = null;
      return;
    case 'StepFailed':
      s.pendingRequest = null;
      s.pendingTimer = null;
      s.failedStep = event.data.step;
      return;
    case 'HttpRequestPrepared':
      s.phase = 'awaiting_response';
      s.status = liveStatus(s, false);
      s.pendingRequest = event.data;
      s.pendingTimer = null;
      s.attempts = setKey(s.attempts, event.data.step, event.data.attempt, owned);
      return;
    case 'HttpResponseRecorded':
      s.lastResponse = event.data.outcome;
      s.lastEventAt = event.data.at;
      return;
    case 'RetryScheduled':
      s.phase = 'awaiting_timer';
      s.status = liveStatus(s, true);
      s.pendingRequest = null;
      s.pendingTimer = {
        timerId: event.data.timerId,
        step: event.data.step,
        purpose: 'retry',
        dueAt: event.data.dueAt,
        attempt: event.data.attempt,
      };
      return;
    case 'TimerScheduled':
      s.phase = 'awaiting_timer';
      s.status = liveStatus(s, true);
      s.pendingTimer = { timerId: event.data.timerId, step: event.data.step, purpose: 'delay', dueAt: event.data.dueAt };
      return;
    case 'TimerFired':
      s.status = liveStatus(s, false);
      s.lastEventAt = event.data.at;
      return;
    case 'RunFinished':
      s.status = event.data.status;
      s.phase = 'done';
      s.paused = false;
      s.result = { ...event.data };
      s.finishedAt = s.lastEventAt;
      s.pendingRequest = null;
      s.pendingTimer = null;
      return;
    case 'OperatorActed':
      s.lastEventAt = event.data.at;
      return;
    case 'RunPaused':
      s.paused = true;
      s.status = 'paused';
      return;
    case 'RunUnpaused':
      s.paused = false;
      s.status = s.phase === 'awaiting_timer' ? 'waiting' : 'running';
      return;
    case 'StepRescheduled': {
      const d = event.data;
      const outputs = writable(s.outputs, owned);
      const outputBytes = writable(s.outputBytes, owned);
      const executions = writable(s.executions, owned);
      const retryBase = writable(s.retryBase, owned);
      for (const step of d.cleared) {
        delete outputs[step];
        delete outputBytes[step];
        executions[step] = (executions[step] ?? 1) + 1;
      }
      // attempt numbers keep rising; each step sent back to work gets a fresh budget from here
      for (const step of d.mode === 'retry' ? [d.step] : d.cleared) retryBase[step] = s.attempts[step] ?? 0;
      reopen(s);
      s.outputs = outputs;
      s.outputBytes = outputBytes;
      s.executions = executions;
      s.retryBase = retryBase;
      s.cursor = d.step;
      s.phase = 'ready';
      if (d.deadline !== undefined) s.deadline = d.deadline;
      return;
    }
    case 'StepSkipped':
      reopen(s);
      s.outputs = setKey(s.outputs, event.data.step, event.data.output, owned);
      if (event.data.bytes !== undefined) s.outputBytes = setKey(s.outputBytes, event.data.step, event.data.bytes, owned);
      s.cursor = event.data.next;
      if (event.data.next) s.phase = 'ready';
      if (event.data.deadline !== undefined) s.deadline = event.data.deadline;
      return;
    case 'DeadlinePassed':
      s.lastEventAt = event.data.at;
      return;
    case 'InputPatched':
      s.input = mergePatch(s.input, event.data.patch);
      return;
  }
}

/** The map with one key set (or removed when value is undefined): changed in place when owned, else a copy. */
function setKey<T>(map: Record<string, T>, key: string, value: T | undefined, owned: boolean): Record<string, T> {
  const out = writable(map, owned);
  if (value === undefined) delete out[key];
  else out[key] = value;
  return out;
}

/** What changes when an operator sends a finished or stuck run back to work. */
function reopen(s: RunState): void {
  s.status = s.paused ? 'paused' : 'running';
  s.result = null;
  s.finishedAt = null;
  s.failedStep = null;
  s.pendingRequest = null;
  s.pendingTimer = null;
}

/** JSON Merge Patch (RFC 7386): null removes a member, objects merge, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!patch || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const base: Record<string, unknown> = target && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete base[k];
    else base[k] = mergePatch(base[k], v);
  }
  return base;
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
        engine?: EngineInfo;
        bodySha256?: string;
        /** ignored: the decider works the deadline out from the definition (a replayed RunStarted carries it) */
        deadline?: string;
      };
    }
  | { type: 'ExecuteStep'; data: { at: string } }
  | {
      type: 'RecordHttpResult';
      data: { step: string; attempt: number; at: string; durationMs: number; jitter: number; outcome: HttpOutcome };
    }
  | { type: 'FireTimer'; data: { timerId: string; at: string } }
  | { type: 'PassDeadline'; data: { at: string } }
  | { type: 'Operate'; data: OperatorActed['data'] };

/** Raised when a command does not fit the run's state: a stale worker, a replayed delivery, a timer not yet due, an operator action that makes no sense. */
export class DecisionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecisionError';
  }
}

/** Optional engine behaviour switches, recorded in RunStarted; replay with other flags shows where decisions would change. */
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

/** The engine info a new run records. */
export function engineInfo(flags: EngineFlags = {}): EngineInfo {
  return { version: ENGINE_VERSION, semantics: CURRENT_SEMANTICS, flags: { ...flags } };
}

/**
 * The idempotency key of a step's execution. Every attempt of one execution
 * (retries after errors or timeouts, an operator's retry) shares it, so a
 * target that honours it does the work once; an operator's resume starts a
 * new execution with a new key, because it means "do it again".
 */
export function idempotencyKeyFor(runId: string, step: string, execution = 1): string {
  return `mh_${sha256(execution === 1 ? `${runId}:${step}` : `${runId}:${step}:${execution}`).slice(0, 40)}`;
}

/**
 * What JMESPath expressions see: the webhook body's fields at the top level
 * (so `order.id` reads naturally), plus `input` (the whole body) and `steps`
 * (each finished step's output), which win over body fields of the same name.
 */
export function contextOf(state: RunState): Record<string, unknown> {
  const input = state.input;
  if (!input || typeof input !== 'object' || Array.isArray(input)) return { input, steps: state.outputs };
  // made once for an input and its outputs map, not at every expression: a run's steps all spread the same body
  // (an input is never changed in place: a patch makes a new one; outputs changed in place are the same map)
  const known = contexts.get(input);
  if (known && known.outputs === state.outputs) return known.context;
  const context = { ...(input as Record<string, unknown>), input, steps: state.outputs };
  contexts.set(input, { outputs: state.outputs, context });
  return context;
}

const contexts = new WeakMap<object, { outputs: unknown; context: Record<string, unknown> }>();

// compiled expressions by text: a definition's few expressions are parsed once, not at every step
const compiled = new Map<string, ReturnType<typeof compile>>();

function parsed(expr: string): ReturnType<typeof compile> {
  let ast = compiled.get(expr);
  if (!ast) {
    ast = compile(expr);
    if (compiled.size >= 2_000) compiled.clear();
    compiled.set(expr, ast);
  }
  return ast;
}

function evaluate(expr: string, state: RunState): unknown {
  return evaluateSized(expr, state).value;
}

/** An expression's result and its size in bytes of JSON (counted only under semantics 4, where outputs record it). */
function evaluateSized(expr: string, state: RunState): { value: unknown; bytes: number | undefined } {
  // semantics 4: nothing made on the way larger than a result may be, and the result measured before it is written
  const limit = state.semantics >= 4 ? MAX_EXPRESSION_RESULT_BYTES : null;
  // JMESPath cannot see undefined; normalise so the output is JSON.
  const result = withBound(limit, () => TreeInterpreter.search(parsed(expr), contextOf(state) as never));
  if (limit !== null && result !== undefined) {
    const atLeast = jsonLengthAtLeast(result, limit);
    if (atLeast > limit) throw new Error(`its result would be at least ${atLeast} bytes of JSON, more than the ${limit} a result may be`);
  }
  const text = result === undefined ? 'null' : JSON.stringify(result);
  // a string's length is at most its UTF-8 bytes, which are at most three times it: most results need no count
  let bytes = state.semantics >= 4 ? Buffer.byteLength(text) : undefined;
  if (state.semantics >= 3 && text.length * 3 > MAX_EXPRESSION_RESULT_BYTES) {
    bytes ??= Buffer.byteLength(text);
    if (bytes > MAX_EXPRESSION_RESULT_BYTES) throw new Error(`its result is ${bytes} bytes of JSON, more than the ${MAX_EXPRESSION_RESULT_BYTES} a result may be`);
  }
  return { value: JSON.parse(text), bytes };
}

/** Raised when a step's output would take a run's outputs past MAX_RUN_OUTPUTS_BYTES (semantics 4). */
class OutputsFull extends Error {}

/** The bytes of JSON a run's outputs would hold with `step`'s output of `bytes` (its earlier one replaced). */
function outputsWith(state: RunState, step: string, bytes: number): number {
  let total = bytes;
  for (const [id, n] of Object.entries(state.outputBytes)) if (id !== step) total += n;
  return total;
}

/**
 * A step's output as its event records it: under semantics 4 with its size, and refused (OutputsFull) when it
 * would take the run's outputs past their bound; earlier runs record the output alone, as they did.
 */
function sizedOutput(state: RunState, step: string, output: unknown, known?: number): { output: unknown; bytes?: number } {
  if (state.semantics < 4) return { output };
  const bytes = known ?? Buffer.byteLength(JSON.stringify(output ?? null));
  const total = outputsWith(state, step, bytes);
  if (total > MAX_RUN_OUTPUTS_BYTES) {
    throw new OutputsFull(`its output of ${bytes} bytes of JSON would take the run's step outputs to ${total}, more than the ${MAX_RUN_OUTPUTS_BYTES} a run may hold`);
  }
  return { output, bytes };
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

const FINISHED: ReadonlySet<string> = new Set(['succeeded', 'failed', 'canceled']);

/** Every step reachable from `from`, itself included, in definition order. */
export function stepsFrom(definition: WorkflowDefinition, from: string): string[] {
  const seen = new Set<string>();
  const visit = (id: string): void => {
    if (seen.has(id)) return;
    seen.add(id);
    for (const next of successorsOf(stepOf(definition, id))) visit(next);
  };
  visit(from);
  return definition.steps.map((s) => s.id).filter((id) => seen.has(id));
}

export function createDecider(definition: WorkflowDefinition, flagsOverride?: EngineFlags): RunDecider {
  const startStep = definition.start ?? definition.steps[0].id;
  const flagsOf = (state: RunState): EngineFlags => flagsOverride ?? state.flags;
  const hasStep = (id: string): boolean => definition.steps.some((s) => s.id === id);

  /** A deadline a full timeoutMs from `at`, for a run of semantics 5 whose definition has one (spread into the event). */
  const deadlineFrom = (semantics: number, at: string): { deadline?: string } =>
    semantics >= 5 && definition.timeoutMs !== undefined ? { deadline: addMs(at, definition.timeoutMs) } : {};
  const refusePastDeadline = (state: RunState, at: string, what: string): void => {
    if (state.deadline !== null && Date.parse(at) >= Date.parse(state.deadline))
      throw new DecisionError(`run ${state.runId} passed its deadline ${state.deadline}: it ${what} no more (at ${at})`);
  };

  const finishIfLast = (next: string | null): RunEvent[] =>
    next ? [] : [{ type: 'RunFinished', data: { status: 'succeeded', reason: null, output: null } }];

  const executeStep = (step: StepDefinition, at: string, state: RunState): RunEvent[] => {
    const started: RunEvent = { type: 'StepStarted', data: { step: step.id, stepType: step.type, at } };
    try {
      switch (step.type) {
        case 'transform': {
          const { value, bytes } = evaluateSized(step.expression, state);
          const next = step.next ?? null;
          return [started, { type: 'StepSucceeded', data: { step: step.id, ...sizedOutput(state, step.id, value, bytes), next } }, ...finishIfLast(next)];
        }
        case 'branch': {
          const value = evaluate(step.condition, state);
          const next = truthy(value) ? step.then : step.else;
          return [started, { type: 'StepSucceeded', data: { step: step.id, ...sizedOutput(state, step.id, { condition: truthy(value), next }), next } }];
        }
        case 'terminate': {
          const output = step.output ? evaluate(step.output, state) : null;
          return [
            started,
            { type: 'StepSucceeded', data: { step: step.id, ...sizedOutput(state, step.id, { status: step.status }), next: null } },
            { type: 'RunFinished', data: { status: step.status, reason: step.reason ?? null, output } },
          ];
        }
        case 'http_call':
          return [started, prepareRequest(step, (state.attempts[step.id] ?? 0) + 1, state)];
        case 'delay':
          return [
            started,
            { type: 'TimerScheduled', data: { step: step.id, timerId: `${step.id}:delay`, dueAt: addMs(at, step.durationMs) } },
          ];
      }
    } catch (e) {
      const reason = e instanceof OutputsFull ? `step "${step.id}" succeeded, but ${e.message}` : `step "${step.id}" could not be evaluated: ${(e as Error).message}`;
      return [started, ...failed(step.id, reason, 1)];
    }
  };

  const failed = (step: string, reason: string, attempts: number): RunEvent[] => [
    { type: 'StepFailed', data: { step, reason, attempts } },
    { type: 'RunFinished', data: { status: 'failed', reason, output: null } },
  ];

  /** A step's StepSucceeded, or its failure when the run cannot hold its output (no retry changes that). */
  const succeeded = (state: RunState, step: string, output: unknown, next: string | null, attempts: number): RunEvent[] => {
    try {
      return [{ type: 'StepSucceeded', data: { step, ...sizedOutput(state, step, output), next } }, ...finishIfLast(next)];
    } catch (e) {
      if (!(e instanceof OutputsFull)) throw e;
      return failed(step, `step "${step}" succeeded, but ${e.message}`, attempts);
    }
  };

  const prepareRequest = (step: HttpCallStep, attempt: number, state: RunState): RunEvent => {
    const key = idempotencyKeyFor(state.runId!, step.id, state.executions[step.id] ?? 1);
    const body = step.body ? evaluate(step.body, state) : null;
    if (state.semantics < 2) {
      const headers = step.headers as Record<string, string>;
      return {
        type: 'HttpRequestPrepared',
        data: { step: step.id, attempt, idempotencyKey: key, method: step.method, url: step.url, headers, body, timeoutMs: step.timeoutMs },
      };
    }
    // the exact bytes every attempt sends: canonical JSON, so key order can never drift between attempts
    const bodyText = step.body ? canonicalJson(body) : null;
    const headers = { ...step.headers };
    if (bodyText !== null && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
    return {
      type: 'HttpRequestPrepared',
      data: { step: step.id, attempt, idempotencyKey: key, method: step.method, url: step.url, headers, bodyText, timeoutMs: step.timeoutMs },
    };
  };

  const classify = (outcome: HttpOutcome, state: RunState): { ok: boolean; retryable: boolean; reason: string } => {
    if (outcome.kind === 'error') {
      // a target the engine may not call stays forbidden however often it is tried, and a header that cannot be sent
      // (HEADER_INVALID, src/worker/http-client.ts: no run recorded that code before it was given) stays unsendable
      return { ok: false, retryable: outcome.code !== 'TARGET_FORBIDDEN' && outcome.code !== 'HEADER_INVALID', reason: `${outcome.code}: ${outcome.message}` };
    }
    const { status } = outcome;
    if (status >= 200 && status < 300) return { ok: true, retryable: false, reason: `HTTP ${status}` };
    if (status === 409 && flagsOf(state).conflictIsSuccess) return { ok: true, retryable: false, reason: 'HTTP 409 treated as done' };
    const retryable = status >= 500 || status === 429 || status === 408;
    return { ok: false, retryable, reason: `HTTP ${status}` };
  };

  /** The step an operator's retry or skip applies to when none is named: the failed one, or the one in flight. */
  const stuckStep = (state: RunState): string | null =>
    state.status === 'failed' ? state.failedStep : state.phase === 'done' ? null : (state.pendingRequest?.step ?? state.pendingTimer?.step ?? state.cursor);

  const operate = (d: OperatorActed['data'], state: RunState): RunEvent[] => {
    const acted: RunEvent = { type: 'OperatorActed', data: { ...d } };
    const finished = FINISHED.has(state.status);
    const refuse = (why: string): never => {
      throw new DecisionError(`cannot ${d.action} run ${state.runId}: ${why}`);
    };
    if (state.status === 'new') refuse('it has not started');
    if (state.semantics < 2) refuse('it was started by an engine without operator actions (semantics 1)');
    if (d.step !== undefined && !hasStep(d.step)) refuse(`workflow "${definition.name}" has no step "${d.step}"`);
    switch (d.action) {
      case 'cancel':
        if (finished) refuse(`it already ${state.status === 'canceled' ? 'was canceled' : state.status}`);
        return [acted, { type: 'RunFinished', data: { status: 'canceled', reason: `canceled by ${d.by}: ${d.reason}`, output: null } }];
      case 'pause':
        if (finished) refuse(`it already ${state.status === 'canceled' ? 'was canceled' : state.status}`);
        if (state.paused) refuse('it is already paused');
        return [acted, { type: 'RunPaused', data: {} }];
      case 'unpause':
        if (!state.paused) refuse('it is not paused');
        return [acted, { type: 'RunUnpaused', data: {} }];
      case 'retry': {
        if (state.status === 'succeeded' || state.status === 'canceled') refuse(`it ${state.status === 'canceled' ? 'was canceled' : 'succeeded'}; resume it from a step instead`);
        const step = d.step ?? stuckStep(state);
        if (!step) refuse('no step has failed or is in flight');
        if (state.outputs[step!] !== undefined) refuse(`step "${step}" succeeded; resume from it to run it again`);
        if (step !== stuckStep(state)) refuse(`step "${step}" is not the failed step or the one in flight (${stuckStep(state) ?? 'none'})`);
        return [acted, { type: 'StepRescheduled', data: { step: step!, mode: 'retry', cleared: [], ...deadlineFrom(state.semantics, d.at) } }];
      }
      case 'resume': {
        if (state.status === 'succeeded') refuse('it succeeded; start a new run to do it again');
        const step = d.step ?? refuse('name the step to resume from');
        const reached = state.outputs[step] !== undefined || step === state.cursor || step === state.failedStep || step === state.pendingRequest?.step || step === state.pendingTimer?.step;
        if (!reached) refuse(`step "${step}" was never reached in this run`);
        // the step and everything after it runs again, as a new execution (new idempotency keys)
        const cleared = stepsFrom(definition, step).filter((id) => id === step || state.outputs[id] !== undefined || state.attempts[id] !== undefined);
        return [acted, { type: 'StepRescheduled', data: { step, mode: 'resume', cleared, ...deadlineFrom(state.semantics, d.at) } }];
      }
      case 'skip': {
        if (state.status === 'succeeded' || state.status === 'canceled') refuse(`it ${state.status === 'canceled' ? 'was canceled' : 'succeeded'}`);
        const step = d.step ?? stuckStep(state);
        if (!step) refuse('no step is waiting, failed or in flight');
        const def = stepOf(definition, step!);
        if (step !== stuckStep(state) && !(state.phase === 'ready' && step === (state.cursor ?? startStep))) {
          refuse(`step "${step}" is not the step the run is at (${stuckStep(state) ?? 'none'})`);
        }
        if (def.type === 'branch') refuse(`step "${step}" is a branch, which decides the way on; resume from the step you want instead`);
        if (def.type === 'terminate') refuse(`step "${step}" ends the run; cancel the run instead`);
        if (d.output === undefined) refuse('give the output the skipped step stands for');
        const next = successorsOf(def)[0] ?? null;
        let output: { output: unknown; bytes?: number } = { output: d.output };
        try {
          output = sizedOutput(state, step!, d.output);
        } catch (e) {
          if (!(e instanceof OutputsFull)) throw e;
          refuse(`the output given for step "${step}": ${e.message}`);
        }
        return [acted, { type: 'StepSkipped', data: { step: step!, ...output, next, ...deadlineFrom(state.semantics, d.at) } }, ...finishIfLast(next)];
      }
      case 'patch': {
        if (state.status === 'succeeded' || state.status === 'canceled') refuse(`it ${state.status === 'canceled' ? 'was canceled' : 'succeeded'}; its input can change nothing any more`);
        if (!d.patch || typeof d.patch !== 'object' || Array.isArray(d.patch)) refuse('a patch is a JSON object (a JSON merge patch of the input)');
        return [acted, { type: 'InputPatched', data: { patch: d.patch } }];
      }
    }
  };

  const decide = (command: Command, state: RunState): RunEvent[] => {
    // a run started by a later release is decided by its rules, which this engine does not know: an engine of
    // that release (or later) carries it on, as a mixed deployment upgrades
    if (command.type !== 'StartRun' && state.semantics > CURRENT_SEMANTICS)
      throw new DecisionError(`run ${state.runId} was started under semantics ${state.semantics}, newer than this engine's ${CURRENT_SEMANTICS}: an engine of the release that started it carries it on`);
    switch (command.type) {
      case 'StartRun': {
        if (state.status !== 'new') throw new DecisionError(`run ${state.runId} has already started`);
        const { deadline: _given, ...data } = command.data;
        return [{ type: 'RunStarted', data: { ...data, ...deadlineFrom(data.engine?.semantics ?? 1, data.at) } }];
      }
      case 'ExecuteStep': {
        if (state.paused) throw new DecisionError(`run ${state.runId} is paused`);
        if (state.phase !== 'ready') throw new DecisionError(`run ${state.runId} has no step ready to execute (phase ${state.phase})`);
        const id = state.cursor ?? (Object.keys(state.outputs).length === 0 ? startStep : null);
        if (!id) throw new DecisionError(`run ${state.runId} has no next step`);
        refusePastDeadline(state, command.data.at, 'starts a step');
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
        const verdict = classify(d.outcome, state);
        if (verdict.ok) {
          const o = d.outcome as Extract<HttpOutcome, { kind: 'response' }>;
          // the call was made and its answer is recorded either way
          return [recorded, ...succeeded(state, step.id, { status: o.status, body: o.body }, step.next ?? null, d.attempt - (state.retryBase[step.id] ?? 0))];
        }
        // the retry budget counts from the last operator retry of the step
        const used = d.attempt - (state.retryBase[step.id] ?? 0);
        if (verdict.retryable && used < step.retry.maxAttempts) {
          const nextAttempt = d.attempt + 1;
          const delayMs = backoffDelayMs(step.retry, used + 1, d.jitter);
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
          ? `step "${step.id}" gave up after ${used} attempts: ${verdict.reason}`
          : `step "${step.id}" was refused: ${verdict.reason}`;
        return [
          recorded,
          { type: 'StepFailed', data: { step: step.id, reason, attempts: used } },
          { type: 'RunFinished', data: { status: 'failed', reason, output: null } },
        ];
      }
      case 'FireTimer': {
        const timer = state.pendingTimer;
        const d = command.data;
        if (state.paused) throw new DecisionError(`run ${state.runId} is paused`);
        if (state.phase !== 'awaiting_timer' || !timer || timer.timerId !== d.timerId) {
          throw new DecisionError(`run ${state.runId} has no pending timer ${d.timerId}`);
        }
        if (Date.parse(d.at) < Date.parse(timer.dueAt)) {
          throw new DecisionError(`timer ${d.timerId} is due at ${timer.dueAt}, not yet at ${d.at}`);
        }
        refusePastDeadline(state, d.at, 'fires a timer');
        const fired: RunEvent = { type: 'TimerFired', data: { step: timer.step, timerId: timer.timerId, at: d.at } };
        const step = stepOf(definition, timer.step);
        if (timer.purpose === 'retry') {
          if (step.type !== 'http_call') throw new DecisionError(`retry timer on non-http step "${step.id}"`);
          return [fired, prepareRequest(step, timer.attempt!, state)];
        }
        if (step.type !== 'delay') throw new DecisionError(`delay timer on non-delay step "${step.id}"`);
        return [fired, ...succeeded(state, step.id, { waitedMs: step.durationMs }, step.next ?? null, 1)];
      }
      case 'PassDeadline': {
        const { at } = command.data;
        const deadline = state.deadline;
        if (FINISHED.has(state.status) || state.phase === 'done') throw new DecisionError(`run ${state.runId} has finished: it has no deadline to pass`);
        if (state.paused) throw new DecisionError(`run ${state.runId} is paused: its deadline waits until it is unpaused`);
        if (deadline === null) throw new DecisionError(`run ${state.runId} has no deadline`);
        if (Date.parse(at) < Date.parse(deadline)) throw new DecisionError(`run ${state.runId}'s deadline is ${deadline}, not yet at ${at}`);
        const step = stuckStep(state) ?? startStep;
        const doing =
          state.phase === 'awaiting_timer'
            ? state.pendingTimer!.purpose === 'retry'
              ? `waiting to try step "${step}" again`
              : `waiting in step "${step}"`
            : state.phase === 'awaiting_response'
              ? `calling out in step "${step}"`
              : `about to start step "${step}"`;
        const reason = `the run did not finish within its ${definition.timeoutMs ?? '?'} ms: its deadline ${deadline} passed while it was ${doing}`;
        return [
          { type: 'DeadlinePassed', data: { at, deadline } },
          { type: 'StepFailed', data: { step, reason, attempts: (state.attempts[step] ?? 0) - (state.retryBase[step] ?? 0) } },
          { type: 'RunFinished', data: { status: 'failed', reason, output: null } },
        ];
      }
      case 'Operate':
        return operate(command.data, state);
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
    case 'DeadlinePassed':
      return { type: 'PassDeadline', data: { at: event.data.at } };
    case 'OperatorActed':
      return { type: 'Operate', data: { ...event.data } };
    default:
      return null;
  }
}

/** What a worker should do next for a run, read off its state alone. A paused run does nothing. */
export type NextAction =
  | { kind: 'execute-step' }
  | { kind: 'send-request'; request: HttpRequestPrepared['data'] }
  | { kind: 'fire-timer'; timerId: string; dueAt: string }
  | { kind: 'none' };

export function nextAction(state: RunState): NextAction {
  if (state.paused) return { kind: 'none' };
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
