import { After, Given, Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import { crashSpec, stallSpec, unfinishedRuns, workerHoldingRun } from '../support/faults';
import { expectReachable, untilArmedWorkersCrashed, waitForMoment } from '../support/moments';
import type { Moment } from '../support/parameter-types';
import type { ReplayWorld } from '../support/world';

/*
 * Worker faults beyond the basic vocabulary of workers.steps.ts: a worker that
 * stalls at a moment (so another fault can land there), a worker that dies
 * while it takes over, the worker that holds a run killed mid-request, every
 * worker killed while runs are in flight, and a slow order service.
 */

Given('the worker will stall {moment}', async function (this: ReplayWorld, moment: Moment) {
  expectReachable(this, moment);
  await this.retireUnarmedWorkers();
  await this.startWorker({ failpoints: [stallSpec(moment)], moment });
});

When('another worker takes over but crashes {moment}', async function (this: ReplayWorld, moment: Moment) {
  await untilArmedWorkersCrashed(this);
  await this.acknowledgeCommitted();
  const worker = await this.startWorker({ failpoints: [crashSpec(moment)], moment });
  this.recordFault(`the worker taking over crashes ${moment.text}`, async () => {
    const fired = this.firedFailpoints().some((f) => f.pid === worker.pid && f.action === 'crash' && f.name === moment.site.split('@')[0].split('+')[0]);
    return fired && worker.exitStatus?.signal === 'SIGKILL' ? `${worker.opts.id} died by SIGKILL at ${moment.site}` : null;
  });
  await waitForMoment(this, worker, moment, 'crash', () => !worker.alive);
});

When('another worker takes over but stalls {moment}', async function (this: ReplayWorld, moment: Moment) {
  await untilArmedWorkersCrashed(this);
  await this.acknowledgeCommitted();
  await this.startWorker({ failpoints: [stallSpec(moment)], moment });
});

When('the worker running the order is killed', async function (this: ReplayWorld) {
  const runId = this.run.runId;
  let holder: Awaited<ReturnType<typeof workerHoldingRun>> = null;
  let answeredTooSoon = false;
  const target = await this.orderService();
  // the first attempt has reached the order service and its answer is not recorded yet
  await this.waitUntil("a worker to be waiting for the order service's answer to the first attempt", async () => {
    const events = await this.events(runId);
    if (events.some((e) => e.type === 'HttpResponseRecorded')) return (answeredTooSoon = true);
    const last = events[events.length - 1];
    if (last?.type !== 'HttpRequestPrepared') return false;
    const key = (last.data as { idempotencyKey?: string }).idempotencyKey;
    if (!target.requests.some((r) => r.idempotencyKey === key)) return false;
    holder = await workerHoldingRun(this, runId);
    return holder !== null;
  });
  const tooSoon = async () =>
    new Error(
      'the first attempt was answered before its worker could be killed, so no worker was killed mid-request: ' +
        'the order service answers at once unless told otherwise; give the worker time to be caught waiting with ' +
        `"Given the order service takes 1 second to answer every order" (or "… takes the order but answers too late") before the order is delivered (${await this.describeRun(runId)})`,
    );
  if (answeredTooSoon) throw await tooSoon();
  const victim = holder!;
  const others = this.aliveWorkers.filter((w) => w !== victim).map((w) => w.opts.id);
  // looked at just before the kill: afterwards the surviving worker may record the answer itself
  const answeredBeforeKill = (await this.events(runId)).some((e) => e.type === 'HttpResponseRecorded');
  const exit = await victim.kill();
  if (answeredBeforeKill) {
    // the worker was killed after all (it is gone), but not mid-request: the step did not do what it says
    throw await tooSoon();
  }
  this.killedMidRequest = { runId, victim: victim.opts.id };
  this.recordFault(`worker ${victim.opts.id}, which held the run, killed mid-request`, async () =>
    exit.signal === 'SIGKILL' && !answeredBeforeKill
      ? `${victim.opts.id} held run ${runId} and died by SIGKILL before its answer was recorded; ${others.join(', ') || 'no one'} left`
      : null,
  );
  await this.acknowledgeCommitted();
});

When('every worker is killed while the runs are in flight', async function (this: ReplayWorld) {
  await this.waitUntil('the first orders to be on their way to the order service', async () => {
    const { rows } = await this.db.query("SELECT count(*)::int AS n FROM run_events WHERE type = 'HttpRequestPrepared'");
    return rows[0].n > 0;
  });
  const victims = this.aliveWorkers;
  expect(victims.length).toBeGreaterThan(0);
  const exits = await Promise.all(victims.map((v) => v.kill()));
  const inFlight = await unfinishedRuns(this);
  this.recordFault(`every worker (${victims.map((v) => v.opts.id).join(', ')}) killed with runs in flight`, async () =>
    exits.every((e) => e.signal === 'SIGKILL') && inFlight > 0 ? `${victims.length} workers died by SIGKILL with ${inFlight} runs unfinished` : null,
  );
  await this.acknowledgeCommitted();
});

Given('the order service takes {duration} to answer every order', async function (this: ReplayWorld, ms: number) {
  const target = await this.orderService();
  // the order is taken on arrival; only the answer is late
  target.script('*', { kind: 'slow', ms, times: 1000 });
});

Then('the run succeeds with the timer of {string} fired once', async function (this: ReplayWorld, step: string) {
  const view = await this.waitUntilFinished();
  const fired = (await this.events()).filter((e) => e.type === 'TimerFired' && (e.data as { step?: string }).step === step);
  expect({ status: view.status, [`timers of "${step}" fired`]: fired.length }).toEqual({ status: 'succeeded', [`timers of "${step}" fired`]: 1 });
});

Then('the other worker finished the run', async function (this: ReplayWorld) {
  if (!this.killedMidRequest || this.killedMidRequest.runId !== this.run.runId) {
    throw new Error('"the other worker finished the run" follows "When the worker running the order is killed", which kills the worker holding the run mid-request; no worker was killed so');
  }
  const view = await this.waitUntilFinished();
  const dead = this.workers.filter((w) => w.exitStatus?.signal === 'SIGKILL');
  const alive = this.aliveWorkers;
  // no worker was started after the kill, so the survivor is the only one that can have finished it
  expect({ workers: this.workers.length, killed: dead.length, survivors: alive.length, status: view.status }).toEqual({
    workers: 2,
    killed: 1,
    survivors: 1,
    status: 'succeeded',
  });
});
