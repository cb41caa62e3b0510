import { Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import type { ReplayWorld } from '../support/world';
import { expectAccepted, ORDER } from '../support/orders';

/* Webhook deliveries, always over real HTTP and signed like a real sender would. */

function orderWorth(amount: number): string {
  return JSON.stringify({ ...ORDER, order: { ...ORDER.order, sum: amount } });
}

When('{project} delivers an order webhook to {workflow}', async function (this: ReplayWorld, project: string, workflow: string) {
  const answer = await this.deliver(project, workflow, JSON.stringify(ORDER));
  expectAccepted(answer);
});

When('{project} delivers an order worth {float} to {workflow}', async function (this: ReplayWorld, project: string, amount: number, workflow: string) {
  const answer = await this.deliver(project, workflow, orderWorth(amount));
  expectAccepted(answer);
});

When('{project} delivers {int} order webhooks to {workflow}', async function (this: ReplayWorld, project: string, count: number, workflow: string) {
  for (let i = 0; i < count; i++) {
    const body = JSON.stringify({ ...ORDER, order: { ...ORDER.order, id: `A-${2000 + i}`, sum: 10 + i } });
    const answer = await this.deliver(project, workflow, body);
    expectAccepted(answer);
  }
});

When('{project} delivers this webhook to {workflow}:', async function (this: ReplayWorld, project: string, workflow: string, body: string) {
  const answer = await this.deliver(project, workflow, body);
  expectAccepted(answer);
});

When('{project} delivers an order webhook of {int} MiB to {workflow}', async function (this: ReplayWorld, project: string, mib: number, workflow: string) {
  // a realistic big order: many lines with unicode names, about the size asked for
  const lines: unknown[] = [];
  const body = { ...ORDER, order: { ...ORDER.order, lines } };
  let size = JSON.stringify(body).length;
  for (let i = 0; size < mib * 1024 * 1024 - 200; i++) {
    const line = { sku: `SKU-${i}`, name: `Käsekuchen «${i}» 🍰 — Žluťoučký kůň`, qty: 1 + (i % 7) };
    lines.push(line);
    size += Buffer.byteLength(JSON.stringify(line)) + 1;
  }
  const text = JSON.stringify(body);
  const answer = await this.deliver(project, workflow, text);
  // over the intake's limit the order is refused, as the catalogue says: say how to write that, not a bare diff
  if (answer.status === 413) {
    throw new Error(
      `an order webhook of ${mib} MiB is over the intake's limit and was refused (413 payload_too_large); to check that refusal write ` +
        `\`When a webhook of 3 MiB is sent to ${JSON.stringify(workflow)} of ${JSON.stringify(project)}\` and \`Then it is refused with 413 "payload_too_large"\``,
    );
  }
  expectAccepted(answer);
});

// sends only: what the answer should be is a Then's to say (`both deliveries belong to one run`, `it is refused with …`)
When('the same delivery arrives again', async function (this: ReplayWorld) {
  const r = this.run;
  const answer = await this.deliver(r.project, r.workflow, r.body, { deliveryId: r.deliveryId });
  this.redelivery = { runId: r.runId, deliveryId: r.deliveryId, answer };
});

Then('both deliveries belong to one run', async function (this: ReplayWorld) {
  const again = this.redelivery;
  // without a delivery sent again there is nothing to judge: say so, rather than judge the first answer as if it were
  if (!again) throw new Error('no delivery has arrived again in this scenario: say `When the same delivery arrives again` first');
  expect({ status: again.answer.status, duplicate: again.answer.body?.duplicate, runId: again.answer.body?.runId }).toEqual({
    status: 200,
    duplicate: true,
    runId: again.runId,
  });
  // one run started by that delivery, however many others the scenario has
  const { rows } = await this.db.query(`SELECT count(*)::int AS n FROM run_events WHERE seq = 1 AND payload->>'deliveryId' = $1`, [again.deliveryId]);
  expect(rows[0].n).toBe(1);
});
