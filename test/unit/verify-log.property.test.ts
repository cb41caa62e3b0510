import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { engineInfo, evolve, foldInPlace, initialState, type RunState } from '../../src/domain/decider';
import { validateDefinition, type WorkflowDefinition } from '../../src/domain/definition';
import type { HttpOutcome, RecordedEvent, RunEvent } from '../../src/domain/events';
import { eventHash, genesisHash, relink, type ChainKey } from '../../src/domain/hash-chain';
import { replayLog, toDomainEvent, verifyLog } from '../../src/domain/replay';
import { created, RUN_ID, simulate, status } from './fixtures';

/*
 * verifyLog over generated workflows and generated fault schedules (answers
 * from the order service: 201, 503, 500, 422, timeouts, resets, in any order).
 * It must accept every log the engine itself writes, and reject every
 * tampering of one: an edited, dropped, duplicated or swapped event, a chain
 * re-linked by someone without the key, a decision rewritten with its chain
 * re-hashed, a log cut short.
 */

const key = (name: string): ChainKey => ({ kid: name, key: createHash('sha256').update(name).digest() });
const OURS = key('ours');
const keys = (kid: string) => (kid === OURS.kid ? OURS.key : null);

type Kind = 'transform' | 'http_call' | 'delay';

/** a linear workflow of the given step kinds, optionally ending in a branch on the last call's status */
function workflow(kinds: Kind[], maxAttempts: number[], branch: boolean): WorkflowDefinition {
  const steps: Record<string, unknown>[] = [];
  let lastCall: string | null = null;
  kinds.forEach((kind, j) => {
    const id = `s${j}`;
    const next = j + 1 < kinds.length ? `s${j + 1}` : branch ? 'check' : 'done';
    if (kind === 'transform') steps.push({ id, type: 'transform', expression: '{id: input.order.id, n: `' + j + '`}', next });
    if (kind === 'delay') steps.push({ id, type: 'delay', durationMs: 1000 * (j + 1), next });
    if (kind === 'http_call') {
      lastCall = id;
      steps.push({
        id,
        type: 'http_call',
        method: 'POST',
        url: 'http://127.0.0.1:9090/orders',
        body: 'input.order',
        retry: { maxAttempts: maxAttempts[j], initialDelayMs: 100, multiplier: 2, maxDelayMs: 1000, jitter: 0.2 },
        next,
      });
    }
  });
  if (branch) steps.push({ id: 'check', type: 'branch', condition: `steps.${lastCall ?? 's0'}.status == \`201\``, then: 'done', else: 'refused' });
  steps.push({ id: 'done', type: 'terminate', status: 'succeeded' });
  if (branch) steps.push({ id: 'refused', type: 'terminate', status: 'failed', reason: 'the order service said no' });
  return validateDefinition({ name: 'generated', steps });
}

const outcome = fc.constantFrom<HttpOutcome>(
  created(),
  status(503),
  status(500),
  status(422),
  { kind: 'error', code: 'TIMEOUT', message: 'no answer within the timeout' },
  { kind: 'error', code: 'ECONNRESET', message: 'socket hang up' },
);

/** a finished run of a generated workflow under a generated fault schedule, its chain keyed */
const recordedRun = fc
  .record({
    kinds: fc.array(fc.constantFrom<Kind>('transform', 'http_call', 'delay'), { minLength: 1, maxLength: 5 }),
    attempts: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 5, maxLength: 5 }),
    branch: fc.boolean(),
    faults: fc.array(outcome, { maxLength: 10 }),
    jitter: fc.double({ min: 0, max: 1, noNaN: true }),
  })
  .map(({ kinds, attempts, branch, faults, jitter }) => {
    const def = workflow(kinds, attempts, branch);
    const answers = [...faults, ...Array.from({ length: 30 }, () => created())];
    // a run as today's engine starts it (semantics 2: every link must be keyed)
    const events = relink(RUN_ID, simulate(def, answers, { jitter, engine: engineInfo() }), OURS);
    return { def, events };
  });

/** the log with event i's content changed and every link after it recomputed, as a forger would */
function rehashFrom(events: RecordedEvent[], from: number, hashWith: (prev: string, e: RecordedEvent) => string): RecordedEvent[] {
  const out = events.map((e) => ({ ...e }));
  let prev = from === 0 ? genesisHash(RUN_ID) : out[from - 1].hash;
  for (let j = from; j < out.length; j++) {
    out[j].prevHash = prev;
    out[j].hash = hashWith(prev, out[j]);
    prev = out[j].hash;
  }
  return out;
}

const RUNS = { numRuns: 150 };

describe('verifyLog, property-based', () => {
  it('accepts every log the engine writes, and replays it to the state verify reaches', () => {
    fc.assert(
      fc.property(recordedRun, ({ def, events }) => {
        const report = verifyLog(RUN_ID, events, def, { keys });
        assert.equal(report.ok, true, JSON.stringify(report.divergence ?? report.chainBreak));
        assert.equal(report.state.phase, 'done');
        assert.deepEqual(replayLog(events), report.state);
      }),
      RUNS,
    );
  });

  it('names the edited event when any event is changed', () => {
    fc.assert(
      fc.property(recordedRun, fc.nat(), ({ def, events }, n) => {
        const i = n % events.length;
        const log = events.map((e, j) => (j === i ? ({ ...e, data: { ...(e.data as object), note: 'changed' } } as unknown as RecordedEvent) : e));
        const report = verifyLog(RUN_ID, log, def, { keys });
        assert.equal(report.ok, false);
        assert.equal(report.chainBreak?.seq, i + 1);
      }),
      RUNS,
    );
  });

  it('fails when any event is dropped, duplicated or swapped with the next', () => {
    fc.assert(
      fc.property(recordedRun, fc.nat(), fc.constantFrom('drop', 'duplicate', 'swap'), ({ def, events }, n, how) => {
        const i = n % events.length;
        const log = [...events];
        if (how === 'drop') log.splice(i, 1);
        if (how === 'duplicate') log.splice(i + 1, 0, events[i]);
        if (how === 'swap') {
          if (i === events.length - 1) return; // nothing after the last event to swap with
          [log[i], log[i + 1]] = [log[i + 1], log[i]];
        }
        const report = verifyLog(RUN_ID, log, def, { keys });
        assert.equal(report.ok, false, `${how} of event ${i + 1} went unnoticed`);
        if (how !== 'drop' || i < events.length - 1) assert.equal(report.chainBreak?.seq ?? report.divergence?.seq, how === 'duplicate' ? i + 2 : i + 1);
      }),
      RUNS,
    );
  });

  it('fails when the chain is re-linked after an edit by someone without the key', () => {
    fc.assert(
      fc.property(recordedRun, fc.nat(), fc.constantFrom('plain sha-256', 'another key under our kid'), ({ def, events }, n, forgery) => {
        const i = n % events.length;
        const edited = events.map((e, j) => (j === i ? { ...e, recordedAt: '2031-06-01T00:00:00.000Z' } : e));
        const theirs = key('theirs');
        const log = rehashFrom(edited, i, (prev, e) => (forgery === 'plain sha-256' ? eventHash(prev, { ...e, kid: null } as RecordedEvent) : eventHash(prev, e, theirs.key)));
        if (forgery === 'plain sha-256') for (let j = i; j < log.length; j++) log[j].kid = null;
        const report = verifyLog(RUN_ID, log, def, { keys });
        assert.equal(report.ok, false);
        assert.equal(report.chainBreak?.seq, i + 1);
      }),
      RUNS,
    );
  });

  it('names the first rewritten decision even when the chain was re-linked with the key', () => {
    fc.assert(
      fc.property(recordedRun, fc.nat(), ({ def, events }, n) => {
        // the engine decides these; an insider holding the key can re-link, but not make replay agree
        const decisions = events.map((e, j) => [e, j] as const).filter(([e]) => e.type === 'StepSucceeded' || e.type === 'RunFinished');
        const [, i] = decisions[n % decisions.length];
        const edited = events.map((e, j) => (j === i ? ({ ...e, data: { ...(e.data as object), rewritten: true } } as unknown as RecordedEvent) : e));
        const log = rehashFrom(edited, i, (prev, e) => eventHash(prev, e, OURS.key));
        const report = verifyLog(RUN_ID, log, def, { keys });
        assert.equal(report.chainBreak, null);
        assert.equal(report.divergence?.seq, i + 1);
      }),
      RUNS,
    );
  });

  it('says what is missing when a finished log is cut short anywhere', () => {
    fc.assert(
      fc.property(recordedRun, fc.nat(), ({ def, events }, n) => {
        const cut = 1 + (n % (events.length - 1));
        const report = verifyLog(RUN_ID, events.slice(0, cut), def, { keys });
        // a log may end between batches (a run in progress); cut inside a batch, the engine names what it would still record
        if (report.ok) assert.notEqual(report.state.phase, 'done');
        else assert.equal(report.divergence?.seq, cut + 1);
      }),
      RUNS,
    );
  });

  it('folds a log in place to exactly the state the pure evolve reaches, and evolve changes nothing it is given', () => {
    // operator events anywhere in the log too: evolve is total, so any order is a fair test of the two folds
    const operatorEvent = fc.oneof(
      fc.constant<RunEvent>({ type: 'RunPaused', data: {} }),
      fc.constant<RunEvent>({ type: 'RunUnpaused', data: {} }),
      fc.record({ step: fc.constantFrom('s0', 's1', 'check'), mode: fc.constantFrom<'retry' | 'resume'>('retry', 'resume'), cleared: fc.subarray(['s0', 's1', 's2', 'check']) }).map(
        (data): RunEvent => ({ type: 'StepRescheduled', data }),
      ),
      fc.record({ step: fc.constantFrom('s0', 's1'), output: fc.jsonValue(), next: fc.constantFrom('s1', 'done', null) }).map((data): RunEvent => ({ type: 'StepSkipped', data })),
      fc.jsonValue().map((patch): RunEvent => ({ type: 'InputPatched', data: { patch } })),
      fc.constant<RunEvent>({ type: 'OperatorActed', data: { action: 'retry', by: 'ops@acme.test', reason: 'target fixed', at: '2030-01-01T01:00:00.000Z' } as never }),
    );
    const deepFreeze = <T>(v: T): T => {
      if (v && typeof v === 'object' && !Object.isFrozen(v)) {
        Object.freeze(v);
        for (const x of Object.values(v)) deepFreeze(x);
      }
      return v;
    };
    fc.assert(
      fc.property(recordedRun, fc.array(fc.tuple(fc.nat(), operatorEvent), { maxLength: 6 }), ({ events }, extra) => {
        const log: RunEvent[] = events.map(toDomainEvent);
        for (const [at, e] of extra) log.splice(at % (log.length + 1), 0, e);
        const states: RunState[] = [];
        let pure = deepFreeze(initialState());
        for (const e of log) {
          // frozen: a pure evolve that wrote into its input (or a map it shares) would throw here
          pure = deepFreeze(evolve(pure, structuredClone(e)));
          states.push(pure);
        }
        const owned = foldInPlace(log.map((e) => structuredClone(e)));
        assert.deepEqual(owned, pure);
        // and every earlier state is still what it was when it was made
        assert.equal(states.length, log.length);
        for (const [i, st] of states.entries()) assert.equal(st.eventCount, i + 1);
      }),
      RUNS,
    );
  });
});
