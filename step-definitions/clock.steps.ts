import { When } from '@cucumber/cucumber';
import type { ReplayWorld } from '../support/world';

/* Time is the engine's injected clock: specs jump it forward instead of waiting. */

When('the clock moves forward {duration}', async function (this: ReplayWorld, ms: number) {
  this.advanceClock(ms);
});
