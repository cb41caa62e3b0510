import { canonicalJson } from './canonical';
import { commandOf, createDecider, DecisionError, EngineFlags, evolve, initialState, RunState } from './decider';
import type { WorkflowDefinition } from './definition';
import { definitionHash } from './definition';
import { assertKnownEvent, RecordedEvent, RunEvent } from './events';
import { ChainBreak, checkChain } from './hash-chain';

/*
 * Replay as regression (Temporal-style): fold the log into state, and at every
 * input event ask the decider again what it would record. The first event
 * where the answer differs from the log is the divergence.
 */

export interface Divergence {
  seq: number;
  /** what the engine decides today ({type, data}), or null when it would record nothing more */
  expected: unknown;
  /** what the log holds at that position, or null when the log ends early */
  recorded: unknown;
  /** one readable line: which field differed, or why the engine refused */
  reason: string;
}

export interface VerifyReport {
  runId: string;
  ok: boolean;
  eventCount: number;
  chainBreak: ChainBreak | null;
  divergence: Divergence | null;
  /** set when the definition the run was pinned to is not the one replay used */
  definitionChanged: boolean;
  state: RunState;
}

export function toDomainEvent(e: RecordedEvent): RunEvent {
  assertKnownEvent(e.seq, e.type, e.version);
  return { type: e.type, data: e.data } as RunEvent;
}

/** Fold a recorded log into state. Throws UnknownEventTypeError on an event it does not know. */
export function replayLog(events: readonly RecordedEvent[]): RunState {
  let state = initialState();
  for (const e of events) state = evolve(state, toDomainEvent(e));
  return state;
}

export function verifyLog(
  runId: string,
  events: readonly RecordedEvent[],
  definition: WorkflowDefinition,
  /** decide with these flags instead of the ones the run recorded (a what-if) */
  flags?: EngineFlags,
): VerifyReport {
  const chainBreak = checkChain(runId, events);
  const decider = createDecider(definition, flags);
  let state = initialState();
  let divergence: Divergence | null = null;
  let i = 0;
  const domain = (e: RecordedEvent): RunEvent => toDomainEvent(e);

  outer: while (i < events.length) {
    const recorded = events[i];
    let input: RunEvent;
    try {
      input = domain(recorded);
    } catch (e) {
      divergence = { seq: recorded.seq, expected: null, recorded: pick(recorded), reason: (e as Error).message };
      break;
    }
    const command = commandOf(input);
    if (!command) {
      divergence = {
        seq: recorded.seq,
        expected: null,
        recorded: pick(recorded),
        reason: `${recorded.type} is recorded where the engine expects an input (run start, step start, response or timer)`,
      };
      break;
    }
    let expected: RunEvent[];
    try {
      expected = decider.decide(command, state);
    } catch (e) {
      const reason = e instanceof DecisionError ? `the engine refuses it today: ${e.message}` : `the engine fails on it today: ${(e as Error).message}`;
      divergence = { seq: recorded.seq, expected: null, recorded: pick(recorded), reason };
      break;
    }
    for (const [j, exp] of expected.entries()) {
      const rec = events[i + j];
      if (!rec) {
        divergence = {
          seq: events.length + 1,
          expected: exp,
          recorded: null,
          reason: `the log ends, but the engine would record ${exp.type}`,
        };
        break outer;
      }
      const recEvent = pick(rec);
      if (canonicalJson(exp) !== canonicalJson(recEvent)) {
        divergence = { seq: rec.seq, expected: exp, recorded: recEvent, reason: describeDifference(exp, recEvent) };
        break outer;
      }
    }
    for (const exp of expected) state = evolve(state, exp);
    i += expected.length;
  }

  return {
    runId,
    ok: !chainBreak && !divergence,
    eventCount: events.length,
    chainBreak,
    divergence,
    definitionChanged: state.definitionHash !== null && state.definitionHash !== definitionHash(definition),
    state,
  };
}

function pick(e: RecordedEvent): { type: string; data: unknown } {
  return { type: e.type, data: e.data };
}

/** The first path at which two JSON values differ, as one readable line. */
export function describeDifference(expected: unknown, recorded: unknown): string {
  const path = firstDifference(expected, recorded, '');
  if (!path) return 'the events differ';
  return `${path.path || 'event'}: engine decides ${short(path.a)}, log has ${short(path.b)}`;
}

function firstDifference(a: unknown, b: unknown, path: string): { path: string; a: unknown; b: unknown } | null {
  if (canonicalJson(a) === canonicalJson(b)) return null;
  if (a && b && typeof a === 'object' && typeof b === 'object' && Array.isArray(a) === Array.isArray(b)) {
    const keys = Array.from(new Set([...Object.keys(a as object), ...Object.keys(b as object)])).sort();
    // type first: a different event type explains more than a different field
    if (keys.includes('type')) keys.splice(keys.indexOf('type'), 1), keys.unshift('type');
    for (const k of keys) {
      const d = firstDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path ? `${path}.${k}` : k);
      if (d) return d;
    }
  }
  return { path, a, b };
}

function short(v: unknown): string {
  const s = v === undefined ? 'nothing' : canonicalJson(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}
