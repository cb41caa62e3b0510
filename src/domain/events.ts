/*
 * The run log's vocabulary. Each command's nondeterministic input (time,
 * generated ids, the webhook body, an HTTP response, a jitter draw, a timer
 * firing) is carried by the first event of the batch it produces: the
 * "input event". Every other event is a decision the decider re-derives on
 * replay from state plus that input.
 */

export type RunStatus = 'running' | 'waiting' | 'succeeded' | 'failed' | 'canceled';

export type HttpOutcome =
  | { kind: 'response'; status: number; headers: Record<string, string>; body: unknown }
  | { kind: 'error'; code: string; message: string };

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
  };
}
export interface StepStarted {
  type: 'StepStarted';
  data: { step: string; stepType: string; at: string };
}
export interface StepSucceeded {
  type: 'StepSucceeded';
  data: { step: string; output: unknown; next: string | null };
}
export interface StepFailed {
  type: 'StepFailed';
  data: { step: string; reason: string; attempts: number };
}
export interface HttpRequestPrepared {
  type: 'HttpRequestPrepared';
  data: {
    step: string;
    attempt: number;
    idempotencyKey: string;
    method: string;
    url: string;
    headers: Record<string, string>;
    body: unknown;
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
  | RunFinished;

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
];

/** Schema version of every event payload written today; bumped per type when a payload changes shape. */
export const EVENT_VERSION = 1;

/** Input events open a batch; the rest of the batch is decided from them. */
export const INPUT_EVENT_TYPES: ReadonlySet<RunEventType> = new Set([
  'RunStarted',
  'StepStarted',
  'HttpResponseRecorded',
  'TimerFired',
]);

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
