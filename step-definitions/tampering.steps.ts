import path from 'node:path';
import { Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import type { PoolClient } from 'pg';
import { runCli } from '../src/cli/main';
import { canonicalJson, sha256 } from '../src/domain/canonical';
import type { RecordedEvent } from '../src/domain/events';
import { eventHash, signHead } from '../src/domain/hash-chain';
import { replayLog } from '../src/domain/replay';
import { setAllowPrivateTargets } from '../src/store/registry';
import { writeRebuiltView } from '../src/store/run-views';
import { ORDER } from '../support/orders';
import { eventAt, Place } from '../support/places';
import { withLogProtectionOff, withProtectionOff } from '../support/tampering';
import type { Weakening } from '../support/parameter-types';
import type { ReplayWorld } from '../support/world';

/*
 * Tampering: someone with full access to the database (its owner, who can
 * switch the log's protection off) changes a run behind the engine's back.
 * Each step does it the way a careful intruder would, keeping everything the
 * database itself could check consistent; what they cannot do is sign, since
 * the engine's keys are not in the database. Verification must still name the
 * run and the first bad event.
 */

/** The log as it was before the tampering, so places keep naming the events they named. */
async function before(world: ReplayWorld): Promise<RecordedEvent[]> {
  await world.waitUntilSettled();
  world.logBeforeTampering = await world.events();
  return world.logBeforeTampering;
}

const runOf = (world: ReplayWorld): string => world.run.runId;

When('someone rewrites {place} behind the engine\'s back', async function (this: ReplayWorld, place: Place) {
  const e = eventAt(place, await before(this));
  await withLogProtectionOff(this.db, (c) => c.query('UPDATE run_events SET payload = $1 WHERE run_id = $2 AND seq = $3', [canonicalJson(forge(e)), runOf(this), e.seq]));
});

When('someone rewrites {place} and recomputes the hash chain behind the engine\'s back', async function (this: ReplayWorld, place: Place) {
  const log = await before(this);
  const e = eventAt(place, log);
  await withLogProtectionOff(this.db, async (c) => {
    // all the database could do: SHA-256 links, since the engine's key is not in it
    let prev = e.prevHash;
    for (const x of log.filter((y) => y.seq >= e.seq)) {
      const data = x.seq === e.seq ? forge(x) : x.data;
      const hash = eventHash(prev, { ...x, data });
      await c.query('UPDATE run_events SET payload = $1, prev_hash = $2, hash = $3, kid = NULL WHERE run_id = $4 AND seq = $5', [canonicalJson(data), prev, hash, x.runId, x.seq]);
      prev = hash;
    }
    await c.query('UPDATE runs SET head_hash = $2 WHERE id = $1', [e.runId, prev]);
  });
});

When('someone deletes {place} from the run log behind the engine\'s back', async function (this: ReplayWorld, place: Place) {
  const e = eventAt(place, await before(this));
  await withLogProtectionOff(this.db, (c) => c.query('DELETE FROM run_events WHERE run_id = $1 AND seq = $2', [e.runId, e.seq]));
});

When('someone swaps {place} and {place} in the run log behind the engine\'s back', async function (this: ReplayWorld, a: Place, b: Place) {
  const log = await before(this);
  const [x, y] = [eventAt(a, log), eventAt(b, log)];
  await withLogProtectionOff(this.db, async (c) => {
    await c.query('UPDATE run_events SET seq = 100000 WHERE run_id = $1 AND seq = $2', [x.runId, x.seq]);
    await c.query('UPDATE run_events SET seq = $3 WHERE run_id = $1 AND seq = $2', [x.runId, y.seq, x.seq]);
    await c.query('UPDATE run_events SET seq = $2 WHERE run_id = $1 AND seq = 100000', [x.runId, y.seq]);
  });
});

When('someone inserts a forged event after {place} behind the engine\'s back', async function (this: ReplayWorld, place: Place) {
  const e = eventAt(place, await before(this));
  await withLogProtectionOff(this.db, async (c) => {
    // make room, as if the log had always held it
    await c.query('UPDATE run_events SET seq = seq + 100000 WHERE run_id = $1 AND seq > $2', [e.runId, e.seq]);
    await c.query('UPDATE run_events SET seq = seq - 99999 WHERE run_id = $1 AND seq > 100000', [e.runId]);
    const forged = { runId: e.runId, project: e.project, seq: e.seq + 1, type: 'StepSucceeded', version: 1, data: { step: 'refund', output: { refunded: 42.5 }, next: null }, recordedAt: e.recordedAt };
    await c.query(
      `INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash) VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8)`,
      [e.project, e.runId, forged.seq, forged.type, canonicalJson(forged.data), e.recordedAt, e.hash, eventHash(e.hash, forged)],
    );
  });
});

When('someone moves {place} into another project behind the engine\'s back', async function (this: ReplayWorld, place: Place) {
  const e = eventAt(place, await before(this));
  await withLogProtectionOff(this.db, async (c) => {
    const other = (await c.query<{ id: string }>("SELECT meshhook_ensure_project('globex', 'Globex Corporation') AS id")).rows[0].id;
    // the event's project must match its run's: only a superuser gets past that, by switching the checks off
    await c.query("SET LOCAL session_replication_role = 'replica'");
    await c.query('UPDATE run_events SET project_id = $1 WHERE run_id = $2 AND seq = $3', [other, e.runId, e.seq]);
  });
});

When('someone cuts the run log short after {place} behind the engine\'s back', async function (this: ReplayWorld, place: Place) {
  const log = await before(this);
  const e = eventAt(place, log);
  // the run view is made to agree with the shorter log; only the head's signature cannot be made
  await rollBack(this, log, e, null);
});

When('someone rolls the run back to {place} behind the engine\'s back', async function (this: ReplayWorld, place: Place) {
  const log = await before(this);
  const e = eventAt(place, log);
  // the head saved when the run stood there is genuinely signed: log, view and head all agree again
  const mac = signHead(this.keyring.chainKey(), { projectId: e.project, runId: e.runId, seq: e.seq, hash: e.hash });
  await rollBack(this, log, e, mac);
});

When('someone empties the run log behind the engine\'s back', async function (this: ReplayWorld) {
  await before(this);
  await withLogProtectionOff(this.db, (c) => c.query('DELETE FROM run_events WHERE run_id = $1', [runOf(this)]));
});

When('someone marks the run as {status} behind the engine\'s back', async function (this: ReplayWorld, status: string) {
  await before(this);
  this.viewSnapshot = await this.view();
  const res = await this.db.query('UPDATE runs SET status = $2 WHERE id = $1 AND status <> $2', [runOf(this), status]);
  expect(res.rowCount).toBe(1);
});

When('someone tries to delete {place} from the run log', async function (this: ReplayWorld, place: Place) {
  const e = eventAt(place, await before(this));
  this.lastError = null;
  await this.db.query('DELETE FROM run_events WHERE run_id = $1 AND seq = $2', [e.runId, e.seq]).catch((err: Error) => (this.lastError = err));
});

When("the engine's own role tries to switch the log's protection off", async function (this: ReplayWorld) {
  this.lastError = null;
  await this.engineDb.query('ALTER TABLE run_events DISABLE TRIGGER run_events_no_update_delete').catch((err: Error) => (this.lastError = err));
});

When("someone deletes the record of the run's delivery behind the engine's back", async function (this: ReplayWorld) {
  await before(this);
  // the record that keeps the same delivery sent again from starting a second run
  const res = await this.db.query('DELETE FROM deliveries WHERE run_id = $1', [runOf(this)]);
  expect({ deliveryRecordsDeleted: res.rowCount }).toEqual({ deliveryRecordsDeleted: 1 });
});

When("someone records a delivery that has not arrived yet as the run's, behind the engine's back", async function (this: ReplayWorld) {
  await before(this);
  const run = this.run;
  const w = this.workflow(run.project, run.workflow);
  // the id and body of a webhook the sender has yet to send: planted, its record would make it count as a re-delivery
  const body = JSON.stringify({ ...ORDER, order: { ...ORDER.order, id: 'A-2001', sum: 75 } });
  const deliveryId = 'dlv-2026-12-08-nightly';
  await this.db.query('INSERT INTO deliveries (project_id, workflow_id, delivery_id, run_id, body_sha256, received_at) VALUES ($1, $2, $3, $4, $5, now())', [run.projectId, w.workflowId, deliveryId, run.runId, sha256(body)]);
  this.plantedDelivery = { project: run.project, workflow: run.workflow, deliveryId, body };
});

When('someone deletes the latest version of {workflow} behind the engine\'s back', async function (this: ReplayWorld, workflow: string) {
  await this.waitUntilSettled();
  const w = this.workflow(this.run.project, workflow);
  // every row left is genuine and signed: new runs would quietly start on the version before
  const res = await withProtectionOff(this.db, 'workflow_versions', 'workflow_versions_immutable', (c) =>
    c.query('DELETE FROM workflow_versions WHERE workflow_id = $1 AND version = (SELECT max(version) FROM workflow_versions WHERE workflow_id = $1) RETURNING version', [w.workflowId]),
  );
  expect(res.rows.map((r) => r.version)).toEqual([w.version]);
});

When('a checkpoint of every run and published version is kept outside the database', async function (this: ReplayWorld) {
  await this.waitUntilSettled();
  const out: string[] = [];
  const file = path.join(this.scratch, 'checkpoint.jsonl');
  const code = await runCli(['checkpoint', '--out', file], {
    out: (l) => out.push(l),
    err: (l) => out.push(l),
    env: { DATABASE_URL: this.engineDirectUrl, MESHHOOK_KEYS: this.keyring.toEnv() },
    cwd: this.scratch,
  });
  expect({ code, out }).toEqual({ code: 0, out: [expect.stringMatching(/^checkpointed \d+ runs and the latest version of every workflow to /)] });
  this.checkpointFile = file;
});

When('someone swaps the names of {project} and {project} behind the engine\'s back', async function (this: ReplayWorld, a: string, b: string) {
  await this.waitUntilSettled();
  // three renames in one transaction (a slug is unique at every row): afterwards each name leads to the other project
  const c = await this.db.connect();
  let renamed = 0;
  try {
    await c.query('BEGIN');
    renamed += (await c.query("UPDATE projects SET slug = 'swap-in-progress' WHERE slug = $1", [a])).rowCount ?? 0;
    renamed += (await c.query('UPDATE projects SET slug = $1 WHERE slug = $2', [a, b])).rowCount ?? 0;
    renamed += (await c.query("UPDATE projects SET slug = $1 WHERE slug = 'swap-in-progress'", [b])).rowCount ?? 0;
    await c.query('COMMIT');
  } finally {
    c.release();
  }
  expect({ projectsRenamed: renamed }).toEqual({ projectsRenamed: 3 });
});

Then('the engine refuses to act for {project} until its owner has checked it', async function (this: ReplayWorld, project: string) {
  // the owner keeps a secret for the project: it must reach neither the project now called so nor any other
  const secretsBefore = (await this.db.query('SELECT count(*)::int AS n FROM project_secrets')).rows[0].n;
  const out: string[] = [];
  const code = await runCli(['secrets', 'set', 'order-api-key', '--project', project, '--value', 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'], {
    out: (l) => out.push(l),
    err: (l) => out.push(l),
    env: { DATABASE_URL: this.engineDirectUrl, MESHHOOK_KEYS: this.keyring.toEnv() },
    cwd: this.scratch,
  });
  expect({ code, said: out.join('\n') }).toEqual({ code: 1, said: expect.stringMatching(new RegExp(`is called "${project}" in the database, but that is not the name the engine gave it`)) });
  expect((await this.db.query('SELECT count(*)::int AS n FROM project_secrets')).rows[0].n).toBe(secretsBefore);
  // and a webhook to it, signed with the project's own secret, starts nothing anywhere
  const runsBefore = (await this.db.query('SELECT count(*)::int AS n FROM runs')).rows[0].n;
  const answer = await this.deliver(project, [...this.workflows.values()].find((w) => w.project === project)!.workflow, JSON.stringify(ORDER), { track: false });
  expect({ status: answer.status, code: answer.body?.error?.code }).toEqual({ status: 503, code: 'project_unavailable' });
  expect((await this.db.query('SELECT count(*)::int AS n FROM runs')).rows[0].n).toBe(runsBefore);
});

Then('verifying every project names {project} and {project} as renamed behind the engine\'s back', async function (this: ReplayWorld, a: string, b: string) {
  const out: string[] = [];
  const code = await runCli(['verify', '--all'], {
    out: (l) => out.push(l),
    err: (l) => out.push(l),
    env: { DATABASE_URL: this.engineDirectUrl, MESHHOOK_KEYS: this.keyring.toEnv() },
    cwd: this.scratch,
  });
  expect({ exitCode: code }).toEqual({ exitCode: 1 });
  for (const name of [a, b]) {
    const line = out.find((l) => l.startsWith(`NOT ok  ${name}  `));
    if (!line) throw new Error(`verification did not name project "${name}":\n${out.join('\n')}`);
    expect(line).toMatch(new RegExp(`is called "${name}" in the database, but that is not the name the engine gave it`));
  }
  expect(out.at(-1)).toMatch(/; 2 project names NOT as the engine signed them$/);
});

When('{project} takes back its leave to call private addresses', async function (this: ReplayWorld, project: string) {
  await this.waitUntilSettled();
  const projectId = this.projectIdFor(project);
  const { rows } = await this.db.query('SELECT allow_private_targets_mac AS signature FROM projects WHERE id = $1', [projectId]);
  if (!rows[0]?.signature) throw new Error(`"${project}" holds no signed leave to call private addresses to take back`);
  this.grantTakenBack = { project, signature: rows[0].signature };
  await setAllowPrivateTargets(this.engineDb, this.keyring.chainKey(), projectId, false);
});

When('someone writes back the leave to call private addresses {project} took back, behind the engine\'s back', async function (this: ReplayWorld, project: string) {
  const taken = this.grantTakenBack;
  if (taken?.project !== project) throw new Error(`"${project}" has not taken back its leave to call private addresses in this scenario: add "Given "${project}" takes back its leave to call private addresses"`);
  // the genuine grant, signed by the engine while it stood: workers would honour it again
  const res = await this.db.query('UPDATE projects SET allow_private_targets = true, allow_private_targets_mac = $2 WHERE id = $1', [this.projectIdFor(project), taken.signature]);
  expect({ grantsWrittenBack: res.rowCount }).toEqual({ grantsWrittenBack: 1 });
});

When('someone {weakening} behind the engine\'s back', async function (this: ReplayWorld, weakening: Weakening) {
  await this.waitUntilSettled();
  // as the database's owner: nothing a row of the log or the run views holds changes
  await this.db.query(weakening.sql);
  this.weakened = weakening;
});

// ───── what verification says, through the real `meshhook verify --all`

When('the runs are verified', async function (this: ReplayWorld) {
  const out: string[] = [];
  const files = this.checkpointFiles();
  const code = await runCli(['verify', '--all', '--project', this.run.project, ...(files.length ? ['--checkpoints', files.join(',')] : [])], {
    out: (l) => out.push(l),
    err: (l) => out.push(l),
    env: { DATABASE_URL: this.engineDirectUrl, MESHHOOK_KEYS: this.keyring.toEnv() },
    cwd: this.scratch,
  });
  this.verified = { code, out };
});

function verdictOf(world: ReplayWorld): string {
  const v = world.verified;
  if (!v) throw new Error('the runs have not been verified: add "When the runs are verified"');
  expect({ exitCode: v.code }).toEqual({ exitCode: 1 });
  const line = v.out.find((l) => l.startsWith('NOT ok') && l.includes(world.run.runId));
  if (!line) throw new Error(`verification did not name run ${world.run.runId}:\n${v.out.join('\n')}`);
  return line;
}

Then('verification names {place} as the first bad event', async function (this: ReplayWorld, place: Place) {
  const seq = eventAt(place, this.logBeforeTampering!).seq;
  expect(verdictOf(this)).toMatch(new RegExp(`(broken|diverges) at event ${seq}:`));
});

Then('verification names the event after {place} as the first bad event', async function (this: ReplayWorld, place: Place) {
  const seq = eventAt(place, this.logBeforeTampering!).seq + 1;
  expect(verdictOf(this)).toMatch(new RegExp(`(broken|diverges) at event ${seq}:`));
});

Then('verification finds the run log cut short after {place}', async function (this: ReplayWorld, place: Place) {
  const seq = eventAt(place, this.logBeforeTampering!).seq;
  expect(verdictOf(this)).toMatch(new RegExp(`head: .*(signature does not match|the log ends at event ${seq})`));
});

Then('verification finds the run rolled back behind a checkpoint', async function (this: ReplayWorld) {
  expect(verdictOf(this)).toMatch(/checkpoint: a checkpoint taken .* saw event \d+, but the log ends at event \d+: the log was cut back/);
});

Then('the engine refuses to carry the run on because {string}', async function (this: ReplayWorld, words: string) {
  const runId = runOf(this);
  // a worker that picks the run up reads its log, finds it short of what was kept outside the database, and stops
  await this.waitUntil(`a worker to refuse run ${runId} because "${words}"`, async () =>
    this.workers.some((w) => w.output.some((line) => line.includes(runId) && line.includes('fails its integrity check') && line.includes(words))),
  );
});

Then('verification finds a delivery record that no run names', async function (this: ReplayWorld) {
  const v = this.verified;
  if (!v) throw new Error('the runs have not been verified: add "When the runs are verified"');
  expect({ exitCode: v.code }).toEqual({ exitCode: 1 });
  const planted = this.plantedDelivery?.deliveryId ?? '(none planted)';
  const line = v.out.find((l) => l.startsWith('NOT ok') && l.includes(`delivery "${planted}"`));
  if (!line) throw new Error(`verification did not name the delivery record "${planted}":\n${v.out.join('\n')}`);
  expect(line).toMatch(/no run names it: written outside the engine/);
});

Then("verification finds the record of the run's delivery gone", async function (this: ReplayWorld) {
  expect(verdictOf(this)).toMatch(/delivery: the record of delivery ".+", which started it, is gone: deleted outside the engine/);
});

Then('verification finds version {int} of {workflow} gone behind a checkpoint', async function (this: ReplayWorld, version: number, workflow: string) {
  const v = this.verified;
  if (!v) throw new Error('the runs have not been verified: add "When the runs are verified"');
  expect({ exitCode: v.code }).toEqual({ exitCode: 1 });
  const line = v.out.find((l) => l.startsWith('NOT ok') && l.includes(`version ${version} of workflow "${workflow}"`));
  if (!line) throw new Error(`verification did not name version ${version} of "${workflow}":\n${v.out.join('\n')}`);
  expect(line).toMatch(/a checkpoint taken .* saw version \d+ of workflow ".+" published, and it no longer exists: new runs would start on an earlier version/);
});

Then('verification finds the leave to call private addresses of {project} written back behind a checkpoint', async function (this: ReplayWorld, project: string) {
  const v = this.verified;
  if (!v) throw new Error('the runs have not been verified: add "When the runs are verified"');
  expect({ exitCode: v.code }).toEqual({ exitCode: 1 });
  const line = v.out.find((l) => l.startsWith(`NOT ok  ${project}  `) && l.includes('leave to call private addresses'));
  if (!line) throw new Error(`verification did not name the leave of "${project}" to call private addresses:\n${v.out.join('\n')}`);
  expect(line).toMatch(/a checkpoint taken .* saw the project's leave to call private addresses taken away, but it stands now on a grant signed .*: an old grant written back behind the engine's back/);
});

Then("verification names the database's defences as weakened", async function (this: ReplayWorld) {
  const v = this.verified;
  if (!v) throw new Error('the runs have not been verified: add "When the runs are verified"');
  if (!this.weakened) throw new Error("nothing was weakened: add a step like \"When someone switches off row-level security on the runs behind the engine's back\"");
  expect({ exitCode: v.code }).toEqual({ exitCode: 1 });
  const lines = v.out.filter((l) => l.startsWith('NOT ok  schema  '));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(this.weakened.named);
  expect(v.out.join('\n')).toMatch(/the engine's schema NOT as it sealed it \(1 difference\)/);
});

Then('verification finds every run intact', async function (this: ReplayWorld) {
  const v = this.verified!;
  // a line about a run names it in its own column (a line about something else may mention a run in its words)
  expect(v.out.filter((l) => l.startsWith('NOT ok') && this.runs.some((r) => l.includes(`  ${r.runId}  `)))).toEqual([]);
  expect(v.out.join('\n')).toMatch(new RegExp(`verified ${this.runs.length} runs, \\d+ events in [\\d.]+ s: ${this.runs.length} ok, 0 NOT ok`));
});

Then('verification finds the run log empty', async function (this: ReplayWorld) {
  expect(verdictOf(this)).toContain('the run has no events');
});

Then('verification finds every other run intact', async function (this: ReplayWorld) {
  const v = this.verified!;
  const others = this.runs.filter((r) => r.runId !== this.run.runId).map((r) => r.runId);
  if (others.length === 0) throw new Error('the scenario has no other run to find intact: deliver more than one first (e.g. "acme" delivers 3 order webhooks to "order-sync")');
  expect(v.out.filter((l) => l.startsWith('NOT ok') && others.some((id) => l.includes(id)))).toEqual([]);
  expect(v.out.join('\n')).toMatch(new RegExp(`verified ${this.runs.length} runs, \\d+ events in [\\d.]+ s: ${this.runs.length - 1} ok, 1 NOT ok`));
});

// ───── mechanics

/** A forged version of an event's content: the kind of change that would matter (an amount). */
function forge(e: RecordedEvent): unknown {
  const d = e.data as Record<string, unknown>;
  if (e.type === 'StepSucceeded') return { ...d, output: { ...((d.output as object) ?? {}), total: 0.01 } };
  if (e.type === 'HttpResponseRecorded') return { ...d, outcome: { kind: 'response', status: 200, headers: {}, body: { orderId: 'ord_forged' } } };
  return { ...d, forged: true };
}

/** Cut the log after `e` and make the run view agree with what is left; sign the head only when given a genuine signature. */
async function rollBack(world: ReplayWorld, log: RecordedEvent[], e: RecordedEvent, mac: string | null): Promise<void> {
  // a rolled-back run looks unfinished and claimable: with workers still running, one would take it up and
  // write over the evidence before the scenario verifies it (what it writes is caught too, but as another finding)
  await Promise.all(world.aliveWorkers.map((w) => w.stop(2_000)));
  const kept = log.filter((x) => x.seq <= e.seq);
  const state = replayLog(kept);
  await withLogProtectionOff(world.db, async (c: PoolClient) => {
    await c.query('DELETE FROM run_events WHERE run_id = $1 AND seq > $2', [e.runId, e.seq]);
    const stale = (await c.query('SELECT head_mac FROM runs WHERE id = $1', [e.runId])).rows[0].head_mac;
    await writeRebuiltView(c, state, e.seq, { hash: e.hash, mac: mac ?? stale });
  });
}
