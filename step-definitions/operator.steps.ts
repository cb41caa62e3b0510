import { DataTable, Given, Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import { auditTrail } from '../src/operator-service';
import type { ActionPhrase, Situation } from '../support/parameter-types';
import type { StoredRunView } from '../src/replay-service';
import { expectAccepted, ORDER } from '../support/orders';
import { landedDuringStall, stallsInsideTransaction, whenStalled } from '../support/faults';
import type { ReplayWorld } from '../support/world';

/* Operator actions: people fixing runs by hand, through the engine, never behind its back. */

/**
 * A run brought to where an operator would step in, with the order service and
 * workers scripted to get it there. Each fault used on the way must fire.
 */
Given('a run of {workflow} that is {situation}', async function (this: ReplayWorld, workflow: string, situation: Situation) {
  const project = this.projectWith(workflow);
  const target = await this.orderService();
  const deliver = async (): Promise<void> => expectAccepted(await this.deliver(project, workflow, JSON.stringify(ORDER)));
  const waitFor = async (what: string, ok: (v: StoredRunView) => boolean): Promise<void> => {
    // a run that finished first will never get there: say so at once, not after the timeout
    let finishedFirst: string | null = null;
    await this.waitUntil(`the run to be ${what}`, async () => {
      const v = await this.view();
      if (ok(v)) return true;
      if (['succeeded', 'failed', 'canceled'].includes(v.status)) finishedFirst = v.status;
      return finishedFirst !== null;
    }).catch(async (e) => {
      throw new Error(`${(e as Error).message}; last seen: ${await this.describeRun()}`);
    });
    if (finishedFirst)
      throw new Error(
        `the run ${finishedFirst} before it was ${what}, so it never will be: "waiting in" and "paused in" need a delay step the run ` +
          `goes through (the situation delivers the order ${JSON.stringify(ORDER)}: a branch may route it around the step); ` +
          '"between attempts of" needs a call with retries',
      );
  };
  switch (situation.kind) {
    case 'finished':
      await deliver();
      // finished: a workflow that waits (a delay, a retry's backoff) gets its clock moved past each timer
      await this.waitUntilFinished(undefined, undefined, true);
      return;
    case 'waiting':
    case 'paused':
      await deliver();
      await waitFor(`waiting in "${situation.step}"`, (v) => v.status === 'waiting' && v.currentStep === situation.step);
      if (situation.kind === 'paused') {
        await this.act('ops@acme.example', { action: 'pause', text: 'pauses the run' }, 'held for review');
        this.expectActed();
      }
      return;
    case 'between-attempts':
      target.script('*', { kind: 'fail', status: 503, times: 1 });
      this.recordFault('the order service answers 503 once', async () => (target.requests.some((r) => r.outcome === 'failed') ? 'answered 503' : null));
      await deliver();
      await waitFor(`between attempts of "${situation.step}"`, (v) => v.status === 'waiting' && v.currentStep === situation.step);
      return;
    case 'failed':
      target.script('*', { kind: 'respond', status: 422, body: { error: { code: 'invalid_order', message: 'the order total does not match its lines' } }, times: 1 });
      this.recordFault('the order service refuses the order once (422)', async () => (target.requests.some((r) => r.status === 422) ? 'answered 422' : null));
      await deliver();
      await waitFor(`failed at "${situation.step}"`, (v) => v.status === 'failed');
      // failed where the sentence says, and because the refusal reached it (not, say, an expression that failed first)
      const failed = (await this.events()).filter((e) => e.type === 'StepFailed').map((e) => (e.data as { step: string; reason: string }));
      const last = failed[failed.length - 1];
      if (last?.step !== situation.step) throw new Error(`the run failed at "${last?.step ?? 'no step'}", not at "${situation.step}": ${last?.reason ?? await this.describeRun()}`);
      return;
    case 'left-by-crash': {
      const worker = await this.startWorker({ failpoints: [`after-request-sent@${situation.step}=crash`] });
      this.recordFault(`a worker crash after the request of "${situation.step}" is sent`, async () =>
        worker.exitStatus?.signal === 'SIGKILL' && this.firedFailpoints().some((f) => f.pid === worker.pid && f.action === 'crash') ? 'SIGKILL' : null,
      );
      await deliver();
      // a run that finished first never reaches the crash: say so at once, not after the timeout
      await this.waitUntil(`worker ${worker.opts.id} to crash in "${situation.step}"`, async () => !worker.alive || ['succeeded', 'failed', 'canceled'].includes((await this.view()).status));
      if (worker.alive)
        throw new Error(`the run finished before a request of "${situation.step}" was sent, so no worker crashed there: ${await this.describeRun()}`);
      return;
    }
  }
});

/** Output and patch when a scenario does not spell one out: enough for actions that are refused anyway. */
const DEFAULT_EXTRA = { output: { skipped: true }, patch: { note: 'changed by an operator' } };

/**
 * The doc string after `, with:` is the patch or output as JSON. Text that is not JSON is the scenario's mistake,
 * not something an operator could send (the engine takes JSON values only): the step says so instead of crashing.
 */
function docStringJson(doc: string, phrase: ActionPhrase): unknown {
  try {
    return JSON.parse(doc);
  } catch (e) {
    throw new Error(
      `the doc string after "${phrase.text} …, with:" is not JSON (${(e as Error).message}): ${JSON.stringify(doc.slice(0, 120))}; ` +
        'write the patch or output as JSON, e.g. {"order": {"sum": 40}}',
    );
  }
}

When('{operator} {action} because {string}', async function (this: ReplayWorld, who: string, phrase: ActionPhrase, reason: string) {
  await this.act(who, phrase, reason, DEFAULT_EXTRA);
  this.expectActed();
});

When('{operator} {action} because {string}, with:', async function (this: ReplayWorld, who: string, phrase: ActionPhrase, reason: string, json: string) {
  const value = docStringJson(json, phrase);
  await this.act(who, phrase, reason, { output: value, patch: value });
  this.expectActed();
});

/** The action lands while a worker is paused mid-step (Given the worker will stall <moment>): operator and worker race. */
async function actDuringPause(world: ReplayWorld, who: string, phrase: ActionPhrase, reason: string, extra: { output?: unknown; patch?: unknown }): Promise<void> {
  const stall = await whenStalled(world);
  const at = new Date();
  await world.act(who, phrase, reason, extra);
  world.expectActed();
  const acted = new Date();
  if (stallsInsideTransaction(stall)) {
    // the worker holds its batch's transaction open: the action waits its turn to append, and lands right after
    // that batch, before the worker's next one
    const before = world.lastAction!.before.length;
    world.recordFault(`"${phrase.text}" asked for while ${stall.worker.opts.id} holds its batch open at ${stall.site}`, async () => {
      const log = (await world.events()).map((e) => e.type);
      const actedAt = log.indexOf('OperatorActed', before);
      if (actedAt <= before) return null; // nothing of the held batch came first: the action did not wait for it
      return landedDuringStall(stall, at, `asked for during the pause; it waited for the held batch (events ${before + 1}–${actedAt}) and was recorded as event ${actedAt + 1}`);
    });
    return;
  }
  world.recordFault(`"${phrase.text}" while ${stall.worker.opts.id} is paused at ${stall.site}`, async () =>
    landedDuringStall(stall, acted, `the action was recorded ${acted.getTime() - at.getTime()} ms after it was asked for`),
  );
}

When('{operator} {action} during that pause, because {string}', async function (this: ReplayWorld, who: string, phrase: ActionPhrase, reason: string) {
  await actDuringPause(this, who, phrase, reason, DEFAULT_EXTRA);
});

/** The same, with the patch or the output spelled out (a JSON doc string), as the action without a pause takes it. */
When('{operator} {action} during that pause, because {string}, with:', async function (this: ReplayWorld, who: string, phrase: ActionPhrase, reason: string, json: string) {
  const value = docStringJson(json, phrase);
  await actDuringPause(this, who, phrase, reason, { output: value, patch: value });
});

/**
 * An action asked for while a worker stalls at its moment, which the engine may refuse: where the worker holds its
 * batch open, the action waits for that batch and is judged on the run as it then stands (a skip of the step whose
 * answer the batch records finds the run gone on to the next step). Judged by `the action is refused because …`.
 */
When('{operator} tries to {action} during that pause, because {string}', async function (this: ReplayWorld, who: string, phrase: ActionPhrase, reason: string) {
  const stall = await whenStalled(this);
  const at = new Date();
  await this.act(who, phrase, reason, DEFAULT_EXTRA);
  this.lastAction!.duringPause = true;
  this.recordFault(`"${phrase.text}" tried while ${stall.worker.opts.id} is paused at ${stall.site}`, async () =>
    landedDuringStall(stall, at, `asked for during the pause and ${this.lastAction?.refusal ? 'refused' : 'taken'}`),
  );
});

When('{operator} tries to {action} because {string}', async function (this: ReplayWorld, who: string, phrase: ActionPhrase, reason: string) {
  await this.act(who, phrase, reason, DEFAULT_EXTRA);
});

When('{operator} tries to {action} because {string}, with:', async function (this: ReplayWorld, who: string, phrase: ActionPhrase, reason: string, doc: string) {
  const value = docStringJson(doc, phrase);
  await this.act(who, phrase, reason, phrase.action === 'patch' ? { patch: value } : { output: value });
});

Then('the action is refused because {string}', async function (this: ReplayWorld, why: string) {
  const last = this.lastAction;
  expect(last?.refusal ?? `the action was not refused (${last?.phrase.text})`).toContain(why);
});

Then('the run log is unchanged', async function (this: ReplayWorld) {
  if (this.lastAction?.duringPause) {
    throw new Error(
      'an action tried during a pause leaves a worker that carries the run on, so its log does change: say what the ' +
        'refusal left out with "the run\'s audit trail reads:" (no row for the action) and how the run ended',
    );
  }
  const events = await this.events();
  expect(events.map((e) => `${e.seq} ${e.type}`)).toEqual(this.lastAction!.before);
});

Then('the run is {status}', async function (this: ReplayWorld, status: string) {
  // a finished run, or one resting in another status, never gets there by itself: said at once, with where it is
  await this.waitUntilRunStands(`be ${status}`, (v) => v.status === status);
});

/** The clock moves past the timer the run waits on, and the workers get the time to look at it. */
When("the run's timer comes due", async function (this: ReplayWorld) {
  const view = await this.view();
  if (!view.wakeAt) throw new Error(`the run waits on no timer: ${await this.describeRun()}`);
  this.advanceClock(Date.parse(view.wakeAt) - this.clock.now().getTime() + 1_000);
  // several polls of every worker: a run that may go on has gone on by then
  await new Promise((r) => setTimeout(r, 500));
});

Then("the run's audit trail reads:", async function (this: ReplayWorld, table: DataTable) {
  const expected = table.hashes().map((r) => ({ what: r.what, by: r.by ?? '', reason: r.reason ?? '' }));
  const read = async () => auditTrail(await this.events()).map((t) => ({ what: t.what, by: t.by ?? '', reason: t.reason ?? '' }));
  // a table that ends with how the run ended is read once the run has ended: counting rows alone compares too early
  // when the table leaves out a row the log has, and the diff then reads as if the run had not ended at all
  if (/^run (succeeded|failed|canceled)$/.test(expected.at(-1)?.what ?? '')) await this.waitUntilFinished().catch(() => undefined);
  // the run may still be on its way to the last entry the table expects
  await this.waitUntil(`the audit trail to have ${expected.length} entries`, async () => (await read()).length >= expected.length).catch(() => undefined);
  expect(await read()).toEqual(expected);
});

Then('every attempt at {step} carried the same idempotency key', async function (this: ReplayWorld, step: string) {
  await this.waitUntilFinished();
  const keys = await this.keysSentFor(step);
  // named, so a failure says which step's keys these are and that a second key means a second execution
  expect({ [`keys the attempts at "${step}" carried`]: keys }).toEqual({ [`keys the attempts at "${step}" carried`]: [this.idempotencyKey(step, this.run.runId, 1)] });
});

Then('{step} was sent again under a new idempotency key', async function (this: ReplayWorld, step: string) {
  await this.waitUntilFinished();
  const keys = await this.keysSentFor(step);
  expect({ [`keys the attempts at "${step}" carried`]: keys }).toEqual({
    [`keys the attempts at "${step}" carried`]: [this.idempotencyKey(step, this.run.runId, 1), this.idempotencyKey(step, this.run.runId, 2)],
  });
});
