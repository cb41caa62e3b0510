import { Given, Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import fc from 'fast-check';
import type { Disruption, Moment } from '../support/parameter-types';
import { CrashPoint, FaultedRun, FaultKind, PACE_MS, PlannedFault, report, runWithFaults, runWithTimedKill, samplePoints, sideBySide, sweepCrashPoints, traceReference, traceTakeoverReference } from '../support/sweep';
import type { ReplayWorld } from '../support/world';
import { lanesHaveOwnServers } from '../support/cluster';

/*
 * The crash-point sweep and the seeded random fault schedule. Both start from
 * a reference order whose worker noted every failpoint it passed; see
 * support/sweep.ts for how crash points are derived from that trace.
 */

const REFERENCE_ORDER = {
  order: { id: 'A-7731', sum: 129.9, currency: 'EUR', customer: { name: 'Grace Hopper', email: 'grace@example.com' }, lines: [{ sku: 'KB-104', qty: 2 }] },
};

function reference(world: ReplayWorld) {
  if (!world.reference) throw new Error('no reference order: start with "<project> has run a reference order through <workflow>, noting every crash point it passed"');
  return world.reference;
}

function faulted(world: ReplayWorld): FaultedRun[] {
  const runs = world.faultedRuns ?? [];
  expect(runs.length).toBeGreaterThan(0);
  return runs;
}

function publish(world: ReplayWorld, runs: FaultedRun[], title: string): void {
  world.faultedRuns = [...(world.faultedRuns ?? []), ...runs];
  for (const r of runs) {
    for (const f of r.faults) world.recordFault(`${f.label} (${r.label})`, async () => f.proof);
  }
  const firedAll = runs.filter((r) => r.faults.length > 0 && r.faults.every((f) => f.proof)).length;
  const clean = runs.filter((r) => !r.error && !r.sameAsReference && !r.replay && !r.effects).length;
  const summary = `${title}: ${runs.length} run(s), faults fired in ${firedAll}, ended as the reference in ${clean}`;
  world.log(summary);
  world.attach(`${summary}\n${report(runs)}`, 'text/plain');
}

Given('{string} has run a reference order through {string}, noting every crash point it passed', { timeout: 60_000 }, async function (this: ReplayWorld, project: string, workflow: string) {
  this.workflow(project, workflow);
  this.reference = await traceReference(this, project, workflow, JSON.stringify(REFERENCE_ORDER));
  const ref = this.reference;
  // a reference may end either way (a refused order fails); it must end
  expect(['succeeded', 'failed']).toContain(ref.view.status);
  expect(ref.points.length).toBeGreaterThan(0);
  this.log(`reference run of "${workflow}" passed ${ref.points.length} crash points: ${ref.points.map((p) => p.spec).join(', ')}`);
});

Given('{string} has run a reference order through {string} whose worker died {moment}, noting every crash point of the worker that took over', { timeout: 60_000 }, async function (this: ReplayWorld, project: string, workflow: string, moment: Moment) {
  this.workflow(project, workflow);
  this.reference = await traceTakeoverReference(this, project, workflow, JSON.stringify(REFERENCE_ORDER), moment.site);
  const ref = this.reference;
  expect(['succeeded', 'failed']).toContain(ref.view.status);
  expect(ref.points[0].base).toMatch(/^during-recovery/);
  this.log(`after its first worker died ${moment.text}, the worker taking over "${workflow}" passed ${ref.points.length} crash points: ${ref.points.map((p) => p.spec).join(', ')}`);
});

When('the order is run again once per crash point, with a worker dying there and a new worker taking over', { timeout: 600_000 }, async function (this: ReplayWorld) {
  const ref = reference(this);
  const runs = await sweepCrashPoints(this, ref);
  publish(this, runs, `crash-point sweep of "${ref.workflow}" covered ${ref.points.length} crash points`);
});

// the fault matrix: every crash point (profile sweep) or a seeded sample of them (any other profile)
When('the order is run again once per crash point, and at each one {disruption}', { timeout: 1_800_000 }, async function (this: ReplayWorld, kind: Disruption) {
  const ref = reference(this);
  const share = this.sweepShare;
  const seed = process.env.MESHHOOK_SEED ? Number(process.env.MESHHOOK_SEED) : Date.now() % 2 ** 31;
  const points = samplePoints(ref.points, share, seed);
  if (share < 1) this.log(`sampled ${points.length} of ${ref.points.length} crash points (seed ${seed}); all of them: npm run acceptance -- -p sweep, or MESHHOOK_SEED=${seed} for this sample`);
  const runs = await sweepCrashPoints(this, ref, kind, points);
  publish(this, runs, `${kind} at ${points.length} of ${ref.points.length} crash points of "${ref.workflow}"`);
});

/** Groups trace positions by the batch (or request, or timer) they belong to: a later fault must come from a later group. */
function groupsOf(points: CrashPoint[]): number[] {
  let g = 0;
  return points.map((p) => (p.base.startsWith('before-append') || !/^(before-view-update|scheduling-next|after-append)/.test(p.base) ? ++g : g));
}

When('{int} more orders each meet a random schedule of faults', { timeout: 600_000 }, async function (this: ReplayWorld, orders: number) {
  const ref = reference(this);
  const seed = process.env.MESHHOOK_SEED ? Number(process.env.MESHHOOK_SEED) : Date.now() % 2 ** 31;
  this.log(`random fault schedule seed ${seed}; re-run it with: MESHHOOK_SEED=${seed} npx cucumber-js -p sweep --tags @slow`);
  const groups = groupsOf(ref.points);
  const kinds: FaultKind[] = ['crash', 'kill', 'sever', 'blackhole', 'drop-connections', 'db-restart'];
  const fault = fc.record({ at: fc.nat({ max: ref.points.length - 1 }), kind: fc.constantFrom(...kinds) });
  const schedule = fc.uniqueArray(fault, { minLength: 1, maxLength: 2, selector: (f) => groups[f.at] }).map((fs) =>
    [...fs].sort((a, b) => a.at - b.at).map((f): PlannedFault => ({ point: ref.points[f.at], kind: f.kind })),
  );
  const plans = fc.sample(schedule, { seed, numRuns: orders });
  const crashesTheDatabase = plans.some((plan) => plan.some((f) => f.kind === 'db-restart')) && !lanesHaveOwnServers();
  const runs = await sideBySide(this, crashesTheDatabase, plans, (lane, plan) => runWithFaults(lane, ref, plan));
  publish(this, runs, `random fault schedule (seed ${seed})`);
});

When('{int} more orders each lose their worker at a random time', { timeout: 600_000 }, async function (this: ReplayWorld, orders: number) {
  const ref = reference(this);
  const seed = process.env.MESHHOOK_SEED ? Number(process.env.MESHHOOK_SEED) : Date.now() % 2 ** 31;
  this.log(`random kill times seed ${seed}; re-run them with: MESHHOOK_SEED=${seed} npx cucumber-js -p sweep --tags @slow`);
  // a paced run lasts at least PACE_MS per crash point; kills land in its first two thirds
  const span = Math.floor((ref.points.length * PACE_MS * 2) / 3);
  const delays = fc.sample(fc.noBias(fc.integer({ min: 0, max: span })), { seed, numRuns: orders });
  const runs = await sideBySide(this, false, delays, (lane, delayMs) => runWithTimedKill(lane, ref, delayMs));
  publish(this, runs, `workers killed at random times (seed ${seed})`);
});

Then('every planned fault fired', async function (this: ReplayWorld) {
  const unfired = faulted(this).flatMap((r) => [
    ...r.faults.filter((f) => !f.proof).map((f) => `${r.label}: ${f.label}`),
    ...(r.faults.length === 0 ? [`${r.label}: nothing fired`] : []),
    ...(r.error ? [`${r.label}: ${r.error}`] : []),
  ]);
  expect(unfired).toEqual([]);
});

Then('every faulted order ended exactly as the reference order', async function (this: ReplayWorld) {
  expect(faulted(this).filter((r) => r.sameAsReference || r.error).map((r) => `${r.label}: ${r.sameAsReference ?? r.error}`)).toEqual([]);
});

Then('every faulted order replays exactly from its log', async function (this: ReplayWorld) {
  expect(faulted(this).filter((r) => r.replay || r.error).map((r) => `${r.label}: ${r.replay ?? r.error}`)).toEqual([]);
});

Then('the order service took every faulted order as it took the reference order', async function (this: ReplayWorld) {
  expect(faulted(this).filter((r) => r.effects || r.error).map((r) => `${r.label}: ${r.effects ?? r.error}`)).toEqual([]);
});

Then('the order service took every faulted order exactly once', async function (this: ReplayWorld) {
  expect(Object.values(reference(this).effects)).toEqual(Object.values(reference(this).effects).map(() => 1));
  expect(faulted(this).filter((r) => r.effects || r.error).map((r) => `${r.label}: ${r.effects ?? r.error}`)).toEqual([]);
});
