import { Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import { deliver } from '../src/intake/sign';
import { badDelivery, Delivery } from '../support/webhook-problems';
import { ORDER } from '../support/orders';
import type { ReplayWorld } from '../support/world';

/* Webhooks that should never start anything. */

/*
 * What a refused webhook could have written: rows of runs the scenario did not start. Runs it did start (and
 * that may still be recording while the refusal is checked) are left out, so the count says what the refused
 * request wrote, whatever else is in flight.
 */
const TABLES = { deliveries: 'run_id', runs: 'id', run_events: 'run_id' } as const;

async function counts(world: ReplayWorld): Promise<Record<string, number>> {
  const known = world.runs.map((r) => r.runId);
  const out: Record<string, number> = {};
  for (const [t, run] of Object.entries(TABLES)) out[t] = (await world.db.query(`SELECT count(*)::int AS n FROM ${t} WHERE ${run} <> ALL($1::uuid[])`, [known])).rows[0].n;
  return out;
}

When('a webhook {problem} is sent to {workflow} of {project}', async function (this: ReplayWorld, problem: string, workflow: string, project: string) {
  const url = await this.ensureIntake();
  if (!this.workflows.has(`${project}/${workflow}`)) {
    throw new Error(
      `a webhook ${problem} is built from a correct delivery to a workflow the scenario set up, then spoiled: "${workflow}" of "${project}" ` +
        'is not one (set it up first, with "Given the project … with the workflow …"). ' +
        (/does not exist|does not have/.test(problem)
          ? `The problem itself sends it to a ${problem.includes('project') ? 'project' : 'workflow'} no one has: name the real one here, as in "When a webhook ${problem} is sent to \"order-sync\" of \"acme\""`
          : ''),
    );
  }
  const wf = this.workflow(project, workflow);
  this.refusedTarget = { project, workflow };
  this.countsBefore = await counts(this);
  const good: Delivery = { project, workflow, body: JSON.stringify(ORDER), secret: wf.secret, at: this.clock.now(), deliveryId: `dlv_${Date.now().toString(36)}` };
  const taken = {
    projects: new Set((await this.db.query<{ slug: string }>('SELECT slug FROM projects')).rows.map((r) => r.slug)),
    workflows: new Set(
      (await this.db.query<{ slug: string }>('SELECT w.slug FROM workflows w JOIN projects p ON p.id = w.project_id WHERE p.slug = $1', [project])).rows.map((r) => r.slug),
    ),
  };
  const bad = badDelivery(problem, good, taken);
  this.lastAnswer = await deliver(url, bad.project, bad.workflow, bad.secret, bad.body, {
    at: bad.at,
    signature: bad.signature,
    deliveryId: bad.deliveryId,
    contentType: bad.contentType,
  });
});

When('a different order arrives with the same delivery id', async function (this: ReplayWorld) {
  const first = this.run;
  this.countsBefore = await counts(this);
  const other = JSON.stringify({ ...ORDER, order: { ...ORDER.order, id: 'A-1002', sum: 99 } });
  await this.deliver(first.project, first.workflow, other, { deliveryId: first.deliveryId, track: false });
});

When('that delivery arrives', async function (this: ReplayWorld) {
  const d = this.plantedDelivery;
  if (!d) throw new Error('no delivery is waiting to arrive: a step like "someone records a delivery that has not arrived yet as the run\'s" comes first');
  this.countsBefore = await counts(this);
  await this.deliver(d.project, d.workflow, d.body, { deliveryId: d.deliveryId, track: false });
});

Then('it is refused with {int} {string}', async function (this: ReplayWorld, status: number, code: string) {
  expect({ status: this.lastAnswer?.status, code: this.lastAnswer?.body?.error?.code }).toEqual({ status, code });
  expect(String(this.lastAnswer?.body?.error?.message ?? '').length).toBeGreaterThan(5);
});

Then('nothing was recorded', async function (this: ReplayWorld) {
  if (!this.countsBefore) {
    throw new Error(
      '"nothing was recorded" judges what a refused webhook wrote, and no webhook has been sent to be refused yet: ' +
        'send one first ("When a webhook <problem> is sent to …", "When a different order arrives with the same delivery id" or "When that delivery arrives")',
    );
  }
  expect(await counts(this)).toEqual(this.countsBefore);
});

Then('a correct webhook sent afterwards still runs to success', async function (this: ReplayWorld) {
  // the workflow the refused webhook was sent to (a scenario may have set up others after it)
  const target = this.refusedTarget ?? [...this.workflows.values()].pop()!;
  const answer = await this.deliver(target.project, target.workflow, JSON.stringify(ORDER));
  expect(answer.status).toBe(202);
  const view = await this.waitUntilFinished();
  expect(view.status).toBe('succeeded');
});

Then('the answer does not contain the signing secret', async function (this: ReplayWorld) {
  for (const wf of this.workflows.values()) expect(JSON.stringify(this.lastAnswer)).not.toContain(wf.secret);
});
