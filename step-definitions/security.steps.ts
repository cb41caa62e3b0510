import { randomBytes } from 'node:crypto';
import { Given, Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import { runCli } from '../src/cli/main';
import { signProjectToken } from '../src/realtime/tokens';
import { tokenSecret } from '../src/security/keyring';
import { findLeaks, type Place } from '../support/leak-check';
import type { Reach } from '../support/parameter-types';
import type { RecordedRequest } from '../support/target-service';
import type { ReplayWorld, TrackedRun } from '../support/world';

/*
 * Security: a project reaches only its own runs, whatever door it knocks on
 * (HTTP, replay, verify, rebuild, the audit trail, every operator action), and a
 * project's secrets reach the service they are for and nothing else. Every
 * refusal is held against a positive control in the same scenario: the same
 * door opens for the project's own run, so "not found" means something.
 */

interface ReachResult {
  found: boolean;
  detail: string;
}

/** Knock on one door as `actor` for `run`; "found" unless the answer was that the run does not exist. */
async function reachAs(world: ReplayWorld, actor: string, reach: Reach, run: TrackedRun): Promise<ReachResult> {
  if (reach === 'reads') {
    const url = await world.ensureIntake();
    const token = await signProjectToken({ secret: tokenSecret(world.keyring, {}), projectId: world.projectIdFor(actor), ttlSec: 300 });
    const res = await fetch(`${url}/runs/${run.runId}`, { headers: { authorization: `Bearer ${token}` } });
    const text = await res.text();
    return { found: res.status !== 404, detail: `HTTP ${res.status} ${text.slice(0, 200)}` };
  }
  const argv = {
    replays: ['replay', run.runId],
    verifies: ['verify', run.runId],
    'rebuilds the view of': ['rebuild', '--run', run.runId],
    'reads the audit trail of': ['history', run.runId],
    cancels: ['cancel', run.runId, '--reason', 'customer asked to stop the order', '--by', 'dana@acme.example'],
    pauses: ['pause', run.runId, '--reason', 'holding the order for a fraud check', '--by', 'dana@acme.example'],
    unpauses: ['unpause', run.runId, '--reason', 'the fraud check is done', '--by', 'dana@acme.example'],
    'retries a step of': ['retry', run.runId, '--step', 'push', '--reason', 'the order service is back', '--by', 'dana@acme.example'],
    'skips a step of': ['skip', run.runId, '--output', '{"skipped":true}', '--reason', 'the order was placed by phone', '--by', 'dana@acme.example'],
    resumes: ['resume', run.runId, '--step', 'map', '--reason', 'send the order again', '--by', 'dana@acme.example'],
    'patches the input of': ['patch', run.runId, '--patch', '{"order":{"sum":40}}', '--reason', 'the customer corrected the amount', '--by', 'dana@acme.example'],
  }[reach];
  const out: string[] = [];
  const code = await runCli([...argv, '--project', actor], {
    out: (l) => out.push(l),
    err: (l) => out.push(l),
    env: { DATABASE_URL: world.engineDirectUrl, MESHHOOK_KEYS: world.keyring.toEnv() },
    cwd: world.scratch,
  });
  const said = out.join('\n');
  return { found: !/not found/i.test(said), detail: `exit ${code}: ${said.slice(0, 300)}` };
}

async function snapshot(world: ReplayWorld, runId: string): Promise<string> {
  const { rows } = await world.db.query('SELECT seq, hash FROM run_events WHERE run_id = $1 ORDER BY seq', [runId]);
  const view = await world.db.query('SELECT status, last_seq, head_hash FROM runs WHERE id = $1', [runId]);
  return JSON.stringify({ log: rows, view: view.rows[0] });
}

function lastRunOf(world: ReplayWorld, project: string): TrackedRun {
  const run = world.runs.filter((r) => r.project === project).at(-1);
  if (!run) throw new Error(`"${project}" has no run in this scenario yet`);
  return run;
}

When('{project} {reach} {project}\'s run', async function (this: ReplayWorld, actor: string, reach: Reach, owner: string) {
  const run = lastRunOf(this, owner);
  await this.waitUntilSettled(run.runId);
  const before = await snapshot(this, run.runId);
  const result = await reachAs(this, actor, reach, run);
  this.reached = { actor, reach, owner, run, before, result };
});

Then('{project} is told that run does not exist', async function (this: ReplayWorld, actor: string) {
  const r = this.reached;
  if (!r || r.actor !== actor) throw new Error(`"${actor}" has not tried to reach a run in this scenario`);
  expect({ found: r.result.found, answer: r.result.detail }).toEqual({ found: false, answer: expect.stringMatching(/not found|HTTP 404/i) });
});

Then('the same request for its own run is answered', async function (this: ReplayWorld) {
  const r = this.reached;
  if (!r) throw new Error('no project has tried to reach a run in this scenario');
  // the positive control: the same door, the same project, its own run
  if (!this.runs.some((x) => x.project === r.actor)) {
    throw new Error(
      `the same request is made for "${r.actor}"'s own run, and "${r.actor}" has started none in this scenario: ` +
        `give it one before the run the scenario is about (e.g. "Given \"${r.actor}\" has a finished run of \"order-sync\"" first, since "the run" is the one started last)`,
    );
  }
  const own = lastRunOf(this, r.actor);
  await this.waitUntilSettled(own.runId);
  const result = await reachAs(this, r.actor, r.reach, own);
  expect({ found: result.found, answer: result.detail }).toEqual({ found: true, answer: expect.any(String) });
});

Then("{project}'s run is untouched", async function (this: ReplayWorld, owner: string) {
  const r = this.reached;
  if (!r || r.owner !== owner) throw new Error(`no one has tried to reach "${owner}"'s run in this scenario`);
  // judged once the run is at rest (finished, paused, or waiting on a timer not yet due), so a run that moves on
  // just after the knock (a timer a clock step made due) is seen to have moved, however soon this step runs
  await this.waitUntilAtRest(r.run.runId);
  const now = await snapshot(this, r.run.runId);
  if (now !== r.before) {
    const was = JSON.parse(r.before) as { log: unknown[]; view: { status: string } };
    const is = JSON.parse(now) as { log: unknown[]; view: { status: string } };
    throw new Error(
      `"${owner}"'s run changed after "${r.actor}" ${r.reach} it: ${was.log.length} events and ${was.view?.status} then, ` +
        `${is.log.length} events and ${is.view?.status} now. Untouched means nothing at all happened to the run since the knock; ` +
        'a scenario that lets the run go on (a clock step) checks it is untouched before that',
    );
  }
  expect(now).toEqual(r.before);
});

Then("each project's run ran its own project's workflow", async function (this: ReplayWorld) {
  const projects = [...new Set(this.runs.map((r) => r.project))];
  expect(projects.length).toBeGreaterThan(1);
  for (const run of this.runs) {
    await this.waitUntilSettled(run.runId);
    const wf = this.workflow(run.project, run.workflow);
    const { rows } = await this.db.query('SELECT project_id::text, workflow_id::text FROM runs WHERE id = $1', [run.runId]);
    expect({ run: run.runId, ...rows[0] }).toEqual({ run: run.runId, project_id: wf.projectId, workflow_id: wf.workflowId });
  }
});

// ───── the vault

Given("{project} keeps the order service's API key in its vault as {string}", async function (this: ReplayWorld, project: string, name: string) {
  const value = `sk_live_${randomBytes(24).toString('base64url')}`;
  await this.keepSecret(project, name, value);
  this.apiKeys.set(project, value);
  // the order service takes orders only with that key, as a real API would
  (await this.orderService()).requireBearer(value);
});

/**
 * Only the body of the answer to an order the service accepts carries the key; its status stays the usual 200, so a
 * workflow that branches on the status goes the same way as without the step. A scripted refusal or failure
 * (`answers every order with 402`, `fails 1 time`) and a 401 for a missing key are answered as scripted, without it.
 */
Given('the order service repeats the API key it was sent in its answer', async function (this: ReplayWorld) {
  const target = await this.orderService();
  target.setDefaultResponse('*', 200, (req: RecordedRequest) => ({ orderId: `ord_${req.idempotencyKey?.slice(-8) ?? 'new'}`, receivedWith: req.headers.authorization ?? null }));
  this.recordFault('the order service put the API key in its answer', async () =>
    target.requests.some((r) => r.status === 200 && (r.headers.authorization ?? '').startsWith('Bearer sk_live_')) ? 'an answer carried the key' : null,
  );
});

Then("the order service received {project}'s API key with every order", async function (this: ReplayWorld, project: string) {
  const key = this.apiKeys.get(project);
  if (!key) throw new Error(`"${project}" keeps no API key in this scenario`);
  const target = await this.orderService();
  // the project's runs first come to rest (their calls made), then every request of theirs is looked at: the runs of
  // every lane a sweep opened too (each a database of its own, all sharing the order service), not this world's alone
  const runs = this.allLanes.flatMap((lane) => lane.runs.filter((r) => r.project === project).map((run) => ({ lane, run })));
  if (runs.length === 0) throw new Error(`"${project}" has no run in this scenario`);
  const keys = new Set<string>();
  for (const { lane, run } of runs) {
    await lane.waitUntilAtRest(run.runId);
    for (const e of await lane.events(run.runId)) if (e.type === 'HttpRequestPrepared') keys.add((e.data as { idempotencyKey: string }).idempotencyKey);
  }
  const seen = target.requests
    .filter((r) => r.idempotencyKey !== null && keys.has(r.idempotencyKey))
    .map((r) => (r.headers.authorization === `Bearer ${key}` ? 'with the key' : `with ${r.headers.authorization ? 'another value' : 'no key'}`));
  if (seen.length === 0) throw new Error(`the order service received no order from "${project}"'s runs (${target.requests.length} requests in all)`);
  expect({ ordersOf: project, sent: seen }).toEqual({ ordersOf: project, sent: seen.map(() => 'with the key') });
});

Then('the run log names the API key without holding it', async function (this: ReplayWorld) {
  const events = await this.events();
  const prepared = events.filter((e) => e.type === 'HttpRequestPrepared');
  expect(prepared.length).toBeGreaterThan(0);
  for (const e of prepared) {
    const headers = (e.data as { headers?: Record<string, unknown> }).headers ?? {};
    // the header is there, by name, so replay knows what was sent; its value is a reference, never the key
    expect(Object.keys(headers).map((h) => h.toLowerCase())).toContain('authorization');
  }
  const places: Place[] = events.map((e) => ({ place: `event ${e.seq} (${e.type})`, text: JSON.stringify(e.data) }));
  for (const w of this.workers) places.push({ place: `worker ${w.opts.id}'s output`, text: w.stream });
  for (const f of this.liveFrames()) places.push({ place: 'a live-log frame', text: f });
  expect(findLeaks(this.vaultSecrets, places)).toEqual([]);
});

Then("the database holds {project}'s API key only sealed", async function (this: ReplayWorld, project: string) {
  const key = this.apiKeys.get(project);
  if (!key) throw new Error(`"${project}" keeps no API key in this scenario`);
  // every row of every table, as the database's owner reads it
  const { rows: tables } = await this.db.query<{ t: string }>(
    "SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
  );
  const places: Place[] = [];
  for (const { t } of tables) {
    const { rows } = await this.db.query<{ row: string }>(`SELECT x::text AS row FROM ${t} x`);
    for (const r of rows) places.push({ place: `a row of ${t}`, text: r.row });
  }
  expect(places.some((p) => p.place.includes('secret'))).toBe(true); // the vault's table was read
  expect(findLeaks([{ name: 'the API key', value: key }], places)).toEqual([]);
});
