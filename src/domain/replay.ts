import { canonicalJson, deepEqualCanonical } from './canonical';
import { commandOf, createDecider, DecisionError, EngineFlags, evolveInPlace, initialState, RunDecider, RunState } from './decider';
import type { WorkflowDefinition } from './definition';
import { definitionHash } from './definition';
import { assertKnownEvent, RecordedEvent, RunEvent } from './events';
import { ChainBreak, ChainKeys, checkLink, genesisHash } from './hash-chain';

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

export function toDomainEvent(e: Pick<RecordedEvent, 'seq' | 'type' | 'version' | 'data'>): RunEvent {
  assertKnownEvent(e.seq, e.type, e.version);
  return { type: e.type, data: e.data } as RunEvent;
}

/** Fold a recorded log into state. Throws UnknownEventTypeError on an event it does not know. */
export function replayLog(events: Iterable<RecordedEvent>): RunState {
  // the fold owns its state, so it changes it in place: no copy per event
  const state = initialState();
  for (const e of events) evolveInPlace(state, toDomainEvent(e));
  return state;
}

export interface VerifyOptions {
  /** decide with these flags instead of the ones the run recorded (a what-if) */
  flags?: EngineFlags;
  /** the chain keys to check signed links with (a keyring's chainKeys()) */
  keys?: ChainKeys | null;
  /** the definition's hash, when the caller has it already (verify --all judges many runs of one version) */
  definitionHash?: string;
}

// one decider per definition object: a decider holds nothing of a run, and verify --all judges thousands of runs of one version
const deciders = new WeakMap<WorkflowDefinition, RunDecider>();

function deciderFor(definition: WorkflowDefinition): RunDecider {
  let d = deciders.get(definition);
  if (!d) {
    d = createDecider(definition);
    deciders.set(definition, d);
  }
  return d;
}

/**
 * Verify a log as it streams past, one event at a time, holding only the
 * run's state and the batch being compared: memory does not grow with the
 * log. The hash chain is checked link by link; at every input event the
 * decider is asked again, and each following event must be what it decides.
 */
export class LogVerifier {
  // null when the definition is not there to decide with (its version was deleted): the log is then only folded
  private readonly decider: RunDecider | null;
  // owned by the verifier and folded in place (see foldInPlace)
  private readonly state = initialState();
  private queue: RunEvent[] = [];
  private count = 0;
  private prev: string;
  private keyedSoFar = false;
  private requireKeyed = false;
  private chainBreak: ChainBreak | null = null;
  private divergence: Divergence | null = null;

  constructor(
    readonly runId: string,
    private readonly definition: WorkflowDefinition | null,
    private readonly opts: VerifyOptions = {},
  ) {
    this.decider = definition ? (opts.flags ? createDecider(definition, opts.flags) : deciderFor(definition)) : null;
    this.prev = genesisHash(runId);
  }

  push(recorded: RecordedEvent): void {
    this.count++;
    // an event the engine cannot even read (a payload nested thousands deep, written by hand) is this run's
    // finding, named at its place, never an exception that ends verification of every other run
    try {
      if (!this.chainBreak) this.checkLink(recorded);
    } catch (e) {
      this.chainBreak = { seq: recorded.seq, reason: `it cannot be checked: ${unreadable(e)}` };
    }
    try {
      if (!this.divergence) this.checkDecision(recorded);
    } catch (e) {
      this.divergence = { seq: recorded.seq, expected: null, recorded: { type: recorded.type, data: '(unreadable)' }, reason: `the engine cannot read it: ${unreadable(e)}` };
    }
  }

  private checkLink(e: RecordedEvent): void {
    if (this.count === 1) this.requireKeyed = ((e.data as { engine?: { semantics?: number } }).engine?.semantics ?? 1) >= 2;
    const broken = checkLink(this.prev, this.count, e, this.opts.keys ?? null, this.keyedSoFar || this.requireKeyed);
    if (broken) {
      this.chainBreak = broken;
      return;
    }
    if (e.kid) this.keyedSoFar = true;
    this.prev = e.hash;
  }

  private checkDecision(recorded: RecordedEvent): void {
    if (!this.decider) {
      try {
        evolveInPlace(this.state, toDomainEvent(recorded));
      } catch (e) {
        this.divergence = { seq: recorded.seq, expected: null, recorded: pick(recorded), reason: (e as Error).message };
      }
      return;
    }
    if (this.queue.length === 0) {
      let input: RunEvent;
      try {
        input = toDomainEvent(recorded);
      } catch (e) {
        this.divergence = { seq: recorded.seq, expected: null, recorded: pick(recorded), reason: (e as Error).message };
        return;
      }
      const command = commandOf(input);
      if (!command) {
        this.divergence = {
          seq: recorded.seq,
          expected: null,
          recorded: pick(recorded),
          reason: `${recorded.type} is recorded where the engine expects an input (run start, step start, response, timer or operator action)`,
        };
        return;
      }
      try {
        this.queue = this.decider.decide(command, this.state);
      } catch (e) {
        const reason = e instanceof DecisionError ? `the engine refuses it today: ${e.message}` : `the engine fails on it today: ${(e as Error).message}`;
        this.divergence = { seq: recorded.seq, expected: null, recorded: pick(recorded), reason };
        return;
      }
    }
    const expected = this.queue.shift()!;
    // the same as comparing {type, data} whole, without making that object for every event
    if (expected.type !== recorded.type || !deepEqualCanonical(expected.data, recorded.data)) {
      const recEvent = pick(recorded);
      this.divergence = { seq: recorded.seq, expected, recorded: recEvent, reason: describeDifference(expected, recEvent) };
      return;
    }
    evolveInPlace(this.state, expected);
  }

  finish(): VerifyReport {
    if (!this.divergence && this.queue.length > 0) {
      const exp = this.queue[0];
      this.divergence = { seq: this.count + 1, expected: exp, recorded: null, reason: `the log ends, but the engine would record ${exp.type}` };
    }
    return {
      runId: this.runId,
      ok: !this.chainBreak && !this.divergence,
      eventCount: this.count,
      chainBreak: this.chainBreak,
      divergence: this.divergence,
      definitionChanged:
        this.definition !== null && this.state.definitionHash !== null && this.state.definitionHash !== (this.opts.definitionHash ?? definitionHash(this.definition)),
      state: this.state,
    };
  }
}

export function verifyLog(runId: string, events: readonly RecordedEvent[], definition: WorkflowDefinition, opts: VerifyOptions = {}): VerifyReport {
  const v = new LogVerifier(runId, definition, opts);
  for (const e of events) v.push(e);
  return v.finish();
}

function unreadable(e: unknown): string {
  return e instanceof RangeError ? 'its payload is nested too deep' : String((e as Error)?.message ?? e).slice(0, 200);
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
    // type first: a different event type explains more than a different field; an output's size last, as it
    // differs whenever its output does, which says more
    if (keys.includes('type')) keys.splice(keys.indexOf('type'), 1), keys.unshift('type');
    if (keys.includes('bytes')) keys.splice(keys.indexOf('bytes'), 1), keys.push('bytes');
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
