/*
 * The run log's vocabulary. Each command's nondeterministic input (time,
 * generated ids, the webhook body, an HTTP response, a jitter draw, a timer
 * firing) is carried by the first event of the batch it produces: the
 * "input event". Every other event is a decision the decider re-derives on
 * replay from state plus that input.
 */

export type RunStatus = 'running' | 'waiting' | 'paused' | 'succeeded' | 'failed' | 'canceled';

export type HttpOutcome =
  /** truncated: the answer was longer than the engine records, and only its start was kept */
  | { kind: 'response'; status: number; headers: Record<string, string>; body: unknown; truncated?: boolean }
  | { kind: 'error'; code: string; message: string };

/** A request header: a literal value, or a reference to a secret of the project's vault, resolved only when sending. */
export type HeaderValue = string | { secret: string; prefix?: string };

/** What a run was started under: later engines replay it with these semantics and flags. */
export interface EngineInfo {
  /** the engine release that started the run */
  version: string;
  /** the decision semantics (1: the first releases; 2: exact request bytes, keys per execution, operator actions; 3: expression results bounded; 4: outputs record their size and a run's outputs together are bounded; 5: a definition's timeoutMs gives each run a deadline) */
  semantics: number;
  flags: { conflictIsSuccess?: boolean };
}

export type OperatorAction = 'cancel' | 'retry' | 'resume' | 'skip' | 'patch' | 'pause' | 'unpause';

export interface RunStarted {
  type: 'RunStarted';
  data: {
    runId: string;
    project: string;
    workflow: string;
    version: number;
    definitionHash: string;
    deliveryId: string;
    input: unknown;
    at: string;
    /** absent in logs of the first releases (semantics 1) */
    engine?: EngineInfo;
    /**
     * SHA-256 of the webhook's exact bytes, as the delivery's record holds it: signed here, so that record cannot
     * be edited unnoticed (a genuine re-delivery would be refused as an id reused for other bytes). Absent in logs
     * written before 2026-12-07, and in runs not started by a webhook.
     */
    bodySha256?: string;
    /** when the run fails unless it has finished (semantics 5, a definition with timeoutMs): its start plus timeoutMs */
    deadline?: string;
  };
}
export interface StepStarted {
  type: 'StepStarted';
  data: { step: string; stepType: string; at: string };
}
export interface StepSucceeded {
  type: 'StepSucceeded';
  /** bytes: the output's size in bytes of JSON (semantics 4 and later), which the run's bound on its outputs counts */
  data: { step: string; output: unknown; bytes?: number; next: string | null };
}
export interface StepFailed {
  type: 'StepFailed';
  data: { step: string; reason: string; attempts: number };
}
/**
 * The request, fixed before its first attempt: every attempt with this key
 * sends exactly these bytes. Semantics 2 records the body as the exact text
 * sent (`bodyText`) and headers with secret references; semantics 1 recorded
 * the body as JSON (`body`), sent as its canonical JSON text.
 */
export interface HttpRequestPrepared {
  type: 'HttpRequestPrepared';
  data: {
    step: string;
    attempt: number;
    idempotencyKey: string;
    method: string;
    url: string;
    headers: Record<string, HeaderValue>;
    bodyText?: string | null;
    body?: unknown;
    timeoutMs: number;
  };
}
export interface HttpResponseRecorded {
  type: 'HttpResponseRecorded';
  data: { step: string; attempt: number; at: string; durationMs: number; jitter: number; outcome: HttpOutcome };
}
export interface RetryScheduled {
  type: 'RetryScheduled';
  data: { step: string; attempt: number; timerId: string; delayMs: number; dueAt: string; reason: string };
}
export interface TimerScheduled {
  type: 'TimerScheduled';
  data: { step: string; timerId: string; dueAt: string };
}
export interface TimerFired {
  type: 'TimerFired';
  data: { step: string; timerId: string; at: string };
}
export interface RunFinished {
  type: 'RunFinished';
  data: { status: 'succeeded' | 'failed' | 'canceled'; reason: string | null; output: unknown };
}
/** An operator's action on a run: who, when, why and what. The input of its batch. */
export interface OperatorActed {
  type: 'OperatorActed';
  data: {
    action: OperatorAction;
    by: string;
    reason: string;
    at: string;
    step?: string;
    /** skip: the output the operator gives the skipped step */
    output?: unknown;
    /** patch: a JSON merge patch (RFC 7386) for the run's input */
    patch?: unknown;
  };
}
export interface RunPaused {
  type: 'RunPaused';
  data: Record<string, never>;
}
export interface RunUnpaused {
  type: 'RunUnpaused';
  data: Record<string, never>;
}
/**
 * A step made ready to run again. retry: the same execution (same idempotency
 * key, a fresh attempt budget); resume: a new execution of the step and of
 * every step after it (new keys), whose earlier outputs are cleared.
 */
export interface StepRescheduled {
  type: 'StepRescheduled';
  /** deadline: the run's new one, a full timeoutMs from the operator's action (semantics 5, a definition with timeoutMs) */
  data: { step: string; mode: 'retry' | 'resume'; cleared: string[]; deadline?: string };
}
export interface StepSkipped {
  type: 'StepSkipped';
  /** bytes: as StepSucceeded's; deadline: as StepRescheduled's */
  data: { step: string; output: unknown; bytes?: number; next: string | null; deadline?: string };
}
/** The run was still unfinished at its deadline (the time it was seen to have passed is the batch's input). */
export interface DeadlinePassed {
  type: 'DeadlinePassed';
  data: { at: string; deadline: string };
}
export interface InputPatched {
  type: 'InputPatched';
  data: { patch: unknown };
}

export type RunEvent =
  | RunStarted
  | StepStarted
  | StepSucceeded
  | StepFailed
  | HttpRequestPrepared
  | HttpResponseRecorded
  | RetryScheduled
  | TimerScheduled
  | TimerFired
  | RunFinished
  | OperatorActed
  | RunPaused
  | RunUnpaused
  | StepRescheduled
  | StepSkipped
  | InputPatched
  | DeadlinePassed;

export type RunEventType = RunEvent['type'];

export const EVENT_TYPES: readonly RunEventType[] = [
  'RunStarted',
  'StepStarted',
  'StepSucceeded',
  'StepFailed',
  'HttpRequestPrepared',
  'HttpResponseRecorded',
  'RetryScheduled',
  'TimerScheduled',
  'TimerFired',
  'RunFinished',
  'OperatorActed',
  'RunPaused',
  'RunUnpaused',
  'StepRescheduled',
  'StepSkipped',
  'InputPatched',
  'DeadlinePassed',
];

/** Schema version of every event payload written today; bumped per type when a payload changes shape. */
export const EVENT_VERSION = 1;

/** An event as stored in the run log. */
export interface RecordedEvent<E extends RunEvent = RunEvent> {
  runId: string;
  project: string;
  seq: number;
  type: E['type'];
  version: number;
  data: E['data'];
  recordedAt: string;
  prevHash: string;
  hash: string;
  /** the chain key this event's link is signed with; null for the plain links of the first releases */
  kid?: string | null;
}

export class UnknownEventTypeError extends Error {
  constructor(public readonly seq: number, public readonly eventType: string) {
    super(`event ${seq} has type "${eventType}", which this engine does not know`);
    this.name = 'UnknownEventTypeError';
  }
}

export function assertKnownEvent(seq: number, type: string, version: number): asserts type is RunEventType {
  if (!(EVENT_TYPES as readonly string[]).includes(type)) throw new UnknownEventTypeError(seq, type);
  if (version !== EVENT_VERSION) {
    throw new UnknownEventTypeError(seq, `${type} v${version}`);
  }
}
