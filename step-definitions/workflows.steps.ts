import { DataTable, Given, Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import { validateDefinition, InvalidDefinitionError } from '../src/domain/definition';
import { canonicalJson } from '../src/domain/canonical';
import { withProtectionOff } from '../support/tampering';
import { tableToDefinition, WorkflowRow } from '../support/workflow-table';
import type { ReplayWorld } from '../support/world';

/* Setting up projects and their workflows, from tables in the feature file. */

async function definitionFrom(world: ReplayWorld, name: string, table: DataTable) {
  const target = await world.orderService();
  return tableToDefinition(name, table.hashes() as unknown as WorkflowRow[], target.baseUrl);
}

Given('the project {project} with the workflow {workflow}:', async function (this: ReplayWorld, project: string, workflow: string, table: DataTable) {
  await this.publish(project, await definitionFrom(this, workflow, table));
});

// a time limit: each run of the workflow has a deadline (its start, or an operator sending it back to work, plus this)
Given(
  'the project {project} with the workflow {workflow}, whose runs must finish within {duration}:',
  async function (this: ReplayWorld, project: string, workflow: string, limitMs: number, table: DataTable) {
    await this.publish(project, { ...(await definitionFrom(this, workflow, table)), timeoutMs: limitMs });
  },
);

/** A cron pattern for "every <duration>": seconds, minutes or hours that divide the minute, hour or day evenly. */
function cronEvery(ms: number): string {
  const whole = (unit: number, within: number) => ms % unit === 0 && within % (ms / unit) === 0;
  if (ms < 60_000 && whole(1_000, 60)) return `*/${ms / 1_000} * * * * *`;
  if (ms < 3_600_000 && whole(60_000, 60)) return `0 */${ms / 60_000} * * * *`;
  if (ms < 86_400_000 && whole(3_600_000, 24)) return `0 0 */${ms / 3_600_000} * * *`;
  if (ms === 86_400_000) return '0 0 0 * * *';
  throw new Error(`"every ${ms} ms" is not a schedule the steps can write: say every N seconds, minutes or hours that divide a minute, an hour or a day evenly (every 15 minutes, every 6 hours), or every 1 day`);
}

// a workflow the clock starts: a run at each tick, as `meshhook up`'s scheduler starts it (once however many tick)
Given(
  'the project {project} with the workflow {workflow}, started every {duration}:',
  async function (this: ReplayWorld, project: string, workflow: string, everyMs: number, table: DataTable) {
    const schedule = cronEvery(everyMs);
    await this.publish(project, { ...(await definitionFrom(this, workflow, table)), schedule });
    if (this.schedulers.length === 0) this.addScheduler();
  },
);

Given('a second engine ticks the same schedules', function (this: ReplayWorld) {
  if (this.schedulers.length === 0) throw new Error('no workflow of this scenario is started by the clock: declare one "…, started every <duration>:" first');
  this.addScheduler();
});

Then('{workflow} ran once for each of the {int} ticks that passed', async function (this: ReplayWorld, workflow: string, ticks: number) {
  const scheduled = this.runs.filter((r) => r.workflow === workflow && r.deliveryId.startsWith('schedule@'));
  const at = scheduled.map((r) => r.deliveryId.slice('schedule@'.length));
  expect({ runs: scheduled.length, distinctTicks: new Set(at).size }).toEqual({ runs: ticks, distinctTicks: ticks });
  // each tick's run is a run like any other: it goes to its end, with the tick as its input
  for (const r of scheduled) {
    const v = await this.waitUntilFinished(r.runId);
    expect({ tick: r.deliveryId, status: v.status }).toEqual({ tick: r.deliveryId, status: 'succeeded' });
  }
});

When('{project} publishes a new version of {workflow}:', async function (this: ReplayWorld, project: string, workflow: string, table: DataTable) {
  const before = this.workflow(project, workflow).version;
  const published = await this.publish(project, await definitionFrom(this, workflow, table));
  expect(published.version).toBe(before + 1);
});

When('{project} tries to publish the workflow {workflow}:', async function (this: ReplayWorld, project: string, workflow: string, table: DataTable) {
  this.lastError = null;
  this.triedToPublish = workflow;
  // a table the steps cannot read is the scenario's wording, never sent to the engine: it fails here, saying how
  // to write the row, instead of passing for a refusal the engine never made
  const definition = await definitionFrom(this, workflow, table).catch((e: Error) => {
    throw new Error(
      `the table of "${workflow}" cannot be read as a workflow, so nothing was sent to the engine to refuse: ${e.message}. ` +
        'To see the engine refuse a definition, write rows the table reads (docs/steps.md, "Workflow tables") whose steps do not fit together',
    );
  });
  try {
    await this.publish(project, definition);
  } catch (e) {
    this.lastError = e as Error;
  }
});

Then('publishing is refused because {string}', async function (this: ReplayWorld, reason: string) {
  if (!this.triedToPublish) throw new Error('"publishing is refused because …" follows "When <project> tries to publish the workflow <workflow>:"');
  if (!this.lastError) throw new Error(`publishing "${this.triedToPublish}" was not refused: the engine took it as a new workflow`);
  if (!(this.lastError instanceof InvalidDefinitionError)) throw new Error(`publishing "${this.triedToPublish}" failed, but not as a definition the engine refuses: ${this.lastError.message}`);
  expect(this.lastError.message).toContain(reason);
});

Then('{project} has no workflow {workflow}', async function (this: ReplayWorld, project: string, workflow: string) {
  const { rows } = await this.db.query(
    'SELECT count(*)::int AS n FROM workflows w JOIN projects p ON p.id = w.project_id WHERE p.slug = $1 AND w.slug = $2',
    [project, workflow],
  );
  expect(rows[0].n).toBe(0);
});

/**
 * Tampering with a published version: what "someone edited the workflow under
 * a running engine" looks like. The database refuses such edits, so the step
 * has to switch that protection off first, as an intruder with DBA rights would.
 */
When(
  'someone edits version {int} of {workflow} behind the engine\'s back:',
  async function (this: ReplayWorld, version: number, workflow: string, table: DataTable) {
    const project = [...this.workflows.values()].find((w) => w.workflow === workflow)!;
    const edited = validateDefinition(await definitionFrom(this, workflow, table));
    const res = await withProtectionOff(this.db, 'workflow_versions', 'workflow_versions_immutable', (client) =>
      client.query('UPDATE workflow_versions SET definition = $1 WHERE workflow_id = $2 AND version = $3', [
        canonicalJson(edited),
        project.workflowId,
        version,
      ]),
    );
    expect(res.rowCount).toBe(1);
  },
);
