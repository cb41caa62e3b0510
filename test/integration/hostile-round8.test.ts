import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startEngine } from '../../src/engine';
import { deliver } from '../../src/intake/sign';
import { MAX_RECORDED_BODY_BYTES, sendRequest } from '../../src/worker/http-client';
import { inProject } from '../../src/db/scope';
import { putSecret } from '../../src/store/secrets';
import { KEYS, orderSyncDefinition, publish, runStatus, startDatabases, TestDatabases, waitFor } from './helpers';

let dbs: TestDatabases;
before(async () => {
  dbs = await startDatabases();
});
after(async () => {
  await dbs?.closeAll();
});

const ORDER = JSON.stringify({ order: { id: 'o-1', sum: 42 } });

/** a target answering every request with this body */
async function answering(status: number, contentType: string, body: string): Promise<{ requests: () => number; url: string; close: () => Promise<void> }> {
  let requests = 0;
  const server = http.createServer((req, res) => {
    requests++;
    req.resume();
    req.on('end', () => res.writeHead(status, { 'content-type': contentType }).end(body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { requests: () => requests, url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

describe('hostile round 8: answers from a hostile target', { timeout: 90_000 }, () => {
  it('an answer of JSON nested 100,000 deep ends its step with a reason; the worker lives on', async () => {
    const { url } = await dbs.fresh();
    const depth = 100_000;
    const target = await answering(201, 'application/json', '['.repeat(depth) + ']'.repeat(depth));
    const logs: Array<Record<string, unknown>> = [];
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20, log: (e) => logs.push(e) });
    try {
      const wf = await publish(engine.pool, 'acme', orderSyncDefinition(target.url));
      const res = await deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, ORDER, { deliveryId: 'dlv-deep' });
      assert.equal(res.status, 202);
      const runId: string = res.body.runId;
      const status = await waitFor('the run to end', async () => {
        const s = await runStatus(engine.pool, runId);
        return s === 'succeeded' || s === 'failed' ? s : null;
      }, 10_000).catch(() => `still running; errors: ${JSON.stringify(logs.filter((l) => l.level === 'error').slice(0, 2)).slice(0, 600)}`);
      assert.equal(status, 'succeeded');
      // the answer is recorded, as its text, once: the request was sent once
      const { rows } = await inProject(engine.pool, wf.projectId, (c) => c.query("SELECT payload FROM run_events WHERE run_id = $1 AND type = 'HttpResponseRecorded' ORDER BY seq", [runId]));
      assert.equal(rows.length, 1);
      assert.equal(rows[0].payload.outcome.status, 201);
      assert.equal(typeof rows[0].payload.outcome.body, 'string');
      assert.equal(rows[0].payload.outcome.body.length, 2 * depth);
      assert.equal(target.requests(), 1);
      assert.deepEqual(logs.filter((l) => l.level === 'error'), []);
    } finally {
      await engine.stop();
      await target.close();
    }
  });
});

describe('hostile round 8: an answer in crumbs', { timeout: 120_000 }, () => {
  it('an answer sent as a million one-byte chunks is held in about its own size, not as a million Buffers', async () => {
    // a raw target: chunked framing of one byte a chunk, past the 1 MiB kept (6 MB on the wire)
    const target = net.createServer((s) => {
      s.on('error', () => undefined);
      s.once('data', () => {
        s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n');
        const piece = '1\r\nx\r\n'.repeat(8192);
        let sent = 0;
        const more = (): void => {
          while (sent <= MAX_RECORDED_BODY_BYTES) {
            sent += 8192;
            if (!s.write(piece)) return void s.once('drain', more);
          }
          s.end('0\r\n\r\n');
        };
        more();
      });
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    const held = (): number => {
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    global.gc?.();
    const before = held();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, held())), 5);
    try {
      const { outcome } = await sendRequest({
        step: 'push', attempt: 1, idempotencyKey: 'k-1', method: 'GET', url: `http://127.0.0.1:${(target.address() as net.AddressInfo).port}/`, headers: {}, body: null, timeoutMs: 120_000,
      } as never);
      clearInterval(sampler);
      peak = Math.max(peak, held());
      assert.equal(outcome.kind, 'response');
      assert.equal((outcome as { truncated?: boolean }).truncated, true);
      assert.equal(((outcome as { body: string }).body).length, MAX_RECORDED_BODY_BYTES);
      const grown = (peak - before) / 1024 / 1024;
      // a mebibyte kept: a few times that for the blocks, the text and the outcome; a Buffer a byte is hundreds of MB
      assert.ok(grown < 64, `holding a 1 MiB answer of one-byte chunks grew the heap and buffers by ${grown.toFixed(0)} MB`);
    } finally {
      clearInterval(sampler);
      await new Promise((r) => target.close(r));
    }
  });
});

describe('hostile round 8: expressions nested past what can be evaluated', { timeout: 90_000 }, () => {
  const definition = (expression: string): Record<string, unknown> => ({
    name: 'order-sync',
    steps: [
      { id: 'map', type: 'transform', expression, next: 'done' },
      { id: 'done', type: 'terminate', status: 'succeeded', output: 'steps.map' },
    ],
  });

  it('are refused at publish with a reason, instead of failing every run on a stack overflow that depends on where they are evaluated', async () => {
    const { url } = await dbs.fresh();
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    try {
      for (const expression of [
        // the library's parser reads these iteratively, its interpreter recursively
        Array(5_000).fill('input.order').join(' | '),
        ['input', ...Array(5_000).fill('order')].join('.'),
        // a literal is data, walked as deep as it nests
        '`' + '['.repeat(5_000) + ']'.repeat(5_000) + '`',
      ]) {
        const published = await publish(engine.pool, 'acme', definition(expression)).then(() => 'published', (e: Error) => e.message);
        assert.match(published, /nests more than 256 levels deep/, `${expression.slice(0, 40)}…: ${published.slice(0, 300)}`);
      }
      // a long but ordinary chain is published and runs
      const wf = await publish(engine.pool, 'acme', definition(['input.order', ...Array(200).fill('@')].join(' | ')));
      const res = await deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, ORDER, { deliveryId: 'dlv-chain' });
      assert.equal(res.status, 202);
      await waitFor('the run to succeed', async () => (await runStatus(engine.pool, res.body.runId)) === 'succeeded', 10_000);
    } finally {
      await engine.stop();
    }
  });
});

describe('hostile round 8: private addresses written inside IPv6 ones', { timeout: 60_000 }, () => {
  it('NAT64, 6to4, IPv4-compatible and -translated forms of a private IPv4 address are TARGET_FORBIDDEN, as the IPv4-mapped form was', async () => {
    const seen: string[] = [];
    for (const host of [
      '[64:ff9b::a00:5]', // NAT64: 10.0.0.5 on an IPv6-only subnet with NAT64
      '[64:ff9b::169.254.169.254]', // the cloud metadata service, written as NAT64
      '[::7f00:1]', // IPv4-compatible 127.0.0.1
      '[::ffff:0:7f00:1]', // IPv4-translated 127.0.0.1
      '[2002:a9fe:a9fe::1]', // 6to4 of 169.254.169.254
      '[64:ff9b:1::a00:5]', // local-use NAT64
    ]) {
      const { outcome } = await sendRequest(
        { step: 'push', attempt: 1, idempotencyKey: 'k-1', method: 'GET', url: `http://${host}:8080/latest`, headers: {}, body: null, timeoutMs: 2_000 } as never,
        { secrets: [], allowPrivateTargets: false },
      );
      seen.push(`${host}: ${outcome.kind === 'error' ? outcome.code : `answered ${(outcome as { status: number }).status}`}`);
    }
    assert.deepEqual(seen.filter((s) => !s.endsWith(': TARGET_FORBIDDEN')), [], seen.join('\n'));
    // the public addresses those forms carry are still called (NAT64 of 8.8.8.8 is not refused as private)
    const { outcome } = await sendRequest(
      { step: 'push', attempt: 1, idempotencyKey: 'k-1', method: 'GET', url: 'http://[64:ff9b::808:808]:9/', headers: {}, body: null, timeoutMs: 500 } as never,
      { secrets: [], allowPrivateTargets: false },
    );
    assert.notEqual(outcome.kind === 'error' ? outcome.code : '', 'TARGET_FORBIDDEN');
  });
});

describe('hostile round 8: a secret echoed as other serializers write it', { timeout: 60_000 }, () => {
  it("a target echoing the request's headers as PHP or Python write JSON (\\/ and \\u00e4) or as HTML gets no secret into the log", async () => {
    const { url } = await dbs.fresh();
    const phpJson = (v: string): string => JSON.stringify(v).replace(/\//g, '\\/');
    const pyJson = (v: string): string => JSON.stringify(v).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
    const html = (v: string): string => v.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
    // an error page: not JSON, so kept as the text it is
    const server = http.createServer((req, res) => {
      req.resume();
      const auth = String(req.headers.authorization ?? '');
      const latin1 = Buffer.from(String(req.headers['x-other'] ?? ''), 'latin1').toString('latin1');
      res.writeHead(201, { 'content-type': 'text/html' }).end(`<pre>${phpJson(auth)} ${pyJson(latin1)} ${html(auth)}</pre>`);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const engine = await startEngine({ databaseUrl: url, keyring: KEYS, workers: 1, pollMs: 20 });
    try {
      const def = orderSyncDefinition(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`) as { steps: Array<Record<string, unknown>> };
      def.steps[1] = { ...def.steps[1], headers: { authorization: { secret: 'api-token', prefix: 'Bearer ' } , 'x-other': { secret: 'other-token' } } };
      const wf = await publish(engine.pool, 'acme', def);
      // an AWS-style key (with / and +, and & for HTML), and a Latin-1 one
      const token = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCY&EXAMPLEKEY';
      const other = 'pässwörd-Zq81x7Kd2';
      await putSecret(engine.pool, KEYS, wf.projectId, 'api-token', token);
      await putSecret(engine.pool, KEYS, wf.projectId, 'other-token', other);
      const res = await deliver(engine.intake.url, 'acme', 'order-sync', wf.signingSecret, ORDER, { deliveryId: 'dlv-echo-forms' });
      assert.equal(res.status, 202);
      await waitFor('the run to end', async () => ['succeeded', 'failed'].includes((await runStatus(engine.pool, res.body.runId)) ?? ''));
      const { rows } = await inProject(engine.pool, wf.projectId, (c) => c.query('SELECT payload FROM run_events WHERE run_id = $1 ORDER BY seq', [res.body.runId]));
      const log = JSON.stringify(rows);
      assert.match(log, /redacted:api-token/);
      const answer = rows.map((r) => r.payload.outcome?.body).find((b) => typeof b === 'string') as string;
      for (const [form, text] of [['PHP JSON', phpJson(token)], ['HTML', html(token)], ['Python JSON', pyJson(other)]]) {
        assert.ok(!answer.includes(text.replace(/^"|"$/g, '')), `the answer keeps the secret as ${form} writes it: ${answer.slice(0, 300)}`);
      }
      assert.ok(!answer.includes('K7MDENG') && !answer.includes('Zq81x7Kd2'), answer.slice(0, 300));
    } finally {
      await engine.stop();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('hostile round 8: an answer JSON.parse would change', { timeout: 60_000 }, () => {
  it('a 64-bit id, a number past a double or a key given twice is kept as the text the target sent, not rounded or dropped', async () => {
    const seen: Record<string, unknown> = {};
    for (const [name, text] of [
      ['64-bit id', '{"id": 12345678901234567890, "status": "created"}'],
      ['past a double', '{"amount": 1e400}'],
      ['more digits than kept', '{"rate": 0.10000000000000000001}'],
      ['key twice', '{"id": "ord_1", "id": "ord_2"}'],
      ['control', '{"id": 123, "rate": 0.1, "big": "12345678901234567890"}'],
    ]) {
      const target = await answering(201, 'application/json', text);
      try {
        const { outcome } = await sendRequest({ step: 'push', attempt: 1, idempotencyKey: 'k-1', method: 'GET', url: `${target.url}/`, headers: {}, body: null, timeoutMs: 5_000 } as never);
        seen[name] = (outcome as { body?: unknown }).body;
      } finally {
        await target.close();
      }
    }
    assert.deepEqual(seen, {
      '64-bit id': '{"id": 12345678901234567890, "status": "created"}',
      'past a double': '{"amount": 1e400}',
      'more digits than kept': '{"rate": 0.10000000000000000001}',
      'key twice': '{"id": "ord_1", "id": "ord_2"}',
      control: { id: 123, rate: 0.1, big: '12345678901234567890' },
    });
  });
});
