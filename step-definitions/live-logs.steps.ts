import { Given, Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import { signAnonKey, signProjectToken } from '../src/realtime/tokens';
import type { Credential } from '../support/parameter-types';
import type { ReplayWorld, TrackedRun } from '../support/world';

/*
 * Live logs: people watching a project's runs through Supabase Realtime, with
 * the real supabase-js client over a real websocket. Every scenario already
 * has a watcher per project (support/hooks.ts checks it after each scenario);
 * these steps add named viewers, with tokens of their own, that a scenario
 * can open late, refuse, or point at another project.
 */

async function runLogOf(world: ReplayWorld, runId: string): Promise<Array<{ seq: number; type: string; hash: string }>> {
  // as the database holds it, read directly: the live log is held against the truth, not against the engine's view of it
  const { rows } = await world.db.query<{ seq: number; type: string; hash: string }>('SELECT seq, type, hash FROM run_events WHERE run_id = $1 ORDER BY seq', [runId]);
  return rows;
}

async function expectSeesRun(world: ReplayWorld, name: string, run: TrackedRun): Promise<void> {
  const viewer = world.realtime.viewer(name);
  if (viewer.refusal) throw new Error(`the live log refused "${name}": ${viewer.refusal}`);
  await world.waitUntilSettled(run.runId);
  const log = await runLogOf(world, run.runId);
  expect(log.length).toBeGreaterThan(0);
  await viewer.live.waitUntilHolds(run.runId, log[log.length - 1].seq, 20_000).catch(() => undefined);
  expect(viewer.live.compareWith(run.runId, log)).toBeNull();
}

Given('{viewer} opens the live log of {project}', async function (this: ReplayWorld, name: string, project: string) {
  const viewer = await this.realtime.openViewer(name, this.projectIdFor(project));
  if (viewer.refusal) throw new Error(`the live log of "${project}" refused "${name}": ${viewer.refusal}`);
});

When('{viewer}, signed in to {project}, opens the live log of {project}', async function (this: ReplayWorld, name: string, own: string, other: string) {
  const viewer = await this.realtime.openViewer(name, this.projectIdFor(other), { signedInTo: this.projectIdFor(own) });
  // the server has no reason to refuse the join itself: what it must not do is deliver another project's rows
  if (viewer.refusal) throw new Error(`the live log refused "${name}" outright (${viewer.refusal}); this scenario is about what it delivers`);
});

When('{viewer} tries to open the live log of {project} with {credential}', async function (this: ReplayWorld, name: string, project: string, credential: Credential) {
  const projectId = this.projectIdFor(project);
  const secret = this.realtime.jwtSecret;
  const token = {
    expired: () => signProjectToken({ secret, projectId, ttlSec: -60 }),
    forged: () => signProjectToken({ secret: `${secret}-but-not-quite`, projectId, ttlSec: 3600 }),
    garbage: () => Promise.resolve('not-a-jwt'),
    anonymous: () => signAnonKey({ secret }),
  }[credential];
  await this.realtime.openViewer(name, projectId, { token: await token() });
});

When("{viewer}'s token is renewed", async function (this: ReplayWorld, name: string) {
  await this.realtime.renewToken(name);
});

When('the live-log server restarts', async function (this: ReplayWorld) {
  const before = this.realtime.server;
  await this.realtime.restartServer();
  this.recordFault('the live-log server restarted', async () =>
    before !== this.realtime.server && [...this.realtime.viewers.values(), ...this.realtime.byProject.values()].some((v) => v.live.subscribedCount > 1)
      ? 'a subscriber joined again after the restart'
      : null,
  );
});

Given('the live-log server will lose one event of every run', async function (this: ReplayWorld) {
  // a test-only failpoint in the server: the third event of each run is swallowed instead of delivered
  this.realtime.dropRule = (c) => c.table === 'run_events' && Number(c.record.seq) === 3;
  this.recordFault('the live-log server lost an event', async () =>
    this.realtime.server && this.realtime.server.stats.dropped.length > 0 ? `${this.realtime.server.stats.dropped.length} change(s) swallowed` : null,
  );
});

Then('{viewer} sees the run exactly as its run log holds it', async function (this: ReplayWorld, name: string) {
  await expectSeesRun(this, name, this.run);
});

Then('{viewer} sees every run exactly as its run log holds it', async function (this: ReplayWorld, name: string) {
  // every run of the project the viewer watches: another project's runs are not theirs to see
  const watching = this.realtime.viewer(name).watching;
  const runs = this.runs.filter((r) => r.projectId === watching || r.project === watching);
  expect(runs.length).toBeGreaterThan(0);
  for (const run of runs) await expectSeesRun(this, name, run);
});

Then('{viewer} saw every event of the run as it happened', async function (this: ReplayWorld, name: string) {
  await expectSeesRun(this, name, this.run);
  const late = this.realtime.viewer(name).live.eventsOf(this.run.runId).filter((e) => e.via !== 'live');
  expect(late.map((e) => `${e.seq} ${e.type} (${e.via})`)).toEqual([]);
});

Then("{viewer} sees {project}'s run but nothing of {project}'s", async function (this: ReplayWorld, name: string, own: string, other: string) {
  const viewer = this.realtime.viewer(name);
  const ownRun = this.runs.filter((r) => r.project === own).at(-1);
  const otherRun = this.runs.filter((r) => r.project === other).at(-1);
  if (!ownRun || !otherRun) throw new Error(`this step needs a run of "${own}" and a run of "${other}"`);
  await this.waitUntilSettled(ownRun.runId);
  await this.waitUntilSettled(otherRun.runId);
  // first, the other project's own watcher holds the other run whole: only then has every event that could leak been
  // sent, so the viewer's emptiness below means something (and after a reconnect, the watcher has caught up first)
  const otherLog = await runLogOf(this, otherRun.runId);
  const watcher = this.realtime.byProject.get(otherRun.projectId)!;
  await watcher.live.waitUntilHolds(otherRun.runId, otherLog[otherLog.length - 1].seq, 20_000).catch(() => undefined);
  expect(watcher.live.compareWith(otherRun.runId, otherLog)).toBeNull();
  const log = await runLogOf(this, ownRun.runId);
  if (viewer.own) {
    // signed in to one project, watching another: the own project arrives on the same connection (a positive
    // control), the watched one not at all
    await viewer.own.waitUntilHolds(ownRun.runId, log[log.length - 1].seq, 20_000);
    expect(viewer.own.compareWith(ownRun.runId, log)).toBeNull();
    expect(viewer.live.runIds()).toEqual([]);
  } else {
    // watching the project they are signed in to: its run arrives whole, the other project's never
    if (viewer.watching !== ownRun.projectId) throw new Error(`"${name}" watches the live log of another project than "${own}"`);
    await viewer.live.waitUntilHolds(ownRun.runId, log[log.length - 1].seq, 20_000);
    expect(viewer.live.compareWith(ownRun.runId, log)).toBeNull();
    expect(viewer.live.runIds().filter((id) => id !== ownRun.runId && this.runs.some((r) => r.runId === id && r.project !== own))).toEqual([]);
  }
});

Then('the live log refuses {viewer} because {string}', async function (this: ReplayWorld, name: string, reason: string) {
  const viewer = this.realtime.viewer(name);
  expect(viewer.refusal ?? `"${name}" was let in`).toContain(reason);
});

Then('{viewer} received nothing', async function (this: ReplayWorld, name: string) {
  const viewer = this.realtime.viewer(name);
  expect(this.runs.length).toBeGreaterThan(0);
  for (const r of this.runs) await this.waitUntilSettled(r.runId);
  // the project's own watcher holds the runs: there were events to receive
  for (const r of this.runs) expect(this.realtime.byProject.get(r.projectId)?.live.eventsOf(r.runId).length ?? 0).toBeGreaterThan(0);
  // named, so a failure says whose events reached the viewer rather than showing a bare list of ids
  expect({ viewer: name, receivedEventsOfRuns: viewer.live.runIds() }).toEqual({ viewer: name, receivedEventsOfRuns: [] });
});

Then('the live log shows that {viewer} missed an event while subscribed', async function (this: ReplayWorld, name: string) {
  // the only event a scenario can make the server lose is the one `will lose one event of every run` swallows (the third)
  if (!this.realtime.dropRule) throw new Error('nothing made the live-log server lose an event in this scenario: say `Given the live-log server will lose one event of every run` first');
  const viewer = this.realtime.viewer(name);
  await this.waitUntilSettled();
  const log = await runLogOf(this, this.run.runId);
  await viewer.live.waitUntilHolds(this.run.runId, log[log.length - 1].seq, 20_000);
  expect(viewer.live.compareWith(this.run.runId, log) ?? 'the live log matched').toMatch(/gap while subscribed: event 3 never arrived live/);
  // the scenario planted this gap and has checked that it was caught; the after-scenario check would only say it again
  this.liveGapPlanted = true;
});

When("{viewer}'s connection stalls", async function (this: ReplayWorld, name: string) {
  // the network path stops delivering in both directions; the server keeps writing into it
  const connection = this.realtime.viewer(name).connection;
  connection.blackhole();
  const stalledAt = connection.stats().bytesDown;
  let healedAt: number | null = null;
  this.stalledViewers.set(name, (bytes) => (healedAt = bytes));
  this.recordFault(`the connection of "${name}" stalled`, async () => {
    const now = connection.stats().bytesDown;
    return healedAt !== null && now > healedAt ? `${now - stalledAt} byte(s) held back, delivered after it recovered` : null;
  });
});

When("{viewer}'s connection recovers", async function (this: ReplayWorld, name: string) {
  const connection = this.realtime.viewer(name).connection;
  const note = this.stalledViewers.get(name);
  if (!note) throw new Error(`the connection of "${name}" has not stalled in this scenario`);
  note(connection.stats().bytesDown);
  connection.heal();
});

When('every run finishes before {viewer} receives any of it', async function (this: ReplayWorld, name: string) {
  const viewer = this.realtime.viewer(name);
  expect(this.runs.length).toBeGreaterThan(0);
  // the runs finished: what the viewer holds of them is what got through the stalled connection
  for (const r of this.runs) await this.waitUntilSettled(r.runId);
  expect(this.runs.flatMap((r) => viewer.live.eventsOf(r.runId).map((e) => `${r.runId.slice(0, 8)} ${e.seq} ${e.type}`))).toEqual([]);
});
