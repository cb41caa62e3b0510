import { When } from '@cucumber/cucumber';
import { getCluster } from '../support/cluster';
import { crashAndRestartDatabase, landedDuringStall, sleep, stallsInsideTransaction, terminateEngineBackends, whenStalled } from '../support/faults';
import type { ReplayWorld } from '../support/world';

/*
 * Database and network faults, each landing while a worker stalls mid-step
 * ("Given the worker will stall <moment>"). The engine reaches Postgres
 * through the World's fault proxy; the scenario's own connections and the
 * webhook intake do not, so they can watch and judge throughout.
 */

When("the database drops the engine's connections", async function (this: ReplayWorld) {
  const stall = await whenStalled(this);
  const killed = await terminateEngineBackends(this);
  const injectedAt = new Date();
  await this.acknowledgeCommitted();
  // a stall inside the commit must have cut the very session holding the open transaction
  const hitTheTransaction = !stallsInsideTransaction(stall) || killed.some((k) => k.state.startsWith('idle in transaction'));
  this.recordFault(`the database drops the engine's connections while ${stall.worker.opts.id} stalls at ${stall.site}`, async () =>
    landedDuringStall(
      stall,
      injectedAt,
      killed.length > 0 && hitTheTransaction
        ? `pg_terminate_backend cut ${killed.length} engine session(s): ${killed.map((k) => `${k.pid} ${k.app || '(pool)'} ${k.state}`).join(', ')}`
        : null,
    ),
  );
});

When('the network to the database is cut', async function (this: ReplayWorld) {
  const stall = await whenStalled(this);
  const before = this.proxy.stats().severed;
  this.proxy.sever();
  const injectedAt = new Date();
  const severed = this.proxy.stats().severed - before;
  await this.acknowledgeCommitted();
  this.recordFault(`the network to the database is cut while ${stall.worker.opts.id} stalls at ${stall.site}`, async () =>
    landedDuringStall(stall, injectedAt, severed > 0 ? `${severed} engine connection(s) reset` : null),
  );
});

When('the network to the database goes silent for {duration}', async function (this: ReplayWorld, ms: number) {
  const stall = await whenStalled(this);
  this.proxy.blackhole();
  const injectedAt = new Date();
  await this.acknowledgeCommitted();
  await sleep(ms);
  // whatever the engine sent into the silence is delivered when the network comes back
  const before = this.proxy.stats().bytesUp;
  this.proxy.heal();
  const held = this.proxy.stats().bytesUp - before;
  this.recordFault(`the network to the database goes silent for ${ms} ms while ${stall.worker.opts.id} stalls at ${stall.site}`, async () =>
    landedDuringStall(stall, injectedAt, held > 0 ? `${held} bytes the engine sent were held back until the network healed` : null),
  );
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

When('the database is unreachable for {duration}', async function (this: ReplayWorld, ms: number) {
  const stall = await whenStalled(this);
  const before = this.proxy.stats();
  this.proxy.refuse();
  this.proxy.sever();
  const injectedAt = new Date();
  await this.acknowledgeCommitted();
  await sleep(ms);
  const during = this.proxy.stats();
  this.proxy.heal();
  const refused = during.refused - before.refused;
  const severed = during.severed - before.severed;
  this.recordFault(`the database is unreachable for ${ms} ms while ${stall.worker.opts.id} stalls at ${stall.site}`, async () =>
    landedDuringStall(stall, injectedAt, refused > 0 ? `${severed} engine connection(s) cut and ${refused} reconnect attempt(s) refused` : null),
  );
});

When('the database crashes and restarts', { timeout: 90_000 }, async function (this: ReplayWorld) {
  const stall = await whenStalled(this);
  // what was committed before the crash must come back from the write-ahead log
  await this.acknowledgeCommitted();
  const { before, after, killedAt } = await crashAndRestartDatabase(this);
  const { admin } = await getCluster();
  this.recordFault(`the database crashes and restarts while ${stall.worker.opts.id} stalls at ${stall.site}`, async () => {
    const up = await admin.query('SELECT 1').then(
      () => true,
      () => false,
    );
    return landedDuringStall(
      stall,
      killedAt,
      before && after && before !== after && up ? `postmaster ${before} SIGKILLed, restarted as ${after}, accepting connections` : null,
    );
  });
});
