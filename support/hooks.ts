import { After, AfterAll, Before, BeforeAll, ITestCaseHookParameter, setDefaultTimeout, Status } from '@cucumber/cucumber';
import { getCluster, shutdownCluster } from './cluster';
import { renderTimeline, renderTimelineText } from './timeline';
import { assertWorkerBuilt } from './worker-process';
import { findLeaks, Place } from './leak-check';
import type { ReplayWorld } from './world';

// Inner waits (runs settling, workers starting) give up before this, so a
// failure names what it was waiting for rather than "function timed out".
setDefaultTimeout(60_000);

BeforeAll({ timeout: 120_000, name: 'start this worker\'s Postgres' }, async function () {
  assertWorkerBuilt();
  await getCluster();
});

AfterAll({ timeout: 60_000, name: 'stop this worker\'s Postgres' }, async function () {
  await shutdownCluster();
});

Before({ name: 'fresh database for the scenario' }, async function (this: ReplayWorld) {
  await this.init();
});

Before({ tags: '@db-crash', name: 'needs a Postgres the suite owns' }, async function (this: ReplayWorld) {
  const { server } = await getCluster();
  if (!server.canCrash) {
    throw new Error(`@db-crash scenarios crash and restart Postgres; the ${server.kind} server from DATABASE_URL cannot be crashed. Run them on the embedded default or exclude them with --tags "not @db-crash".`);
  }
});

// Cucumber runs After hooks in reverse order of definition: teardown is
// defined first so it runs last, after the proofs and attachments have read
// the workers' failpoint logs.
After({ name: 'stop everything the scenario started', timeout: 30_000 }, async function (this: ReplayWorld) {
  await this.cleanup();
});

// Runs after the attachments are made and before teardown: no secret in use may
// be found anywhere the scenario can read, whatever the scenario was about.
After({ name: 'no secret in the run log, run views, worker output, live logs or report' }, async function (this: ReplayWorld, { result }: ITestCaseHookParameter) {
  if (result?.status !== Status.PASSED || !this.db) return;
  const secrets = this.secretsInUse();
  if (secrets.length === 0) return;
  const places: Place[] = [];
  // the sweep's lanes are databases of their own, with workers and live logs of their own
  for (const world of this.allLanes) {
    const events = await world.db.query<{ run_id: string; payload: string }>('SELECT run_id, payload::text AS payload FROM run_events');
    for (const e of events.rows) places.push({ place: `the run log of ${e.run_id}`, text: e.payload });
    const views = await world.db.query<{ id: string; v: string }>('SELECT id, (outputs::text || coalesce(result::text, \'\') || attempts::text) AS v FROM runs');
    for (const r of views.rows) places.push({ place: `the run view of ${r.id}`, text: r.v });
    for (const w of world.workers) places.push({ place: `worker ${w.opts.id}'s output`, text: w.stream });
    for (const f of world.liveFrames()) places.push({ place: 'a live-log frame', text: f });
  }
  for (const a of this.attachments) places.push({ place: `the report attachment ${a.name}`, text: a.text });
  if (this.lastAnswer) places.push({ place: "the intake's last answer", text: JSON.stringify(this.lastAnswer) });
  const leaks = findLeaks(secrets, places);
  if (leaks.length) throw new Error(`a secret leaked: ${leaks.slice(0, 10).join('; ')}`);
});

After({ name: 'attach run logs and timelines' }, async function (this: ReplayWorld, { result, pickle }: ITestCaseHookParameter) {
  const failed = result?.status !== Status.PASSED;
  const wanted = failed || pickle.tags.some((t) => t.name === '@timeline');
  if (!wanted || !this.db) return;
  const faults: Array<{ at: Date; label: string }> = [];
  for (const f of this.faults) faults.push({ at: f.at, label: ((await f.proof().catch(() => null)) ? '' : 'NOT FIRED: ') + f.label });
  for (const fp of this.firedFailpoints()) faults.push({ at: new Date(fp.at), label: `failpoint ${fp.name}${fp.step ? `@${fp.step}` : ''} → ${fp.action}` });
  for (const run of this.runs) {
    const events = await this.events(run.runId).catch(() => []);
    if (!events.length) continue;
    const title = `${run.project}/${run.workflow} run ${run.runId}`;
    const input = {
      title,
      events: events.map((e) => ({ seq: e.seq, type: e.type, recordedAt: e.recordedAt, step: (e.data as { step?: string }).step ?? null })),
      faults,
    };
    this.attach(JSON.stringify({ run: run.runId, events }, null, 2), { mediaType: 'application/json', fileName: `run-log-${run.runId}.json` });
    this.attach(Buffer.from(renderTimeline(input)), { mediaType: 'image/svg+xml', fileName: `timeline-${run.runId}.svg` });
    if (failed) this.attach(renderTimelineText(input), 'text/plain');
  }
  if (failed) {
    for (const w of this.workers) {
      const exit = w.exitStatus;
      this.attach(`worker ${w.opts.id} (pid ${w.pid}, ${exit ? `exited ${exit.signal ?? exit.code}` : 'alive'})\n${w.output.slice(-60).join('\n')}`, 'text/plain');
    }
  }
});

After({ name: 'every injected fault fired' }, async function (this: ReplayWorld, { result }: ITestCaseHookParameter) {
  if (result?.status !== Status.PASSED) return;
  const unproven: string[] = [];
  for (const fault of this.faults) {
    const proof = await fault.proof().catch((e: Error) => ({ why: e.message }));
    if (!proof) unproven.push(fault.label);
    else if (typeof proof === 'object') unproven.push(`${fault.label} (${proof.why})`);
  }
  if (unproven.length) {
    throw new Error(`these faults were injected but never fired, so the scenario proved nothing about them: ${unproven.join('; ')}`);
  }
});

// Runs first of all: every run the scenario touched, as a subscriber that was
// listening from before it started saw it live, ends equal to its run log —
// same events, same order, no gap while subscribed, nothing the log lacks;
// and no live log holds a run of a project other than the one its token is for.
// A scenario that tampered with the log behind the engine's back is verify's
// business, not the live log's: its runs are left out.
After({ name: "every run's live log ends equal to its run log", timeout: 45_000 }, async function (this: ReplayWorld, { result }: ITestCaseHookParameter) {
  if (result?.status !== Status.PASSED || !this.db || !this.realtime || this.logBeforeTampering || this.liveGapPlanted) return;
  const differences: string[] = [];
  for (const world of this.allLanes) {
    for (const run of world.runs) {
      const { rows } = await world.db.query<{ seq: number; type: string; hash: string }>('SELECT seq, type, hash FROM run_events WHERE run_id = $1 ORDER BY seq', [run.runId]);
      const difference = await world.realtime.differenceFrom(run.projectId, run.runId, rows);
      if (difference) differences.push(difference);
    }
    // and no live log holds a run of another project: a viewer sees one project only
    const { rows: owners } = await world.db.query<{ id: string; project_id: string }>('SELECT id::text, project_id::text FROM runs');
    differences.push(...world.realtime.strangers(new Map(owners.map((o) => [o.id, o.project_id]))));
  }
  if (differences.length) {
    this.attach(this.realtime.journal.join('\n'), { mediaType: 'text/plain', fileName: 'live-log-journal.txt' });
    throw new Error(`the live log differs from the run log: ${differences.join('; ')}\n${this.realtime.journal.slice(-15).join('\n')}`);
  }
});
