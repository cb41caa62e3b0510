import { When } from '@cucumber/cucumber';
import type { ReplayWorld } from '../support/world';

/* Time is the engine's injected clock: specs jump it forward instead of waiting. */

When('the clock moves forward {duration}', async function (this: ReplayWorld, ms: number) {
  // time passes for runs at rest: a run its worker is still moving (delivered a moment ago, or just unpaused)
  // would otherwise set its timer an hour after the moved clock. Not while a worker is armed to crash or stall
  // at a moment: that worker may hold its run mid-step on purpose.
  if (this.aliveWorkers.length > 0 && !this.aliveWorkers.some((w) => this.armedAt.has(w.opts.id))) {
    for (const run of this.runs) await this.waitUntilSettled(run.runId);
  }
  this.advanceClock(ms);
  // and the engines' schedulers see the ticks that time brought
  await this.tickSchedules();
});
