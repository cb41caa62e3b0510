import type { RecordedEvent } from '../src/domain/events';

/*
 * Places in a run log, in business words, so a scenario never has to count
 * events: the {place} parameter type. Each names the event that holds it.
 *
 *   the start of the run          RunStarted
 *   the start of "<step>"         the step's StepStarted
 *   the request of "<step>"       its first HttpRequestPrepared
 *   the answer to "<step>"        its first HttpResponseRecorded
 *   the timer of "<step>"         its TimerScheduled or RetryScheduled
 *   the result of "<step>"        its (last) StepSucceeded, StepSkipped or StepFailed
 *   the end of the run            RunFinished
 *   event <n>                     the n-th event, for those who know the numbering
 */

export interface Place {
  text: string;
  find: (events: readonly RecordedEvent[]) => RecordedEvent | undefined;
}

const stepOf = (e: RecordedEvent): string | undefined => (e.data as { step?: string }).step;
const first = (types: string[], step?: string) => (events: readonly RecordedEvent[]) => events.find((e) => types.includes(e.type) && (step === undefined || stepOf(e) === step));
const last = (types: string[], step?: string) => (events: readonly RecordedEvent[]) =>
  [...events].reverse().find((e) => types.includes(e.type) && (step === undefined || stepOf(e) === step));

const PLACES: Array<[RegExp, (m: RegExpExecArray) => Place['find']]> = [
  [/^the start of the run$/, () => first(['RunStarted'])],
  [/^the start of "([^"]+)"$/, (m) => first(['StepStarted'], m[1])],
  [/^the request of "([^"]+)"$/, (m) => first(['HttpRequestPrepared'], m[1])],
  [/^the answer to "([^"]+)"$/, (m) => first(['HttpResponseRecorded'], m[1])],
  [/^the timer of "([^"]+)"$/, (m) => first(['TimerScheduled', 'RetryScheduled'], m[1])],
  [/^the result of "([^"]+)"$/, (m) => last(['StepSucceeded', 'StepSkipped', 'StepFailed'], m[1])],
  [/^the end of the run$/, () => last(['RunFinished'])],
  [/^event (\d+)$/, (m) => (events) => events.find((e) => e.seq === Number(m[1]))],
];

export const PLACE_PATTERN = /the start of the run|the start of "[^"]+"|the request of "[^"]+"|the answer to "[^"]+"|the timer of "[^"]+"|the result of "[^"]+"|the end of the run|event \d+/;

export function parsePlace(text: string): Place {
  for (const [re, make] of PLACES) {
    const m = re.exec(text);
    if (m) return { text, find: make(m) };
  }
  throw new Error(`unknown place in a run log: "${text}"`);
}

/** The event a place names in a log; fails with the log's shape when there is none. */
export function eventAt(place: Place, events: readonly RecordedEvent[]): RecordedEvent {
  const e = place.find(events);
  if (!e) {
    const shape = events.map((x) => `${x.seq} ${x.type}${stepOf(x) ? `(${stepOf(x)})` : ''}`).join(', ');
    throw new Error(`the run log has no ${place.text}; it holds: ${shape}`);
  }
  return e;
}
