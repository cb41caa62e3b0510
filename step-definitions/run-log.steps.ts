import { Given, Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import { canonicalJson } from '../src/domain/canonical';
import { eventHash, signHead } from '../src/domain/hash-chain';
import { RebuildResult, rebuildViews } from '../src/replay-service';
import { ORDER } from '../support/orders';
import type { ReplayWorld } from '../support/world';

/* The run log itself: its length, its integrity, and events it cannot read. */

Given('{project} has a finished run of {workflow}', async function (this: ReplayWorld, project: string, workflow: string) {
  // a workflow the scenario never gave this project: say that, not the intake's 401
  this.workflow(project, workflow);
  const answer = await this.deliver(project, workflow, JSON.stringify(ORDER));
  expect(answer.status).toBe(202);
  // finished: a workflow that waits (a delay, a retry's backoff) gets its clock moved past each timer
  await this.waitUntilFinished(undefined, undefined, true);
});

Then('the run log has at least {int} events', async function (this: ReplayWorld, n: number) {
  await this.waitUntilFinished();
  expect((await this.events()).length).toBeGreaterThanOrEqual(n);
});

/**
 * An event written by a newer engine, appended correctly (next number, valid
 * hash) so that the only thing wrong is that this engine does not know it.
 */
When('a newer engine appends a {string} event to the run', async function (this: ReplayWorld, type: string) {
  const events = await this.events();
  const last = events[events.length - 1];
  const seq = last.seq + 1;
  const data = { step: 'push', amount: 42.5, currency: 'EUR' };
  const recordedAt = new Date().toISOString();
  // a newer engine of this installation holds its keys: the link and the head are genuinely signed
  const chain = this.keyring.chainKey();
  const hash = eventHash(last.hash, { runId: last.runId, project: last.project, seq, type, version: 1, data, recordedAt }, chain.key);
  this.viewSnapshot = await this.view();
  await this.db.query(
    `INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid)
     VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9)`,
    [last.project, last.runId, seq, type, canonicalJson(data), recordedAt, last.hash, hash, chain.kid],
  );
  const mac = signHead(chain, { projectId: last.project, runId: last.runId, seq, hash });
  await this.db.query('UPDATE runs SET last_seq = $2, head_hash = $3, head_mac = $4 WHERE id = $1', [last.runId, seq, hash, mac]);
  this.viewSnapshot = await this.view();
});

When('the run views are rebuilt from the log', async function (this: ReplayWorld) {
  // every run in the project, as `meshhook rebuild` does: one bad log must not stop the rest
  this.viewSnapshot ??= await this.view();
  this.rebuilt = await rebuildViews(this.engineDb, { ...this.verifyOptions(), projectId: this.run.projectId });
});

Then('rebuilding refuses the run because {string}', async function (this: ReplayWorld, reason: string) {
  const refusal = this.rebuilt?.refused.find((r) => r.runId === this.run.runId);
  expect(refusal?.reason ?? `not refused: ${JSON.stringify(this.rebuilt)}`).toContain(reason);
  expect(this.rebuilt?.repaired).not.toContain(this.run.runId);
});

Then('the run view is unchanged', async function (this: ReplayWorld) {
  expect(canonicalJson(await this.view())).toBe(canonicalJson(this.viewSnapshot));
});

Then('replay uses version {int} of the workflow', async function (this: ReplayWorld, version: number) {
  if (!this.verification) throw new Error('the run has not been replayed: add "When the run is replayed" before this step');
  expect(this.verification?.state.version).toBe(version);
  expect(this.verification?.definitionChanged).toBe(false);
});

/** The recorded StepSucceeded of a step, with its output changed to a forged total. */
async function forgeOutput(world: ReplayWorld, step: string, client: { query: ReplayWorld['db']['query'] }): Promise<number> {
  const event = (await world.events()).find((e) => e.type === 'StepSucceeded' && (e.data as { step?: string }).step === step);
  if (!event) throw new Error(`the run recorded no result for "${step}"`);
  const forged = { ...(event.data as object), output: { ...((event.data as { output?: object }).output ?? {}), total: 0.01 } };
  const res = await client.query('UPDATE run_events SET payload = $1 WHERE run_id = $2 AND seq = $3', [canonicalJson(forged), world.run.runId, event.seq]);
  return res.rowCount ?? 0;
}

When('someone tries to change the recorded output of {step}', async function (this: ReplayWorld, step: string) {
  this.lastError = null;
  try {
    await forgeOutput(this, step, this.db);
  } catch (e) {
    this.lastError = e as Error;
  }
});

Then('the database refuses because {string}', async function (this: ReplayWorld, reason: string) {
  expect(this.lastError?.message ?? 'the change went through').toContain(reason);
});

Then('replay reports the hash chain broken at event {int}', async function (this: ReplayWorld, seq: number) {
  expect(this.lastError).toBeNull();
  expect(this.verification?.ok).toBe(false);
  expect(this.verification?.chainBreak?.seq).toBe(seq);
});

Then('replay says the run view differs from the log in {string}', async function (this: ReplayWorld, field: string) {
  expect(this.lastError).toBeNull();
  expect(this.verification?.ok).toBe(false);
  expect(this.verification?.divergence).toBeNull();
  expect(this.verification?.viewDifference ?? 'the run view matches').toMatch(new RegExp(`^${field}: `));
});

Then('rebuilding repaired the run', async function (this: ReplayWorld) {
  expect(this.rebuilt?.repaired).toContain(this.run.runId);
  expect(this.rebuilt?.refused).toEqual([]);
});

