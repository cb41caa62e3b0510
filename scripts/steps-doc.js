#!/usr/bin/env node
// Publishes the step catalogue as docs/steps.md: every step QA can use, grouped
// by the concept it belongs to, with a real example from the features and how
// often it is used. `--check` fails when docs/steps.md is out of date, or when
// a feature uses a step that is undefined or ambiguous.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
require('ts-node/register');
const { PROBLEMS } = require('../support/webhook-problems');
const { DISRUPTIONS, WEAKENINGS } = require('../support/phrases');
const out = path.join(root, 'docs', 'steps.md');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'steps-'));
const usageFile = path.join(tmp, 'usage.json');
const messagesFile = path.join(tmp, 'messages.ndjson');
const cli = path.join(root, 'node_modules', '@cucumber', 'cucumber', 'bin', 'cucumber.js');
const res = spawnSync(process.execPath, [cli, '--dry-run', '--format', `usage-json:${usageFile}`, '--format', `message:${messagesFile}`, '-p', 'catalogue'], {
  cwd: root,
  encoding: 'utf8',
});
if (!fs.existsSync(usageFile)) {
  console.error(res.stdout, res.stderr);
  process.exit(1);
}
const usage = JSON.parse(fs.readFileSync(usageFile, 'utf8'));
const envelopes = fs
  .readFileSync(messagesFile, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => JSON.parse(l));
// the project's own parameter types, for the editor: the Cucumber extension matches steps with them
const parameterTypes = envelopes
  .filter((m) => m.parameterType)
  .map(({ parameterType: t }) => ({ name: t.name, regexp: t.regularExpressions.length === 1 ? t.regularExpressions[0] : t.regularExpressions.map((r) => `(?:${r})`).join('|') }))
  .sort((a, b) => a.name.localeCompare(b.name));
const settingsFile = path.join(root, '.vscode', 'settings.json');
const settingsText =
  JSON.stringify(
    {
      'cucumber.features': ['features/**/*.feature'],
      'cucumber.glue': ['step-definitions/**/*.ts', 'support/**/*.ts'],
      'cucumber.parameterTypes': parameterTypes,
    },
    null,
    2,
  ) + '\n';
const statuses = envelopes
  .filter((m) => m.testStepFinished)
  .map((m) => m.testStepFinished.testStepResult.status);
const broken = statuses.filter((s) => s === 'UNDEFINED' || s === 'AMBIGUOUS').length;
fs.rmSync(tmp, { recursive: true, force: true });

const GROUPS = {
  'workflows.steps.ts': 'Workflows and versions',
  'deliveries.steps.ts': 'Webhook deliveries',
  'intake.steps.ts': 'Refused webhooks',
  'workers.steps.ts': 'Workers and crashes',
  'faults.steps.ts': 'Faults',
  'database.steps.ts': 'Database faults',
  'sweep.steps.ts': 'Crash-point sweep',
  'clock.steps.ts': 'Time',
  'order-service.steps.ts': 'The order service',
  'runs.steps.ts': 'Run outcomes',
  'replay.steps.ts': 'Replay and divergence',
  'history.steps.ts': 'Recorded histories',
  'run-log.steps.ts': 'The run log',
  'operator.steps.ts': 'Operator actions',
  'tampering.steps.ts': 'Tampering and verification',
  'live-logs.steps.ts': 'Live logs',
  'security.steps.ts': 'Tenancy and secrets',
};

const keywordOf = (uri, line) => {
  const src = fs.readFileSync(path.join(root, uri), 'utf8').split('\n');
  for (let i = line - 1; i >= Math.max(0, line - 3); i--) {
    const m = /\b(Given|When|Then)\(/.exec(src[i] ?? '');
    if (m) return m[1];
  }
  return 'Step';
};

const byFile = new Map();
for (const def of usage) {
  const file = path.basename(def.uri);
  if (!byFile.has(file)) byFile.set(file, []);
  byFile.get(file).push(def);
}

/*
 * Which finding goes with which tampering, read from the scenarios themselves (so it cannot drift): for every act
 * of someone tampering (a When of tampering.steps.ts), the Then steps the scenarios that do it check afterwards.
 */
function tamperingFindings() {
  const defs = new Map(); // stepDefinition id -> { pattern, file, kw }
  for (const m of envelopes) {
    if (!m.stepDefinition) continue;
    const d = m.stepDefinition;
    defs.set(d.id, { pattern: d.pattern.source, file: path.basename(d.sourceReference.uri ?? ''), kw: keywordOf(d.sourceReference.uri, d.sourceReference.location?.line ?? 1) });
  }
  const pickles = new Map(envelopes.filter((m) => m.pickle).map((m) => [m.pickle.id, m.pickle]));
  const rows = new Map(); // act pattern -> { findings: Set, scenarios: Set }
  for (const m of envelopes) {
    if (!m.testCase) continue;
    const pickle = pickles.get(m.testCase.pickleId);
    const defOf = new Map(m.testCase.testSteps.filter((t) => t.pickleStepId).map((t) => [t.pickleStepId, defs.get(t.stepDefinitionIds?.[0])]));
    let act = null;
    for (const step of pickle.steps) {
      const def = defOf.get(step.id);
      if (!def) continue;
      if (def.file === 'tampering.steps.ts' && def.kw === 'When' && /someone|own role/.test(def.pattern)) {
        act = def.pattern;
        if (!rows.has(act)) rows.set(act, { findings: new Set(), scenarios: new Set() });
        rows.get(act).scenarios.add(`${pickle.uri}:${pickle.location.line}`);
      } else if (act && step.type === 'Outcome') rows.get(act).findings.add(def.pattern);
    }
  }
  const cell = (text) => text.replace(/\|/g, '\\|');
  return [...rows].map(([act, r]) => `| \`When ${cell(act)}\` | ${[...r.findings].map((f) => `\`Then ${cell(f)}\``).join('<br>')} | ${r.scenarios.size} |`);
}

/** What each {problem} is answered, as the scenarios that send it check it: `401 "bad_signature"`. */
const problemAnswers = (() => {
  const answers = new Map();
  for (const m of envelopes) {
    if (!m.pickle) continue;
    const texts = m.pickle.steps.map((st) => st.text);
    const sent = texts.map((t) => /^a webhook (.+) is sent to "/.exec(t)).find(Boolean);
    const refused = texts.map((t) => /^it is refused with (\d+) "([^"]+)"$/.exec(t)).find(Boolean);
    if (sent && refused && PROBLEMS[sent[1]]) answers.set(sent[1], `refused with ${refused[1]} \`${refused[2]}\``);
  }
  return answers;
})();

const lines = [
  '# Step catalogue',
  '',
  'Every step a scenario can use, grouped by concept. Generated by `npm run steps:doc` from',
  '`cucumber-js --dry-run --format usage-json`; `npm test` fails when this file is out of date.',
  'For the raw catalogue with timings, run `npm run steps`. What the words mean (run, step, moment, fault, effect,',
  'live log, …) and how a run log is numbered: [domain-language.md](domain-language.md).',
  '',
  'Parameters: `{string}` is text in double quotes (a `\\"` inside it is a quote); `{int}` and `{float}` are numbers',
  '(`250`, `-3.5`, `125000.5`); `{duration}` is a number and a unit: `250 milliseconds`, `30 seconds`, `90 minutes`,',
  '`1.5 hours`, `2 days` (not "an hour"); `{outcome}` is `succeeds` or `fails`.',
  'Names go in double quotes and have a shape each: `{project}` and `{workflow}` are lower-case slugs',
  '(`"northwind"`, `"order-sync"`: a letter, then letters, digits and `-`); `{step}` is a step id (the same, and `_` too:',
  '`"map_invoice"`); `{operator}` is an e-mail address; `{viewer}` is a name starting with a capital (`"Priya"`,',
  '`"José"`, `"Priya Patel"`). A value of the wrong shape makes the whole sentence undefined, so when `--dry-run`',
  'says a step is undefined, check its quoted values first; the closest existing steps it lists are the ones to use.',
  '',
  '**Which run is "the run".** Steps that say *the run* (`the run succeeds`, `the run is waiting in "wait"`, `someone',
  'marks the run as …`) mean the run most recently started in the scenario, by any project and by any step that starts',
  'one (`{project} delivers …`, `{project} has a finished run of …`, `a run of … that is …`). So in a scenario with two',
  'projects, set up the other project\'s run first and the run the scenario is about last. `Given a run of',
  '"<workflow>" that is <situation>` runs the workflow of the first project the scenario gave that workflow to.',
  '',
  '**What a `Then` waits for.** Steps about how a run ended (`the run succeeds`, `"push" was attempted 2 times`, `the',
  'run went through "<step>"`) wait for the run to finish: on a run left paused or waiting they time out and say where',
  'the run is. Steps that count what reached the order service (`received the order exactly once`, `took the order <n>',
  'times`, `saw <n> attempts …`, `received an order worth …`, `… received "acme"\'s API key with every order`) wait for',
  'the run to finish or to rest, then count what happened so far. A run *at rest* is finished, paused, or waiting on a',
  'timer not yet due by the scenario\'s clock; a run whose timer a clock step made due is not at rest (its timer is about',
  'to fire), nor is one a worker holds at a stall. `the order service was never called` first waits until every worker',
  'armed to stall is past its stall (or can no longer reach it) and every run is at rest, so a call a stalled worker',
  'makes once released is counted. A run *went through* a step when the step has a result the run went on from: it',
  'succeeded, or an operator skipped it. A step that failed, was only started, or was never reached was not gone',
  'through: a run that failed at "push" did not go through "push" (say `the run fails because …` for that). `the run',
  'went through …`, `the run did not go through …` and `"<step>" was attempted <n> times` fail at once, naming the',
  'steps, when the run\'s workflow (the version it is pinned to) has no such step, so a misspelt name cannot pass. Steps',
  'about where a run stands (`the run is waiting in "wait"`, `the run is paused`) wait until it gets there, and fail at',
  'once, saying where the run is, when it has finished, or within a second when it rests elsewhere (paused, or waiting on',
  'a timer nobody moves the clock past), and so never will by itself. A scenario',
  'keeps Given → When → Then in that order (the lint refuses a When after a Then): split two acts into two scenarios,',
  'or state the middle as a When (`And the run is waiting in "wait"` reads as a When after one). `it ends exactly as the',
  'same run without the fault` delivers the same order again with nothing going wrong at all: no crash, no database',
  'fault, and an order service whose scripted troubles (`fails 1 time`, `answers too late`) are spent. When the',
  'scenario also makes the order service fail, say what the attempts were instead (`"push" was attempted 2 times`,',
  '`the order service saw 2 attempts but took the order once`): the first counts the attempts the run log records,',
  'the second the requests the order service received, which includes a request sent again because its answer was',
  'lost with a transaction the database rolled back. `nothing was recorded` counts what a refused webhook wrote: the',
  'rows of runs the scenario did not start, so runs still in flight do not count; it follows the step that sent the',
  'webhook (`a webhook <problem> is sent …`, `a different order arrives with the same delivery id`, `that delivery',
  'arrives`), and fails, saying so, with none before it. `the same delivery arrives again`',
  'only sends: judge its answer with `both deliveries belong to one run` or `it is refused with <status> "<code>"`.',
  'The order service\'s counts (`received the order exactly once`, `took the order <n> times`, `saw <n> attempts …`)',
  'count the requests of the run the scenario last started. An operator\'s patch is a',
  'JSON merge patch in a doc string (three double quotes and `json`), after `, with:` (also on `… during that pause,',
  'because "<words>", with:`); without it a patch is `{"note": "changed by an operator"}`, which changes no amount, and',
  'a skip\'s output `{"skipped": true}`. A doc string that is not JSON fails the step, saying so: it is the scenario\'s',
  'mistake, not a request an operator could send. A moment armed for a worker is met by whichever',
  'run reaches it first. `the worker will crash <moment>` and `the worker will stall <moment>` start a worker armed at',
  'the moment; a worker already running with nothing armed (the one a `Given a run … that is …` situation used) is',
  'stopped cleanly first, so the armed worker is the one that carries the run on. Arm before or after a situation,',
  'whichever reads better. Once any project of the scenario keeps the order service\'s API key, the order service takes',
  'orders only with one of the keys kept, from every project and every workflow: a call step without `with the "<name>"',
  'secret` is then refused with 401 (so the run fails), whichever project it belongs to; put a workflow that sends no key',
  'in a scenario of its own. `the order service repeats the API key it was sent in its answer` changes only the body of',
  'the answer to an order it accepts (still 200, so a branch on the status goes as before): an order it refuses',
  '(`answers every order with 402`, `fails 1 time`, a 401 for a missing key) gets the refusal as scripted, with no key in it.',
  '',
  '**After tampering.** Steps about a run (`the run succeeds`, `the run is waiting in …`) read its run view, which someone',
  'with the database can forge: a tampering scenario judges the run with `the runs are verified`, `the run is replayed`',
  'or `the run views are rebuilt from the log` first. `rebuilding refuses the run because "<words>"` matches words of',
  'the reason, which starts with what failed: `"head"` (the log no longer reaches the run\'s signed head: cut short or',
  'rolled back), `"hash chain broken at event"`, `"replay diverges at event"`, `"checkpoint"` (rolled back to a genuine',
  'earlier head, behind a head kept outside the database), or',
  '`"lower the run\'s last event"` (the view is ahead of its log). `someone rolls the run back to …` and `someone cuts',
  'the run log short …` stop every worker first (a worker would carry the run on past them): `a worker starts` or `a new',
  'worker takes over` brings one back. A worker started holds runs to every head kept outside the database so far (the',
  'workers\' and operators\' journals, a checkpoint taken), so it refuses a run rolled back behind one instead of carrying',
  'it on: `Then the engine refuses to carry the run on because "checkpoint"`. The delivery record is verify\'s finding',
  '(`verification finds the record of the run\'s delivery gone`), not a reason rebuild refuses for.',
  '',
  '**What every scenario checks after its last step**, without a step saying so: every project\'s live log ends equal to',
  'its run log; every fault the scenario injected fired ("these faults were injected but never fired"); and no secret in',
  'use (each workflow\'s signing secret, each vault key) appears in the run log, the run views, any worker\'s output, any',
  'live-log frame a project\'s watcher or a viewer received, the report\'s attachments or the intake\'s last answer. A',
  'scenario about secrets still says what it checks (`the run log names the API key without holding it`, `"Priya" sees',
  'the run exactly as its run log holds it`), so that a reader sees the promise.',
  '',
  '**Recorded histories.** After `Given the recorded history "<name>"` and `When it is replayed against today\'s engine`,',
  'the steps that judge that replay are `replay finds no divergence`, `replay reports the first divergence at …`, `the',
  'divergence says …`, `its hash chain is intact` and `it ends "<status>" as it did when it was recorded`. Steps about',
  '*the run* (`every decision re-made during replay matches the log`, `the run log has …`) need a run started in the',
  'scenario itself.',
  '',
  '`{moment}` names a point in a step\'s life where a worker can be made to crash:',
  '',
  '| moment | where the worker dies | can happen in |',
  '| --- | --- | --- |',
  '| `before step "<step>" is recorded` | the step is decided but its result not yet written; for a delay, that is after its timer fired | any step |',
  '| `after step "<step>" is recorded` | the step\'s result, as a worker records it, is committed, nothing after it yet (an operator\'s skip records the result itself: no worker reaches this moment for it) | any step |',
  '| `before the request of "<step>" is sent` | the call is prepared and committed, not yet sent | a call |',
  '| `after the request of "<step>" is sent` | the order service answered, the answer is not yet recorded | a call |',
  '| `while the response of "<step>" is being recorded` | inside the transaction that records the answer | a call |',
  '| `while the step after "<step>" is being scheduled` | inside the transaction, after the run view is updated | any step |',
  '| `when the timer of "<step>" is set` | the delay\'s timer is committed; nothing waits on it in memory any more | a delay |',
  '| `when the timer of "<step>" fires` | a durable timer is due and about to be recorded as fired | a delay, or a call between attempts |',
  '| `while it recovers the run` | a worker picking up a run another worker left in the middle of a step (not one that rests at a timer, which any worker simply fires) | any run left by a crash |',
  '',
  'A moment no workflow of the scenario can reach (no such step, or a step of a kind that never reaches it) fails the',
  'step that arms it (`the worker will crash …`, `the worker will stall …`, `the next worker to start will crash …`)',
  'at once. A moment the run can no longer reach (it finished, moved past it (a step an operator retried, or cleared by',
  'resuming from an earlier step, is ahead of it again), is paused, or waits on a timer nobody',
  'moves the clock past) is caught within a second by the steps that wait for the moment (a `{fault}`, `… during that',
  'pause, because …`, `a new worker takes over`, `another worker takes over but …`, `every message between the engine',
  'and the database is delayed …`) and by the steps that wait for the run to finish (`the run succeeds`, `the run fails',
  'because …`, `"<step>" was attempted <n> times`, `the run went through …`, …) while the run has not finished; the',
  'sentence names the moment and where the run is. A run that finishes without meeting an armed crash passes those',
  'steps, and the scenario fails after its last step, by the check that every injected fault fired ("these faults',
  'were injected but never fired"); a stall no step waits for is not checked once the run has finished.',
  '',
  '`When the worker running the order is killed` (after `Given 2 workers are running`) kills the worker that holds the',
  'run while its request waits for the order service\'s answer. The order service answers at once unless told',
  'otherwise, so put `Given the order service takes 1 second to answer every order` (or `… takes the order but answers',
  'too late`) before the order is delivered;',
  'when the answer came before the kill the step fails, saying so, instead of passing for a kill that proved nothing.',
  '`Then the other worker finished the run` judges that kill, and fails without it.',
  '',
  '`{fault}` is something that goes wrong between the engine and its database while a worker is paused at its',
  'moment (`Given the worker will stall <moment>`); each is shown to have fired, and to have landed during the pause:',
  '',
  '| fault | what happens |',
  '| --- | --- |',
  "| `the database drops the engine's connections` | Postgres terminates every engine session (`pg_terminate_backend`) |",
  '| `the network to the database is cut` | the proxy between engine and Postgres resets every connection |',
  '| `the network to the database goes silent for <duration>` | the proxy holds every byte back, then delivers it |',
  '| `the database is unreachable for <duration>` | connections are cut and new ones refused for that long |',
  '| `the database crashes and restarts` | the postmaster is SIGKILLed and restarted on its data directory (WAL recovery) |',
  '',
  "Every fault but the crash reaches the workers' connections only. The webhook intake and the operators' actions",
  "(`{operator} {action} …`, `… during that pause, …`) go to the database directly, not through the proxy, and",
  "`the database drops the engine's connections` spares their sessions: so an operator's action that follows a",
  'dropped, cut, silent or unreachable database meets a worker that lost its connections, not a database the operator',
  'could not reach (each `… for <duration>` fault returns once the network is whole again). Only `the database crashes',
  "and restarts` also cuts the operator's and the intake's connections.",
  '',
  'A stall (`Given the worker will stall <moment>`) holds the worker at its moment for 2 seconds, then it goes on by',
  'itself: a `… for <duration>` fault that should end inside the stall takes less than that.',
  '`When every message between the engine and the database is delayed by <duration> until the run ends` is no',
  '`{fault}`: it needs no stall. With a worker armed to stall it slows the network from that moment, else from the',
  'step it follows; either way it holds until the run ends, so it comes after every step that lets the run go on',
  '(an unpause, the clock moving): on a run that rests paused, or waits on a timer nobody moves, it fails within a',
  'second, saying so. A run that answers at once may end before it starts: give it a slow order service',
  '(`Given the order service takes 1 second to answer every order`).',
  '',
  '`{disruption}` is what the crash-point sweep does at each crash point (`When the order is run again once per crash',
  'point, and at each one <disruption>`); the database faults have no duration there (a silence lasts the stall).',
  'Outside the `sweep` profile that step strikes a seeded sample of the crash points, a tenth of them',
  '(`MESHHOOK_SWEEP_SHARE`, at least one); the scenario\'s log says which and its seed (`MESHHOOK_SEED` runs the same',
  'sample again), and `npm run acceptance -- -p sweep` strikes every one. `… with a worker dying there and a new worker',
  'taking over` always strikes every crash point:',
  '',
  ...Object.keys(DISRUPTIONS).map((p) => `- \`${p}\``),
  '',
  '`{weakening}` is what someone who owns the database does to its defences (`When someone <weakening> behind the',
  'engine\'s back`):',
  '',
  ...Object.keys(WEAKENINGS).map((p) => `- \`${p}\``),
  '',
  '`{problem}` is what is wrong with a webhook (`When a webhook <problem> is sent to "<workflow>" of "<project>"`).',
  '`"<workflow>" of "<project>"` is a workflow the scenario set up: the step builds a correct delivery to it, then',
  'spoils it. So the project and workflow named there exist; `for a project that does not exist` and `for a workflow the',
  'project does not have` swap in a name that nothing in the database has (never one the scenario gave a project or',
  'workflow of its own): `When a webhook for a project that does not exist is sent to "order-sync" of "acme"`.',
  '',
  ...Object.keys(PROBLEMS).map((p) => `- \`${p}\`${problemAnswers.get(p) ? `: ${problemAnswers.get(p)}` : ''}`),
  '',
  'A delivery id already used for a different order is refused too, by its own step: `When a different order arrives',
  'with the same delivery id` is answered 409 `delivery_id_reused` (`Then it is refused with 409 "delivery_id_reused"`),',
  'and `nothing was recorded` holds after it. The same order sent again under its delivery id is not refused: `the same',
  'delivery arrives again` belongs to the run it started (`both deliveries belong to one run`).',
  '',
  '`{operator}` is someone acting on runs by hand, by e-mail address: `"dana@acme.example"`. `{action}` is what they do,',
  'said the way the sentence needs it: `cancels the run` / `cancel the run`, `pauses the run`, `unpauses the run`,',
  '`retries "<step>"`, `resumes the run from "<step>"`, `skips "<step>"`, `patches the run\'s input`.',
  '`{situation}` is where a run stands when the operator steps in (`Given a run of "<workflow>" that is <situation>`):',
  '`finished`, `waiting in "<step>"`, `between attempts of "<step>"`, `failed at "<step>"` (the order service refused it once),',
  '`left in the middle of "<step>" by a crashed worker`, `paused in "<step>"`. "waiting in" and "paused in" need a step the',
  'run rests at (a delay step it goes through); a run that finishes first fails the step at once, saying so. Every',
  'situation delivers the same order: `{"order": {"id": "A-1001", "sum": 42.5, "currency": "EUR", …}}`. `paused in` is',
  'paused by `ops@acme.example` with the reason `held for review`, a row of the audit trail like any other. An operator\'s',
  '*retry* is another attempt under the same idempotency key; *resumes the run from* is a new execution with new keys,',
  'from a step the run reached (a step it never got to is refused: `step "remind" was never reached in this run`).',
  '`the run\'s audit trail reads:` takes rows of `what`, `by` and `reason`: `what` is `run started`, an action as its',
  'verb (`cancel`, `pause`, `unpause`, `retry`, `resume`, `skip`, `patch`) with the operator and their reason, or how the',
  'run ended (`run succeeded`, `run failed`, `run canceled`) with no operator, each time it ended: a canceled run\'s row',
  'gives as its reason `canceled by <operator>: <reason>`, a failed one the step\'s reason, and a run canceled and then',
  'resumed reads `cancel`, `run canceled`, `resume`, then how it ended again.',
  '`{operator} {action} during that pause, because …` asks for the action while a worker stalls at its moment; where the',
  'worker holds its batch\'s transaction open (`while the response of … is being recorded`, `while the step after … is',
  'being scheduled`) the action waits for that batch and lands right after it, before the worker\'s next step.',
  '`{operator} tries to {action} during that pause, because …` is the same for an action the engine may refuse there (a',
  'skip of the call whose answer the held batch records finds the run at the next step): judge it with `the action is',
  'refused because …`, then how the run ended and `the run\'s audit trail reads:`; `the run log is unchanged` does not',
  'hold after it, since the stalled worker carries the run on, and says so.',
  '`When the clock moves forward <duration>` first lets every run come to rest (finished, waiting or paused), so a run',
  'delivered a moment ago sets its timer before time passes. While a worker is armed to crash or stall at a moment it',
  'moves the clock at once instead, without waiting: that worker may be holding its run mid-step on purpose. So with',
  'a worker armed (`Given the worker will stall when the timer of "wait" fires`), a run delivered a moment ago may set',
  'its timer only after the clock moved, an hour after the moved clock, and the armed moment then never comes: say',
  'where the run rests first (`When "acme" delivers …`, `And the run is waiting in "wait"`, `And the clock moves',
  'forward 1 hour`), or start it with `Given a run of "<workflow>" that is waiting in "<step>"`. The',
  'timers it makes due fire just after it, while the next step already runs: to act on a run once its timer has fired,',
  'say where the run is first (`And the run is waiting in "<step>"`, or `Then the run is succeeded`). A delay takes any',
  '`{duration}`: `wait 1 hour`, `wait 2 days`.',
  '`{status}` is a run\'s status: `running`, `waiting`, `paused`, `succeeded`, `failed`, `canceled`.',
  '',
  '`{viewer}` is someone watching live logs, by name: `"Priya"`. Every project of a scenario is already watched from',
  'before its runs start (and checked after the scenario); a viewer is someone more, with a token of their own.',
  '`{credential}` is a bad token a viewer may try: `an expired token`, `a token signed with another key`,',
  '`a token that is not a token`, `no token of their own` (only the public key).',
  '`{reach}` is a door a project knocks on for a run (`When "globex" <reach> "acme"\'s run`): `reads` (over HTTP, with its',
  'token), `replays`, `verifies`, `rebuilds the view of`, `reads the audit trail of`, and every operator action: `cancels`,',
  '`pauses`, `unpauses`, `retries a step of` (always `"push"`), `skips a step of` (the step the run is at), `resumes` (from',
  '`"map"`), `patches the input of`. The operator actions are taken as `"dana@acme.example"` with a reason.',
  '`the same request for its own run is answered` knocks on the same door for the knocking project\'s own latest run, so',
  'that project needs a run of its own, started before the run the scenario is about (`Given "globex" has a finished',
  'run of "order-sync"` first); it means the door found the run: the answer may still be a refusal',
  '(`retries a step of` a run whose workflow has no `"push"` is refused, and answered). `{viewer} sees {project}\'s run but',
  'nothing of {project}\'s` takes a viewer watching their own project, or one signed in to one project and watching another.',
  '`{project}\'s run is untouched` is judged once the run is at rest, and fails if anything at all happened to the run',
  'since the knock, whatever caused it: check it before a step that lets the run go on (`the clock moves forward …`).',
  '',
  '`{place}` names an event of a run log in business words, so no scenario has to count events:',
  '',
  '| place | the event |',
  '| --- | --- |',
  '| `the start of the run` | RunStarted (always event 1) |',
  '| `the start of "<step>"` | the step\'s StepStarted |',
  '| `the request of "<step>"` | the call\'s first HttpRequestPrepared |',
  '| `the answer to "<step>"` | the call\'s first HttpResponseRecorded |',
  '| `the timer of "<step>"` | the TimerScheduled of a delay, or the RetryScheduled of a call |',
  '| `the result of "<step>"` | the step\'s last StepSucceeded, StepSkipped or StepFailed |',
  '| `the end of the run` | RunFinished |',
  '| `event <n>` | the n-th event (see docs/domain-language.md for how a log is numbered) |',
  '',
  '## Workflow tables',
  '',
  'Workflows are written as tables with the columns `step | type | does | then`:',
  '',
  '| type | `does` reads like | `then` |',
  '| --- | --- | --- |',
  '| transform | a JMESPath expression over the webhook body and `steps.<id>`: `{id: order.id, total: order.sum}` | next step |',
  '| http_call | `POST the mapped order to /orders` (the body is the output of the transform before it, else the webhook body); options: ` with the \"orders-api\" secret` (the project\'s vault secret, sent as `Authorization: Bearer …`; store it first with `Given \"acme\" keeps the order service\'s API key in its vault as \"orders-api\"`), `, up to 5 attempts`, `, backing off 1 second`, `, at most 2 seconds per attempt`; anything else in the cell is refused, so a misspelt option cannot quietly leave the default | next step |',
  '| branch | `when push answered 200`, `when the total of map is over 100` (`under`, `at least`, `at most`), `when the status of map is "paid"`, or `` when `<JMESPath>` `` | `<step>, else <step>` |',
  '| delay | `wait 1 hour`, `wait 2 days` (any `{duration}`) | next step |',
  '| terminate | `succeeded` or `failed: <reason>` | (empty) |',
  '',
  'Declare a project (`Given the project \"acme\" with the workflow …`) before anything else about it (its vault, its viewers,',
  'a viewer signed in to it).',
  '',
  'A workflow whose runs must finish in time says so where it is declared: `Given the project "acme" with the workflow',
  '"order-follow-up", whose runs must finish within 30 minutes:` (any `{duration}` from 100 milliseconds to 30 days). A',
  'run still unfinished at its deadline fails there (`the run fails because "its deadline"`); an operator who retries,',
  'resumes or skips a step of it gives it the full time again. The deadline counts on the scenario\'s clock: move it',
  '(`When the clock moves forward 31 minutes`) to see a waiting run run out of time.',
  '',
  'A workflow the clock starts says how often: `Given the project "acme" with the workflow "stock-report", started every',
  '15 minutes:` (every N seconds, minutes or hours that divide a minute, an hour or a day evenly, or every 1 day). Its',
  'runs start when the scenario\'s clock moves past its ticks (`When the clock moves forward 1 hour`), each with the body',
  '`{"scheduledAt": "<tick>"}`; `Given a second engine ticks the same schedules` adds another engine ticking at the same',
  'moments. `Then "stock-report" ran once for each of the 4 ticks that passed` counts one run a tick and waits for each',
  'to succeed; `the run` is then the last tick\'s.',
  '',
  '`When "acme" tries to publish the workflow "<name>":` sends the engine a table the steps can read;',
  '`Then publishing is refused because "<words>"` matches words of the engine\'s reason, which names the step:',
  '`step "map" goes to "nowhere", which does not exist`, `steps form a cycle: map -> push -> map`, `step "mail" has',
  'type "email", which is not a step type`, `step "map" expression is not valid JMESPath`, `step "audit" cannot be',
  'reached from "map"`, `step "map" is defined twice`. A row the table itself cannot read (`wait an hour`, a',
  'misspelt call option) is the scenario\'s wording, not a definition: the `When` fails, saying how to write the row.',
  '',
  'An `http_call` step succeeds on a 2xx answer and is refused on any other, after its attempts (a 4xx other than',
  '408 and 429 at once): the run then fails at that step (`the run fails because "step \\"push\\" was refused: HTTP',
  '402"`), and no branch after it is reached. So `when push answered 200, else <step>` takes its `else` only for a',
  'success other than 200 (201, 202, 204).',
  '',
  'Step ids may hold `-` (`map-invoice`); the phrases above quote such ids for you. In an expression you write',
  'yourself, write `steps."map-invoice"`: JMESPath reads `steps.map-invoice` as a subtraction, and publishing refuses it.',
  '',
];

const order = Object.keys(GROUPS);
const files = [...byFile.keys()].sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
let unused = 0;
// recipes: complete scenarios of the common shapes, copied from a feature the suite runs
const recipes = fs.readFileSync(path.join(root, 'features', 'recipes', 'recipes.feature'), 'utf8').trimEnd();
lines.push(
  '## Recipes',
  '',
  'Complete scenarios of the common shapes, to copy and change: replay a finished order, a worker dying at a moment,',
  'a fault × moment matrix, an edit that replay names, a refused webhook, an operator\'s action, a dashboard watching',
  'live. They come from `features/recipes/recipes.feature`, which the suite runs, so each is known to pass.',
  '',
  '```gherkin',
  recipes,
  '```',
  '',
);
for (const file of files) {
  lines.push(`## ${GROUPS[file] ?? file}`, '', `Defined in \`step-definitions/${file}\`.`, '', '| step | example | used |', '| --- | --- | --- |');
  for (const def of byFile.get(file).sort((a, b) => a.line - b.line)) {
    const kw = keywordOf(def.uri, def.line);
    const ex = def.matches[0];
    if (!ex) unused++;
    const example = ex ? `\`${kw} ${ex.text}\` (${ex.uri}:${ex.line})` : '_not used yet_';
    lines.push(`| \`${kw} ${def.pattern}\` | ${example.replace(/\|/g, '\\|')} | ${def.matches.length} |`);
  }
  lines.push('');
  if (file === 'tampering.steps.ts') {
    lines.push(
      '**Which finding goes with which tampering.** Each act of tampering, with the Then steps the scenarios that do it',
      'check afterwards (read from the scenarios, so it is what the suite proves, not a wish):',
      '',
      '| what someone does | what is then checked | scenarios |',
      '| --- | --- | --- |',
      ...tamperingFindings(),
      '',
    );
  }
}
const text = lines.join('\n');

if (process.argv.includes('--check')) {
  const current = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
  let ok = true;
  if (broken) {
    console.error(`${broken} step(s) in the features are undefined or ambiguous: run "npx cucumber-js --dry-run" to see them`);
    ok = false;
  }
  if (current !== text) {
    console.error('docs/steps.md is out of date: run "npm run steps:doc" and commit it');
    ok = false;
  }
  if ((fs.existsSync(settingsFile) ? fs.readFileSync(settingsFile, 'utf8') : '') !== settingsText) {
    console.error('.vscode/settings.json does not list the current parameter types: run "npm run steps:doc" and commit it');
    ok = false;
  }
  if (unused) {
    console.error(`${unused} step(s) are used by no scenario (marked "not used yet" in docs/steps.md): use each in a scenario or remove it`);
    ok = false;
  }
  console.log(ok ? `step catalogue: ${usage.length} steps, docs/steps.md up to date` : 'step catalogue: problems found');
  process.exit(ok ? 0 : 1);
}
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, text);
fs.writeFileSync(settingsFile, settingsText);
console.log(`wrote docs/steps.md: ${usage.length} steps${unused ? `, ${unused} not used yet` : ''}`);
