import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { sendRequest } from '../../src/worker/http-client';

/*
 * Hostile round 7: what the worker records of an answer is redacted of the project's secrets, and the answer is cut at
 * a size. A cut falling inside an echoed secret left its first characters, which no redaction sought.
 */

const SECRET = { name: 'api-token', value: 'sk_live_4eC39HqLyjWDarjtT1zdp7dc' };
let server: http.Server;
let url = '';
before(async () => {
  // echoes the authorization header after `pad` bytes of padding (as an echo service puts a request's body before its headers)
  server = http.createServer((req, res) => {
    if (req.url === '/proto') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"__proto__":{"seen":"Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc"},"ok":true}');
      return;
    }
    const pad = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('pad'));
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`${'x'.repeat(pad)}authorization: ${req.headers.authorization}\n`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => server.close());

const request = (pad: number) => ({
  step: 'call',
  attempt: 1,
  idempotencyKey: 'mh_test',
  method: 'GET' as const,
  url: `${url}/echo?pad=${pad}`,
  headers: { authorization: { secret: 'api-token', prefix: 'Bearer ' } },
  timeoutMs: 5_000,
});

describe('an answer cut at its size limit', () => {
  it('keeps no part of a secret the cut fell inside', async () => {
    const limit = 200;
    const before = 'authorization: Bearer '.length;
    // the cut after 3, 4, ..., all but one of the secret's characters (a start of one or two is left: see redactCutText)
    for (let kept = 3; kept < SECRET.value.length; kept++) {
      const { outcome } = await sendRequest(request(limit - before - kept), { secrets: [SECRET], allowPrivateTargets: true, maxBodyBytes: limit });
      assert.equal(outcome.kind, 'response');
      const body = String((outcome as { body: unknown }).body);
      assert.equal((outcome as { truncated?: boolean }).truncated, true);
      const tail = SECRET.value.slice(0, kept);
      assert.ok(!body.endsWith(`Bearer ${tail}`), `cut after ${kept} characters of the secret: the answer ends ${JSON.stringify(body.slice(-40))}`);
      assert.ok(body.endsWith('Bearer [redacted:api-token, cut]'), body.slice(-40));
    }
  });

  it('and an answer not cut is kept whole, the secret redacted', async () => {
    const { outcome } = await sendRequest(request(10), { secrets: [SECRET], allowPrivateTargets: true, maxBodyBytes: 200 });
    assert.equal((outcome as { body: unknown }).body, `${'x'.repeat(10)}authorization: Bearer [redacted:api-token]\n`);
  });
});

describe('an answer with a key "__proto__"', () => {
  it('is recorded with it, redacted, whether or not the project has secrets', async () => {
    for (const secrets of [[], [SECRET]]) {
      const { outcome } = await sendRequest({ ...request(0), headers: {}, url: `${url}/proto` }, { secrets, allowPrivateTargets: true });
      const body = (outcome as { body: Record<string, unknown> }).body;
      assert.deepEqual(Object.keys(body), ['__proto__', 'ok'], `${secrets.length} secrets: ${JSON.stringify(body)}`);
      assert.equal(JSON.stringify(body), secrets.length ? '{"__proto__":{"seen":"Bearer [redacted:api-token]"},"ok":true}' : '{"__proto__":{"seen":"Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc"},"ok":true}');
    }
  });
});
