import type { RecordedEvent } from '../src/domain/events';

/*
 * Whether a run's log has gone on past a step, so that a moment of that step can no longer come. Apart from
 * moments.ts, which needs the World, so that it can be tested on its own (test/unit/moved-past.test.ts).
 */

type Event = Pick<RecordedEvent, 'seq' | 'type' | 'data'>;

const stepOf = (e: Event): string | undefined => (e.data as { step?: string }).step;

/** An event that runs `step` again after its result: started anew, or rescheduled by an operator (named, or cleared by a resume from an earlier step). */
function opensAgain(e: Event, step: string): boolean {
  if (e.type === 'StepStarted') return stepOf(e) === step;
  if (e.type !== 'StepRescheduled') return false;
  const d = e.data as { step?: string; cleared?: string[] };
  return d.step === step || (d.cleared ?? []).includes(step);
}

/**
 * The step's latest result is followed by other events, and nothing has opened the step again since. An operator's
 * retry or resume (StepRescheduled, naming the step or clearing it) runs it anew, so a result from before that is no
 * sign the run moved past it: read as one, it failed a scenario whenever the worker took longer than the grace to
 * pick the re-run up ("moved past it … StepFailed(push), RunFinished, OperatorActed(push), StepRescheduled(push)").
 */
export function movedPastStep(events: Event[], step: string): boolean {
  const result = events.filter((e) => ['StepSucceeded', 'StepFailed', 'StepSkipped'].includes(e.type) && stepOf(e) === step).at(-1);
  if (!result) return false;
  const after = events.filter((e) => e.seq > result.seq);
  return after.length > 0 && !after.some((e) => opensAgain(e, step));
}
