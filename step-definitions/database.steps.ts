import { When } from '@cucumber/cucumber';
import { landedDuringStall, strike, whenStalled } from '../support/faults';
import type { Fault } from '../support/parameter-types';
import type { ReplayWorld } from '../support/world';

/*
 * Database and network faults, each landing while a worker stalls mid-step
 * ("Given the worker will stall <moment>"). The engine reaches Postgres
 * through the World's fault proxy; the scenario's own connections and the
 * webhook intake do not, so they can watch and judge throughout.
 */

When('{fault}', { timeout: 90_000 }, async function (this: ReplayWorld, fault: Fault) {
  const stall = await whenStalled(this);
  const { injectedAt, proof } = await strike(this, fault, stall);
  this.recordFault(`${fault.text} while ${stall.worker.opts.id} stalls at ${stall.site}`, async () => landedDuringStall(stall, injectedAt, proof));
});

When('every message between the engine and the database is delayed by {duration} until the run ends', async function (this: ReplayWorld, ms: number) {
  const stall = await whenStalled(this);
  this.proxy.setLatency(ms);
  const injectedAt = new Date();
  await this.acknowledgeCommitted();
  const before = this.proxy.stats();
  try {
    await this.waitUntilFinished(this.run.runId, this.timeoutMs * 2);
  } finally {
    this.proxy.heal();
  }
  const after = this.proxy.stats();
  const slowed = after.bytesUp - before.bytesUp + (after.bytesDown - before.bytesDown);
  this.recordFault(`${ms} ms on every message between the engine and the database, from when ${stall.worker.opts.id} stalled at ${stall.site}`, async () =>
    landedDuringStall(stall, injectedAt, slowed > 0 ? `${slowed} bytes went through the slowed network` : null),
  );
});
