import { createDecider, RunDecider } from '../../src/domain/decider';
import { driveLoopSync, runLoop } from '../../src/domain/run-loop';
import { definitionHash, validateDefinition, WorkflowDefinition } from '../../src/domain/definition';
import type { EngineInfo, HttpOutcome, RecordedEvent, RunEvent } from '../../src/domain/events';
import { genesisHash } from '../../src/domain/hash-chain';
import { replayLog } from '../../src/domain/replay';
import type { DecidedBatch } from '../../src/domain/run-loop';
import { ConcurrencyError, numberEvents } from '../../src/store/log-append';
import type { LoggedRun, RunKeeper } from '../../src/store/run-repository';

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
 * One run's log in memory, kept behind the run repository's load-and-append
 * contract (src/store/run-repository.ts) as the engine's event log keeps it in
 * Postgres: numbered, hash-chained events, appended only after the sequence
 * the writer names.
 */
export class InMemoryRunLog implements RunKeeper<LoggedRun, false> {
  readonly events: RecordedEvent[] = [];

  constructor(private readonly workflowId = 'wf-1', private readonly version = 1) {}

  load(projectId: string, runId: string): LoggedRun | null {
    if (projectId !== PROJECT_ID || runId !== RUN_ID || this.events.length === 0) return null;
    return { runId, projectId, workflowId: this.workflowId, version: this.version, state: replayLog(this.events), seq: this.events.length, lastHash: this.events[this.events.length - 1].hash };
  }

  /** The run before its first event, to append its start to. */
  empty(decider: RunDecider): LoggedRun {
    return { runId: RUN_ID, projectId: PROJECT_ID, workflowId: this.workflowId, version: this.version, state: decider.initialState(), seq: 0, lastHash: genesisHash(RUN_ID) };
  }

  append(run: LoggedRun, batch: DecidedBatch, recordedAt: Date): LoggedRun {
    if (run.seq !== this.events.length) throw new ConcurrencyError(run.runId, run.seq);
    const recorded = numberEvents(run.runId, run.projectId, run.seq, run.lastHash, batch.events, recordedAt.toISOString());
    this.events.push(...recorded);
    return { ...run, state: batch.stateAfter, seq: this.events.length, lastHash: recorded[recorded.length - 1].hash };
  }
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
  const log = new InMemoryRunLog();
  let clock = 0;
  const started = (runStarted(def, opts.input ?? INPUT) as Extract<RunEvent, { type: 'RunStarted' }>).data;
  const empty = log.empty(decider);
  const startEvents = decider.decide({ type: 'StartRun', data: opts.engine ? { ...started, engine: opts.engine } : started }, empty.state);
  let run = log.append(empty, { events: startEvents, step: null, stateBefore: empty.state, stateAfter: startEvents.reduce(decider.evolve, empty.state) }, new Date(at(clock)));
  const queue = [...outcomes];
  // the clock moves 10 ms for each batch; a timer not yet due moves it to the timer's time
  let batches = 0;
  let ticked = false;
  driveLoopSync(runLoop(decider, run.state, { merge: false, stopping: () => batches >= (opts.maxBatches ?? 100) }), {
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
      run = log.append(run, batch, new Date(at(clock)));
      batches++;
      ticked = false;
      return run.state;
    },
  });
  return log.events;
}
