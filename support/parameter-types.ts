import { defineParameterType } from '@cucumber/cucumber';
import { PLACE_PATTERN, parsePlace } from './places';
import { DISRUPTIONS, WEAKENINGS } from './phrases';
export { DISRUPTIONS, WEAKENINGS, type Disruption, type Weakening } from './phrases';
import { PROBLEM_PATTERN } from './webhook-problems';
import { parseDuration } from './workflow-table';

/** A parameter type whose phrases are the keys of `phrases`, each standing for its value (matched in the order given). */
function definePhrases<T>(name: string, phrases: Record<string, T>): void {
  defineParameterType({ name, regexp: new RegExp(Object.keys(phrases).join('|')), transformer: (text: string) => phrases[text] });
}

/*
 * Domain parameter types, so steps read in the words of docs/domain-language.md. A
 * {moment} is a named point in a step's life, turned here into the failpoint
 * that makes a worker die exactly there.
 */

export interface Moment {
  text: string;
  /** failpoint spec without its action, e.g. after-append@map+StepSucceeded */
  site: string;
}

const MOMENTS: Array<[RegExp, (step: string) => string]> = [
  [/^before step "([^"]+)" is recorded$/, (s) => `before-append@${s}+StepSucceeded`],
  [/^after step "([^"]+)" is recorded$/, (s) => `after-append@${s}+StepSucceeded`],
  [/^before the request of "([^"]+)" is sent$/, (s) => `after-append@${s}+HttpRequestPrepared`],
  [/^after the request of "([^"]+)" is sent$/, (s) => `after-request-sent@${s}`],
  [/^while the response of "([^"]+)" is being recorded$/, (s) => `before-view-update@${s}+HttpResponseRecorded`],
  [/^while the step after "([^"]+)" is being scheduled$/, (s) => `scheduling-next@${s}+StepSucceeded`],
  [/^when the timer of "([^"]+)" is set$/, (s) => `after-append@${s}+TimerScheduled`],
  [/^when the timer of "([^"]+)" fires$/, (s) => `timer-fired@${s}`],
  [/^while it recovers the run$/, () => 'during-recovery'],
];

export function parseMoment(text: string): Moment {
  for (const [re, site] of MOMENTS) {
    const m = re.exec(text);
    if (m) return { text, site: site(m[1]) };
  }
  throw new Error(`unknown moment "${text}"`);
}

defineParameterType({
  name: 'moment',
  regexp:
    /(?:before|after) step "[^"]+" is recorded|(?:before|after) the request of "[^"]+" is sent|while the response of "[^"]+" is being recorded|while the step after "[^"]+" is being scheduled|when the timer of "[^"]+" (?:is set|fires)|while it recovers the run/,
  transformer: (text: string) => parseMoment(text),
});

/**
 * A {fault} is something that goes wrong between the engine and its database,
 * in the words of docs/domain-language.md. Each lands while a worker is paused mid-step.
 */
export type Fault =
  | { kind: 'drop-connections'; text: string }
  | { kind: 'sever'; text: string }
  | { kind: 'silence'; text: string; ms: number }
  | { kind: 'unreachable'; text: string; ms: number }
  | { kind: 'db-crash'; text: string };

// seconds at most: the fault lasts inside one step, whose time limit is 90 seconds
const DURATION = String.raw`\d+(?:\.\d+)? (?:milliseconds?|seconds?)`;

const FAULTS: Array<[RegExp, (text: string, m: RegExpExecArray) => Fault]> = [
  [/^the database drops the engine's connections$/, (text) => ({ kind: 'drop-connections', text })],
  [/^the network to the database is cut$/, (text) => ({ kind: 'sever', text })],
  [new RegExp(`^the network to the database goes silent for (${DURATION})$`), (text, m) => ({ kind: 'silence', text, ms: parseDuration(m[1]) })],
  [new RegExp(`^the database is unreachable for (${DURATION})$`), (text, m) => ({ kind: 'unreachable', text, ms: parseDuration(m[1]) })],
  [/^the database crashes and restarts$/, (text) => ({ kind: 'db-crash', text })],
];

export function parseFault(text: string): Fault {
  for (const [re, make] of FAULTS) {
    const m = re.exec(text);
    if (m) return make(text, m);
  }
  throw new Error(`unknown fault "${text}"`);
}

defineParameterType({
  name: 'fault',
  regexp: new RegExp(
    [
      "the database drops the engine's connections",
      'the network to the database is cut',
      `the network to the database goes silent for ${DURATION}`,
      `the database is unreachable for ${DURATION}`,
      'the database crashes and restarts',
    ].join('|'),
  ),
  transformer: (text: string) => parseFault(text),
});

definePhrases('disruption', DISRUPTIONS);

definePhrases('weakening', WEAKENINGS);

defineParameterType({
  name: 'problem',
  regexp: PROBLEM_PATTERN,
  transformer: (text: string) => text,
});

defineParameterType({
  name: 'duration',
  regexp: /\d+(?:\.\d+)? (?:milliseconds?|seconds?|minutes?|hours?|days?)/,
  transformer: (text: string) => parseDuration(text),
});

defineParameterType({
  name: 'outcome',
  regexp: /succeeds|fails/,
  transformer: (text: string) => ({ succeeds: 'succeeded', fails: 'failed' })[text]!,
});

// Names in double quotes, typed by what they name, so the catalogue reads like
// docs/domain-language.md: `{project} delivers an order webhook to {workflow}`.
const SLUG = /"([a-z][a-z0-9-]*)"/;

defineParameterType({ name: 'project', regexp: SLUG, transformer: (name: string) => name });
defineParameterType({ name: 'workflow', regexp: SLUG, transformer: (name: string) => name });
defineParameterType({ name: 'step', regexp: /"([a-z][a-z0-9_-]*)"/, transformer: (id: string) => id });

/** Someone acting on runs by hand, named by an e-mail address in quotes: `"dana@acme.example"`. */
defineParameterType({ name: 'operator', regexp: /"([^"@\s]+@[^"\s]+)"/, transformer: (who: string) => who });

/**
 * What an operator can do to a run, said the way a sentence needs it:
 * `cancels the run` / `cancel the run`, `pauses`, `unpauses`, `retries "push"`
 * (`retries the run`: the failed step, or the one in flight), `resumes the run
 * from "map"`, `skips "wait"`, `patches the run's input`.
 */
export interface ActionPhrase {
  action: 'cancel' | 'pause' | 'unpause' | 'retry' | 'resume' | 'skip' | 'patch';
  step?: string;
  text: string;
}

const VERBS: Record<string, ActionPhrase['action']> = {
  cancel: 'cancel', cancels: 'cancel', pause: 'pause', pauses: 'pause', unpause: 'unpause', unpauses: 'unpause',
  retry: 'retry', retries: 'retry', resume: 'resume', resumes: 'resume', skip: 'skip', skips: 'skip', patch: 'patch', patches: 'patch',
};
const ACTION = /^(cancels?|pauses?|unpauses?|retry|retries|resumes?|skips?|patch(?:es)?) (?:the run(?: from "([a-z][a-z0-9_-]*)")?|the run's input|"([a-z][a-z0-9_-]*)")$/;

export function parseAction(text: string): ActionPhrase {
  const m = ACTION.exec(text);
  if (!m) throw new Error(`unknown operator action "${text}"`);
  return { action: VERBS[m[1]], step: m[2] ?? m[3], text };
}

defineParameterType({
  name: 'action',
  regexp: /(?:cancels?|pauses?|unpauses?|retry|retries|resumes?|skips?|patch(?:es)?) (?:the run(?: from "[a-z][a-z0-9_-]*")?|the run's input|"[a-z][a-z0-9_-]*")/,
  transformer: (text: string) => parseAction(text),
});

/** What a run can be: `running`, `waiting`, `paused`, `succeeded`, `failed`, `canceled`. */
defineParameterType({ name: 'status', regexp: /running|waiting|paused|succeeded|failed|canceled/, transformer: (s: string) => s });

/**
 * Where a run stands when an operator steps in, for the {situation} of
 * `Given a run of {workflow} that is {situation}`.
 */
export type Situation =
  | { kind: 'finished'; text: string }
  | { kind: 'waiting'; step: string; text: string }
  | { kind: 'between-attempts'; step: string; text: string }
  | { kind: 'failed'; step: string; text: string }
  | { kind: 'left-by-crash'; step: string; text: string }
  | { kind: 'paused'; step: string; text: string };

const SITUATIONS: Array<[RegExp, (step: string, text: string) => Situation]> = [
  [/^finished$/, (_s, text) => ({ kind: 'finished', text })],
  [/^waiting in "([^"]+)"$/, (step, text) => ({ kind: 'waiting', step, text })],
  [/^between attempts of "([^"]+)"$/, (step, text) => ({ kind: 'between-attempts', step, text })],
  [/^failed at "([^"]+)"$/, (step, text) => ({ kind: 'failed', step, text })],
  [/^left in the middle of "([^"]+)" by a crashed worker$/, (step, text) => ({ kind: 'left-by-crash', step, text })],
  [/^paused in "([^"]+)"$/, (step, text) => ({ kind: 'paused', step, text })],
];

export function parseSituation(text: string): Situation {
  for (const [re, make] of SITUATIONS) {
    const m = re.exec(text);
    if (m) return make(m[1], text);
  }
  throw new Error(`unknown situation "${text}"`);
}

defineParameterType({
  name: 'situation',
  regexp: /finished|waiting in "[^"]+"|between attempts of "[^"]+"|failed at "[^"]+"|left in the middle of "[^"]+" by a crashed worker|paused in "[^"]+"/,
  transformer: (text: string) => parseSituation(text),
});

/** A place in a run log in business words (support/places.ts): `the result of "push"`, `the end of the run`, `event 7`. */
defineParameterType({ name: 'place', regexp: PLACE_PATTERN, transformer: (text: string) => parsePlace(text) });

/** Someone watching live logs, named in quotes with a capital first: `"Priya"`, `"José"`, `"Priya Patel"`, `"Seán O'Neill"`. */
defineParameterType({ name: 'viewer', regexp: /"([A-ZÀ-ÖØ-Þ][A-Za-zÀ-ÖØ-öø-ÿ' -]*)"/, transformer: (name: string) => name });

/**
 * What a viewer presents to the live-log server instead of a good token:
 * `an expired token`, `a token signed with another key`, `a token that is not a token`,
 * `no token of their own` (only the public key every page carries).
 */
export type Credential = 'expired' | 'forged' | 'garbage' | 'anonymous';
const CREDENTIALS: Record<string, Credential> = {
  'an expired token': 'expired',
  'a token signed with another key': 'forged',
  'a token that is not a token': 'garbage',
  'no token of their own': 'anonymous',
};
definePhrases('credential', CREDENTIALS);

/**
 * A door a project knocks on for a run (features/security): `reads` (GET /runs/:id with its token),
 * `replays`, `verifies`, `rebuilds the view of`, `reads the audit trail of`, and the operator's actions: `cancels`,
 * `pauses`, `unpauses`, `retries a step of` (always "push"), `skips a step of` (the step the run is at),
 * `resumes` (from "map"), `patches the input of`.
 */
export type Reach =
  | 'reads'
  | 'replays'
  | 'verifies'
  | 'rebuilds the view of'
  | 'reads the audit trail of'
  | 'cancels'
  | 'pauses'
  | 'unpauses'
  | 'retries a step of'
  | 'skips a step of'
  | 'resumes'
  | 'patches the input of';
export const REACHES: Reach[] = [
  'reads the audit trail of',
  'rebuilds the view of',
  'patches the input of',
  'retries a step of',
  'skips a step of',
  'reads',
  'replays',
  'verifies',
  'cancels',
  'unpauses',
  'pauses',
  'resumes',
];
defineParameterType({ name: 'reach', regexp: new RegExp(REACHES.join('|')), transformer: (text: string) => text as Reach });
