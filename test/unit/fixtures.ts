import { createDecider, RunDecider } from '../../src/domain/decider';
import { driveLoopSync, runLoop } from '../../src/domain/run-loop';
import { definitionHash, validateDefinition, WorkflowDefinition } from '../../src/domain/definition';
import type { EngineInfo, HttpOutcome, RecordedEvent, RunEvent } from '../../src/domain/events';
import { genesisHash } from '../../src/domain/hash-chain';
import { numberEvents } from '../../src/store/log-append';

export const RUN_ID = '11111111-2222-4333-8444-555555555555';
export const PROJECT_ID = '99999999-2222-4333-8444-555555555555';
export const T0 = '2030-01-01T00:00:00.000Z';

export function at(ms: number): string {
  return new Date(Date.parse(T0) + ms).toISOString();
}

export const orderSync: WorkflowDefinition = validateDefinition({
  name: 'order-sync',
  steps: [
    { id: 'map', type: 'transform', expression: '{id: input.order.id, total: input.order.sum}', next: 'push' },
    {
      id: 'push',
      type: 'http_call',
      method: 'POST',
      url: 'http://127.0.0.1:9090/orders',
      body: 'steps.map',
      retry: { maxAttempts: 3, initialDelayMs: 100, multiplier: 2, maxDelayMs: 1000, jitter: 0.2 },
      next: 'check',
    },
    { id: 'check', type: 'branch', condition: 'steps.push.status == `201`', then: 'done', else: 'failed' },
    { id: 'done', type: 'terminate', status: 'succeeded', output: 'steps.push.body' },
    { id: 'failed', type: 'terminate', status: 'failed', reason: 'not created' },
  ],
});

export const withDelay: WorkflowDefinition = validateDefinition({
  name: 'with-delay',
  steps: [
    { id: 'wait', type: 'delay', durationMs: 60_000, next: 'after' },
    { id: 'after', type: 'transform', expression: 'input.n' },
  ],
});

export const INPUT = { order: { id: 'o-1', sum: 42 } };

export function runStarted(def: WorkflowDefinition, input: unknown = INPUT): RunEvent {
  return {
    type: 'RunStarted',
    data: { runId: RUN_ID, project: 'acme', workflow: def.name, version: 1, definitionHash: definitionHash(def), deliveryId: 'd-1', input, at: T0 },
  };
}

export function created(body: unknown = { orderId: 'ord_1' }): HttpOutcome {
  return { kind: 'response', status: 201, headers: { 'content-type': 'application/json' }, body };
}

export function status(code: number): HttpOutcome {
  return { kind: 'response', status: code, headers: {}, body: null };
}

/**
 * Drive a run to its end in memory, the way a worker does, answering each
 * HTTP request with the next scripted outcome; returns the numbered log.
 */
export function simulate(
  def: WorkflowDefinition,
  outcomes: HttpOutcome[] = [],
  opts: { input?: unknown; jitter?: number; decider?: RunDecider; maxBatches?: number; engine?: EngineInfo } = {},
): RecordedEvent[] {
  const decider = opts.decider ?? createDecider(def);
  let state = decider.initialState();
  const log: RecordedEvent[] = [];
  let clock = 0;
  const append = (events: RunEvent[]): void => {
    const prev = log.length ? log[log.length - 1].hash : genesisHash(RUN_ID);
    log.push(...numberEvents(RUN_ID, PROJECT_ID, log.length, prev, events, at(clock)));
    state = events.reduce(decider.evolve, state);
  };
  const started = (runStarted(def, opts.input ?? INPUT) as Extract<RunEvent, { type: 'RunStarted' }>).data;
  append(decider.decide({ type: 'StartRun', data: opts.engine ? { ...started, engine: opts.engine } : started }, state));
  const queue = [...outcomes];
  // the clock moves 10 ms for each batch; a timer not yet due moves it to the timer's time
  let batches = 0;
  let ticked = false;
  driveLoopSync(runLoop(decider, state, { merge: false, stopping: () => batches >= (opts.maxBatches ?? 100) }), {
    now: () => {
      if (!ticked) clock += 10;
      ticked = true;
      return new Date(at(clock));
    },
    send: () => {
      const outcome = queue.shift();
      if (!outcome) throw new Error('simulate: no scripted outcome left');
      return { outcome, durationMs: 5 };
    },
    jitter: () => opts.jitter ?? 0.5,
    due: ({ dueAt }) => {
      clock = Date.parse(dueAt) - Date.parse(T0);
      return true;
    },
    moment: () => undefined,
    commit: ({ batch }) => {
      append(batch.events);
      batches++;
      ticked = false;
      return state;
    },
  });
  return log;
}
