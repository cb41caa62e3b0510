import { test, describe, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { TargetService } from '../../support/target-service';
import { waitFor } from '../../support/wait';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  raw: string;
  body: any;
}

// agent:false = one connection per request, so nothing pooled outlives a test.
function call(
  base: string,
  path: string,
  opts: { method?: string; body?: unknown; key?: string; timeoutMs?: number } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const headers: Record<string, string> = {};
    if (payload !== undefined) headers['content-type'] = 'application/json';
    if (opts.key) headers['Idempotency-Key'] = opts.key;
    const req = http.request(base + path, { method: opts.method ?? 'POST', headers, agent: false }, (res) => {
      let raw = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (raw += c));
      res.on('end', () => {
        let body: unknown = raw;
        try {
          body = JSON.parse(raw);
        } catch {}
        resolve({ status: res.statusCode ?? 0, headers: res.headers, raw, body });
      });
    });
    if (opts.timeoutMs) req.setTimeout(opts.timeoutMs, () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
    req.end(payload);
  });
}

let svc: TargetService;
let base: string;

beforeEach(async () => {
  svc = new TargetService();
  base = await svc.start();
});
afterEach(async () => {
  await svc.close();
});

describe('TargetService', () => {
  test('records requests and answers with a key-derived id', async () => {
    assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(svc.baseUrl, base);
    const r = await call(base, '/orders?x=1', { body: { sku: 'A1', qty: 2 }, key: 'run-1:charge' });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { ok: true, id: svc.idFor('run-1:charge'), received: { sku: 'A1', qty: 2 } });
    assert.match(r.body.id, /^ord_[0-9a-f]{10}$/);
    const [rec] = svc.requests;
    assert.equal(rec.method, 'POST');
    assert.equal(rec.path, '/orders');
    assert.equal(rec.url, '/orders?x=1');
    assert.equal(rec.idempotencyKey, 'run-1:charge');
    assert.equal(rec.headers['idempotency-key'], 'run-1:charge');
    assert.deepEqual(rec.body, { sku: 'A1', qty: 2 });
    assert.equal(rec.outcome, 'answered');
    assert.ok(rec.at instanceof Date);
  });

  test('dedupes by Idempotency-Key: same bytes back, one effect', async () => {
    const a = await call(base, '/orders', { body: { n: 1 }, key: 'k1' });
    const b = await call(base, '/orders', { body: { n: 1 }, key: 'k1' });
    assert.equal(b.raw, a.raw);
    assert.equal(b.status, a.status);
    assert.equal(b.headers['idempotent-replayed'], 'true');
    assert.equal(svc.effects('/orders').length, 1);
    assert.equal(svc.requests[1].replayed, true);
    assert.equal(svc.requests[1].keyMismatch, false);

    // No key: every request is a new effect.
    await call(base, '/orders', { body: { n: 2 } });
    await call(base, '/orders', { body: { n: 2 } });
    assert.equal(svc.effects().length, 3);
    assert.notEqual(svc.effects()[1].id, svc.effects()[2].id);

    // Same key, different body: refused like Stripe does, and flagged.
    const c = await call(base, '/orders', { body: { n: 99 }, key: 'k1' });
    assert.equal(c.status, 400);
    assert.match(c.raw, /idempotency_error/);
    assert.equal(svc.requests.at(-1)!.keyMismatch, true);
    assert.deepEqual(svc.stats(), {
      attempts: 5,
      effects: 3,
      byOutcome: { answered: 5, failed: 0, reset: 0, stalled: 0 },
    });
  });

  test('fail N times then succeed; failures create no effect', async () => {
    svc.script('/orders', { kind: 'fail', status: 503, times: 2 });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await call(base, '/orders', { body: {}, key: 'k' })).status);
    assert.deepEqual(statuses, [503, 503, 200]);
    assert.equal(svc.effects().length, 1);
    assert.equal(svc.effects()[0].requestIndex, 2);
    assert.deepEqual(svc.stats().byOutcome, { answered: 1, failed: 2, reset: 0, stalled: 0 });
  });

  test("'*' scripts apply to any path, after path-specific ones", async () => {
    svc.script('*', { kind: 'fail', times: 1 });
    svc.script('/a', { kind: 'respond', status: 201, body: { made: true } });
    assert.equal((await call(base, '/a')).status, 201);
    assert.equal((await call(base, '/a')).status, 500);
    assert.equal((await call(base, '/a')).status, 200);
  });

  test('reset destroys the socket: client sees ECONNRESET / socket hang up', async () => {
    svc.script('/orders', { kind: 'reset', times: 1 });
    await assert.rejects(call(base, '/orders', { body: { x: 1 }, key: 'r' }), (err: NodeJS.ErrnoException) => {
      assert.ok(err.code === 'ECONNRESET' || /socket hang up/.test(err.message), String(err));
      return true;
    });
    assert.equal(svc.requests[0].outcome, 'reset');
    assert.equal(svc.effects().length, 0);
    assert.equal((await call(base, '/orders', { body: { x: 1 }, key: 'r' })).status, 200);
    assert.equal(svc.effects().length, 1);
  });

  test('reset with commit: effect happened, retry with the key gets the stored answer', async () => {
    svc.script('/pay', { kind: 'reset', commit: true });
    await assert.rejects(call(base, '/pay', { body: { amt: 5 }, key: 'p' }));
    const retry = await call(base, '/pay', { body: { amt: 5 }, key: 'p' });
    assert.equal(retry.headers['idempotent-replayed'], 'true');
    assert.equal(svc.effects().length, 1);
  });

  test('stall holds the request until close(), which still resolves promptly', async () => {
    svc.script('/orders', { kind: 'stall', times: 1 });
    const pending = call(base, '/orders', { body: {} });
    const settled = pending.then(
      () => 'answered',
      () => 'errored',
    );
    await waitFor(() => svc.requests.length === 1, { timeoutMs: 2000, what: 'the stalled request to arrive' });
    const race = await Promise.race([settled, new Promise((r) => setTimeout(() => r('still waiting'), 300))]);
    assert.equal(race, 'still waiting');
    assert.equal(svc.stats().byOutcome.stalled, 1);
    const t0 = Date.now();
    await svc.close();
    assert.ok(Date.now() - t0 < 1000, `close took ${Date.now() - t0}ms`);
    assert.equal(await settled, 'errored');
  });

  test('slow answers normally after ms', async () => {
    svc.script('/orders', { kind: 'slow', ms: 200, times: 1 });
    const t0 = Date.now();
    const r = await call(base, '/orders', { body: { a: 1 }, key: 's' });
    assert.ok(Date.now() - t0 >= 190, `answered after ${Date.now() - t0}ms`);
    assert.equal(r.status, 200);
    assert.equal(svc.effects().length, 1);
    const t1 = Date.now();
    await call(base, '/orders', { body: { a: 1 }, key: 's' });
    assert.ok(Date.now() - t1 < 190);
  });

  test('setDefaultResponse and reset()', async () => {
    svc.setDefaultResponse('/inventory', 200, (req: { body: unknown }) => ({ echoed: req.body }));
    assert.deepEqual((await call(base, '/inventory', { body: [1] })).body, { echoed: [1] });
    svc.setDefaultResponse('/broken', 422, { error: 'nope' });
    const r = await call(base, '/broken', { body: {} });
    assert.equal(r.status, 422);
    assert.equal(svc.effects('/broken').length, 0);
    svc.reset();
    assert.equal(svc.requests.length, 0);
    assert.deepEqual(svc.effects(), []);
    assert.equal((await call(base, '/broken', { body: {} })).status, 200);
  });

  test('non-JSON bodies are kept as strings', async () => {
    await new Promise<void>((resolve, reject) => {
      const req = http.request(
        base + '/raw',
        { method: 'POST', agent: false, headers: { 'content-type': 'text/plain' } },
        (res) => {
          res.resume();
          res.on('end', resolve);
        },
      );
      req.on('error', reject);
      req.end('hello <world>');
    });
    assert.equal(svc.requests[0].body, 'hello <world>');
    assert.equal(svc.requests[0].idempotencyKey, null);
  });
});

describe('waitFor', () => {
  test('resolves with the truthy value', async () => {
    let n = 0;
    const v = await waitFor(() => (++n >= 3 ? { n } : null), { timeoutMs: 1000, what: 'n to reach 3' });
    assert.deepEqual(v, { n: 3 });
  });

  test('timeout message says what was awaited and the last error', async () => {
    await assert.rejects(
      waitFor(
        () => {
          throw new Error('row not found');
        },
        { timeoutMs: 100, what: () => 'run r1 to complete' },
      ),
      /Timed out after 100ms waiting for run r1 to complete; last error: row not found/,
    );
  });
});
