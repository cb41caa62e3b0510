import { Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import { deliver, signPayload } from '../src/intake/sign';
import { ORDER } from './deliveries.steps';
import type { ReplayWorld } from '../support/world';

/* Webhooks that should never start anything. */

const TABLES = ['deliveries', 'runs', 'run_events'];

async function counts(world: ReplayWorld): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of TABLES) out[t] = (await world.db.query(`SELECT count(*)::int AS n FROM ${t}`)).rows[0].n;
  return out;
}

declare module '../support/world' {
  interface ReplayWorld {
    countsBefore?: Record<string, number>;
  }
}

When('a webhook {} is sent to {project}', async function (this: ReplayWorld, problem: string, project: string) {
  const url = await this.ensureIntake();
  const wf = this.workflow(project, 'order-sync');
  this.countsBefore = await counts(this);
  const body = JSON.stringify(ORDER);
  const now = this.clock.now();
  const send = (o: { project?: string; workflow?: string; body?: string; secret?: string; at?: Date; signature?: string | null; deliveryId?: string | null; contentType?: string }) =>
    deliver(url, o.project ?? project, o.workflow ?? 'order-sync', o.secret ?? wf.secret, o.body ?? body, {
      at: o.at ?? now,
      signature: o.signature,
      deliveryId: o.deliveryId,
      contentType: o.contentType,
    });
  const cases: Record<string, () => Promise<{ status: number; body: any }>> = {
    'with a forged signature': () => send({ signature: `t=${Math.floor(now.getTime() / 1000)},v1=${'0'.repeat(64)}` }),
    "signed with another workflow's secret": () => send({ secret: 'whsec_someone_else' }),
    'signed an hour ago': () => send({ at: new Date(now.getTime() - 3_600_000) }),
    'without a signature': () => send({ signature: null }),
    'that is not JSON': () => {
      const text = '{"order": {"id": "A-1001", "sum": 42.5';
      return send({ body: text, signature: signPayload(wf.secret, text, now) });
    },
    'without a delivery id': () => send({ deliveryId: null }),
    'of 3 MiB': () => {
      const big = JSON.stringify({ ...ORDER, padding: 'x'.repeat(3 * 1024 * 1024) });
      return send({ body: big, signature: signPayload(wf.secret, big, now) });
    },
    'for a project that does not exist': () => send({ project: 'globex' }),
    'for a workflow the project does not have': () => send({ workflow: 'invoice-sync' }),
    'sent as a form instead of JSON': () => send({ contentType: 'application/x-www-form-urlencoded' }),
  };
  const attempt = cases[problem];
  if (!attempt) throw new Error(`no such bad webhook: "${problem}"; known: ${Object.keys(cases).join(', ')}`);
  this.lastAnswer = await attempt();
});

When('a different order arrives with the same delivery id', async function (this: ReplayWorld) {
  const first = this.run;
  this.countsBefore = await counts(this);
  const other = JSON.stringify({ ...ORDER, order: { ...ORDER.order, id: 'A-1002', sum: 99 } });
  await this.deliver(first.project, first.workflow, other, { deliveryId: first.deliveryId, track: false });
});

Then('it is refused with {int} {string}', async function (this: ReplayWorld, status: number, code: string) {
  expect({ status: this.lastAnswer?.status, code: this.lastAnswer?.body?.error?.code }).toEqual({ status, code });
  expect(String(this.lastAnswer?.body?.error?.message ?? '').length).toBeGreaterThan(5);
});

Then('nothing was recorded', async function (this: ReplayWorld) {
  expect(await counts(this)).toEqual(this.countsBefore);
});

Then('a correct webhook sent afterwards still runs to success', async function (this: ReplayWorld) {
  const answer = await this.deliver('acme', 'order-sync', JSON.stringify(ORDER));
  expect(answer.status).toBe(202);
  const view = await this.waitUntilFinished();
  expect(view.status).toBe('succeeded');
});

Then('the answer does not contain the signing secret', async function (this: ReplayWorld) {
  const wf = this.workflow('acme', 'order-sync');
  expect(JSON.stringify(this.lastAnswer)).not.toContain(wf.secret);
});
