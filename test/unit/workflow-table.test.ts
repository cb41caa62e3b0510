import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateDefinition } from '../../src/domain/definition';
import { stepRef, tableToDefinition } from '../../support/workflow-table';

// the tables feature files describe workflows with (support/workflow-table.ts)
describe('workflow tables', () => {
  it('quotes step ids JMESPath would otherwise read as arithmetic', () => {
    assert.equal(stepRef('map'), 'steps.map');
    assert.equal(stepRef('map_invoice'), 'steps.map_invoice');
    assert.equal(stepRef('map-invoice'), 'steps."map-invoice"');
    const def = tableToDefinition(
      'invoices',
      [
        { step: 'map-invoice', type: 'transform', does: '{total: input.sum}', then: 'check-total' },
        { step: 'check-total', type: 'branch', does: 'when the total of map-invoice is at least 1000', then: 'post-invoice, else done' },
        { step: 'post-invoice', type: 'http_call', does: 'POST the invoice to /invoices', then: 'done' },
        { step: 'done', type: 'terminate', does: 'succeeded' },
      ],
      'http://127.0.0.1:1',
    );
    validateDefinition(def);
    const check = def.steps.find((s) => s.id === 'check-total')!;
    assert.equal(check.type === 'branch' && check.condition, 'steps."map-invoice".total >= `1000`');
    // a request's body is what the transform before it produced
    const direct = tableToDefinition(
      'invoices',
      [
        { step: 'map-invoice', type: 'transform', does: '{total: input.sum}', then: 'post-invoice' },
        { step: 'post-invoice', type: 'http_call', does: 'POST the invoice to /invoices', then: 'done' },
        { step: 'done', type: 'terminate', does: 'succeeded' },
      ],
      'http://127.0.0.1:1',
    );
    validateDefinition(direct);
    const post = direct.steps[1];
    assert.equal(post.type === 'http_call' && post.body, 'steps."map-invoice"');
  });

  it('ends a request path before the comma of what follows it', () => {
    const def = tableToDefinition(
      'orders',
      [
        { step: 'push', type: 'http_call', does: 'POST the order to /orders, up to 2 attempts, backing off 1 minute', then: 'done' },
        { step: 'done', type: 'terminate', does: 'succeeded' },
      ],
      'http://127.0.0.1:1',
    );
    const push = def.steps[0];
    assert.equal(push.type === 'http_call' && push.url, 'http://127.0.0.1:1/orders');
    assert.equal(push.type === 'http_call' && push.retry?.maxAttempts, 2);
  });

  it('reads every option of a request and refuses one it does not know, instead of keeping the default', () => {
    const table = (does: string) =>
      tableToDefinition(
        'orders',
        [
          { step: 'push', type: 'http_call', does, then: 'done' },
          { step: 'done', type: 'terminate', does: 'succeeded' },
        ],
        'http://127.0.0.1:1',
      ).steps[0];
    const all = table('POST the order to /orders with the "orders-api" secret, up to 1 attempt, backing off 2 seconds, at most 3 seconds per attempt');
    assert.ok(all.type === 'http_call');
    assert.deepEqual(all.type === 'http_call' && all.headers, { authorization: { secret: 'orders-api', prefix: 'Bearer ' } });
    assert.equal(all.type === 'http_call' && all.retry?.maxAttempts, 1);
    assert.equal(all.type === 'http_call' && all.retry?.initialDelayMs, 2_000);
    assert.equal(all.type === 'http_call' && all.timeoutMs, 3_000);
    for (const misspelt of [
      'POST the order to /orders, up to 1 attemps',
      'POST the order to /orders, upto 1 attempts',
      'POST the order to /orders, with the API key "orders-api"',
      'POST the order to /orders, authorised by "orders-api"',
      'POST the order to /orders with header Authorization: Bearer x',
    ]) {
      assert.throws(() => table(misspelt), /cannot read ".+" in the request/, misspelt);
    }
  });
});
