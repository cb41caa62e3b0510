import type { RecordedEvent } from '../src/domain/events';
import { Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import { eventAt, type Place } from '../support/places';
import { canonicalJson } from '../src/domain/canonical';
import type { EngineFlags } from '../src/domain/decider';
import { compareViews, replayRun, RunVerification, verifyRun, problemsOf } from '../src/replay-service';
import { normalise } from '../support/normalise';
import type { ReplayWorld } from '../support/world';

/* Replay: rebuild a run from its log alone and re-make every decision. */

async function verifyAll(world: ReplayWorld, runId: string): Promise<RunVerification> {
  const v = await verifyRun(world.engineDb, await world.projectIdOf(runId), runId, world.verifyOptions());
  if (!v.ok) {
    throw new Error(`run ${runId} does not replay exactly: ${problemsOf(v).join('; ')}`);
  }
  return v;
}

Then('replaying the run gives exactly the run view users saw', async function (this: ReplayWorld) {
  await this.waitUntilFinished();
  const stored = await this.view();
  const replayed = await replayRun(this.engineDb, this.run.projectId, this.run.runId);
  expect(compareViews(stored, replayed.view)).toBeNull();
  expect(replayed.state.status).toBe(stored.status);
});

Then('every decision re-made during replay matches the log', async function (this: ReplayWorld) {
  const v = await verifyRun(this.engineDb, this.run.projectId, this.run.runId, this.verifyOptions());
  expect(v.chainBreak).toBeNull();
  expect(v.divergence).toBeNull();
  expect(v.eventCount).toBeGreaterThan(1);
});

Then('the run replays exactly from its log', async function (this: ReplayWorld) {
  // a paused run, or one waiting on a timer, has settled too: its log so far must replay
  await this.waitUntilSettled();
  await verifyAll(this, this.run.runId);
});

Then('every run replays exactly from its log', async function (this: ReplayWorld) {
  expect(this.runs.length).toBeGreaterThan(0);
  for (const r of this.runs) {
    await this.waitUntilFinished(r.runId);
    await verifyAll(this, r.runId);
  }
});

async function replayInto(world: ReplayWorld, flags?: EngineFlags): Promise<void> {
  world.lastError = null;
  world.verification = undefined;
  try {
    world.verification = await verifyRun(world.engineDb, world.run.projectId, world.run.runId, { ...world.verifyOptions(), ...(flags ? { flags } : {}) });
  } catch (e) {
    world.lastError = e as Error;
  }
}

When('the run is replayed', async function (this: ReplayWorld) {
  // a run someone tampered with is replayed as it now stands
  if (!this.logBeforeTampering) await this.waitUntilFinished();
  await replayInto(this);
});

When('the run is replayed by an engine that treats a conflict as done', async function (this: ReplayWorld) {
  await this.waitUntilFinished();
  await replayInto(this, { conflictIsSuccess: true });
});

Then('replay finds no divergence', async function (this: ReplayWorld) {
  if (!this.verification) throw new Error('the run has not been replayed: add "When the run is replayed" before this step');
  expect(this.lastError).toBeNull();
  expect(this.verification?.divergence).toBeNull();
  expect(this.verification?.chainBreak).toBeNull();
  expect(this.verification?.ok).toBe(true);
});

Then('replay says the version the run was pinned to has been changed', async function (this: ReplayWorld) {
  expect(this.lastError).toBeNull();
  // every recorded decision still matches, yet the run no longer stands on what it was pinned to
  expect(this.verification?.divergence).toBeNull();
  expect(this.verification?.definitionChanged).toBe(true);
  expect(this.verification?.ok).toBe(false);
});

Then('replay reports the first divergence at {place}', async function (this: ReplayWorld, place: Place) {
  expect(this.lastError).toBeNull();
  if (!this.verification) throw new Error('the run has not been replayed: add "When the run is replayed" before this step');
  if (this.verification.ok) throw new Error('replay found no divergence: the run replays exactly from its log');
  // a place in business words (`the result of "map"`) or a number (`event 3`), found in the run's own log
  // the log that was replayed: a recorded history's, or the scenario's run's
  const at = eventAt(place, this.history ? this.history.events : await this.events());
  expect({ divergenceAt: this.verification?.divergence?.seq }).toEqual({ divergenceAt: at.seq });
});

Then('the divergence says {string}', async function (this: ReplayWorld, text: string) {
  if (!this.verification) throw new Error('the run has not been replayed: add "When the run is replayed" before this step');
  if (!this.verification.divergence) throw new Error(`replay found no divergence to say "${text}"`);
  expect(this.verification.divergence.reason).toContain(text);
});

Then('the divergence shows the engine now decides {string} where the log has {string}', async function (this: ReplayWorld, expected: string, recorded: string) {
  const d = this.verification?.divergence;
  expect(d).toBeTruthy();
  expect(canonicalJson(d!.expected)).toContain(expected);
  expect(canonicalJson(d!.recorded)).toContain(recorded);
});

Then('replay refuses the run because {string}', async function (this: ReplayWorld, reason: string) {
  const said = this.lastError?.message ?? this.verification?.divergence?.reason ?? '';
  expect(this.verification?.ok ?? false).toBe(false);
  expect(said).toContain(reason);
});

/**
 * The same workflow, the same webhook body, on a worker with no fault armed:
 * the faulted run must end exactly like it, bar ids and timestamps.
 */
Then('it ends exactly as the same run without the fault', async function (this: ReplayWorld) {
  const faulted = await this.waitUntilFinished();
  if (!this.aliveWorkers.some((w) => !w.opts.failpoints)) await this.startWorker({ failpoints: [] });
  const r = this.run;
  // the same order with nothing going wrong: what the order service was scripted to do is spent by now
  const answer = await this.deliver(r.project, r.workflow, r.body, { track: false });
  expect(answer.status).toBe(202);
  const baselineId: string = answer.body.runId;
  const baseline = await this.waitUntilFinished(baselineId, this.timeoutMs, true);
  const pick = (v: typeof faulted) => normalise({ status: v.status, outputs: v.outputs, attempts: v.attempts, result: v.result, currentStep: v.currentStep });
  expect(pick(faulted)).toEqual(pick(baseline));
  const shape = async (id: string) => (await this.events(id)).map((e) => `${e.type}${(e.data as { step?: string }).step ? `(${(e.data as { step?: string }).step})` : ''}`);
  expect(await shape(r.runId)).toEqual(await shape(baselineId));
});

Then('nothing the engine committed was lost', async function (this: ReplayWorld) {
  // every lane the sweep opened is a database of its own, with its own workers
  for (const world of this.allLanes) await expectNothingLost(world);
});

async function expectNothingLost(world: ReplayWorld): Promise<void> {
  const logs = new Map<string, RecordedEvent[]>();
  const logOf = async (runId: string) => logs.get(runId) ?? logs.set(runId, await world.events(runId)).get(runId)!;
  // what each worker was told was committed: its own journal of heads, written after COMMIT returned
  const told = world.headsToldCommitted();
  expect(told.length).toBeGreaterThan(0);
  for (const h of told) {
    const e = (await logOf(h.runId))[h.seq - 1];
    expect({ worker: h.worker, run: h.runId, seq: h.seq, hash: e?.hash }).toEqual({ worker: h.worker, run: h.runId, seq: h.seq, hash: h.hash });
  }
  // and what the database showed as committed at the moment of the fault
  expect(world.acknowledged.size).toBeGreaterThan(0);
  for (const [runId, acked] of world.acknowledged) {
    const now = await logOf(runId);
    for (const a of acked) {
      const e = now[a.seq - 1];
      expect({ run: runId, seq: a.seq, hash: e?.hash }).toEqual({ run: runId, seq: a.seq, hash: a.hash });
    }
  }
}
