import { When } from '@cucumber/cucumber';
import { landedDuringStall, strike, whenStalled } from '../support/faults';
import type { Fault } from '../support/parameter-types';
import { FINISHED, type ReplayWorld } from '../support/world';

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
  const stalling = this.workers.some((w) => /=delay:/.test(w.opts.failpoints ?? ''));
  if (!stalling) {
    // no moment to land on: the network is slow from now until the run ends, whatever step the run is at
    const runId = this.run.runId;
    const at = await this.view(runId);
    if (FINISHED.includes(at.status)) throw new Error(`the run has already ${at.status}, so there is nothing left to slow down: slow the network before the run goes on`);
    this.proxy.setLatency(ms);
    const before = this.proxy.stats();
    try {
      // a run that rests (paused, or waiting on a timer nobody moves) will not end while this step holds it: said
      // within a second, not after the timeout
      await this.waitUntilRunStands('end', (v) => FINISHED.includes(v.status), runId, this.timeoutMs * 2).catch((e: Error) => {
        throw new Error(
          /rests/.test(e.message) ? `${e.message}. This step holds until the run ends, so no later step can move it on: put it after the step that lets the run go on` : e.message,
        );
      });
    } finally {
      this.proxy.heal();
    }
    const after = this.proxy.stats();
    const slowed = after.bytesUp - before.bytesUp + (after.bytesDown - before.bytesDown);
    this.recordFault(`${ms} ms on every message between the engine and the database, from step ${at.currentStep ?? '-'} (${at.status}) until the run ended`, async () =>
      slowed > 0 ? `${slowed} bytes went through the slowed network while the run went on from ${at.status}` : null,
    );
    return;
  }
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
