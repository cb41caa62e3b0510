import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { RealtimeServer, withoutTrailingSlashes } from '../../src/realtime/server';

/*
 * Hostile requests against the live-log server that need no database: the server is started against an
 * address where nothing listens (nothing here joins postgres_changes, so the feed never starts).
 */

const SECRET = 'unit-test-secret-with-at-least-32-characters';
let server: RealtimeServer;
let port: number;

/** one raw HTTP request; resolves with the status line and how long the answer took */
function raw(request: string | Buffer): Promise<{ status: string; ms: number; text: string }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const s = net.connect(port, '127.0.0.1');
    let text = '';
    s.on('data', (d) => (text += d.toString('latin1')));
    s.on('error', reject);
    s.on('close', () => resolve({ status: text.split('\r\n')[0], ms: Date.now() - t0, text }));
    s.write(request);
  });
}

describe('live-log server against hostile requests', () => {
  before(async () => {
    server = new RealtimeServer({ databaseUrl: 'postgres://nobody@127.0.0.1:1/none', jwtSecret: SECRET, port: 0 });
    port = (await server.start()).port;
  });
  after(() => server.close());

  it('trims trailing slashes without a regex', () => {
    assert.equal(withoutTrailingSlashes('/a/b///'), '/a/b');
    assert.equal(withoutTrailingSlashes('/a/b'), '/a/b');
    assert.equal(withoutTrailingSlashes('///'), '');
  });

  it('answers a path of thousands of slashes at once (it used to hold the event loop for a second)', async () => {
    const path = `/x${'/'.repeat(15_000)}a`;
    for (const method of ['GET', 'POST']) {
      const r = await raw(`${method} ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      assert.match(r.status, / 404 /);
      assert.ok(r.ms < 250, `${method} took ${r.ms} ms`);
    }
    const upgrade = await raw(`GET ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    assert.match(upgrade.status, / 404 /);
    assert.ok(upgrade.ms < 1250, `upgrade took ${upgrade.ms} ms`);
  });
});
