import { Given, Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import { expectReachable, untilArmedWorkersCrashed } from '../support/moments';
import type { Moment } from '../support/parameter-types';
import type { ReplayWorld } from '../support/world';

/* Workers: real processes that run runs, and die on cue. */

Given('{int} workers are running', async function (this: ReplayWorld, n: number) {
  for (let i = 0; i < n; i++) await this.startWorker();
});

Given('the worker will crash {moment}', async function (this: ReplayWorld, moment: Moment) {
  expectReachable(this, moment);
  await this.retireUnarmedWorkers();
  const worker = await this.startWorker({ failpoints: [`${moment.site}=crash`], moment });
  this.recordFault(`worker crash ${moment.text}`, async () => {
    const fired = this.firedFailpoints().some((f) => f.pid === worker.pid && f.action === 'crash');
    const exit = worker.exitStatus;
    return fired && exit?.signal === 'SIGKILL' ? `${worker.opts.id} died by SIGKILL at ${moment.site}` : null;
  });
});

/** The next worker the scenario starts (for instance to carry out an operator's action) dies at the moment. */
Given('the next worker to start will crash {moment}', async function (this: ReplayWorld, moment: Moment) {
  expectReachable(this, moment);
  // a worker already running would carry the run on itself, and the crash would never come
  const running = this.aliveWorkers;
  if (running.length > 0)
    throw new Error(
      `${running.map((w) => w.opts.id).join(', ')} ${running.length === 1 ? 'is' : 'are'} already running and would carry the run on, so the next worker to start ` +
        'would not be the one to reach that moment: this step follows a situation that leaves no worker alive ("left in the middle of … by a crashed worker")',
    );
  this.pendingFailpoints = [`${moment.site}=crash`];
  this.pendingMoment = moment;
  const site = moment.site;
  this.recordFault(`the next worker crashes ${moment.text}`, async () => {
    const armed = this.workers.filter((w) => (w.opts.failpoints ?? '').includes(`${site}=crash`));
    const died = armed.find((w) => w.exitStatus?.signal === 'SIGKILL' && this.firedFailpoints().some((f) => f.pid === w.pid && f.action === 'crash'));
    return died ? `${died.opts.id} died by SIGKILL at ${site}` : null;
  });
});

/** A crash armed with a failpoint must happen before anyone takes over; then a clean worker starts. */
When('a new worker takes over', async function (this: ReplayWorld) {
  await untilArmedWorkersCrashed(this, 'and any other armed worker died');
  await this.acknowledgeCommitted();
  await this.startWorker({ failpoints: [] });
});

When('the worker is killed', async function (this: ReplayWorld) {
  const victims = this.aliveWorkers;
  expect(victims.length).toBeGreaterThan(0);
  const victim = victims[0];
  const exit = await victim.kill();
  this.recordFault(`worker ${victim.opts.id} killed`, async () => (exit.signal === 'SIGKILL' ? 'SIGKILL' : null));
  await this.acknowledgeCommitted();
});

When('a worker starts', async function (this: ReplayWorld) {
  await this.startWorker({ failpoints: [] });
});

/**
 * Two workers that skip the ownership lock really race on every run: both
 * decide, both try to append, and only the expected-sequence check keeps the
 * log straight. This is the proof that correctness does not rest on the lock.
 */
Given('two workers that do not coordinate are running', async function (this: ReplayWorld) {
  // a short pause before each append widens the window in which both have decided
  for (let i = 0; i < 2; i++) {
    await this.startWorker({ failpoints: ['before-append=delay:20'], env: { MESHHOOK_UNSAFE_IGNORE_LOCKS: '1', MESHHOOK_CONCURRENCY: '8' } });
  }
});

Then('the two workers did collide on the same runs', async function (this: ReplayWorld) {
  await Promise.all(this.workers.map((w) => w.stop()));
  // each worker prints its counters when it stops
  const conflicts = this.workers
    .flatMap((w) => w.output)
    .map((l) => {
      try {
        return JSON.parse(l).stats?.conflicts ?? 0;
      } catch {
        return 0;
      }
    })
    .reduce((a: number, b: number) => a + b, 0);
  expect(conflicts).toBeGreaterThan(0);
});
