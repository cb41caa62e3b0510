import assert from 'node:assert/strict';
import { Command, RunDecider, RunState } from '../../src/domain/decider';
import type { RunEvent } from '../../src/domain/events';

/*
 * Emmett-style decider specification:
 *   given(pastEvents).when(command).then(expectedEvents)
 *   given(pastEvents).when(command).thenThrows(ErrorClass, /message/)
 * The past is folded with the decider's own evolve, exactly as a worker would.
 */

export interface WhenClause {
  then(expected: RunEvent[]): RunEvent[];
  /** check the decided events with a function (for fields the test does not pin) */
  thenMatches(check: (events: RunEvent[], state: RunState) => void): RunEvent[];
  thenThrows(errorClass: new (...args: never[]) => Error, message?: RegExp): void;
}

export function specFor(decider: RunDecider) {
  return {
    given(events: RunEvent[]) {
      const state = events.reduce(decider.evolve, decider.initialState());
      return {
        state,
        when(command: Command): WhenClause {
          const run = (): RunEvent[] => decider.decide(command, state);
          return {
            then(expected) {
              const actual = run();
              assert.deepStrictEqual(actual, expected);
              return actual;
            },
            thenMatches(check) {
              const actual = run();
              check(actual, state);
              return actual;
            },
            thenThrows(errorClass, message) {
              assert.throws(run, (e: unknown) => {
                assert.ok(e instanceof errorClass, `expected ${errorClass.name}, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
                if (message) assert.match((e as Error).message, message);
                return true;
              });
            },
          };
        },
      };
    },
  };
}
